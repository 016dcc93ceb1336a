//! The job's command as a child process in its own process group and scratch directory,
//! with a clean environment, read as raw bytes.

use std::{os::unix::process::ExitStatusExt, path::Path, process::Stdio, time::Duration};

use bytes::{Bytes, BytesMut};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
    sync::mpsc,
};
use tracing::debug;

use super::{reaper, scratch::ScratchDir};
use crate::{job::JobSpec, job::ProcessExit, logs::OutputStream};

/// Largest piece read from a pipe at once.
const READ_BUFFER: usize = 64 * 1024;

/// PATH for a job when the worker has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// LANG for a job when the worker has none.
const DEFAULT_LANG: &str = "C.UTF-8";

/// Where and how a job runs, apart from its spec.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sandbox<'a> {
    /// Directory under which the job's scratch directory is made; the temp dir when absent.
    pub scratch_base: Option<&'a str>,
    /// This process runs nothing but the worker: it becomes the subreaper of the job's
    /// processes and kills all of them when the job ends.
    pub owns_process: bool,
}

/// A running job command.
#[derive(Debug)]
pub(crate) struct JobProcess {
    child: Child,
    group: Pid,
    /// The command has been waited for: its pid may belong to another process now.
    reaped: bool,
    owns_process: bool,
    /// Dropped after the job's processes are gone, see `Drop`.
    scratch: Option<ScratchDir>,
}

/// Raw output as it is read, in order per stream.
pub(crate) type OutputPiece = (OutputStream, Bytes);

impl JobProcess {
    /// Starts `spec`'s command in a new process group, with the worker's environment
    /// minus its `HODEI_*` settings, PATH and LANG defaulted, HOME set to a fresh scratch
    /// directory, and the spec's env on top; it runs in the scratch directory unless the
    /// spec names a working directory. Its output goes to `output`;
    /// when `output` is full the readers wait, so the command blocks instead of losing bytes.
    pub fn spawn(
        spec: &JobSpec,
        sandbox: Sandbox<'_>,
        output: mpsc::Sender<OutputPiece>,
    ) -> Result<Self, String> {
        if sandbox.owns_process {
            reaper::own_descendants();
        }
        let scratch = ScratchDir::create(sandbox.scratch_base.map(Path::new), "hodei-job-")
            .map_err(|e| format!("cannot create the job's scratch directory: {e}"))?;
        let secrets = secret_env(spec, |name| std::env::var_os(name))?;
        let mut command = Command::new(&spec.command);
        command.args(&spec.args).env_clear();
        // The job gets the environment its worker was given (a local worker gets only
        // PATH and LANG; a pod's worker the image's), never the worker's own settings.
        for (name, value) in std::env::vars_os() {
            if !name.to_string_lossy().starts_with("HODEI_") {
                command.env(name, value);
            }
        }
        command
            .env("PATH", inherited("PATH", DEFAULT_PATH))
            .env("LANG", inherited("LANG", DEFAULT_LANG))
            .env("HOME", scratch.path())
            .envs(&spec.env)
            .envs(secrets);
        match spec.working_dir.as_deref() {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create working directory {dir}: {e}"))?;
                command.current_dir(dir);
            }
            None => {
                command.current_dir(scratch.path());
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", crate::job::excerpt(&spec.command)))?;
        let raw_pid = child
            .id()
            .ok_or("the command exited before it could be tracked")?;
        let group = Pid::from_raw(i32::try_from(raw_pid).map_err(|_| "process id out of range")?);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(pump(stdout, OutputStream::Stdout, output.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(pump(stderr, OutputStream::Stderr, output));
        }
        debug!(pid = raw_pid, dir = %scratch.path().display(), "job command started");
        Ok(Self {
            child,
            group,
            reaped: false,
            owns_process: sandbox.owns_process,
            scratch: Some(scratch),
        })
    }

    /// Waits for the command itself to end. Cancel-safe.
    pub async fn wait(&mut self) -> Result<ProcessExit, String> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| format!("waiting for the command failed: {e}"))?;
        self.reaped = true;
        Ok(status
            .code()
            .map(ProcessExit::Code)
            .or_else(|| status.signal().map(ProcessExit::Signal))
            .unwrap_or(ProcessExit::Code(-1)))
    }

