//! The worker agent runtime: registers with its credential, runs the assigned job,
//! streams its output, and reports how it ended.

mod connection;
mod oom;
mod output;
mod process;
mod reaper;
mod scratch;
mod session;

use std::{future::Future, io::Read, path::Path, time::Duration};

pub(crate) use scratch::ScratchDir;
pub use session::WorkerReport;

use crate::job::{ValidationError, WorkerId};

/// Env var with the worker's id.
pub const ENV_WORKER_ID: &str = "HODEI_WORKER_ID";
/// Env var with the server address the worker dials.
pub const ENV_SERVER_ADDRESS: &str = "HODEI_SERVER_ADDRESS";
/// Env var naming the file the worker reads its credential from: `/dev/stdin` for a
/// local worker (a one-time token on a pipe), the projected ServiceAccount token in a pod.
pub const ENV_WORKER_TOKEN_FILE: &str = "HODEI_WORKER_TOKEN_FILE";
/// Longest credential file the worker reads.
pub const MAX_CREDENTIAL_FILE_BYTES: u64 = 64 * 1024;
/// Env var with the path of the CA bundle (PEM) the worker verifies the server with.
pub const ENV_SERVER_CA: &str = "HODEI_SERVER_CA";
/// Env var with the directory under which each job gets its scratch directory.
pub const ENV_WORK_DIR: &str = "HODEI_WORK_DIR";

