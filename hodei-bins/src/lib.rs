//! The logic of the Hodei Jobs binaries; each `main` only calls into here.

pub mod cli;
pub mod descriptors;
pub mod exit_code;
pub mod server_main;
pub mod settings;
pub mod telemetry;
pub mod worker_main;
