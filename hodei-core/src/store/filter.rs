//! Which jobs a list selects: by phase, owner, labels and creation time.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use crate::job::{Job, JobPhase, LabelSelector};

/// The jobs a list selects; every condition set must hold. The default selects every job.
///
/// ```
/// use hodei_core::{job::{JobPhase, LabelSelector}, store::JobFilter};
///
/// let filter = JobFilter::builder()
///     .states([JobPhase::Running, JobPhase::Queued])
///     .owner("alice")
///     .labels(LabelSelector::parse("team=a").unwrap())
///     .build();
/// assert!(filter.states.contains(&JobPhase::Running));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, bon::Builder)]
#[must_use]
pub struct JobFilter {
    /// Phases a job may be in; empty selects every phase.
    #[builder(default, with = |states: impl IntoIterator<Item = JobPhase>| states.into_iter().collect())]
    pub states: BTreeSet<JobPhase>,
    /// The identity that submitted the job, exactly; `None` selects every owner.
    #[builder(into)]
    pub owner: Option<String>,
    /// Conditions on the job's labels; the empty selector selects every job.
    #[builder(default)]
    pub labels: LabelSelector,
    /// Only jobs created at or after this time.
    pub created_after: Option<OffsetDateTime>,
    /// Only jobs created before this time.
    pub created_before: Option<OffsetDateTime>,
}

impl JobFilter {
    /// Whether `job` is selected.
    #[must_use]
    pub fn matches(&self, job: &Job) -> bool {
        (self.states.is_empty() || self.states.contains(&job.state.phase()))
            && self.owner.as_ref().is_none_or(|owner| *owner == job.owner)
            && self.created_after.is_none_or(|t| job.created_at >= t)
            && self.created_before.is_none_or(|t| job.created_at < t)
            && self.labels.matches(&job.spec.labels)
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;
    use crate::job::{JobSpec, JobState};

    fn job() -> Job {
        let spec = JobSpec::builder("true")
            .labels([("team".to_owned(), "a".to_owned())].into())
            .build()
            .unwrap();
        let mut job = Job::new(spec, "local");
        job.owner = "alice".into();
        job.state = JobState::Running;
        job
    }

    #[test]
    fn every_condition_must_hold() {
        let job = job();
        let at = job.created_at;
        assert!(JobFilter::default().matches(&job));
        let selected = |filter: JobFilter| filter.matches(&job);
        assert!(selected(
            JobFilter::builder().states([JobPhase::Running]).build()
        ));
        assert!(!selected(
            JobFilter::builder().states([JobPhase::Queued]).build()
        ));
        assert!(selected(JobFilter::builder().owner("alice").build()));
        assert!(!selected(JobFilter::builder().owner("bob").build()));
        assert!(!selected(JobFilter::builder().owner("").build()));
        let team = |s| LabelSelector::parse(s).unwrap();
        assert!(selected(
            JobFilter::builder().labels(team("team=a")).build()
        ));
        assert!(!selected(
            JobFilter::builder().labels(team("team!=a")).build()
        ));
        assert!(selected(JobFilter::builder().created_after(at).build()));
        assert!(!selected(
            JobFilter::builder()
                .created_after(at + Duration::milliseconds(1))
                .build()
        ));
        assert!(!selected(JobFilter::builder().created_before(at).build()));
        assert!(selected(
            JobFilter::builder()
                .created_before(at + Duration::milliseconds(1))
                .build()
        ));
        assert!(!selected(
            JobFilter::builder()
                .states([JobPhase::Running])
                .owner("bob")
                .build()
        ));
    }
}
