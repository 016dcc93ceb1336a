//! The adapter against a mocked API server: creation, quota refusals, deletion, orphan sweep.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use hodei_k8s::test_support::{Handle, body_json, json, mock_client, status};
use http::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::*;
use crate::job::{JobId, JobSpec};

#[derive(Debug, Default, Clone)]
struct FakeApi {
    pods: Arc<Mutex<Vec<Value>>>,
    created: Arc<Mutex<Vec<Value>>>,
    deleted: Arc<Mutex<Vec<String>>>,
    refuse_creates_with_quota: bool,
    /// TokenReview answers (`status`) by token; unknown tokens are not authenticated.
    reviews: Arc<Mutex<HashMap<String, Value>>>,
    /// Tokens presented in TokenReviews, in order.
    reviewed: Arc<Mutex<Vec<String>>>,
    /// TokenReviews fail as if the API server were down.
    reviews_unavailable: bool,
    /// The next pod list is answered only after the next pod is created, with that pod.
    hold_next_list: Arc<AtomicBool>,
    /// Woken when a held list is waiting for a create.
    list_held: Arc<Notify>,
    /// Woken on each watch request, i.e. once the pod watcher's own list is done.
    watching: Arc<Notify>,
}

fn pod_list(items: Vec<Value>) -> http::Response<kube::client::Body> {
    json(
        200,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

fn managed_pod(worker_id: &str, deleting: bool) -> Value {
    let mut metadata = json!({
        "name": format!("hodei-worker-{worker_id}"),
        "namespace": "jobs",
        "uid": format!("uid-{worker_id}"),
        "labels": {"app": "hodei-jobs-worker", "hodei.io/managed": "true", "hodei.io/worker-id": worker_id},
        "creationTimestamp": "2026-01-01T00:00:00Z",
    });
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "status": {"phase": "Running"}})
}

impl FakeApi {
    /// Answers requests until the client goes away; watches are left hanging.
    async fn serve(self, mut handle: Handle) {
        let mut hanging = Vec::new();
        let mut held_list = None;
        while let Some((request, reply)) = handle.next_request().await {
            let path = request.uri().path().to_owned();
            let query = request.uri().query().unwrap_or_default().to_owned();
            match *request.method() {
                Method::GET if query.contains("watch=true") => {
                    hanging.push(reply);
                    self.watching.notify_one();
                }
                Method::POST if path.ends_with("/tokenreviews") => {
                    let review = body_json(request).await;
                    let token = review["spec"]["token"].as_str().unwrap_or_default().to_owned();
                    self.reviewed.lock().unwrap().push(token.clone());
                    if self.reviews_unavailable {
                        reply.send_response(status(503, "ServiceUnavailable", "etcd is down"));
                        continue;
                    }
                    let answer = self
                        .reviews
                        .lock()
                        .unwrap()
                        .get(&token)
                        .cloned()
                        .unwrap_or_else(|| json!({"authenticated": false, "error": "invalid bearer token"}));
                    reply.send_response(json(
                        201,
                        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                                "metadata": {}, "spec": {}, "status": answer}),
                    ));
                }
                Method::GET if !path.ends_with("/pods") => {
                    let name = path.rsplit('/').next().unwrap_or_default();
                    let pod = self
                        .pods
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|pod| pod["metadata"]["name"] == name)
                        .cloned();
                    reply.send_response(match pod {
                        Some(pod) => json(200, &pod),
                        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
                    });
                }
                Method::GET if self.hold_next_list.swap(false, Ordering::SeqCst) => {
                    held_list = Some(reply);
                    self.list_held.notify_one();
                }
                Method::GET => reply.send_response(pod_list(self.pods.lock().unwrap().clone())),
                Method::POST if self.refuse_creates_with_quota => reply.send_response(status(
                    403,
                    "Forbidden",
                    "pods \"x\" is forbidden: exceeded quota: hodei-quota, requested: pods=1, used: pods=100, limited: pods=100",
                )),
                Method::POST => {
                    let mut pod = body_json(request).await;
                    self.created.lock().unwrap().push(pod.clone());
                    let uid = format!("uid-{}", pod["metadata"]["name"].as_str().unwrap_or_default());
                    pod["metadata"]["uid"] = json!(uid);
                    pod["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
                    pod["status"] = json!({"phase": "Pending"});
                    self.pods.lock().unwrap().push(pod.clone());
                    reply.send_response(json(201, &pod));
                    if let Some(list) = held_list.take() {
                        list.send_response(pod_list(self.pods.lock().unwrap().clone()));
                    }
                }
                Method::DELETE => {
                    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
                    self.deleted.lock().unwrap().push(name);
                    reply.send_response(json(
                        200,
                        &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
                    ));
                }
                _ => reply.send_response(json(405, &json!({}))),
            }
        }
    }
}

