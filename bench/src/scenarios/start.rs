//! Start latency: sequential `true` jobs timed per phase as the follower sees them, and
//! `echo` jobs timed to their first output. Baseline: the same commands spawned directly.

use std::{process::Stdio, time::Instant};

use anyhow::ensure;
use hodei_core::JobState;
use tokio::io::AsyncReadExt;

use crate::{
    binaries::Binaries,
    config::Start,
    jobs::{self, ms},
    report::{Figure, percentiles},
    server::ServerProcess,
    target::Target,
};

pub async fn run(params: Start, bins: &Binaries) -> anyhow::Result<Vec<Figure>> {
    let n = params.jobs;
    let server = ServerProcess::start(bins, &Target::Local, 16).await?;
    let client = server.client().await?;
    let truth = jobs::spec("true", &[])?;
    let echo = jobs::spec("echo", &["hello".to_owned()])?;
    // One job first, so the first figure is not the cost of a cold connection or page cache.
    jobs::run(&client, &truth, false, |_| {}).await?;

    let (mut submit, mut provisioning, mut running, mut terminal) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut server_start, mut server_run) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let trace = jobs::run(&client, &truth, false, |_| {}).await?;
        ensure!(
            trace.state == JobState::Succeeded,
            "job ended {:?}",
            trace.state
        );
        submit.push(ms(trace.submitted));
        provisioning.extend(trace.provisioning.map(ms));
        running.extend(trace.running.map(ms));
        terminal.push(ms(trace.terminal));
        let job = client.get(trace.id).await?;
        if let (Some(started), Some(finished)) = (job.started_at, job.finished_at) {
            server_start.push((started - job.created_at).as_seconds_f64() * 1e3);
            server_run.push((finished - started).as_seconds_f64() * 1e3);
        }
    }
    let mut first_output = Vec::new();
    for _ in 0..n {
        let trace = jobs::run(&client, &echo, true, |_| {}).await?;
        ensure!(
            trace.state == JobState::Succeeded,
            "job ended {:?}",
            trace.state
        );
        first_output.extend(trace.first_output.map(ms));
    }
    server.stop().await?;

    let (mut spawn_exit, mut spawn_output) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let started = Instant::now();
        tokio::process::Command::new("true").status().await?;
        spawn_exit.push(ms(started.elapsed()));
    }
    for _ in 0..n {
        let started = Instant::now();
        let mut child = tokio::process::Command::new("echo")
            .arg("hello")
            .stdout(Stdio::piped())
            .spawn()?;
        if let Some(mut stdout) = child.stdout.take() {
            let mut byte = [0u8; 1];
            stdout.read_exact(&mut byte).await?;
            spawn_output.push(ms(started.elapsed()));
        }
        child.wait().await?;
    }

    let method = |what: &str| {
        format!(
            "{n} sequential `true` jobs on one connection after 1 warm-up job; {what}, measured \
             by hodei-bench from just before submit"
        )
    };
    let mut figures = Vec::new();
    figures.extend(percentiles(
        "submit returned",
        &submit,
        &method("submit RPC returned"),
    ));
    figures.extend(percentiles(
        "submit -> Provisioning seen",
        &provisioning,
        &method(
            "first Provisioning state on FollowJob (absent when the follower sees Running first)",
        ),
    ));
    figures.push(Figure::new(
        "jobs whose Provisioning was seen",
        provisioning.len() as f64,
        "jobs",
        format!("of {n}; the follower sees the latest state, so a fast Provisioning -> Running can skip it"),
    ));
    figures.extend(percentiles(
        "submit -> Running seen",
        &running,
        &method("first Running state on FollowJob"),
    ));
    figures.extend(percentiles(
        "submit -> terminal seen",
        &terminal,
        &method("terminal state on FollowJob"),
    ));
    figures.extend(percentiles(
        "server created_at -> started_at",
        &server_start,
        "same jobs; the server's own timestamps from GetJob",
    ));
    figures.extend(percentiles(
        "server started_at -> finished_at",
        &server_run,
        "same jobs; the server's own timestamps from GetJob",
    ));
    figures.extend(percentiles(
        "echo: submit -> first output byte",
        &first_output,
        &format!(
            "{n} sequential `echo hello` jobs followed with output; first OutputChunk arrival"
        ),
    ));
    figures.extend(percentiles(
        "baseline: spawn `true` -> exit",
        &spawn_exit,
        &format!("{n} direct spawns by hodei-bench (tokio::process), spawn to wait() returning"),
    ));
    figures.extend(percentiles(
        "baseline: spawn `echo` -> first byte",
        &spawn_output,
        &format!("{n} direct spawns by hodei-bench, stdout piped; spawn to first byte read"),
    ));
    Ok(figures)
}
