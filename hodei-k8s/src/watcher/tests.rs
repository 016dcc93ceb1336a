//! The watcher against a mocked API server: relists, watch failures and timers.

use serde_json::{Value, json};

use super::*;
use crate::event::{FailFastReason, PodEventKind};
use crate::test_support::{Handle, PATIENCE, json, mock_client, next_request, query, raw, status};

fn pod(name: &str, rv: &str, status: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "jobs",
            "uid": format!("uid-{name}"),
            "resourceVersion": rv,
            "labels": {"hodei.io/managed": "true"},
            "annotations": {"hodei.io/worker-id": name.trim_start_matches("hodei-worker-")}
        },
        "spec": {"containers": [{"name": "worker", "image": "img"}]},
        "status": status
    })
}

fn container(state: Value) -> Value {
    json!([{"name": "worker", "image": "img", "imageID": "", "ready": false, "restartCount": 0, "state": state}])
}

fn scheduled() -> Value {
    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]})
}

fn running() -> Value {
    json!({"phase": "Running", "containerStatuses": container(json!({"running": {"startedAt": "2025-01-01T10:00:00Z"}}))})
}

fn exited(code: i32) -> Value {
    json!({
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "containerStatuses": container(json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}}))
    })
}

fn list(rv: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": rv}, "items": items})
}

fn watch_body(events: &[(&str, Value)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (kind, object) in events {
        body.extend(serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json"));
        body.push(b'\n');
    }
    body
}

/// Asserts the next request is a list (not a watch) of managed pods in `jobs`.
async fn expect_list(
    handle: &mut Handle,
) -> tower_test::mock::SendResponse<http::Response<kube::client::Body>> {
    let (request, send) = next_request(handle).await;
    assert_eq!(request.method(), http::Method::GET);
    assert_eq!(
        request.uri().path(),
        "/api/v1/namespaces/jobs/pods",
        "one collection, never per pod"
    );
    let q = query(&request);
    assert!(
        q.contains(&"labelSelector=hodei.io%2Fmanaged%3Dtrue".to_owned()),
        "{q:?}"
    );
    assert!(
        !q.contains(&"watch=true".to_owned()),
        "expected a list, got {q:?}"
    );
    send
}

/// Asserts the next request is a watch from `rv`.
async fn expect_watch(
    handle: &mut Handle,
    rv: &str,
) -> tower_test::mock::SendResponse<http::Response<kube::client::Body>> {
    let (request, send) = next_request(handle).await;
    assert_eq!(
        request.uri().path(),
        "/api/v1/namespaces/jobs/pods",
        "one collection, never per pod"
    );
    let q = query(&request);
    assert!(
        q.contains(&"watch=true".to_owned()),
        "expected a watch, got {q:?}"
    );
    assert!(q.contains(&format!("resourceVersion={rv}")), "{q:?}");
    assert!(
        q.contains(&"labelSelector=hodei.io%2Fmanaged%3Dtrue".to_owned()),
        "{q:?}"
    );
    send
}

async fn next_event(rx: &mut mpsc::Receiver<PodEvent>) -> (String, PodEventKind) {
    let event = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("an event within the patience")
        .expect("watcher alive");
    (event.pod_name, event.kind)
}

fn spawn(client: Client, config: WatcherConfig) -> (PodWatcher, mpsc::Receiver<PodEvent>) {
    PodWatcher::spawn(client, "jobs", config)
}

#[tokio::test]
async fn gone_watch_relists_and_still_reports_the_terminal_state() {
    let (client, mut handle) = mock_client();
    let (_watcher, mut rx) = spawn(client, WatcherConfig::default());

    expect_list(&mut handle).await.send_response(json(
        200,
        &list(
            "100",
            vec![
                pod("hodei-worker-a", "10", running()),
                pod("hodei-worker-b", "11", running()),
            ],
        ),
    ));
    assert_eq!(
        next_event(&mut rx).await,
        ("hodei-worker-a".into(), PodEventKind::Running)
    );
    assert_eq!(
        next_event(&mut rx).await,
        ("hodei-worker-b".into(), PodEventKind::Running)
    );

    // The watch fails with 410 Gone: the resource version is too old.
    expect_watch(&mut handle, "100").await.send_response(raw(
        200,
        watch_body(&[(
            "ERROR",
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "too old resource version: 100 (250)", "reason": "Expired", "code": 410}),
        )]),
    ));

    // Meanwhile `a` finished and `b` was deleted; only a relist can tell.
    expect_list(&mut handle).await.send_response(json(
        200,
        &list("250", vec![pod("hodei-worker-a", "240", exited(0))]),
    ));
    let _pending_watch = expect_watch(&mut handle, "250").await;

    assert_eq!(
        next_event(&mut rx).await,
        (
            "hodei-worker-a".into(),
            PodEventKind::Succeeded { exit_code: 0 }
        )
    );
    assert_eq!(
        next_event(&mut rx).await,
        ("hodei-worker-b".into(), PodEventKind::Deleted)
    );
}

