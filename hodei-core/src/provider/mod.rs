//! Providers start and remove workers: the `Provider` trait, its types, and the registry.

mod known;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod local;
mod registry;

use std::{fmt, time::Duration};

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use known::KnownWorkers;
#[cfg(feature = "kubernetes")]
pub use kubernetes::{KubernetesProvider, KubernetesSettings};
pub use local::{LocalProvider, LocalProviderBuilder, RunAs, RunAsError};
pub use registry::{ProviderRegistry, SelectionError};

use crate::job::{JobId, JobSpec, ProcessExit, WorkerId};

/// Everything a provider needs to start one worker for one job.
#[derive(Clone)]
pub struct WorkerLaunch {
    /// The worker's id; it registers with it.
    pub worker_id: WorkerId,
    /// The job it will run.
    pub job_id: JobId,
    /// The job's spec (image, resources and labels matter to providers).
    pub spec: JobSpec,
    /// Address the worker dials (the worker API), e.g. `http://127.0.0.1:50052`.
    pub server_address: String,
    /// How long the worker tries to re-attach after its stream broke: the server's own
    /// reconnect window, passed on as `HODEI_RECONNECT_WINDOW`.
    pub reconnect_window: Duration,
    /// One-time token the worker registers with, when the provider's workers prove
    /// themselves with one ([`WorkerProof::OneTimeToken`]). Secret: never logged, never
    /// put in the worker's environment.
    pub otp_token: Option<String>,
}

impl fmt::Debug for WorkerLaunch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerLaunch")
            .field("worker_id", &self.worker_id)
            .field("job_id", &self.job_id)
            .field("server_address", &self.server_address)
            .field("otp_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl WorkerLaunch {
    /// The environment a worker needs to find the server. It holds no secret: the
    /// provider hands the credential over its own way and names it with
    /// [`ENV_WORKER_TOKEN_FILE`](crate::worker::ENV_WORKER_TOKEN_FILE).
    #[must_use]
    pub fn worker_env(&self) -> [(&'static str, String); 2] {
        [
            (crate::worker::ENV_WORKER_ID, self.worker_id.to_string()),
            (
                crate::worker::ENV_SERVER_ADDRESS,
                self.server_address.clone(),
            ),
        ]
    }
}

/// Something a provider observed about one of its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The platform placed the worker where it will run, e.g. a pod bound to a node.
    /// Providers whose workers start where they are created never send it.
    Scheduled {
        /// Where, for people.
        detail: String,
    },
    /// A step towards running, e.g. "pulling image".
    Progress {
        /// What happened, for people.
        detail: String,
    },
    /// The worker process or container ended.
    Exited {
        /// How it ended, when known.
        exit: Option<ProcessExit>,
        /// Extra context, e.g. a Kubernetes termination reason.
        message: String,
    },
    /// The worker cannot run or was killed by its platform (image pull failure,
    /// unschedulable, OOM-killed, evicted, deleted by someone else, ...).
    Failed {
        /// Machine-readable reason, e.g. `ImagePullBackOff`.
        reason: String,
        /// The platform's message.
        message: String,
    },
}

/// A worker the provider has started.
#[derive(Debug)]
pub struct ProvisionedWorker {
    /// Where it runs, for people: a pod name or a process id.
    pub description: String,
    /// Lifecycle events of this worker only.
    pub events: mpsc::UnboundedReceiver<WorkerEvent>,
    /// How the provider finds the worker again after a server restart (given back to
    /// [`Provider::adopt`]); the server stores it. `None` when the worker id is enough.
    pub locator: Option<String>,
}

impl ProvisionedWorker {
    /// A worker the provider reports nothing more about: its events end at once.
    #[must_use]
    pub fn unobserved(description: impl Into<String>) -> Self {
        Self {
            description: description.into(),
            events: mpsc::unbounded_channel().1,
            locator: None,
        }
    }
}

/// How a provider's workers prove who they are when they register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerProof {
    /// The server issues a one-time token ([`WorkerLaunch::otp_token`]) that the provider
    /// hands to the worker without putting it in its environment.
    OneTimeToken,
    /// The worker presents a credential its platform gave it (e.g. a pod-bound
    /// ServiceAccount token) and [`Provider::verify_worker`] checks it.
    PlatformIdentity,
}

/// What a provider can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCapabilities {
    /// It runs container images, so jobs that name an image can go there.
    pub containers: bool,
    /// Most workers it runs at once; further jobs wait in the queue.
    pub max_workers: Option<usize>,
    /// How long its workers may take to start and register (image pulls included).
    pub registration_timeout: Duration,
    /// How its workers prove who they are.
    pub worker_proof: WorkerProof,
}

