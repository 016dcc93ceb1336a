//! The gRPC surface: bad input gets a clear status naming the field, tokens are one-time.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::{Behaviour, TaskProvider, TestServer, follow};
use hodei_core::{FailureReason, JobSpec, JobState, ProcessExit};
use hodei_proto::v1::{
    self as pb, job_result, job_service_client::JobServiceClient, process_exit, server_message,
    worker_message, worker_service_client::WorkerServiceClient,
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
        .list_jobs(pb::ListJobsRequest::default())
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
        .list_jobs(pb::ListJobsRequest {
            limit: 1_000_000,
            ..Default::default()
        })
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

/// The error that ends a worker's stream, skipping the messages before it.
async fn stream_error(stream: &mut tonic::Streaming<pb::ServerMessage>) -> tonic::Status {
    loop {
        match stream.next().await {
            Some(Ok(_)) => {}
            Some(Err(status)) => return status,
            None => panic!("stream ended without an error"),
        }
    }
}

/// Submits `spec` to a server (data in `dir`) whose provider starts nothing, and attaches
/// a fake worker registered with the launch's token in its place.
async fn job_with_fake_worker(
    dir: &std::path::Path,
    spec: &JobSpec,
) -> (
    TestServer,
    hodei_core::Job,
    Outbound,
    tonic::Streaming<pb::ServerMessage>,
) {
    let provider = TaskProvider::new(Behaviour::NeverStart);
    let server = TestServer::start(provider.clone(), dir).await;
    let job = server.client.submit(spec).await.unwrap();
    let launch = provider.next_launch().await;
    let (tx, stream) = attach(
        &server.worker_url,
        register(
            &launch.worker_id.to_string(),
            launch.otp_token.as_deref().unwrap(),
        ),
    )
    .await;
    (server, job, tx, stream.unwrap())
}

fn register(worker_id: &str, token: &str) -> worker_message::Message {
    worker_message::Message::Register(pb::Register {
        worker_id: worker_id.into(),
        credential: token.into(),
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

    let (_tx, wrong) = attach(&server.worker_url, register(&worker_id, "not-the-token")).await;
    assert_names(&wrong.unwrap_err(), Code::Unauthenticated, "credential");
    let other_worker = uuid::Uuid::new_v4().to_string();
    let (_tx, mismatched) = attach(
        &server.worker_url,
        register(&other_worker, launch.otp_token.as_deref().unwrap()),
    )
    .await;
    assert_names(
        &mismatched.unwrap_err(),
        Code::Unauthenticated,
        "no registration is expected for this worker",
    );

    let (_tx, accepted) = attach(
        &server.worker_url,
        register(&worker_id, launch.otp_token.as_deref().unwrap()),
    )
    .await;
    let mut accepted = accepted.unwrap();
    let first = accepted.next().await.unwrap().unwrap();
    assert!(
        matches!(first.message, Some(server_message::Message::Assignment(_))),
        "{first:?}"
    );

    let (_tx, replayed) = attach(
        &server.worker_url,
        register(&worker_id, launch.otp_token.as_deref().unwrap()),
    )
    .await;
    assert_names(
        &replayed.unwrap_err(),
        Code::Unauthenticated,
        "already used",
    );
    drop(accepted);
    server.stop().await;
}

#[tokio::test]
async fn a_platform_identity_is_checked_by_the_provider_and_retried_while_it_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let mut provider = TaskProvider::new(Behaviour::NeverStart);
    provider.platform_identity = true;
    let server = TestServer::start(provider.clone(), dir.path()).await;
    server
        .client
        .submit(&hodei_core::JobSpec::builder("true").build().unwrap())
        .await
        .unwrap();
    let launch = provider.next_launch().await;
    assert_eq!(launch.otp_token, None, "no secret is issued");
    let worker_id = launch.worker_id.to_string();
    let credential = format!("pod-token-{worker_id}");

    let (_tx, unavailable) = attach(&server.worker_url, register(&worker_id, &credential)).await;
    assert_names(
        &unavailable.unwrap_err(),
        Code::Unavailable,
        "cannot be checked now",
    );
    let (_tx, forged) = attach(&server.worker_url, register(&worker_id, "pod-token-other")).await;
    let forged = forged.unwrap_err();
    assert_names(&forged, Code::Unauthenticated, "identity was refused");
    assert!(!forged.message().contains("pod-token-other"), "{forged:?}");

    let (_tx, accepted) = attach(&server.worker_url, register(&worker_id, &credential)).await;
    let mut accepted = accepted.unwrap();
    let first = accepted.next().await.unwrap().unwrap();
    assert!(
        matches!(first.message, Some(server_message::Message::Assignment(_))),
        "{first:?}"
    );
    let (_tx, replayed) = attach(&server.worker_url, register(&worker_id, &credential)).await;
    assert_names(
        &replayed.unwrap_err(),
        Code::Unauthenticated,
        "already used",
    );
    assert_eq!(
        provider.verified.lock().unwrap().len(),
        3,
        "a replay is not even checked"
    );
    drop(accepted);
    server.stop().await;
}

#[tokio::test]
async fn a_worker_retries_while_its_identity_cannot_be_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut provider = TaskProvider::new(Behaviour::RunWorker);
    provider.platform_identity = true;
    let server = TestServer::start(provider.clone(), dir.path()).await;
    let job = server
        .client
        .submit(&hodei_core::JobSpec::builder("true").build().unwrap())
        .await
        .unwrap();
    let followed = follow(&server.client, &job, 0).await;
    assert_eq!(followed.final_state(), &JobState::Succeeded);
    assert_eq!(
        provider.verified.lock().unwrap().len(),
        2,
        "refused once, then accepted"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_worker_stream_must_start_with_a_valid_registration() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::NeverStart), dir.path()).await;
    let (_tx, heartbeat_first) = attach(
        &server.worker_url,
        worker_message::Message::Heartbeat(pb::Heartbeat {}),
    )
    .await;
    assert_names(
        &heartbeat_first.unwrap_err(),
        Code::InvalidArgument,
        "register",
    );
    let (_tx, bad_id) = attach(&server.worker_url, register("not-a-uuid", "x")).await;
    assert_names(&bad_id.unwrap_err(), Code::InvalidArgument, "worker_id");
    server.stop().await;
}

