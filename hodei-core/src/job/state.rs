//! Where a job is in its life, and why it ended.

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

/// How the job's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessExit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

impl fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(code) => write!(f, "exit code {code}"),
            Self::Signal(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// Why a job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum FailureReason {
    /// The command ended with a non-zero code or a signal.
    Exit {
        /// How it ended.
        exit: ProcessExit,
    },
    /// The kernel's out-of-memory killer ended the command at its memory limit.
    OutOfMemory {
        /// How it ended (SIGKILL).
        exit: ProcessExit,
    },
    /// The command could not be started, e.g. it was not found.
    CommandNotStarted {
        /// What the worker reported.
        message: String,
    },
    /// The provider could not start or keep the worker.
    ProviderFailure {
        /// Provider name.
        provider: String,
        /// Machine-readable reason, e.g. `ImagePullBackOff`.
        reason: String,
        /// The provider's message.
        message: String,
    },
    /// The worker stopped talking to the server.
    WorkerLost {
        /// What was observed.
        message: String,
    },
    /// The worker did not register in time.
    RegistrationTimeout {
        /// How long the server waited.
        #[serde(with = "super::spec::humantime_serde_compat")]
        waited: Duration,
    },
    /// The server stopped while the job was active.
    ServerRestarted,
    /// The job's output reached the per-job log quota: the server stored the chunks that
    /// fit, stopped the job, and stored nothing after.
    LogLimitExceeded {
        /// The quota in bytes of stored output (`HODEI_MAX_LOG_BYTES`).
        limit_bytes: u64,
    },
    /// Output arrived while free disk was below the floor, or the disk was full: the
    /// server stopped the job and stored nothing after.
    DiskFull {
        /// Bytes free when the output was refused.
        free_bytes: u64,
        /// The floor in bytes (`HODEI_MIN_FREE_DISK`).
        min_free_bytes: u64,
    },
}

impl FailureReason {
    /// The reason's kind in snake case, e.g. `worker_lost`: a metric label, and the
    /// field name of the reason on the wire.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Exit { .. } => "exit",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::CommandNotStarted { .. } => "command_not_started",
            Self::ProviderFailure { .. } => "provider_failure",
            Self::WorkerLost { .. } => "worker_lost",
            Self::RegistrationTimeout { .. } => "registration_timeout",
            Self::ServerRestarted => "server_restarted",
            Self::LogLimitExceeded { .. } => "log_limit_exceeded",
            Self::DiskFull { .. } => "disk_full",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exit { exit } => write!(f, "command failed: {exit}"),
            Self::OutOfMemory { exit } => write!(
                f,
                "out of memory: the kernel killed the command at its memory limit (OOMKilled, {exit})"
            ),
            Self::CommandNotStarted { message } => write!(f, "command not started: {message}"),
            Self::ProviderFailure {
                provider,
                reason,
                message,
            } => write!(f, "provider {provider} failed: {reason}: {message}"),
            Self::WorkerLost { message } => write!(f, "worker lost: {message}"),
            Self::RegistrationTimeout { waited } => write!(
                f,
                "worker did not register within {}",
                humantime::format_duration(*waited)
            ),
            Self::ServerRestarted => f.write_str("server restarted while the job was active"),
            Self::LogLimitExceeded { limit_bytes } => write!(
                f,
                "log limit exceeded: the job's output passed {} (HODEI_MAX_LOG_BYTES={limit_bytes}); the job was stopped and later output was not stored",
                crate::disk::readable(*limit_bytes)
            ),
            Self::DiskFull {
                free_bytes,
                min_free_bytes,
            } => write!(
                f,
                "disk full: only {} free on the server, below the floor of {} (HODEI_MIN_FREE_DISK); the job was stopped and later output was not stored",
                crate::disk::readable(*free_bytes),
                crate::disk::readable(*min_free_bytes)
            ),
        }
    }
}

/// The state of a job. Terminal states carry why they were reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum JobState {
    /// Accepted and waiting for a worker slot.
    Queued,
    /// A worker is being started.
    Provisioning,
    /// The command is running.
    Running,
    /// The command exited with code 0.
    Succeeded,
    /// The job failed; see the reason.
    Failed {
        /// Why.
        reason: FailureReason,
    },
    /// Cancelled on request.
    Cancelled {
        /// How the command ended, if it had started.
        exit: Option<ProcessExit>,
    },
    /// Stopped because it ran longer than its timeout.
    TimedOut {
        /// The timeout that was exceeded.
        #[serde(with = "super::spec::humantime_serde_compat")]
        timeout: Duration,
        /// How the command ended once stopped, if the worker reported it.
        exit: Option<ProcessExit>,
    },
}

impl JobState {
    /// True for Succeeded, Failed, Cancelled and TimedOut.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        !matches!(self, Self::Queued | Self::Provisioning | Self::Running)
    }

    /// The phase name, e.g. `running`.
    #[must_use]
    pub fn phase_name(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Cancelled { .. } => "cancelled",
            Self::TimedOut { .. } => "timed_out",
        }
    }

    /// The state that a finished command leads to when nobody asked it to stop.
    #[must_use]
    pub fn from_exit(exit: ProcessExit) -> Self {
        match exit {
            ProcessExit::Code(0) => Self::Succeeded,
            exit => Self::Failed {
                reason: FailureReason::Exit { exit },
            },
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { reason } => write!(f, "failed: {reason}"),
            Self::Cancelled { exit: Some(exit) } => write!(f, "cancelled ({exit})"),
            Self::TimedOut { timeout, exit } => {
                write!(
                    f,
                    "timed out after {}",
                    humantime::format_duration(*timeout)
                )?;
                match exit {
                    Some(exit) => write!(f, " ({exit})"),
                    None => Ok(()),
                }
            }
            other => f.write_str(other.phase_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_map_to_states() {
        assert_eq!(
            JobState::from_exit(ProcessExit::Code(0)),
            JobState::Succeeded
        );
        assert_eq!(
            JobState::from_exit(ProcessExit::Signal(9)),
            JobState::Failed {
                reason: FailureReason::Exit {
                    exit: ProcessExit::Signal(9)
                }
            }
        );
        assert!(JobState::from_exit(ProcessExit::Code(3)).is_terminal());
        assert!(!JobState::Running.is_terminal());
    }

    #[test]
    fn a_stopped_job_says_how_its_command_ended() {
        let timed_out = JobState::TimedOut {
            timeout: Duration::from_secs(1),
            exit: Some(ProcessExit::Signal(15)),
        };
        assert_eq!(
            timed_out.to_string(),
            "timed out after 1s (killed by signal 15)"
        );
        let never_reported = JobState::TimedOut {
            timeout: Duration::from_secs(1),
            exit: None,
        };
        assert_eq!(never_reported.to_string(), "timed out after 1s");
        let cancelled = JobState::Cancelled {
            exit: Some(ProcessExit::Signal(9)),
        };
        assert_eq!(cancelled.to_string(), "cancelled (killed by signal 9)");
    }

    #[test]
    fn state_json_is_tagged_and_round_trips() {
        let state = JobState::Failed {
            reason: FailureReason::ProviderFailure {
                provider: "kubernetes".into(),
                reason: "ImagePullBackOff".into(),
                message: "not found".into(),
            },
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(json["phase"], "failed");
        assert_eq!(json["reason"]["kind"], "provider_failure");
        assert_eq!(serde_json::from_value::<JobState>(json).unwrap(), state);
    }
}
