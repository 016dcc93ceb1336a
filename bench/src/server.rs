//! A `hodei-server-bin` child process on a free loopback port with its own data dir.

use std::time::Duration;

use anyhow::{Context, bail};
use hodei_core::HodeiClient;
use hodei_test_fixtures::{ServerCommand, ServerProcess as Process, wait_until};

use crate::{binaries::Binaries, procfs, target::Target};

/// Longest wait for the server to answer after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for workers to exit after their jobs ended.
pub const WORKERS_GONE: Duration = Duration::from_secs(30);
/// Longest wait for the server to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of the server's log that an error shows.
const LOG_TAIL: usize = 10;

/// A running server; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    process: Process,
    // Holds the data dir and log until the server is gone (fields drop in order).
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts a server running jobs on `target`, allowing `max_workers` workers at once,
    /// and waits until it answers.
    pub async fn start(
        bins: &Binaries,
        target: &Target,
        max_workers: usize,
    ) -> anyhow::Result<Self> {
        Self::start_with_env(bins, target, max_workers, &[]).await
    }

    /// As [`start`](Self::start), with the `HODEI_*` settings of `env` on top.
    pub async fn start_with_env(
        bins: &Binaries,
        target: &Target,
        max_workers: usize,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hodei-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let port = hodei_test_fixtures::free_port()?;
        let worker_port = hodei_test_fixtures::free_port()?;
        let advertise = target.advertise_address(worker_port)?;
        let process = ServerCommand::new(&bins.server)
            .port(port)
            .worker_port(worker_port)
            .without_inherited_hodei_env()
            .env("HODEI_DATA_DIR", dir.path().join("data"))
            .env("HODEI_WORKER_BIN", &bins.worker)
            .envs(target.server_env(&advertise, max_workers))
            .env("HODEI_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .log_file(dir.path().join("server.log"))
            .terminate_on_drop(STOP_GRACE)
            .spawn()?;
        let mut server = Self { process, _dir: dir };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = self.process.url();
        let process = &mut self.process;
        let answered = wait_until(READY_TIMEOUT, "the server answers", || {
            let exited = !matches!(process.try_wait(), Ok(None));
            let url = url.clone();
            async move { exited || answers(url).await }
        })
        .await;
        if let Some(status) = self.process.try_wait()? {
            bail!("server exited with {status}: {}", self.log_tail());
        }
        answered.with_context(|| self.log_tail())
    }

    /// A new connection (its own HTTP/2 connection) to the server.
    pub async fn client(&self) -> anyhow::Result<HodeiClient> {
        Ok(HodeiClient::connect(self.process.url()).await?)
    }

    /// The URL of the server's job API.
    #[must_use]
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The URL of the server's worker API.
    #[must_use]
    pub fn worker_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.worker_port())
    }

    /// The server's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server's memory now.
    pub fn memory(&self) -> anyhow::Result<procfs::Memory> {
        procfs::memory(self.pid())
    }

    /// The server's CPU time so far.
    pub fn cpu(&self) -> anyhow::Result<procfs::CpuTime> {
        procfs::cpu(&self.pid().to_string())
    }

    /// The worker processes it runs now.
    #[must_use]
    pub fn workers(&self) -> Vec<u32> {
        procfs::children(self.pid())
    }

    /// Waits (up to `limit`) until the server has no worker processes left, so the CPU
    /// time of finished workers has been added to its children's time.
    pub async fn workers_gone(&self, limit: Duration) -> anyhow::Result<()> {
        wait_until(limit, "the workers have exited after their jobs", || {
            std::future::ready(self.workers().is_empty())
        })
        .await?;
        Ok(())
    }

    /// The last lines of the server's own log.
    #[must_use]
    pub fn log_tail(&self) -> String {
        self.process.log_tail(LOG_TAIL)
    }

    /// Stops the server: SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Self { process, _dir } = self;
        tokio::task::spawn_blocking(move || process.stop(STOP_GRACE)).await??;
        Ok(())
    }
}

/// Whether a server at `url` answers a job API call.
async fn answers(url: String) -> bool {
    match HodeiClient::connect(url).await {
        Ok(client) => client.list().page_size(1).await.is_ok(),
        Err(_) => false,
    }
}
