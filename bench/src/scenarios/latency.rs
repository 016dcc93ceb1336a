//! Output latency: a job writes timestamped lines at a steady rate; the client compares
//! each line's arrival time with the time written in it.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::ensure;
use hodei_core::JobState;

use crate::{
    binaries::Binaries,
    config::Latency,
    jobs,
    report::{Figure, percentiles},
    server::{ServerProcess, WORKERS_GONE},
    target::Target,
};

/// Pause before the first line, so the follower is live before output starts.
const START_DELAY_MS: u64 = 1000;
const TARGET_P99_MS: f64 = 20.0;

pub async fn run(params: Latency, bins: &Binaries, target: &Target) -> anyhow::Result<Vec<Figure>> {
    let emit: Vec<String> = [
        "emit".to_owned(),
        "--rate".to_owned(),
        params.rate.to_string(),
        "--count".to_owned(),
        params.count.to_string(),
        "--delay-ms".to_owned(),
        START_DELAY_MS.to_string(),
    ]
    .into();
    let expected = u64::from(params.count);
    let workload = format!(
        "`hodei-bench emit --rate {} --count {}` (one flushed `<ns since epoch>\\n` line per write, \
         after a {START_DELAY_MS} ms pause)",
        params.rate, params.count
    );

    let mut baseline = LineClock::default();
    super::read_piped(&bins.bench, &emit, |data| baseline.feed(data, None)).await?;

    let server = ServerProcess::start(bins, target, 16).await?;
    let client = server.client().await?;
    let cpu_before = server.cpu()?;
    let mut hodei = LineClock::default();
    let trace = jobs::run(
        &client,
        &jobs::spec(target.bench_command(&bins.bench), &emit)?,
        true,
        |chunk| {
            hodei.chunks += 1;
            hodei.feed(&chunk.data, Some(i128::from(chunk.emitted_at_us) * 1000));
        },
    )
    .await?;
    server.workers_gone(WORKERS_GONE).await?;
    let cpu = server.cpu()? - cpu_before;
    server.stop().await?;
    ensure!(
        trace.state == JobState::Succeeded,
        "job ended {:?}",
        trace.state
    );

    let provider = target.name();
    let mut figures = vec![
        Figure::new(
            "lines received via hodei",
            hodei.total_ms.len() as f64,
            "lines",
            format!("lines parsed by the client from FollowJob output; expected {expected}"),
        )
        .target(
            format!("= {expected}"),
            hodei.total_ms.len() as u64 == expected,
        ),
        Figure::new(
            "output chunks received via hodei",
            hodei.chunks as f64,
            "chunks",
            "OutputChunk events seen by the follower",
        ),
    ];
    let total = percentiles(
        "hodei write -> client",
        &hodei.total_ms,
        &format!(
            "{workload} run as a hodei job on the {provider} provider; per line: client wall clock (SystemTime) at arrival of \
             its chunk minus the time in the line"
        ),
    );
    for mut figure in total {
        if figure.name.ends_with("p99") {
            let met = figure.value < TARGET_P99_MS;
            figure = figure.target(format!("< {TARGET_P99_MS} ms"), met);
        }
        figures.push(figure);
    }
    figures.extend(percentiles(
        "hodei write -> worker read",
        &hodei.to_worker_ms,
        "same job; per line: the chunk's emitted_at_us (set by the worker when it batches what it \
         read) minus the time in the line",
    ));
    figures.extend(percentiles(
        "hodei worker read -> client",
        &hodei.worker_to_client_ms,
        "same job; per line: client arrival time minus the chunk's emitted_at_us",
    ));
    figures.extend(percentiles(
        "baseline pipe write -> read",
        &baseline.total_ms,
        &format!(
            "{workload} run directly as a child of hodei-bench, its stdout a pipe read by \
             hodei-bench; per line: arrival time minus the time in the line"
        ),
    ));
    figures.push(Figure::new(
        "server CPU during the job",
        cpu.own,
        "s",
        "utime+stime of hodei-server-bin from /proc/<pid>/stat, after minus before the job",
    ));
    Ok(figures)
}

/// Splits output into lines and records each line's delays.
#[derive(Debug, Default)]
struct LineClock {
    carry: Vec<u8>,
    chunks: u64,
    total_ms: Vec<f64>,
    to_worker_ms: Vec<f64>,
    worker_to_client_ms: Vec<f64>,
}

impl LineClock {
    /// `data` just arrived; `worker_read_ns` is when the worker read it, if known.
    fn feed(&mut self, data: &[u8], worker_read_ns: Option<i128>) {
        let now = now_ns();
        self.carry.extend_from_slice(data);
        while let Some(end) = self.carry.iter().position(|&b| b == b'\n') {
            let written = std::str::from_utf8(&self.carry[..end])
                .ok()
                .and_then(|s| s.trim().parse::<i128>().ok());
            self.carry.drain(..=end);
            let Some(written) = written else { continue };
            self.total_ms.push((now - written) as f64 / 1e6);
            if let Some(read) = worker_read_ns {
                self.to_worker_ms.push((read - written) as f64 / 1e6);
                self.worker_to_client_ms.push((now - read) as f64 / 1e6);
            }
        }
    }
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
}