async fn provider(api: &FakeApi) -> KubernetesProvider {
    provider_with(api, KubernetesSettings::default()).await
}

/// A provider on the fake API with `settings`, its namespace, image and address replaced.
async fn provider_with(api: &FakeApi, settings: KubernetesSettings) -> KubernetesProvider {
    let (client, handle) = mock_client();
    tokio::spawn(api.clone().serve(handle));
    let settings = KubernetesSettings {
        namespace: "jobs".into(),
        worker_image: "registry.local/hodei-worker:1".into(),
        advertise_address: Some("http://hodei-server:50051".into()),
        ..settings
    };
    KubernetesProvider::with_client(client, settings)
        .await
        .unwrap()
}

fn launch(spec: JobSpec) -> WorkerLaunch {
    WorkerLaunch {
        worker_id: WorkerId::new(),
        job_id: JobId::new(),
        spec,
        server_address: "http://127.0.0.1:50051".into(),
        reconnect_window: std::time::Duration::from_secs(600),
        otp_token: None,
    }
}

#[tokio::test]
async fn provisioning_creates_the_pod_and_destroy_deletes_it() {
    let api = FakeApi::default();
    let provider = provider(&api).await;
    let spec = JobSpec::builder("echo")
        .memory("64Mi".parse().unwrap())
        .build()
        .unwrap();
    let launch = launch(spec);
    let worker_id = launch.worker_id;
    let mut worker = provider.provision(launch).await.unwrap();
    assert!(
        matches!(worker.events.recv().await, Some(WorkerEvent::Progress { detail }) if detail.contains("created"))
    );
    let created = api.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    let pod = &created[0];
    assert_eq!(pod["metadata"]["name"], format!("hodei-worker-{worker_id}"));
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.local/hodei-worker:1");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        container["resources"]["limits"]["memory"], "64Mi",
        "the job's memory is the limit"
    );
    assert_eq!(
        container["resources"]["requests"]["cpu"], "500m",
        "defaults fill the rest"
    );
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "HODEI_SERVER_ADDRESS"
                && e["value"] == "http://hodei-server:50051")
    );

    provider.destroy(worker_id).await.unwrap();
    assert_eq!(
        api.deleted.lock().unwrap().clone(),
        vec![format!("hodei-worker-{worker_id}")]
    );
}

#[tokio::test]
async fn worker_pods_get_the_configured_local_disk_and_scratch_limits() {
    let api = FakeApi::default();
    let provider = provider(&api).await;
    provider
        .provision(launch(JobSpec::builder("true").build().unwrap()))
        .await
        .unwrap();
    let provider = provider_with(
        &api,
        KubernetesSettings {
            default_ephemeral_storage_request: "2Gi".parse().unwrap(),
            default_ephemeral_storage_limit: "20Gi".parse().unwrap(),
            tmp_size_limit: "512Mi".parse().unwrap(),
            working_dir_size_limit: "16Gi".parse().unwrap(),
            ..KubernetesSettings::default()
        },
    )
    .await;
    provider
        .provision(launch(JobSpec::builder("true").build().unwrap()))
        .await
        .unwrap();

    let created = api.created.lock().unwrap().clone();
    let disk = |pod: &Value| {
        let resources = &pod["spec"]["containers"][0]["resources"];
        let volumes = &pod["spec"]["volumes"];
        [
            resources["requests"]["ephemeral-storage"].clone(),
            resources["limits"]["ephemeral-storage"].clone(),
            volumes[0]["emptyDir"]["sizeLimit"].clone(),
            volumes[1]["emptyDir"]["sizeLimit"].clone(),
        ]
    };
    assert_eq!(disk(&created[0]), ["1Gi", "10Gi", "1Gi", "8Gi"], "defaults");
    assert_eq!(disk(&created[1]), ["2Gi", "20Gi", "512Mi", "16Gi"]);
    assert_eq!(created[1]["spec"]["volumes"][0]["name"], "tmp");
    assert_eq!(created[1]["spec"]["volumes"][1]["name"], "workspace");
}

