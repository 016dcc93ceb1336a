//! A `hodei-server-bin` child process on a free loopback port with its own data dir.

use std::{
    net::{Ipv4Addr, TcpListener},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hodei_core::HodeiClient;
use nix::{sys::signal::Signal, unistd::Pid};

use crate::{binaries::Binaries, procfs, target::Target};

/// Longest wait for the server to answer after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for workers to exit after their jobs ended.
pub const WORKERS_GONE: Duration = Duration::from_secs(30);
/// Longest wait for the server to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running server; stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts a server running jobs on `target`, allowing `max_workers` workers at once,
    /// and waits until it answers.
    pub async fn start(
        bins: &Binaries,
        target: &Target,
        max_workers: usize,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hodei-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        // Another process may take the port between this probe and the server's bind;
        // unlikely on a benchmark machine, and it shows as a start failure.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut command = Command::new(&bins.server);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HODEI_") {
                command.env_remove(key);
            }
        }
        command
            .env("HODEI_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("HODEI_DATA_DIR", dir.path().join("data"))
            .env("HODEI_WORKER_BIN", &bins.worker)
            .envs(target.server_env(&url, max_workers))
            .env("HODEI_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", bins.server.display()))?;
        let mut server = Self { child, url, dir };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("server exited with {status}: {}", self.log_tail());
            }
            if let Ok(client) = HodeiClient::connect(self.url.clone()).await
                && client.list(1).await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "server did not answer within {READY_TIMEOUT:?}: {}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A new connection (its own HTTP/2 connection) to the server.
    pub async fn client(&self) -> anyhow::Result<HodeiClient> {
        Ok(HodeiClient::connect(self.url.clone()).await?)
    }

    /// The server's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
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
        let deadline = Instant::now() + limit;
        while !self.workers().is_empty() {
            if Instant::now() > deadline {
                bail!("workers still running {limit:?} after their jobs ended");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The last lines of the server's own log.
    #[must_use]
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Stops the server: SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.signal(Signal::SIGKILL);
                self.child.wait()?;
                bail!("server ignored SIGTERM for {STOP_GRACE:?}; killed");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                self.signal(Signal::SIGKILL);
                let _ = self.child.wait();
            }
        }
    }
}
