//! Binds unbound pods to this node: the scheduler's one job, done naively.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

use crate::error::error_chain;

const ATTEMPTS: u32 = 5;

/// Posts a `pods/binding` for the pod, retrying transient failures. Node
/// selectors, affinity, taints and capacity are not considered.
#[tracing::instrument(skip_all, fields(pod.namespace = %namespace, pod.name = %name))]
pub(crate) async fn bind(
    client: kube::Client,
    namespace: String,
    name: String,
    uid: String,
    node: String,
) {
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: Some(uid),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node),
            ..ObjectReference::default()
        },
    };
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=ATTEMPTS {
        match pods
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {
                tracing::info!("pod bound");
                return;
            }
            // Already bound, or gone: either way there is nothing to do.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {
                tracing::debug!(reason = %status.message, "pod not bindable");
                return;
            }
            Err(error) => {
                tracing::warn!(attempt, error = %error_chain(&error), "binding failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
