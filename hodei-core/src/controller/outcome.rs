//! How a job ends: pure decisions from what the worker, the provider and the clock said.

use std::time::Duration;

use super::{StopReason, WorkerOutcome};
use crate::job::{FailureReason, JobState};

/// The state of a job that was active when the server stopped.
pub(crate) fn server_stopped() -> JobState {
    JobState::Failed {
        reason: FailureReason::ServerRestarted,
    }
}

/// The state of a job the worker reported a result for, `stopped` naming why the server
/// had asked it to stop, if it had.
pub(super) fn reported(
    outcome: &WorkerOutcome,
    stopped: Option<StopReason>,
    limit: Duration,
) -> JobState {
    let exit = match outcome {
        WorkerOutcome::Exit(exit)
        | WorkerOutcome::OutOfMemory(exit)
        | WorkerOutcome::Interrupted(exit) => Some(*exit),
        WorkerOutcome::SpawnFailed(_) => None,
    };
    match (stopped, outcome) {
        (Some(StopReason::TimedOut), _) => JobState::TimedOut {
            timeout: limit,
            exit,
        },
        (Some(StopReason::Cancelled), _) => JobState::Cancelled { exit },
        (Some(StopReason::Shutdown), _) => server_stopped(),
        // The refusal decides the end; see `refused`.
        (None | Some(StopReason::OutputRefused), WorkerOutcome::Exit(exit)) => {
            JobState::from_exit(*exit)
        }
        (None | Some(StopReason::OutputRefused), WorkerOutcome::OutOfMemory(exit)) => {
            JobState::Failed {
                reason: FailureReason::OutOfMemory { exit: *exit },
            }
        }
        // Its platform stopped the worker (a pod deleted or evicted): the job's end is
        // not its own, so it may run again.
        (None | Some(StopReason::OutputRefused), WorkerOutcome::Interrupted(exit)) => {
            worker_lost(&format!(
                "the worker's platform told it to shut down, and it stopped the command ({exit})"
            ))
        }
        (None | Some(StopReason::OutputRefused), WorkerOutcome::SpawnFailed(message)) => {
            JobState::Failed {
                reason: FailureReason::CommandNotStarted {
                    message: message.clone(),
                },
            }
        }
    }
}

/// The state of a job that was stopped for `reason` and gave no result: it was stopped
/// before it started, or its worker went away or stayed silent after being told to stop.
pub(super) fn stopped_without_result(reason: StopReason, limit: Duration) -> JobState {
    match reason {
        StopReason::TimedOut => JobState::TimedOut {
            timeout: limit,
            exit: None,
        },
        StopReason::Cancelled => JobState::Cancelled { exit: None },
        StopReason::Shutdown => server_stopped(),
        // The refusal decides the end; see `refused`.
        StopReason::OutputRefused => worker_lost("stopped because its output was refused"),
    }
}

/// The state of a job whose output the server refused to store: failed for that reason,
/// whatever the worker reported afterwards, so the missing output is never silent.
pub(super) fn refused(ended: JobState, refusal: Option<FailureReason>) -> JobState {
    match refusal {
        Some(reason) => JobState::Failed { reason },
        None => ended,
    }
}

/// The state of a job whose worker went away, `stopping` naming why the server had asked
/// it to stop, if it had: a worker told to stop may leave without a word.
pub(super) fn worker_gone(
    stopping: Option<StopReason>,
    limit: Duration,
    message: &str,
) -> JobState {
    match stopping {
        Some(reason) => stopped_without_result(reason, limit),
        None => worker_lost(message),
    }
}

/// The state of a job whose worker stopped talking to the server.
pub(super) fn worker_lost(message: &str) -> JobState {
    JobState::Failed {
        reason: FailureReason::WorkerLost {
            message: message.to_owned(),
        },
    }
}

