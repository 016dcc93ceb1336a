//! The gRPC surface: bad input gets a clear status naming the field, tokens are one-time.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{Behaviour, TaskProvider, TestServer};
use hodei_proto::v1::{
    self as pb, job_service_client::JobServiceClient, server_message, worker_message,
    worker_service_client::WorkerServiceClient,
};
use tokio_stream::{StreamExt, wrappers::ReceiverStream};
use tonic::Code;

fn spec(command: &str) -> pb::JobSpec {
    pb::JobSpec {
        command: command.into(),
        timeout_ms: 60_000,
        ..Default::default()
    }
}

async fn submit(
    client: &mut JobServiceClient<tonic::transport::Channel>,
    spec: Option<pb::JobSpec>,
) -> tonic::Status {
    client
        .submit_job(pb::SubmitJobRequest { spec })
        .await
        .unwrap_err()
}

fn assert_names(status: &tonic::Status, code: Code, field: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(field),
        "{:?} should name {field}",
        status.message()
    );
}

#[tokio::test]
async fn bad_input_to_every_job_rpc_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::NeverStart), dir.path()).await;
    let mut raw = JobServiceClient::connect(server.url.clone()).await.unwrap();

    assert_names(&submit(&mut raw, None).await, Code::InvalidArgument, "spec");
    assert_names(
        &submit(&mut raw, Some(spec(""))).await,
        Code::InvalidArgument,
        "command",
    );
    let mut bad = spec("true");
    bad.memory = "abc".into();
    assert_names(
        &submit(&mut raw, Some(bad)).await,
        Code::InvalidArgument,
        "memory",
    );
    let mut bad = spec("true");
    bad.cpu = "lots".into();
    assert_names(
        &submit(&mut raw, Some(bad)).await,
        Code::InvalidArgument,
        "cpu",
    );
    let mut bad = spec("true");
    bad.timeout_ms = 0;
    assert_names(
        &submit(&mut raw, Some(bad)).await,
        Code::InvalidArgument,
        "timeout",
    );
    let mut bad = spec("true");
    bad.env = HashMap::from([("BIG".to_owned(), "x".repeat(200_000))]);
    assert_names(
        &submit(&mut raw, Some(bad)).await,
        Code::InvalidArgument,
        "env",
    );
    let mut bad = spec("true");
    bad.provider = Some("nomad".into());
    assert_names(
        &submit(&mut raw, Some(bad)).await,
        Code::InvalidArgument,
        "provider",
    );
    let mut bad = spec("true");
    bad.image = Some("alpine:3".into());
    assert_names(
        &submit(&mut raw, Some(bad)).await,
        Code::FailedPrecondition,
        "image",
    );

    let jobs = raw
        .list_jobs(pb::ListJobsRequest { limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(
        jobs.is_empty(),
        "refused jobs must leave nothing in the store: {jobs:?}"
    );

    let status = raw
        .get_job(pb::GetJobRequest {
            job_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_names(&status, Code::InvalidArgument, "job_id");
    let unknown = uuid::Uuid::new_v4().to_string();
    let status = raw
        .get_job(pb::GetJobRequest {
            job_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_names(&status, Code::NotFound, &unknown);
    let status = raw
        .cancel_job(pb::CancelJobRequest {
            job_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_names(&status, Code::InvalidArgument, "job_id");
    let status = raw
        .cancel_job(pb::CancelJobRequest {
            job_id: unknown.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = raw
        .list_jobs(pb::ListJobsRequest { limit: 1_000_000 })
        .await
        .unwrap_err();
    assert_names(&status, Code::InvalidArgument, "limit");
    let follow = |job_id: String| pb::FollowJobRequest {
        job_id,
        from_seq: 0,
        include_output: true,
        follow: true,
    };
    let status = raw.follow_job(follow("x".into())).await.unwrap_err();
    assert_names(&status, Code::InvalidArgument, "job_id");
    let status = raw.follow_job(follow(unknown)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    server.stop().await;
}

type Outbound = tokio::sync::mpsc::Sender<pb::WorkerMessage>;

async fn attach(
    url: &str,
    first: worker_message::Message,
) -> (
    Outbound,
    Result<tonic::Streaming<pb::ServerMessage>, tonic::Status>,
) {
    let mut client = WorkerServiceClient::connect(url.to_owned()).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(pb::WorkerMessage {
        message: Some(first),
    })
    .await
    .unwrap();
    let response = client
        .attach(ReceiverStream::new(rx))
        .await
        .map(tonic::Response::into_inner);
    (tx, response)
}

fn register(worker_id: &str, token: &str) -> worker_message::Message {
    worker_message::Message::Register(pb::Register {
        worker_id: worker_id.into(),
        otp_token: token.into(),
        worker_version: "test".into(),
    })
}

#[tokio::test]
async fn tokens_are_one_time_and_bound_to_their_worker() {
    let dir = tempfile::tempdir().unwrap();
    let provider = TaskProvider::new(Behaviour::NeverStart);
    let server = TestServer::start(provider.clone(), dir.path()).await;
    server
        .client
        .submit(&hodei_core::JobSpec::builder("true").build().unwrap())
        .await
        .unwrap();
    let launch = provider.next_launch().await;
    let worker_id = launch.worker_id.to_string();

    let (_tx, wrong) = attach(&server.url, register(&worker_id, "not-the-token")).await;
    assert_names(&wrong.unwrap_err(), Code::Unauthenticated, "otp_token");
    let other_worker = uuid::Uuid::new_v4().to_string();
    let (_tx, mismatched) = attach(&server.url, register(&other_worker, &launch.otp_token)).await;
    assert_names(
        &mismatched.unwrap_err(),
        Code::Unauthenticated,
        "another worker",
    );

    let (_tx, accepted) = attach(&server.url, register(&worker_id, &launch.otp_token)).await;
    let mut accepted = accepted.unwrap();
    let first = accepted.next().await.unwrap().unwrap();
    assert!(
        matches!(first.message, Some(server_message::Message::Assignment(_))),
        "{first:?}"
    );

    let (_tx, replayed) = attach(&server.url, register(&worker_id, &launch.otp_token)).await;
    assert_names(
        &replayed.unwrap_err(),
        Code::Unauthenticated,
        "already used",
    );
    drop(accepted);
    server.stop().await;
}

#[tokio::test]
async fn a_worker_stream_must_start_with_a_valid_registration() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::NeverStart), dir.path()).await;
    let (_tx, heartbeat_first) = attach(
        &server.url,
        worker_message::Message::Heartbeat(pb::Heartbeat {}),
    )
    .await;
    assert_names(
        &heartbeat_first.unwrap_err(),
        Code::InvalidArgument,
        "register",
    );
    let (_tx, bad_id) = attach(&server.url, register("not-a-uuid", "x")).await;
    assert_names(&bad_id.unwrap_err(), Code::InvalidArgument, "worker_id");
    server.stop().await;
}

#[tokio::test]
async fn gaps_in_output_are_refused_and_the_job_fails() {
    let dir = tempfile::tempdir().unwrap();
    let provider = TaskProvider::new(Behaviour::NeverStart);
    let server = TestServer::start(provider.clone(), dir.path()).await;
    let job = server
        .client
        .submit(&hodei_core::JobSpec::builder("true").build().unwrap())
        .await
        .unwrap();
    let launch = provider.next_launch().await;
    let (tx, stream) = attach(
        &server.url,
        register(&launch.worker_id.to_string(), &launch.otp_token),
    )
    .await;
    let mut stream = stream.unwrap();
    stream.next().await.unwrap().unwrap();
    let chunk = |seq| pb::OutputChunk {
        seq,
        stream: pb::OutputStream::Stdout.into(),
        data: b"x".to_vec(),
        emitted_at_unix_us: 0,
    };
    tx.send(pb::WorkerMessage {
        message: Some(worker_message::Message::Output(pb::OutputBatch {
            chunks: vec![chunk(1), chunk(3)],
        })),
    })
    .await
    .unwrap();
    let status = loop {
        match stream.next().await {
            Some(Ok(_)) => {}
            Some(Err(status)) => break status,
            None => panic!("stream ended without an error"),
        }
    };
    assert_names(&status, Code::InvalidArgument, "output");
    let followed = common::follow(&server.client, &job, 0).await;
    assert!(
        matches!(
            followed.final_state(),
            hodei_core::JobState::Failed {
                reason: hodei_core::FailureReason::WorkerLost { .. }
            }
        ),
        "{:?}",
        followed.final_state()
    );
    server.stop().await;
}
