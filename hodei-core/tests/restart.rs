//! Jobs outlive the server: a server dropped where it stands (its runtime shut down, as
//! in a crash) or shut down holding its jobs, and a new one started on the same data
//! dir and ports, which adopts the running jobs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use common::{Behaviour, TaskProvider, TestServer, follow, sh};
use hodei_core::{
    HodeiClient, HodeiServer, JobEvent, JobSpec, JobState, OutputStream, Provider,
    controller::{ControllerConfig, ShutdownMode},
    resume::FollowEvent,
};
use hodei_test_fixtures::wait_until;
use time::OffsetDateTime;

const LINES: usize = 1000;
const WINDOW: Duration = Duration::from_secs(60);

/// The job API and worker API addresses, the same for every server of a test.
#[derive(Clone, Copy)]
struct Ports {
    jobs: SocketAddr,
    workers: SocketAddr,
}

impl Ports {
    fn free() -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        Self {
            jobs: free(),
            workers: free(),
        }
    }

    fn jobs_url(self) -> String {
        format!("http://{}", self.jobs)
    }
}

fn config() -> ControllerConfig {
    ControllerConfig {
        heartbeat_interval: Duration::from_millis(200),
        heartbeat_timeout: Duration::from_secs(3),
        kill_grace: Duration::from_secs(1),
        result_grace: Duration::from_secs(1),
        reconnect_window: WINDOW,
        on_shutdown: ShutdownMode::HoldJobs,
        ..ControllerConfig::default()
    }
}

async fn build(provider: Arc<dyn Provider>, dir: &Path, ports: Ports) -> HodeiServer {
    HodeiServer::builder(dir)
        .shared_provider(provider)
        .listen_addr(ports.jobs)
        .worker_listen_addr(ports.workers)
        .controller(config())
        .start()
        .await
        .unwrap()
}

/// Workers run as tasks of the test's runtime, so they outlive a server in its own.
fn provider() -> Arc<dyn Provider> {
    Arc::new(TaskProvider {
        workers_runtime: Some(tokio::runtime::Handle::current()),
        worker_reconnect_window: Some(WINDOW),
        ..TaskProvider::new(Behaviour::RunWorker)
    })
}

/// A server in a runtime of its own: dropping that runtime drops every task of the
/// server where it stands, as a crash would.
struct CrashableServer {
    crash: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl CrashableServer {
    async fn start(provider: Arc<dyn Provider>, dir: &Path, ports: Ports) -> Self {
        let (crash, crashed) = std::sync::mpsc::channel::<()>();
        let (ready, is_ready) = tokio::sync::oneshot::channel();
        let dir = dir.to_owned();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let server = runtime.block_on(build(provider, &dir, ports));
            runtime.spawn(async move {
                server
                    .serve_with_shutdown(std::future::pending())
                    .await
                    .unwrap();
            });
            let _ = ready.send(());
            let _ = crashed.recv();
            runtime.shutdown_timeout(Duration::from_secs(10));
        });
        is_ready.await.expect("the first server started");
        Self { crash, thread }
    }

    /// Drops the server's every task and waits until they are gone (and the data dir
    /// lock with them).
    async fn crash(self) {
        self.crash.send(()).unwrap();
        tokio::task::spawn_blocking(move || self.thread.join().unwrap())
            .await
            .unwrap();
    }
}

fn numbered_lines() -> JobSpec {
    sh(&format!(
        "i=1; while [ $i -le {LINES} ]; do echo line $i; i=$((i+1)); sleep 0.01; done"
    ))
}

fn expected_lines() -> String {
    (1..=LINES).map(|i| format!("line {i}\n")).collect()
}

/// Follows `job` through server restarts; returns its stdout and final state.
async fn follow_through_restarts(
    client: HodeiClient,
    job: hodei_core::JobId,
) -> (String, JobState) {
    let mut events = client.follow_resuming(job, 0, WINDOW);
    let mut stdout = Vec::new();
    let mut last = None;
    while let Some(event) = events.next().await {
        match event.unwrap() {
            FollowEvent::Job(JobEvent::Output(chunk)) if chunk.stream == OutputStream::Stdout => {
                stdout.extend_from_slice(&chunk.data);
            }
            FollowEvent::Job(JobEvent::State { state, .. }) => last = Some(state),
            _ => {}
        }
    }
    (
        String::from_utf8(stdout).unwrap(),
        last.expect("a final state"),
    )
}

/// The follow started before the restart saw every line once and the job succeed, and
/// the log holds every line once.
async fn assert_succeeded_with_every_line_once(
    follower: tokio::task::JoinHandle<(String, JobState)>,
    server: &TestServer,
    job: &hodei_core::Job,
) {
    let (stdout, state) = tokio::time::timeout(Duration::from_secs(90), follower)
        .await
        .expect("the follow ends")
        .unwrap();
    assert_eq!(state, JobState::Succeeded);
    assert!(stdout == expected_lines(), "followed output: {stdout}");
    let stored = follow(&server.client, job, 0).await;
    assert!(
        stored.stdout == expected_lines().as_bytes(),
        "stored output: {}",
        String::from_utf8_lossy(&stored.stdout)
    );
}

