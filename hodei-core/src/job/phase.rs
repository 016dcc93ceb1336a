//! A job's phase without what its state carries: what lists filter on.

use std::{fmt, str::FromStr};

use super::{JobState, ValidationError};

/// Where a job is in its lifecycle, without the reason a terminal state carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum JobPhase {
    /// Accepted and waiting for a worker slot.
    Queued,
    /// A worker is being started.
    Provisioning,
    /// The command is running.
    Running,
    /// The command exited with code 0.
    Succeeded,
    /// The job failed.
    Failed,
    /// Cancelled on request.
    Cancelled,
    /// Stopped at its timeout.
    TimedOut,
}

impl JobPhase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Provisioning,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    /// The name a stored state carries, e.g. `timed_out`; the same as
    /// [`JobState::phase_name`].
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }
}

impl JobPhase {
    /// True for Succeeded, Failed, Cancelled and TimedOut.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Queued | Self::Provisioning | Self::Running)
    }
}

impl JobState {
    /// The phase of this state.
    #[must_use]
    pub fn phase(&self) -> JobPhase {
        match self {
            Self::Queued => JobPhase::Queued,
            Self::Provisioning => JobPhase::Provisioning,
            Self::Running => JobPhase::Running,
            Self::Succeeded => JobPhase::Succeeded,
            Self::Failed { .. } => JobPhase::Failed,
            Self::Cancelled { .. } => JobPhase::Cancelled,
            Self::TimedOut { .. } => JobPhase::TimedOut,
        }
    }
}

impl fmt::Display for JobPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobPhase {
    type Err = ValidationError;

    /// A phase by name, e.g. `running`; `timed-out` is taken for `timed_out`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|phase| phase.as_str() == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|p| p.as_str()).collect();
                ValidationError::new(
                    "state",
                    format!(
                        "{} is not a job state; expected one of {}",
                        super::excerpt(s),
                        names.join(", ")
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{FailureReason, ProcessExit};

    #[test]
    fn every_phase_is_named_as_its_state_and_parses_back() {
        let states = [
            JobState::Queued,
            JobState::Provisioning,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed {
                reason: FailureReason::ServerRestarted,
            },
            JobState::Cancelled {
                exit: Some(ProcessExit::Code(1)),
            },
            JobState::TimedOut {
                timeout: std::time::Duration::from_secs(1),
                exit: None,
            },
        ];
        for (state, phase) in states.iter().zip(JobPhase::ALL) {
            assert_eq!(state.phase(), phase);
            assert_eq!(state.phase_name(), phase.as_str());
            assert_eq!(state.is_terminal(), phase.is_terminal());
            assert_eq!(phase.as_str().parse::<JobPhase>().unwrap(), phase);
        }
        assert_eq!("timed-out".parse::<JobPhase>().unwrap(), JobPhase::TimedOut);
    }

    #[test]
    fn an_unknown_state_is_refused_naming_the_field_and_the_choices() {
        let error = "sleeping".parse::<JobPhase>().unwrap_err();
        assert_eq!(error.field(), "state");
        assert!(error.message().contains("\"sleeping\""), "{error}");
        assert!(error.message().contains("timed_out"), "{error}");
    }
}
