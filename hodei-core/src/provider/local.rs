//! `LocalProvider`: each worker is a `hodei-worker-bin` child process on this machine.

mod process_identity;
mod run_as;

use process_identity::{ADOPTED_POLL_INTERVAL, Locator};
use run_as::{IdPool, WorkerIds};
pub use run_as::{RunAs, RunAsError};

use std::{
    collections::HashMap, os::unix::process::ExitStatusExt, path::PathBuf, process::Stdio,
    sync::Arc, time::Duration,
};

use parking_lot::{Mutex, MutexGuard};

use async_trait::async_trait;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    io::AsyncWriteExt,
    process::{Child, Command},
    sync::{mpsc, watch},
};
use tracing::{Instrument, info, info_span, warn};

use super::{
    KnownWorkers, Provider, ProviderCapabilities, ProviderError, ProviderHealth, ProvisionedWorker,
    WorkerEvent, WorkerLaunch, WorkerProof,
};
use crate::{
    job::{ProcessExit, WorkerId},
    worker::ScratchDir,
};

/// Name under which the local provider registers by default.
pub const LOCAL_PROVIDER_NAME: &str = "local";

/// Variables of the server's environment a worker keeps: where programs are, the
/// language, and how the worker logs. Nothing else of the server's reaches it, and its
/// jobs get only the first two (plus HOME and their own env).
const WORKER_ENV_KEPT: [&str; 4] = ["PATH", "LANG", "HODEI_LOG", "HODEI_LOG_FORMAT"];
/// Where workers run: neutral, never the server's working (data) directory.
const WORKER_DIR: &str = "/";

#[derive(Debug)]
struct RunningWorker {
    pid: Pid,
    exited: watch::Receiver<bool>,
}

