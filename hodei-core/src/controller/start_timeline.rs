//! When each start phase of one job began and ended, recorded once per phase.

use std::time::Duration;

use time::OffsetDateTime;
use tokio::time::Instant;

use crate::observe;

/// A start phase that ended, as recorded in `hodei_job_start_phase_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PhaseTime {
    pub name: &'static str,
    pub took: Duration,
}

/// The start phases of one job (see [`observe::JOB_START_PHASE`]). Each method marks a
/// step, records the phase it ends, and returns it.
#[derive(Debug)]
pub(super) struct StartTimeline {
    accepted_at: OffsetDateTime,
    provision_started: Option<Instant>,
    created: Option<Instant>,
    placed: Option<Instant>,
    running: Option<Instant>,
    output_seen: bool,
}

impl StartTimeline {
    /// A timeline for a job accepted at `accepted_at` (wall clock, as stored).
    pub fn new(accepted_at: OffsetDateTime) -> Self {
        Self {
            accepted_at,
            provision_started: None,
            created: None,
            placed: None,
            running: None,
            output_seen: false,
        }
    }

    /// The job left the queue: a worker slot is free.
    pub fn dequeued(&mut self) -> PhaseTime {
        let waited = (OffsetDateTime::now_utc() - self.accepted_at)
            .try_into()
            .unwrap_or_default();
        record("queued", waited)
    }

    /// The provider was asked for a worker. A retry starts a new attempt.
    pub fn provisioning(&mut self) {
        self.provision_started = Some(Instant::now());
        self.created = None;
        self.placed = None;
    }

    /// The provider created the worker.
    pub fn created(&mut self) -> Option<PhaseTime> {
        let now = Instant::now();
        self.created = Some(now);
        self.provision_started
            .map(|started| record("provisioning", now - started))
    }

    /// The platform placed the worker (e.g. a pod bound to a node). Only the first report
    /// counts; it may come after the worker registered, as a watch can lag behind the
    /// worker's own connection.
    pub fn placed(&mut self) -> Option<PhaseTime> {
        if self.placed.is_some() {
            return None;
        }
        let now = Instant::now();
        self.placed = Some(now);
        self.created
            .map(|created| record("scheduling", now - created))
    }

    /// The worker registered: counted from placement when the provider reported one
    /// before, else from creation.
    pub fn registered(&mut self) -> Option<PhaseTime> {
        let since = self.placed.or(self.created)?;
        Some(record("registration", since.elapsed()))
    }

    /// The job was handed to its worker.
    pub fn running(&mut self) {
        self.running = Some(Instant::now());
    }

    /// Output arrived; the first after the job started ends the start.
    pub fn output(&mut self) -> Option<PhaseTime> {
        if self.output_seen {
            return None;
        }
        let running = self.running?;
        self.output_seen = true;
        Some(record("first_output", running.elapsed()))
    }
}

fn record(name: &'static str, took: Duration) -> PhaseTime {
    observe::start_phase(name, took);
    PhaseTime { name, took }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: Duration = Duration::from_millis(250);

    fn phase(name: &'static str, took: Duration) -> Option<PhaseTime> {
        Some(PhaseTime { name, took })
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_runs_from_the_step_before_it() {
        let mut timeline = StartTimeline::new(OffsetDateTime::now_utc());
        assert_eq!(timeline.dequeued().name, "queued");
        timeline.provisioning();
        tokio::time::advance(STEP).await;
        assert_eq!(timeline.created(), phase("provisioning", STEP));
        tokio::time::advance(2 * STEP).await;
        assert_eq!(timeline.placed(), phase("scheduling", 2 * STEP));
        tokio::time::advance(3 * STEP).await;
        assert_eq!(timeline.registered(), phase("registration", 3 * STEP));
        timeline.running();
        tokio::time::advance(4 * STEP).await;
        assert_eq!(timeline.output(), phase("first_output", 4 * STEP));
        assert_eq!(timeline.output(), None, "only the first output counts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_placement_reported_after_registration_still_counts_from_creation() {
        let mut timeline = StartTimeline::new(OffsetDateTime::now_utc());
        timeline.provisioning();
        timeline.created();
        tokio::time::advance(STEP).await;
        assert_eq!(timeline.registered(), phase("registration", STEP));
        tokio::time::advance(STEP).await;
        assert_eq!(timeline.placed(), phase("scheduling", 2 * STEP));
        assert_eq!(timeline.placed(), None, "only the first placement counts");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_starts_the_provisioning_phase_again() {
        let mut timeline = StartTimeline::new(OffsetDateTime::now_utc());
        timeline.provisioning();
        tokio::time::advance(STEP).await;
        timeline.provisioning();
        tokio::time::advance(STEP).await;
        assert_eq!(timeline.created(), phase("provisioning", STEP));
    }

    #[tokio::test(start_paused = true)]
    async fn no_output_phase_before_the_job_runs() {
        let mut timeline = StartTimeline::new(OffsetDateTime::now_utc());
        assert_eq!(timeline.output(), None);
    }
}
