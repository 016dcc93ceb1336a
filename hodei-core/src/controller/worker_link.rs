//! The hand-off between a job's controller task and its worker's gRPC stream.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot};

use crate::{
    job::{FailureReason, JobId, JobSpec, ProcessExit},
    logs::JobLog,
};

/// Why the server asks a worker to stop its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Someone cancelled the job.
    Cancelled,
    /// The job ran past its timeout.
    TimedOut,
    /// The server is shutting down.
    Shutdown,
    /// The server stores no more of the job's output: its log quota is reached or the
    /// disk is below its floor. The job ends with that failure reason.
    OutputRefused,
}

/// The job a worker must run.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The job.
    pub job_id: JobId,
    /// What to run.
    pub spec: JobSpec,
    /// How often the worker must show it is alive.
    pub heartbeat_interval: Duration,
    /// Time between SIGTERM and SIGKILL when the job is stopped.
    pub kill_grace: Duration,
    /// What the worker presents to re-attach if its stream breaks.
    pub resume_credential: ResumeCredential,
    /// Sequence number of the job's first output chunk on this worker: after the output
    /// of the job's earlier attempts.
    pub first_seq: u64,
}

/// A secret that lets a running job's worker re-attach after its stream broke: 256
/// random bits, hex. The server keeps only its SHA-256; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResumeCredential(String);

impl ResumeCredential {
    /// Wraps a credential received on the wire.
    #[must_use]
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret, to send or to check.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ResumeCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeCredential(<redacted>)")
    }
}

/// What the controller tells a worker.
#[derive(Debug, Clone)]
pub enum ToWorker {
    /// Run this job.
    Assign(Box<Assignment>),
    /// Stop the job.
    Stop(StopReason),
    /// The result is stored; the worker may exit.
    ResultAccepted,
}

/// How the job ended on the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerOutcome {
    /// The command ran and ended.
    Exit(ProcessExit),
    /// The kernel's out-of-memory killer ended the command.
    OutOfMemory(ProcessExit),
    /// The command could not be started.
    SpawnFailed(String),
    /// The worker's platform told it to shut down, and it stopped the command, which
    /// ended so: not the job's own failure.
    Interrupted(ProcessExit),
}

/// What the worker's stream tells the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromWorker {
    /// A heartbeat arrived.
    Alive,
    /// Output was stored.
    Output,
    /// The worker reported the end of the job.
    Result {
        /// How it ended.
        outcome: WorkerOutcome,
        /// Sequence number of the last output chunk the worker sent.
        last_seq: u64,
    },
    /// The server stores no more of the job's output; the job must stop and end failed
    /// for this reason.
    OutputRefused(FailureReason),
    /// The stream broke; the worker may re-attach on a new one.
    Broken(String),
    /// The worker broke the protocol (or its output could not be stored): the job ends.
    Violation(String),
}

/// The controller's end of an attached worker.
#[derive(Debug)]
pub struct WorkerLink {
    /// Messages to the worker.
    pub to_worker: mpsc::Sender<ToWorker>,
    /// Messages from the worker.
    pub from_worker: mpsc::Receiver<FromWorker>,
}

impl WorkerLink {
    /// A link to no worker: it sends nowhere and receives nothing. It stands in for the
    /// stream of a worker that has not re-attached yet.
    pub fn broken() -> Self {
        Self {
            to_worker: mpsc::channel(1).0,
            from_worker: mpsc::channel(1).1,
        }
    }
}

/// A provisioned worker the server expects to register.
#[derive(Debug)]
pub(crate) struct PendingWorker {
    pub job_id: JobId,
    pub log: Arc<JobLog>,
    /// The first output chunk the worker will send: the log's next.
    pub first_seq: u64,
    pub attach: oneshot::Sender<WorkerLink>,
}
