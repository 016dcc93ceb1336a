//! Where benchmark jobs run: worker processes of the server, or worker pods.

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::{BenchArgs, Provider};

/// The provider the measured server runs jobs on.
#[derive(Clone, Debug)]
pub enum Target {
    /// The local provider: one `hodei-worker-bin` child process per job.
    Local,
    /// The Kubernetes provider: one worker pod per job.
    Kubernetes(Cluster),
}

/// A cluster prepared for Hodei Jobs (namespace, accounts, quota).
#[derive(Clone)]
pub struct Cluster {
    /// The worker namespace.
    pub namespace: String,
    /// The kubeconfig the server uses; `None` leaves it to KUBECONFIG.
    pub server_kubeconfig: Option<PathBuf>,
    /// The worker image of job pods.
    pub worker_image: String,
    /// An image whose entrypoint is a POSIX shell, for baseline pods.
    pub baseline_image: String,
    /// The server's API write rate; `None` keeps its default.
    pub api_writes_per_second: Option<u32>,
    /// A client from KUBECONFIG, to watch pods and create baseline pods.
    pub client: kube::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("namespace", &self.namespace)
            .field("server_kubeconfig", &self.server_kubeconfig)
            .field("worker_image", &self.worker_image)
            .field("baseline_image", &self.baseline_image)
            .field("api_writes_per_second", &self.api_writes_per_second)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The target the flags ask for; connects to the cluster for `kubernetes`.
    pub async fn from_args(args: &BenchArgs) -> anyhow::Result<Self> {
        match args.provider {
            Provider::Local => Ok(Self::Local),
            Provider::Kubernetes => {
                let client = kube::Client::try_default()
                    .await
                    .context("--provider kubernetes: cannot build a client from KUBECONFIG")?;
                Ok(Self::Kubernetes(Cluster {
                    namespace: args.k8s_namespace.clone(),
                    server_kubeconfig: args.k8s_server_kubeconfig.clone(),
                    worker_image: args.k8s_worker_image.clone(),
                    baseline_image: args.k8s_baseline_image.clone(),
                    api_writes_per_second: args.k8s_api_writes_per_second,
                    client,
                }))
            }
        }
    }

    /// The server settings that select this target, for a server on `url` allowing
    /// `max_workers` workers at once.
    #[must_use]
    pub fn server_env(&self, url: &str, max_workers: usize) -> Vec<(&'static str, String)> {
        match self {
            Self::Local => vec![("HODEI_LOCAL_MAX_WORKERS", max_workers.to_string())],
            Self::Kubernetes(cluster) => {
                let mut env = vec![
                    ("HODEI_LOCAL_ENABLED", "false".to_owned()),
                    ("HODEI_KUBERNETES_ENABLED", "true".to_owned()),
                    ("HODEI_K8S_NAMESPACE", cluster.namespace.clone()),
                    ("HODEI_WORKER_IMAGE", cluster.worker_image.clone()),
                    ("HODEI_ADVERTISE_ADDRESS", url.to_owned()),
                    ("HODEI_K8S_MAX_PODS", max_workers.to_string()),
                    // Small pods, so 200 at once fit a namespace quota of modest size.
                    ("HODEI_K8S_DEFAULT_CPU_REQUEST", "100m".to_owned()),
                    ("HODEI_K8S_DEFAULT_MEMORY_REQUEST", "64Mi".to_owned()),
                    ("HODEI_K8S_DEFAULT_CPU_LIMIT", "1".to_owned()),
                    ("HODEI_K8S_DEFAULT_MEMORY_LIMIT", "256Mi".to_owned()),
                ];
                if let Some(rate) = cluster.api_writes_per_second {
                    env.push(("HODEI_K8S_API_WRITES_PER_SECOND", rate.to_string()));
                }
                if let Some(kubeconfig) = &cluster.server_kubeconfig {
                    env.push((
                        "HODEI_K8S_KUBECONFIG",
                        kubeconfig.to_string_lossy().into_owned(),
                    ));
                }
                env
            }
        }
    }

    /// `local` or `kubernetes`, for figure methods.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Kubernetes(_) => "kubernetes",
        }
    }
}
