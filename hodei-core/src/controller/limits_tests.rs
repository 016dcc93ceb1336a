//! The server's own limits in paused time: queued-job caps, the free-disk floor, and a job
//! whose output the server refuses to store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{
    ControllerConfig, FromWorker, SpaceProbe, StopReason, SubmitError, ToWorker,
    tests::{Harness, JOB_TIMEOUT, Provision},
};
use crate::{
    disk::{DiskSpace, FreeDiskFloor},
    job::{FailureReason, JobSpec, JobState, ProcessExit},
};

fn spec() -> JobSpec {
    JobSpec::builder("true")
        .timeout(JOB_TIMEOUT)
        .build()
        .unwrap()
}

fn caps(total: usize, per_owner: usize) -> impl FnOnce(ControllerConfig) -> ControllerConfig {
    move |config| ControllerConfig {
        max_queued_jobs: total,
        max_queued_jobs_per_owner: per_owner,
        ..config
    }
}

impl Harness {
    async fn submit_as(&self, owner: &str) -> Result<crate::Job, SubmitError> {
        self.controller.submit_as(owner, spec()).await
    }
}

#[tokio::test(start_paused = true)]
async fn each_queue_cap_refuses_past_its_value_naming_its_setting() {
    // One worker slot, taken: every later job waits in the queue.
    let mut harness = Harness::with_config(&[], Some(1), caps(3, 2)).await;
    let (_running, _worker, _end) = harness.running().await;
    assert_eq!(
        harness.controller.queued_jobs(),
        0,
        "the running job left the queue"
    );
    harness.submit_as("alice").await.unwrap();
    harness.submit_as("alice").await.unwrap();
    let refused = harness.submit_as("alice").await.unwrap_err();
    assert!(
        matches!(&refused, SubmitError::OwnerQueueFull { owner, queued: 2, limit: 2 } if owner == "alice"),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "queue full: 2 jobs of owner \"alice\" are queued (HODEI_MAX_QUEUED_JOBS_PER_OWNER=2)"
    );
    harness.submit_as("bob").await.unwrap();
    let refused = harness.submit_as("carol").await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        "queue full: 3 jobs are queued (HODEI_MAX_QUEUED_JOBS=3)"
    );
    assert_eq!(harness.controller.queued_jobs(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_place_in_the_queue_is_freed_when_a_queued_job_is_cancelled_or_gets_a_slot() {
    let mut harness = Harness::with_config(&[], Some(1), caps(10, 1)).await;
    let (running, _worker, end) = harness.running().await;
    let queued = harness.submit_as("alice").await.unwrap();
    assert!(harness.submit_as("alice").await.is_err());
    harness.controller.cancel(queued.id).await.unwrap();
    assert_eq!(
        harness.ended(queued.id).await,
        JobState::Cancelled { exit: None }
    );
    assert_eq!(harness.controller.queued_jobs(), 0);
    let next = harness.submit_as("alice").await.unwrap();
    assert_eq!(harness.controller.queued_jobs(), 1);
    end.report(ProcessExit::Code(0)).await;
    assert_eq!(harness.ended(running.id).await, JobState::Succeeded);
    let worker = harness.created().await;
    assert_eq!(worker.launch.job_id, next.id);
    assert_eq!(harness.controller.queued_jobs(), 0, "it got the slot");
    harness.submit_as("alice").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_job_back_in_the_queue_after_a_refusal_is_counted_once() {
    let mut harness = Harness::with_config(&[Provision::RefuseForNow], None, caps(1, 1)).await;
    let job = harness.submit_as("alice").await.unwrap();
    harness
        .wait_for(job.id, |j| {
            j.state == JobState::Queued && j.detail.is_some()
        })
        .await;
    assert_eq!(harness.controller.queued_jobs(), 1);
    assert!(matches!(
        harness.submit_as("bob").await,
        Err(SubmitError::QueueFull { .. })
    ));
    harness.created().await;
    assert_eq!(harness.controller.queued_jobs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_never_pass_the_cap() {
    // No worker slot ever frees, so every admitted job stays queued.
    let harness = Arc::new(Harness::with_config(&[], Some(0), caps(50, 1000)).await);
    let submits: Vec<_> = (0..200)
        .map(|i| {
            let harness = Arc::clone(&harness);
            tokio::spawn(async move { harness.submit_as(&format!("owner-{}", i % 3)).await })
        })
        .collect();
    let mut accepted = 0;
    for submit in submits {
        match submit.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(SubmitError::QueueFull { limit: 50, .. }) => {}
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(accepted, 50);
    assert_eq!(harness.controller.queued_jobs(), 50);
}

/// A probe reporting `free` bytes on a 100 GiB filesystem, with a floor of 1 GiB.
fn fake_disk(free: &Arc<AtomicU64>) -> impl FnOnce(ControllerConfig) -> ControllerConfig {
    let free = Arc::clone(free);
    move |config| ControllerConfig {
        min_free_disk: FreeDiskFloor::Bytes(1 << 30),
        disk_check_interval: Duration::from_secs(2),
        space_probe: SpaceProbe::new(move |_| {
            Ok(DiskSpace {
                available: free.load(Ordering::Relaxed),
                total: 100 << 30,
            })
        }),
        ..config
    }
}

#[tokio::test(start_paused = true)]
async fn below_the_disk_floor_submits_are_refused_until_space_returns() {
    let free = Arc::new(AtomicU64::new(50 << 30));
    let harness = Harness::with_config(&[], None, fake_disk(&free)).await;
    harness.submit_as("alice").await.unwrap();
    free.store(100 << 20, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refused = harness.submit_as("alice").await.unwrap_err();
    assert!(
        matches!(refused, SubmitError::DiskBelowFloor { free_bytes, .. } if free_bytes == 100 << 20),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .starts_with("not enough free disk: 100.0 MiB free on "),
        "{refused}"
    );
    assert!(refused.to_string().ends_with(", HODEI_MIN_FREE_DISK=1Gi"));
    assert!(harness.controller.disk().borrow().is_below_floor());
    free.store(2 << 30, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    harness.submit_as("alice").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_output_is_refused_is_stopped_and_fails_for_it_whatever_it_reports() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, mut end) = harness.running().await;
    let full = FailureReason::DiskFull {
        free_bytes: 0,
        min_free_bytes: 1 << 30,
    };
    end.send(FromWorker::OutputRefused(full.clone())).await;
    assert!(matches!(
        end.next().await,
        ToWorker::Stop(StopReason::OutputRefused)
    ));
    end.report(ProcessExit::Code(0)).await;
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Failed { reason: full }
    );
    harness.destroyed(worker.launch.worker_id).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_job_whose_worker_stays_silent_still_fails_for_the_refusal() {
    let mut harness = Harness::start(&[]).await;
    let (job, _worker, mut end) = harness.running().await;
    let _alive = end.keep_alive();
    let quota = FailureReason::LogLimitExceeded { limit_bytes: 64 };
    end.send(FromWorker::OutputRefused(quota.clone())).await;
    assert!(matches!(end.next().await, ToWorker::Stop(_)));
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Failed { reason: quota }
    );
}