/// The state of a job whose provider could not start or keep its worker.
pub(super) fn provider_failure(provider: &str, reason: &str, message: &str) -> JobState {
    JobState::Failed {
        reason: FailureReason::ProviderFailure {
            provider: provider.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ProcessExit;

    const LIMIT: Duration = Duration::from_secs(5);
    const KILLED: WorkerOutcome = WorkerOutcome::Exit(ProcessExit::Signal(15));

    #[test]
    fn a_stopped_job_keeps_the_reason_it_was_stopped_for() {
        assert_eq!(
            reported(&KILLED, Some(StopReason::TimedOut), LIMIT),
            JobState::TimedOut {
                timeout: LIMIT,
                exit: Some(ProcessExit::Signal(15))
            }
        );
        assert_eq!(
            reported(&KILLED, Some(StopReason::Cancelled), LIMIT),
            JobState::Cancelled {
                exit: Some(ProcessExit::Signal(15))
            }
        );
        assert_eq!(
            reported(&KILLED, Some(StopReason::Shutdown), LIMIT),
            server_stopped()
        );
    }

    #[test]
    fn an_unstopped_job_ends_as_its_command_did() {
        assert_eq!(
            reported(&KILLED, None, LIMIT),
            JobState::from_exit(ProcessExit::Signal(15))
        );
        assert_eq!(
            reported(&WorkerOutcome::Exit(ProcessExit::Code(0)), None, LIMIT),
            JobState::Succeeded
        );
        assert_eq!(
            reported(&WorkerOutcome::SpawnFailed("nope".into()), None, LIMIT),
            JobState::Failed {
                reason: FailureReason::CommandNotStarted {
                    message: "nope".into()
                }
            }
        );
    }

    #[test]
    fn a_command_the_oom_killer_ended_fails_out_of_memory_unless_it_was_stopped() {
        let killed = WorkerOutcome::OutOfMemory(ProcessExit::Signal(9));
        assert_eq!(
            reported(&killed, None, LIMIT),
            JobState::Failed {
                reason: FailureReason::OutOfMemory {
                    exit: ProcessExit::Signal(9)
                }
            }
        );
        assert_eq!(
            reported(&killed, Some(StopReason::Cancelled), LIMIT),
            JobState::Cancelled {
                exit: Some(ProcessExit::Signal(9))
            }
        );
    }

    #[test]
    fn a_command_its_workers_platform_stopped_is_a_lost_worker_unless_the_server_stopped_it() {
        let interrupted = WorkerOutcome::Interrupted(ProcessExit::Signal(15));
        let state = reported(&interrupted, None, Duration::from_secs(1));
        assert!(
            matches!(&state, JobState::Failed { reason: FailureReason::WorkerLost { message } } if message.contains("killed by signal 15")),
            "{state:?}"
        );
        assert_eq!(
            reported(
                &interrupted,
                Some(StopReason::Cancelled),
                Duration::from_secs(1)
            ),
            JobState::Cancelled {
                exit: Some(ProcessExit::Signal(15))
            }
        );
    }

    #[test]
    fn a_command_that_never_started_after_a_cancel_is_cancelled_without_an_exit() {
        assert_eq!(
            reported(
                &WorkerOutcome::SpawnFailed("nope".into()),
                Some(StopReason::Cancelled),
                LIMIT
            ),
            JobState::Cancelled { exit: None }
        );
    }

    #[test]
    fn a_job_stopped_without_a_result_ends_for_the_stop_reason() {
        assert_eq!(
            stopped_without_result(StopReason::TimedOut, LIMIT),
            JobState::TimedOut {
                timeout: LIMIT,
                exit: None
            }
        );
        assert_eq!(
            stopped_without_result(StopReason::Cancelled, LIMIT),
            JobState::Cancelled { exit: None }
        );
        assert_eq!(
            stopped_without_result(StopReason::Shutdown, LIMIT),
            server_stopped()
        );
    }

    #[test]
    fn a_job_whose_output_was_refused_fails_for_the_refusal_whatever_it_reported() {
        let quota = FailureReason::LogLimitExceeded { limit_bytes: 64 };
        for ended in [
            JobState::Succeeded,
            reported(&KILLED, Some(StopReason::OutputRefused), LIMIT),
            stopped_without_result(StopReason::OutputRefused, LIMIT),
        ] {
            assert_eq!(
                refused(ended, Some(quota.clone())),
                JobState::Failed {
                    reason: quota.clone()
                }
            );
        }
        assert_eq!(refused(JobState::Succeeded, None), JobState::Succeeded);
    }

    #[test]
    fn a_gone_worker_is_lost_unless_it_was_told_to_stop() {
        assert_eq!(
            worker_gone(None, LIMIT, "stream closed"),
            worker_lost("stream closed")
        );
        assert_eq!(
            worker_gone(Some(StopReason::Cancelled), LIMIT, "stream closed"),
            JobState::Cancelled { exit: None }
        );
    }
}
