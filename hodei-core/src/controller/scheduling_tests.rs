//! Which queued job gets a worker slot next, in paused time: priorities, fair sharing
//! between owners, per-owner caps, and what a waiting job's detail says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use super::{
    ControllerConfig, ToWorker,
    tests::{Harness, JOB_TIMEOUT},
};
use crate::job::{Job, JobId, JobSpec, JobState, ProcessExit};

impl Harness {
    async fn submit_with(&self, owner: &str, priority: i32) -> Job {
        let spec = JobSpec::builder("true")
            .timeout(JOB_TIMEOUT)
            .priority(priority)
            .build()
            .unwrap();
        self.controller.submit_as(owner, spec).await.unwrap()
    }

    /// Runs the next job the provider gets a worker for to its end; returns its id.
    async fn finish_next(&mut self) -> JobId {
        let worker = self.created().await;
        let mut end = self.register(&worker).await;
        let ToWorker::Assign(_) = end.next().await else {
            panic!("the job was not assigned first");
        };
        end.report(ProcessExit::Code(0)).await;
        let id = worker.launch.job_id;
        assert_eq!(self.ended(id).await, JobState::Succeeded);
        id
    }
}

fn owner_caps(
    default: usize,
    overrides: &[(&str, usize)],
) -> impl FnOnce(ControllerConfig) -> ControllerConfig {
    let overrides: BTreeMap<String, usize> = overrides
        .iter()
        .map(|(o, c)| ((*o).to_owned(), *c))
        .collect();
    move |config| ControllerConfig {
        max_running_per_owner: default,
        max_running_per_owner_overrides: overrides,
        ..config
    }
}

#[tokio::test(start_paused = true)]
async fn two_owners_sharing_one_slot_take_turns() {
    let mut harness = Harness::with_config(&[], Some(1), |c| c).await;
    let mut submitted = Vec::new();
    for owner in ["alice", "alice", "alice", "bob", "bob"] {
        submitted.push(harness.submit_with(owner, 0).await.id);
    }
    let [a1, a2, a3, b1, b2] = submitted[..] else {
        unreachable!()
    };
    let mut order = Vec::new();
    for _ in 0..5 {
        order.push(harness.finish_next().await);
    }
    assert_eq!(order, [a1, b1, a2, b2, a3]);
}

#[tokio::test(start_paused = true)]
async fn a_higher_priority_job_submitted_later_runs_first() {
    let mut harness = Harness::with_config(&[], Some(1), |c| c).await;
    let first = harness.submit_with("alice", 0).await;
    let low = harness.submit_with("alice", 0).await;
    let lower = harness.submit_with("bob", -1).await;
    let high = harness.submit_with("alice", 50).await;
    let order = [
        harness.finish_next().await,
        harness.finish_next().await,
        harness.finish_next().await,
        harness.finish_next().await,
    ];
    assert_eq!(order, [first.id, high.id, low.id, lower.id]);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_job_says_where_it_stands_and_forgets_it_once_it_starts() {
    let mut harness = Harness::with_config(&[], Some(1), |c| c).await;
    let (first, _worker, first_end) = harness.running().await;
    let second = harness.submit_with("alice", 0).await;
    let third = harness.submit_with("alice", 5).await;
    let waiting = harness
        .wait_for(second.id, |j| {
            j.detail.as_deref().is_some_and(|d| d.contains("2nd"))
        })
        .await;
    assert_eq!(waiting.state, JobState::Queued);
    assert_eq!(
        waiting.detail.as_deref(),
        Some("queued: 2nd in line (priority 0), waiting for a free fake worker slot (1 running)")
    );
    let ahead = harness.wait_for(third.id, |j| j.detail.is_some()).await;
    assert_eq!(
        ahead.detail.as_deref(),
        Some("queued: 1st in line (priority 5), waiting for a free fake worker slot (1 running)")
    );
    first_end.report(ProcessExit::Code(0)).await;
    assert_eq!(harness.ended(first.id).await, JobState::Succeeded);
    let started = harness
        .wait_for(third.id, |j| j.state == JobState::Provisioning)
        .await;
    assert_eq!(started.detail, None, "{started:?}");
    let moved_up = harness
        .wait_for(second.id, |j| {
            j.detail.as_deref().is_some_and(|d| d.contains("1st"))
        })
        .await;
    assert_eq!(moved_up.state, JobState::Queued);
}

#[tokio::test(start_paused = true)]
async fn an_owner_at_its_cap_waits_while_others_run_even_without_a_worker_cap() {
    let mut harness = Harness::with_config(&[], None, owner_caps(1, &[("ci", 2)])).await;
    let (_running, _worker, _end) = harness.running().await; // owner "" at its cap of 1
    let held = harness.submit_with("", 0).await;
    let waiting = harness.wait_for(held.id, |j| j.detail.is_some()).await;
    assert_eq!(
        waiting.detail.as_deref(),
        Some("queued: 1st in line (priority 0), owner limit 1 reached")
    );
    // Other owners are not held back; "ci" may run two. Their workers are kept: a worker
    // the provider stops reporting on ends its job.
    let mut workers = Vec::new();
    for _ in 0..2 {
        let job = harness.submit_with("ci", 0).await;
        workers.push(harness.created().await);
        assert_eq!(workers.last().unwrap().launch.job_id, job.id);
    }
    let third = harness.submit_with("ci", 0).await;
    let waiting = harness.wait_for(third.id, |j| j.detail.is_some()).await;
    // Behind the held job, whose owner runs fewer jobs.
    assert_eq!(
        waiting.detail.as_deref(),
        Some("queued: 2nd in line (priority 0), owner limit 2 reached")
    );
    let bob = harness.submit_with("bob", 0).await;
    workers.push(harness.created().await);
    assert_eq!(workers.last().unwrap().launch.job_id, bob.id);
    harness.controller.cancel(held.id).await.unwrap();
    assert_eq!(
        harness.ended(held.id).await,
        JobState::Cancelled { exit: None }
    );
}