/// The job once it has ended, waiting up to 30 s.
async fn ended(client: &HodeiClient, id: hodei_core::JobId) -> hodei_core::Job {
    wait_until(Duration::from_secs(30), "the job ends", || async {
        let job = client.get(id).await.unwrap();
        job.state.is_terminal().then_some(job)
    })
    .await
    .unwrap()
}

async fn wait_for_lines(client: &HodeiClient, job: &hodei_core::Job, lines: usize) {
    wait_until(Duration::from_secs(20), "the job prints", || async {
        let got = follow_snapshot(client, job).await;
        got.matches('\n').count() >= lines
    })
    .await
    .unwrap();
}

/// What the job's log holds now.
async fn follow_snapshot(client: &HodeiClient, job: &hodei_core::Job) -> String {
    let mut events = client.follow(job.id).send().await.unwrap();
    let mut text = Vec::new();
    while let Some(event) = futures::StreamExt::next(&mut events).await {
        if let Ok(JobEvent::Output(chunk)) = event {
            text.extend_from_slice(&chunk.data);
        }
    }
    String::from_utf8(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_through_a_server_crash_and_each_line_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let provider = provider();
    let first = CrashableServer::start(Arc::clone(&provider), dir.path(), ports).await;
    let client = HodeiClient::connect(ports.jobs_url()).await.unwrap();
    let job = client.submit(&numbered_lines()).await.unwrap();
    let follower = tokio::spawn(follow_through_restarts(client.clone(), job.id));
    wait_for_lines(&client, &job, 50).await;

    first.crash().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = TestServer::serve(build(provider, dir.path(), ports).await, dir.path()).await;

    assert_succeeded_with_every_line_once(follower, &second, &job).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_holds_the_job_for_the_next_server() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let provider = provider();
    let first = TestServer::serve(
        build(Arc::clone(&provider), dir.path(), ports).await,
        dir.path(),
    )
    .await;
    let job = first.client.submit(&numbered_lines()).await.unwrap();
    let follower = tokio::spawn(follow_through_restarts(first.client.clone(), job.id));
    wait_for_lines(&first.client, &job, 50).await;

    first.stop().await;
    let second = TestServer::serve(build(provider, dir.path(), ports).await, dir.path()).await;

    assert_succeeded_with_every_line_once(follower, &second, &job).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_extend_a_jobs_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(8);
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let provider = provider();
    let first = CrashableServer::start(Arc::clone(&provider), dir.path(), ports).await;
    let client = HodeiClient::connect(ports.jobs_url()).await.unwrap();
    let spec = JobSpec::builder("sleep")
        .args(["1000"])
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let job = client.submit(&spec).await.unwrap();
    wait_until(Duration::from_secs(10), "the job runs", || async {
        client.get(job.id).await.unwrap().state == JobState::Running
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.crash().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = TestServer::serve(build(provider, dir.path(), ports).await, dir.path()).await;

    let ended = ended(&second.client, job.id).await;
    assert!(
        matches!(ended.state, JobState::TimedOut { timeout, .. } if timeout == TIMEOUT),
        "{:?}",
        ended.state
    );
    let ran: Duration = (ended.finished_at.unwrap() - ended.started_at.unwrap())
        .try_into()
        .unwrap();
    // Counted from the start, the timeout ends the job by 8 s plus the kill and result
    // graces (2 s); counted again from the restart (5 s in) it would not end before 13 s.
    assert!(
        ran >= TIMEOUT && ran < Duration::from_millis(11_500),
        "the job ran {ran:?}"
    );
    assert!(ended.finished_at.unwrap() <= OffsetDateTime::now_utc());
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_asked_before_a_crash_still_stops_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let provider = provider();
    let first = CrashableServer::start(Arc::clone(&provider), dir.path(), ports).await;
    let client = HodeiClient::connect(ports.jobs_url()).await.unwrap();
    // Slow to stop, so the server is gone before the job has ended.
    let job = client
        .submit(&sh(
            "trap 'echo stopping; sleep 3; echo stopped; exit 0' TERM; echo up; sleep 1000 & wait",
        ))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the job runs", || async {
        follow_snapshot(&client, &job).await == "up\n"
    })
    .await
    .unwrap();
    assert!(client.cancel(job.id).await.unwrap().requested);
    wait_until(Duration::from_secs(10), "the job stops", || async {
        follow_snapshot(&client, &job).await.contains("stopping")
    })
    .await
    .unwrap();
    first.crash().await;
    let second = TestServer::serve(build(provider, dir.path(), ports).await, dir.path()).await;

    let ended = ended(&second.client, job.id).await;
    assert!(
        matches!(ended.state, JobState::Cancelled { .. }),
        "{:?}",
        ended.state
    );
    second.stop().await;
}