#[tokio::test]
async fn gaps_in_output_are_refused_and_the_job_fails() {
    let dir = tempfile::tempdir().unwrap();
    let spec = JobSpec::builder("true").build().unwrap();
    let (server, job, tx, mut stream) = job_with_fake_worker(dir.path(), &spec).await;
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
    let status = stream_error(&mut stream).await;
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

/// How the hand-driven worker below ends its job.
enum Ending {
    /// Wait for the job's timeout, then report this exit.
    TimeOut(process_exit::Kind),
    /// Cancel the job, then report this exit.
    Cancel(process_exit::Kind),
    /// Report that the command could not be started.
    NotStarted,
}

/// Runs one job with a worker driven by hand over the raw protocol and returns the final
/// state as `get` and `follow` show it: what the worker reported must survive both.
async fn final_state_after(ending: Ending) -> JobState {
    let dir = tempfile::tempdir().unwrap();
    let spec = JobSpec::builder("sleep")
        .args(["30"])
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let (server, job, tx, mut stream) = job_with_fake_worker(dir.path(), &spec).await;
    let mut next = async || {
        tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
            .await
            .expect("the server went quiet")
            .expect("the server closed the stream")
            .unwrap()
            .message
            .expect("an empty message")
    };
    assert!(matches!(
        next().await,
        server_message::Message::Assignment(_)
    ));

    let (expected_stop, outcome) = match ending {
        Ending::TimeOut(kind) => (
            Some(pb::StopReason::TimedOut),
            job_result::Outcome::Exit(pb::ProcessExit { kind: Some(kind) }),
        ),
        Ending::Cancel(kind) => {
            server.client.cancel(job.id).await.unwrap();
            (
                Some(pb::StopReason::Cancelled),
                job_result::Outcome::Exit(pb::ProcessExit { kind: Some(kind) }),
            )
        }
        Ending::NotStarted => (
            None,
            job_result::Outcome::NotStarted(pb::CommandNotStarted {
                message: "sleep: not found".into(),
            }),
        ),
    };
    if let Some(expected) = expected_stop {
        let server_message::Message::Stop(stop) = next().await else {
            panic!("expected a stop");
        };
        assert_eq!(stop.reason(), expected);
    }
    tx.send(pb::WorkerMessage {
        message: Some(worker_message::Message::Result(pb::JobResult {
            outcome: Some(outcome),
            last_seq: 0,
        })),
    })
    .await
    .unwrap();
    assert!(matches!(
        next().await,
        server_message::Message::ResultAccepted(_)
    ));

    let followed = common::follow(&server.client, &job, 0).await;
    let got = server.client.get(job.id).await.unwrap();
    assert_eq!(&got.state, followed.final_state());
    server.stop().await;
    got.state
}

#[tokio::test]
async fn the_signal_that_ended_a_timed_out_job_reaches_the_client() {
    for (kind, exit) in [
        (process_exit::Kind::Signal(15), ProcessExit::Signal(15)),
        (process_exit::Kind::Signal(9), ProcessExit::Signal(9)),
    ] {
        let state = final_state_after(Ending::TimeOut(kind)).await;
        assert_eq!(
            state,
            JobState::TimedOut {
                timeout: std::time::Duration::from_millis(300),
                exit: Some(exit),
            }
        );
    }
}

#[tokio::test]
async fn how_a_cancelled_job_ended_reaches_the_client() {
    let state = final_state_after(Ending::Cancel(process_exit::Kind::Code(143))).await;
    assert_eq!(
        state,
        JobState::Cancelled {
            exit: Some(ProcessExit::Code(143))
        }
    );
}

#[tokio::test]
async fn a_command_that_did_not_start_reaches_the_client_as_such() {
    let state = final_state_after(Ending::NotStarted).await;
    assert_eq!(
        state,
        JobState::Failed {
            reason: FailureReason::CommandNotStarted {
                message: "sleep: not found".into()
            }
        }
    );
}

#[tokio::test]
async fn a_malformed_worker_message_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = JobSpec::builder("true").build().unwrap();
    let (server, job, tx, mut stream) = job_with_fake_worker(dir.path(), &spec).await;
    stream.next().await.unwrap().unwrap();
    tx.send(pb::WorkerMessage {
        message: Some(worker_message::Message::Result(pb::JobResult {
            outcome: Some(job_result::Outcome::Exit(pb::ProcessExit { kind: None })),
            last_seq: 0,
        })),
    })
    .await
    .unwrap();
    let status = stream_error(&mut stream).await;
    assert_names(&status, Code::InvalidArgument, "result.exit.kind");
    let followed = common::follow(&server.client, &job, 0).await;
    let JobState::Failed {
        reason: FailureReason::WorkerLost { message },
    } = followed.final_state()
    else {
        panic!("{:?}", followed.final_state());
    };
    assert!(message.contains("result.exit.kind"), "{message}");
    server.stop().await;
}

