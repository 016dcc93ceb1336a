//! `KubernetesProvider`: each worker is a pod, created from `hodei-k8s`'s template and
//! followed by one namespace-wide watch.

mod classes;
mod events;
mod placement;
mod settings;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
pub use classes::{MAX_RESOURCE_CLASSES, ResourceClass, parse_resource_classes};
use hodei_k8s::{
    PodWatcher, WatcherConfig, WorkerPodSpec, WorkerPods, WorkerResources,
    reviews::{TokenVerdict, review_token},
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use parking_lot::Mutex;
pub use settings::{
    DEFAULT_API_WRITES_PER_SECOND, DEFAULT_CPU_LIMIT, DEFAULT_CPU_REQUEST,
    DEFAULT_EPHEMERAL_STORAGE_LIMIT, DEFAULT_EPHEMERAL_STORAGE_REQUEST,
    DEFAULT_IDENTITY_TOKEN_AUDIENCE, DEFAULT_IMAGE_PULL_GRACE, DEFAULT_IMAGE_PULL_POLICY,
    DEFAULT_MEMORY_LIMIT, DEFAULT_MEMORY_REQUEST, DEFAULT_NAMESPACE, DEFAULT_REGISTRATION_TIMEOUT,
    DEFAULT_SCHEDULING_TIMEOUT, DEFAULT_SERVICE_ACCOUNT, DEFAULT_TMP_SIZE_LIMIT,
    DEFAULT_WORKER_IMAGE, DEFAULT_WORKING_DIR_SIZE_LIMIT, IMAGE_PULL_POLICIES, KubernetesSettings,
};
use tracing::{info, warn};

use self::events::Routes;
use super::{
    KnownWorkers, Provider, ProviderCapabilities, ProviderError, ProviderHealth, ProvisionedWorker,
    SpecRefusal, WorkerEvent, WorkerLaunch, WorkerProof,
};
use crate::job::{JobSpec, Memory, ValidationError, WorkerId};

/// Name under which the Kubernetes provider registers.
pub const KUBERNETES_PROVIDER_NAME: &str = "kubernetes";
/// Margin added to a job's timeout for the pod's `activeDeadlineSeconds` backstop.
const DEADLINE_MARGIN: Duration = Duration::from_secs(120);
/// Most TokenReviews in flight at once: registrations beyond it wait, so a flood of
/// forged registrations cannot flood the API server.
const MAX_CONCURRENT_TOKEN_REVIEWS: usize = 16;
/// Grace the kubelet gives a deleted worker pod; the worker reports on SIGTERM.
const DELETE_GRACE_SECONDS: u32 = 10;
/// How long the pod watch may fail without a break before the provider reports itself
/// unhealthy: short outages (an API server restart) are ridden out by the watch's retries.
const WATCH_FAILING_UNHEALTHY: Duration = Duration::from_secs(30);

/// Why the Kubernetes provider could not start.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// A setting is invalid.
    #[error(transparent)]
    Settings(#[from] ValidationError),
    /// The kubeconfig could not be read or used.
    #[error("cannot load Kubernetes credentials: {0}")]
    Config(String),
    /// The cluster refused or did not answer the startup check.
    #[error("cannot list worker pods in namespace {namespace}: {source}")]
    Unreachable {
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: hodei_k8s::Error,
    },
}

/// A client from the kubeconfig and context the settings name, else inferred.
pub(crate) async fn client_for(
    settings: &KubernetesSettings,
) -> Result<kube::Client, KubernetesError> {
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| KubernetesError::Config(format!("reading {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None if settings.context.is_some() => kube::Config::from_kubeconfig(&options).await,
        None => kube::Config::infer()
            .await
            .map_err(|e| kube::config::KubeconfigError::LoadContext(e.to_string())),
    }
    .map_err(|e| KubernetesError::Config(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| KubernetesError::Config(e.to_string()))
}

/// Runs each worker in its own pod. Cheap to clone.
#[derive(Clone)]
pub struct KubernetesProvider {
    settings: Arc<KubernetesSettings>,
    client: kube::Client,
    pods: WorkerPods,
    /// Uid of each worker's pod, from the create answer; a worker's token must be bound
    /// to exactly that pod. One entry per provisioned worker, removed on destroy.
    pod_uids: Arc<Mutex<HashMap<WorkerId, String>>>,
    token_reviews: Arc<tokio::sync::Semaphore>,
    routes: Routes,
    watcher: Arc<PodWatcher>,
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("settings", &self.settings)
            .field("pods", &self.pods)
            .finish_non_exhaustive()
    }
}

impl KubernetesProvider {
    /// Connects with the credentials the settings name (`kubeconfig`, `context`;
    /// in-cluster or the default kubeconfig otherwise), checks that worker pods can be
    /// listed, and starts the pod watch.
    ///
    /// ```no_run
    /// use hodei_core::provider::{KubernetesProvider, KubernetesSettings};
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let provider = KubernetesProvider::connect(KubernetesSettings {
    ///     namespace: "jobs".into(),
    ///     worker_image: "registry.example/hodei-worker:1".into(),
    ///     ..KubernetesSettings::default()
    /// })
    /// .await?;
    /// # drop(provider);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(settings: KubernetesSettings) -> Result<Self, KubernetesError> {
        settings.validate()?;
        let client = client_for(&settings).await?;
        Self::start(client, settings).await
    }

    /// Like [`connect`](Self::connect), with a ready client (e.g. a mocked one in tests);
    /// the settings' `kubeconfig` and `context` are not used.
    pub async fn with_client(
        client: kube::Client,
        settings: KubernetesSettings,
    ) -> Result<Self, KubernetesError> {
        settings.validate()?;
        Self::start(client, settings).await
    }

    async fn start(
        client: kube::Client,
        settings: KubernetesSettings,
    ) -> Result<Self, KubernetesError> {
        let pods = WorkerPods::new(client.clone(), settings.namespace.clone())
            .with_writes_per_second(settings.api_writes_per_second);
        pods.list_managed()
            .await
            .map_err(|source| KubernetesError::Unreachable {
                namespace: settings.namespace.clone(),
                source,
            })?;
        let (watcher, events) = PodWatcher::spawn(
            client.clone(),
            &settings.namespace,
            WatcherConfig {
                image_pull_grace: settings.image_pull_grace,
                scheduling_timeout: settings.scheduling_timeout,
                ..WatcherConfig::default()
            },
        );
        let routes = Routes::default();
        tokio::spawn(routes.clone().run(events));
        info!(namespace = %settings.namespace, context = ?settings.context, "kubernetes provider ready");
        Ok(Self {
            settings: Arc::new(settings),
            client,
            pods,
            pod_uids: Arc::default(),
            token_reviews: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_TOKEN_REVIEWS)),
            routes,
            watcher: Arc::new(watcher),
        })
    }

    /// The settings in force.
    #[must_use]
    pub fn settings(&self) -> &KubernetesSettings {
        &self.settings
    }

    /// The pod of a launch, with the server's, the class's and the job's placement merged;
    /// refused when the job no longer passes [`Provider::check_spec`] (the settings
    /// changed while it was queued).
    fn pod_spec(&self, launch: &WorkerLaunch) -> Result<WorkerPodSpec, SpecRefusal> {
        let s = &self.settings;
        let spec = &launch.spec;
        placement::check(s, spec)?;
        let class = placement::class_of(s, spec)?;
        let placed = placement::merge(s, class, spec);
        let cpu = placed.cpu.map(|c| c.to_string());
        let memory = placed.memory.map(|m| m.to_string());
        // A job's own disk size is its request and its limit; the scratch volumes never
        // exceed it.
        let storage = placed.ephemeral_storage;
        let capped = |size: Memory| storage.map_or(size, |limit| size.min(limit)).to_string();
        let deadline = spec.timeout + s.registration_timeout + DEADLINE_MARGIN;
        Ok(WorkerPodSpec::builder()
            .worker_id(launch.worker_id.to_string())
            .job_id(launch.job_id.to_string())
            .namespace(s.namespace.clone())
            .image(spec.image.clone().unwrap_or_else(|| s.worker_image.clone()))
            .server_address(
                s.advertise_address
                    .clone()
                    .unwrap_or_else(|| launch.server_address.clone()),
            )
            .reconnect_window(humantime::format_duration(launch.reconnect_window).to_string())
            .resources(WorkerResources {
                cpu_request: cpu
                    .clone()
                    .unwrap_or_else(|| s.default_cpu_request.to_string()),
                cpu_limit: cpu.unwrap_or_else(|| s.default_cpu_limit.to_string()),
                memory_request: memory
                    .clone()
                    .unwrap_or_else(|| s.default_memory_request.to_string()),
                memory_limit: memory.unwrap_or_else(|| s.default_memory_limit.to_string()),
                ephemeral_storage_request: storage
                    .unwrap_or(s.default_ephemeral_storage_request)
                    .to_string(),
                ephemeral_storage_limit: storage
                    .unwrap_or(s.default_ephemeral_storage_limit)
                    .to_string(),
                tmp_size_limit: capped(s.tmp_size_limit),
                working_dir_size_limit: capped(s.working_dir_size_limit),
            })
            .active_deadline_seconds(i64::try_from(deadline.as_secs()).unwrap_or(i64::MAX))
            .env(spec.env.clone())
            .service_account(s.service_account.clone())
            .image_pull_secrets(s.image_pull_secrets.clone())
            .image_pull_policy(s.image_pull_policy.clone())
            .node_selector(placed.node_selector)
            .tolerations(placed.tolerations)
            .node_affinity(placed.node_affinity)
            .secret_env(placed.secret_env)
            .secret_files(placed.secret_files)
            .maybe_working_dir(spec.working_dir.clone())
            .extra_labels(spec.labels.clone())
            .identity_token_audience(s.identity_token_audience.clone())
            .maybe_server_ca_config_map(s.server_ca_config_map.clone())
            .build())
    }

    async fn delete_pod(&self, pod_name: &str) -> Result<(), ProviderError> {
        let result = self.pods.delete(pod_name, DELETE_GRACE_SECONDS).await;
        crate::observe::kubernetes_api_request("delete", outcome(&result));
        result.map_err(|e| provider_error("DeleteFailed", &e))
    }
}

/// Healthy unless the pod watch has failed without a break for
/// [`WATCH_FAILING_UNHEALTHY`]: without it, pods that cannot start are not noticed.
fn health_of_watch(watch: hodei_k8s::WatchHealth) -> ProviderHealth {
    match watch {
        hodei_k8s::WatchHealth::Failing { since, error }
            if since.elapsed() >= WATCH_FAILING_UNHEALTHY =>
        {
            let failing_for = Duration::from_secs(since.elapsed().as_secs());
            ProviderHealth::Unhealthy(format!(
                "the pod watch has failed for {}: {error}",
                humantime::format_duration(failing_for)
            ))
        }
        _ => ProviderHealth::Healthy,
    }
}

/// A low-cardinality label for the result of an API call.
fn outcome<T>(result: &Result<T, hodei_k8s::Error>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(hodei_k8s::Error::QuotaExceeded { .. }) => "quota_exceeded",
        Err(hodei_k8s::Error::Forbidden { .. }) => "forbidden",
        Err(hodei_k8s::Error::AlreadyExists { .. }) => "already_exists",
        Err(hodei_k8s::Error::InvalidSpec(_)) => "invalid",
        Err(hodei_k8s::Error::Api { .. }) => "api_error",
        Err(hodei_k8s::Error::Client(_)) => "unreachable",
    }
}