#[tokio::test]
async fn failed_watch_start_is_retried_and_events_flow_once_each() {
    let (client, mut handle) = mock_client();
    let (_watcher, mut rx) = spawn(client, WatcherConfig::default());

    expect_list(&mut handle)
        .await
        .send_response(json(200, &list("5", vec![])));
    expect_watch(&mut handle, "5").await.send_response(status(
        500,
        "InternalError",
        "etcd leader changed",
    ));
    // Retried from the same resource version: no relist needed.
    expect_watch(&mut handle, "5").await.send_response(raw(
        200,
        watch_body(&[
            ("ADDED", pod("hodei-worker-x", "6", scheduled())),
            ("MODIFIED", pod("hodei-worker-x", "7", running())),
            ("MODIFIED", pod("hodei-worker-x", "8", running())),
            ("MODIFIED", pod("hodei-worker-x", "9", exited(3))),
            ("DELETED", pod("hodei-worker-x", "10", exited(3))),
        ]),
    ));
    // The stream ended normally: the watch resumes from the last version seen.
    let _pending_watch = expect_watch(&mut handle, "10").await;

    let mut kinds = Vec::new();
    for _ in 0..4 {
        let (name, kind) = next_event(&mut rx).await;
        assert_eq!(name, "hodei-worker-x");
        kinds.push(kind);
    }
    assert_eq!(
        kinds,
        vec![
            PodEventKind::Scheduled,
            PodEventKind::Running,
            PodEventKind::Failed {
                exit_code: Some(3),
                reason: "Error".into(),
                message: String::new()
            },
            PodEventKind::Deleted,
        ]
    );
    assert!(rx.try_recv().is_err(), "no duplicate events");
}

#[tokio::test]
async fn pull_grace_expires_on_the_timer_without_new_watch_events() {
    let (client, mut handle) = mock_client();
    let config = WatcherConfig {
        image_pull_grace: Duration::from_millis(300),
        recheck_interval: Duration::from_millis(50),
        ..WatcherConfig::default()
    };
    let (_watcher, mut rx) = spawn(client, config);
    let pulling = json!({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": container(json!({"waiting": {"reason": "ImagePullBackOff",
            "message": "Back-off pulling image \"nope:1\""}}))
    });
    expect_list(&mut handle).await.send_response(json(
        200,
        &list("1", vec![pod("hodei-worker-p", "1", pulling)]),
    ));
    let _pending_watch = expect_watch(&mut handle, "1").await;

    assert_eq!(
        next_event(&mut rx).await,
        ("hodei-worker-p".into(), PodEventKind::PullingImage)
    );
    let started = Instant::now();
    assert_eq!(
        next_event(&mut rx).await,
        (
            "hodei-worker-p".into(),
            PodEventKind::FailFast {
                reason: FailFastReason::ImagePullBackOff,
                message: "Back-off pulling image \"nope:1\"".into(),
            }
        )
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn dropping_the_receiver_ends_the_watch() {
    let (client, mut handle) = mock_client();
    let (watcher, rx) = spawn(client, WatcherConfig::default());
    let _pending_list = expect_list(&mut handle).await;
    drop(rx);
    tokio::time::timeout(PATIENCE, async {
        while !watcher.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the watcher task ends");
}

/// Waits until the watcher's health satisfies `done`.
async fn health_until(watcher: &PodWatcher, done: impl Fn(&WatchHealth) -> bool) -> WatchHealth {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let health = watcher.health();
        if done(&health) {
            return health;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health stayed {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn health_reports_a_failing_watch_from_its_first_failure_until_it_recovers() {
    let (client, mut handle) = mock_client();
    let (watcher, _rx) = spawn(client, WatcherConfig::default());
    assert_eq!(watcher.health(), WatchHealth::Ok);

    expect_list(&mut handle).await.send_response(status(
        403,
        "Forbidden",
        "pods is forbidden: User \"hodei\" cannot list resource \"pods\"",
    ));
    let first = health_until(&watcher, |h| matches!(h, WatchHealth::Failing { .. })).await;
    let WatchHealth::Failing { since, error } = first else {
        unreachable!("waited for Failing")
    };
    assert!(error.contains("cannot list resource"), "{error}");

    expect_list(&mut handle)
        .await
        .send_response(status(503, "ServiceUnavailable", "etcd is down"));
    let second = health_until(
        &watcher,
        |h| matches!(h, WatchHealth::Failing { error, .. } if error.contains("etcd")),
    )
    .await;
    assert!(
        matches!(second, WatchHealth::Failing { since: still, .. } if still == since),
        "the failure keeps its start: {second:?}"
    );

    expect_list(&mut handle)
        .await
        .send_response(json(200, &list("5", vec![])));
    health_until(&watcher, |h| *h == WatchHealth::Ok).await;
    let _pending_watch = expect_watch(&mut handle, "5").await;
}
