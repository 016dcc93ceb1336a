//! The pod writes the test node makes: status patches and final removal.

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;

use crate::error::error_chain;

/// Writes to one pod, identified by name and uid.
#[derive(Debug, Clone)]
pub(crate) struct PodClient {
    api: Api<Pod>,
    name: String,
    uid: String,
}

impl PodClient {
    pub(crate) fn new(client: kube::Client, namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            uid: uid.to_owned(),
        }
    }

    /// Replaces the pod status fields given; failures are logged, since the
    /// pod may be gone and nothing else can be done about it.
    pub(crate) async fn patch_status(&self, status: &PodStatus) {
        let patch = json!({ "status": status });
        if let Err(error) = self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(error = %error_chain(&error), "pod status update failed");
        }
    }

    /// Deletes the pod with grace 0, as a kubelet does once its containers
    /// are gone. Only this uid: a new pod of the same name is left alone.
    pub(crate) async fn remove(&self) {
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&self.name, &params).await {
            Ok(_) => tracing::info!("pod removed"),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
                tracing::debug!("pod already gone");
            }
            Err(error) => tracing::warn!(error = %error_chain(&error), "pod removal failed"),
        }
    }
}
