//! Creating, deleting and listing worker pods, with writes rate-limited.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use tracing::{debug, info, instrument, warn};

use crate::error::{Error, Result, is_not_found};
use crate::labels;
use crate::pod_spec::WorkerPodSpec;
use crate::rate_limit::RateLimiter;

/// Default bound on create and delete requests per second.
pub const DEFAULT_WRITES_PER_SECOND: NonZeroU32 = NonZeroU32::new(20).expect("20 is not zero");

/// Page size when listing managed pods.
const LIST_PAGE: u32 = 500;

/// How many times a create refused with a write conflict is sent again before the
/// conflict is returned to the caller.
const CONFLICT_RETRIES: u32 = 4;

/// Pause before the first resend after a conflict; doubled on each further one.
const CONFLICT_BACKOFF: Duration = Duration::from_millis(25);

/// Worker pods in one namespace: create, delete, list. Cheap to clone; clones share the
/// write rate limit.
#[derive(Clone, Debug)]
pub struct WorkerPods {
    api: Api<Pod>,
    namespace: String,
    limiter: Arc<RateLimiter>,
}

/// A pod carrying `hodei.io/managed=true`, as seen by [`WorkerPods::list_managed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedPod {
    /// The pod's name.
    pub name: String,
    /// Worker id (annotation, label, or the name without `hodei-worker-`).
    pub worker_id: String,
    /// Job id, if the pod records one.
    pub job_id: Option<String>,
    /// The pod's phase.
    pub phase: PodPhase,
    /// When the API server created the pod.
    pub created_at: Option<SystemTime>,
    /// When the worker container finished, for pods in a terminal phase.
    pub finished_at: Option<SystemTime>,
    /// True when deletion was already requested (`deletionTimestamp` is set).
    pub deleting: bool,
}

/// A pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodPhase {
    /// Accepted, not yet running (scheduling, pulling).
    Pending,
    /// Bound to a node with the container started.
    Running,
    /// The container exited 0.
    Succeeded,
    /// The container exited non-zero or the pod was killed.
    Failed,
    /// No phase reported or one this crate does not know.
    Unknown,
}

impl PodPhase {
    fn parse(phase: Option<&str>) -> Self {
        match phase {
            Some("Pending") => Self::Pending,
            Some("Running") => Self::Running,
            Some("Succeeded") => Self::Succeeded,
            Some("Failed") => Self::Failed,
            _ => Self::Unknown,
        }
    }