/// Whether a provider can take jobs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderHealth {
    /// Ready.
    Healthy,
    /// Not ready, and why.
    Unhealthy(String),
}

/// A provider's refusal or failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct ProviderError {
    /// Machine-readable reason, e.g. `QuotaExceeded` or `SpawnFailed`.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// True when trying again later may work (e.g. a quota is full); the job stays queued.
    pub retryable: bool,
}

impl ProviderError {
    /// A failure that will not go away by retrying.
    pub fn fatal(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// A refusal that may pass later.
    pub fn retryable(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
            retryable: true,
        }
    }
}

/// Why a provider refuses a job it was chosen for: it cannot honour an option the job
/// asks for, or the operator does not allow it. The job is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct SpecRefusal {
    /// The spec field refused, e.g. `node_selector["gpu"]` or `secret_env`.
    pub field: String,
    /// Why, naming the setting that decides it where there is one.
    pub message: String,
}

impl SpecRefusal {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The refusal of a provider that honours no placement or secret option: the first
    /// one `spec` asks for, if any.
    #[must_use]
    pub fn unsupported(provider: &str, spec: &JobSpec) -> Option<Self> {
        let option = *spec.platform_options().first()?;
        let message = if option.starts_with("secret") {
            format!(
                "secrets are only available on the kubernetes provider; provider {provider:?} \
                 cannot give a job {option}"
            )
        } else {
            format!(
                "{option} is only available on the kubernetes provider; provider {provider:?} \
                 cannot honour it"
            )
        };
        Some(Self::new(option, message))
    }
}

/// Starts and removes workers on some platform.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug + 'static {
    /// The name jobs use to ask for this provider, e.g. `local` or `kubernetes`.
    fn name(&self) -> &str;

    /// What it can do.
    fn capabilities(&self) -> ProviderCapabilities;

    /// Whether it can take jobs now.
    async fn health(&self) -> ProviderHealth;

    /// Checks, when a job is submitted, that the provider can and may honour every option
    /// of `spec`. By default it refuses any placement or secret option
    /// ([`JobSpec::platform_options`]): a provider that cannot honour one must never
    /// start the job without it.
    fn check_spec(&self, spec: &JobSpec) -> Result<(), SpecRefusal> {
        match SpecRefusal::unsupported(self.name(), spec) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }

    /// Starts a worker. Returning means the platform accepted it, not that it runs.
    async fn provision(&self, launch: WorkerLaunch) -> Result<ProvisionedWorker, ProviderError>;

    /// Stops and removes a worker. Removing one that is already gone succeeds.
    async fn destroy(&self, worker_id: WorkerId) -> Result<(), ProviderError>;

    /// Takes charge again of a worker that an earlier server process started, after a
    /// restart: `locator` is what [`ProvisionedWorker::locator`] said. Returns `None`
    /// when the worker is gone; afterwards [`destroy`](Self::destroy) removes it and its
    /// events arrive as if this process had started it.
    ///
    /// By default the provider cannot tell: the worker is taken to be alive, reports no
    /// events, and its job waits for it to re-attach.
    async fn adopt(
        &self,
        worker_id: WorkerId,
        locator: Option<&str>,
    ) -> Result<Option<ProvisionedWorker>, ProviderError> {
        let _ = locator;
        Ok(Some(ProvisionedWorker::unobserved(format!(
            "worker {worker_id}"
        ))))
    }

    /// Removes workers of this provider that the server does not know; returns how many.
    ///
    /// Implementations find their workers first (list the pods, copy the process table)
    /// and only then ask `known` about each one they found, never before: the server
    /// records a worker before provisioning it, so asking afterwards cannot take a worker
    /// created while the sweep runs for an orphan (see [`KnownWorkers`]).
    async fn cleanup_orphans(&self, known: &dyn KnownWorkers) -> Result<usize, ProviderError>;

    /// Checks that `credential` proves it comes from the worker this provider started as
    /// `worker_id` ([`WorkerProof::PlatformIdentity`]). A retryable error means the check
    /// could not be made now (the worker may try again); any other error is a refusal.
    /// Error messages never contain the credential. Refuses by default.
    async fn verify_worker(
        &self,
        worker_id: WorkerId,
        credential: &str,
    ) -> Result<(), ProviderError> {
        let _ = credential;
        Err(ProviderError::fatal(
            "IdentityUnsupported",
            format!(
                "provider {} does not verify worker identities (worker {worker_id})",
                self.name()
            ),
        ))
    }
}
