//! `ListJobs` over the wire: filters by state and label, pages that continue where the
//! last one stopped, and refusals that name the field.

#![allow(clippy::unwrap_used)]

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{Behaviour, TaskProvider, TestServer, follow};
use hodei_core::{JobId, JobPhase, JobSpec, JobState};
use hodei_test_fixtures::wait_until;
use tonic::Code;

fn labelled(script: &str, team: &str) -> JobSpec {
    JobSpec::builder("sh")
        .args(["-c", script])
        .labels([("team".to_owned(), team.to_owned())].into())
        .build()
        .unwrap()
}

#[tokio::test]
async fn jobs_are_listed_by_state_and_label_a_page_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let client = &server.client;
    // Oldest first: three finished jobs of team a, one of team b; two running of team a.
    let mut finished_a = Vec::new();
    for team in ["a", "b", "a", "a"] {
        let job = client.submit(&labelled("exit 0", team)).await.unwrap();
        assert_eq!(
            follow(client, &job, 0).await.final_state(),
            &JobState::Succeeded
        );
        if team == "a" {
            finished_a.push(job.id);
        }
    }
    let mut running = Vec::new();
    for _ in 0..2 {
        running.push(client.submit(&labelled("sleep 60", "a")).await.unwrap().id);
    }
    wait_until(Duration::from_secs(10), "both jobs run", || async {
        client
            .list()
            .state(JobPhase::Running)
            .await
            .unwrap()
            .jobs
            .len()
            == 2
    })
    .await
    .unwrap();

    let ids = |jobs: &[hodei_core::Job]| jobs.iter().map(|j| j.id).collect::<Vec<JobId>>();
    let now_running = client.list().state(JobPhase::Running).await.unwrap();
    assert_eq!(ids(&now_running.jobs), [running[1], running[0]]);
    assert_eq!(now_running.next_page_token, None);

    // Finished jobs of team a, two per page, newest first, each once.
    let query = || {
        client
            .list()
            .states([JobPhase::Succeeded, JobPhase::Failed])
            .label_selector("team=a")
            .page_size(2)
    };
    let first = query().await.unwrap();
    assert_eq!(ids(&first.jobs), [finished_a[2], finished_a[1]]);
    let token = first.next_page_token.expect("a second page");
    let second = query().page_token(token).await.unwrap();
    assert_eq!(ids(&second.jobs), [finished_a[0]]);
    assert_eq!(second.next_page_token, None);

    // Every job of the list, across pages of one, none twice.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let mut request = client.list().page_size(1);
        if let Some(token) = token.take() {
            request = request.page_token(token);
        }
        let page = request.await.unwrap();
        seen.extend(ids(&page.jobs));
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 6);
    assert_eq!(&seen[..2], [running[1], running[0]]);

    let none = client.list().label_selector("team in (c,d)").await.unwrap();
    assert!(none.jobs.is_empty());
    for id in running {
        client.cancel(id).await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_list_requests_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(TaskProvider::new(Behaviour::RunWorker), dir.path()).await;
    let client = &server.client;
    let cases = [
        (client.list().page_token("not-a-token"), "page_token"),
        (client.list().label_selector("team in ()"), "label_selector"),
        (client.list().label_selector("team=a,,x"), "label_selector"),
        (client.list().page_size(1001), "page_size"),
    ];
    for (request, field) in cases {
        let error = request.await.unwrap_err();
        assert_eq!(error.code(), Some(Code::InvalidArgument), "{error}");
        assert!(
            error.to_string().starts_with(&format!("invalid {field}: ")),
            "{error}"
        );
    }
    let error = client.list().page_size(1001).await.unwrap_err();
    assert!(error.to_string().contains("maximum of 1000"), "{error}");
    server.stop().await;
}
