//! Where benchmark jobs run: worker processes of the server, or worker pods.

use std::process::Command;

use anyhow::{Context, ensure};

use crate::config::{Kubernetes, Provider, TargetConfig};

/// The provider the measured server runs jobs on.
#[derive(Clone, Debug)]
pub enum Target {
    /// The local provider: one `hodei-worker-bin` child process per job.
    Local,
    /// The Kubernetes provider: one worker pod per job.
    Kubernetes(Box<Cluster>),
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
                Ok(Self::Kubernetes(Box::new(Cluster {
                    settings: settings.clone(),
                    client,
                })))
            }
        }
    }

    /// The URL workers dial for a worker API listening on loopback `port`: the loopback URL
    /// itself, or what the cluster's expose program prints for it.
    pub fn advertise_address(&self, port: u16) -> anyhow::Result<String> {
        let loopback = format!("http://127.0.0.1:{port}");
        let Self::Kubernetes(cluster) = self else {
            return Ok(loopback);
        };
        let Some(expose) = &cluster.settings.expose else {
            return Ok(loopback);
        };
        let out = Command::new(expose)
            .arg(port.to_string())
            .output()
            .with_context(|| format!("cannot run {}", expose.display()))?;
        ensure!(
            out.status.success(),
            "{} {port} failed: {}",
            expose.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        ensure!(
            !url.is_empty(),
            "{} {port} printed no URL",
            expose.display()
        );
        Ok(url)
    }

    /// The command of a job that runs `hodei-bench` (`bench` on this machine): on
    /// Kubernetes, its path inside the worker image.
    #[must_use]
    pub fn bench_command(&self, bench: &std::path::Path) -> String {
        match self {
            Self::Local => bench.to_string_lossy().into_owned(),
            Self::Kubernetes(cluster) => cluster.settings.bench_bin.clone(),
        }
    }

    /// The server settings that select this target, for a server that workers reach at
    /// `advertise` allowing `max_workers` workers at once.
    #[must_use]
    pub fn server_env(&self, advertise: &str, max_workers: usize) -> Vec<(&'static str, String)> {
        match self {
            Self::Local => vec![("HODEI_LOCAL_MAX_WORKERS", max_workers.to_string())],
            Self::Kubernetes(cluster) => {
                let settings = &cluster.settings;
                let mut env = vec![
                    ("HODEI_LOCAL_ENABLED", "false".to_owned()),
                    ("HODEI_KUBERNETES_ENABLED", "true".to_owned()),
                    ("HODEI_K8S_NAMESPACE", settings.namespace.clone()),
                    ("HODEI_WORKER_IMAGE", settings.worker_image.clone()),
                    ("HODEI_ADVERTISE_ADDRESS", advertise.to_owned()),
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
