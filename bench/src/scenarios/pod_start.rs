//! Start latency of worker pods, split into phases: sequential `echo` jobs on the
//! Kubernetes provider, timed by the follower and by a watch on the namespace's pods.
//! Baselines: the same command as a plain pod, through `kubectl run` + `kubectl wait` and
//! through one API create.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hodei_core::JobState;

use crate::{
    baseline_pods,
    binaries::Binaries,
    config::Start,
    jobs::{self, ms},
    pod_clock::{PodClock, between},
    report::{Figure, percentiles},
    server::ServerProcess,
    target::{Cluster, Target},
};

/// Longest a pod may take to be deleted, or a baseline pod to finish.
const POD_PATIENCE: Duration = Duration::from_secs(60);
const SCRIPT: &str = "echo hello";

/// Per-phase samples (ms) of the hodei jobs.
#[derive(Default)]
struct Phases {
    submit_to_created: Vec<f64>,
    created_to_scheduled: Vec<f64>,
    scheduled_to_pod_running: Vec<f64>,
    scheduled_to_registered: Vec<f64>,
    registered_to_first_output: Vec<f64>,
    submit_to_first_output: Vec<f64>,
    submit_to_terminal: Vec<f64>,
    terminal_to_pod_gone: Vec<f64>,
}

pub async fn run(params: Start, bins: &Binaries, target: &Target) -> anyhow::Result<Vec<Figure>> {
    let Target::Kubernetes(cluster) = target else {
        anyhow::bail!("the pod start scenario needs --provider kubernetes");
    };
    let n = params.jobs;
    let clock = PodClock::start(cluster.client.clone(), &cluster.settings.namespace).await?;
    let server = ServerProcess::start(bins, target, 16).await?;
    let client = server.client().await?;
    let echo = jobs::spec("sh", &["-c".to_owned(), SCRIPT.to_owned()])?;
    // One job first, so the first figure is not the cost of a cold connection.
    jobs::run(&client, &echo, true, |_| {}).await?;

    let mut phases = Phases::default();
    for _ in 0..n {
        let trace = jobs::run(&client, &echo, true, |_| {}).await?;
        ensure!(
            trace.state == JobState::Succeeded,
            "job {} ended {:?}",
            trace.id,
            trace.state
        );
        let (name, pod) = clock
            .job(&trace.id.to_string())
            .with_context(|| format!("no pod seen for job {}", trace.id))?;
        let at = |d: Option<Duration>| d.map(|d| trace.start + d);
        let (registered, first_output) = (at(trace.running), at(trace.first_output));
        let terminal = trace.start + trace.terminal;
        let samples = [
            (
                &mut phases.submit_to_created,
                between(Some(trace.start), pod.created),
            ),
            (
                &mut phases.created_to_scheduled,
                between(pod.created, pod.scheduled),
            ),
            (
                &mut phases.scheduled_to_pod_running,
                between(pod.scheduled, pod.running),
            ),
            (
                &mut phases.scheduled_to_registered,
                between(pod.scheduled, registered),
            ),
            (
                &mut phases.registered_to_first_output,
                between(registered, first_output),
            ),
            (
                &mut phases.submit_to_first_output,
                trace.first_output.map(ms),
            ),
            (&mut phases.submit_to_terminal, Some(ms(trace.terminal))),
        ];
        for (into, sample) in samples {
            into.extend(sample);
        }
        clock.wait_gone(&name, POD_PATIENCE).await?;
        phases.terminal_to_pod_gone.extend(between(
            Some(terminal),
            clock.pod(&name).and_then(|p| p.gone),
        ));
    }
    server.stop().await?;

    let kubectl = kubectl_baseline(cluster, &clock, n).await?;
    let api = api_baseline(cluster, &clock, n).await?;
    Ok(figures(n, &phases, &kubectl, &api))
}

/// Samples (ms) of the baseline pods.
#[derive(Default)]
struct Baseline {
    /// Until the command that starts the pod returned.
    created_call: Vec<f64>,
    /// Until the pod was seen Succeeded (`kubectl wait` returned, for kubectl).
    finished: Vec<f64>,
    created_to_scheduled: Vec<f64>,
    scheduled_to_running: Vec<f64>,
}

impl Baseline {
    fn record(
        &mut self,
        clock: &PodClock,
        name: &str,
        start: Instant,
        created: Instant,
        done: Instant,
    ) {
        self.created_call.push(ms(created - start));
        self.finished.push(ms(done - start));
        if let Some(pod) = clock.pod(name) {
            self.created_to_scheduled
                .extend(between(pod.created, pod.scheduled));
            self.scheduled_to_running
                .extend(between(pod.scheduled, pod.running));
        }
    }
}

/// `kubectl run` of the same command, `kubectl wait` for Succeeded, then delete.
async fn kubectl_baseline(
    cluster: &Cluster,
    clock: &PodClock,
    n: usize,
) -> anyhow::Result<Baseline> {
    let mut baseline = Baseline::default();
    for i in 0..n {
        let name = format!("hodei-bench-kubectl-{}-{i}", std::process::id());
        let overrides = baseline_pods::manifest(cluster, &name, SCRIPT).to_string();
        let start = Instant::now();
        kubectl(&[
            "run",
            &name,
            "-n",
            &cluster.settings.namespace,
            "--restart=Never",
            "--image",
            &cluster.settings.baseline_image,
            "--overrides",
            &overrides,
        ])
        .await?;
        let created = Instant::now();
        let pod = format!("pod/{name}");
        kubectl(&[
            "wait",
            "-n",
            &cluster.settings.namespace,
            "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=60s",
            &pod,
        ])
        .await?;
        baseline.record(clock, &name, start, created, Instant::now());
        baseline_pods::delete(cluster, &name).await?;
        clock.wait_gone(&name, POD_PATIENCE).await?;
    }
    Ok(baseline)
}

