//! The `hodei.v1.Disk` health service: NOT_SERVING while free disk is below the floor.
//!
//! Only this name changes: the overall status and the job API stay SERVING, so reads of
//! existing jobs and logs keep being routed here while new work is refused.

use tokio::sync::watch;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::controller::DiskCondition;

/// The health service name that reports the free-disk floor.
pub const DISK_HEALTH_SERVICE: &str = "hodei.v1.Disk";

/// The status for a disk condition.
fn status(condition: &DiskCondition) -> ServingStatus {
    if condition.is_below_floor() {
        ServingStatus::NotServing
    } else {
        ServingStatus::Serving
    }
}

/// Reports each condition until the controller stops publishing.
pub(super) async fn report(mut disk: watch::Receiver<DiskCondition>, health: HealthReporter) {
    let mut last = None;
    loop {
        let now = status(&disk.borrow_and_update());
        if last != Some(now) {
            health.set_service_status(DISK_HEALTH_SERVICE, now).await;
            last = Some(now);
        }
        if disk.changed().await.is_err() {
            return;
        }
    }
}
