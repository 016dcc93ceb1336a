//! Request shapes and error mapping of `WorkerPods`, against a mocked API server.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Toleration;
use serde_json::{Value, json};

use super::*;
use crate::pod_spec::WorkerResources;
use crate::test_support::{PATIENCE, body_json, json, mock_client, next_request, query, status};

fn spec() -> WorkerPodSpec {
    WorkerPodSpec::builder()
        .worker_id("0b7c4c8e-5d0f-4c1b-9a57-1e0f2d3c4b5a")
        .job_id("job-42")
        .namespace("jobs")
        .image("ghcr.io/hodei/worker:1.0")
        .server_address("http://hodei-server.hodei:50051")
        .resources(WorkerResources {
            cpu_request: "250m".into(),
            cpu_limit: "1".into(),
            memory_request: "128Mi".into(),
            memory_limit: "512Mi".into(),
            ephemeral_storage_request: "1Gi".into(),
            ephemeral_storage_limit: "10Gi".into(),
            tmp_size_limit: "1Gi".into(),
            working_dir_size_limit: "8Gi".into(),
        })
        .active_deadline_seconds(3600)
        .env(BTreeMap::from([("RUST_LOG".to_owned(), "info".to_owned())]))
        .image_pull_secrets(vec!["regcred".to_owned()])
        .node_selector(BTreeMap::from([("pool".to_owned(), "jobs".to_owned())]))
        .tolerations(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("jobs".into()),
            effect: Some("NoSchedule".into()),
            toleration_seconds: None,
        }])
        .working_dir("/work")
        .extra_labels(BTreeMap::from([("team".to_owned(), "data".to_owned())]))
        .build()
}

const POD_NAME: &str = "hodei-worker-0b7c4c8e-5d0f-4c1b-9a57-1e0f2d3c4b5a";

fn expected_pod_body() -> Value {
    let security = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}
    });
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": POD_NAME,
            "namespace": "jobs",
            "labels": {
                "app": "hodei-jobs-worker",
                "hodei.io/managed": "true",
                "hodei.io/provider": "kubernetes",
                "hodei.io/worker-id": "0b7c4c8e-5d0f-4c1b-9a57-1e0f2d3c4b5a",
                "hodei.io/job-id": "job-42",
                "team": "data"
            },
            "annotations": {
                "hodei.io/worker-id": "0b7c4c8e-5d0f-4c1b-9a57-1e0f2d3c4b5a",
                "hodei.io/job-id": "job-42"
            }
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 3600,
            "serviceAccountName": "hodei-jobs-worker",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "imagePullSecrets": [{"name": "regcred"}],
            "nodeSelector": {"pool": "jobs"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "jobs", "effect": "NoSchedule"}],
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 1000,
                "runAsGroup": 1000,
                "fsGroup": 1000,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "volumes": [
                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                {"name": "workspace", "emptyDir": {"sizeLimit": "8Gi"}},
                {"name": "hodei-identity", "projected": {
                    "defaultMode": 256,
                    "sources": [{"serviceAccountToken": {
                        "audience": "hodei", "expirationSeconds": 600, "path": "token"
                    }}]
                }}
            ],
            "containers": [{
                "name": "worker",
                "image": "ghcr.io/hodei/worker:1.0",
                "imagePullPolicy": "IfNotPresent",
                "workingDir": "/work",
                "env": [
                    {"name": "HODEI_SERVER_ADDRESS", "value": "http://hodei-server.hodei:50051"},
                    {"name": "HODEI_WORKER_ID", "value": "0b7c4c8e-5d0f-4c1b-9a57-1e0f2d3c4b5a"},
                    {"name": "HODEI_WORKER_TOKEN_FILE", "value": "/var/run/secrets/hodei/token"},
                    {"name": "HODEI_WORK_DIR", "value": "/work"},
                    {"name": "RUST_LOG", "value": "info"}
                ],
                "resources": {
                    "requests": {"cpu": "250m", "memory": "128Mi", "ephemeral-storage": "1Gi"},
                    "limits": {"cpu": "1", "memory": "512Mi", "ephemeral-storage": "10Gi"}
                },
                "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "workspace", "mountPath": "/work"},
                    {"name": "hodei-identity", "mountPath": "/var/run/secrets/hodei", "readOnly": true}
                ],
                "securityContext": security
            }]
        }
    })
}

#[tokio::test]
async fn create_posts_the_restricted_worker_pod() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let (request, send) = next_request(&mut handle).await;
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri().path(), "/api/v1/namespaces/jobs/pods");
        let body = body_json(request).await;
        assert_eq!(body, expected_pod_body());
        let mut stored = body;
        stored["metadata"]["uid"] = json!("uid-1");
        stored["metadata"]["resourceVersion"] = json!("7");
        send.send_response(json(201, &stored));
    });
    let pod = pods.create(&spec()).await.expect("created");
    server.await.expect("server assertions hold");
    assert_eq!(pod.metadata.uid.as_deref(), Some("uid-1"));
    assert_eq!(pod.metadata.name.as_deref(), Some(POD_NAME));
}

