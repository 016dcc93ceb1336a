//! Concurrency: N `sleep` jobs submitted at once, per N a fresh server; wall time,
//! successes, server peak memory and CPU. Baseline: N direct `sleep` processes at once
//! (local provider) or N plain `sleep` pods created at once (Kubernetes).

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
    baseline_pods,
    binaries::Binaries,
    config::Concurrency,
    jobs::{self, ms},
    pod_clock::{PodClock, PodTimes, peak_running},
    procfs,
    report::{Figure, percentiles},
    server::{ServerProcess, WORKERS_GONE},
    target::{Cluster, Target},
};

/// Follow streams per client connection; more connections than one keep the HTTP/2
/// stream limit of a single connection out of the measurement.
const JOBS_PER_CONNECTION: usize = 100;
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Longest wait for pods to go after their jobs (or baseline pods to finish).
const PODS_PATIENCE: Duration = Duration::from_secs(300);

pub async fn run(
    params: &Concurrency,
    bins: &Binaries,
    target: &Target,
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &n in &params.rounds {
        figures.extend(round(n, params.sleep_secs, bins, target).await?);
    }
    Ok(figures)
}

/// How a round sees its workers: as child processes of the server, or as pods.
enum Workers {
    Processes {
        stop: Arc<AtomicBool>,
        sampler: std::thread::JoinHandle<Peak>,
    },
    Pods(PodClock),
}

impl Workers {
    async fn watch(server: &ServerProcess, target: &Target) -> anyhow::Result<Self> {
        Ok(match target {
            Target::Local => {
                let stop = Arc::new(AtomicBool::new(false));
                let sampler = sample_workers(server.pid(), stop.clone());
                Self::Processes { stop, sampler }
            }
            Target::Kubernetes(cluster) => Self::Pods(
                PodClock::start(cluster.client.clone(), &cluster.settings.namespace).await?,
            ),
        })
    }

