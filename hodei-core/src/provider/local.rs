//! `LocalProvider`: each worker is a `hodei-worker-bin` child process on this machine.

use std::{
    collections::{HashMap, HashSet},
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use parking_lot::{Mutex, MutexGuard};

use async_trait::async_trait;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    process::Command,
    sync::{mpsc, watch},
};
use tracing::{Instrument, info, info_span, warn};

use super::{
    Provider, ProviderCapabilities, ProviderError, ProviderHealth, ProvisionedWorker, WorkerEvent,
    WorkerLaunch,
};
use crate::job::{ProcessExit, WorkerId};

/// Name under which the local provider registers by default.
pub const LOCAL_PROVIDER_NAME: &str = "local";

#[derive(Debug)]
struct RunningWorker {
    pid: Pid,
    exited: watch::Receiver<bool>,
}

/// Runs each worker as a child process of the server, in its own process group.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    name: String,
    worker_binary: PathBuf,
    max_workers: Option<usize>,
    log_dir: Option<PathBuf>,
    server_ca: Option<PathBuf>,
    stop_grace: Duration,
    registration_timeout: Duration,
    workers: Arc<Mutex<HashMap<WorkerId, RunningWorker>>>,
}

#[bon::bon]
impl LocalProvider {
    /// A provider that starts `worker_binary` (a `hodei-worker-bin`) for each job.
    #[builder]
    pub fn new(
        #[builder(start_fn, into)] worker_binary: PathBuf,
        /// Provider name jobs ask for; default `local`.
        #[builder(into, default = LOCAL_PROVIDER_NAME.to_owned())]
        name: String,
        /// Most workers at once; unlimited when absent.
        max_workers: Option<usize>,
        /// Where each worker's own diagnostics go (`<worker-id>.log`); discarded when absent.
        #[builder(into)]
        log_dir: Option<PathBuf>,
        /// CA bundle (PEM path) workers verify an `https://` server with; handed to them
        /// as `HODEI_SERVER_CA`.
        #[builder(into)]
        server_ca: Option<PathBuf>,
        /// Time between SIGTERM and SIGKILL when a worker is destroyed.
        #[builder(default = Duration::from_secs(5))]
        stop_grace: Duration,
        /// How long a worker may take to start and register.
        #[builder(default = Duration::from_secs(30))]
        registration_timeout: Duration,
    ) -> Self {
        Self {
            name,
            worker_binary,
            max_workers,
            log_dir,
            server_ca,
            stop_grace,
            registration_timeout,
            workers: Arc::default(),
        }
    }

