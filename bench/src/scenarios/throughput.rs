//! Throughput: one job writes bulk lines as fast as it can; the client counts every byte
//! and line and checks the chunk numbers. Baselines: the same command into /dev/null,
//! and into a pipe read by this program.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::ensure;
use hodei_core::JobState;

use crate::{
    binaries::Binaries,
    config::Throughput,
    emit::bulk_size,
    jobs, procfs,
    report::Figure,
    server::{ServerProcess, WORKERS_GONE},
    target::Target,
};

/// Bytes and lines seen, and whether chunk numbers were consecutive.
#[derive(Debug, Default)]
struct Count {
    bytes: u64,
    lines: u64,
    next_seq: u64,
    seq_gaps: u64,
}

impl Count {
    fn add(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.lines += data.iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

pub async fn run(
    params: Throughput,
    bins: &Binaries,
    target: &Target,
) -> anyhow::Result<Vec<Figure>> {
    let requested = params.mib << 20;
    let (lines, bytes) = bulk_size(requested, params.line_len);
    let emit: Vec<String> = [
        "emit".to_owned(),
        "--bytes".to_owned(),
        requested.to_string(),
        "--line-len".to_owned(),
        params.line_len.to_string(),
    ]
    .into();
    let command = format!(
        "`hodei-bench emit --bytes {requested} --line-len {}` ({lines} lines, {bytes} bytes, \
         64 KiB writes)",
        params.line_len
    );

    let devnull = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    let started = Instant::now();
    let status = tokio::process::Command::new(&bins.bench)
        .args(&emit)
        .stdout(Stdio::from(devnull))
        .status()
        .await?;
    let devnull_time = started.elapsed();
    ensure!(status.success(), "baseline emit failed: {status}");

    let started = Instant::now();
    let mut piped = Count::default();
    super::read_piped(&bins.bench, &emit, |data| piped.add(data)).await?;
    let pipe_time = started.elapsed();

    let server = ServerProcess::start(bins, target, 16).await?;
    let client = server.client().await?;
    let cpu_before = server.cpu()?;
    let self_before = procfs::cpu("self")?;
    let mut count = Count {
        next_seq: 1,
        ..Count::default()
    };
    let trace = jobs::run(
        &client,
        &jobs::spec(target.bench_command(&bins.bench), &emit)?,
        true,
        |chunk| {
            if chunk.seq != count.next_seq {
                count.seq_gaps += 1;
            }
            count.next_seq = chunk.seq + 1;
            count.add(&chunk.data);
        },
    )
    .await?;
    server.workers_gone(WORKERS_GONE).await?;
    let cpu = server.cpu()? - cpu_before;
    let self_cpu = procfs::cpu("self")? - self_before;
    let peak = server.memory()?.peak_kib;
    server.stop().await?;
    ensure!(
        trace.state == JobState::Succeeded,
        "job ended {:?}",
        trace.state
    );

    let total = trace.terminal;
    let first = trace.first_output.unwrap_or_default();
    let last = trace.last_output.unwrap_or_default();
    let streaming = last.saturating_sub(first);
    let mb_s = |time: Duration| bytes as f64 / 1e6 / time.as_secs_f64();
    let lines_s = |time: Duration| lines as f64 / time.as_secs_f64();
    let provider = target.name();
    let hodei_method = format!(
        "{command} run as a hodei job on the {provider} provider; the client counts bytes and newlines of every FollowJob \
         chunk; time from just before submit to the terminal state (which follows the last chunk)"
    );
    let devnull_method =
        format!("{command} run directly by hodei-bench, stdout /dev/null; spawn to exit");
    let pipe_method = format!(
        "{command} run directly by hodei-bench, stdout a pipe it reads and counts; spawn to EOF+exit"
    );
    let mut figures = vec![
        Figure::new(
            "bytes lost",
            bytes as f64 - count.bytes as f64,
            "bytes",
            format!("{bytes} written minus bytes received by the client"),
        )
        .target("= 0", count.bytes == bytes),
        Figure::new(
            "lines lost",
            lines as f64 - count.lines as f64,
            "lines",
            format!("{lines} written minus newlines received by the client"),
        )
        .target("= 0", count.lines == lines),
        Figure::new(
            "chunk sequence gaps",
            count.seq_gaps as f64,
            "gaps",
            "chunks whose seq is not the previous seq + 1 (first must be 1)",
        )
        .target("= 0", count.seq_gaps == 0),
        Figure::new(
            "chunks received",
            (count.next_seq - 1) as f64,
            "chunks",
            "last seq seen",
        ),
        Figure::new("hodei MB/s", mb_s(total), "MB/s", &hodei_method),
        Figure::new("hodei lines/s", lines_s(total), "lines/s", &hodei_method),
        Figure::new(
            "hodei MB/s, first to last chunk",
            mb_s(streaming),
            "MB/s",
            "same job; bytes / time from the first chunk's arrival to the last chunk's",
        ),
        Figure::new(
            "submit -> first chunk",
            first.as_secs_f64() * 1e3,
            "ms",
            "same job; arrival of the first chunk, from just before submit",
        ),
        Figure::new(
            "last chunk -> terminal state",
            (trace.terminal.saturating_sub(last)).as_secs_f64() * 1e3,
            "ms",
            "same job; arrival of the terminal state minus arrival of the last chunk",
        ),
        Figure::new("hodei wall time", total.as_secs_f64(), "s", &hodei_method),
        Figure::new(
            "baseline /dev/null MB/s",
            mb_s(devnull_time),
            "MB/s",
            &devnull_method,
        ),
        Figure::new(
            "baseline /dev/null lines/s",
            lines_s(devnull_time),
            "lines/s",
            &devnull_method,
        ),
        Figure::new("baseline pipe MB/s", mb_s(pipe_time), "MB/s", &pipe_method),
        Figure::new(
            "baseline pipe bytes lost",
            bytes as f64 - piped.bytes as f64,
            "bytes",
            &pipe_method,
        )
        .target("= 0", piped.bytes == bytes),
        Figure::new(
            "hodei / baseline /dev/null (throughput ratio)",
            devnull_time.as_secs_f64() / total.as_secs_f64(),
            "x",
            "baseline time / hodei time (1 = as fast as writing to /dev/null)",
        ),
        Figure::new(
            "hodei / baseline pipe (throughput ratio)",
            pipe_time.as_secs_f64() / total.as_secs_f64(),
            "x",
            "baseline pipe time / hodei time",
        ),
        Figure::new(
            "server CPU",
            cpu.own,
            "s",
            "utime+stime of hodei-server-bin (/proc/<pid>/stat), after minus before the job",
        ),
        Figure::new(
            "client (hodei-bench) CPU",
            self_cpu.own,
            "s",
            "utime+stime of hodei-bench during the job (decoding and counting)",
        ),
        Figure::new(
            "server peak RSS",
            super::mib(peak),
            "MiB",
            "VmHWM of hodei-server-bin after the job",
        ),
    ];
    // Worker pods are not the server's children; their CPU is not in its cutime.
    if matches!(target, Target::Local) {
        figures.push(Figure::new(
            "worker + job CPU",
            cpu.children,
            "s",
            "cutime+cstime of hodei-server-bin: the reaped worker and, through it, the emit command",
        ));
    }
    Ok(figures)
}