    /// Waits until the workers are gone and returns the peak, and for pods the time from
    /// `last_terminal` until the last pod was gone.
    async fn finish(
        self,
        server: &ServerProcess,
        last_terminal: Instant,
    ) -> anyhow::Result<(Peak, Option<Duration>)> {
        match self {
            Self::Processes { stop, sampler } => {
                stop.store(true, Ordering::Relaxed);
                server.workers_gone(WORKERS_GONE).await?;
                let peak = sampler
                    .join()
                    .map_err(|_| anyhow::anyhow!("the worker sampler panicked"))?;
                Ok((peak, None))
            }
            Self::Pods(clock) => {
                clock.wait_all_gone(PODS_PATIENCE).await?;
                let pods: Vec<PodTimes> = clock
                    .all()
                    .into_iter()
                    .filter(|p| p.job_id.is_some())
                    .collect();
                let gone = pods.iter().filter_map(|p| p.gone).max();
                let peak = Peak {
                    workers: peak_running(&pods),
                    workers_rss_kib: 0,
                };
                Ok((
                    peak,
                    gone.map(|g| g.saturating_duration_since(last_terminal)),
                ))
            }
        }
    }
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

async fn round(
    n: usize,
    sleep: u32,
    bins: &Binaries,
    target: &Target,
) -> anyhow::Result<Vec<Figure>> {
    let server = ServerProcess::start(bins, target, n.max(1)).await?;
    let mut clients = Vec::new();
    for _ in 0..n.div_ceil(JOBS_PER_CONNECTION).max(1) {
        clients.push(server.client().await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = server.memory()?;
    let cpu_before = server.cpu()?;
    let workers = Workers::watch(&server, target).await?;

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
    let memory = server.memory()?;
    let (peak, pods_gone) = workers.finish(&server, started + wall).await?;
    let cpu = server.cpu()? - cpu_before;
    server.stop().await?;

    let baseline = match target {
        Target::Local => direct_sleeps(n, sleep).await?,
        Target::Kubernetes(cluster) => sleep_pods(cluster, n, sleep).await?,
    };

    let succeeded = outcomes.get("succeeded").copied().unwrap_or(0);
    let others: Vec<String> = outcomes
        .iter()
        .filter(|(k, _)| k.as_str() != "succeeded")
        .map(|(k, v)| format!("{v} x {k}"))
        .collect();
    let p = |name: &str| format!("N={n}: {name}");
    let limit = match target {
        Target::Local => "HODEI_LOCAL_MAX_WORKERS".to_owned(),
        Target::Kubernetes(cluster) => match cluster.settings.api_writes_per_second {
            Some(rate) => format!("HODEI_K8S_API_WRITES_PER_SECOND={rate} and HODEI_K8S_MAX_PODS"),
            None => "HODEI_K8S_MAX_PODS".to_owned(),
        },
    };
    let method = format!(
        "{n} `sleep {sleep}` jobs submitted at once (one task each: submit + follow to terminal, \
         over {} connections) to a fresh server on the {} provider with {limit}={n}",
        clients.len(),
        target.name(),
    );
    let active = peak.workers.max(1) as f64;
    let (peak_method, active_what) = match target {
        Target::Local => (
            format!("most child processes of the server in a /proc sample every {SAMPLE_EVERY:?}"),
            "peak workers at once",
        ),
        Target::Kubernetes(_) => (
            "most worker pods in phase Running at once, from a watch on the namespace \
             (Running to Succeeded/Failed or deletion)"
                .to_owned(),
            "peak pods Running at once",
        ),
    };
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
            peak_method,
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
            format!("(server VmHWM - server idle VmRSS) / {active_what}"),
        ),
        Figure::new(
            p("server CPU"),
            cpu.own,
            "s",
            "utime+stime of hodei-server-bin, after minus before the jobs",
        ),
    ];
    match target {
        Target::Local => {
            figures.push(Figure::new(
                p("worker RSS per active job"),
                peak.workers_rss_kib as f64 / active,
                "KiB",
                "sum of VmRSS of the worker processes at the sample with the most workers / that count",
            ));
            figures.push(Figure::new(
                p("workers + jobs CPU"),
                cpu.children,
                "s",
                "cutime+cstime of hodei-server-bin, after minus before (reaped workers and their commands)",
            ));
        }
        Target::Kubernetes(_) => figures.extend(pods_gone.map(|gone| {
            Figure::new(
                p("last terminal -> last pod gone"),
                gone.as_secs_f64(),
                "s",
                "from the last job's terminal state to the last worker pod's deletion on the watch",
            )
        })),
    }
    figures.push(Figure::new(
        p("baseline wall time"),
        baseline.wall.as_secs_f64(),
        "s",
        baseline.method,
    ));
    figures.push(Figure::new(
        p("wall time / baseline"),
        wall.as_secs_f64() / baseline.wall.as_secs_f64().max(f64::EPSILON),
        "ratio",
        "same invocation",
    ));
    figures.extend(percentiles(
        &p("job submit -> terminal"),
        &latencies,
        &method,
    ));
    Ok(figures)
}

/// The baseline of one round.
struct Baseline {
    wall: Duration,
    method: String,
}

/// N `sleep` processes spawned at once.
async fn direct_sleeps(n: usize, sleep: u32) -> anyhow::Result<Baseline> {
    let started = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|_| {
            tokio::process::Command::new("sleep")
                .arg(sleep.to_string())
                .status()
        })
        .collect();
    let mut succeeded = 0;
    for status in futures::future::join_all(children).await {
        succeeded += usize::from(status.is_ok_and(|s| s.success()));
    }
    Ok(Baseline {
        wall: started.elapsed(),
        method: format!(
            "{n} `sleep {sleep}` spawned at once by hodei-bench; {succeeded} succeeded; first spawn to last exit"
        ),
    })
}

/// N plain pods running `sleep` created at once through the API, until the watch saw
/// each finish; then deleted.
async fn sleep_pods(cluster: &Cluster, n: usize, sleep: u32) -> anyhow::Result<Baseline> {
    let clock = PodClock::start(cluster.client.clone(), &cluster.settings.namespace).await?;
    let names: Vec<String> = (0..n)
        .map(|i| format!("hodei-bench-sleep-{}-{i}", std::process::id()))
        .collect();
    let script = format!("sleep {sleep}");
    let started = Instant::now();
    let created = futures::future::join_all(
        names
            .iter()
            .map(|name| baseline_pods::create(cluster, name, &script)),
    )
    .await;
    let failed = created.iter().filter(|r| r.is_err()).count();
    // Waiting for pods that were never created would only run out the patience.
    let finished = if failed == 0 {
        futures::future::join_all(
            names
                .iter()
                .map(|name| clock.wait_finished(name, PODS_PATIENCE)),
        )
        .await
    } else {
        Vec::new()
    };
    let wall = started.elapsed();
    let finished_ok = finished.iter().filter(|r| r.is_ok()).count();
    for name in &names {
        baseline_pods::delete(cluster, name).await?;
    }
    clock.wait_all_gone(PODS_PATIENCE).await?;
    if let Some(Err(error)) = created.into_iter().find(Result::is_err) {
        return Err(error.context(format!("{failed} of {n} baseline pods not created")));
    }
    Ok(Baseline {
        wall,
        method: format!(
            "{n} plain pods running `sh -c 'sleep {sleep}'` (restricted securityContext, same \
             namespace) created at once through the API by hodei-bench, no client-side rate \
             limit; {finished_ok} seen finished; first create to last finish on the watch"
        ),
    })
}
