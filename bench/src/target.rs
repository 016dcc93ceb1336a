//! Where benchmark jobs run: worker processes of the server, or worker pods.

use anyhow::Context;

use crate::config::{Kubernetes, Provider, TargetConfig};

/// The provider the measured server runs jobs on.
#[derive(Clone, Debug)]
pub enum Target {
    /// The local provider: one `hodei-worker-bin` child process per job.
    Local,
    /// The Kubernetes provider: one worker pod per job.
    Kubernetes(Cluster),
}

/// A cluster prepared for Hodei Jobs, and a client of it.
#[derive(Clone)]
pub struct Cluster {
    /// Where and what the server runs there.
    pub settings: Kubernetes,
    /// A client from KUBECONFIG, to watch pods and create baseline pods.
    pub client: kube::Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The target `config` names; connects to the cluster for Kubernetes.
    pub async fn connect(config: &TargetConfig) -> anyhow::Result<Self> {
        match config {
            TargetConfig::Local => Ok(Self::Local),
            TargetConfig::Kubernetes(settings) => {
                let client = kube::Client::try_default()
                    .await
                    .context("--provider kubernetes: cannot build a client from KUBECONFIG")?;
                Ok(Self::Kubernetes(Cluster {
                    settings: settings.clone(),
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
            Self::Kubernetes(Cluster { settings, .. }) => {
                let mut env = vec![
                    ("HODEI_LOCAL_ENABLED", "false".to_owned()),
                    ("HODEI_KUBERNETES_ENABLED", "true".to_owned()),
                    ("HODEI_K8S_NAMESPACE", settings.namespace.clone()),
                    ("HODEI_WORKER_IMAGE", settings.worker_image.clone()),
                    ("HODEI_ADVERTISE_ADDRESS", url.to_owned()),
                    ("HODEI_K8S_MAX_PODS", max_workers.to_string()),
                    // Small pods, so 200 at once fit a namespace quota of modest size.
                    ("HODEI_K8S_DEFAULT_CPU_REQUEST", "100m".to_owned()),
                    ("HODEI_K8S_DEFAULT_MEMORY_REQUEST", "64Mi".to_owned()),
                    ("HODEI_K8S_DEFAULT_CPU_LIMIT", "1".to_owned()),
                    ("HODEI_K8S_DEFAULT_MEMORY_LIMIT", "256Mi".to_owned()),
                ];
                if let Some(rate) = settings.api_writes_per_second {
                    env.push(("HODEI_K8S_API_WRITES_PER_SECOND", rate.to_string()));
                }
                if let Some(kubeconfig) = &settings.server_kubeconfig {
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
            Self::Local => Provider::Local,
            Self::Kubernetes(_) => Provider::Kubernetes,
        }
        .name()
    }
}
