//! Plain pods, created without Hodei Jobs, as the Kubernetes baseline: the same command
//! in a pod that passes the worker namespace's restricted Pod Security and quota.

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;

use crate::target::Cluster;

/// Label on every baseline pod, so leftovers are easy to find.
pub const LABEL: &str = "hodei-bench/baseline";

/// A restricted pod named `name` running `sh -c script` in the baseline image.
#[must_use]
pub fn manifest(cluster: &Cluster, name: &str, script: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": cluster.settings.namespace, "labels": {LABEL: "true"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "main",
                "image": cluster.settings.baseline_image,
                "command": ["/bin/sh", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                },
                "resources": {
                    "requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {"cpu": "100m", "memory": "64Mi"}
                }
            }]
        }
    })
}

/// Creates the pod through the API.
pub async fn create(cluster: &Cluster, name: &str, script: &str) -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(manifest(cluster, name, script))?;
    api(cluster)
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("creating baseline pod {name}"))?;
    Ok(())
}

/// Deletes the pod at once (grace 0); a pod already gone is fine.
pub async fn delete(cluster: &Cluster, name: &str) -> anyhow::Result<()> {
    match api(cluster)
        .delete(name, &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error).with_context(|| format!("deleting baseline pod {name}")),
    }
}

fn api(cluster: &Cluster) -> Api<Pod> {
    Api::namespaced(cluster.client.clone(), &cluster.settings.namespace)
}
