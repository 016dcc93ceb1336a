//! The scenarios; each starts its own server so memory and CPU figures are its own.

mod concurrency;
mod dispatch;
mod idle;
mod latency;
mod pod_start;
mod start;
mod throughput;

use crate::{
    binaries::Binaries,
    config::{BenchConfig, Scenario},
    report::Figure,
    target::Target,
};

/// Runs one scenario of `config` on `target` with its parameters and returns its figures.
pub async fn run(
    scenario: Scenario,
    config: &BenchConfig,
    bins: &Binaries,
    target: &Target,
) -> anyhow::Result<Vec<Figure>> {
    match (scenario, target) {
        (Scenario::Idle, _) => idle::run(bins).await,
        (Scenario::Latency, _) => latency::run(config.latency, bins, target).await,
        (Scenario::Throughput, _) => throughput::run(config.throughput, bins, target).await,
        (Scenario::Start, Target::Local) => start::run(config.start, bins).await,
        (Scenario::Start, Target::Kubernetes(_)) => {
            pod_start::run(config.start, bins, target).await
        }
        (Scenario::Concurrency, _) => concurrency::run(&config.concurrency, bins, target).await,
        (Scenario::Dispatch, _) => dispatch::run(config.dispatch, bins).await,
    }
}

/// KiB to MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
