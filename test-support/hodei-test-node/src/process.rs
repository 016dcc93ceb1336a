//! Runs one container as a local process group and stops it as a runtime would.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::pod_dir::PodDir;
use crate::{Error, Result};

/// PATH given to every container, as container runtimes default it.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start a container's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) working_dir: PathBuf,
    pub(crate) log_file: PathBuf,
    pub(crate) pid_file: PathBuf,
}

impl Launch {
    /// Runs `program` (the image's only executable) for `container`.
    pub(crate) fn for_container(
        program: &Path,
        container: &Container,
        pod_name: &str,
        dir: &PodDir,
    ) -> Self {
        let working_dir = container
            .working_dir
            .as_deref()
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .unwrap_or_else(|| dir.scratch());
        Self {
            program: program.to_owned(),
            args: arguments(container),
            env: environment(container, pod_name, &dir.scratch()),
            working_dir,
            log_file: dir.log(),
            pid_file: dir.pid_file(),
        }
    }
}

/// The image has one program, the mapped binary, so `command[0]` (a path
/// inside the image) names it and the rest of `command`, then `args`, are its
/// arguments. Without `command`, `args` go to the binary as to an entrypoint.
fn arguments(container: &Container) -> Vec<String> {
    let command = container.command.as_deref().unwrap_or_default();
    let args = container.args.as_deref().unwrap_or_default();
    command.iter().skip(1).chain(args).cloned().collect()
}

/// A clean environment as in a container, plus the spec's plain `value`
/// entries; `valueFrom` entries are skipped (nothing resolves them here).
fn environment(container: &Container, pod_name: &str, home: &Path) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOSTNAME".to_owned(), pod_name.to_owned()),
        ("HOME".to_owned(), home.display().to_string()),
    ];
    for var in container.env.iter().flatten() {
        if var.value_from.is_some() {
            tracing::debug!(env.name = %var.name, "valueFrom is not resolved by the test node; skipped");
            continue;
        }
        env.retain(|(name, _)| *name != var.name);
        env.push((var.name.clone(), var.value.clone().unwrap_or_default()));
    }
    env
}

/// How a container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl Exit {
    fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(signal)) => Self::Signal(signal),
            (None, None) => Self::Code(-1),
        }
    }

    /// The exit code a kubelet reports: 128 + signal for a signalled process.
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Self::Code(code) => code,
            Self::Signal(signal) => 128 + signal,
        }
    }

    /// The signal, if one ended the process.
    pub(crate) fn signal(self) -> Option<i32> {
        match self {
            Self::Code(_) => None,
            Self::Signal(signal) => Some(signal),
        }
    }
}

/// A running container: the main process leads its own process group, and
/// the whole group is signalled, like every process in a container.
#[derive(Debug)]
pub(crate) struct Process {
    child: tokio::process::Child,
    group: Pid,
    pid_file: PathBuf,
    exit: Option<Exit>,
}

impl Process {
    /// Starts the process with stdout and stderr appended to the log file.
    pub(crate) fn spawn(launch: &Launch) -> Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log_file)
            .map_err(|e| Error::io(format!("opening {}", launch.log_file.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io("duplicating log file handle", e))?;
        let child = tokio::process::Command::new(&launch.program)
            .args(&launch.args)
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&launch.working_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", launch.program.display()), e))?;
        let pid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .ok_or_else(|| Error::io("reading child pid", std::io::Error::other("no pid")))?;
        if let Err(error) = std::fs::write(&launch.pid_file, pid.to_string()) {
            tracing::warn!(%error, "could not write pid file");
        }
        Ok(Self {
            child,
            group: Pid::from_raw(pid),
            pid_file: launch.pid_file.clone(),
            exit: None,
        })
    }

    /// Process id of the main process (also the group id).
    pub(crate) fn pid(&self) -> i32 {
        self.group.as_raw()
    }

    /// Waits for the main process, then kills what is left of its group, as a
    /// runtime tears down a container whose main process ended. Cancel safe.
    pub(crate) async fn wait(&mut self) -> Result<Exit> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::io("waiting for container process", e))?;
        let exit = Exit::from_status(status);
        self.exit = Some(exit);
        self.signal(Signal::SIGKILL);
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(exit)
    }

    /// Sends `signal` to the whole process group.
    pub(crate) fn signal(&self, signal: Signal) {
        match killpg(self.group, signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(error) => {
                tracing::warn!(%error, ?signal, pid = self.pid(), "could not signal container")
            }
        }
    }

    /// SIGTERM, then SIGKILL if still running after `grace`.
    pub(crate) async fn stop(&mut self, grace: Duration) -> Result<Exit> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(exit) => exit,
            Err(_elapsed) => {
                tracing::info!(pid = self.pid(), "grace period over; sending SIGKILL");
                self.signal(Signal::SIGKILL);
                self.wait().await
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exit.is_none() {
            self.signal(Signal::SIGKILL);
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource};

    use super::*;

    fn container(command: Option<&[&str]>, args: Option<&[&str]>) -> Container {
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        Container {
            name: "c".to_owned(),
            command: command.map(strings),
            args: args.map(strings),
            ..Container::default()
        }
    }

    #[test]
    fn command_zero_names_the_mapped_binary() {
        assert_eq!(arguments(&container(None, None)), Vec::<String>::new());
        assert_eq!(arguments(&container(None, Some(&["-c", "x"]))), ["-c", "x"]);
        assert_eq!(
            arguments(&container(Some(&["/bin/sh", "-c"]), Some(&["x"]))),
            ["-c", "x"]
        );
    }

    #[test]
    fn environment_keeps_plain_values_only() {
        let mut c = container(None, None);
        c.env = Some(vec![
            EnvVar {
                name: "A".to_owned(),
                value: Some("1".to_owned()),
                value_from: None,
            },
            EnvVar {
                name: "B".to_owned(),
                value: None,
                value_from: Some(EnvVarSource::default()),
            },
            EnvVar {
                name: "PATH".to_owned(),
                value: Some("/x".to_owned()),
                value_from: None,
            },
        ]);
        let env = environment(&c, "pod", Path::new("/h"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), None);
        assert_eq!(get("PATH"), Some("/x"));
        assert_eq!(get("HOSTNAME"), Some("pod"));
    }

    #[tokio::test]
    async fn exit_code_and_graceful_stop() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let launch = |args: &[&str]| Launch {
            program: PathBuf::from("/bin/sh"),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
            env: Vec::new(),
            working_dir: dir.path().to_owned(),
            log_file: dir.path().join("log"),
            pid_file: dir.path().join("pid"),
        };
        let mut done = Process::spawn(&launch(&["-c", "echo hi; exit 3"]))?;
        assert_eq!(done.wait().await?, Exit::Code(3));
        let log =
            std::fs::read_to_string(dir.path().join("log")).map_err(|e| Error::io("log", e))?;
        assert_eq!(log, "hi\n");

        let mut sleeper = Process::spawn(&launch(&["-c", "sleep 100"]))?;
        let exit = sleeper.stop(Duration::from_secs(5)).await?;
        assert_eq!(exit.signal(), Some(15));
        assert_eq!(exit.exit_code(), 143);

        let mut stubborn = Process::spawn(&launch(&["-c", "trap '' TERM; sleep 100 & wait"]))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let exit = stubborn.stop(Duration::from_millis(300)).await?;
        assert_eq!(exit.exit_code(), 137);
        assert!(!dir.path().join("pid").exists());
        Ok(())
    }
}
