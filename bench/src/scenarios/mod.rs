//! The scenarios; each starts its own server so memory and CPU figures are its own.

mod concurrency;
mod dispatch;
mod idle;
mod latency;
mod start;
mod throughput;

use crate::{binaries::Binaries, cli::BenchArgs, cli::Scenario, report::Figure};

/// Runs one scenario and returns its figures.
pub async fn run(
    scenario: Scenario,
    args: &BenchArgs,
    bins: &Binaries,
) -> anyhow::Result<Vec<Figure>> {
    match scenario {
        Scenario::Idle => idle::run(bins).await,
        Scenario::Latency => latency::run(args, bins).await,
        Scenario::Throughput => throughput::run(args, bins).await,
        Scenario::Start => start::run(args, bins).await,
        Scenario::Concurrency => concurrency::run(args, bins).await,
        Scenario::Dispatch => dispatch::run(args, bins).await,
    }
}

/// KiB to MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
