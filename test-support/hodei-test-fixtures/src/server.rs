//! A server binary run as a child process on a loopback port, stopped when dropped.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io,
    net::{Ipv4Addr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use nix::{sys::signal::Signal, unistd::Pid};

use crate::blocking::wait_until;

/// A loopback port nothing listens on right now. Another process may take it before the
/// server binds it; unlikely on a test machine, and it shows as a start failure.
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Why a server process could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The process could not be watched, or its log file not created.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The server did not exit within the grace period after SIGTERM, and was killed.
    #[error("the server ignored SIGTERM for {grace:?}; killed")]
    IgnoredTerm {
        /// How long it had.
        grace: Duration,
    },
}

/// How to start a server: its program, environment, port and log.
#[derive(Debug, Clone)]
#[must_use]
pub struct ServerCommand {
    program: OsString,
    args: Vec<OsString>,
    port: Option<u16>,
    worker_port: Option<u16>,
    env: Vec<(OsString, OsString)>,
    clear_hodei_env: bool,
    log: Option<PathBuf>,
    drop_grace: Option<Duration>,
}

impl ServerCommand {
    /// Runs `program` with its job API on a free loopback port (`HODEI_LISTEN_ADDR`) and
    /// its worker API on another (`HODEI_WORKER_LISTEN_ADDR`).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            port: None,
            worker_port: None,
            env: Vec::new(),
            clear_hodei_env: false,
            log: None,
            drop_grace: None,
        }
    }

    /// Listens on this loopback port instead, e.g. the port of a server that ran before.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Serves the worker API on this loopback port instead.
    pub fn worker_port(mut self, port: u16) -> Self {
        self.worker_port = Some(port);
        self
    }

    /// Adds a command-line argument; flags win over the variables set here.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Sets an environment variable of the server.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets environment variables of the server.
    pub fn envs<K, V>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (key, value) in vars {
            self = self.env(key, value);
        }
        self
    }

    /// Keeps `HODEI_*` variables of this process from the server, so only the ones set
    /// here apply.
    pub fn without_inherited_hodei_env(mut self) -> Self {
        self.clear_hodei_env = true;
        self
    }

    /// Writes the server's stdout and stderr to a new file at `path` (default: discarded).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// When dropped, the server gets SIGTERM and `grace` to exit before SIGKILL (default:
    /// SIGKILL at once, like a crash).
    pub fn terminate_on_drop(mut self, grace: Duration) -> Self {
        self.drop_grace = Some(grace);
        self
    }

    /// Starts the server; it may not answer yet.
    pub fn spawn(self) -> Result<ServerProcess, ServerError> {
        let port = match self.port {
            Some(port) => port,
            None => free_port()?,
        };
        let worker_port = match self.worker_port {
            Some(port) => port,
            None => free_port()?,
        };
        let mut command = Command::new(&self.program);
        if self.clear_hodei_env {
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("HODEI_") {
                    command.env_remove(key);
                }
            }
        }
        let (stdout, stderr) = match &self.log {
            Some(path) => {
                let file = File::create(path)?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = command
            .args(self.args)
            .envs(self.env)
            .env("HODEI_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "HODEI_WORKER_LISTEN_ADDR",
                format!("127.0.0.1:{worker_port}"),
            )
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| ServerError::Spawn {
                program: Path::new(&self.program).display().to_string(),
                source,
            })?;
        Ok(ServerProcess {
            child,
            port,
            worker_port,
            log: self.log,
            drop_grace: self.drop_grace,
        })
    }
}

/// A running server process; see [`ServerCommand::terminate_on_drop`] for what dropping
/// it does.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    port: u16,
    worker_port: u16,
    log: Option<PathBuf>,
    drop_grace: Option<Duration>,
}

impl ServerProcess {
    /// The loopback port of its job API.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The loopback port of its worker API.
    #[must_use]
    pub fn worker_port(&self) -> u16 {
        self.worker_port
    }

    /// Its URL, `http://127.0.0.1:<port>`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, once it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Where its log goes, if anywhere.
    #[must_use]
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Its whole log so far; empty when there is none.
    #[must_use]
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// The last `lines` lines of its log.
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops it: SIGTERM, then SIGKILL (and an error) when it is still running after
    /// `grace`. Blocks until it has exited.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus, ServerError> {
        self.terminate(grace)
    }

    /// Kills it with SIGKILL, so nothing of its shutdown runs.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn terminate(&mut self, grace: Duration) -> Result<ExitStatus, ServerError> {
        self.signal(Signal::SIGTERM);
        let child = &mut self.child;
        match wait_until(grace, "the server exits after SIGTERM", || {
            child.try_wait().transpose()
        }) {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.kill_now();
                Err(ServerError::IgnoredTerm { grace })
            }
        }
    }

    fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        match self.drop_grace {
            Some(grace) => {
                let _ = self.terminate(grace);
            }
            None => self.kill_now(),
        }
    }
}
