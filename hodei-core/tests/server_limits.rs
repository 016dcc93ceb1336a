//! What the server does when a job writes too much or the disk runs low: it refuses new
//! work and stops storing output, says why, and keeps serving reads.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    future::ready,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{Behaviour, TaskProvider, TestServer, follow, health, sh, wait_for_health, wait_gone};
use futures::StreamExt;
use hodei_core::{
    ClientError, FailureReason, JobEvent, JobState,
    controller::{ControllerConfig, SpaceProbe},
    disk::{DiskSpace, FreeDiskFloor},
};
use hodei_test_fixtures::wait_until;
use tonic_health::pb::health_check_response::ServingStatus;

async fn wait_for_pid(path: &std::path::Path) -> i32 {
    wait_until(Duration::from_secs(10), "the job wrote its pid", || {
        ready(std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n')))
    })
    .await
    .unwrap();
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_job_printing_past_its_log_quota_is_stopped_and_fails_log_limit_exceeded() {
    const LIMIT: u64 = 64 << 10;
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(
        Arc::new(TaskProvider::new(Behaviour::RunWorker)),
        dir.path(),
        Duration::from_secs(2),
        |config| ControllerConfig {
            max_log_bytes: LIMIT,
            ..config
        },
    )
    .await;
    let pid_file = dir.path().join("yes.pid");
    let job = server
        .client
        .submit(&sh(&format!("echo $$ > {}; exec yes", pid_file.display())))
        .await
        .unwrap();
    let pid = wait_for_pid(&pid_file).await;
    let followed = tokio::time::timeout(Duration::from_secs(20), follow(&server.client, &job, 0))
        .await
        .expect("the job was not stopped");
    assert_eq!(
        followed.final_state(),
        &JobState::Failed {
            reason: FailureReason::LogLimitExceeded { limit_bytes: LIMIT }
        }
    );
    let stored = followed.stdout.len() + followed.stderr.len();
    assert_eq!(
        stored as u64, LIMIT,
        "the log holds the output up to the quota"
    );
    wait_gone(pid, "after the log limit").await;
    server.stop().await;
}

#[tokio::test]
async fn below_the_disk_floor_new_work_is_refused_output_fails_and_reads_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let free = Arc::new(AtomicU64::new(50 << 30));
    let probe = {
        let free = Arc::clone(&free);
        SpaceProbe::new(move |_| {
            Ok(DiskSpace {
                available: free.load(Ordering::Relaxed),
                total: 100 << 30,
            })
        })
    };
    let server = TestServer::start_configured(
        Arc::new(TaskProvider::new(Behaviour::RunWorker)),
        dir.path(),
        Duration::from_secs(2),
        |config| ControllerConfig {
            min_free_disk: FreeDiskFloor::Bytes(1 << 30),
            disk_check_interval: Duration::from_millis(100),
            space_probe: probe,
            ..config
        },
    )
    .await;
    let done = server.client.submit(&sh("echo before")).await.unwrap();
    follow(&server.client, &done, 0).await;
    assert_eq!(
        health(&server.url, "hodei.v1.Disk").await,
        ServingStatus::Serving
    );
    let writer = server
        .client
        .submit(&sh(
            "echo first; sleep 2; while true; do echo more; sleep 0.1; done",
        ))
        .await
        .unwrap();
    let follower = tokio::spawn({
        let client = server.client.clone();
        let job = writer.clone();
        async move { follow(&client, &job, 0).await }
    });
    // The job's first line is stored before the disk runs short.
    wait_until(Duration::from_secs(10), "the writer's first line is stored", || {
        let client = server.client.clone();
        let id = writer.id;
        async move {
            let Ok(mut events) = client.follow(id).await else {
                return false;
            };
            while let Some(Ok(event)) = events.next().await {
                if matches!(event, JobEvent::Output(chunk) if chunk.data.starts_with(b"first\n")) {
                    return true;
                }
            }
            false
        }
    })
    .await
    .unwrap();
    free.store(10 << 20, Ordering::Relaxed);
    wait_for_health(
        &server.url,
        "hodei.v1.Disk",
        ServingStatus::NotServing,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(health(&server.url, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&server.url, "hodei.v1.JobService").await,
        ServingStatus::Serving
    );
    let refused = server.client.submit(&sh("true")).await.unwrap_err();
    let ClientError::Status(status) = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status
            .message()
            .starts_with("not enough free disk: 10.0 MiB free on ")
            && status.message().ends_with(", HODEI_MIN_FREE_DISK=1Gi"),
        "{}",
        status.message()
    );
    let followed = tokio::time::timeout(Duration::from_secs(20), follower)
        .await
        .expect("the writer was not stopped")
        .unwrap();
    assert_eq!(
        followed.final_state(),
        &JobState::Failed {
            reason: FailureReason::DiskFull {
                free_bytes: 10 << 20,
                min_free_bytes: 1 << 30
            }
        }
    );
    assert!(followed.stdout.starts_with(b"first\n"));
    // Reads keep working.
    assert_eq!(
        server.client.get(done.id).await.unwrap().state,
        JobState::Succeeded
    );
    assert!(server.client.list().page_size(10).await.unwrap().jobs.len() >= 2);
    let old = follow(&server.client, &done, 0).await;
    assert_eq!(old.stdout, b"before\n");
    // Space comes back: work is accepted again.
    free.store(2 << 30, Ordering::Relaxed);
    wait_for_health(
        &server.url,
        "hodei.v1.Disk",
        ServingStatus::Serving,
        Duration::from_secs(5),
    )
    .await;
    let again = server.client.submit(&sh("echo after")).await.unwrap();
    assert_eq!(follow(&server.client, &again, 0).await.stdout, b"after\n");
    server.stop().await;
}
