//! Removes a job's worker on every path, even if the job's task is dropped or panics.

use std::{sync::Arc, time::Duration};

use tokio::time::timeout;
use tracing::{debug, warn};

use super::Inner;
use crate::{job::WorkerId, observe, provider::Provider};

/// Longest a provider's remove call may take before the orphan sweep is left to retry.
const DESTROY_TIMEOUT: Duration = Duration::from_secs(120);

/// Owns a provisioned worker until it is destroyed.
pub(super) struct WorkerGuard {
    inner: Arc<Inner>,
    provider: Arc<dyn Provider>,
    worker_id: WorkerId,
    armed: bool,
}

impl WorkerGuard {
    /// Takes charge of `worker_id`, which the provider is about to create.
    pub fn new(inner: Arc<Inner>, provider: Arc<dyn Provider>, worker_id: WorkerId) -> Self {
        inner.lock_workers().insert(worker_id);
        observe::worker_count(provider.name(), 1.0);
        Self {
            inner,
            provider,
            worker_id,
            armed: true,
        }
    }

    /// Removes the worker now and waits for the provider.
    pub async fn destroy(mut self) {
        self.armed = false;
        destroy_worker(
            Arc::clone(&self.inner),
            Arc::clone(&self.provider),
            self.worker_id,
        )
        .await;
    }

    /// Leaves the worker running, for the next server process to adopt: it is no longer
    /// this process's to remove, and its stored record stays.
    pub fn release(mut self) {
        self.armed = false;
        if self.inner.lock_workers().remove(&self.worker_id) {
            observe::worker_count(self.provider.name(), -1.0);
        }
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        if self.armed
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(destroy_worker(
                Arc::clone(&self.inner),
                Arc::clone(&self.provider),
                self.worker_id,
            ));
        }
    }
}

/// Removes a worker and forgets it: its registration, its stored record (once the
/// provider removed it) and this process's count.
pub(super) async fn destroy_worker(
    inner: Arc<Inner>,
    provider: Arc<dyn Provider>,
    worker_id: WorkerId,
) {
    inner.registrations.revoke(worker_id);
    match timeout(DESTROY_TIMEOUT, provider.destroy(worker_id)).await {
        Ok(Ok(())) => {
            debug!(worker.id = %worker_id, "worker destroyed");
            // Kept when removing failed: the next server process tries again.
            if let Err(error) = inner.store.remove_worker(worker_id).await {
                warn!(worker.id = %worker_id, error = %crate::server::error_chain(&error), "forgetting a removed worker failed");
            }
        }
        Ok(Err(error)) => {
            warn!(worker.id = %worker_id, %error, "destroying the worker failed; the orphan sweep will retry")
        }
        Err(_) => {
            warn!(worker.id = %worker_id, "destroying the worker timed out; the orphan sweep will retry")
        }
    }
    if inner.lock_workers().remove(&worker_id) {
        observe::worker_count(provider.name(), -1.0);
    }
}
