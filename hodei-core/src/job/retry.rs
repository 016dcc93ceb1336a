//! Retries by failure class: whose fault a failure was, which of its own failures a job
//! asks to be retried, and how many times.

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{FailureReason, JobState, ProcessExit, ValidationError};

/// Most retries a job may ask for.
pub const MAX_RETRIES: u32 = 10;
/// Most exit codes one job may list to be retried on.
pub const MAX_RETRY_EXIT_CODES: usize = 32;

/// Provider failure reasons that are the job's own doing: its image, its memory limit,
/// or a spec the platform cannot run.
const USER_PROVIDER_REASONS: [&str; 8] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
    "OOMKilled",
    "CreateContainerConfigError",
    "InvalidPodSpec",
    "SpecRefused",
];

/// Whose fault a failure was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The job's own: its command failed, ran out of its memory, ran past its timeout,
    /// named an image that cannot be pulled, or was cancelled.
    User,
    /// The platform's: the worker was lost, evicted or deleted, never registered, or the
    /// server restarted; running the job again may well succeed.
    Infrastructure,
}

impl FailureClass {
    /// `user` or `infrastructure`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Infrastructure => "infrastructure",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FailureReason {
    /// Whose fault this failure was.
    #[must_use]
    pub fn class(&self) -> FailureClass {
        match self {
            Self::Exit { .. }
            | Self::OutOfMemory { .. }
            | Self::CommandNotStarted { .. }
            | Self::LogLimitExceeded { .. } => FailureClass::User,
            Self::ProviderFailure { reason, .. }
                if USER_PROVIDER_REASONS.contains(&reason.as_str()) =>
            {
                FailureClass::User
            }
            Self::ProviderFailure { .. }
            | Self::WorkerLost { .. }
            | Self::RegistrationTimeout { .. }
            | Self::ServerRestarted
            | Self::DiskFull { .. } => FailureClass::Infrastructure,
        }
    }
}

impl JobState {
    /// Whose fault the end was, for a job that did not succeed; `None` otherwise.
    #[must_use]
    pub fn failure_class(&self) -> Option<FailureClass> {
        match self {
            Self::Failed { reason } => Some(reason.class()),
            Self::Cancelled { .. } | Self::TimedOut { .. } => Some(FailureClass::User),
            Self::Queued | Self::Provisioning | Self::Running | Self::Succeeded => None,
        }
    }
}

/// One of its own failures a job asks to be retried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "code")]
pub enum RetryOn {
    /// The command exited with this code.
    ExitCode(i32),
    /// The command was killed by a signal (not by the server's stop).
    Signal,
    /// The command ran out of its memory limit.
    OutOfMemory,
    /// The job ran past its timeout.
    Timeout,
}

/// Why a `--retry-on` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry condition {value:?} is not one of exit-code=N[,N...], signal, oom, timeout: {why}")]
pub struct RetryOnSyntaxError {
    /// The value given.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl RetryOn {
    /// Parses one condition of `--retry-on`: `exit-code=1,2`, `signal`, `oom`, `timeout`.
    /// Conditions may be joined with `|`.
    pub fn parse_all(text: &str) -> Result<Vec<Self>, RetryOnSyntaxError> {
        let refuse = |why: &str| RetryOnSyntaxError {
            value: text.to_owned(),
            why: why.to_owned(),
        };
        let mut all = Vec::new();
        for part in text.split('|').map(str::trim) {
            match part {
                "signal" => all.push(Self::Signal),
                "oom" => all.push(Self::OutOfMemory),
                "timeout" => all.push(Self::Timeout),
                _ => {
                    let codes = part
                        .strip_prefix("exit-code=")
                        .ok_or_else(|| refuse(&format!("unknown condition {part:?}")))?;
                    for code in codes.split(',').map(str::trim) {
                        let code = code.parse::<i32>().map_err(|_| {
                            refuse(&format!("exit code {code:?} is not an integer"))
                        })?;
                        if code == 0 {
                            return Err(refuse("exit code 0 is success, never retried"));
                        }
                        all.push(Self::ExitCode(code));
                    }
                }
            }
        }
        Ok(all)
    }
}

impl FromStr for RetryOn {
    type Err = RetryOnSyntaxError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match Self::parse_all(text)?.as_slice() {
            [one] => Ok(*one),
            _ => Err(RetryOnSyntaxError {
                value: text.to_owned(),
                why: "expected exactly one condition".to_owned(),
            }),
        }
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ExitCode(code) => write!(f, "exit-code={code}"),
            Self::Signal => f.write_str("signal"),
            Self::OutOfMemory => f.write_str("oom"),
            Self::Timeout => f.write_str("timeout"),
        }
    }
}

/// Which of its own failures a job asks to be retried on, and how many times. Failures
/// of the platform are retried by the server's own policy whatever this says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Most times the job runs again after one of its own failures.
    pub retries: u32,
    /// The failures that count; empty means every failure of the command (an exit code
    /// other than 0, a signal, out of memory, the timeout), never a cancel.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub on: BTreeSet<RetryOn>,
}

impl RetryPolicy {
    /// True when the job asks for nothing: its own failures end it.
    #[must_use]
    pub fn is_none(&self) -> bool {
        self.retries == 0 && self.on.is_empty()
    }

