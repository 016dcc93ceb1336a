//! `hodei-bench abuse`: hits a real `hodei-server-bin` the ways a careless or hostile
//! client would, and reports whether it stayed up, healthy and bounded.

mod attacks;
mod tally;
mod watch;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use hodei_core::{JobSpec, server::JOB_API_MAX_MESSAGE_BYTES};

use crate::{binaries::Binaries, server::ServerProcess, target::Target};
use tally::Tally;
use watch::{Watch, Watched};

/// Size of the worker API message sent over its limit (its default is 4 MiB).
const WORKER_MESSAGE_BYTES: usize = 5 << 20;
/// Longest wait for the big-output job to end.
const OUTPUT_JOB_LIMIT: Duration = Duration::from_secs(300);

/// How hard to hit the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbuseConfig {
    /// `FollowJob` streams opened at once.
    pub followers: usize,
    /// Connections the follows are spread over.
    pub follow_connections: usize,
    /// `true` jobs submitted.
    pub jobs: usize,
    /// Submits in flight at once.
    pub submit_parallel: usize,
    /// Oversized specs of each kind sent.
    pub oversized: usize,
    /// Worker streams opened with an oversized first message.
    pub worker_oversized: usize,
    /// MiB the big-output job writes, in 4 MiB pieces.
    pub output_mib: u64,
    /// Workers the server runs at once (`HODEI_LOCAL_MAX_WORKERS`).
    pub max_workers: usize,
    /// Further settings of the server, as `HODEI_*` variables.
    pub server_env: Vec<(String, String)>,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            followers: 2000,
            follow_connections: 1,
            jobs: 20_000,
            submit_parallel: 64,
            oversized: 20,
            worker_oversized: 20,
            output_mib: 256,
            max_workers: 4,
            server_env: Vec::new(),
        }
    }
}

/// Time each phase took.
#[derive(Debug, Default)]
struct Times {
    follows: Duration,
    submits: Duration,
    oversized: Duration,
    worker: Duration,
    output: Duration,
    total: Duration,
}

/// Runs the abuse against a fresh server and prints what happened.
pub fn run(config: &AbuseConfig, bins: &Binaries) -> anyhow::Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    let (watched, tally, times, output_state) = runtime.block_on(abuse(config, bins))?;
    print!(
        "{}",
        summary(config, &watched, &tally, &times, &output_state)
    );
    Ok(if watched.health_failures == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

async fn abuse(
    config: &AbuseConfig,
    bins: &Binaries,
) -> anyhow::Result<(Watched, Tally, Times, String)> {
    let server =
        ServerProcess::start_with_env(bins, &Target::Local, config.max_workers, &config.server_env)
            .await?;
    let started = Instant::now();
    let mut times = Times::default();
    let tally = Tally::default();
    let watch = Watch::start(server.pid(), server.url()).await?;
    let client = Arc::new(server.client().await?);

    // A job that runs for the whole abuse, followed by thousands at once.
    let sleeper = client
        .submit(&JobSpec::builder("sleep").args(["3600"]).build()?)
        .await?;
    eprintln!(
        "hodei-bench abuse: opening {} follows ...",
        config.followers
    );
    let phase = Instant::now();
    let follows = attacks::follow_many(
        &server.url(),
        sleeper.id,
        config.followers,
        config.follow_connections,
        &tally,
    )
    .await?;
    times.follows = phase.elapsed();

    eprintln!(
        "hodei-bench abuse: {} follows open; big output, {} submits, oversized specs and \
         worker messages at once ...",
        follows.len(),
        config.jobs
    );
    let output = {
        let client = Arc::clone(&client);
        let mib = config.output_mib;
        tokio::spawn(async move {
            let phase = Instant::now();
            let state = attacks::big_output(client, mib, OUTPUT_JOB_LIMIT).await;
            (state, phase.elapsed())
        })
    };
    let submits = async {
        let phase = Instant::now();
        let channel = attacks::connect(&server.url()).await?;
        attacks::submit_flood(channel, config.jobs, config.submit_parallel, &tally).await?;
        anyhow::Ok(phase.elapsed())
    };
    let oversized = async {
        let phase = Instant::now();
        let channel = attacks::connect(&server.url()).await?;
        attacks::oversized_specs(channel, config.oversized, JOB_API_MAX_MESSAGE_BYTES, &tally)
            .await;
        anyhow::Ok(phase.elapsed())
    };
    let worker = async {
        let phase = Instant::now();
        attacks::worker_oversized(
            &server.worker_url(),
            config.worker_oversized,
            WORKER_MESSAGE_BYTES,
            &tally,
        )
        .await;
        phase.elapsed()
    };
    let (submits, oversized, worker) = tokio::join!(submits, oversized, worker);
    times.submits = submits?;
    times.oversized = oversized?;
    times.worker = worker;
    let (output_state, output_time) = output.await?;
    let output_state = output_state.unwrap_or_else(|error| format!("failed: {error:#}"));
    times.output = output_time;

    drop(follows);
    client.cancel(sleeper.id).await?;
    let watched = watch.finish().await?;
    times.total = started.elapsed();
    server.stop().await?;
    Ok((watched, tally, times, output_state))
}

fn summary(
    config: &AbuseConfig,
    watched: &Watched,
    tally: &Tally,
    times: &Times,
    output_state: &str,
) -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(out, "abuse of hodei-server-bin: {config:?}");
    let _ = writeln!(
        out,
        "server memory: peak (VmHWM) {:.1} MiB, at the end (VmRSS) {:.1} MiB",
        mib(watched.peak_rss_kib),
        mib(watched.end_rss_kib)
    );
    let _ = writeln!(
        out,
        "server open fds: peak {} (sampled every 200 ms), at the end {}",
        watched.peak_fds, watched.end_fds
    );
    let health = if watched.health_failures == 0 {
        "SERVING throughout".to_owned()
    } else {
        format!(
            "{} failures, first: {}",
            watched.health_failures,
            watched.first_health_failure.as_deref().unwrap_or("?")
        )
    };
    let _ = writeln!(
        out,
        "health: {} checks every 250 ms on their own connection, {health}; slowest answer {} ms",
        watched.health_checks,
        watched.slowest_health.as_millis()
    );
    let _ = writeln!(
        out,
        "big-output job ({} MiB): {output_state}",
        config.output_mib
    );
    let secs = |d: Duration| d.as_secs_f64();
    let _ = writeln!(
        out,
        "elapsed: follows {:.1}s, submits {:.1}s, oversized specs {:.1}s, worker messages {:.1}s, \
         big output {:.1}s, total {:.1}s",
        secs(times.follows),
        secs(times.submits),
        secs(times.oversized),
        secs(times.worker),
        secs(times.output),
        secs(times.total)
    );
    let _ = writeln!(out, "answers by phase, code and message class:");
    for (phase, code, class, n) in tally.rows() {
        let _ = writeln!(out, "  {phase:<26} {code:<18} {n:>7}  {class}");
    }
    out
}
