//! The worker agent runtime: registers with its one-time token, runs the assigned job,
//! streams its output, and reports how it ended.

mod oom;
mod output;
mod process;
mod session;

use std::{future::Future, time::Duration};

pub use session::WorkerReport;

use crate::job::{ValidationError, WorkerId};

/// Env var with the worker's id.
pub const ENV_WORKER_ID: &str = "HODEI_WORKER_ID";
/// Env var with the server address the worker dials.
pub const ENV_SERVER_ADDRESS: &str = "HODEI_SERVER_ADDRESS";
/// Env var with the worker's one-time token.
pub const ENV_OTP_TOKEN: &str = "HODEI_OTP_TOKEN";
/// Env var with the path of the CA bundle (PEM) the worker verifies the server with.
pub const ENV_SERVER_CA: &str = "HODEI_SERVER_CA";
/// Env var with the directory jobs run in when their spec names none.
pub const ENV_WORK_DIR: &str = "HODEI_WORK_DIR";

/// Keeps this process's `HODEI_*` settings (the token above all) out of a child's env.
pub(crate) fn remove_hodei_env(command: &mut tokio::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HODEI_") {
            command.env_remove(key);
        }
    }
}

/// Why the worker could not finish its job.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A setting is missing or invalid.
    #[error(transparent)]
    Config(#[from] ValidationError),
    /// The server could not be reached.
    #[error("cannot connect to the server at {address}")]
    Connect {
        /// Where it tried.
        address: String,
        /// Why it failed.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server refused the worker or the call failed.
    #[error("the server refused the worker: {}", .0.message())]
    Refused(#[source] Box<tonic::Status>),
    /// The connection broke before the job was reported.
    #[error("lost the connection to the server: {0}")]
    ConnectionLost(String),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// The worker agent. Build it with [`WorkerAgent::builder`] or [`WorkerAgent::from_env`].
#[derive(Clone, bon::Builder)]
pub struct WorkerAgent {
    /// Address of the server's worker API, e.g. `https://127.0.0.1:50052`.
    #[builder(start_fn, into)]
    server_address: String,
    /// This worker's id.
    #[builder(start_fn)]
    worker_id: WorkerId,
    /// The one-time token the provider gave this worker.
    #[builder(start_fn, into)]
    otp_token: String,
    /// CA bundle (PEM) the server's certificate must chain to, for `https://` server
    /// addresses; the system's roots when absent.
    #[builder(into)]
    server_ca: Option<Vec<u8>>,
    /// Directory jobs run in when their spec names none; the worker's own when absent.
    #[builder(into)]
    work_dir: Option<String>,
    /// Most bytes of output sent and not yet acknowledged; the job waits beyond it.
    #[builder(default = 8 << 20)]
    output_window_bytes: usize,
    /// Longest wait for the server to accept the result.
    #[builder(default = Duration::from_secs(30))]
    result_timeout: Duration,
}

impl std::fmt::Debug for WorkerAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerAgent")
            .field("server_address", &self.server_address)
            .field("worker_id", &self.worker_id)
            .field("otp_token", &"<redacted>")
            .field("server_ca", &self.server_ca.is_some())
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl WorkerAgent {
    /// Reads `HODEI_WORKER_ID`, `HODEI_SERVER_ADDRESS`, `HODEI_OTP_TOKEN` and the optional
    /// `HODEI_WORK_DIR` and `HODEI_SERVER_CA` (a path, whose file is read here). A missing
    /// or invalid variable is an error naming it.
    pub fn from_env() -> Result<Self, ValidationError> {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ValidationError::new(name, "must be set"))
        };
        let worker_id = var(ENV_WORKER_ID)?.parse().map_err(|e: ValidationError| {
            ValidationError::new(ENV_WORKER_ID, e.message().to_owned())
        })?;
        let server_ca = match std::env::var_os(ENV_SERVER_CA).filter(|v| !v.is_empty()) {
            Some(path) => Some(std::fs::read(&path).map_err(|e| {
                ValidationError::new(
                    ENV_SERVER_CA,
                    format!("cannot read {}: {e}", std::path::Path::new(&path).display()),
                )
            })?),
            None => None,
        };
        Ok(
            Self::builder(var(ENV_SERVER_ADDRESS)?, worker_id, var(ENV_OTP_TOKEN)?)
                .maybe_work_dir(std::env::var(ENV_WORK_DIR).ok().filter(|v| !v.is_empty()))
                .maybe_server_ca(server_ca)
                .build(),
        )
    }

    /// Registers, runs the assigned job and reports it. When `shutdown` completes (e.g. on
    /// SIGTERM) the job is stopped like a cancel and still reported.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<WorkerReport, WorkerError> {
        session::run(self, shutdown).await
    }

    /// This worker's id.
    #[must_use]
    pub fn worker_id(&self) -> WorkerId {
        self.worker_id
    }
}
