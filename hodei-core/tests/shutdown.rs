//! A draining server says so: health NOT_SERVING, new jobs refused with UNAVAILABLE.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Behaviour, TaskProvider, TestServer, health, sh, wait_for_health};
use hodei_test_fixtures::wait_until;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn a_draining_server_is_not_serving_and_refuses_new_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let provider = std::sync::Arc::new(TaskProvider::new(Behaviour::RunWorker));
    // The job ignores SIGTERM, so the drain lasts the kill grace.
    let server = TestServer::start_shared(provider, dir.path(), Duration::from_secs(3)).await;
    let client = server.client.clone();
    let url = server.url.clone();
    let worker_url = server.worker_url.clone();
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
    assert_eq!(
        health(&worker_url, "hodei.v1.WorkerService").await,
        ServingStatus::Serving
    );

    let stopping = tokio::spawn(server.stop());
    wait_for_health(&url, "", ServingStatus::NotServing, Duration::from_secs(10)).await;
    assert_eq!(
        health(&url, "hodei.v1.JobService").await,
        ServingStatus::NotServing
    );
    assert_eq!(health(&worker_url, "").await, ServingStatus::NotServing);
    assert_eq!(
        health(&worker_url, "hodei.v1.WorkerService").await,
        ServingStatus::NotServing
    );
    let refused = client.submit(&sh("echo late")).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::Unavailable), "{refused}");
    stopping.await.unwrap();
}

#[tokio::test]
async fn each_listener_serves_only_its_own_api() {
    use hodei_proto::v1::{
        ListJobsRequest, job_service_client::JobServiceClient,
        worker_service_client::WorkerServiceClient,
    };

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::NeverStart), dir.path()).await;
    let mut jobs_on_worker_port = JobServiceClient::connect(server.worker_url.clone())
        .await
        .unwrap();
    let refused = jobs_on_worker_port
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    let mut workers_on_job_port = WorkerServiceClient::connect(server.url.clone())
        .await
        .unwrap();
    let refused = workers_on_job_port
        .attach(futures::stream::empty())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");
    // A client pointed at the worker port is told so.
    let wrong_port = hodei_core::HodeiClient::connect(server.worker_url.clone())
        .await
        .unwrap()
        .list()
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong_port.contains("worker API's port"), "{wrong_port}");
    // Health answers on both; the job API is served on its own port.
    assert_eq!(health(&server.worker_url, "").await, ServingStatus::Serving);
    server.client.list().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn reflection_is_served_on_the_job_api_only_when_asked() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };

    async fn reflection(url: String) -> Result<(), tonic::Status> {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(futures::stream::iter([request]))
            .await?
            .into_inner();
        answers.message().await?;
        Ok(())
    }

    for enabled in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let server = hodei_core::HodeiServer::builder(dir.path())
            .provider(TaskProvider::new(Behaviour::NeverStart))
            .listen_addr("127.0.0.1:0".parse().unwrap())
            .worker_listen_addr("127.0.0.1:0".parse().unwrap())
            .reflection(enabled)
            .start()
            .await
            .unwrap();
        let url = format!("http://{}", server.local_addr());
        let worker_url = format!("http://{}", server.worker_addr());
        let (stop, task) = common::serve_in_background(server);
        let on_jobs = reflection(url).await;
        assert_eq!(on_jobs.is_ok(), enabled, "{on_jobs:?}");
        if let Err(status) = on_jobs {
            assert_eq!(status.code(), tonic::Code::Unimplemented);
        }
        let on_workers = reflection(worker_url).await.unwrap_err();
        assert_eq!(on_workers.code(), tonic::Code::Unimplemented);
        let _ = stop.send(());
        task.await.unwrap();
    }
}
