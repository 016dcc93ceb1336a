//! The removal of workers nobody knows, at start and periodically.

use std::sync::Arc;

use tracing::{info, warn};

use super::Inner;
use crate::{job::WorkerId, provider::KnownWorkers};

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