/// Runs each worker as a child process of the server, in its own process group (so a
/// signal to the server's terminal or group does not reach it), with a clean environment,
/// and as `run_as` when set.
#[derive(Debug, Clone)]
pub struct LocalProvider {
    name: String,
    worker_binary: PathBuf,
    ids: Option<Arc<IdPool>>,
    max_workers: Option<usize>,
    log_dir: Option<PathBuf>,
    server_ca: Option<PathBuf>,
    stop_grace: Duration,
    registration_timeout: Duration,
    outlive_server: bool,
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
        /// The user workers and their jobs run as, or a range of uids to give each worker
        /// its own (the server must be able to switch to them, i.e. run as root); the
        /// server's own user when absent.
        run_as: Option<RunAs>,
        /// Workers keep running when this process ends (however it ends), so that their
        /// jobs survive a server restart and the next server process adopts them. When
        /// false, workers are killed when the provider is dropped.
        #[builder(default)]
        outlive_server: bool,
    ) -> Self {
        Self {
            name,
            worker_binary,
            ids: run_as.map(|run_as| Arc::new(IdPool::new(run_as))),
            max_workers,
            log_dir,
            server_ca,
            stop_grace,
            registration_timeout,
            outlive_server,
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
        crate::private_fs::create_dir(dir)
            .and_then(|()| {
                crate::private_fs::file_options()
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

    /// The worker's command: a clean environment with what it needs to find the server,
    /// in a neutral directory, as `ids` when given. The credential is not in it: it
    /// goes through a pipe on stdin, since an environment is readable in /proc by every
    /// process of the same user.
    fn worker_command(
        &self,
        launch: &WorkerLaunch,
        ids: Option<WorkerIds>,
    ) -> Result<Command, ProviderError> {
        let mut command = Command::new(&self.worker_binary);
        command.env_clear();
        for name in WORKER_ENV_KEPT {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let (stdout, stderr) = self.output_for(launch.worker_id)?;
        command
            .envs(launch.worker_env())
            .envs(
                self.server_ca
                    .iter()
                    .map(|path| (crate::worker::ENV_SERVER_CA, path)),
            )
            .env(crate::worker::ENV_WORKER_TOKEN_FILE, "/dev/stdin")
            .current_dir(WORKER_DIR)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(!self.outlive_server);
        if let Some(ids) = ids {
            command.uid(ids.uid).gid(ids.gid);
        }
        Ok(command)
    }

    /// Records a running worker; the returned sender says when it has ended.
    fn track(&self, worker_id: WorkerId, pid: Pid) -> watch::Sender<bool> {
        let (exited_tx, exited) = watch::channel(false);
        self.workers()
            .insert(worker_id, RunningWorker { pid, exited });
        exited_tx
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

/// A fresh private directory for one worker, owned by the user it runs as.
fn worker_dir(ids: Option<WorkerIds>) -> Result<ScratchDir, ProviderError> {
    let failed = |e: std::io::Error| {
        ProviderError::fatal(
            "SpawnFailed",
            format!("cannot create the worker's directory: {e}"),
        )
    };
    let dir = ScratchDir::create(None, "hodei-worker-").map_err(failed)?;
    if let Some(ids) = ids {
        std::os::unix::fs::chown(dir.path(), Some(ids.uid), Some(ids.gid)).map_err(failed)?;
    }
    Ok(dir)
}

/// Writes the worker's credential and a newline to its stdin and closes it. A worker
/// that ended before reading it is no error here: its exit is reported as an event.
async fn hand_over_token(child: &mut Child, token: &str) -> Result<(), ProviderError> {
    let sent = match child.stdin.take() {
        Some(mut stdin) => {
            let mut line = Vec::with_capacity(token.len() + 1);
            line.extend_from_slice(token.as_bytes());
            line.push(b'\n');
            // The pipe holds far more than a token, so this does not wait for the worker.
            stdin.write_all(&line).await
        }
        None => Err(std::io::ErrorKind::NotConnected.into()),
    };
    match sent {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => {
            let _ = child.start_kill();
            Err(ProviderError::fatal(
                "SpawnFailed",
                format!("cannot hand the worker its credential: {e}"),
            ))
        }
    }
}

/// What a running worker holds: its uid and its directory. Given back once the worker has
/// ended; when workers outlive the server, a server that stops first leaves them be.
#[derive(Debug)]
struct Held {
    lease: Option<IdLease>,
    work_dir: Option<ScratchDir>,
    keep_on_drop: bool,
}

impl Held {
    /// Kills what is left under the worker's own uid, gives the uid back, and removes the
    /// worker's directory.
    fn release(mut self) {
        drop(self.lease.take());
        drop(self.work_dir.take());
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.keep_on_drop {
            if let Some(lease) = self.lease.take() {
                std::mem::forget(lease);
            }
            if let Some(dir) = self.work_dir.take() {
                dir.keep();
            }
        }
    }
}

/// A worker has ended: what it held is given back (blocking work, off the async
/// threads), then the provider forgets it.
async fn ended(
    held: Held,
    exited: &watch::Sender<bool>,
    workers: &Mutex<HashMap<WorkerId, RunningWorker>>,
    worker_id: WorkerId,
) {
    // A uid of its own is given back only once nothing runs under it.
    let _ = tokio::task::spawn_blocking(move || held.release()).await;
    let _ = exited.send(true);
    workers.lock().remove(&worker_id);
}

/// The ids one worker runs as, given back (after killing what is left under a uid of
/// its own) when dropped.
#[derive(Debug)]
struct IdLease {
    pool: Arc<IdPool>,
    ids: WorkerIds,
}

impl IdLease {
    fn take(pool: &Arc<IdPool>) -> Result<Self, ProviderError> {
        let ids = pool.take().ok_or_else(|| {
            ProviderError::retryable(
                "NoFreeUid",
                format!("every uid is taken by a running worker ({})", pool.run_as()),
            )
        })?;
        Ok(Self {
            pool: Arc::clone(pool),
            ids,
        })
    }
}

impl Drop for IdLease {
    fn drop(&mut self) {
        self.pool.release(self.ids);
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
            worker_proof: WorkerProof::OneTimeToken,
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
        let token = launch.otp_token.as_deref().ok_or_else(|| {
            ProviderError::fatal("SpawnFailed", "no one-time token for the local worker")
        })?;
        let lease = match &self.ids {
            Some(pool) => Some(IdLease::take(pool)?),
            None => None,
        };
        let ids = lease.as_ref().map(|l| l.ids);
        let work_dir = worker_dir(ids)?;
        let mut command = self.worker_command(&launch, ids)?;
        // The worker's job makes its scratch dir in here; whatever way the worker ends,
        // the provider removes it.
        command.env(crate::worker::ENV_WORK_DIR, work_dir.path());
        command.env(
            crate::worker::ENV_RECONNECT_WINDOW,
            humantime::format_duration(launch.reconnect_window).to_string(),
        );
        let as_whom = lease
            .as_ref()
            .map(|lease| format!(" as {}:{}", lease.ids.uid, lease.ids.gid))
            .unwrap_or_default();
        let mut child = command.spawn().map_err(|e| {
            ProviderError::fatal(
                "SpawnFailed",
                format!(
                    "cannot start worker {}{as_whom}: {e}",
                    self.worker_binary.display()
                ),
            )
        })?;
        hand_over_token(&mut child, token).await?;
        let raw_pid = child
            .id()
            .ok_or_else(|| ProviderError::fatal("SpawnFailed", "worker exited at once"))?;
        let pid = Pid::from_raw(
            i32::try_from(raw_pid)
                .map_err(|_| ProviderError::fatal("SpawnFailed", "pid out of range"))?,
        );
        let locator = Locator::new(pid, ids, work_dir.path().to_owned()).and_then(|l| l.encode());
        let (events_tx, events) = mpsc::unbounded_channel();
        let exited_tx = self.track(worker_id, pid);
        let _ = events_tx.send(WorkerEvent::Progress {
            detail: format!("worker process {raw_pid} started"),
        });
        info!(parent: &span, pid = raw_pid, "worker process started");
        let workers = Arc::clone(&self.workers);
        let held = Held {
            lease,
            work_dir: Some(work_dir),
            keep_on_drop: self.outlive_server,
        };
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
                let message = match status {
                    Ok(s) => format!("worker process {s}"),
                    Err(e) => format!("waiting for the worker process failed: {e}"),
                };
                ended(held, &exited_tx, &workers, worker_id).await;
                let _ = events_tx.send(WorkerEvent::Exited { exit, message });
            }
            .instrument(span),
        );
        Ok(ProvisionedWorker {
            description: format!("pid {raw_pid}"),
            events,
            locator,
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

    /// Finds the worker by its process id and start time; checks it for its end, since
    /// it is no child of this process.
    async fn adopt(
        &self,
        worker_id: WorkerId,
        locator: Option<&str>,
    ) -> Result<Option<ProvisionedWorker>, ProviderError> {
        let Some(locator) = locator.and_then(Locator::decode) else {
            warn!(worker.id = %worker_id, "no process is recorded for the worker");
            return Ok(None);
        };
        let lease = match (&self.ids, locator.ids()) {
            (Some(pool), Some(ids)) if pool.claim(ids) => Some(IdLease {
                pool: Arc::clone(pool),
                ids,
            }),
            _ => None,
        };
        let held = Held {
            lease,
            work_dir: Some(crate::worker::ScratchDir::adopt(locator.dir.clone())),
            keep_on_drop: self.outlive_server,
        };
        if !locator.is_alive() {
            info!(worker.id = %worker_id, pid = locator.pid, "the worker process is gone");
            let _ = tokio::task::spawn_blocking(move || held.release()).await;
            return Ok(None);
        }
        let pid = locator.pid();
        let exited_tx = self.track(worker_id, pid);
        let (events_tx, events) = mpsc::unbounded_channel();
        let workers = Arc::clone(&self.workers);
        let span = info_span!("local_worker", worker.id = %worker_id);
        info!(parent: &span, pid = locator.pid, "adopted a running worker process");
        tokio::spawn(
            async move {
                let mut poll = tokio::time::interval(ADOPTED_POLL_INTERVAL);
                while locator.is_alive() {
                    poll.tick().await;
                }
                info!("adopted worker process ended");
                ended(held, &exited_tx, &workers, worker_id).await;
                let _ = events_tx.send(WorkerEvent::Exited {
                    exit: None,
                    message: "worker process ended (started by an earlier server process, \
                              so its exit status is not known)"
                        .to_owned(),
                });
            }
            .instrument(span),
        );
        Ok(Some(ProvisionedWorker {
            description: format!("pid {pid}"),
            events,
            locator: None,
        }))
    }

    /// Copies its process table first and asks `known` only afterwards, so a worker
    /// started while the sweep runs is known by the time it is asked about.
    async fn cleanup_orphans(&self, known: &dyn KnownWorkers) -> Result<usize, ProviderError> {
        let running: Vec<_> = self
            .workers()
            .iter()
            .map(|(id, w)| (*id, w.pid, w.exited.clone()))
            .collect();
        let orphans: Vec<_> = running
            .into_iter()
            .filter(|(id, _, _)| !known.contains(*id))
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
        let source = dir.join("worker.sh.in");
        std::fs::write(&source, format!("#!/bin/sh\n{body}\n")).unwrap();
        // Written by another process: a test thread forking while this process held the
        // file open for writing would make running it fail with "text file busy".
        let path = dir.join("worker.sh");
        let copied = std::process::Command::new("cp")
            .arg(&source)
            .arg(&path)
            .status()
            .unwrap();
        assert!(copied.success());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn launch() -> WorkerLaunch {
        WorkerLaunch {
            worker_id: WorkerId::new(),
            job_id: JobId::new(),
            spec: JobSpec::builder("true").build().unwrap(),
            server_address: "http://127.0.0.1:1".into(),
            reconnect_window: Duration::from_secs(90),
            otp_token: Some("token".into()),
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

        let log_path = logs.join(format!("{worker_id}.log"));
        assert_eq!(crate::private_fs::tests::mode_of(&logs), 0o700);
        assert_eq!(crate::private_fs::tests::mode_of(&log_path), 0o600);
        let log = std::fs::read_to_string(log_path).unwrap();
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

    /// The worker script's log, once it has ended with exit 0.
    async fn run_script(provider: &LocalProvider, logs: &std::path::Path) -> String {
        let launch = launch();
        let worker_id = launch.worker_id;
        let mut worker = provider.provision(launch).await.unwrap();
        let exit = exit_of(&mut worker).await;
        let log = std::fs::read_to_string(logs.join(format!("{worker_id}.log"))).unwrap();
        assert_eq!(exit, Some(ProcessExit::Code(0)), "{log}");
        log
    }

    #[tokio::test]
    async fn the_worker_gets_its_token_on_stdin_and_a_clean_environment_in_a_neutral_dir() {
        let dir = tempfile::tempdir().unwrap();
        let binary = script(
            dir.path(),
            "read -r token < \"$HODEI_WORKER_TOKEN_FILE\"; echo \"token=$token\"; echo \"dir=$(pwd)\"; \
             env | cut -d= -f1 | sort | sed 's/^/var=/'",
        );
        let logs = dir.path().join("logs");
        let provider = LocalProvider::builder(binary).log_dir(&logs).build();
        let log = run_script(&provider, &logs).await;
        assert!(log.contains("token=token\n"), "{log}");
        assert!(log.contains("dir=/\n"), "{log}");
        let allowed = [
            "HODEI_WORKER_ID",
            "HODEI_SERVER_ADDRESS",
            "HODEI_WORKER_TOKEN_FILE",
            "HODEI_WORK_DIR",
            "HODEI_RECONNECT_WINDOW",
            // Set by the shell itself.
            "PWD",
            "SHLVL",
            "_",
            "OLDPWD",
        ];
        let names: Vec<&str> = log.lines().filter_map(|l| l.strip_prefix("var=")).collect();
        assert!(names.contains(&"HODEI_WORKER_TOKEN_FILE"), "{log}");
        assert!(names.contains(&"HODEI_RECONNECT_WINDOW"), "{log}");
        for name in names {
            assert!(
                allowed.contains(&name) || WORKER_ENV_KEPT.contains(&name),
                "the worker inherited {name}: {log}"
            );
        }
    }

    #[tokio::test]
    async fn the_workers_directory_is_private_and_removed_even_when_the_worker_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let binary = script(
            dir.path(),
            "echo \"dir=$HODEI_WORK_DIR\"; mkdir \"$HODEI_WORK_DIR/job\" && \
             stat -c 'mode=%a' \"$HODEI_WORK_DIR\"; kill -9 $$",
        );
        let logs = dir.path().join("logs");
        let provider = LocalProvider::builder(binary).log_dir(&logs).build();
        let launch = launch();
        let worker_id = launch.worker_id;
        let mut worker = provider.provision(launch).await.unwrap();
        assert_eq!(exit_of(&mut worker).await, Some(ProcessExit::Signal(9)));
        let log = std::fs::read_to_string(logs.join(format!("{worker_id}.log"))).unwrap();
        assert!(log.contains("mode=700\n"), "{log}");
        let work_dir = log
            .lines()
            .find_map(|l| l.strip_prefix("dir="))
            .unwrap_or_else(|| panic!("{log}"));
        assert!(work_dir.contains("hodei-worker-"), "{log}");
        assert!(
            !std::path::Path::new(work_dir).exists(),
            "{work_dir} is left"
        );
    }

    #[tokio::test]
    async fn a_worker_of_a_root_server_runs_as_the_user_it_is_given() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can run workers as another user");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let binary = script(dir.path(), "echo \"ids=$(id -u):$(id -g):$(id -G)\"");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let logs = dir.path().join("logs");
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        let provider = LocalProvider::builder(binary)
            .log_dir(&logs)
            .run_as(RunAs::user("nobody").unwrap())
            .build();
        let log = run_script(&provider, &logs).await;
        let (uid, gid) = (nobody.uid, nobody.gid);
        assert!(log.contains(&format!("ids={uid}:{gid}:{gid}\n")), "{log}");
    }

    /// Whether a live process has `arg` among its arguments (a zombie has none).
    fn alive_with_arg(arg: &str) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
    }

    #[tokio::test]
    async fn workers_of_a_uid_range_each_get_their_own_uid_and_leave_nothing_under_it() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: only root can run workers as other uids");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let marker = format!("3003.{}", std::process::id());
        let binary = script(
            dir.path(),
            &format!("setsid sleep {marker} & echo \"uid=$(id -u)\"; sleep 0.3"),
        );
        let logs = dir.path().join("logs");
        let provider = LocalProvider::builder(binary)
            .log_dir(&logs)
            .run_as(RunAs::uid_range(4_000_000, 4_000_001).unwrap())
            .build();
        let (a, b) = (launch(), launch());
        let ids = [a.worker_id, b.worker_id];
        let mut first = provider.provision(a).await.unwrap();
        let mut second = provider.provision(b).await.unwrap();
        let third = provider.provision(launch()).await.unwrap_err();
        assert_eq!(third.reason, "NoFreeUid");
        assert!(third.retryable);
        assert_eq!(exit_of(&mut first).await, Some(ProcessExit::Code(0)));
        assert_eq!(exit_of(&mut second).await, Some(ProcessExit::Code(0)));
        let uids: Vec<String> = ids
            .iter()
            .map(|id| std::fs::read_to_string(logs.join(format!("{id}.log"))).unwrap())
            .collect();
        let mut sorted = uids.clone();
        sorted.sort();
        assert_eq!(sorted, ["uid=4000000\n", "uid=4000001\n"], "{uids:?}");
        assert!(
            !alive_with_arg(&marker),
            "a job process outlived its worker"
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

    #[test]
    fn placement_and_secrets_are_refused_never_dropped() {
        use std::collections::BTreeMap;

        use crate::{
            Provider,
            job::{JobSpec, SecretRef},
        };

        let provider = LocalProvider::builder("/bin/true").build();
        let plain = JobSpec::builder("true").build().unwrap();
        provider.check_spec(&plain).unwrap();
        let secret = JobSpec::builder("true")
            .secret_files(BTreeMap::from([(
                "/etc/app/token".to_owned(),
                SecretRef::new("app", "token"),
            )]))
            .build()
            .unwrap();
        let refusal = provider.check_spec(&secret).unwrap_err();
        assert_eq!(refusal.field, "secret_files");
        assert_eq!(
            refusal.to_string(),
            "invalid secret_files: secrets are only available on the kubernetes provider; \
             provider \"local\" cannot give a job secret_files"
        );
        let storage = JobSpec::builder("true")
            .ephemeral_storage("1Gi".parse().unwrap())
            .build()
            .unwrap();
        assert_eq!(
            provider.check_spec(&storage).unwrap_err().message,
            "ephemeral_storage is only available on the kubernetes provider; provider \"local\" \
             cannot honour it"
        );
    }
}
