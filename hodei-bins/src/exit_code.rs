//! Exit codes of `hodei run` and `hodei wait`, documented in docs/CLI.md.
//!
//! A job that ran exits with its own code, or 128+N when killed by signal N. The codes
//! below mark outcomes where the job's own code is not the answer.

use hodei_core::{FailureReason, JobState, ProcessExit, job::FailureClass};

/// The command line was wrong (unknown flag, bad value).
pub const USAGE: u8 = 2;
/// The job failed by its own doing without an exit code of its own: it ran out of its
/// memory, passed the log quota, or named an image that cannot be pulled (reason class
/// `user`).
pub const JOB_FAILED: u8 = 121;
/// `hodei wait --timeout` passed before the job ended.
pub const WAIT_TIMED_OUT: u8 = 122;
/// The job was cancelled.
pub const CANCELLED: u8 = 123;
/// The job ran past its timeout.
pub const TIMED_OUT: u8 = 124;
/// Hodei itself failed: server unreachable, request refused, job not found.
pub const HODEI_ERROR: u8 = 125;
/// The platform failed the job (reason class `infrastructure`): the worker was lost,
/// evicted or never registered, provisioning failed, or the server restarted; after the
/// server's retries, if any.
pub const WORKER_FAILED: u8 = 126;
/// The job's command could not be started (e.g. not found).
pub const COMMAND_NOT_STARTED: u8 = 127;

/// The exit code that reports `state` to a shell.
#[must_use]
pub fn for_state(state: &JobState) -> u8 {
    match state {
        JobState::Succeeded => 0,
        JobState::Failed {
            reason: FailureReason::Exit { exit },
        } => for_exit(*exit),
        JobState::Failed {
            reason: FailureReason::CommandNotStarted { .. },
        } => COMMAND_NOT_STARTED,
        JobState::Failed { reason } => match reason.class() {
            FailureClass::User => JOB_FAILED,
            FailureClass::Infrastructure => WORKER_FAILED,
        },
        JobState::Cancelled { .. } => CANCELLED,
        JobState::TimedOut { .. } => TIMED_OUT,
        JobState::Queued | JobState::Provisioning | JobState::Running => HODEI_ERROR,
    }
}

fn for_exit(exit: ProcessExit) -> u8 {
    match exit {
        // Shells see only the low 8 bits of an exit code.
        ProcessExit::Code(code) => (code & 0xff) as u8,
        ProcessExit::Signal(signal) => 128u8.saturating_add(u8::try_from(signal).unwrap_or(127)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_outcomes_map_to_documented_codes() {
        assert_eq!(for_state(&JobState::Succeeded), 0);
        assert_eq!(for_state(&JobState::from_exit(ProcessExit::Code(3))), 3);
        assert_eq!(for_state(&JobState::from_exit(ProcessExit::Signal(9))), 137);
        assert_eq!(for_state(&JobState::Cancelled { exit: None }), CANCELLED);
        assert_eq!(
            for_state(&JobState::TimedOut {
                timeout: std::time::Duration::from_secs(1),
                exit: None
            }),
            TIMED_OUT
        );
        assert_eq!(
            for_state(&JobState::Failed {
                reason: FailureReason::WorkerLost {
                    message: "x".into()
                }
            }),
            WORKER_FAILED
        );
        assert_eq!(
            for_state(&JobState::Failed {
                reason: FailureReason::OutOfMemory {
                    exit: ProcessExit::Signal(9)
                }
            }),
            JOB_FAILED
        );
    }
}
