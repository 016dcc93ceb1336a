//! A worker whose stream breaks, in paused time: the job waits for it to re-attach within
//! the reconnect window; a stop decided meanwhile reaches it if it is back within the
//! kill and result graces, else the job ends and its worker is removed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::{
    FromWorker, StopReason, ToWorker,
    tests::{Harness, JOB_TIMEOUT, KILL_GRACE, RESULT_GRACE, WorkerEnd},
};
use crate::job::{JobId, JobState, ProcessExit};

/// Breaks `end`'s stream as the server's stream task would.
async fn break_stream(harness: &Harness, id: JobId, end: WorkerEnd) {
    end.send(FromWorker::Broken("the worker's stream failed: cut".into()))
        .await;
    drop(end);
    harness
        .wait_for(id, |j| j.detail.as_deref() == Some("worker reconnecting"))
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_re_attaches_within_the_window_finishes_its_job() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, end) = harness.running().await;
    let mut credential = end.resume_credential.clone().unwrap();
    // Twice, each time away longer than the heartbeat timeout: it is suspended meanwhile.
    let mut end = end;
    for _ in 0..2 {
        break_stream(&harness, job.id, end).await;
        sleep(Duration::from_secs(120)).await;
        end = harness.reattach(&worker, &credential).await;
        credential = end.resume_credential.clone().unwrap();
        let back = harness.wait_for(job.id, |j| j.detail.is_none()).await;
        assert_eq!(back.state, JobState::Running);
    }
    end.send(FromWorker::Output).await;
    end.report(ProcessExit::Code(0)).await;
    assert_eq!(harness.ended(job.id).await, JobState::Succeeded);
    harness.destroyed(worker.launch.worker_id).await;
}

#[tokio::test(start_paused = true)]
async fn the_heartbeat_deadline_runs_again_after_a_re_attach() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, end) = harness.running().await;
    let credential = end.resume_credential.clone().unwrap();
    break_stream(&harness, job.id, end).await;
    let _end = harness.reattach(&worker, &credential).await;
    let back_at = Instant::now();
    let state = harness.ended(job.id).await;
    assert!(
        matches!(&state, JobState::Failed { reason: crate::job::FailureReason::WorkerLost { message } } if message.starts_with("no heartbeat")),
        "{state:?}"
    );
    assert_eq!(back_at.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_while_the_worker_is_away_stops_the_job_when_it_is_back() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, end) = harness.running().await;
    let credential = end.resume_credential.clone().unwrap();
    break_stream(&harness, job.id, end).await;
    sleep(JOB_TIMEOUT + Duration::from_secs(5)).await;
    assert_eq!(
        harness.controller.get(job.id).await.unwrap().unwrap().state,
        JobState::Running,
        "within the graces the job waits for its worker"
    );
    let mut end = harness.reattach(&worker, &credential).await;
    assert!(matches!(
        end.next().await,
        ToWorker::Stop(StopReason::TimedOut)
    ));
    end.report(ProcessExit::Signal(15)).await;
    assert_eq!(
        harness.ended(job.id).await,
        JobState::TimedOut {
            timeout: JOB_TIMEOUT,
            exit: Some(ProcessExit::Signal(15)),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_while_the_worker_is_away_reaches_it_when_it_is_back() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, end) = harness.running().await;
    let credential = end.resume_credential.clone().unwrap();
    break_stream(&harness, job.id, end).await;
    harness.controller.cancel(job.id).await.unwrap();
    sleep(Duration::from_secs(5)).await;
    let mut end = harness.reattach(&worker, &credential).await;
    assert!(matches!(
        end.next().await,
        ToWorker::Stop(StopReason::Cancelled)
    ));
    end.report(ProcessExit::Signal(15)).await;
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Cancelled {
            exit: Some(ProcessExit::Signal(15)),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_job_whose_worker_does_not_return_ends_after_the_stop_graces() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, end) = harness.running().await;
    break_stream(&harness, job.id, end).await;
    let away_since = Instant::now();
    harness.controller.cancel(job.id).await.unwrap();
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Cancelled { exit: None }
    );
    // Not the whole reconnect window: a cancel is not kept waiting for a worker that may
    // never come back; removing the worker ends the job's processes.
    assert_eq!(away_since.elapsed(), KILL_GRACE + RESULT_GRACE);
    harness.destroyed(worker.launch.worker_id).await;
}

#[tokio::test(start_paused = true)]
async fn an_ended_job_cannot_be_resumed() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, end) = harness.running().await;
    let credential = end.resume_credential.clone().unwrap();
    end.report(ProcessExit::Code(0)).await;
    assert_eq!(harness.ended(job.id).await, JobState::Succeeded);
    harness.destroyed(worker.launch.worker_id).await;
    assert!(
        harness
            .controller
            .resume_worker(worker.launch.worker_id, &credential)
            .await
            .is_err()
    );
}
