//! Benchmarks of Hodei Jobs: starts a real `hodei-server-bin`, runs scenarios through
//! `HodeiClient`, and reports what it measured and how.

pub mod abuse;
pub mod baseline_pods;
pub mod binaries;
pub mod cli;
pub mod config;
pub mod emit;
pub mod jobs;
pub mod pod_clock;
pub mod procfs;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod server;
pub mod stats;
pub mod target;
