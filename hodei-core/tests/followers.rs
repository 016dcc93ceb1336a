//! Bounds on what clients hold open or ask for: `FollowJob` streams per connection and in
//! total, and `ListJobs` answers within the message limit.

#![allow(clippy::unwrap_used)]

mod common;

use std::{sync::Arc, time::Duration};

use common::{Behaviour, TaskProvider, serve_in_background};
use hodei_core::{
    HodeiClient, HodeiServer, JobSpec,
    job::limits::{MAX_ARG_BYTES, MAX_COMMAND_LINE_BYTES},
    server::{FollowLimits, GrpcLimits, MIN_MESSAGE_BYTES},
};
use hodei_test_fixtures::wait_until;
use tonic::Code;

async fn server(
    dir: &std::path::Path,
    follow_limits: FollowLimits,
    grpc_limits: GrpcLimits,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let server = HodeiServer::builder(dir)
        .shared_provider(Arc::new(TaskProvider::new(Behaviour::NeverStart)))
        .listen_addr("127.0.0.1:0".parse().unwrap())
        .worker_listen_addr("127.0.0.1:0".parse().unwrap())
        .follow_limits(follow_limits)
        .grpc_limits(grpc_limits)
        .start()
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let (stop, _task) = serve_in_background(server);
    (url, stop)
}

#[tokio::test]
async fn follows_over_a_cap_are_refused_naming_it_and_a_closed_follow_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let limits = FollowLimits {
        max_followers: 3,
        max_followers_per_connection: 2,
        ..FollowLimits::default()
    };
    let (url, _stop) = server(dir.path(), limits, GrpcLimits::default()).await;
    let first = HodeiClient::connect(url.clone()).await.unwrap();
    let second = HodeiClient::connect(url.clone()).await.unwrap();
    // Never started, so its follows stay open.
    let job = first
        .submit(&JobSpec::builder("true").build().unwrap())
        .await
        .unwrap();

    let a = first.follow(job.id).live().await.unwrap();
    let _b = first.follow(job.id).live().await.unwrap();
    let refused = first.follow(job.id).live().await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::ResourceExhausted), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("HODEI_MAX_FOLLOWERS_PER_CONNECTION"),
        "{refused}"
    );
    // Unary calls still go through on the busy connection.
    first.get(job.id).await.unwrap();

    let _c = second.follow(job.id).live().await.unwrap();
    let refused = second.follow(job.id).live().await.unwrap_err();
    assert_eq!(refused.code(), Some(Code::ResourceExhausted), "{refused}");
    assert!(
        refused.to_string().contains("(HODEI_MAX_FOLLOWERS)"),
        "{refused}"
    );

    // A client that drops its stream gives its place back.
    drop(a);
    let d = wait_until(Duration::from_secs(5), "a freed follow slot", || async {
        first.follow(job.id).live().await.ok()
    })
    .await
    .unwrap();
    drop(d);
}

#[tokio::test]
async fn a_job_list_too_large_for_one_answer_holds_the_newest_jobs_and_says_it_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let grpc = GrpcLimits {
        job_api_max_message_bytes: MIN_MESSAGE_BYTES,
        ..GrpcLimits::default()
    };
    let (url, _stop) = server(dir.path(), FollowLimits::default(), grpc).await;
    let client = HodeiClient::connect(url).await.unwrap();
    // Each about 0.9 MiB: three fit in a 3 MiB answer, four do not.
    let args = vec!["a".repeat(MAX_ARG_BYTES); MAX_COMMAND_LINE_BYTES / MAX_ARG_BYTES - 1];
    let mut submitted = Vec::new();
    for _ in 0..5 {
        let spec = JobSpec::builder("echo").args(args.clone()).build().unwrap();
        submitted.push(client.submit(&spec).await.unwrap().id);
    }

    let listed = client.list().await.unwrap();
    assert!(listed.truncated);
    let ids: Vec<_> = listed.jobs.iter().map(|job| job.id).collect();
    assert_eq!(ids, [submitted[4], submitted[3], submitted[2]]);
    let rest = client
        .list()
        .page_token(listed.next_page_token.expect("the list goes on"))
        .await
        .unwrap();
    let ids: Vec<_> = rest.jobs.iter().map(|job| job.id).collect();
    assert_eq!(
        ids,
        [submitted[1], submitted[0]],
        "the next page starts after the cut"
    );
    assert_eq!(rest.next_page_token, None);

    let small = client.list().page_size(3).await.unwrap();
    assert!(!small.truncated);
    assert_eq!(small.jobs.len(), 3);
}
