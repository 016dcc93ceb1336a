//! The life of one pod bound to this node, from first sight to removal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::error_chain;
use crate::pod_client::PodClient;
use crate::pod_dir::PodDir;
use crate::process::{Exit, Launch, Process};
use crate::status::{self, Phase, Report, State};
use crate::{NodeConfig, Result};

/// Latest version of the pod; `None` once it is gone from the apiserver.
pub(crate) type PodUpdates = watch::Receiver<Option<Pod>>;

/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Grace for containers whose pod vanished (force-deleted) or on shutdown.
const SHORT_GRACE: Duration = Duration::from_secs(2);

/// What woke a waiting task.
enum Change {
    Updated,
    Gone,
    Shutdown,
}

/// Why a running container stopped being watched.
enum Ending {
    Exited(Result<Exit>),
    Deadline,
    Deleted,
    Gone,
    Shutdown,
}

/// Drives one pod; see [`PodTask::run`].
pub(crate) struct PodTask {
    config: Arc<NodeConfig>,
    client: PodClient,
    updates: PodUpdates,
    pod: Pod,
    shutdown: CancellationToken,
    start_time: Timestamp,
}

impl PodTask {
    pub(crate) fn new(
        client: kube::Client,
        config: Arc<NodeConfig>,
        pod: Pod,
        updates: PodUpdates,
        shutdown: CancellationToken,
    ) -> Self {
        let meta = &pod.metadata;
        let client = PodClient::new(
            client,
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default(),
        );
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or_else(Timestamp::now, |t| t.0);
        Self {
            config,
            client,
            updates,
            pod,
            shutdown,
            start_time,
        }
    }