#[tokio::test]
async fn quota_refusal_maps_to_quota_exceeded() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let (_, send) = next_request(&mut handle).await;
        send.send_response(status(
            403,
            "Forbidden",
            &format!("pods \"{POD_NAME}\" is forbidden: exceeded quota: worker-quota, requested: pods=1, used: pods=10, limited: pods=10"),
        ));
    });
    let err = pods.create(&spec()).await.expect_err("quota refuses");
    server.await.expect("server ran");
    match err {
        Error::QuotaExceeded { message, .. } => {
            assert!(message.contains("worker-quota"), "{message}")
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn admission_refusal_is_forbidden_and_conflict_is_already_exists() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let (_, send) = next_request(&mut handle).await;
        send.send_response(status(
            403,
            "Forbidden",
            "pods is forbidden: violates PodSecurity \"restricted:latest\": runAsNonRoot != true",
        ));
        let (_, send) = next_request(&mut handle).await;
        send.send_response(status(
            409,
            "AlreadyExists",
            &format!("pods \"{POD_NAME}\" already exists"),
        ));
    });
    assert!(matches!(
        pods.create(&spec()).await,
        Err(Error::Forbidden { .. })
    ));
    assert!(matches!(
        pods.create(&spec()).await,
        Err(Error::AlreadyExists { ref name, .. }) if name == POD_NAME
    ));
    server.await.expect("server ran");
}

fn quota_conflict() -> http::Response<kube::client::Body> {
    status(
        409,
        "Conflict",
        "Operation cannot be fulfilled on resourcequotas \"workers\": the object has been modified; please apply your changes to the latest version and try again",
    )
}

#[tokio::test]
async fn a_create_refused_by_a_quota_write_conflict_is_sent_again() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let mut bodies = Vec::new();
        for _ in 0..2 {
            let (request, send) = next_request(&mut handle).await;
            bodies.push(body_json(request).await);
            send.send_response(quota_conflict());
        }
        let (request, send) = next_request(&mut handle).await;
        let stored = body_json(request).await;
        bodies.push(stored.clone());
        send.send_response(json(201, &stored));
        bodies
    });
    let pod = pods
        .create(&spec())
        .await
        .expect("created on the third send");
    let bodies = server.await.expect("server ran");
    assert_eq!(pod.metadata.name.as_deref(), Some(POD_NAME));
    assert_eq!(bodies.len(), 3);
    assert!(bodies.iter().all(|b| *b == expected_pod_body()));
}

#[tokio::test]
async fn a_conflict_that_persists_is_returned_after_bounded_resends() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let mut sends = 0;
        while let Ok(Some((_, send))) =
            tokio::time::timeout(Duration::from_secs(2), handle.next_request()).await
        {
            sends += 1;
            send.send_response(quota_conflict());
        }
        sends
    });
    let err = pods.create(&spec()).await.expect_err("conflict persists");
    assert!(err.is_conflict() && err.is_transient(), "{err:?}");
    drop(pods);
    assert_eq!(
        server.await.expect("server ran"),
        5,
        "one send and four resends"
    );
}

#[tokio::test]
async fn invalid_spec_is_refused_without_a_request() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let mut bad = spec();
    bad.worker_id = "Not_A_DNS_Name".into();
    assert!(matches!(
        pods.create(&bad).await,
        Err(Error::InvalidSpec(_))
    ));
    let mut elsewhere = spec();
    elsewhere.namespace = "other".into();
    assert!(matches!(
        pods.create(&elsewhere).await,
        Err(Error::InvalidSpec(_))
    ));
    drop(pods);
    let request = tokio::time::timeout(PATIENCE, handle.next_request()).await;
    assert!(
        matches!(request, Ok(None)),
        "no request may reach the API server"
    );
}

#[tokio::test]
async fn delete_sends_the_grace_period() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let (request, send) = next_request(&mut handle).await;
        assert_eq!(request.method(), http::Method::DELETE);
        assert_eq!(
            request.uri().path(),
            format!("/api/v1/namespaces/jobs/pods/{POD_NAME}")
        );
        let body = body_json(request).await;
        assert_eq!(body["gracePeriodSeconds"], 5);
        send.send_response(json(
            200,
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": POD_NAME, "deletionTimestamp": "2025-01-01T10:00:00Z"}
            }),
        ));
    });
    pods.delete(POD_NAME, 5).await.expect("deleted");
    server.await.expect("server assertions hold");
}

#[tokio::test]
async fn delete_of_a_missing_pod_succeeds_but_other_errors_do_not() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let (_, send) = next_request(&mut handle).await;
        send.send_response(status(
            404,
            "NotFound",
            &format!("pods \"{POD_NAME}\" not found"),
        ));
        let (_, send) = next_request(&mut handle).await;
        send.send_response(status(
            500,
            "InternalError",
            "etcdserver: request timed out",
        ));
    });
    pods.delete(POD_NAME, 0)
        .await
        .expect("404 means already gone");
    let err = pods.delete(POD_NAME, 0).await.expect_err("500 is an error");
    assert!(matches!(err, Error::Api { code: 500, .. }), "{err:?}");
    assert!(err.is_transient());
    server.await.expect("server ran");
}

