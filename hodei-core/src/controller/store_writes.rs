//! Job state writes that survive store faults: retried with backoff, then kept in memory
//! (one record per job, the newest) and retried in the background until the store takes
//! them. While any write is failing the store counts as unhealthy.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{
    sync::{Notify, watch},
    time::sleep,
};
use tracing::{info, warn};

use super::Inner;
use crate::{
    job::{Job, JobId},
    observe,
};

/// Waits between the tries of one write: five tries over about three seconds.
const BACKOFF: [Duration; 4] = [
    Duration::from_millis(200),
    Duration::from_millis(400),
    Duration::from_millis(800),
    Duration::from_millis(1600),
];
/// How often records the store refused are written again.
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// A record the store has not taken yet; `generation` tells a newer one from an older.
#[derive(Debug, Clone)]
struct Pending {
    job: Job,
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    /// The newest unwritten record of each job whose writes failed.
    pending: HashMap<JobId, Pending>,
    /// Jobs whose last write failed and that are still being retried in line.
    retrying: HashSet<JobId>,
    generation: u64,
}

impl State {
    fn healthy(&self) -> bool {
        self.pending.is_empty() && self.retrying.is_empty()
    }
}

/// What became of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    /// The store has it.
    Stored,
    /// The store refused it; it is kept in memory and retried in the background.
    Pending,
}

/// The writes of job states that the store has not taken yet.
#[derive(Debug)]
pub(super) struct StoreWrites {
    state: Mutex<State>,
    healthy: watch::Sender<bool>,
    wake: Notify,
}

impl Default for StoreWrites {
    fn default() -> Self {
        observe::store_healthy(true);
        Self {
            state: Mutex::default(),
            healthy: watch::Sender::new(true),
            wake: Notify::new(),
        }
    }
}

impl StoreWrites {
    /// Follows whether every job state write is succeeding.
    pub(super) fn healthy(&self) -> watch::Receiver<bool> {
        self.healthy.subscribe()
    }

    /// True while `job` has a record the store has not taken.
    pub(super) fn is_pending(&self, job: JobId) -> bool {
        self.state.lock().pending.contains_key(&job)
    }

    /// Changes the state under the lock and publishes the health it leaves.
    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock();
        let result = change(&mut state);
        let healthy = state.healthy();
        drop(state);
        if self
            .healthy
            .send_if_modified(|h| std::mem::replace(h, healthy) != healthy)
        {
            observe::store_healthy(healthy);
            if healthy {
                info!("job store writes succeed again");
            } else {
                warn!("job store writes are failing; job states are kept in memory");
            }
        }
        result
    }

    /// Replaces the pending record of `job`, if it has one; true if so.
    fn replace_pending(&self, job: &Job) -> bool {
        self.update(|state| {
            state.generation += 1;
            let generation = state.generation;
            match state.pending.get_mut(&job.id) {
                Some(pending) => {
                    *pending = Pending {
                        job: job.clone(),
                        generation,
                    };
                    true
                }
                None => false,
            }
        })
    }

    fn failed(&self, job: JobId) {
        self.update(|state| state.retrying.insert(job));
    }

    fn stored(&self, job: JobId) {
        self.update(|state| state.retrying.remove(&job));
    }

    fn defer(&self, job: Job) {
        self.update(|state| {
            state.retrying.remove(&job.id);
            state.generation += 1;
            let generation = state.generation;
            state.pending.insert(job.id, Pending { job, generation });
        });
        self.wake.notify_one();
    }

    /// Forgets `pending` once stored, unless a newer record replaced it meanwhile.
    fn stored_pending(&self, pending: &Pending) -> bool {
        self.update(|state| {
            let current = state
                .pending
                .get(&pending.job.id)
                .is_some_and(|p| p.generation == pending.generation);
            if current {
                state.pending.remove(&pending.job.id);
            }
            current
        })
    }

    fn snapshot(&self) -> Vec<Pending> {
        self.state.lock().pending.values().cloned().collect()
    }
}

/// Writes `job`'s state: tried five times over about three seconds, then kept for the
/// background retrier. A job with a record still pending goes straight to the retrier,
/// so its writes stay in order.
pub(super) async fn write(inner: &Inner, job: &Job) -> Written {
    let writes = &inner.store_writes;
    if writes.replace_pending(job) {
        return Written::Pending;
    }
    for attempt in 0..=BACKOFF.len() {
        match inner.store.update(job).await {
            Ok(()) => {
                writes.stored(job.id);
                return Written::Stored;
            }
            Err(error) => {
                observe::store_write_failed();
                writes.failed(job.id);
                warn!(%error, attempt = attempt + 1, "storing the job state failed");
            }
        }
        if let Some(delay) = BACKOFF.get(attempt) {
            sleep(*delay).await;
        }
    }
    warn!("the job state stays in memory and is written again when the store recovers");
    writes.defer(job.clone());
    Written::Pending
}

/// Writes pending records every [`RETRY_INTERVAL`] until the server shuts down, then
/// tries once more. A finished job leaves memory once its final state is stored.
pub(super) async fn retry(inner: Arc<Inner>) {
    loop {
        let waited = tokio::select! {
            () = inner.shutdown.cancelled() => false,
            () = inner.store_writes.wake.notified() => true,
        };
        if waited {
            loop {
                tokio::select! {
                    () = inner.shutdown.cancelled() => break,
                    () = sleep(RETRY_INTERVAL) => {}
                }
                if retry_pending(&inner).await {
                    break;
                }
            }
        }
        if inner.shutdown.is_cancelled() {
            retry_pending(&inner).await;
            return;
        }
    }
}

/// Writes every pending record once; true when none is left.
async fn retry_pending(inner: &Inner) -> bool {
    for pending in inner.store_writes.snapshot() {
        match inner.store.update(&pending.job).await {
            Ok(()) => {
                if inner.store_writes.stored_pending(&pending) && pending.job.state.is_terminal() {
                    inner.lock_active().remove(&pending.job.id);
                }
                info!(job.id = %pending.job.id, "stored a job state the store had refused");
            }
            Err(error) => {
                observe::store_write_failed();
                warn!(job.id = %pending.job.id, %error, "storing the job state failed again");
            }
        }
    }
    inner.store_writes.state.lock().pending.is_empty()
}
