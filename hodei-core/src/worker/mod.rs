//! The worker agent runtime: registers with its one-time token, runs the assigned job,
//! streams its output, and reports how it ended.

mod oom;
mod output;
mod process;
mod reaper;
mod scratch;
mod session;

use std::{future::Future, io::Read, time::Duration};

pub(crate) use scratch::ScratchDir;
pub use session::WorkerReport;

use crate::job::{ValidationError, WorkerId};

/// Env var with the worker's id.
pub const ENV_WORKER_ID: &str = "HODEI_WORKER_ID";
/// Env var with the server address the worker dials.
pub const ENV_SERVER_ADDRESS: &str = "HODEI_SERVER_ADDRESS";
/// Env var with the worker's one-time token.
pub const ENV_OTP_TOKEN: &str = "HODEI_OTP_TOKEN";
/// Env var naming the file the worker reads its credential from (`/dev/stdin`: a pipe
/// from the provider), so the credential is never in its environment.
pub const ENV_WORKER_TOKEN_FILE: &str = "HODEI_WORKER_TOKEN_FILE";
/// Env var with the directory under which each job gets its scratch directory.
pub const ENV_WORK_DIR: &str = "HODEI_WORK_DIR";

/// Largest credential file the worker reads.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// The credential in the file `path` names, without its line end; `/dev/stdin` is read
/// from the inherited descriptor, which works also where the pipe belongs to another user.
fn read_token_file(path: &str) -> Result<String, ValidationError> {
    let invalid = |message: String| ValidationError::new(ENV_WORKER_TOKEN_FILE, message);
    let mut text = String::new();
    let read = if path == "/dev/stdin" {
        std::io::stdin()
            .lock()
            .take(MAX_TOKEN_FILE)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_TOKEN_FILE).read_to_string(&mut text))
    };
    read.map_err(|e| invalid(format!("cannot read {path}: {e}")))?;
    let token = text.trim_end_matches(['\r', '\n']);
    if token.is_empty() {
        return Err(invalid(format!("{path} holds no credential")));
    }
    Ok(token.to_owned())
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
    /// Server address, e.g. `http://127.0.0.1:50051`.
    #[builder(start_fn, into)]
    server_address: String,
    /// This worker's id.
    #[builder(start_fn)]
    worker_id: WorkerId,
    /// The one-time token the provider gave this worker.
    #[builder(start_fn, into)]
    otp_token: String,
    /// Directory under which each job gets its own scratch directory, where it runs
    /// when its spec names none; the system's temp dir when absent.
    #[builder(into)]
    work_dir: Option<String>,
    /// This process runs nothing but this worker (as `hodei-worker-bin` does): it becomes
    /// the subreaper of the job's processes, hides its memory from them, and when the job
    /// ends kills every process left under it. Off by default, because it would kill
    /// the other children of a program that embeds the worker.
    #[builder(default)]
    owns_process: bool,
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
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl WorkerAgent {
    /// Reads `HODEI_WORKER_ID`, `HODEI_SERVER_ADDRESS`, the credential (`HODEI_OTP_TOKEN`,
    /// else the file `HODEI_WORKER_TOKEN_FILE` names) and the optional `HODEI_WORK_DIR`.
    /// A missing or invalid variable is an error naming it. The agent owns its process
    /// (see `owns_process`): this is how a worker program starts.
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
        let token = match var(ENV_OTP_TOKEN) {
            Ok(token) => token,
            Err(_) => read_token_file(&var(ENV_WORKER_TOKEN_FILE)?)?,
        };
        Ok(Self::builder(var(ENV_SERVER_ADDRESS)?, worker_id, token)
            .maybe_work_dir(std::env::var(ENV_WORK_DIR).ok().filter(|v| !v.is_empty()))
            .owns_process(true)
            .build())
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
