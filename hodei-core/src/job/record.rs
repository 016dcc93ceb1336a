//! A job as the server keeps it: spec, state and bookkeeping.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{JobId, JobSpec, JobState, WorkerId};

/// One job: what it runs, where it is, and when things happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// What it runs.
    pub spec: JobSpec,
    /// Where it is.
    pub state: JobState,
    /// The latest progress note, e.g. "pulling image" or a queueing reason.
    pub detail: Option<String>,
    /// The provider chosen for it.
    pub provider: String,
    /// Name of the identity that submitted it; empty for jobs submitted in-process or
    /// before jobs had owners (only callers who may read every job see those).
    #[serde(default)]
    pub owner: String,
    /// The worker that runs or ran it, once provisioned.
    pub worker_id: Option<WorkerId>,
    /// When it was accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its command started.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached its terminal state.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Its earlier attempts, oldest first; `state` is the current attempt's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
}

/// One earlier run of a job, on a worker of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first.
    pub number: u32,
    /// The worker it ran on, if one was provisioned.
    pub worker_id: Option<WorkerId>,
    /// How it ended (terminal).
    pub state: JobState,
    /// When its command started, if it did.
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

impl Job {
    /// A new queued job for `provider`.
    #[must_use]
    pub fn new(spec: JobSpec, provider: impl Into<String>) -> Self {
        Self {
            id: JobId::new(),
            spec,
            state: JobState::Queued,
            detail: None,
            provider: provider.into(),
            owner: String::new(),
            worker_id: None,
            created_at: OffsetDateTime::now_utc(),
            started_at: None,
            finished_at: None,
            attempts: Vec::new(),
        }
    }

    /// The number of the current attempt: 1 for the first run.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        u32::try_from(self.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }
}