/// Reads a credential file: at most [`MAX_CREDENTIAL_FILE_BYTES`], surrounding whitespace
/// trimmed, not empty. Errors name [`ENV_WORKER_TOKEN_FILE`] and the path, never the content.
pub fn read_credential(path: &Path) -> Result<String, ValidationError> {
    let invalid = |message: String| ValidationError::new(ENV_WORKER_TOKEN_FILE, message);
    let mut bytes = Vec::new();
    // `/dev/stdin` is read from the inherited descriptor: reopening it fails where the
    // pipe belongs to another user (a local worker run as another uid).
    let read = if path == Path::new("/dev/stdin") {
        std::io::stdin()
            .lock()
            .take(MAX_CREDENTIAL_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|file| {
            file.take(MAX_CREDENTIAL_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
        })
    };
    read.map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_CREDENTIAL_FILE_BYTES {
        return Err(invalid(format!(
            "{} is longer than {MAX_CREDENTIAL_FILE_BYTES} bytes",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| invalid(format!("{} is not UTF-8 text", path.display())))?;
    let credential = text.trim();
    if credential.is_empty() {
        return Err(invalid(format!("{} is empty", path.display())));
    }
    Ok(credential.to_owned())
}

/// A reconnect window from its text, e.g. `10m`; zero is refused (the worker would never
/// try to re-attach).
fn parse_window(text: &str) -> Result<Duration, ValidationError> {
    let window = humantime::parse_duration(text)
        .map_err(|e| ValidationError::new(ENV_RECONNECT_WINDOW, format!("not a duration ({e})")))?;
    if window.is_zero() {
        return Err(ValidationError::new(
            ENV_RECONNECT_WINDOW,
            "must be greater than zero",
        ));
    }
    Ok(window)
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
    /// What proves this worker is the one the server started: the one-time token or the
    /// platform credential its provider gave it.
    #[builder(start_fn, into)]
    credential: String,
    /// CA bundle (PEM) the server's certificate must chain to, for `https://` server
    /// addresses; the system's roots when absent.
    #[builder(into)]
    server_ca: Option<Vec<u8>>,
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
    /// Most bytes of output kept while the stream to the server is broken (numbered and
    /// not yet acknowledged); the job waits beyond it, nothing is dropped. At least
    /// `output_window_bytes`.
    #[builder(default = DEFAULT_OUTPUT_BUFFER_BYTES)]
    output_buffer_bytes: usize,
    /// How long the worker keeps its job running and tries to re-attach after its stream
    /// to the server broke; after it, the job is killed and the worker fails.
    #[builder(default = DEFAULT_WORKER_RECONNECT_WINDOW)]
    reconnect_window: Duration,
    /// Longest wait for the server to accept the result.
    #[builder(default = Duration::from_secs(30))]
    result_timeout: Duration,
}

/// Output kept while the stream is broken, by default.
pub const DEFAULT_OUTPUT_BUFFER_BYTES: usize = 64 << 20;
/// How long a worker tries to re-attach after its stream broke, by default.
pub const DEFAULT_WORKER_RECONNECT_WINDOW: Duration = Duration::from_secs(600);
/// Env var with the worker's reconnect window (e.g. `10m`).
pub const ENV_RECONNECT_WINDOW: &str = "HODEI_RECONNECT_WINDOW";

impl std::fmt::Debug for WorkerAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerAgent")
            .field("server_address", &self.server_address)
            .field("worker_id", &self.worker_id)
            .field("credential", &"<redacted>")
            .field("server_ca", &self.server_ca.is_some())
            .field("work_dir", &self.work_dir)
            .finish_non_exhaustive()
    }
}

impl WorkerAgent {
    /// Reads `HODEI_WORKER_ID`, `HODEI_SERVER_ADDRESS`, the credential from the file named
    /// by `HODEI_WORKER_TOKEN_FILE`, and the optional `HODEI_WORK_DIR` and `HODEI_SERVER_CA`
    /// (a path, whose file is read here), and `HODEI_RECONNECT_WINDOW` (a duration such as
    /// `10m`). A missing or invalid variable or an unreadable
    /// file is an error naming the variable. The agent owns its process (see
    /// `owns_process`): this is how a worker program starts.
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
                    format!("cannot read {}: {e}", Path::new(&path).display()),
                )
            })?),
            None => None,
        };
        let reconnect_window = match std::env::var(ENV_RECONNECT_WINDOW) {
            Ok(text) if !text.is_empty() => parse_window(&text)?,
            _ => DEFAULT_WORKER_RECONNECT_WINDOW,
        };
        Ok(Self::builder(
            var(ENV_SERVER_ADDRESS)?,
            worker_id,
            read_credential(Path::new(&var(ENV_WORKER_TOKEN_FILE)?))?,
        )
        .maybe_work_dir(std::env::var(ENV_WORK_DIR).ok().filter(|v| !v.is_empty()))
        .maybe_server_ca(server_ca)
        .owns_process(true)
        .reconnect_window(reconnect_window)
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reconnect_windows_parse_and_name_the_variable() {
        assert_eq!(parse_window("90s").unwrap(), Duration::from_secs(90));
        for bad in ["0s", "soon"] {
            assert_eq!(parse_window(bad).unwrap_err().field(), ENV_RECONNECT_WINDOW);
        }
    }

    #[test]
    fn a_credential_file_is_read_trimmed() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"  secret-token\n").unwrap();
        assert_eq!(read_credential(file.path()).unwrap(), "secret-token");
    }

    #[test]
    fn bad_credential_files_name_the_variable_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let long = dir.path().join("long");
        std::fs::write(
            &long,
            "s".repeat(usize::try_from(MAX_CREDENTIAL_FILE_BYTES).unwrap() + 1),
        )
        .unwrap();
        let binary = dir.path().join("binary");
        std::fs::write(&binary, b"secret\xff").unwrap();
        for (path, says) in [
            (dir.path().join("missing"), "cannot read"),
            (empty, "is empty"),
            (long, "longer than 65536 bytes"),
            (binary, "not UTF-8"),
        ] {
            let error = read_credential(&path).unwrap_err();
            assert_eq!(error.field(), ENV_WORKER_TOKEN_FILE);
            let text = error.to_string();
            assert!(text.contains(says), "{text}");
            assert!(
                !text.contains(&"s".repeat(16)) && !text.contains("secret"),
                "{text}"
            );
        }
    }
}
