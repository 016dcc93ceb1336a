//! Watches the server while it is abused: its memory and open files, and whether its
//! health check keeps answering SERVING.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::procfs;

/// How often the server's memory and open files are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// How often the health check is asked.
const HEALTH_EVERY: Duration = Duration::from_millis(250);
/// How long a health check may take before it counts as failed.
const HEALTH_DEADLINE: Duration = Duration::from_secs(2);

/// What the watch saw.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// Peak resident memory (VmHWM) at the end, KiB.
    pub peak_rss_kib: u64,
    /// Resident memory at the end, KiB.
    pub end_rss_kib: u64,
    /// Most open file descriptors seen in one sample.
    pub peak_fds: usize,
    /// Open file descriptors at the end.
    pub end_fds: usize,
    /// Health checks asked.
    pub health_checks: u64,
    /// Health checks answered with anything but SERVING, or not in time.
    pub health_failures: u64,
    /// The first failure, described.
    pub first_health_failure: Option<String>,
    /// Slowest health answer.
    pub slowest_health: Duration,
}

/// A running watch; [`Watch::finish`] stops it and returns what it saw.
#[derive(Debug)]
pub struct Watch {
    stop: CancellationToken,
    samples: JoinHandle<usize>,
    health: JoinHandle<Watched>,
    pid: u32,
}

/// Open file descriptors of `pid`.
#[must_use]
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

impl Watch {
    /// Starts watching the server `pid` whose job API is at `url`.
    pub async fn start(pid: u32, url: String) -> anyhow::Result<Self> {
        let stop = CancellationToken::new();
        let samples = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut peak = 0;
                while !stop.is_cancelled() {
                    peak = peak.max(open_fds(pid));
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
                peak
            }
        });
        // A connection of its own, as a load balancer's probe would have.
        let channel = tonic::transport::Endpoint::from_shared(url)?
            .connect()
            .await?;
        let health = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut client = HealthClient::new(channel);
                let mut watched = Watched::default();
                while !stop.is_cancelled() {
                    let asked = Instant::now();
                    let answer = tokio::time::timeout(
                        HEALTH_DEADLINE,
                        client.check(HealthCheckRequest::default()),
                    )
                    .await;
                    watched.slowest_health = watched.slowest_health.max(asked.elapsed());
                    watched.health_checks += 1;
                    let failure = match answer {
                        Ok(Ok(response))
                            if response.get_ref().status() == ServingStatus::Serving =>
                        {
                            None
                        }
                        Ok(Ok(response)) => Some(format!("{:?}", response.get_ref().status())),
                        Ok(Err(status)) => {
                            Some(format!("{:?}: {}", status.code(), status.message()))
                        }
                        Err(_) => Some(format!("no answer within {HEALTH_DEADLINE:?}")),
                    };
                    if let Some(failure) = failure {
                        watched.health_failures += 1;
                        watched.first_health_failure.get_or_insert(failure);
                    }
                    tokio::time::sleep(HEALTH_EVERY).await;
                }
                watched
            }
        });
        Ok(Self {
            stop,
            samples,
            health,
            pid,
        })
    }

    /// Stops watching; reads the final memory and open files.
    pub async fn finish(self) -> anyhow::Result<Watched> {
        self.stop.cancel();
        let peak_fds = self.samples.await?;
        let mut watched = self.health.await?;
        let memory = procfs::memory(self.pid)?;
        watched.end_fds = open_fds(self.pid);
        watched.peak_fds = peak_fds.max(watched.end_fds);
        watched.peak_rss_kib = memory.peak_kib;
        watched.end_rss_kib = memory.rss_kib;
        Ok(watched)
    }
}