fn resume(worker_id: &str, credential: &str) -> worker_message::Message {
    worker_message::Message::Resume(pb::Resume {
        worker_id: worker_id.into(),
        resume_credential: credential.into(),
    })
}

fn output(seqs: std::ops::RangeInclusive<u64>) -> pb::WorkerMessage {
    pb::WorkerMessage {
        message: Some(worker_message::Message::Output(pb::OutputBatch {
            chunks: seqs
                .map(|seq| pb::OutputChunk {
                    seq,
                    stream: pb::OutputStream::Stdout.into(),
                    data: format!("{seq}\n").into_bytes(),
                    emitted_at_unix_us: 0,
                })
                .collect(),
        })),
    }
}

/// Reads the stream until a message `pick` accepts.
async fn next_matching<T>(
    stream: &mut tonic::Streaming<pb::ServerMessage>,
    pick: impl Fn(server_message::Message) -> Option<T>,
) -> T {
    loop {
        let message = stream.next().await.unwrap().unwrap().message.unwrap();
        if let Some(found) = pick(message) {
            return found;
        }
    }
}

#[tokio::test]
async fn a_worker_resumes_with_its_credential_and_resends_after_the_last_stored_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let provider = TaskProvider::new(Behaviour::NeverStart);
    let server = TestServer::start(provider.clone(), dir.path()).await;
    let job = server.client.submit(&common::sh("true")).await.unwrap();
    let launch = provider.next_launch().await;
    let worker_id = launch.worker_id.to_string();
    let (tx, stream) = attach(
        &server.worker_url,
        register(&worker_id, launch.otp_token.as_deref().unwrap()),
    )
    .await;
    let mut stream = stream.unwrap();
    let credential = next_matching(&mut stream, |m| match m {
        server_message::Message::Assignment(a) => Some(a.resume_credential),
        _ => None,
    })
    .await;
    assert_eq!(credential.len(), 64);
    tx.send(output(1..=2)).await.unwrap();
    next_matching(&mut stream, |m| {
        matches!(m, server_message::Message::Ack(pb::OutputAck { seq: 2 })).then_some(())
    })
    .await;
    drop((tx, stream));

    let (_tx, wrong) = attach(&server.worker_url, resume(&worker_id, &"0".repeat(64))).await;
    assert_names(
        &wrong.unwrap_err(),
        Code::Unauthenticated,
        "resume credential",
    );
    let stranger = uuid::Uuid::new_v4().to_string();
    let (_tx, unknown) = attach(&server.worker_url, resume(&stranger, &credential)).await;
    assert_names(&unknown.unwrap_err(), Code::NotFound, "no running job");

    let (tx, stream) = attach(&server.worker_url, resume(&worker_id, &credential)).await;
    let mut stream = stream.unwrap();
    let resumed = next_matching(&mut stream, |m| match m {
        server_message::Message::Resumed(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(resumed.last_seq, 2);
    assert_ne!(resumed.resume_credential, credential, "renewed on resume");
    let (_tx, replayed) = attach(&server.worker_url, resume(&worker_id, &credential)).await;
    assert_names(
        &replayed.unwrap_err(),
        Code::Unauthenticated,
        "resume credential",
    );

    // Resending a stored chunk is harmless: it is stored once.
    tx.send(output(2..=3)).await.unwrap();
    tx.send(pb::WorkerMessage {
        message: Some(worker_message::Message::Result(pb::JobResult {
            outcome: Some(job_result::Outcome::Exit(pb::ProcessExit {
                kind: Some(process_exit::Kind::Code(0)),
            })),
            last_seq: 3,
        })),
    })
    .await
    .unwrap();
    next_matching(&mut stream, |m| {
        matches!(m, server_message::Message::ResultAccepted(_)).then_some(())
    })
    .await;
    let followed = follow(&server.client, &job, 0).await;
    assert_eq!(followed.final_state(), &JobState::Succeeded);
    assert_eq!(followed.stdout, b"1\n2\n3\n");
    assert_eq!(followed.seqs, [1, 2, 3]);

    let (_tx, ended) = attach(
        &server.worker_url,
        resume(&worker_id, &resumed.resume_credential),
    )
    .await;
    let refused = ended.unwrap_err();
    assert!(
        matches!(refused.code(), Code::NotFound | Code::FailedPrecondition),
        "{refused:?}"
    );
    drop((tx, stream));
    server.stop().await;
}

#[tokio::test]
async fn a_provider_without_placement_or_secrets_refuses_them_at_submit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::NeverStart), dir.path()).await;
    let mut raw = JobServiceClient::connect(server.url.clone()).await.unwrap();

    let mut secret = spec("true");
    secret.secret_env = HashMap::from([(
        "DB_PASSWORD".to_owned(),
        pb::SecretKeyRef {
            secret: "db".into(),
            key: "password".into(),
        },
    )]);
    let status = submit(&mut raw, Some(secret)).await;
    assert_names(&status, Code::InvalidArgument, "secret_env");
    assert!(
        status
            .message()
            .contains("secrets are only available on the kubernetes provider"),
        "{status:?}"
    );
    let mut placed = spec("true");
    placed.node_selector = HashMap::from([("pool".to_owned(), "batch".to_owned())]);
    assert_names(
        &submit(&mut raw, Some(placed)).await,
        Code::InvalidArgument,
        "node_selector is only available on the kubernetes provider",
    );
    let mut classed = spec("true");
    classed.resource_class = Some("gpu".into());
    assert_names(
        &submit(&mut raw, Some(classed)).await,
        Code::InvalidArgument,
        "class",
    );
}