    /// True for `Succeeded` and `Failed`.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl WorkerPods {
    /// A handle on worker pods in `namespace`, writing at most
    /// [`DEFAULT_WRITES_PER_SECOND`].
    #[must_use]
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        let namespace = namespace.into();
        Self {
            api: Api::namespaced(client, &namespace),
            namespace,
            limiter: Arc::new(RateLimiter::new(DEFAULT_WRITES_PER_SECOND)),
        }
    }

    /// Bounds creates and deletes to `per_second` requests a second.
    #[must_use]
    pub fn with_writes_per_second(mut self, per_second: NonZeroU32) -> Self {
        self.limiter = Arc::new(RateLimiter::new(per_second));
        self
    }

    /// The namespace this handle works in.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Validates and creates the worker pod, returning it as the API server stored it.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] before any request when the spec is invalid or names another
    /// namespace; [`Error::QuotaExceeded`] when a quota refuses the pod (keep the job
    /// queued); [`Error::AlreadyExists`], [`Error::Forbidden`], [`Error::Api`],
    /// [`Error::Client`] otherwise.
    ///
    /// A write conflict (409 `Conflict`, e.g. the quota admission losing a race with other
    /// creates) means the pod was not stored; the create is sent again a few times, with a
    /// short backoff, before the conflict is returned.
    #[instrument(skip_all, fields(pod.name = %spec.pod_name(), worker.id = %spec.worker_id, job.id = %spec.job_id))]
    pub async fn create(&self, spec: &WorkerPodSpec) -> Result<Pod> {
        spec.validate()?;
        if spec.namespace != self.namespace {
            return Err(Error::InvalidSpec(format!(
                "spec namespace {:?} differs from this handle's {:?}",
                spec.namespace, self.namespace
            )));
        }
        let name = spec.pod_name();
        let pod = spec.render();
        let mut backoff = CONFLICT_BACKOFF;
        let mut resends = 0;
        loop {
            self.limiter.acquire().await;
            let error = match self.api.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    info!(resends, "worker pod created");
                    return Ok(created);
                }
                Err(e) => Error::from_kube(&name, e),
            };
            if !error.is_conflict() || resends == CONFLICT_RETRIES {
                return Err(error);
            }
            warn!(%error, retry_in = ?backoff, "worker pod create conflicted; sending it again");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            resends += 1;
        }
    }

    /// Deletes a pod, giving its containers `grace_seconds` to stop. A pod that is already
    /// gone counts as deleted.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Api`] or [`Error::Client`].
    #[instrument(skip_all, fields(pod.name = %pod_name, grace_seconds))]
    pub async fn delete(&self, pod_name: &str, grace_seconds: u32) -> Result<()> {
        self.limiter.acquire().await;
        let params = DeleteParams::default().grace_period(grace_seconds);
        match self.api.delete(pod_name, &params).await {
            Ok(_) => {
                info!("worker pod deletion requested");
                Ok(())
            }
            Err(e) if is_not_found(&e) => {
                debug!("worker pod already gone");
                Ok(())
            }
            Err(e) => Err(Error::from_kube(pod_name, e)),
        }
    }

    /// The worker pod named `pod_name`, if it exists and carries a worker id.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Api`] or [`Error::Client`].
    #[instrument(skip(self), fields(k8s.namespace = %self.namespace))]
    pub async fn get(&self, pod_name: &str) -> Result<Option<ManagedPod>> {
        let pod = self
            .api
            .get_opt(pod_name)
            .await
            .map_err(|e| Error::from_kube(pod_name, e))?;
        Ok(pod.as_ref().and_then(ManagedPod::from_pod))
    }

    /// Every pod labelled `hodei.io/managed=true` in the namespace, page by page. Callers
    /// use it to find orphans (pods whose worker is unknown) and finished pods to reap.
    ///
    /// # Errors
    /// [`Error::Forbidden`], [`Error::Api`] or [`Error::Client`].
    #[instrument(skip(self), fields(k8s.namespace = %self.namespace))]
    pub async fn list_managed(&self) -> Result<Vec<ManagedPod>> {
        let mut params = ListParams::default()
            .labels(labels::MANAGED_SELECTOR)
            .limit(LIST_PAGE);
        let mut managed = Vec::new();
        loop {
            let page = self
                .api
                .list(&params)
                .await
                .map_err(|e| Error::from_kube(&self.namespace, e))?;
            managed.extend(page.items.iter().filter_map(ManagedPod::from_pod));
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        debug!(count = managed.len(), "listed managed pods");
        Ok(managed)
    }
}

impl ManagedPod {
    /// Reads a listed pod; `None` for a pod without a name or recognisable worker id.
    fn from_pod(pod: &Pod) -> Option<Self> {
        let meta = &pod.metadata;
        let status = pod.status.as_ref();
        let phase = PodPhase::parse(status.and_then(|s| s.phase.as_deref()));
        let container_finished = status
            .and_then(|s| s.container_statuses.as_deref())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
            .max();
        // Pods that failed before their container ran (evicted, rejected) only have
        // condition times.
        let last_transition = || {
            status
                .and_then(|s| s.conditions.as_deref())
                .unwrap_or_default()
                .iter()
                .filter_map(|c| c.last_transition_time.as_ref())
                .max()
        };
        let finished_at = phase
            .is_terminal()
            .then(|| container_finished.or_else(last_transition))
            .flatten();
        Some(Self {
            name: meta.name.clone()?,
            worker_id: labels::worker_id_of(meta)?,
            job_id: labels::job_id_of(meta),
            phase,
            created_at: meta.creation_timestamp.as_ref().map(system_time),
            finished_at: finished_at.map(system_time),
            deleting: meta.deletion_timestamp.is_some(),
        })
    }
}

fn system_time(time: &Time) -> SystemTime {
    SystemTime::from(time.0)
}

#[cfg(test)]
mod tests;
