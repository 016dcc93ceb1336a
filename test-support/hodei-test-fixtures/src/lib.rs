//! Fixtures shared by the tests and the benchmarks: a server binary run as a child
//! process on a free loopback port ([`ServerProcess`]), and waiting for a condition with a
//! deadline ([`wait_until`], [`blocking::wait_until`]).

pub mod blocking;
mod server;
mod wait;

pub use server::{ServerCommand, ServerError, ServerProcess, free_port};
pub use wait::{Ready, TimedOut, wait_until};
