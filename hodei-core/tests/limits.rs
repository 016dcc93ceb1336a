//! Bounds on input over the wire: oversized or malformed specs and messages are refused
//! with a status naming what is wrong, nothing is stored, and the server keeps serving.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Behaviour, TaskProvider, TestServer};
use hodei_core::{
    JobSpec,
    job::limits::{
        MAX_ARG_BYTES, MAX_COMMAND_LINE_BYTES, MAX_ENV_VAR_BYTES, MAX_SPEC_BYTES,
        MAX_WORKING_DIR_BYTES,
    },
    server::{JOB_API_MAX_MESSAGE_BYTES, WORKER_API_MAX_MESSAGE_BYTES},
};
use hodei_proto::v1::{self as pb, job_service_client::JobServiceClient};
use tonic::{Code, transport::Channel};

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The server is still up: it lists jobs and runs a new one to the end.
async fn assert_still_serving(server: &TestServer) {
    let job = server
        .client
        .submit(&JobSpec::builder("true").build().unwrap())
        .await
        .unwrap();
    let followed = common::follow(&server.client, &job, 1).await;
    assert_eq!(*followed.final_state(), hodei_core::JobState::Succeeded);
}

#[tokio::test]
async fn a_huge_working_dir_of_control_characters_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let provider = TaskProvider::new(Behaviour::RunWorker);
    let server = TestServer::start(provider.clone(), dir.path()).await;
    // The fields are public: a client can send what the builder would refuse.
    let mut spec = JobSpec::builder("true").build().unwrap();
    spec.working_dir = Some("\u{1}".repeat(1_000_000));

    let error = server.client.submit(&spec).await.unwrap_err();

    assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
    let message = error.to_string();
    assert!(message.contains("invalid working_dir"), "{message}");
    assert!(
        message.contains(&format!("at most {MAX_WORKING_DIR_BYTES} allowed")),
        "{message}"
    );
    assert!(message.len() < 1000, "{} bytes", message.len());
    assert!(
        server
            .client
            .list()
            .page_size(100)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(provider.launches().is_empty());
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let provider = TaskProvider::new(Behaviour::RunWorker);
    let server = TestServer::start(provider.clone(), dir.path()).await;
    let huge = "a".repeat(JOB_API_MAX_MESSAGE_BYTES + 1);
    let spec = pb::JobSpec {
        command: "echo".into(),
        args: vec![huge.clone()],
        timeout_ms: 1000,
        ..Default::default()
    };

    // A client without limits of its own sends it; the server refuses to read it.
    let mut raw = JobServiceClient::new(channel(&server.url).await);
    let status = raw
        .submit_job(pb::SubmitJobRequest {
            spec: Some(spec.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // Our client refuses to send it at all.
    let mut own = JobSpec::builder("echo").build().unwrap();
    own.args = vec![huge];
    let error = server.client.submit(&own).await.unwrap_err();
    assert_eq!(error.code(), Some(Code::OutOfRange), "{error}");
    assert!(error.to_string().contains("at most 16777216"), "{error}");

    // The worker API refuses an oversized first message the same way.
    let mut worker =
        pb::worker_service_client::WorkerServiceClient::new(channel(&server.worker_url).await);
    let register = pb::WorkerMessage {
        message: Some(pb::worker_message::Message::Register(pb::Register {
            worker_id: hodei_core::WorkerId::new().to_string(),
            credential: "x".repeat(WORKER_API_MAX_MESSAGE_BYTES + 1),
            ..Default::default()
        })),
    };
    let attached = worker
        .attach(tokio_stream::once(register))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(attached.code(), Code::OutOfRange, "{attached:?}");

    assert!(
        server
            .client
            .list()
            .page_size(100)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert!(provider.launches().is_empty());
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn the_largest_legal_spec_is_accepted_whole_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let args = vec!["a".repeat(MAX_ARG_BYTES); MAX_COMMAND_LINE_BYTES / MAX_ARG_BYTES];
    let env = (0..4)
        .map(|i| (format!("V{i}"), "v".repeat(MAX_ENV_VAR_BYTES - 2)))
        .collect();
    let spec = JobSpec::builder("true")
        .args(args)
        .env(env)
        .build()
        .unwrap();
    let size: usize = spec.args.iter().map(String::len).sum::<usize>()
        + spec
            .env
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>();
    assert!(size > MAX_SPEC_BYTES - 100, "{size}");

    let job = server.client.submit(&spec).await.unwrap();
    assert_eq!(job.spec, spec);
    assert_eq!(server.client.get(job.id).await.unwrap().spec, spec);
    let followed = common::follow(&server.client, &job, 1).await;
    assert_eq!(*followed.final_state(), hodei_core::JobState::Succeeded);
    server.stop().await;
}
