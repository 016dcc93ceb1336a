//! Builds the Kubernetes client from an explicit kubeconfig or the environment.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{Error, Result};

/// Connects with `kubeconfig` if given, else with `KUBECONFIG` / in-cluster
/// inference.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| Error::Kubeconfig {
                path: path.display().to_string(),
                source: Box::new(source),
            };
            let file = Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::InferConfig(Box::new(e)))?,
    };
    kube::Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))
}