    /// Sends `signal` to the whole process group, and, while the command runs, to its
    /// descendants that left the group. A group that is already gone is fine.
    pub fn signal_group(&self, signal: Signal) {
        // Found before the group is signalled: once its processes die, their children
        // are re-parented and can no longer be found from the command. The group gets
        // the signal first, as one (a shell that traps it while it waits for a child
        // must not see the child die of it before it gets it itself); then those that
        // are outside the group by then, also any that left it in the meantime.
        let descendants = if self.reaped {
            Vec::new()
        } else {
            reaper::live_descendants(self.group)
        };
        match killpg(self.group, signal) {
            Ok(()) => debug!(
                ?signal,
                group = self.group.as_raw(),
                "signalled the job's process group"
            ),
            Err(nix::errno::Errno::ESRCH) => {}
            Err(error) => {
                tracing::warn!(?signal, %error, "signalling the job's process group failed")
            }
        }
        for pid in descendants {
            if reaper::outside_group(pid, self.group) {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    }

    /// Kills whatever is left of the job after the command ended, e.g. background
    /// children, also those that left its process group when this process owns them.
    pub fn kill_leftovers(&self) {
        self.signal_group(Signal::SIGKILL);
        if self.owns_process {
            reaper::kill_all_descendants(Some(self.group));
        }
    }
}

impl Drop for JobProcess {
    /// However the job ends (also when the worker gives up on it), none of its
    /// processes outlives it and its scratch directory goes.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal_group(Signal::SIGKILL);
        }
        if self.owns_process {
            reaper::kill_all_descendants(Some(self.group));
        }
        drop(self.scratch.take());
    }
}

