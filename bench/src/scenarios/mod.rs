//! The scenarios; each starts its own server so memory and CPU figures are its own.

mod concurrency;
mod dispatch;
mod idle;
mod latency;
mod pod_start;
mod start;
mod throughput;

use std::{path::Path, process::Stdio};

use tokio::io::AsyncReadExt;

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

/// Runs `program args` as a direct child, hands its stdout to `on_data` as it arrives,
/// and returns once it has exited: the pipe baseline of the output scenarios.
async fn read_piped(
    program: &Path,
    args: &[String],
    mut on_data: impl FnMut(&[u8]),
) -> anyhow::Result<()> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(mut stdout) = child.stdout.take() {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = stdout.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            on_data(&buffer[..n]);
        }
    }
    child.wait().await?;
    Ok(())
}

/// KiB to MiB.
fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
