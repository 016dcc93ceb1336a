//! Renews the node's Lease in `kube-node-lease`, as a kubelet does.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::NodeConfig;
use crate::error::error_chain;

const NAMESPACE: &str = "kube-node-lease";

/// Renews the lease every heartbeat until `shutdown`.
pub(crate) async fn renew(
    client: kube::Client,
    config: Arc<NodeConfig>,
    shutdown: CancellationToken,
) {
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let duration = i32::try_from(config.heartbeat.as_secs().saturating_mul(4)).unwrap_or(40);
    loop {
        if let Err(error) = renew_once(&leases, &config.node_name, duration).await {
            tracing::warn!(error = %error_chain(&error), "lease renewal failed");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(config.heartbeat) => {}
        }
    }
}

async fn renew_once(leases: &Api<Lease>, node: &str, duration: i32) -> Result<(), kube::Error> {
    let now = MicroTime(Timestamp::now());
    let patch = json!({ "spec": { "holderIdentity": node, "leaseDurationSeconds": duration, "renewTime": now } });
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_owned()),
                    namespace: Some(NAMESPACE.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_owned()),
                    lease_duration_seconds: Some(duration),
                    renew_time: Some(now),
                    ..LeaseSpec::default()
                }),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(drop)
        }
        Err(e) => Err(e),
    }
}