#[tokio::test]
async fn a_quota_refusal_keeps_the_job_queued() {
    let api = FakeApi {
        refuse_creates_with_quota: true,
        ..FakeApi::default()
    };
    let provider = provider(&api).await;
    let error = provider
        .provision(launch(JobSpec::builder("true").build().unwrap()))
        .await
        .unwrap_err();
    assert!(error.retryable, "{error}");
    assert_eq!(error.reason, "QuotaExceeded");
    assert!(error.message.contains("exceeded quota"), "{error}");
}

#[tokio::test]
async fn the_orphan_sweep_deletes_only_pods_no_job_owns() {
    let api = FakeApi::default();
    let known = WorkerId::new();
    let orphan = WorkerId::new();
    let already_deleting = WorkerId::new();
    api.pods.lock().unwrap().extend([
        managed_pod(&known.to_string(), false),
        managed_pod(&orphan.to_string(), false),
        managed_pod(&already_deleting.to_string(), true),
    ]);
    let provider = provider(&api).await;
    let removed = provider
        .cleanup_orphans(&HashSet::from([known]))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(
        api.deleted.lock().unwrap().clone(),
        vec![format!("hodei-worker-{orphan}")]
    );
}

#[tokio::test]
async fn adoption_finds_live_pods_reports_ended_ones_and_misses_gone_ones() {
    let api = FakeApi::default();
    let (running, ended, deleting, gone) = (
        WorkerId::new(),
        WorkerId::new(),
        WorkerId::new(),
        WorkerId::new(),
    );
    let mut ended_pod = managed_pod(&ended.to_string(), false);
    ended_pod["status"]["phase"] = json!("Failed");
    api.pods.lock().unwrap().extend([
        managed_pod(&running.to_string(), false),
        ended_pod,
        managed_pod(&deleting.to_string(), true),
    ]);
    let provider = provider(&api).await;

    let mut adopted = provider.adopt(running, None).await.unwrap().expect("found");
    assert_eq!(
        adopted.description,
        format!("pod jobs/hodei-worker-{running}")
    );
    assert!(
        adopted.events.try_recv().is_err(),
        "a running pod has no news"
    );

    let mut ended_worker = provider.adopt(ended, None).await.unwrap().expect("found");
    assert!(matches!(
        ended_worker.events.try_recv(),
        Ok(WorkerEvent::Exited { exit: None, .. })
    ));
    assert!(provider.adopt(deleting, None).await.unwrap().is_none());
    assert!(provider.adopt(gone, None).await.unwrap().is_none());
}

/// The server's record of its workers, as the controller keeps it: read anew on each question.
#[derive(Default)]
struct LiveWorkers(Mutex<HashSet<WorkerId>>);

impl KnownWorkers for LiveWorkers {
    fn contains(&self, worker_id: WorkerId) -> bool {
        self.0.lock().unwrap().contains(&worker_id)
    }
}

#[tokio::test]
async fn a_pod_created_while_the_sweep_lists_is_not_taken_for_an_orphan() {
    let api = FakeApi::default();
    let orphan = WorkerId::new();
    api.pods
        .lock()
        .unwrap()
        .push(managed_pod(&orphan.to_string(), false));
    let provider = provider(&api).await;
    api.watching.notified().await;
    api.hold_next_list.store(true, Ordering::SeqCst);
    let known = LiveWorkers::default();
    let launch = launch(JobSpec::builder("true").build().unwrap());
    let newcomer = launch.worker_id;

    // The sweep starts with no worker known; while its list is in flight a job records
    // its worker and the pod is created, so the list the sweep gets holds that pod.
    let (removed, provisioned) = tokio::join!(provider.cleanup_orphans(&known), async {
        api.list_held.notified().await;
        known.0.lock().unwrap().insert(newcomer);
        provider.provision(launch).await
    });
    provisioned.unwrap();
    assert_eq!(api.pods.lock().unwrap().len(), 2, "the list held both pods");
    assert_eq!(removed.unwrap(), 1);
    assert_eq!(
        api.deleted.lock().unwrap().clone(),
        vec![format!("hodei-worker-{orphan}")],
        "the real orphan is deleted, the new pod is kept"
    );
}

