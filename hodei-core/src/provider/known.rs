//! The server's record of the workers it owns, as the orphan sweep asks it.

use std::collections::HashSet;

use crate::job::WorkerId;

/// Which workers the server owns, asked at the moment a provider decides whether a
/// worker is an orphan (see [`Provider::cleanup_orphans`](super::Provider::cleanup_orphans)).
///
/// The server adds a worker before it asks a provider to create it and drops it only
/// after the provider destroyed it, so a worker a provider has found is either known
/// *when asked afterwards* or no job owns it any more. A copy taken before the provider
/// looked gives no such promise: a worker created in between would pass for an orphan.
pub trait KnownWorkers: Send + Sync {
    /// Whether a job owns `worker_id` now (or is creating it).
    fn contains(&self, worker_id: WorkerId) -> bool;
}

/// A fixed set: right only when no worker is provisioned while the sweep runs.
impl KnownWorkers for HashSet<WorkerId> {
    fn contains(&self, worker_id: WorkerId) -> bool {
        HashSet::contains(self, &worker_id)
    }
}
