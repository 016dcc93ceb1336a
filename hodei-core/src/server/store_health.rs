//! The job API's health follows the store: NOT_SERVING while job state writes fail.

use hodei_proto::v1::job_service_server::JobServiceServer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::warn;

use super::JobApi;

/// Sets the overall ("") and the job service's status from `healthy` until `draining`,
/// after which the drain owns health.
pub(super) async fn follow(
    health: HealthReporter,
    mut healthy: watch::Receiver<bool>,
    draining: CancellationToken,
) {
    loop {
        let serving = *healthy.borrow_and_update();
        if draining.is_cancelled() {
            return;
        }
        let status = if serving {
            ServingStatus::Serving
        } else {
            warn!("job store writes are failing: health is NOT_SERVING until they succeed");
            ServingStatus::NotServing
        };
        set(&health, status).await;
        if draining.is_cancelled() {
            // The drain may have set NOT_SERVING just before; it must stay so.
            set(&health, ServingStatus::NotServing).await;
            return;
        }
        tokio::select! {
            biased;
            () = draining.cancelled() => return,
            changed = healthy.changed() => if changed.is_err() { return },
        }
    }
}

async fn set(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <JobServiceServer<JobApi> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