#[tokio::test]
async fn an_unreachable_cluster_is_a_startup_error() {
    let (client, handle) = mock_client();
    drop(handle);
    let settings = KubernetesSettings {
        namespace: "jobs".into(),
        ..KubernetesSettings::default()
    };
    let error = KubernetesProvider::with_client(client, settings)
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("cannot list worker pods in namespace jobs"),
        "{error}"
    );
}

#[tokio::test]
async fn invalid_settings_are_refused_before_any_request() {
    let (client, mut handle) = mock_client();
    let settings = KubernetesSettings {
        namespace: "Not A Namespace".into(),
        ..KubernetesSettings::default()
    };
    let error = KubernetesProvider::with_client(client, settings)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, KubernetesError::Settings(e) if e.field() == "namespace"),
        "{error}"
    );
    drop(error);
    assert!(
        futures::FutureExt::now_or_never(handle.next_request()).is_none(),
        "no request was sent"
    );
}

#[test]
fn a_watch_failing_past_the_grace_makes_the_provider_unhealthy_with_the_error() {
    use std::time::Instant;
    let failing_since = |ago: Duration| hodei_k8s::WatchHealth::Failing {
        since: Instant::now().checked_sub(ago).unwrap(),
        error: "pods is forbidden".into(),
    };
    assert_eq!(
        super::health_of_watch(hodei_k8s::WatchHealth::Ok),
        ProviderHealth::Healthy
    );
    assert_eq!(
        super::health_of_watch(failing_since(Duration::from_secs(5))),
        ProviderHealth::Healthy,
        "a short outage is ridden out"
    );
    match super::health_of_watch(failing_since(Duration::from_secs(45))) {
        ProviderHealth::Unhealthy(reason) => {
            assert!(
                reason.contains("45s") && reason.contains("pods is forbidden"),
                "{reason}"
            );
        }
        other => panic!("expected unhealthy, got {other:?}"),
    }
}

/// A TokenReview status for a pod-bound token of `service_account` in `jobs`.
fn pod_token(service_account: &str, pod: &str, uid: &str, audience: &str) -> Value {
    json!({
        "authenticated": true,
        "audiences": [audience],
        "user": {
            "username": format!("system:serviceaccount:jobs:{service_account}"),
            "groups": ["system:serviceaccounts", "system:serviceaccounts:jobs"],
            "extra": {
                hodei_k8s::reviews::POD_NAME_EXTRA: [pod],
                hodei_k8s::reviews::POD_UID_EXTRA: [uid],
            },
        },
    })
}

#[tokio::test]
async fn the_worker_pod_holds_no_credential_and_gets_a_pod_bound_token() {
    let api = FakeApi::default();
    let provider = provider(&api).await;
    provider
        .provision(launch(JobSpec::builder("true").build().unwrap()))
        .await
        .unwrap();
    let pod = api.created.lock().unwrap()[0].clone();
    let container = &pod["spec"]["containers"][0];
    let env = container["env"].as_array().unwrap();
    let names: Vec<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "HODEI_RECONNECT_WINDOW",
            "HODEI_SERVER_ADDRESS",
            "HODEI_WORKER_ID",
            "HODEI_WORKER_TOKEN_FILE",
            "HODEI_WORK_DIR"
        ]
    );
    assert_eq!(env[0]["value"], "10m", "the server's reconnect window");
    assert_eq!(env[3]["value"], "/var/run/secrets/hodei/token");
    assert!(!pod.to_string().contains("OTP"), "{pod}");
    let projection = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| v["projected"]["sources"][0].get("serviceAccountToken"))
        .cloned();
    assert_eq!(
        projection,
        Some(json!({"audience": "hodei", "expirationSeconds": 600, "path": "token"}))
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "hodei-jobs-worker");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
}

