//! The scenarios; each starts its own server so memory and CPU figures are its own.

mod concurrency;
mod dispatch;
mod idle;
mod latency;
mod pod_start;
mod start;
mod throughput;

use crate::{binaries::Binaries, cli::BenchArgs, cli::Scenario, report::Figure, target::Target};

/// Runs one scenario on `target` and returns its figures.
pub async fn run(
    scenario: Scenario,
    args: &BenchArgs,
    bins: &Binaries,
    target: &Target,
) -> anyhow::Result<Vec<Figure>> {
    match (scenario, target) {
        (Scenario::Idle, _) => idle::run(bins).await,
        (Scenario::Latency, _) => latency::run(args, bins, target).await,
        (Scenario::Throughput, _) => throughput::run(args, bins, target).await,
        (Scenario::Start, Target::Local) => start::run(args, bins).await,
        (Scenario::Start, Target::Kubernetes(_)) => pod_start::run(args, bins, target).await,
        (Scenario::Concurrency, _) => concurrency::run(args, bins, target).await,
        (Scenario::Dispatch, _) => dispatch::run(args, bins).await,
    }
}

/// KiB to MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