    /// Runs the pod's container (or reports why it cannot), reports how it
    /// ended, and removes the pod once it is deleted.
    pub(crate) async fn run(self) {
        if self.deleting() {
            return self.client.remove().await;
        }
        let phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return self.await_removal().await;
        }
        if self.started_by_earlier_agent() {
            tracing::warn!("pod was started by an earlier agent; its process is lost");
            let state = State::Terminated {
                exit: Exit::Signal(9),
                reason: Some("ContainerStatusUnknown"),
                message: Some(
                    "The container could not be located when the pod was terminated".to_owned(),
                ),
                started_at: None,
                finished_at: Timestamp::now(),
                container_id: None,
            };
            self.report(Phase::Failed, state, None).await;
            return self.await_removal().await;
        }
        let Some(container) = self.single_container() else {
            let message =
                "hodei-test-node runs exactly one container and no init containers".to_owned();
            let state = State::Waiting {
                reason: "CreateContainerConfigError",
                message,
            };
            self.report(Phase::Pending, state, None).await;
            return self.await_removal().await;
        };
        let image = container.image.clone().unwrap_or_default();
        let deadline = self.active_deadline();
        match self.config.image_map.resolve(&image).map(Path::to_owned) {
            Some(program) => self.run_container(&program, &container, deadline).await,
            None => self.image_pull_failure(&image, deadline).await,
        }
    }

    async fn image_pull_failure(mut self, image: &str, deadline: Option<Instant>) {
        tracing::info!(image, "image not in the image map; reporting ErrImagePull");
        let pull_error = format!(
            "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": \
             failed to resolve reference \"{image}\": {image}: not found \
             (hodei-test-node has no --image-map entry for this image)"
        );
        let mut state = State::Waiting {
            reason: "ErrImagePull",
            message: pull_error.clone(),
        };
        self.report(Phase::Pending, state.clone(), None).await;
        let backoff = tokio::time::sleep(self.config.image_pull_backoff);
        tokio::pin!(backoff);
        let mut backed_off = false;
        loop {
            tokio::select! {
                () = &mut backoff, if !backed_off => {
                    backed_off = true;
                    state = State::Waiting {
                        reason: "ImagePullBackOff",
                        message: format!("Back-off pulling image \"{image}\": ErrImagePull: {pull_error}"),
                    };
                    self.report(Phase::Pending, state.clone(), None).await;
                }
                () = sleep_until(deadline) => {
                    self.report(Phase::Failed, state, Some(deadline_exceeded())).await;
                    return self.await_removal().await;
                }
                change = self.next_change() => match change {
                    Change::Updated if self.deleting() => return self.client.remove().await,
                    Change::Updated => {}
                    Change::Gone | Change::Shutdown => return,
                },
            }
        }
    }

    async fn run_container(
        mut self,
        program: &Path,
        container: &Container,
        deadline: Option<Instant>,
    ) {
        let meta = &self.pod.metadata;
        let pod_dir = PodDir::create(
            &self.config.work_dir,
            meta.namespace.as_deref().unwrap_or("default"),
            meta.name.as_deref().unwrap_or_default(),
            meta.uid.as_deref().unwrap_or_default(),
        );
        let spawned = pod_dir.and_then(|dir| {
            let launch = Launch::for_container(
                program,
                container,
                meta.name.as_deref().unwrap_or_default(),
                &dir,
            );
            Process::spawn(&launch).map(|process| (dir, process))
        });
        let (dir, mut process) = match spawned {
            Ok(spawned) => spawned,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "container did not start");
                let state = State::Terminated {
                    exit: Exit::Code(128),
                    reason: Some("StartError"),
                    message: Some(error_chain(&error)),
                    started_at: None,
                    finished_at: Timestamp::now(),
                    container_id: None,
                };
                self.report(Phase::Failed, state, None).await;
                return self.await_removal().await;
            }
        };
        let started_at = Timestamp::now();
        let container_id = format!("hodei-test-node://{}", process.pid());
        tracing::info!(pid = process.pid(), program = %program.display(), log = %dir.log().display(), "container started");
        let running = State::Running {
            started_at,
            container_id: container_id.clone(),
        };
        self.report(Phase::Running, running, None).await;

        let ending = loop {
            tokio::select! {
                exit = process.wait() => break Ending::Exited(exit),
                () = sleep_until(deadline) => break Ending::Deadline,
                change = self.next_change() => match change {
                    Change::Updated if self.deleting() => break Ending::Deleted,
                    Change::Updated => {}
                    Change::Gone => break Ending::Gone,
                    Change::Shutdown => break Ending::Shutdown,
                },
            }
        };
        let terminated = |exit: Exit| State::Terminated {
            exit,
            reason: None,
            message: None,
            started_at: Some(started_at),
            finished_at: Timestamp::now(),
            container_id: Some(container_id.clone()),
        };
        match ending {
            Ending::Exited(exit) => {
                let exit = exit_or_killed(exit);
                tracing::info!(exit_code = exit.exit_code(), "container exited");
                self.report(Phase::after(exit), terminated(exit), None)
                    .await;
            }
            Ending::Deadline => {
                tracing::info!("activeDeadlineSeconds passed; stopping container");
                let exit = exit_or_killed(process.stop(self.termination_grace()).await);
                self.report(Phase::Failed, terminated(exit), Some(deadline_exceeded()))
                    .await;
            }
            Ending::Deleted => {
                let exit = self.stop_for_deletion(&mut process).await;
                tracing::info!(
                    exit_code = exit.exit_code(),
                    "container stopped for deletion"
                );
                self.report(Phase::after(exit), terminated(exit), None)
                    .await;
                dir.remove_scratch();
                return self.client.remove().await;
            }
            Ending::Gone => {
                tracing::info!("pod vanished; stopping container");
                let _ = process.stop(SHORT_GRACE).await;
                return dir.remove_scratch();
            }
            Ending::Shutdown => {
                let exit = exit_or_killed(process.stop(SHORT_GRACE).await);
                let reason = (
                    "Terminated",
                    "Pod was terminated in response to imminent node shutdown.".to_owned(),
                );
                self.report(Phase::Failed, terminated(exit), Some(reason))
                    .await;
                return dir.remove_scratch();
            }
        }
        dir.remove_scratch();
        self.await_removal().await;
    }

    /// SIGTERM now, SIGKILL when the deletion grace period (which a second,
    /// shorter delete may cut) runs out or the pod is force-deleted.
    async fn stop_for_deletion(&mut self, process: &mut Process) -> Exit {
        let signalled_at = Instant::now();
        let mut grace = self.deletion_grace();
        tracing::info!(
            grace_seconds = grace.as_secs(),
            "pod deleted; sending SIGTERM"
        );
        process.signal(Signal::SIGTERM);
        loop {
            tokio::select! {
                exit = process.wait() => return exit_or_killed(exit),
                () = tokio::time::sleep_until(signalled_at + grace) => break,
                change = self.next_change() => match change {
                    Change::Updated => grace = grace.min(self.deletion_grace()),
                    Change::Gone | Change::Shutdown => break,
                },
            }
        }
        tracing::info!("grace period over; sending SIGKILL");
        process.signal(Signal::SIGKILL);
        exit_or_killed(process.wait().await)
    }

    /// Waits for the pod to be deleted, then removes it.
    async fn await_removal(mut self) {
        loop {
            if self.deleting() {
                return self.client.remove().await;
            }
            match self.next_change().await {
                Change::Updated => {}
                Change::Gone | Change::Shutdown => return,
            }
        }
    }

    async fn next_change(&mut self) -> Change {
        tokio::select! {
            () = self.shutdown.cancelled() => Change::Shutdown,
            changed = self.updates.changed() => {
                if changed.is_err() {
                    return Change::Gone;
                }
                match self.updates.borrow_and_update().clone() {
                    Some(pod) => {
                        self.pod = pod;
                        Change::Updated
                    }
                    None => Change::Gone,
                }
            }
        }
    }

    async fn report(&self, phase: Phase, state: State, pod_reason: Option<(&'static str, String)>) {
        let report = Report {
            phase,
            start_time: self.start_time,
            state,
            pod_reason,
        };
        self.client
            .patch_status(&status::pod_status(&self.pod, &report, Timestamp::now()))
            .await;
    }

    fn deleting(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    fn single_container(&self) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        let no_init = spec.init_containers.as_ref().is_none_or(Vec::is_empty);
        match spec.containers.as_slice() {
            [container] if no_init => Some(container.clone()),
            _ => None,
        }
    }

    /// A container status that is running or terminated before this agent
    /// touched the pod means another agent process ran it.
    fn started_by_earlier_agent(&self) -> bool {
        let statuses = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_deref());
        statuses.unwrap_or_default().iter().any(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
    }

    fn active_deadline(&self) -> Option<Instant> {
        let seconds = self.pod.spec.as_ref()?.active_deadline_seconds?;
        let ends = self.start_time.as_second().saturating_add(seconds);
        let left = ends.saturating_sub(Timestamp::now().as_second());
        Some(Instant::now() + Duration::from_secs(u64::try_from(left).unwrap_or(0)))
    }

    fn termination_grace(&self) -> Duration {
        let seconds = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds);
        seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(DEFAULT_GRACE, Duration::from_secs)
    }

    fn deletion_grace(&self) -> Duration {
        let seconds = self.pod.metadata.deletion_grace_period_seconds;
        seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or_else(|| self.termination_grace(), Duration::from_secs)
    }
}

fn deadline_exceeded() -> (&'static str, String) {
    (
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline".to_owned(),
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A failed wait leaves nothing to report but that the process is gone.
fn exit_or_killed(exit: Result<Exit>) -> Exit {
    exit.unwrap_or_else(|error| {
        tracing::warn!(error = %error_chain(&error), "lost track of container process");
        Exit::Signal(Signal::SIGKILL as i32)
    })
}