#[tokio::test]
async fn only_a_token_bound_to_the_workers_own_pod_is_accepted() {
    let api = FakeApi::default();
    let provider = provider(&api).await;
    let launch = launch(JobSpec::builder("true").build().unwrap());
    let worker = launch.worker_id;
    provider.provision(launch).await.unwrap();
    let other = WorkerId::new();
    let pod = format!("hodei-worker-{worker}");
    let uid = format!("uid-{pod}");
    let sa = "hodei-jobs-worker";
    api.reviews.lock().unwrap().extend([
        ("right".to_owned(), pod_token(sa, &pod, &uid, "hodei")),
        (
            "other-pod".to_owned(),
            pod_token(sa, &format!("hodei-worker-{other}"), "uid-x", "hodei"),
        ),
        (
            "wrong-uid".to_owned(),
            pod_token(sa, &pod, "uid-of-an-older-pod", "hodei"),
        ),
        (
            "wrong-sa".to_owned(),
            pod_token("default", &pod, &uid, "hodei"),
        ),
        (
            "wrong-audience".to_owned(),
            pod_token(sa, &pod, &uid, "kubernetes"),
        ),
    ]);

    provider.verify_worker(worker, "right").await.unwrap();
    for token in [
        "other-pod",
        "wrong-uid",
        "wrong-sa",
        "wrong-audience",
        "expired",
    ] {
        let error = provider.verify_worker(worker, token).await.unwrap_err();
        assert!(!error.retryable, "{token}: {error}");
        assert_eq!(error.reason, "IdentityRefused", "{token}: {error}");
        assert!(!error.message.contains(token), "{token}: {error}");
    }
    assert_eq!(api.reviewed.lock().unwrap().len(), 6);

    // A worker the provider did not create is refused without asking the API server.
    let error = provider.verify_worker(other, "right").await.unwrap_err();
    assert_eq!(error.reason, "IdentityRefused");
    provider.destroy(worker).await.unwrap();
    assert!(provider.verify_worker(worker, "right").await.is_err());
    assert_eq!(api.reviewed.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn a_token_review_that_fails_is_retryable() {
    let api = FakeApi {
        reviews_unavailable: true,
        ..FakeApi::default()
    };
    let provider = provider(&api).await;
    let launch = launch(JobSpec::builder("true").build().unwrap());
    let worker = launch.worker_id;
    provider.provision(launch).await.unwrap();
    let error = provider
        .verify_worker(worker, "secret-token")
        .await
        .unwrap_err();
    assert!(error.retryable, "{error}");
    assert_eq!(error.reason, "TokenReviewFailed");
    assert!(!error.message.contains("secret-token"), "{error}");
}

#[tokio::test]
async fn the_token_review_asks_for_the_configured_audience() {
    let (client, handle) = mock_client();
    let api = FakeApi::default();
    tokio::spawn(api.clone().serve(handle));
    let settings = KubernetesSettings {
        namespace: "jobs".into(),
        identity_token_audience: "hodei-prod".into(),
        ..KubernetesSettings::default()
    };
    let provider = KubernetesProvider::with_client(client, settings)
        .await
        .unwrap();
    let launch = launch(JobSpec::builder("true").build().unwrap());
    let worker = launch.worker_id;
    provider.provision(launch).await.unwrap();
    let pod = format!("hodei-worker-{worker}");
    api.reviews.lock().unwrap().insert(
        "t".into(),
        pod_token("hodei-jobs-worker", &pod, &format!("uid-{pod}"), "hodei"),
    );
    // The API server echoes only the audiences asked for that the token has: none here.
    assert!(provider.verify_worker(worker, "t").await.is_err());
    let created = api.created.lock().unwrap()[0].clone();
    assert_eq!(
        created["spec"]["volumes"][2]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "hodei-prod"
    );
}

#[tokio::test]
async fn workers_get_the_server_ca_from_the_configured_config_map() {
    let api = FakeApi::default();
    let provider = provider_with(
        &api,
        KubernetesSettings {
            server_ca_config_map: Some("hodei-server-ca".into()),
            ..KubernetesSettings::default()
        },
    )
    .await;
    provider
        .provision(launch(JobSpec::builder("echo").build().unwrap()))
        .await
        .unwrap();
    let pod = api.created.lock().unwrap()[0].clone();
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == "hodei-server-ca"),
        "{volumes:?}"
    );
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(
        env.contains(&json!({"name": "HODEI_SERVER_CA", "value": "/etc/hodei/ca/ca.crt"})),
        "{env:?}"
    );
}

mod placement;
