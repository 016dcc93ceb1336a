//! Retention: finished jobs and their logs are deleted when too old, too many, or while
//! the data directory's disk is short of space, oldest first.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tracing::{info, warn};

use super::Inner;
use crate::{job::JobId, observe, store::StoreError};

/// How often retention runs, by default (and once when the controller starts).
pub const DEFAULT_RETENTION_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// Most finished jobs one sweep deletes for each reason, by default.
pub const DEFAULT_RETENTION_BATCH: u32 = 1000;
/// Jobs deleted at a time while the disk is short, before its space is measured again:
/// one, so no more is deleted than needed.
const DISK_STEP: u32 = 1;

/// Which finished jobs are kept. Active jobs are never deleted.
#[derive(Debug, Clone, PartialEq, Eq, bon::Builder)]
pub struct RetentionPolicy {
    /// Finished jobs older than this (since they finished) are deleted; none by age when
    /// unset.
    pub max_age: Option<Duration>,
    /// At most this many finished jobs are kept, the newest; no limit when unset.
    pub max_finished_jobs: Option<u64>,
    /// How often retention runs; it also runs once when the controller starts.
    #[builder(default = DEFAULT_RETENTION_INTERVAL)]
    pub interval: Duration,
    /// Most finished jobs one run deletes for each reason.
    #[builder(default = DEFAULT_RETENTION_BATCH)]
    pub batch: u32,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self::builder().build()
    }
}

/// Runs retention at once, then every interval until shutdown. The first run also
/// removes logs whose job is gone (left by a crash between deleting a job and its log).
pub(super) async fn run(inner: Arc<Inner>) {
    remove_orphan_logs(&inner).await;
    let mut interval = tokio::time::interval(inner.config.retention.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            _ = interval.tick() => {
                if let Err(error) = sweep(&inner).await {
                    warn!(%error, "retention could not read or delete finished jobs");
                }
            }
        }
    }
}

/// Deletes finished jobs past the age, beyond the count, and while the disk is short.
async fn sweep(inner: &Inner) -> Result<(), StoreError> {
    let policy = &inner.config.retention;
    if let Some(age) = policy.max_age {
        let cutoff = OffsetDateTime::now_utc() - age;
        let ids = inner.store.finished_before(cutoff, policy.batch).await?;
        delete(inner, &ids, "age").await?;
    }
    if let Some(keep) = policy.max_finished_jobs {
        let ids = inner.store.finished_beyond(keep, policy.batch).await?;
        delete(inner, &ids, "count").await?;
    }
    free_disk(inner).await
}

/// Deletes the oldest finished jobs while the logs' filesystem is below the floor, at
/// most a batch per run.
async fn free_disk(inner: &Inner) -> Result<(), StoreError> {
    let policy = &inner.config.retention;
    let floor = inner.config.min_free_disk;
    let mut deleted = 0usize;
    loop {
        // Measured anew each time, which also tells admission and output storage at once
        // when space has come back.
        if !inner.disk.sample() {
            return Ok(());
        }
        let Some(space) = inner.disk.below_floor() else {
            break;
        };
        let left =
            u32::try_from(policy.batch as usize - deleted.min(policy.batch as usize)).unwrap_or(0);
        if left == 0 {
            warn!(%floor, free_bytes = space.free_bytes, "free disk space is still below the floor after deleting a batch of finished jobs");
            break;
        }
        let ids = inner.store.finished_beyond(0, DISK_STEP.min(left)).await?;
        let removed = delete(inner, &ids, "disk").await?;
        if removed == 0 {
            warn!(%floor, free_bytes = space.free_bytes, "free disk space is below the floor and no finished job is left to delete");
            break;
        }
        deleted += removed;
    }
    if deleted > 0 {
        info!(
            deleted,
            %floor,
            "deleted the oldest finished jobs and their logs: free disk space was below the floor"
        );
    }
    Ok(())
}

/// Deletes the finished jobs among `ids` (their rows in one transaction, then their
/// logs); returns how many. A job the controller holds in memory is never deleted.
async fn delete(inner: &Inner, ids: &[JobId], reason: &'static str) -> Result<usize, StoreError> {
    let ids: Vec<JobId> = {
        let active = inner.lock_active();
        ids.iter()
            .filter(|id| !active.contains_key(id))
            .copied()
            .collect()
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let deleted = inner.store.delete_finished(&ids).await?;
    for id in &deleted {
        if let Err(error) = inner.logs.remove(*id).await {
            warn!(job.id = %id, %error, "deleting the log of a deleted job failed");
        }
    }
    if !deleted.is_empty() {
        observe::jobs_deleted(reason, deleted.len());
        info!(
            count = deleted.len(),
            reason, "deleted finished jobs and their logs"
        );
    }
    Ok(deleted.len())
}

/// Deletes logs that no stored job owns. A log being written is kept: its job may be
/// on its way into the store.
async fn remove_orphan_logs(inner: &Inner) {
    let ids = match inner.logs.stored_ids().await {
        Ok(ids) => ids,
        Err(error) => {
            warn!(%error, "cannot list the job logs");
            return;
        }
    };
    let mut removed = 0usize;
    for id in ids {
        if inner.logs.live(id).is_some() || inner.lock_active().contains_key(&id) {
            continue;
        }
        match inner.store.contains(id).await {
            Ok(true) => {}
            Ok(false) => match inner.logs.remove(id).await {
                Ok(()) => removed += 1,
                Err(error) => warn!(job.id = %id, %error, "deleting a log without a job failed"),
            },
            Err(error) => {
                warn!(%error, "cannot check which logs have a job");
                return;
            }
        }
    }
    if removed > 0 {
        info!(removed, "deleted logs whose job was already deleted");
    }
}
