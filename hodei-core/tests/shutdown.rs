//! A draining server says so: health NOT_SERVING, new jobs refused with UNAVAILABLE.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Behaviour, TaskProvider, TestServer};
use hodei_core::JobSpec;
use hodei_test_fixtures::wait_until;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn sh(script: &str) -> JobSpec {
    JobSpec::builder("sh").args(["-c", script]).build().unwrap()
}

async fn health(url: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

#[tokio::test]
async fn a_draining_server_is_not_serving_and_refuses_new_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let provider = std::sync::Arc::new(TaskProvider::new(Behaviour::RunWorker));
    // The job ignores SIGTERM, so the drain lasts the kill grace.
    let server = TestServer::start_shared(provider, dir.path(), Duration::from_secs(3)).await;
    let client = server.client.clone();
    let url = server.url.clone();
    let job = client
        .submit(&sh("trap '' TERM; echo started; sleep 1000"))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the job runs", || async {
        client.get(job.id).await.unwrap().state == hodei_core::JobState::Running
    })
    .await
    .unwrap();
    assert_eq!(health(&url, "").await, ServingStatus::Serving);
    assert_eq!(
        health(&url, "hodei.v1.JobService").await,
        ServingStatus::Serving
    );

    let stopping = tokio::spawn(server.stop());
    wait_until(
        Duration::from_secs(10),
        "health turns NOT_SERVING",
        || async { health(&url, "").await == ServingStatus::NotServing },
    )
    .await
    .unwrap();
    assert_eq!(
        health(&url, "hodei.v1.JobService").await,
        ServingStatus::NotServing
    );
    assert_eq!(
        health(&url, "hodei.v1.WorkerService").await,
        ServingStatus::NotServing
    );
    let refused = client.submit(&sh("echo late")).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::Unavailable), "{refused}");
    stopping.await.unwrap();
}
