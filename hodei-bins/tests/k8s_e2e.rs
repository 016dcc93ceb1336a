//! End to end against a real Kubernetes API server: the real `hodei-server-bin` creates
//! real pods, and `hodei-worker-bin` runs for each pod.
//!
//! These tests need a prepared cluster; `scripts/e2e.sh` (`just e2e`) starts the local
//! control plane, applies `scripts/setup-k8s-production.sh`, mints the server's
//! kubeconfig and runs them with `--ignored`. Against any other cluster, set
//! `HODEI_E2E_KUBECONFIG` (admin), `HODEI_E2E_SERVER_KUBECONFIG` (the server account),
//! and `HODEI_E2E_WORKER_IMAGE` (an image whose entrypoint is `hodei-worker-bin`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    process::{Child, Command, Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{free_port, metric, scrape};

const HODEI: &str = env!("CARGO_BIN_EXE_hodei");
const SERVER: &str = env!("CARGO_BIN_EXE_hodei-server-bin");
const NAMESPACE: &str = "hodei-jobs-workers";
const NEEDS_CLUSTER: &str = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set; {NEEDS_CLUSTER}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn kubectl(args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env("HODEI_E2E_KUBECONFIG"))
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// Worker pods in the namespace, optionally of one job.
fn pods(job_id: Option<&str>) -> Vec<Value> {
    let selector = match job_id {
        Some(id) => format!("hodei.io/managed=true,hodei.io/job-id={id}"),
        None => "hodei.io/managed=true".to_owned(),
    };
    let out = kubectl(&[
        "get", "pods", "-n", NAMESPACE, "-l", &selector, "-o", "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        sleep(Duration::from_millis(200));
    }
}

struct Server {
    child: Child,
    url: String,
    data_dir: std::path::PathBuf,
    port: u16,
    metrics_addr: String,
}

impl Server {
    fn start(data_dir: &std::path::Path) -> Self {
        Self::start_on(data_dir, free_port())
    }

    fn start_on(data_dir: &std::path::Path, port: u16) -> Self {
        let log = std::fs::File::create(data_dir.join(format!("server-{port}.log"))).unwrap();
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(SERVER)
            .env("HODEI_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "HODEI_ADVERTISE_ADDRESS",
                format!("http://127.0.0.1:{port}"),
            )
            .env("HODEI_DATA_DIR", data_dir)
            .env("HODEI_LOCAL_ENABLED", "false")
            .env("HODEI_KUBERNETES_ENABLED", "1")
            .env("HODEI_K8S_KUBECONFIG", env("HODEI_E2E_SERVER_KUBECONFIG"))
            .env("HODEI_K8S_NAMESPACE", NAMESPACE)
            .env("HODEI_WORKER_IMAGE", env("HODEI_E2E_WORKER_IMAGE"))
            .env("HODEI_K8S_IMAGE_PULL_GRACE", "3s")
            .env("HODEI_SWEEP_INTERVAL", "5s")
            .env("HODEI_KILL_GRACE", "3s")
            .env("HODEI_LOG", "info")
            .env("HODEI_METRICS_ADDR", &metrics_addr)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_owned(),
            port,
            metrics_addr,
        };
        wait_until("the server answers", Duration::from_secs(30), || {
            server.hodei(&["list"]).status.success()
        });
        server
    }

    fn hodei(&self, args: &[&str]) -> Output {
        Command::new(HODEI)
            .args(args)
            .env("HODEI_SERVER_URL", &self.url)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn job(&self, id: &str) -> Value {
        let out = self.hodei(&["get", id, "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn metrics(&self) -> String {
        scrape(&self.metrics_addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join(format!("server-{}.log", self.port)))
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn detach(server: &Server, args: &[&str]) -> String {
    let mut all = vec!["run", "--detach"];
    all.extend_from_slice(args);
    let out = server.hodei(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn hello_job_runs_in_a_restricted_pod_that_is_removed_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert!(
        server.log().contains("Kubernetes provider enabled"),
        "{}",
        server.log()
    );
    let id = detach(
        &server,
        &["--", "sh", "-c", "echo hello; sleep 2; echo done"],
    );

    let mut pod = Value::Null;
    wait_until("the worker pod exists", Duration::from_secs(30), || {
        pod = pods(Some(&id)).into_iter().next().unwrap_or(Value::Null);
        !pod.is_null()
    });
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app"], "hodei-jobs-worker");
    assert_eq!(labels["hodei.io/managed"], "true");
    assert_eq!(labels["hodei.io/provider"], "kubernetes");
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["serviceAccountName"], "hodei-jobs-worker");
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    let container = &spec["containers"][0]["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"]["drop"][0], "ALL");

    let logs = server.hodei(&["logs", "-f", &id]);
    assert_eq!(text(&logs.stdout), "hello\ndone\n");
    assert_eq!(server.job(&id)["state"]["phase"], "succeeded");
    wait_until("the worker pod is gone", Duration::from_secs(30), || {
        pods(Some(&id)).is_empty()
    });

    let metrics = server.metrics();
    for phase in [
        "queued",
        "provisioning",
        "scheduling",
        "registration",
        "first_output",
    ] {
        let count = format!("hodei_job_start_phase_seconds_count{{phase=\"{phase}\"}}");
        assert_eq!(metric(&metrics, &count), 1.0, "{phase}: {metrics}");
    }
    let api = |verb: &str| {
        metric(
            &metrics,
            &format!("hodei_kubernetes_api_requests_total{{verb=\"{verb}\",outcome=\"ok\"}}"),
        )
    };
    assert_eq!(api("create"), 1.0, "{metrics}");
    assert!(api("delete") >= 1.0, "{metrics}");
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn the_cli_streams_a_pod_job_live_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let out = server.hodei(&["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).starts_with("err\n"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_missing_image_fails_fast_with_the_pull_reason_and_its_pod_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let started = Instant::now();
    let out = server.hodei(&[
        "run",
        "--image",
        "registry.invalid/hodei/does-not-exist:1",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("ErrImagePull") || stderr.contains("ImagePullBackOff"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "failed fast: {:?}",
        started.elapsed()
    );
    wait_until("no worker pod is left", Duration::from_secs(30), || {
        pods(None).is_empty()
    });
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn cancelling_a_running_job_deletes_its_pod() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let id = detach(&server, &["--", "sh", "-c", "echo up; sleep 300"]);
    wait_until("the job runs", Duration::from_secs(30), || {
        text(&server.hodei(&["logs", &id]).stdout) == "up\n"
    });
    assert!(server.hodei(&["cancel", &id]).status.success());
    wait_until("the job is cancelled", Duration::from_secs(30), || {
        server.job(&id)["state"]["phase"] == "cancelled"
    });
    wait_until("its pod is gone", Duration::from_secs(30), || {
        pods(Some(&id)).is_empty()
    });
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn fifty_concurrent_jobs_all_succeed_and_leave_no_pod() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let ids: Vec<String> = (0..50)
        .map(|i| {
            detach(
                &server,
                &[
                    "--cpu",
                    "100m",
                    "--memory",
                    "64Mi",
                    "--",
                    "sh",
                    "-c",
                    &format!("echo job-{i}"),
                ],
            )
        })
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let logs = server.hodei(&["logs", "-f", id]);
        let job = server.job(id);
        assert_eq!(
            job["state"]["phase"],
            "succeeded",
            "job {i}: {job}\nserver log:\n{}",
            server.log()
        );
        assert!(
            logs.status.success() && text(&logs.stdout) == format!("job-{i}\n"),
            "job {i}: `hodei logs -f` exited {:?}, stdout {:?}, stderr {:?}\njob: {job}\nserver log:\n{}",
            logs.status.code(),
            text(&logs.stdout),
            text(&logs.stderr),
            server.log()
        );
    }
    wait_until("no worker pod is left", Duration::from_secs(60), || {
        pods(None).is_empty()
    });
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn after_a_server_crash_no_pod_outlives_one_sweep_and_jobs_end_defined() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let port = server.port;
    let ids: Vec<String> = (0..3)
        .map(|_| detach(&server, &["--", "sh", "-c", "echo up; sleep 300"]))
        .collect();
    for id in &ids {
        wait_until("the job runs", Duration::from_secs(30), || {
            text(&server.hodei(&["logs", id]).stdout) == "up\n"
        });
    }
    drop(server); // SIGKILL: no cleanup runs
    assert_eq!(pods(None).len(), 3, "the pods outlive the killed server");

    let server = Server::start_on(dir.path(), port);
    wait_until(
        "the sweep removed the orphaned pods",
        Duration::from_secs(20),
        || pods(None).is_empty(),
    );
    for id in &ids {
        let job = server.job(id);
        assert_eq!(job["state"]["phase"], "failed", "{job}");
        assert_eq!(job["state"]["reason"]["kind"], "server_restarted", "{job}");
    }
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn the_worker_account_cannot_manage_pods_and_the_server_account_can() {
    let can = |who: &str, verb: &str| {
        let out = kubectl(&["auth", "can-i", verb, "pods", "-n", NAMESPACE, "--as", who]);
        text(&out.stdout).trim().to_owned()
    };
    let worker = format!("system:serviceaccount:{NAMESPACE}:hodei-jobs-worker");
    let server = "system:serviceaccount:hodei-jobs:hodei-jobs-server";
    assert_eq!(can(&worker, "create"), "no");
    assert_eq!(can(&worker, "list"), "no");
    for verb in ["create", "delete", "list", "watch", "get"] {
        assert_eq!(can(server, verb), "yes", "server can {verb} pods");
    }
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn the_operator_kit_recipes_verify_script_and_manifests_work_against_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let just = |recipe: &str| {
        Command::new("just")
            .arg(recipe)
            .current_dir(repo_root())
            .env("HODEI_SERVER_URL", &server.url)
            .stdin(Stdio::null())
            .output()
            .expect("just is installed (.ci/run installs it)")
    };
    let all = just("job-k8s-all");
    assert!(
        all.status.success(),
        "{}\n{}",
        text(&all.stdout),
        text(&all.stderr)
    );
    let stdout = text(&all.stdout);
    assert!(
        stdout.contains("hello from pod") && stdout.contains("line 2000 of 2000"),
        "{stdout}"
    );
    assert!(stdout.contains("hodei exited 3 (expected 3)"), "{stdout}");

    let verify = Command::new(repo_root().join("scripts/verify-k8s-jobs.sh"))
        .args([
            "--kubeconfig",
            &env("HODEI_E2E_KUBECONFIG"),
            "--server",
            &server.url,
            "--timeout",
            "120s",
        ])
        .current_dir(repo_root())
        .env("HODEI_CLI", HODEI)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}\n{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    let kustomize = repo_root().join("k8s");
    let dry_run = kubectl(&[
        "apply",
        "-k",
        kustomize.to_str().unwrap(),
        "--dry-run=server",
    ]);
    assert!(dry_run.status.success(), "{}", text(&dry_run.stderr));
    wait_until("no worker pod is left", Duration::from_secs(60), || {
        pods(None).is_empty()
    });
}
