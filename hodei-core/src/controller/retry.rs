//! Whether a job that ended runs again, and after how long: failures of the platform by
//! the server's policy, the job's own failures only as its spec asks.

use std::time::Duration;

use rand::Rng;

use crate::job::{Attempt, FailureClass, FailureReason, JobSpec, JobState};

/// Times a job runs again after failures of the platform, by default.
pub const DEFAULT_INFRASTRUCTURE_RETRIES: u32 = 2;
/// Wait before the first retry, by default; it doubles with each further one.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait between two attempts, by default.
pub const DEFAULT_MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// The server's retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySettings {
    /// Most times a job runs again after failures of the platform (worker lost, pod
    /// evicted or deleted, registration timeout, provider errors); 0 turns them off.
    pub infrastructure_retries: u32,
    /// Wait before the first retry; doubled for each further one, with jitter.
    pub backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            infrastructure_retries: DEFAULT_INFRASTRUCTURE_RETRIES,
            backoff: DEFAULT_RETRY_BACKOFF,
            max_backoff: DEFAULT_MAX_RETRY_BACKOFF,
        }
    }
}

/// A decision to run the job again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retry {
    /// Whose fault the failure was.
    pub class: FailureClass,
    /// How long to wait first.
    pub delay: Duration,
}

/// Whether a job whose attempt ended `state` runs again. `earlier` are its attempts
/// before this one, which count against the budgets.
pub(super) fn decide(
    state: &JobState,
    spec: &JobSpec,
    earlier: &[Attempt],
    settings: &RetrySettings,
) -> Option<Retry> {
    let class = state.failure_class()?;
    let taken = earlier
        .iter()
        .filter(|attempt| attempt.state.failure_class() == Some(class))
        .count();
    let taken = u32::try_from(taken).unwrap_or(u32::MAX);
    let allowed = match class {
        FailureClass::Infrastructure if retried_by_the_platform(state) => {
            settings.infrastructure_retries
        }
        FailureClass::User if spec.retry.covers(state) => spec.retry.retries,
        _ => return None,
    };
    if taken >= allowed {
        return None;
    }
    let retries_so_far = u32::try_from(earlier.len()).unwrap_or(u32::MAX);
    Some(Retry {
        class,
        delay: backoff(settings, retries_so_far),
    })
}

/// Failures of the platform that running the job again may fix. A server that stopped
/// or restarted, a full disk on the server, or a platform that forbids the worker (its
/// policy or the server's rights) is no reason to run it again.
fn retried_by_the_platform(state: &JobState) -> bool {
    match state {
        JobState::Failed {
            reason: FailureReason::ProviderFailure { reason, .. },
        } => reason != "Forbidden",
        JobState::Failed {
            reason: FailureReason::WorkerLost { .. } | FailureReason::RegistrationTimeout { .. },
        } => true,
        _ => false,
    }
}

/// The wait before retry number `n + 1`: the backoff doubled `n` times, capped, and then
/// a random point in its upper half, so jobs failed together do not come back together.
fn backoff(settings: &RetrySettings, n: u32) -> Duration {
    let full = settings
        .backoff
        .saturating_mul(1u32 << n.min(16))
        .min(settings.max_backoff);
    let half = full / 2;
    half + half.mul_f64(rand::rng().random_range(0.0..=1.0))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use time::OffsetDateTime;

    use super::*;
    use crate::job::{ProcessExit, RetryOn, RetryPolicy};

    fn lost() -> JobState {
        JobState::Failed {
            reason: FailureReason::WorkerLost {
                message: "pod deleted".into(),
            },
        }
    }

    fn exit(code: i32) -> JobState {
        JobState::from_exit(ProcessExit::Code(code))
    }

    fn attempts(states: &[JobState]) -> Vec<Attempt> {
        states
            .iter()
            .enumerate()
            .map(|(i, state)| Attempt {
                number: u32::try_from(i + 1).unwrap(),
                worker_id: None,
                state: state.clone(),
                started_at: None,
                finished_at: OffsetDateTime::now_utc(),
            })
            .collect()
    }

    fn spec(retry: RetryPolicy) -> JobSpec {
        JobSpec::builder("true").retry(retry).build().unwrap()
    }

    #[test]
    fn platform_failures_are_retried_up_to_the_servers_budget() {
        let settings = RetrySettings::default();
        let plain = spec(RetryPolicy::default());
        let first = decide(&lost(), &plain, &[], &settings).expect("retried");
        assert_eq!(first.class, FailureClass::Infrastructure);
        assert!(decide(&lost(), &plain, &attempts(&[lost()]), &settings).is_some());
        assert!(
            decide(&lost(), &plain, &attempts(&[lost(), lost()]), &settings).is_none(),
            "two retries, then the job ends"
        );
        let off = RetrySettings {
            infrastructure_retries: 0,
            ..settings
        };
        assert!(decide(&lost(), &plain, &[], &off).is_none());
        let restarted = JobState::Failed {
            reason: FailureReason::ServerRestarted,
        };
        assert!(decide(&restarted, &plain, &[], &settings).is_none());
        let forbidden = JobState::Failed {
            reason: FailureReason::ProviderFailure {
                provider: "kubernetes".into(),
                reason: "Forbidden".into(),
                message: "violates PodSecurity".into(),
            },
        };
        assert!(decide(&forbidden, &plain, &[], &settings).is_none());
    }

    #[test]
    fn the_jobs_own_failures_are_retried_only_as_it_asks() {
        let settings = RetrySettings::default();
        assert!(decide(&exit(1), &spec(RetryPolicy::default()), &[], &settings).is_none());
        let on_two = spec(RetryPolicy {
            retries: 1,
            on: BTreeSet::from([RetryOn::ExitCode(2)]),
        });
        assert!(decide(&exit(1), &on_two, &[], &settings).is_none());
        let retry = decide(&exit(2), &on_two, &[], &settings).expect("retried");
        assert_eq!(retry.class, FailureClass::User);
        assert!(decide(&exit(2), &on_two, &attempts(&[exit(2)]), &settings).is_none());
        // A platform failure between does not use up the job's own budget.
        assert!(decide(&exit(2), &on_two, &attempts(&[lost()]), &settings).is_some());
        assert!(
            decide(
                &JobState::Cancelled { exit: None },
                &spec(RetryPolicy {
                    retries: 5,
                    on: BTreeSet::new()
                }),
                &[],
                &settings
            )
            .is_none(),
            "a cancel is never retried"
        );
        assert!(decide(&JobState::Succeeded, &on_two, &[], &settings).is_none());
    }

    #[test]
    fn the_wait_doubles_up_to_the_cap_with_jitter_in_its_upper_half() {
        let settings = RetrySettings {
            infrastructure_retries: 5,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        };
        for (n, full) in [(0, 10), (1, 20), (2, 40), (3, 60), (10, 60)] {
            for _ in 0..50 {
                let wait = backoff(&settings, n);
                let full = Duration::from_secs(full);
                assert!(wait >= full / 2 && wait <= full, "{n}: {wait:?}");
            }
        }
    }
}