fn provider_error(reason: &str, error: &hodei_k8s::Error) -> ProviderError {
    // The variants carry the API server's message; only transport errors need their cause.
    let message = match error {
        hodei_k8s::Error::Client(source) => format!("{error}: {source}"),
        _ => error.to_string(),
    };
    match error {
        hodei_k8s::Error::QuotaExceeded { .. } => {
            ProviderError::retryable("QuotaExceeded", message)
        }
        e if e.is_transient() => ProviderError::retryable(reason, message),
        hodei_k8s::Error::Forbidden { .. } => ProviderError::fatal("Forbidden", message),
        hodei_k8s::Error::InvalidSpec(_) => ProviderError::fatal("InvalidPodSpec", message),
        _ => ProviderError::fatal(reason, message),
    }
}

#[async_trait]
impl Provider for KubernetesProvider {
    fn name(&self) -> &str {
        KUBERNETES_PROVIDER_NAME
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            containers: true,
            max_workers: self.settings.max_pods.map(std::num::NonZeroUsize::get),
            registration_timeout: self.settings.registration_timeout,
            worker_proof: WorkerProof::PlatformIdentity,
        }
    }

    async fn health(&self) -> ProviderHealth {
        if self.watcher.is_finished() {
            return ProviderHealth::Unhealthy("the pod watch has stopped".into());
        }
        health_of_watch(self.watcher.health())
    }

    /// Refuses what the operator's allow-lists do not cover, an unknown resource class and
    /// secret files that would clash with the worker's mounts.
    fn check_spec(&self, spec: &JobSpec) -> Result<(), SpecRefusal> {
        placement::check(&self.settings, spec)
    }

    async fn provision(&self, launch: WorkerLaunch) -> Result<ProvisionedWorker, ProviderError> {
        let spec = self
            .pod_spec(&launch)
            .map_err(|refusal| ProviderError::fatal("SpecRefused", refusal.to_string()))?;
        let pod_name = spec.pod_name();
        let worker_id = launch.worker_id.to_string();
        // Route before creating, so no event of the new pod can be missed.
        let events = self.routes.add(worker_id.clone());
        let created = self.pods.create(&spec).await;
        crate::observe::kubernetes_api_request("create", outcome(&created));
        match created {
            Ok(pod) => {
                let Some(uid) = pod.metadata.uid.filter(|uid| !uid.is_empty()) else {
                    self.routes.remove(&worker_id);
                    let _ = self.delete_pod(&pod_name).await;
                    return Err(ProviderError::fatal(
                        "CreateFailed",
                        format!("the API server created pod {pod_name} without a uid"),
                    ));
                };
                self.pod_uids.lock().insert(launch.worker_id, uid);
                self.routes.notify(
                    &worker_id,
                    WorkerEvent::Progress {
                        detail: format!("pod {pod_name} created"),
                    },
                );
                Ok(ProvisionedWorker {
                    description: format!("pod {}/{pod_name}", self.settings.namespace),
                    events,
                    locator: None,
                })
            }
            Err(error) => {
                self.routes.remove(&worker_id);
                Err(provider_error("CreateFailed", &error))
            }
        }
    }

    async fn destroy(&self, worker_id: WorkerId) -> Result<(), ProviderError> {
        self.pod_uids.lock().remove(&worker_id);
        let worker_id = worker_id.to_string();
        self.routes.remove(&worker_id);
        let pod_name = hodei_k8s::pod_name(&worker_id);
        if let Some(ttl) = self.settings.ttl_after_finished {
            // Kept for debugging; the sweep deletes it once the TTL has passed, even
            // after a server restart.
            let provider = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ttl).await;
                if let Err(error) = provider.delete_pod(&pod_name).await {
                    warn!(pod.name = %pod_name, %error, "deleting a kept pod failed; the sweep will retry");
                }
            });
            return Ok(());
        }
        self.delete_pod(&pod_name).await
    }

    /// Finds the worker's pod and routes its events to the job again. A pod that has
    /// ended (its worker gave up while the server was away) is reported as exited at once;
    /// a missing or deleting pod means the worker is gone.
    async fn adopt(
        &self,
        worker_id: WorkerId,
        _locator: Option<&str>,
    ) -> Result<Option<ProvisionedWorker>, ProviderError> {
        let id = worker_id.to_string();
        let pod_name = hodei_k8s::pod_name(&id);
        // Route before reading, so no event of the pod can be missed in between.
        let events = self.routes.add(id.clone());
        let found = self.pods.get(&pod_name).await;
        crate::observe::kubernetes_api_request("get", outcome(&found));
        let pod = match found {
            Ok(Some(pod)) if !pod.deleting => pod,
            Ok(_) => {
                self.routes.remove(&id);
                return Ok(None);
            }
            Err(error) => {
                self.routes.remove(&id);
                return Err(provider_error("GetFailed", &error));
            }
        };
        if pod.phase.is_terminal() {
            self.routes.notify(
                &id,
                WorkerEvent::Exited {
                    exit: None,
                    message: format!(
                        "pod {pod_name} ended ({:?}) while the server was away",
                        pod.phase
                    ),
                },
            );
        }
        Ok(Some(ProvisionedWorker {
            description: format!("pod {}/{pod_name}", self.settings.namespace),
            events,
            locator: None,
        }))
    }

    /// Accepts the worker's pod-bound ServiceAccount token when a TokenReview for the
    /// configured audience authenticates it as the worker ServiceAccount, bound to the pod
    /// (name and uid) created for `worker_id`.
    async fn verify_worker(
        &self,
        worker_id: WorkerId,
        credential: &str,
    ) -> Result<(), ProviderError> {
        let refused = |message: String| ProviderError::fatal("IdentityRefused", message);
        let Some(expected_uid) = self.pod_uids.lock().get(&worker_id).cloned() else {
            return Err(refused(format!(
                "no pod was created for worker {worker_id}"
            )));
        };
        let expected_pod = hodei_k8s::pod_name(&worker_id.to_string());
        let s = &self.settings;
        let reviewed = {
            // The semaphore is never closed.
            let _permit = self.token_reviews.acquire().await.ok();
            review_token(&self.client, credential, &s.identity_token_audience).await
        };
        crate::observe::kubernetes_api_request("tokenreview", outcome(&reviewed));
        let user = match reviewed {
            Ok(TokenVerdict::Authenticated(user)) => user,
            Ok(TokenVerdict::Refused { reason }) => {
                return Err(refused(format!(
                    "the API server refused the token: {reason}"
                )));
            }
            // The worker may try again: the API server may be back by then.
            Err(error) => {
                return Err(ProviderError::retryable(
                    "TokenReviewFailed",
                    format!("cannot review the worker's token: {error}"),
                ));
            }
        };
        let service_account = format!(
            "system:serviceaccount:{}:{}",
            s.namespace, s.service_account
        );
        if user.username != service_account {
            return Err(refused(format!(
                "the token belongs to {:?}, not to {service_account:?}",
                user.username
            )));
        }
        if user.pod_name() != Some(expected_pod.as_str())
            || user.pod_uid() != Some(expected_uid.as_str())
        {
            return Err(refused(format!(
                "the token is bound to pod {:?} (uid {:?}), not to pod {expected_pod:?} (uid {expected_uid:?})",
                user.pod_name().unwrap_or("none"),
                user.pod_uid().unwrap_or("none"),
            )));
        }
        Ok(())
    }

    /// Lists the managed pods first and asks `known` about each pod only afterwards:
    /// a pod in the list was created before the list was taken, and the server records
    /// a worker before its pod is created, so a pod created while the sweep runs is
    /// known by the time it is asked about. A pod whose worker id is not one of ours
    /// (a hand-made pod with the managed label) is an orphan too.
    async fn cleanup_orphans(&self, known: &dyn KnownWorkers) -> Result<usize, ProviderError> {
        let listed = self.pods.list_managed().await;
        crate::observe::kubernetes_api_request("list", outcome(&listed));
        let pods = listed.map_err(|e| provider_error("ListFailed", &e))?;
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for pod in pods {
            let owned = pod
                .worker_id
                .parse::<WorkerId>()
                .is_ok_and(|worker_id| known.contains(worker_id));
            if owned || pod.deleting {
                continue;
            }
            let kept_for_debugging = self.settings.ttl_after_finished.is_some_and(|ttl| {
                pod.finished_at
                    .or(pod.created_at)
                    .is_some_and(|at| now.duration_since(at).unwrap_or_default() < ttl)
            });
            if kept_for_debugging && pod.phase.is_terminal() {
                continue;
            }
            warn!(pod.name = %pod.name, worker.id = %pod.worker_id, "deleting a worker pod no job owns");
            self.delete_pod(&pod.name).await?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