    /// True when this policy retries `state`, an end of the job's own making.
    #[must_use]
    pub fn covers(&self, state: &JobState) -> bool {
        if self.retries == 0 {
            return false;
        }
        let condition = match state {
            JobState::Failed {
                reason: FailureReason::Exit { exit },
            } => match exit {
                ProcessExit::Code(code) => RetryOn::ExitCode(*code),
                ProcessExit::Signal(_) => RetryOn::Signal,
            },
            JobState::Failed {
                reason: FailureReason::OutOfMemory { .. },
            } => RetryOn::OutOfMemory,
            JobState::TimedOut { .. } => RetryOn::Timeout,
            _ => return false,
        };
        self.on.is_empty() || self.on.contains(&condition)
    }

    /// Checks the limits; the error names the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.retries > MAX_RETRIES {
            return Err(ValidationError::new(
                "retry.retries",
                format!("{} retries asked; at most {MAX_RETRIES}", self.retries),
            ));
        }
        let codes = self
            .on
            .iter()
            .filter(|on| matches!(on, RetryOn::ExitCode(_)))
            .count();
        if codes > MAX_RETRY_EXIT_CODES {
            return Err(ValidationError::new(
                "retry.on",
                format!("{codes} exit codes; at most {MAX_RETRY_EXIT_CODES}"),
            ));
        }
        if self.on.contains(&RetryOn::ExitCode(0)) {
            return Err(ValidationError::new(
                "retry.on",
                "exit code 0 is success, never retried",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn exit(code: i32) -> JobState {
        JobState::from_exit(ProcessExit::Code(code))
    }

    #[test]
    fn failures_are_the_jobs_own_or_the_platforms() {
        let infra = [
            FailureReason::WorkerLost {
                message: "gone".into(),
            },
            FailureReason::RegistrationTimeout {
                waited: Duration::from_secs(1),
            },
            FailureReason::ServerRestarted,
            FailureReason::ProviderFailure {
                provider: "kubernetes".into(),
                reason: "Evicted".into(),
                message: "node pressure".into(),
            },
            FailureReason::DiskFull {
                free_bytes: 0,
                min_free_bytes: 1,
            },
        ];
        for reason in infra {
            assert_eq!(reason.class(), FailureClass::Infrastructure, "{reason}");
        }
        let user = [
            FailureReason::Exit {
                exit: ProcessExit::Code(1),
            },
            FailureReason::OutOfMemory {
                exit: ProcessExit::Signal(9),
            },
            FailureReason::CommandNotStarted {
                message: "not found".into(),
            },
            FailureReason::LogLimitExceeded { limit_bytes: 1 },
        ]
        .into_iter()
        .chain(
            USER_PROVIDER_REASONS
                .iter()
                .map(|reason| FailureReason::ProviderFailure {
                    provider: "kubernetes".into(),
                    reason: (*reason).into(),
                    message: "the job's own".into(),
                }),
        );
        for reason in user {
            assert_eq!(reason.class(), FailureClass::User, "{reason}");
        }
        assert_eq!(
            JobState::Cancelled { exit: None }.failure_class(),
            Some(FailureClass::User)
        );
        assert_eq!(JobState::Succeeded.failure_class(), None);
    }

    #[test]
    fn a_policy_covers_only_the_failures_it_names() {
        let none = RetryPolicy::default();
        assert!(!none.covers(&exit(1)));

        let any = RetryPolicy {
            retries: 2,
            on: BTreeSet::new(),
        };
        assert!(any.covers(&exit(1)));
        assert!(!any.covers(&JobState::Cancelled { exit: None }));
        assert!(!any.covers(&JobState::Succeeded));

        let named = RetryPolicy {
            retries: 1,
            on: RetryOn::parse_all("exit-code=1,2|timeout")
                .unwrap()
                .into_iter()
                .collect(),
        };
        assert!(named.covers(&exit(2)));
        assert!(!named.covers(&exit(3)));
        assert!(named.covers(&JobState::TimedOut {
            timeout: Duration::from_secs(1),
            exit: None
        }));
        assert!(!named.covers(&JobState::from_exit(ProcessExit::Signal(9))));
    }

    #[test]
    fn retry_conditions_parse_and_bad_ones_say_why() {
        assert_eq!(
            RetryOn::parse_all("exit-code=1, 2|signal|oom").unwrap(),
            vec![
                RetryOn::ExitCode(1),
                RetryOn::ExitCode(2),
                RetryOn::Signal,
                RetryOn::OutOfMemory
            ]
        );
        assert_eq!("timeout".parse::<RetryOn>().unwrap(), RetryOn::Timeout);
        for bad in ["exit-code=x", "exit-code=0", "sometimes", ""] {
            let error = RetryOn::parse_all(bad).unwrap_err();
            assert!(error.to_string().contains("retry condition"), "{error}");
        }
        let too_many = RetryPolicy {
            retries: MAX_RETRIES + 1,
            on: BTreeSet::new(),
        };
        assert!(
            too_many
                .validate()
                .unwrap_err()
                .to_string()
                .contains("retry.retries")
        );
    }
}
