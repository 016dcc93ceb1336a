//! End to end against a real Kubernetes API server: the real `hodei-server-bin` creates
//! real pods, and `hodei-worker-bin` runs for each pod.
//!
//! These tests need a prepared cluster; `scripts/e2e.sh` (`just e2e`) starts the local
//! control plane, applies `scripts/setup-k8s-production.sh`, mints the server's
//! kubeconfig and runs them with `--ignored`. Against any other cluster, set
//! `HODEI_E2E_KUBECONFIG` (admin), `HODEI_E2E_SERVER_KUBECONFIG` (the server account),
//! and `HODEI_E2E_WORKER_IMAGE` (an image whose entrypoint is `hodei-worker-bin`);
//! `HODEI_E2E_EXPOSE` names a script that makes a loopback port reachable from pods
//! and prints the URL they dial (the local cluster's `expose-to-pods.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use hodei_test_fixtures::blocking::wait_until;
use serde_json::Value;
use support::{HODEI, Server, free_port, metric, text};

const NAMESPACE: &str = "hodei-jobs-workers";
const NEEDS_CLUSTER: &str = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} must be set; {NEEDS_CLUSTER}"))
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

/// The address pods dial to reach a worker API on this host's loopback `port`: the local
/// cluster's forwarder at the node IP when `HODEI_E2E_EXPOSE` names its script (pods
/// live in a network namespace of their own), else loopback itself.
fn advertise_address(port: u16) -> String {
    let Ok(expose) = std::env::var("HODEI_E2E_EXPOSE") else {
        return format!("http://127.0.0.1:{port}");
    };
    let out = Command::new(&expose)
        .arg(port.to_string())
        .output()
        .expect("the expose script runs");
    assert!(out.status.success(), "{expose}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// A server with only the Kubernetes provider, on `port`.
fn k8s_server(data_dir: &Path, port: u16) -> Server {
    k8s_server_with(data_dir, port, &[])
}

/// A server with only the Kubernetes provider, on `port`, with `extra` settings.
fn k8s_server_with(data_dir: &Path, port: u16, extra: &[(&str, String)]) -> Server {
    k8s_server_on(data_dir, port, free_port(), extra)
}

/// A server with only the Kubernetes provider, its job API on `port` and its worker API
/// on `worker_port`, with `extra` settings.
fn k8s_server_on(data_dir: &Path, port: u16, worker_port: u16, extra: &[(&str, String)]) -> Server {
    let mut env = vec![
        ("HODEI_ADVERTISE_ADDRESS", advertise_address(worker_port)),
        ("HODEI_LOCAL_ENABLED", "false".to_owned()),
        ("HODEI_KUBERNETES_ENABLED", "1".to_owned()),
        ("HODEI_K8S_KUBECONFIG", env("HODEI_E2E_SERVER_KUBECONFIG")),
        ("HODEI_K8S_NAMESPACE", NAMESPACE.to_owned()),
        ("HODEI_WORKER_IMAGE", env("HODEI_E2E_WORKER_IMAGE")),
        ("HODEI_K8S_IMAGE_PULL_GRACE", "3s".to_owned()),
        ("HODEI_SWEEP_INTERVAL", "5s".to_owned()),
        ("HODEI_KILL_GRACE", "3s".to_owned()),
        ("HODEI_LOG", "info".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    Server::start_with_ports(data_dir, port, worker_port, &env)
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
    let server = k8s_server(dir.path(), free_port());
    assert!(
        server.log().contains("Kubernetes provider enabled"),
        "{}",
        server.log()
    );
    let id = detach(
        &server,
        &["--", "sh", "-c", "echo hello; sleep 2; echo done"],
    );

    let pod = wait_until(Duration::from_secs(30), "the worker pod exists", || {
        pods(Some(&id)).into_iter().next()
    })
    .unwrap();
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app"], "hodei-jobs-worker");
    assert_eq!(labels["hodei.io/managed"], "true");
    assert_eq!(labels["hodei.io/provider"], "kubernetes");
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["serviceAccountName"], "hodei-jobs-worker");
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    // No credential in the pod spec: a reader of it learns nothing that lets them
    // register. The worker proves itself with the projected pod-bound token.
    let env = spec["containers"][0]["env"].as_array().unwrap();
    let names: Vec<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "HODEI_RECONNECT_WINDOW",
            "HODEI_SERVER_ADDRESS",
            "HODEI_WORKER_ID",
            "HODEI_WORKER_TOKEN_FILE",
            "HODEI_WORK_DIR"
        ],
        "{pod}"
    );
    for var in env {
        let value = var["value"].as_str().unwrap_or_default();
        assert!(var.get("valueFrom").is_none(), "{var}");
        assert!(
            !value.starts_with("eyJ") && value.len() < 64 || value.contains("://"),
            "{var} looks like a credential"
        );
    }
    assert!(!pod.to_string().contains("OTP"), "{pod}");
    assert!(
        spec["volumes"].to_string().contains("serviceAccountToken"),
        "{pod}"
    );
    let container = &spec["containers"][0]["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["allowPrivilegeEscalation"], false);
    assert_eq!(container["capabilities"]["drop"][0], "ALL");

    let logs = server.hodei(&["logs", "-f", &id]);
    assert_eq!(text(&logs.stdout), "hello\ndone\n");
    assert_eq!(server.job(&id)["state"]["phase"], "succeeded");
    wait_until_pods_gone(&id);

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
    assert_eq!(
        api("tokenreview"),
        1.0,
        "the worker proved its pod: {metrics}"
    );
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn the_cli_streams_a_pod_job_live_and_exits_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = k8s_server(dir.path(), free_port());
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
    let server = k8s_server(dir.path(), free_port());
    let started = Instant::now();
    let out = server.hodei(&[
        "run",
        "--image",
        "registry.invalid/hodei/does-not-exist:1",
        "--",
        "true",
    ]);
    // The job's own image: a failure of class user, not retried.
    assert_eq!(out.status.code(), Some(121), "{}", text(&out.stderr));
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
    wait_until(Duration::from_secs(30), "no worker pod is left", || {
        pods(None).is_empty()
    })
    .unwrap();
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_pod_job_runs_unprivileged_on_a_read_only_root_under_the_worker_as_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = k8s_server(dir.path(), free_port());
    let script = r#"echo "ids $(id -u):$(id -g)"
grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/self/status | tr -s '\t ' ' '
if touch /probe 2>/dev/null; then echo "root writable"; else echo "root read-only"; fi
touch /tmp/probe && echo "tmp writable"
touch ./probe && echo "work dir writable: $(pwd)"
echo "pid 1: $(tr '\0' ' ' </proc/1/cmdline)""#;
    let out = server.hodei(&["run", "--", "sh", "-c", script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "ids 1000:1000",
        "Seccomp: 2",
        "CapEff: 0000000000000000",
        "NoNewPrivs: 1",
        "root read-only",
        "tmp writable",
        "work dir writable: /workspace/hodei-job-",
        "pid 1: /usr/local/bin/hodei-worker-bin",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    let id = only_job_id(&server);
    wait_until_pods_gone(&id);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn every_worker_pod_gets_an_identity_token_bound_to_it() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let server = k8s_server(dir.path(), free_port());
    // Only the claims (the middle part): without its signature it proves nothing.
    let out = server.hodei(&[
        "run",
        "--",
        "sh",
        "-c",
        "cut -d. -f2 /var/run/secrets/hodei/token",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text(&out.stdout).trim())
        .unwrap();
    let claims: Value = serde_json::from_slice(&claims).unwrap();
    assert_eq!(claims["aud"], serde_json::json!(["hodei"]), "{claims}");
    let bound = &claims["kubernetes.io"];
    assert_eq!(bound["namespace"], NAMESPACE, "{claims}");
    assert_eq!(
        bound["serviceaccount"]["name"], "hodei-jobs-worker",
        "{claims}"
    );
    let pod = bound["pod"]["name"].as_str().unwrap();
    assert!(pod.starts_with("hodei-worker-"), "{claims}");
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(lifetime <= 3600, "{claims}");
    let id = only_job_id(&server);
    wait_until_pods_gone(&id);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_job_past_its_memory_limit_fails_oom_killed_and_its_pod_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = k8s_server(dir.path(), free_port());
    let started = Instant::now();
    let out = server.hodei(&[
        "run",
        "--memory",
        "64Mi",
        "--",
        "sh",
        "-c",
        "echo allocating; dd if=/dev/zero of=/dev/null bs=256M count=1",
    ]);
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("OOMKilled"), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let id = only_job_id(&server);
    assert_eq!(server.job(&id)["state"]["reason"]["kind"], "out_of_memory");
    wait_until_pods_gone(&id);
}

/// Waits up to 60 s (a job stopped while its worker is away ends after the kill and result graces) until no pod of job `id` is left.
fn wait_until_pods_gone(id: &str) {
    wait_until(Duration::from_secs(60), "the job's pod is gone", || {
        pods(Some(id)).is_empty()
    })
    .unwrap();
}

/// The id of the only job the server knows.
fn only_job_id(server: &Server) -> String {
    let out = server.hodei(&["list", "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    listed["jobs"][0]["id"].as_str().unwrap().to_owned()
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn cancelling_a_running_job_stops_its_tree_with_sigterm_and_deletes_its_pod() {
    let dir = tempfile::tempdir().unwrap();
    let server = k8s_server(dir.path(), free_port());
    let id = detach(
        &server,
        &[
            "--",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 0' TERM; echo up; sleep 300 & wait",
        ],
    );
    wait_until(Duration::from_secs(30), "the job runs", || {
        text(&server.hodei(&["logs", &id]).stdout) == "up\n"
    })
    .unwrap();
    let cancelled = Instant::now();
    assert!(server.hodei(&["cancel", &id]).status.success());
    wait_until(Duration::from_secs(30), "the job is cancelled", || {
        server.job(&id)["state"]["phase"] == "cancelled"
    })
    .unwrap();
    assert_eq!(text(&server.hodei(&["logs", &id]).stdout), "up\ngot TERM\n");
    assert_eq!(server.job(&id)["state"]["exit"]["code"], 0);
    wait_until_pods_gone(&id);
    // The job obeyed SIGTERM, so nothing waited for the 3 s kill grace.
    assert!(
        cancelled.elapsed() < Duration::from_secs(15),
        "{:?}",
        cancelled.elapsed()
    );
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn fifty_concurrent_jobs_all_succeed_and_leave_no_pod() {
    let dir = tempfile::tempdir().unwrap();
    let server = k8s_server(dir.path(), free_port());
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
    wait_until(Duration::from_secs(60), "no worker pod is left", || {
        pods(None).is_empty()
    })
    .unwrap();
}

/// Prints `1` to `150`, one every 100 ms.
const SLOW_COUNT: &str = "i=1; while [ $i -le 150 ]; do echo $i; i=$((i+1)); sleep 0.1; done";

/// Ten jobs run in pods while the server is stopped by `stop` and started again on the
/// same ports and data dir: every job succeeds with its whole output, once, and no pod
/// is left.
fn ten_jobs_outlive_a_server_restart(stop: impl FnOnce(Server)) {
    let dir = tempfile::tempdir().unwrap();
    let (port, worker_port) = (free_port(), free_port());
    let settings = [
        ("HODEI_ON_SHUTDOWN", "hold".to_owned()),
        ("HODEI_RECONNECT_WINDOW", "2m".to_owned()),
    ];
    let server = k8s_server_on(dir.path(), port, worker_port, &settings);
    let ids: Vec<String> = (0..10)
        .map(|_| {
            detach(
                &server,
                &[
                    "--cpu", "100m", "--memory", "64Mi", "--", "sh", "-c", SLOW_COUNT,
                ],
            )
        })
        .collect();
    for id in &ids {
        wait_until(Duration::from_secs(90), "the job prints", || {
            text(&server.hodei(&["logs", id]).stdout).starts_with("1\n")
        })
        .unwrap();
    }
    stop(server);
    assert_eq!(
        ids.iter().map(|id| pods(Some(id)).len()).sum::<usize>(),
        10,
        "the pods outlive the server"
    );
    std::thread::sleep(Duration::from_secs(2));

    let server = k8s_server_on(dir.path(), port, worker_port, &settings);
    let expected: String = (1..=150).map(|i| format!("{i}\n")).collect();
    for id in &ids {
        let followed = server.hodei(&["logs", "-f", id]);
        let job = server.job(id);
        assert_eq!(
            job["state"]["phase"],
            "succeeded",
            "{job}\nserver log:\n{}",
            server.log()
        );
        assert!(
            text(&followed.stdout) == expected,
            "job {id}: {:?}",
            text(&followed.stdout)
        );
    }
    let metrics = server.metrics();
    assert_eq!(
        metric(&metrics, "hodei_jobs_adopted_total"),
        10.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "hodei_resume_gaps_total"),
        0.0,
        "{metrics}"
    );
    wait_until(Duration::from_secs(60), "no worker pod is left", || {
        pods(None).is_empty()
    })
    .unwrap();
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn ten_pod_jobs_run_on_through_a_killed_server() {
    ten_jobs_outlive_a_server_restart(Server::kill);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn ten_pod_jobs_run_on_through_a_rolling_restart() {
    ten_jobs_outlive_a_server_restart(|server| {
        let stopping = Instant::now();
        server.stop();
        // Well inside a pod's default 30 s termination grace period.
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "SIGTERM took {:?}",
            stopping.elapsed()
        );
    });
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_job_gets_its_secret_as_env_and_file_and_no_answer_holds_the_value() {
    const SECRET: &str = "hodei-e2e-secret";
    const VALUE: &str = "s3cr3t-e2e-value";
    let _ = kubectl(&[
        "delete",
        "secret",
        "-n",
        NAMESPACE,
        SECRET,
        "--ignore-not-found",
    ]);
    let created = kubectl(&[
        "create",
        "secret",
        "generic",
        SECRET,
        "-n",
        NAMESPACE,
        &format!("--from-literal=token={VALUE}"),
    ]);
    assert!(created.status.success(), "{}", text(&created.stderr));
    let dir = tempfile::tempdir().unwrap();
    let settings = [("HODEI_K8S_ALLOWED_SECRETS", "hodei-e2e-*".to_owned())];
    let server = k8s_server_with(dir.path(), free_port(), &settings);
    let out = server.hodei(&[
        "run",
        "--secret-env",
        &format!("TOKEN={SECRET}/token"),
        "--secret-file",
        &format!("/etc/hodei-e2e/token={SECRET}/token"),
        "--",
        "sh",
        "-c",
        "echo \"env=$TOKEN\"; echo \"file=$(cat /etc/hodei-e2e/token)\"",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        server.log()
    );
    assert_eq!(text(&out.stdout), format!("env={VALUE}\nfile={VALUE}\n"));
    let id = only_job_id(&server);
    let got = server.hodei(&["get", &id, "-o", "json"]);
    let listed = server.hodei(&["list", "-o", "json"]);
    for answer in [&got.stdout, &listed.stdout] {
        let answer = text(answer);
        assert!(answer.contains(SECRET), "the reference is shown: {answer}");
        assert!(!answer.contains(VALUE), "the value is not: {answer}");
    }
    assert!(!server.log().contains(VALUE), "the server never logs it");
    let refused = server.hodei(&["run", "--secret-env", "X=other-secret/key", "--", "true"]);
    assert!(
        text(&refused.stderr).contains("HODEI_K8S_ALLOWED_SECRETS"),
        "{}",
        text(&refused.stderr)
    );
    let _ = kubectl(&["delete", "secret", "-n", NAMESPACE, SECRET]);
    wait_until_pods_gone(&id);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_job_whose_node_selector_no_node_matches_fails_unschedulable_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("HODEI_K8S_ALLOWED_NODE_SELECTORS", "hodei-e2e/*".to_owned()),
        ("HODEI_K8S_SCHEDULING_TIMEOUT", "10s".to_owned()),
        ("HODEI_INFRA_RETRIES", "0".to_owned()),
    ];
    let server = k8s_server_with(dir.path(), free_port(), &settings);
    let started = Instant::now();
    let id = detach(
        &server,
        &["--node-selector", "hodei-e2e/pool=nowhere", "--", "true"],
    );
    std::thread::sleep(Duration::from_secs(5));
    let waiting = server.job(&id);
    assert_eq!(waiting["state"]["phase"], "provisioning", "{waiting}");
    let job = wait_until(Duration::from_secs(60), "the job fails", || {
        let job = server.job(&id);
        (job["state"]["phase"] == "failed").then_some(job)
    })
    .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "not before the timeout"
    );
    assert_eq!(job["state"]["reason"]["reason"], "Unschedulable", "{job}");
    assert!(
        job["state"]["reason"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("node"),
        "the scheduler's reason: {job}"
    );
    let refused = server.hodei(&["run", "--node-selector", "gpu=yes", "--", "true"]);
    assert!(
        text(&refused.stderr).contains("HODEI_K8S_ALLOWED_NODE_SELECTORS"),
        "{}",
        text(&refused.stderr)
    );
    wait_until_pods_gone(&id);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_pod_deleted_by_hand_mid_job_is_replaced_and_the_job_succeeds_on_attempt_2() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [("HODEI_RETRY_BACKOFF", "1s".to_owned())];
    let server = k8s_server_with(dir.path(), free_port(), &settings);
    let id = detach(&server, &["--", "sh", "-c", "echo up; sleep 8; echo done"]);
    wait_until(Duration::from_secs(60), "the job runs", || {
        text(&server.hodei(&["logs", &id]).stdout) == "up\n"
    })
    .unwrap();
    let first_pod = pods(Some(&id))[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = kubectl(&["delete", "pod", "-n", NAMESPACE, &first_pod, "--wait=false"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));

    let followed = server.hodei(&["logs", "-f", &id]);
    let job = server.job(&id);
    assert_eq!(
        job["state"]["phase"],
        "succeeded",
        "{job}\n{}",
        server.log()
    );
    let attempts = job["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{job}");
    assert_eq!(attempts[0]["state"]["class"], "infrastructure", "{job}");
    assert_ne!(job["worker_id"], attempts[0]["worker_id"], "a new worker");
    assert_eq!(text(&followed.stdout), "up\nup\ndone\n");
    assert!(
        text(&followed.stderr).contains("hodei: attempt 2 of job"),
        "{}",
        text(&followed.stderr)
    );
    wait_until_pods_gone(&id);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn pods_of_jobs_that_ended_while_the_server_was_down_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (port, worker_port) = (free_port(), free_port());
    let settings = [
        ("HODEI_RECONNECT_WINDOW", "5s".to_owned()),
        ("HODEI_INFRA_RETRIES", "0".to_owned()),
    ];
    let server = k8s_server_on(dir.path(), port, worker_port, &settings);
    let id = detach(&server, &["--", "sh", "-c", "echo up; sleep 300"]);
    wait_until(Duration::from_secs(60), "the job runs", || {
        text(&server.hodei(&["logs", &id]).stdout) == "up\n"
    })
    .unwrap();
    server.kill();
    // The worker gives up after its window and kills its job: the pod ends.
    wait_until(Duration::from_secs(60), "the pod ends", || {
        pods(Some(&id)).first().is_none_or(|pod| {
            matches!(
                pod["status"]["phase"].as_str(),
                Some("Failed" | "Succeeded")
            )
        })
    })
    .unwrap();

    let server = k8s_server_on(dir.path(), port, worker_port, &settings);
    let job = wait_until(Duration::from_secs(30), "the job ends", || {
        let job = server.job(&id);
        (job["state"]["phase"] != "running").then_some(job)
    })
    .unwrap();
    assert_eq!(job["state"]["reason"]["kind"], "worker_lost", "{job}");
    assert_eq!(text(&server.hodei(&["logs", &id]).stdout), "up\n");
    wait_until_pods_gone(&id);
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
    // Checking worker identities needs TokenReviews, and nothing cluster-wide beyond.
    let can_cluster = |who: &str, verb: &str, resource: &str| {
        let out = kubectl(&["auth", "can-i", verb, resource, "--as", who]);
        text(&out.stdout).trim().to_owned()
    };
    // Checking job API callers (HODEI_AUTH_KUBERNETES) needs SubjectAccessReviews too.
    for reviews in [
        "tokenreviews.authentication.k8s.io",
        "subjectaccessreviews.authorization.k8s.io",
    ] {
        assert_eq!(can_cluster(server, "create", reviews), "yes", "{reviews}");
        assert_eq!(can_cluster(&worker, "create", reviews), "no", "{reviews}");
    }
    for (verb, resource) in [
        ("list", "pods"),
        ("get", "secrets"),
        ("create", "serviceaccounts/token"),
        ("list", "namespaces"),
    ] {
        let anywhere = kubectl(&["auth", "can-i", verb, resource, "--as", server, "-A"]);
        assert_eq!(
            text(&anywhere.stdout).trim(),
            "no",
            "server may {verb} {resource} cluster-wide"
        );
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
    let server = k8s_server(dir.path(), free_port());
    let just = |recipe: &str| {
        Command::new("just")
            .arg(recipe)
            .current_dir(repo_root())
            .env("HODEI_SERVER_URL", server.url())
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
    // 512Mi, as the container's cgroup (v1 or v2) enforces it.
    assert!(stdout.contains("memory limit: 536870912"), "{stdout}");

    let verify = Command::new(repo_root().join("scripts/verify-k8s-jobs.sh"))
        .args([
            "--kubeconfig",
            &env("HODEI_E2E_KUBECONFIG"),
            "--server",
            &server.url(),
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
    wait_until(Duration::from_secs(60), "no worker pod is left", || {
        pods(None).is_empty()
    })
    .unwrap();
}

/// The image of a pod that runs but never registers: the node's pause image.
fn idle_image() -> String {
    std::env::var("HODEI_E2E_IDLE_IMAGE").unwrap_or_else(|_| "hodei.local/pause:3.10".into())
}

/// `(worker id, pod name, pod uid)` of the pod of job `id`, once it exists.
fn worker_pod(id: &str) -> (String, String, String) {
    let pod = wait_until(Duration::from_secs(30), "the worker pod exists", || {
        pods(Some(id)).into_iter().next()
    })
    .unwrap();
    let field = |path: &str| {
        pod.pointer(path)
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    };
    (
        field("/metadata/labels/hodei.io~1worker-id"),
        field("/metadata/name"),
        field("/metadata/uid"),
    )
}

/// A worker ServiceAccount token for `audience`, bound to `pod` when given.
fn worker_token(audience: &str, pod: Option<(&str, &str)>) -> String {
    let mut args = vec![
        "create",
        "token",
        "hodei-jobs-worker",
        "-n",
        NAMESPACE,
        "--audience",
        audience,
        "--duration",
        "10m",
    ];
    if let Some((name, uid)) = pod {
        args.extend([
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            name,
            "--bound-object-uid",
            uid,
        ]);
    }
    let out = kubectl(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// Registers as `worker_id` with `credential` over a raw WorkerService stream, as a
/// forger would. `Ok` when the server accepted it and sent the assignment.
fn register_raw(url: &str, worker_id: &str, credential: &str) -> Result<(), tonic::Status> {
    use hodei_proto::v1::{
        self as pb, server_message, worker_message, worker_service_client::WorkerServiceClient,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = WorkerServiceClient::connect(url.to_owned()).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::WorkerMessage {
            message: Some(worker_message::Message::Register(pb::Register {
                worker_id: worker_id.to_owned(),
                credential: credential.to_owned(),
                worker_version: "forged".to_owned(),
            })),
        })
        .await
        .unwrap();
        let mut stream = client
            .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        let first = stream.message().await?.and_then(|m| m.message);
        assert!(
            matches!(first, Some(server_message::Message::Assignment(_))),
            "{first:?}"
        );
        drop(tx);
        Ok(())
    })
}

/// Checks that a registration was refused as UNAUTHENTICATED, saying `why`.
fn assert_refused(result: Result<(), tonic::Status>, what: &str, why: &str) {
    let status = result.expect_err(what);
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "{what}: {status:?}"
    );
    assert!(status.message().contains(why), "{what}: {status:?}");
}

/// `kubectl apply` (or `delete` with `verb`) of a manifest given inline.
fn kubectl_manifest(verb: &str, manifest: &str) -> Output {
    use std::io::Write as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(env("HODEI_E2E_KUBECONFIG"))
        .args([verb, "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// `hodei args` against `url` with `token` as HODEI_TOKEN.
fn hodei_with_token(url: &str, token: &str, args: &[&str]) -> Output {
    Command::new(HODEI)
        .args(args)
        .env("HODEI_SERVER_URL", url)
        .env("HODEI_TOKEN", token)
        .env_remove("HODEI_TOKEN_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn only_a_token_bound_to_the_workers_own_pod_registers_and_only_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = k8s_server(dir.path(), free_port());
    // Pods that run but never register, so their registrations stay open.
    let idle = idle_image();
    let a = detach(&server, &["--image", &idle, "--", "true"]);
    let b = detach(&server, &["--image", &idle, "--", "true"]);
    let (worker_a, pod_a, uid_a) = worker_pod(&a);
    let (_, pod_b, uid_b) = worker_pod(&b);

    let other_pod = worker_token("hodei", Some((&pod_b, &uid_b)));
    assert_refused(
        register_raw(&server.worker_url(), &worker_a, &other_pod),
        "a token bound to another pod",
        &format!("bound to pod \"{pod_b}\""),
    );
    let wrong_audience = worker_token("not-hodei", Some((&pod_a, &uid_a)));
    assert_refused(
        register_raw(&server.worker_url(), &worker_a, &wrong_audience),
        "a token for another audience",
        "the API server refused the token",
    );
    let unbound = worker_token("hodei", None);
    assert_refused(
        register_raw(&server.worker_url(), &worker_a, &unbound),
        "a token bound to no pod",
        "bound to pod \"none\"",
    );

    // The refusals did not use up the registration: the right pod's token still works,
    // once.
    let right = worker_token("hodei", Some((&pod_a, &uid_a)));
    register_raw(&server.worker_url(), &worker_a, &right).expect("the pod's own token registers");
    assert_refused(
        register_raw(&server.worker_url(), &worker_a, &right),
        "the same token again",
        "already used",
    );

    let log = server.log();
    for token in [&other_pod, &wrong_audience, &unbound, &right] {
        assert!(
            !log.contains(token.as_str()),
            "a token is in the server log"
        );
    }
    for id in [&a, &b] {
        let out = server.hodei(&["cancel", id]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    wait_until_pods_gone(&a);
    wait_until_pods_gone(&b);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_registered_workers_pod_token_cannot_register_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = k8s_server(dir.path(), free_port());
    let id = detach(
        &server,
        &["--", "sh", "-c", "echo started; sleep 8; echo done"],
    );
    let (worker, pod, uid) = worker_pod(&id);
    wait_until(Duration::from_secs(60), "the job runs", || {
        (server.job(&id)["state"]["phase"] == "running").then_some(())
    })
    .unwrap();
    let replay = worker_token("hodei", Some((&pod, &uid)));
    assert_refused(
        register_raw(&server.worker_url(), &worker, &replay),
        "a valid pod token after the worker registered",
        "already used",
    );
    let logs = server.hodei(&["logs", "-f", &id]);
    assert_eq!(text(&logs.stdout), "started\ndone\n");
    assert_eq!(server.job(&id)["state"]["phase"], "succeeded");
    wait_until_pods_gone(&id);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_worker_identity_token_is_useless_against_the_api_server() {
    let server = text(
        &kubectl(&[
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])
        .stdout,
    );
    let token = worker_token("hodei", None);
    // No kubeconfig credentials: only the token speaks.
    let empty = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(empty.path())
        .args([
            "--server",
            &server,
            "--insecure-skip-tls-verify",
            "--token",
            &token,
            "get",
            "pods",
            "-n",
            NAMESPACE,
        ])
        .output()
        .expect("kubectl runs");
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Unauthorized"), "{stderr}");
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_kubernetes_token_submits_jobs_only_when_a_role_allows_it() {
    use hodei_test_fixtures::ServerCommand;

    const ACCOUNT: &str = "hodei-e2e-submitter";
    let server_account = "system:serviceaccount:hodei-jobs:hodei-jobs-server";
    // The setup lets the server review tokens and access, nothing more (see
    // the_worker_account_cannot_manage_pods_and_the_server_account_can).
    let may_review = text(
        &kubectl(&[
            "auth",
            "can-i",
            "create",
            "subjectaccessreviews.authorization.k8s.io",
            "--as",
            server_account,
        ])
        .stdout,
    )
    .trim()
        == "yes";
    assert!(
        may_review,
        "the setup grants {server_account} subjectaccessreviews"
    );
    let account = format!(
        "apiVersion: v1
kind: ServiceAccount
metadata: {{name: {ACCOUNT}, namespace: {NAMESPACE}}}
"
    );
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {ACCOUNT}, namespace: {NAMESPACE}}}
rules: [{{apiGroups: [hodei.io], resources: [jobs], verbs: [create]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {ACCOUNT}, namespace: {NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {ACCOUNT}}}
subjects: [{{kind: ServiceAccount, name: {ACCOUNT}, namespace: {NAMESPACE}}}]
"
    );
    // A Role left by an earlier run that stopped half-way would grant too much.
    let _ = kubectl_manifest("delete", &role);
    let out = kubectl_manifest("apply", &account);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token_for = |audience: &str| {
        let out = kubectl(&[
            "create",
            "token",
            ACCOUNT,
            "-n",
            NAMESPACE,
            "--audience",
            audience,
            "--duration",
            "10m",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let token = token_for("hodei");
    let wrong_audience = token_for("not-hodei");

    let dir = tempfile::tempdir().unwrap();
    let worker_port = free_port();
    let process = ServerCommand::new(support::SERVER)
        .port(free_port())
        .worker_port(worker_port)
        .env("HODEI_DATA_DIR", dir.path())
        .env("HODEI_ADVERTISE_ADDRESS", advertise_address(worker_port))
        .env("HODEI_LOCAL_ENABLED", "false")
        .env("HODEI_KUBERNETES_ENABLED", "1")
        .env("HODEI_K8S_KUBECONFIG", env("HODEI_E2E_SERVER_KUBECONFIG"))
        .env("HODEI_K8S_NAMESPACE", NAMESPACE)
        .env("HODEI_WORKER_IMAGE", env("HODEI_E2E_WORKER_IMAGE"))
        .env("HODEI_AUTH_KUBERNETES", "1")
        .log_file(dir.path().join("server.log"))
        .spawn()
        .unwrap();
    let url = process.url();
    // Without a Role the token is known but may do nothing.
    wait_until(Duration::from_secs(30), "the server answers", || {
        let out = hodei_with_token(&url, &token, &["list"]);
        text(&out.stderr).contains("may not")
    })
    .unwrap_or_else(|e| panic!("{e}; server log:\n{}", process.log()));
    let refused = hodei_with_token(&url, &token, &["run", "--", "true"]);
    assert_eq!(refused.status.code(), Some(125));
    assert!(
        text(&refused.stderr).contains("may not submit"),
        "{}",
        text(&refused.stderr)
    );
    let out = hodei_with_token(&url, &wrong_audience, &["list"]);
    assert!(
        text(&out.stderr).contains("hint: set HODEI_TOKEN"),
        "a token for another audience is unauthenticated: {}",
        text(&out.stderr)
    );

    let out = kubectl_manifest("apply", &role);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Access decisions are cached for 10 s.
    wait_until(Duration::from_secs(30), "the Role takes effect", || {
        hodei_with_token(&url, &token, &["list"]).status.success()
    })
    .unwrap();
    let ran = hodei_with_token(&url, &token, &["run", "--", "echo", "hello"]);
    assert_eq!(text(&ran.stdout), "hello\n", "{}", text(&ran.stderr));
    let listed = hodei_with_token(&url, &token, &["list", "-o", "json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let jobs = &listed["jobs"];
    assert_eq!(
        jobs[0]["owner"],
        format!("system:serviceaccount:{NAMESPACE}:{ACCOUNT}")
    );
    let id = jobs[0]["id"].as_str().unwrap().to_owned();
    wait_until_pods_gone(&id);

    process.stop(Duration::from_secs(30)).unwrap();
    let _ = kubectl_manifest("delete", &role);
    let _ = kubectl_manifest("delete", &account);
}

#[test]
#[ignore = "needs a Kubernetes cluster: run scripts/e2e.sh (just e2e)"]
fn a_worker_pod_verifies_the_servers_certificate_with_the_ca_from_its_config_map() {
    use hodei_test_fixtures::ServerCommand;

    const CA_CONFIG_MAP: &str = "hodei-e2e-server-ca";
    let dir = tempfile::tempdir().unwrap();
    let worker_port = free_port();
    let exposed = advertise_address(worker_port);
    let host_port = exposed.strip_prefix("http://").unwrap().to_owned();
    let host = host_port.rsplit_once(':').unwrap().0.to_owned();

    // A CA and a certificate for the address pods dial and for the CLI's loopback.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host, "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.path().join("ca.crt"),
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    );
    std::fs::write(&ca_path, &ca_pem).unwrap();
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let _ = kubectl(&[
        "delete",
        "configmap",
        CA_CONFIG_MAP,
        "-n",
        NAMESPACE,
        "--ignore-not-found",
    ]);
    let out = kubectl(&[
        "create",
        "configmap",
        CA_CONFIG_MAP,
        "-n",
        NAMESPACE,
        &format!("--from-file=ca.crt={}", ca_path.display()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let process = ServerCommand::new(support::SERVER)
        .port(free_port())
        .worker_port(worker_port)
        .env("HODEI_DATA_DIR", dir.path())
        .env("HODEI_ADVERTISE_ADDRESS", format!("https://{host_port}"))
        .env("HODEI_LOCAL_ENABLED", "false")
        .env("HODEI_KUBERNETES_ENABLED", "1")
        .env("HODEI_K8S_KUBECONFIG", env("HODEI_E2E_SERVER_KUBECONFIG"))
        .env("HODEI_K8S_NAMESPACE", NAMESPACE)
        .env("HODEI_WORKER_IMAGE", env("HODEI_E2E_WORKER_IMAGE"))
        .env("HODEI_TLS_CERT", &cert_path)
        .env("HODEI_TLS_KEY", &key_path)
        .env("HODEI_K8S_SERVER_CA_CONFIGMAP", CA_CONFIG_MAP)
        .log_file(dir.path().join("server.log"))
        .spawn()
        .unwrap();
    let url = format!("https://127.0.0.1:{}", process.port());
    let hodei = |args: &[&str]| {
        Command::new(HODEI)
            .args(["--server", &url, "--ca-cert"])
            .arg(&ca_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    wait_until(Duration::from_secs(30), "the server answers", || {
        hodei(&["list"]).status.success()
    })
    .unwrap_or_else(|e| panic!("{e}; server log:\n{}", process.log()));

    // The worker dials https:// and trusts only the system roots and the mounted CA.
    let out = hodei(&["run", "--", "echo", "over tls"]);
    assert_eq!(text(&out.stdout), "over tls\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));
    let listed = hodei(&["list", "-o", "json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let jobs = &listed["jobs"];
    let id = jobs[0]["id"].as_str().unwrap().to_owned();
    wait_until_pods_gone(&id);

    process.stop(Duration::from_secs(30)).unwrap();
    let _ = kubectl(&["delete", "configmap", CA_CONFIG_MAP, "-n", NAMESPACE]);
}