/// One API create of the same pod; done when the watch sees it Succeeded.
async fn api_baseline(cluster: &Cluster, clock: &PodClock, n: usize) -> anyhow::Result<Baseline> {
    let mut baseline = Baseline::default();
    for i in 0..n {
        let name = format!("hodei-bench-api-{}-{i}", std::process::id());
        let start = Instant::now();
        baseline_pods::create(cluster, &name, SCRIPT).await?;
        let created = Instant::now();
        let finished = clock.wait_finished(&name, POD_PATIENCE).await?;
        baseline.record(clock, &name, start, created, finished);
        baseline_pods::delete(cluster, &name).await?;
        clock.wait_gone(&name, POD_PATIENCE).await?;
    }
    Ok(baseline)
}

async fn kubectl(args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new("kubectl")
        .args(args)
        .output()
        .await
        .context("cannot run kubectl")?;
    ensure!(
        output.status.success(),
        "kubectl {} failed: {}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn figures(n: usize, phases: &Phases, kubectl: &Baseline, api: &Baseline) -> Vec<Figure> {
    let watch = "times are arrivals on this machine of the follower's events and of a watch on \
                 the namespace's pods";
    let job = |what: &str| {
        format!(
            "{n} sequential `sh -c '{SCRIPT}'` jobs on the Kubernetes provider after 1 warm-up; {what}; {watch}"
        )
    };
    let mut figures = Vec::new();
    let mut add = |name: &str, samples: &[f64], method: String| {
        figures.extend(percentiles(name, samples, &method));
    };
    add(
        "submit -> pod created",
        &phases.submit_to_created,
        job("just before submit to the pod's first watch event"),
    );
    add(
        "pod created -> scheduled",
        &phases.created_to_scheduled,
        job("first watch event to spec.nodeName set"),
    );
    add(
        "scheduled -> pod Running",
        &phases.scheduled_to_pod_running,
        job("spec.nodeName set to phase Running on the watch"),
    );
    add(
        "scheduled -> worker registered",
        &phases.scheduled_to_registered,
        job(
            "spec.nodeName set to the job's Running state on FollowJob (the worker proved its token and took the job)",
        ),
    );
    add(
        "registered -> first output byte",
        &phases.registered_to_first_output,
        job("Running state to the first OutputChunk at the client"),
    );
    add(
        "submit -> first output byte",
        &phases.submit_to_first_output,
        job("just before submit to the first OutputChunk"),
    );
    add(
        "submit -> terminal",
        &phases.submit_to_terminal,
        job("just before submit to the terminal state on FollowJob"),
    );
    add(
        "terminal -> pod gone",
        &phases.terminal_to_pod_gone,
        job("terminal state to the pod's deletion on the watch"),
    );
    let plain = |how: &str, what: &str| {
        format!(
            "{n} sequential plain pods running `sh -c '{SCRIPT}'` (restricted securityContext, same namespace), {how}; {what}"
        )
    };
    let kubectl_how = "`kubectl run --restart=Never --overrides <pod>` then `kubectl wait --for=jsonpath={.status.phase}=Succeeded`";
    add(
        "baseline kubectl: run returned",
        &kubectl.created_call,
        plain(
            kubectl_how,
            "from just before `kubectl run` until it exited",
        ),
    );
    add(
        "baseline kubectl: run -> Succeeded",
        &kubectl.finished,
        plain(
            kubectl_how,
            "from just before `kubectl run` until `kubectl wait` exited",
        ),
    );
    add(
        "baseline kubectl: pod created -> scheduled",
        &kubectl.created_to_scheduled,
        plain(kubectl_how, watch),
    );
    add(
        "baseline kubectl: scheduled -> pod Running",
        &kubectl.scheduled_to_running,
        plain(kubectl_how, watch),
    );
    let api_how = "one API create from this process";
    add(
        "baseline API: create returned",
        &api.created_call,
        plain(api_how, "create request to its response"),
    );
    add(
        "baseline API: create -> Succeeded seen",
        &api.finished,
        plain(
            api_how,
            "from just before create to phase Succeeded on the watch",
        ),
    );
    add(
        "baseline API: pod created -> scheduled",
        &api.created_to_scheduled,
        plain(api_how, watch),
    );
    add(
        "baseline API: scheduled -> pod Running",
        &api.scheduled_to_running,
        plain(api_how, watch),
    );
    let p50 = |samples: &[f64]| crate::stats::Summary::of(samples).p50;
    figures.push(Figure::new(
        "submit -> terminal / kubectl run -> Succeeded, p50",
        p50(&phases.submit_to_terminal) / p50(&kubectl.finished).max(f64::EPSILON),
        "ratio",
        "ratio of the two p50s above, same cluster, same invocation",
    ));
    figures.push(Figure::new(
        "submit -> terminal / API create -> Succeeded, p50",
        p50(&phases.submit_to_terminal) / p50(&api.finished).max(f64::EPSILON),
        "ratio",
        "ratio of the two p50s above, same cluster, same invocation",
    ));
    figures
}
