//! Dispatch overhead: many `true` jobs a few at a time, against the same number of
//! direct `sh -c true` spawns at the same parallelism.

use std::time::Instant;

use futures::StreamExt;
use hodei_core::JobState;

use crate::{
    binaries::Binaries,
    config::Dispatch,
    jobs::{self, ms},
    report::{Figure, percentiles},
    server::{ServerProcess, WORKERS_GONE},
    target::Target,
};

pub async fn run(params: Dispatch, bins: &Binaries) -> anyhow::Result<Vec<Figure>> {
    let (n, parallel) = (params.jobs, params.parallel.max(1));
    let server = ServerProcess::start(bins, &Target::Local, parallel * 2).await?;
    let client = server.client().await?;
    let spec = jobs::spec("true", &[])?;
    jobs::run(&client, &spec, false, |_| {}).await?;

    let cpu_before = server.cpu()?;
    let started = Instant::now();
    let traces: Vec<_> = futures::stream::iter(0..n)
        .map(|_| jobs::run(&client, &spec, false, |_| {}))
        .buffer_unordered(parallel)
        .collect()
        .await;
    let hodei_time = started.elapsed();
    server.workers_gone(WORKERS_GONE).await?;
    let cpu = server.cpu()? - cpu_before;
    server.stop().await?;
    let mut succeeded = 0;
    let mut latencies = Vec::new();
    for trace in traces {
        let trace = trace?;
        succeeded += usize::from(trace.state == JobState::Succeeded);
        latencies.push(ms(trace.terminal));
    }

    let started = Instant::now();
    let statuses: Vec<_> = futures::stream::iter(0..n)
        .map(|_| {
            tokio::process::Command::new("sh")
                .args(["-c", "true"])
                .status()
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let direct_time = started.elapsed();
    let direct_ok = statuses
        .into_iter()
        .filter(|s| s.as_ref().is_ok_and(std::process::ExitStatus::success))
        .count();

    let hodei_method = format!(
        "{n} `true` jobs, {parallel} in flight (submit + follow to terminal each), after 1 warm-up \
         job; wall time of the batch"
    );
    let direct_method = format!(
        "{n} `sh -c true` spawned by hodei-bench, {parallel} in flight; wall time of the batch"
    );
    let mut figures = vec![
        Figure::new(
            "hodei jobs succeeded",
            succeeded as f64,
            "jobs",
            &hodei_method,
        )
        .target(format!("= {n}"), succeeded == n),
        Figure::new(
            "hodei wall time",
            hodei_time.as_secs_f64(),
            "s",
            &hodei_method,
        ),
        Figure::new(
            "hodei jobs/s",
            n as f64 / hodei_time.as_secs_f64(),
            "jobs/s",
            &hodei_method,
        ),
        Figure::new(
            "direct spawns succeeded",
            direct_ok as f64,
            "spawns",
            &direct_method,
        ),
        Figure::new(
            "direct wall time",
            direct_time.as_secs_f64(),
            "s",
            &direct_method,
        ),
        Figure::new(
            "direct spawns/s",
            n as f64 / direct_time.as_secs_f64(),
            "spawns/s",
            &direct_method,
        ),
        Figure::new(
            "hodei / direct (time ratio)",
            hodei_time.as_secs_f64() / direct_time.as_secs_f64(),
            "x",
            "hodei wall time / direct wall time",
        ),
        Figure::new(
            "server CPU per job",
            cpu.own * 1e3 / n as f64,
            "ms",
            "utime+stime of hodei-server-bin over the batch / jobs",
        ),
        Figure::new(
            "worker + job CPU per job",
            cpu.children * 1e3 / n as f64,
            "ms",
            "cutime+cstime of hodei-server-bin (reaped workers and their commands) over the batch / jobs",
        ),
    ];
    figures.extend(percentiles(
        "hodei submit -> terminal",
        &latencies,
        &format!("each job of the batch ({parallel} in flight)"),
    ));
    Ok(figures)
}
