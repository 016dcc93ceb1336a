//! Shared fixtures: a server on a loopback port with workers running as in-process tasks.

#![allow(dead_code, clippy::unwrap_used)]

use std::{
    future::ready,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use hodei_core::{
    HodeiClient, HodeiServer, Job, JobEvent, JobSpec, JobState, OutputStream, WorkerAgent,
    WorkerId,
    controller::ControllerConfig,
    provider::{
        KnownWorkers, Provider, ProviderCapabilities, ProviderError, ProviderHealth,
        ProvisionedWorker, WorkerEvent, WorkerLaunch,
    },
};
use hodei_test_fixtures::wait_until;
use tokio::{sync::mpsc, task::JoinHandle};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A server policy without retries: a failure ends the job at once, as a test of that
/// failure expects.
pub fn failures_end_jobs() -> hodei_core::controller::RetrySettings {
    hodei_core::controller::RetrySettings {
        infrastructure_retries: 0,
        ..Default::default()
    }
}

/// A job running `script` with `sh -c`.
pub fn sh(script: &str) -> JobSpec {
    JobSpec::builder("sh").args(["-c", script]).build().unwrap()
}

/// What gRPC health at `url` answers for `service` ("" for the whole server).
pub async fn health(url: &str, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap();
    response.into_inner().status()
}

/// Waits up to `limit` until gRPC health at `url` answers `status` for `service`.
pub async fn wait_for_health(url: &str, service: &str, status: ServingStatus, limit: Duration) {
    let what = format!("health of {service:?} turns {status:?}");
    wait_until(limit, &what, || async {
        health(url, service).await == status
    })
    .await
    .unwrap();
}

/// How the fake platform treats a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Start a real worker agent as a task.
    RunWorker,
    /// Accept the launch but never start anything.
    NeverStart,
}

/// Runs each worker as a `WorkerAgent` task in this process (the job's command is still
/// a real child process), and records what happened for assertions.
#[derive(Debug, Clone)]
pub struct TaskProvider {
    pub behaviour: Behaviour,
    /// Workers prove themselves with a platform credential (`pod-token-<worker id>`)
    /// instead of a one-time token; the first check fails as if the platform were
    /// unreachable.
    pub platform_identity: bool,
    /// Platform credentials checked, in order.
    pub verified: Arc<Mutex<Vec<String>>>,
    pub launches: Arc<Mutex<Vec<WorkerLaunch>>>,
    pub destroyed: Arc<Mutex<Vec<WorkerId>>>,
    /// CA bundle (PEM) the workers verify an `https://` server with.
    pub server_ca: Option<Vec<u8>>,
    /// The workers' reconnect window; the agent's default when `None`.
    pub worker_reconnect_window: Option<Duration>,
    /// Where worker tasks run; the runtime of the provision call when `None`. A server
    /// in a runtime of its own can then be dropped while its workers run on.
    pub workers_runtime: Option<tokio::runtime::Handle>,
    pub tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TaskProvider {
    pub fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            platform_identity: false,
            verified: Arc::default(),
            launches: Arc::default(),
            destroyed: Arc::default(),
            server_ca: None,
            worker_reconnect_window: None,
            workers_runtime: None,
            tasks: Arc::default(),
        }
    }

    pub fn destroyed(&self) -> Vec<WorkerId> {
        self.destroyed.lock().unwrap().clone()
    }

    pub fn launches(&self) -> Vec<WorkerLaunch> {
        self.launches.lock().unwrap().clone()
    }

    /// The latest launch, waiting up to 10 s for one.
    pub async fn next_launch(&self) -> WorkerLaunch {
        wait_until(Duration::from_secs(10), "a worker is launched", || {
            ready(self.launches().last().cloned())
        })
        .await
        .unwrap()
    }
}

#[async_trait]
impl Provider for TaskProvider {
    fn name(&self) -> &str {
        "tasks"
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            containers: false,
            max_workers: None,
            registration_timeout: Duration::from_secs(10),
            worker_proof: if self.platform_identity {
                hodei_core::provider::WorkerProof::PlatformIdentity
            } else {
                hodei_core::provider::WorkerProof::OneTimeToken
            },
        }
    }

    async fn health(&self) -> ProviderHealth {
        ProviderHealth::Healthy
    }

    async fn provision(&self, launch: WorkerLaunch) -> Result<ProvisionedWorker, ProviderError> {
        self.launches.lock().unwrap().push(launch.clone());
        let (events_tx, events) = mpsc::unbounded_channel();
        if self.behaviour == Behaviour::RunWorker {
            let agent = WorkerAgent::builder(
                launch.server_address,
                launch.worker_id,
                launch
                    .otp_token
                    .unwrap_or_else(|| format!("pod-token-{}", launch.worker_id)),
            )
            .maybe_server_ca(self.server_ca.clone())
            .maybe_reconnect_window(self.worker_reconnect_window)
            .build();
            let run = async move {
                let result = agent.run(std::future::pending()).await;
                let message = match result {
                    Ok(report) => format!("worker finished: {report:?}"),
                    Err(error) => format!("worker failed: {error}"),
                };
                let _ = events_tx.send(WorkerEvent::Exited {
                    exit: None,
                    message,
                });
            };
            let task = match &self.workers_runtime {
                Some(runtime) => runtime.spawn(run),
                None => tokio::spawn(run),
            };
            self.tasks.lock().unwrap().push(task);
        } else {
            // Keep the sender alive so the controller sees no event at all.
            std::mem::forget(events_tx);
        }
        Ok(ProvisionedWorker {
            description: "task".into(),
            events,
            locator: None,
        })
    }

    async fn destroy(&self, worker_id: WorkerId) -> Result<(), ProviderError> {
        self.destroyed.lock().unwrap().push(worker_id);
        Ok(())
    }

    async fn cleanup_orphans(&self, _known: &dyn KnownWorkers) -> Result<usize, ProviderError> {
        Ok(0)
    }

    async fn verify_worker(
        &self,
        worker_id: WorkerId,
        credential: &str,
    ) -> Result<(), ProviderError> {
        let first = {
            let mut verified = self.verified.lock().unwrap();
            verified.push(credential.to_owned());
            verified.len() == 1
        };
        if !self.platform_identity {
            return Err(ProviderError::fatal("IdentityUnsupported", "no"));
        }
        if first {
            return Err(ProviderError::retryable("ApiDown", "the platform is down"));
        }
        if credential == format!("pod-token-{worker_id}") {
            Ok(())
        } else {
            Err(ProviderError::fatal(
                "IdentityRefused",
                "not this worker's pod",
            ))
        }
    }
}