/// The worker's own value of `name`, else `default`.
/// The values of the job's secret env vars, which the platform put into the worker's own
/// environment (on Kubernetes the kubelet, from `secretKeyRef`): passed on by name, each
/// one the spec lists and no other. A listed one that is missing is an error, never an
/// empty value.
fn secret_env(
    spec: &JobSpec,
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<Vec<(String, std::ffi::OsString)>, String> {
    spec.secret_env
        .iter()
        .map(|(name, reference)| {
            lookup(name)
                .map(|value| (name.clone(), value))
                .ok_or_else(|| {
                    format!(
                        "secret env var {} (from {reference}) did not reach the worker; only \
                     the kubernetes provider resolves secrets",
                        crate::job::excerpt(name)
                    )
                })
        })
        .collect()
}

fn inherited(name: &str, default: &str) -> std::ffi::OsString {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

/// Reads a pipe until EOF. Stops early only if the receiver is gone.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: OutputStream,
    output: mpsc::Sender<OutputPiece>,
) {
    let mut buffer = BytesMut::with_capacity(READ_BUFFER);
    loop {
        buffer.reserve(READ_BUFFER);
        match pipe.read_buf(&mut buffer).await {
            Ok(0) => return,
            Ok(_) => {
                if output
                    .send((stream, buffer.split().freeze()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => {
                debug!(?stream, %error, "reading job output failed");
                return;
            }
        }
    }
}

/// How long to keep reading output after the command ended, for bytes still in the pipes.
pub(crate) const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Whether a live (not zombie) process has `arg` among its arguments.
    fn alive_with_arg(arg: &str) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
    }

    /// Runs `script` with `sh -c` until it ends; returns its stdout and the process,
    /// which still holds the scratch directory.
    async fn run(script: &str, spec_dir: Option<&str>, base: &Path) -> (String, JobProcess) {
        let spec = JobSpec::builder("sh")
            .args(["-c", script])
            .env(BTreeMap::from([("JOB_VAR".to_owned(), "job".to_owned())]))
            .maybe_working_dir(spec_dir)
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let sandbox = Sandbox {
            scratch_base: base.to_str(),
            owns_process: false,
        };
        let mut process = JobProcess::spawn(&spec, sandbox, tx).unwrap();
        assert_eq!(process.wait().await.unwrap(), ProcessExit::Code(0));
        let mut out = String::new();
        while let Some((stream, bytes)) = rx.recv().await {
            if stream == OutputStream::Stdout {
                out.push_str(std::str::from_utf8(&bytes).unwrap());
            }
        }
        (out, process)
    }

    fn value<'a>(out: &'a str, key: &str) -> &'a str {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{key} missing from {out}"))
    }

    #[test]
    fn secret_env_vars_are_passed_on_by_name_and_a_missing_one_is_an_error() {
        let spec = JobSpec::builder("true")
            .secret_env(BTreeMap::from([
                ("DB_PASSWORD".to_owned(), "db/password".parse().unwrap()),
                ("API_TOKEN".to_owned(), "api/token".parse().unwrap()),
            ]))
            .build()
            .unwrap();
        let worker_env = BTreeMap::from([
            ("DB_PASSWORD", "s3cret"),
            ("API_TOKEN", "t0ken"),
            ("OTHER", "x"),
        ]);
        let passed = secret_env(&spec, |name| worker_env.get(name).map(Into::into)).unwrap();
        assert_eq!(
            passed,
            [
                ("API_TOKEN".to_owned(), "t0ken".into()),
                ("DB_PASSWORD".to_owned(), "s3cret".into()),
            ]
        );
        let error =
            secret_env(&spec, |name| (name == "API_TOKEN").then(|| "t0ken".into())).unwrap_err();
        assert_eq!(
            error,
            "secret env var \"DB_PASSWORD\" (from db/password) did not reach the worker; only \
             the kubernetes provider resolves secrets"
        );
        let plain = JobSpec::builder("true").build().unwrap();
        assert!(secret_env(&plain, |_| None).unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_job_runs_in_a_fresh_scratch_home_without_the_workers_settings() {
        let base = tempfile::tempdir().unwrap();
        let script = "echo dir=$(pwd); echo home=$HOME; env | cut -d= -f1 | sed 's/^/var=/'";
        let (out, process) = run(script, None, base.path()).await;
        let dir = value(&out, "dir").to_owned();
        assert_eq!(value(&out, "home"), dir);
        assert!(Path::new(&dir).starts_with(base.path()), "{out}");
        assert!(Path::new(&dir).is_dir());
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("var=")).collect();
        for name in ["PATH", "LANG", "HOME", "JOB_VAR"] {
            assert!(names.contains(&name), "{name} missing: {out}");
        }
        for name in names {
            assert!(!name.starts_with("HODEI_"), "the job sees {name}: {out}");
        }
        drop(process);
        assert!(!Path::new(&dir).exists(), "{dir} is left");

        let (again, _process) = run(script, None, base.path()).await;
        assert_ne!(value(&again, "dir"), dir);
    }

    #[tokio::test]
    async fn a_job_that_names_a_directory_runs_there_with_a_scratch_home() {
        let base = tempfile::tempdir().unwrap();
        let named = base.path().join("named");
        let (out, process) = run(
            "echo dir=$(pwd); echo home=$HOME",
            named.to_str(),
            base.path(),
        )
        .await;
        assert_eq!(Path::new(value(&out, "dir")), named);
        let home = value(&out, "home").to_owned();
        assert_ne!(Path::new(&home), named);
        drop(process);
        assert!(named.is_dir());
        assert!(!Path::new(&home).exists());
    }

    #[tokio::test]
    async fn a_stopped_job_takes_along_children_that_left_its_process_group() {
        let base = tempfile::tempdir().unwrap();
        let marker = format!("300.{}", std::process::id());
        let spec = JobSpec::builder("sh")
            .args([
                "-c".to_owned(),
                format!("setsid sleep {marker} & echo started; wait"),
            ])
            .build()
            .unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let sandbox = Sandbox {
            scratch_base: base.path().to_str(),
            owns_process: false,
        };
        let mut process = JobProcess::spawn(&spec, sandbox, tx).unwrap();
        rx.recv().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !alive_with_arg(&marker) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the detached sleep starts");
        process.signal_group(Signal::SIGKILL);
        process.wait().await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while alive_with_arg(&marker) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the detached sleep is killed with the job");
    }

    #[tokio::test]
    async fn a_shell_that_traps_sigterm_while_it_waits_for_a_child_runs_its_trap() {
        // The group gets the signal as one: the shell cannot see its child die of the
        // signal and exit before the signal reaches the shell itself. Busybox's shell (that
        // of the worker image) exits at once when its child dies, so it shows the race.
        let script = "trap 'echo got TERM; exit 0' TERM; echo up; sleep 300 & wait";
        let (program, args) = if Path::new("/bin/busybox").exists() {
            ("/bin/busybox", vec!["sh", "-c", script])
        } else {
            ("sh", vec!["-c", script])
        };
        for _ in 0..20 {
            let base = tempfile::tempdir().unwrap();
            let spec = JobSpec::builder(program)
                .args(args.clone())
                .build()
                .unwrap();
            let (tx, mut rx) = mpsc::channel(16);
            let sandbox = Sandbox {
                scratch_base: base.path().to_str(),
                owns_process: false,
            };
            let mut process = JobProcess::spawn(&spec, sandbox, tx).unwrap();
            let (_, first) = rx.recv().await.unwrap();
            assert_eq!(&first[..], b"up\n");
            // Until the shell waits for its child, a signal would end it early.
            tokio::time::timeout(Duration::from_secs(10), async {
                while !alive_with_arg("300") {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .expect("the child starts");
            process.signal_group(Signal::SIGTERM);
            assert_eq!(process.wait().await.unwrap(), ProcessExit::Code(0));
            let (_, rest) = rx.recv().await.unwrap();
            assert_eq!(&rest[..], b"got TERM\n");
            process.kill_leftovers();
        }
    }
}