fn listed_pod(name: &str, phase: &str, extra_status: Value, deleting: bool) -> Value {
    let mut status = json!({"phase": phase});
    if let (Some(target), Some(extra)) = (status.as_object_mut(), extra_status.as_object()) {
        target.extend(extra.clone());
    }
    let mut pod = json!({
        "metadata": {
            "name": name,
            "namespace": "jobs",
            "creationTimestamp": "2025-01-01T10:00:00Z",
            "labels": {"hodei.io/managed": "true", "hodei.io/job-id": "job-1"},
            "annotations": {"hodei.io/job-id": "job 1"}
        },
        "spec": {"containers": [{"name": "worker", "image": "img"}]},
        "status": status
    });
    if deleting {
        pod["metadata"]["deletionTimestamp"] = json!("2025-01-01T10:10:00Z");
    }
    pod
}

fn pod_list(items: Vec<Value>, continue_token: Option<&str>) -> Value {
    let mut metadata = json!({"resourceVersion": "99"});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": metadata, "items": items})
}

#[tokio::test]
async fn get_reads_one_pod_and_a_missing_one_is_none() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let (request, send) = next_request(&mut handle).await;
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/jobs/pods/hodei-worker-a"
        );
        send.send_response(json(
            200,
            &listed_pod("hodei-worker-a", "Running", json!({}), false),
        ));
        let (_, send) = next_request(&mut handle).await;
        send.send_response(status(404, "NotFound", "pods \"hodei-worker-b\" not found"));
    });
    let found = pods.get("hodei-worker-a").await.expect("read");
    assert_eq!(
        found.map(|pod| (pod.worker_id, pod.phase)),
        Some(("a".to_owned(), PodPhase::Running))
    );
    assert_eq!(pods.get("hodei-worker-b").await.expect("read"), None);
    server.await.expect("server assertions hold");
}

#[tokio::test]
async fn list_managed_selects_by_label_and_follows_pages() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs");
    let server = tokio::spawn(async move {
        let (request, send) = next_request(&mut handle).await;
        assert_eq!(request.method(), http::Method::GET);
        assert_eq!(request.uri().path(), "/api/v1/namespaces/jobs/pods");
        let q = query(&request);
        assert!(
            q.contains(&"labelSelector=hodei.io%2Fmanaged%3Dtrue".to_owned()),
            "{q:?}"
        );
        assert!(q.contains(&"limit=500".to_owned()), "{q:?}");
        send.send_response(json(200, &pod_list(
            vec![
                listed_pod("hodei-worker-a", "Running", json!({}), false),
                listed_pod("hodei-worker-b", "Succeeded", json!({"containerStatuses": [{
                    "name": "worker", "image": "img", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "finishedAt": "2025-01-01T10:05:00Z"}}
                }]}), true),
            ],
            Some("page-2"),
        )));
        let (request, send) = next_request(&mut handle).await;
        let q = query(&request);
        assert!(q.contains(&"continue=page-2".to_owned()), "{q:?}");
        assert!(
            q.contains(&"labelSelector=hodei.io%2Fmanaged%3Dtrue".to_owned()),
            "{q:?}"
        );
        send.send_response(json(200, &pod_list(
            vec![listed_pod("hodei-worker-c", "Failed", json!({
                "reason": "Evicted",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": "2025-01-01T10:07:00Z"}]
            }), false)],
            None,
        )));
    });
    let listed = pods.list_managed().await.expect("listed");
    server.await.expect("server assertions hold");

    let at = |secs: u64| Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_725_600 + secs));
    assert_eq!(
        listed,
        vec![
            ManagedPod {
                name: "hodei-worker-a".into(),
                worker_id: "a".into(),
                job_id: Some("job 1".into()),
                phase: PodPhase::Running,
                created_at: at(0),
                finished_at: None,
                deleting: false,
            },
            ManagedPod {
                name: "hodei-worker-b".into(),
                worker_id: "b".into(),
                job_id: Some("job 1".into()),
                phase: PodPhase::Succeeded,
                created_at: at(0),
                finished_at: at(300),
                deleting: true,
            },
            ManagedPod {
                name: "hodei-worker-c".into(),
                worker_id: "c".into(),
                job_id: Some("job 1".into()),
                phase: PodPhase::Failed,
                created_at: at(0),
                finished_at: at(420),
                deleting: false,
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn writes_are_rate_limited() {
    let (client, mut handle) = mock_client();
    let pods = WorkerPods::new(client, "jobs")
        .with_writes_per_second(NonZeroU32::new(1).expect("non-zero"));
    let server = tokio::spawn(async move {
        let mut arrivals = Vec::new();
        for _ in 0..3 {
            let (_, send) = next_request(&mut handle).await;
            arrivals.push(tokio::time::Instant::now());
            send.send_response(status(404, "NotFound", "gone"));
        }
        arrivals
    });
    for _ in 0..3 {
        pods.delete(POD_NAME, 0).await.expect("deleted");
    }
    let arrivals = server.await.expect("server ran");
    // One free permit, then one a second.
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(990));
    assert!(arrivals[2] - arrivals[1] >= Duration::from_millis(990));
}
