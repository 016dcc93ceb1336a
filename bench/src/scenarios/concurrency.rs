//! Concurrency: N `sleep` jobs submitted at once, per N a fresh server; wall time,
//! successes, server peak memory and CPU. Baseline: N direct `sleep` processes at once.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hodei_core::{HodeiClient, JobState};

use crate::{
    binaries::Binaries,
    cli::BenchArgs,
    jobs::{self, ms},
    procfs,
    report::{Figure, percentiles},
    server::{ServerProcess, WORKERS_GONE},
};

/// Follow streams per client connection; more connections than one keep the HTTP/2
/// stream limit of a single connection out of the measurement.
const JOBS_PER_CONNECTION: usize = 100;
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

pub async fn run(args: &BenchArgs, bins: &Binaries) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &n in &args.concurrency {
        figures.extend(round(n, args.concurrency_sleep, bins).await?);
    }
    Ok(figures)
}

/// The most workers seen at once, and the sum of their RSS at that moment.
#[derive(Debug, Default, Clone, Copy)]
struct Peak {
    workers: usize,
    workers_rss_kib: u64,
}

/// Counts the server's worker processes until told to stop.
fn sample_workers(server_pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Peak> {
    std::thread::spawn(move || {
        let mut peak = Peak::default();
        while !stop.load(Ordering::Relaxed) {
            let workers = procfs::children(server_pid);
            if workers.len() > peak.workers {
                peak = Peak {
                    workers: workers.len(),
                    workers_rss_kib: procfs::rss_sum(&workers),
                };
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
        peak
    })
}

async fn round(n: usize, sleep: u32, bins: &Binaries) -> anyhow::Result<Vec<Figure>> {
    let server = ServerProcess::start(bins, n.max(1)).await?;
    let mut clients = Vec::new();
    for _ in 0..n.div_ceil(JOBS_PER_CONNECTION).max(1) {
        clients.push(server.client().await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.memory()?;
    let cpu_before = server.cpu()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_workers(server.pid(), stop.clone());

    let spec = jobs::spec("sleep", &[sleep.to_string()])?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let client: HodeiClient = clients[i % clients.len()].clone();
            let spec = spec.clone();
            tokio::spawn(async move { jobs::run(&client, &spec, false, |_| {}).await })
        })
        .collect();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::new();
    for task in tasks {
        match task.await? {
            Ok(trace) => {
                latencies.push(ms(trace.terminal));
                let key = match &trace.state {
                    JobState::Succeeded => "succeeded".to_owned(),
                    other => format!("{other:?}"),
                };
                *outcomes.entry(key).or_default() += 1;
            }
            Err(error) => {
                *outcomes
                    .entry(format!("client error: {error:#}"))
                    .or_default() += 1
            }
        }
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let memory = server.memory()?;
    server.workers_gone(WORKERS_GONE).await?;
    let cpu = server.cpu()? - cpu_before;
    let peak = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("the worker sampler panicked"))?;
    server.stop().await?;

    let started = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|_| {
            tokio::process::Command::new("sleep")
                .arg(sleep.to_string())
                .status()
        })
        .collect();
    let mut direct_ok = 0;
    for status in futures::future::join_all(children).await {
        direct_ok += usize::from(status.is_ok_and(|s| s.success()));
    }
    let direct_wall = started.elapsed();

    let succeeded = outcomes.get("succeeded").copied().unwrap_or(0);
    let others: Vec<String> = outcomes
        .iter()
        .filter(|(k, _)| k.as_str() != "succeeded")
        .map(|(k, v)| format!("{v} x {k}"))
        .collect();
    let p = |name: &str| format!("N={n}: {name}");
    let method = format!(
        "{n} `sleep {sleep}` jobs submitted at once (one task each: submit + follow to terminal, \
         over {} connections) to a fresh server with HODEI_LOCAL_MAX_WORKERS={n}",
        clients.len()
    );
    let active = peak.workers.max(1) as f64;
    let mut figures = vec![
        Figure::new(
            p("wall time"),
            wall.as_secs_f64(),
            "s",
            format!("{method}; first submit to last terminal state"),
        ),
        Figure::new(
            p("jobs succeeded"),
            succeeded as f64,
            "jobs",
            if others.is_empty() {
                method.clone()
            } else {
                format!("{method}; others: {}", others.join(", "))
            },
        )
        .target(format!("= {n}"), succeeded == n),
        Figure::new(
            p("peak workers at once"),
            peak.workers as f64,
            "workers",
            format!("most child processes of the server in a /proc sample every {SAMPLE_EVERY:?}"),
        ),
        Figure::new(
            p("server idle RSS"),
            super::mib(idle.rss_kib),
            "MiB",
            "VmRSS of hodei-server-bin 0.5 s after it answered, before the jobs",
        ),
        Figure::new(
            p("server peak RSS"),
            super::mib(memory.peak_kib),
            "MiB",
            "VmHWM of hodei-server-bin after the jobs",
        ),
        Figure::new(
            p("server memory per active job"),
            (memory.peak_kib.saturating_sub(idle.rss_kib)) as f64 / active,
            "KiB",
            "(server VmHWM - server idle VmRSS) / peak workers at once",
        ),
        Figure::new(
            p("worker RSS per active job"),
            peak.workers_rss_kib as f64 / active,
            "KiB",
            "sum of VmRSS of the worker processes at the sample with the most workers / that count",
        ),
        Figure::new(
            p("server CPU"),
            cpu.own,
            "s",
            "utime+stime of hodei-server-bin, after minus before the jobs",
        ),
        Figure::new(
            p("workers + jobs CPU"),
            cpu.children,
            "s",
            "cutime+cstime of hodei-server-bin, after minus before (reaped workers and their commands)",
        ),
        Figure::new(
            p("baseline wall time"),
            direct_wall.as_secs_f64(),
            "s",
            format!(
                "{n} `sleep {sleep}` spawned at once by hodei-bench; {direct_ok} succeeded; first spawn to last exit"
            ),
        ),
    ];
    figures.extend(percentiles(
        &p("job submit -> terminal"),
        &latencies,
        &method,
    ));
    Ok(figures)
}
