//! The whole job path in one process: server, client, and worker agents as tasks.

#![allow(clippy::unwrap_used)]

mod common;

use std::{future::ready, time::Duration};

use common::{Behaviour, TaskProvider, TestServer, follow, wait_gone};
use hodei_core::{FailureReason, JobSpec, JobState, ProcessExit};
use hodei_test_fixtures::wait_until;

fn sh(script: &str) -> JobSpec {
    JobSpec::builder("sh").args(["-c", script]).build().unwrap()
}

#[tokio::test]
async fn stdout_stderr_and_exit_code_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let provider = TaskProvider::new(Behaviour::RunWorker);
    let server = TestServer::start(provider.clone(), dir.path()).await;
    let job = server
        .client
        .submit(&sh("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    let followed = follow(&server.client, &job, 0).await;
    assert_eq!(followed.stdout, b"out\n");
    assert_eq!(followed.stderr, b"err\n");
    assert_eq!(
        followed.final_state(),
        &JobState::from_exit(ProcessExit::Code(3))
    );
    let stored = server.client.get(job.id).await.unwrap();
    assert_eq!(stored.state, JobState::from_exit(ProcessExit::Code(3)));
    assert!(stored.finished_at.is_some());
    wait_until(Duration::from_secs(5), "the worker is destroyed", || {
        ready(!provider.destroyed().is_empty())
    })
    .await
    .unwrap();
    assert_eq!(
        provider.destroyed(),
        vec![stored.worker_id.unwrap()],
        "the worker is destroyed"
    );
    server.stop().await;
}

#[tokio::test]
async fn two_hundred_thousand_lines_arrive_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let job = server
        .client
        .submit(
            &JobSpec::builder("seq")
                .args(["1", "200000"])
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let followed = follow(&server.client, &job, 0).await;
    let expected: String = (1..=200_000).map(|n| format!("{n}\n")).collect();
    assert_eq!(followed.stdout.len(), expected.len());
    assert!(
        followed.stdout == expected.as_bytes(),
        "output differs from seq 1 200000"
    );
    let seqs = followed.seqs.clone();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "chunks numbered without gaps"
    );
    assert_eq!(followed.final_state(), &JobState::Succeeded);
    server.stop().await;
}

#[tokio::test]
async fn non_utf8_output_survives() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let job = server
        .client
        .submit(&sh(r"printf '\377\376\000raw'"))
        .await
        .unwrap();
    let followed = follow(&server.client, &job, 0).await;
    assert_eq!(followed.stdout, b"\xff\xfe\x00raw");
    server.stop().await;
}

#[tokio::test]
async fn cancel_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let pid_file = dir.path().join("grandchild.pid");
    let script = format!(
        "sleep 1000 & echo $! > {}; echo started; wait",
        pid_file.display()
    );
    let job = server.client.submit(&sh(&script)).await.unwrap();
    let follower = tokio::spawn({
        let client = server.client.clone();
        let job = job.clone();
        async move { follow(&client, &job, 0).await }
    });
    let pid = wait_for_pid(&pid_file).await;
    let requested = server.client.cancel(job.id).await.unwrap().requested;
    assert!(requested);
    let followed = follower.await.unwrap();
    assert!(
        matches!(
            followed.final_state(),
            JobState::Cancelled { exit: Some(_) }
        ),
        "{:?}",
        followed.final_state()
    );
    assert_eq!(followed.stdout, b"started\n");
    wait_gone(pid, "after the cancel").await;
    server.stop().await;
}

#[tokio::test]
async fn a_timeout_ends_in_timed_out_with_no_process_left() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let pid_file = dir.path().join("child.pid");
    let script = format!(
        "trap '' TERM; sleep 1000 & echo $! > {}; wait; wait",
        pid_file.display()
    );
    let spec = JobSpec::builder("sh")
        .args(["-c", &script])
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let job = server.client.submit(&spec).await.unwrap();
    let pid = wait_for_pid(&pid_file).await;
    let followed = follow(&server.client, &job, 0).await;
    assert!(
        matches!(followed.final_state(), JobState::TimedOut { timeout, .. } if *timeout == Duration::from_secs(1)),
        "{:?}",
        followed.final_state()
    );
    wait_gone(pid, "after the timeout").await;
    server.stop().await;
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let job = server
        .client
        .submit(&JobSpec::builder("/nonexistent/program").build().unwrap())
        .await
        .unwrap();
    let followed = follow(&server.client, &job, 0).await;
    assert!(
        matches!(followed.final_state(), JobState::Failed { reason: FailureReason::CommandNotStarted { message } } if message.contains("/nonexistent/program")),
        "{:?}",
        followed.final_state()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_follower_joining_mid_job_gets_every_byte_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let script = "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); sleep 0.005; done";
    let job = server.client.submit(&sh(script)).await.unwrap();
    let early = tokio::spawn({
        let client = server.client.clone();
        let job = job.clone();
        async move { follow(&client, &job, 0).await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mid = follow(&server.client, &job, 0).await;
    let early = early.await.unwrap();
    let expected: String = (0..300).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(String::from_utf8(mid.stdout).unwrap(), expected);
    assert_eq!(String::from_utf8(early.stdout).unwrap(), expected);
    let late = follow(&server.client, &job, 0).await;
    assert_eq!(
        String::from_utf8(late.stdout).unwrap(),
        expected,
        "after the end"
    );
    let from_ten = follow(&server.client, &job, 10).await;
    assert_eq!(from_ten.seqs.first(), Some(&10));
    server.stop().await;
}

#[tokio::test]
async fn finished_jobs_and_logs_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let job = server
        .client
        .submit(&sh("echo kept; exit 7"))
        .await
        .unwrap();
    follow(&server.client, &job, 0).await;
    server.stop().await;

    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let stored = server.client.get(job.id).await.unwrap();
    assert_eq!(stored.state, JobState::from_exit(ProcessExit::Code(7)));
    let followed = follow(&server.client, &job, 0).await;
    assert_eq!(followed.stdout, b"kept\n");
    assert_eq!(
        followed.final_state(),
        &JobState::from_exit(ProcessExit::Code(7))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_job_active_when_the_server_stops_ends_in_a_defined_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let job = server
        .client
        .submit(&sh("echo running; sleep 1000"))
        .await
        .unwrap();
    wait_until(Duration::from_secs(5), "the job runs", || async {
        server.client.get(job.id).await.unwrap().state == JobState::Running
    })
    .await
    .unwrap();
    server.stop().await;
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let stored = server.client.get(job.id).await.unwrap();
    assert_eq!(
        stored.state,
        JobState::Failed {
            reason: FailureReason::ServerRestarted
        }
    );
    server.stop().await;
}

async fn wait_for_pid(path: &std::path::Path) -> i32 {
    wait_until(
        Duration::from_secs(5),
        &format!("{} holds a pid", path.display()),
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            ready(text.trim().parse().ok())
        },
    )
    .await
    .unwrap()
}