/// A server on 127.0.0.1 with a temporary data dir, and a client connected to it.
pub struct TestServer {
    pub client: HodeiClient,
    /// The job API.
    pub url: String,
    /// The worker API.
    pub worker_url: String,
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Serves `server` in a task until the sender is used (or dropped); the task ends when
/// the server has drained.
pub fn serve_in_background(
    server: HodeiServer,
) -> (tokio::sync::oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .serve_with_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (stop, task)
}

impl TestServer {
    pub async fn start(provider: impl Provider, data_dir: &Path) -> Self {
        Self::start_shared(Arc::new(provider), data_dir, Duration::from_secs(2)).await
    }

    /// With a shared provider and a short heartbeat timeout, so lost workers show fast.
    pub async fn start_shared(
        provider: Arc<dyn Provider>,
        data_dir: &Path,
        kill_grace: Duration,
    ) -> Self {
        Self::start_configured(provider, data_dir, kill_grace, |config| config).await
    }

    /// Like [`start_shared`](Self::start_shared), with the controller config `adjust`ed.
    pub async fn start_configured(
        provider: Arc<dyn Provider>,
        data_dir: &Path,
        kill_grace: Duration,
        adjust: impl FnOnce(ControllerConfig) -> ControllerConfig,
    ) -> Self {
        let server = HodeiServer::builder(data_dir)
            .shared_provider(provider)
            .listen_addr("127.0.0.1:0".parse().unwrap())
            .worker_listen_addr("127.0.0.1:0".parse().unwrap())
            .controller(adjust(ControllerConfig {
                heartbeat_interval: Duration::from_millis(200),
                heartbeat_timeout: Duration::from_secs(3),
                kill_grace,
                retry: failures_end_jobs(),
                ..ControllerConfig::default()
            }))
            .start()
            .await
            .unwrap();
        Self::serve(server, data_dir).await
    }

    /// Serves `server`, started by the caller on `data_dir`, with a client connected.
    pub async fn serve(server: HodeiServer, data_dir: &Path) -> Self {
        let url = format!("http://{}", server.local_addr());
        let worker_url = format!("http://{}", server.worker_addr());
        let (stop, task) = serve_in_background(server);
        let client = HodeiClient::connect(url.clone()).await.unwrap();
        Self {
            client,
            url,
            worker_url,
            data_dir: data_dir.to_owned(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// Everything a followed job produced.
#[derive(Debug, Default)]
pub struct Followed {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub seqs: Vec<u64>,
    pub states: Vec<JobState>,
}

impl Followed {
    pub fn final_state(&self) -> &JobState {
        self.states.last().expect("no state received")
    }
}

/// Follows a job to its end, collecting output and states.
pub async fn follow(client: &HodeiClient, job: &Job, from_seq: u64) -> Followed {
    let mut events = client
        .follow(job.id)
        .from_seq(from_seq)
        .live()
        .await
        .unwrap();
    let mut followed = Followed::default();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("follow stalled")
    {
        match event.unwrap() {
            JobEvent::Output(chunk) => {
                followed.seqs.push(chunk.seq);
                match chunk.stream {
                    OutputStream::Stdout => followed.stdout.extend_from_slice(&chunk.data),
                    OutputStream::Stderr => followed.stderr.extend_from_slice(&chunk.data),
                }
            }
            JobEvent::State { state, .. } => followed.states.push(state),
        }
    }
    followed
}

/// Waits up to 5 s until `pid` no longer exists (or is a zombie nobody reaps); `after`
/// says after what, e.g. "after the cancel".
pub async fn wait_gone(pid: i32, after: &str) {
    wait_until(
        Duration::from_secs(5),
        &format!("process {pid} is gone {after}"),
        || ready(!is_alive(pid)),
    )
    .await
    .unwrap();
}

fn is_alive(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .any(|l| l.starts_with("State:") && !l.contains("Z (zombie)"))
}
