//! Recovery at startup and the periodic removal of workers nobody knows.

use std::sync::Arc;

use time::OffsetDateTime;
use tracing::{info, warn};

use super::{Inner, outcome};
use crate::{job::WorkerId, provider::KnownWorkers, store::StoreError};

/// Marks jobs that were active when the server last stopped as failed.
pub(super) async fn fail_interrupted_jobs(inner: &Inner) -> Result<(), StoreError> {
    for mut job in inner.store.unfinished().await? {
        warn!(job.id = %job.id, state = job.state.phase_name(), "job was active when the server stopped");
        job.state = outcome::server_stopped();
        job.finished_at = Some(OffsetDateTime::now_utc());
        inner.store.update(&job).await?;
    }
    Ok(())
}

/// The controller's live record of its workers: each question reads it anew, so a worker
/// provisioned while a provider sweeps is known when the provider asks about it.
impl KnownWorkers for Inner {
    fn contains(&self, worker_id: WorkerId) -> bool {
        self.lock_workers().contains(&worker_id)
    }
}

/// Asks every provider to remove workers that no active job owns.
pub(super) async fn sweep_orphans(inner: &Inner) {
    for provider in inner.providers.all() {
        let health = provider.health().await;
        if let crate::provider::ProviderHealth::Unhealthy(reason) = &health {
            warn!(provider = provider.name(), %reason, "provider unhealthy");
        }
        let healthy = matches!(health, crate::provider::ProviderHealth::Healthy);
        crate::observe::provider_health(provider.name(), healthy);
        match provider.cleanup_orphans(inner).await {
            Ok(0) => {}
            Ok(removed) => info!(
                provider = provider.name(),
                removed, "removed orphaned workers"
            ),
            Err(error) => warn!(provider = provider.name(), %error, "orphan sweep failed"),
        }
    }
}

pub(super) async fn run(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(inner.config.sweep_interval);
    interval.tick().await;
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            _ = interval.tick() => sweep_orphans(&inner).await,
        }
    }
}
