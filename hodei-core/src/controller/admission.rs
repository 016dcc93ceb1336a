//! Admission: how many jobs may wait in the queue, in all and per owner.
//!
//! The check and the reservation happen under one lock, so concurrent submits can never
//! pass a cap together; a [`QueueTicket`] gives its place back when dropped, on every path.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

use super::SubmitError;

/// Most jobs queued at once, by default.
pub const DEFAULT_MAX_QUEUED_JOBS: usize = 10_000;
/// Most jobs of one owner queued at once, by default.
pub const DEFAULT_MAX_QUEUED_JOBS_PER_OWNER: usize = 1_000;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Only owners with at least one queued job, so it never holds more entries than
    /// `total`, which the cap bounds.
    per_owner: HashMap<String, usize>,
}

/// Counts queued jobs against the caps.
#[derive(Debug)]
pub(crate) struct Admission {
    max_total: usize,
    max_per_owner: usize,
    counts: Mutex<Counts>,
}

impl Admission {
    pub(crate) fn new(max_total: usize, max_per_owner: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_owner,
            counts: Mutex::default(),
        })
    }

    /// A place in the queue for a job of `owner`, if both caps allow one.
    pub(crate) fn admit(self: &Arc<Self>, owner: &str) -> Result<QueueTicket, SubmitError> {
        let mut counts = self.counts.lock();
        if counts.total >= self.max_total {
            return Err(SubmitError::QueueFull {
                queued: counts.total,
                limit: self.max_total,
            });
        }
        let of_owner = counts.per_owner.get(owner).copied().unwrap_or(0);
        if of_owner >= self.max_per_owner {
            return Err(SubmitError::OwnerQueueFull {
                owner: owner.to_owned(),
                queued: of_owner,
                limit: self.max_per_owner,
            });
        }
        Ok(self.take(&mut counts, owner))
    }

    /// A place in the queue for an admitted job that goes back to waiting: it was already
    /// accepted, so the caps do not turn it away.
    pub(crate) fn requeue(self: &Arc<Self>, owner: &str) -> QueueTicket {
        let mut counts = self.counts.lock();
        self.take(&mut counts, owner)
    }

    fn take(self: &Arc<Self>, counts: &mut Counts, owner: &str) -> QueueTicket {
        counts.total += 1;
        *counts.per_owner.entry(owner.to_owned()).or_default() += 1;
        QueueTicket {
            admission: Arc::clone(self),
            owner: owner.to_owned(),
        }
    }

    /// Jobs queued now, in all.
    pub(crate) fn queued(&self) -> usize {
        self.counts.lock().total
    }

    /// Jobs of `owner` queued now.
    #[cfg(test)]
    pub(crate) fn queued_of(&self, owner: &str) -> usize {
        self.counts
            .lock()
            .per_owner
            .get(owner)
            .copied()
            .unwrap_or(0)
    }

    fn release(&self, owner: &str) {
        let mut counts = self.counts.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_owner.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                counts.per_owner.remove(owner);
            }
        }
    }
}

/// One job's place in the queue; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct QueueTicket {
    admission: Arc<Admission>,
    owner: String,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        self.admission.release(&self.owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(result: Result<QueueTicket, SubmitError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn the_per_owner_cap_turns_away_only_that_owner() {
        let admission = Admission::new(10, 2);
        let _a = admission.admit("alice").unwrap();
        let _b = admission.admit("alice").unwrap();
        assert_eq!(
            full(admission.admit("alice")),
            "queue full: 2 jobs of owner \"alice\" are queued (HODEI_MAX_QUEUED_JOBS_PER_OWNER=2)"
        );
        let _c = admission.admit("bob").unwrap();
        assert_eq!(admission.queued(), 3);
    }

    #[test]
    fn the_total_cap_turns_away_everyone_and_a_dropped_ticket_frees_its_place() {
        let admission = Admission::new(2, 5);
        let a = admission.admit("alice").unwrap();
        let _b = admission.admit("bob").unwrap();
        assert_eq!(
            full(admission.admit("carol")),
            "queue full: 2 jobs are queued (HODEI_MAX_QUEUED_JOBS=2)"
        );
        drop(a);
        assert_eq!(admission.queued_of("alice"), 0);
        assert!(admission.admit("carol").is_ok());
    }

    #[test]
    fn a_requeued_job_is_counted_even_past_the_cap() {
        let admission = Admission::new(1, 1);
        let _a = admission.admit("alice").unwrap();
        let again = admission.requeue("alice");
        assert_eq!(admission.queued_of("alice"), 2);
        drop(again);
        assert_eq!(admission.queued(), 1);
    }
}
