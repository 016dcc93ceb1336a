//! Idle footprint: the server's memory and CPU when idle, one worker's memory while its
//! job waits, and the sizes of the release binaries.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use hodei_core::{JobEvent, JobState};

use crate::{
    binaries::Binaries, jobs, procfs, report::Figure, server::ServerProcess, target::Target,
};

const SETTLE: Duration = Duration::from_secs(2);
const IDLE_WINDOW: Duration = Duration::from_secs(5);
/// Longest wait for the cancelled job to end before the server is stopped anyway.
const CANCEL_PATIENCE: Duration = Duration::from_secs(30);

pub async fn run(bins: &Binaries) -> anyhow::Result<Vec<Figure>> {
    let server = ServerProcess::start(bins, &Target::Local, 4).await?;
    tokio::time::sleep(SETTLE).await;
    let idle = server.memory()?;
    let cpu_before = server.cpu()?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle_cpu = server.cpu()? - cpu_before;

    let client = server.client().await?;
    let job = client
        .submit(&jobs::spec("sleep", &["60".to_owned()])?)
        .await?;
    let mut events = client.follow(job.id).live().states_only().await?;
    while let Some(event) = events.next().await {
        match event? {
            JobEvent::State {
                state: JobState::Running,
                ..
            } => break,
            JobEvent::State { state, .. } if state.is_terminal() => bail!("job ended {state:?}"),
            _ => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let worker = *server
        .workers()
        .first()
        .context("no worker process found")?;
    let worker_memory = procfs::memory(worker)?;
    let with_job = server.memory()?;
    client.cancel(job.id).await?;
    let ended = async {
        while let Some(event) = events.next().await {
            if matches!(event?, JobEvent::State { state, .. } if state.is_terminal()) {
                break;
            }
        }
        anyhow::Ok(())
    };
    if let Ok(ended) = tokio::time::timeout(CANCEL_PATIENCE, ended).await {
        ended?;
    }
    server.stop().await?;

    let mut figures = vec![
        Figure::new(
            "server idle RSS",
            super::mib(idle.rss_kib),
            "MiB",
            format!("VmRSS of hodei-server-bin {SETTLE:?} after it answered, no job run yet"),
        ),
        Figure::new(
            "server idle peak RSS",
            super::mib(idle.peak_kib),
            "MiB",
            "VmHWM at the same moment",
        ),
        Figure::new(
            "server idle CPU",
            idle_cpu.own * 1e3 / IDLE_WINDOW.as_secs_f64(),
            "ms/s",
            format!("utime+stime of hodei-server-bin over {IDLE_WINDOW:?} of idleness, per second"),
        ),
        Figure::new(
            "server RSS with one running job",
            super::mib(with_job.rss_kib),
            "MiB",
            "VmRSS of hodei-server-bin while one `sleep 60` job runs",
        ),
        Figure::new(
            "worker RSS",
            super::mib(worker_memory.rss_kib),
            "MiB",
            "VmRSS of the hodei-worker-bin process of a running `sleep 60` job, 0.5 s after Running",
        ),
        Figure::new(
            "worker peak RSS",
            super::mib(worker_memory.peak_kib),
            "MiB",
            "VmHWM of the same worker",
        ),
    ];
    for (name, path) in [
        ("hodei-server-bin", &bins.server),
        ("hodei-worker-bin", &bins.worker),
        ("hodei", &bins.cli),
        ("hodei-bench", &bins.bench),
    ] {
        if let Ok(meta) = std::fs::metadata(path) {
            figures.push(Figure::new(
                format!("size of {name}"),
                meta.len() as f64 / (1024.0 * 1024.0),
                "MiB",
                format!("file size of {}", path.display()),
            ));
        }
    }
    Ok(figures)
}