    fn workers(&self) -> MutexGuard<'_, HashMap<WorkerId, RunningWorker>> {
        self.workers.lock()
    }

    /// The worker's stdout and stderr: one append-mode file for both, so their writes
    /// never overwrite each other.
    fn output_for(&self, worker_id: WorkerId) -> Result<(Stdio, Stdio), ProviderError> {
        let Some(dir) = &self.log_dir else {
            return Ok((Stdio::null(), Stdio::null()));
        };
        std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{worker_id}.log")))
            })
            .and_then(|file| Ok((Stdio::from(file.try_clone()?), Stdio::from(file))))
            .map_err(|e| {
                ProviderError::fatal(
                    "SpawnFailed",
                    format!("cannot create worker log in {}: {e}", dir.display()),
                )
            })
    }

    async fn stop(&self, worker_id: WorkerId, pid: Pid, mut exited: watch::Receiver<bool>) {
        if *exited.borrow() {
            return;
        }
        let _ = killpg(pid, Signal::SIGTERM);
        let gone = tokio::time::timeout(self.stop_grace, exited.wait_for(|e| *e))
            .await
            .is_ok();
        if !gone {
            warn!(worker.id = %worker_id, "worker ignored SIGTERM; sending SIGKILL");
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(5), exited.wait_for(|e| *e)).await;
        }
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            containers: false,
            max_workers: self.max_workers,
            registration_timeout: self.registration_timeout,
        }
    }

    async fn health(&self) -> ProviderHealth {
        match std::fs::metadata(&self.worker_binary) {
            Ok(meta) if meta.is_file() => ProviderHealth::Healthy,
            Ok(_) => {
                ProviderHealth::Unhealthy(format!("{} is not a file", self.worker_binary.display()))
            }
            Err(e) => ProviderHealth::Unhealthy(format!(
                "worker binary {}: {e}",
                self.worker_binary.display()
            )),
        }
    }

    async fn provision(&self, launch: WorkerLaunch) -> Result<ProvisionedWorker, ProviderError> {
        let worker_id = launch.worker_id;
        let span = info_span!("local_worker", worker.id = %worker_id, job.id = %launch.job_id);
        let mut command = Command::new(&self.worker_binary);
        // The worker inherits the server's environment minus its HODEI_* settings.
        crate::worker::remove_hodei_env(&mut command);
        let (stdout, stderr) = self.output_for(worker_id)?;
        command
            .envs(launch.worker_env())
            .envs(
                self.server_ca
                    .iter()
                    .map(|path| (crate::worker::ENV_SERVER_CA, path)),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            ProviderError::fatal(
                "SpawnFailed",
                format!("cannot start worker {}: {e}", self.worker_binary.display()),
            )
        })?;
        let raw_pid = child
            .id()
            .ok_or_else(|| ProviderError::fatal("SpawnFailed", "worker exited at once"))?;
        let pid = Pid::from_raw(
            i32::try_from(raw_pid)
                .map_err(|_| ProviderError::fatal("SpawnFailed", "pid out of range"))?,
        );
        let (events_tx, events) = mpsc::unbounded_channel();
        let (exited_tx, exited_rx) = watch::channel(false);
        self.workers().insert(
            worker_id,
            RunningWorker {
                pid,
                exited: exited_rx,
            },
        );
        let _ = events_tx.send(WorkerEvent::Progress {
            detail: format!("worker process {raw_pid} started"),
        });
        info!(parent: &span, pid = raw_pid, "worker process started");
        let workers = Arc::clone(&self.workers);
        tokio::spawn(
            async move {
                let status = child.wait().await;
                let exit = match &status {
                    Ok(s) => s
                        .code()
                        .map(ProcessExit::Code)
                        .or(s.signal().map(ProcessExit::Signal)),
                    Err(_) => None,
                };
                info!(?exit, "worker process ended");
                let _ = exited_tx.send(true);
                workers.lock().remove(&worker_id);
                let message = match status {
                    Ok(s) => format!("worker process {s}"),
                    Err(e) => format!("waiting for the worker process failed: {e}"),
                };
                let _ = events_tx.send(WorkerEvent::Exited { exit, message });
            }
            .instrument(span),
        );
        Ok(ProvisionedWorker {
            description: format!("pid {raw_pid}"),
            events,
        })
    }

    async fn destroy(&self, worker_id: WorkerId) -> Result<(), ProviderError> {
        let worker = self
            .workers()
            .get(&worker_id)
            .map(|w| (w.pid, w.exited.clone()));
        if let Some((pid, exited)) = worker {
            self.stop(worker_id, pid, exited).await;
        }
        Ok(())
    }

    async fn cleanup_orphans(&self, known: &HashSet<WorkerId>) -> Result<usize, ProviderError> {
        let orphans: Vec<_> = self
            .workers()
            .iter()
            .filter(|(id, _)| !known.contains(id))
            .map(|(id, w)| (*id, w.pid, w.exited.clone()))
            .collect();
        for (worker_id, pid, exited) in &orphans {
            warn!(worker.id = %worker_id, "stopping orphaned local worker");
            self.stop(*worker_id, *pid, exited.clone()).await;
        }
        Ok(orphans.len())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::job::{JobId, JobSpec};

    /// A stand-in worker binary: a shell script.
    fn script(dir: &std::path::Path, body: &str) -> PathBuf {
        let path = dir.join("worker.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn launch() -> WorkerLaunch {
        WorkerLaunch {
            worker_id: WorkerId::new(),
            job_id: JobId::new(),
            spec: JobSpec::builder("true").build().unwrap(),
            server_address: "http://127.0.0.1:1".into(),
            otp_token: "token".into(),
        }
    }

    async fn exit_of(worker: &mut ProvisionedWorker) -> Option<ProcessExit> {
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), worker.events.recv())
                .await
                .expect("the worker ends within 10 s")
                .expect("events until the exit");
            if let WorkerEvent::Exited { exit, .. } = event {
                return exit;
            }
        }
    }

    #[tokio::test]
    async fn the_worker_log_keeps_stdout_and_stderr_whole_and_the_exit_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let binary = script(
            dir.path(),
            "echo \"out one $HODEI_WORKER_ID\"; echo 'err one' >&2; echo 'out two'; echo 'err two' >&2; exit 7",
        );
        let logs = dir.path().join("logs");
        let provider = LocalProvider::builder(binary).log_dir(&logs).build();
        let launch = launch();
        let worker_id = launch.worker_id;
        let mut worker = provider.provision(launch).await.unwrap();
        assert_eq!(exit_of(&mut worker).await, Some(ProcessExit::Code(7)));

        let log = std::fs::read_to_string(logs.join(format!("{worker_id}.log"))).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(
            lines,
            [
                format!("out one {worker_id}").as_str(),
                "err one",
                "out two",
                "err two"
            ],
            "{log:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_worker_binary_is_unhealthy_and_fails_to_spawn_by_name() {
        let provider = LocalProvider::builder("/nonexistent/hodei-worker-bin").build();
        assert!(matches!(
            provider.health().await,
            ProviderHealth::Unhealthy(m) if m.contains("/nonexistent/hodei-worker-bin")
        ));
        let error = provider.provision(launch()).await.unwrap_err();
        assert_eq!(error.reason, "SpawnFailed");
        assert!(
            error.message.contains("/nonexistent/hodei-worker-bin"),
            "{error}"
        );
    }
}
