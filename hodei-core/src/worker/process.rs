//! The job's command as a child process in its own process group, read as raw bytes.

use std::{os::unix::process::ExitStatusExt, process::Stdio, time::Duration};

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

use crate::{job::JobSpec, job::ProcessExit, logs::OutputStream};

/// Largest piece read from a pipe at once.
const READ_BUFFER: usize = 64 * 1024;

/// A running job command.
#[derive(Debug)]
pub(crate) struct JobProcess {
    child: Child,
    group: Pid,
}

/// Raw output as it is read, in order per stream.
pub(crate) type OutputPiece = (OutputStream, Bytes);

impl JobProcess {
    /// Starts `spec`'s command in a new process group. Its output goes to `output`;
    /// when `output` is full the readers wait, so the command blocks instead of losing bytes.
    pub fn spawn(
        spec: &JobSpec,
        default_dir: Option<&str>,
        output: mpsc::Sender<OutputPiece>,
    ) -> Result<Self, String> {
        let mut command = Command::new(&spec.command);
        command.args(&spec.args);
        // The job must not see the worker's own settings, least of all its token.
        super::remove_hodei_env(&mut command);
        command.envs(&spec.env);
        if let Some(dir) = spec.working_dir.as_deref().or(default_dir) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create working directory {dir}: {e}"))?;
            command.current_dir(dir);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", spec.command))?;
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
        debug!(pid = raw_pid, "job command started");
        Ok(Self { child, group })
    }

    /// Waits for the command itself to end. Cancel-safe.
    pub async fn wait(&mut self) -> Result<ProcessExit, String> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| format!("waiting for the command failed: {e}"))?;
        Ok(status
            .code()
            .map(ProcessExit::Code)
            .or_else(|| status.signal().map(ProcessExit::Signal))
            .unwrap_or(ProcessExit::Code(-1)))
    }

    /// Sends `signal` to the whole process group. A group that is already gone is fine.
    pub fn signal_group(&self, signal: Signal) {
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
    }

    /// Kills whatever is left of the group after the command ended, e.g. background children.
    pub fn kill_leftovers(&self) {
        self.signal_group(Signal::SIGKILL);
    }
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
