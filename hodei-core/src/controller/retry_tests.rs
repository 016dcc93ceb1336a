//! Retries in paused time: a platform failure runs the job again on a new worker under
//! the same id, the job's own failures only as its spec asks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, time::Duration};

use super::{
    ControllerConfig, FromWorker, RetrySettings, ToWorker, WorkerOutcome,
    tests::{Harness, JOB_TIMEOUT},
};
use crate::{
    job::{FailureClass, FailureReason, JobSpec, JobState, ProcessExit, RetryOn, RetryPolicy},
    provider::WorkerEvent,
};

fn retrying(config: ControllerConfig) -> ControllerConfig {
    ControllerConfig {
        retry: RetrySettings {
            infrastructure_retries: 2,
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
        },
        ..config
    }
}

fn spec(retry: RetryPolicy) -> JobSpec {
    JobSpec::builder("true")
        .timeout(JOB_TIMEOUT)
        .retry(retry)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_lost_worker_is_replaced_and_the_job_succeeds_on_its_second_attempt() {
    let mut harness = Harness::with_config(&[], None, retrying).await;
    let (job, first, _end) = harness.running().await;
    first
        .events
        .send(WorkerEvent::Exited {
            exit: Some(ProcessExit::Signal(9)),
            message: "pod deleted".into(),
        })
        .unwrap();
    let waiting = harness
        .wait_for(job.id, |j| {
            j.state == JobState::Queued && j.attempts.len() == 1
        })
        .await;
    let attempt = &waiting.attempts[0];
    assert_eq!(attempt.number, 1);
    assert_eq!(attempt.worker_id, Some(first.launch.worker_id));
    assert_eq!(
        attempt.state.failure_class(),
        Some(FailureClass::Infrastructure)
    );
    assert!(
        waiting
            .detail
            .as_deref()
            .unwrap()
            .starts_with("attempt 2 in "),
        "{:?}",
        waiting.detail
    );
    harness.destroyed(first.launch.worker_id).await;

    let second = harness.created().await;
    assert_ne!(second.launch.worker_id, first.launch.worker_id);
    assert_eq!(second.launch.job_id, job.id, "the job keeps its id");
    let mut end = harness.register(&second).await;
    let ToWorker::Assign(assignment) = end.next().await else {
        panic!("the job was not assigned");
    };
    assert_eq!(
        assignment.first_seq, 2,
        "numbering goes on after the marker"
    );
    end.send(FromWorker::Result {
        outcome: WorkerOutcome::Exit(ProcessExit::Code(0)),
        last_seq: 1,
    })
    .await;
    assert_eq!(harness.ended(job.id).await, JobState::Succeeded);
    let ended = harness.controller.get(job.id).await.unwrap().unwrap();
    assert_eq!(ended.attempts.len(), 1);
    assert_eq!(ended.attempt(), 2);
    assert_eq!(ended.worker_id, Some(second.launch.worker_id));

    let mut log = harness.controller.logs().snapshot(job.id, 0).unwrap();
    let marker = log.next_batch().await.unwrap().unwrap().remove(0);
    let text = String::from_utf8_lossy(&marker.data);
    assert!(
        text.starts_with("hodei: attempt 2 of job") && text.contains("infrastructure failure"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn platform_failures_end_the_job_once_the_budget_is_spent() {
    let mut harness = Harness::with_config(&[], None, retrying).await;
    let job = harness
        .controller
        .submit(spec(RetryPolicy::default()))
        .await
        .unwrap();
    for _ in 0..3 {
        let worker = harness.created().await;
        worker
            .events
            .send(WorkerEvent::Failed {
                reason: "Evicted".into(),
                message: "node pressure".into(),
            })
            .unwrap();
    }
    let state = harness.ended(job.id).await;
    assert!(
        matches!(&state, JobState::Failed { reason: FailureReason::ProviderFailure { reason, .. } } if reason == "Evicted"),
        "{state:?}"
    );
    let ended = harness.controller.get(job.id).await.unwrap().unwrap();
    assert_eq!(ended.attempts.len(), 2, "two retries, three attempts");
}

#[tokio::test(start_paused = true)]
async fn the_jobs_own_failure_ends_it_unless_its_spec_asks_for_a_retry() {
    let mut harness = Harness::with_config(&[], None, retrying).await;
    let (job, _worker, end) = harness.running().await;
    end.report(ProcessExit::Code(1)).await;
    assert_eq!(
        harness.ended(job.id).await,
        JobState::from_exit(ProcessExit::Code(1))
    );

    let asked = spec(RetryPolicy {
        retries: 1,
        on: BTreeSet::from([RetryOn::ExitCode(3)]),
    });
    let job = harness.controller.submit(asked).await.unwrap();
    for attempt in 1..=2u64 {
        let worker = harness.created().await;
        let mut end = harness.register(&worker).await;
        let ToWorker::Assign(assignment) = end.next().await else {
            panic!("the job was not assigned");
        };
        end.send(FromWorker::Result {
            outcome: WorkerOutcome::Exit(ProcessExit::Code(3)),
            last_seq: assignment.first_seq - 1,
        })
        .await;
        if attempt == 1 {
            harness.wait_for(job.id, |j| j.attempts.len() == 1).await;
        }
    }
    assert_eq!(
        harness.ended(job.id).await,
        JobState::from_exit(ProcessExit::Code(3)),
        "one retry asked, then the failure stands"
    );
    let ended = harness.controller.get(job.id).await.unwrap().unwrap();
    assert_eq!(
        ended.attempts[0].state.failure_class(),
        Some(FailureClass::User)
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_it_waits_to_run_again_is_cancelled() {
    let mut harness = Harness::with_config(&[], None, retrying).await;
    let (job, first, _end) = harness.running().await;
    first
        .events
        .send(WorkerEvent::Exited {
            exit: None,
            message: "gone".into(),
        })
        .unwrap();
    harness
        .wait_for(job.id, |j| j.state == JobState::Queued)
        .await;
    harness.controller.cancel(job.id).await.unwrap();
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Cancelled { exit: None }
    );
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(
        harness.created.try_recv().is_err(),
        "no worker for a cancelled job"
    );
}
