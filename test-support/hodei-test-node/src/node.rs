//! Registers the Node object and keeps its Ready condition fresh.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::error::error_chain;
use crate::{Error, NodeConfig, Result};

/// Label set on the Node so tests can tell the fixture from a real node.
pub(crate) const FIXTURE_LABEL: &str = "hodei.dev/test-node";

/// Creates the Node, or takes over an existing one of the same name, and
/// reports it Ready.
pub(crate) async fn register(client: &kube::Client, config: &NodeConfig) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels(&config.node_name)),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node.name = %config.node_name, "node registered"),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch = json!({ "metadata": { "labels": labels(&config.node_name) } });
            nodes
                .patch(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .map_err(|e| Error::api("updating existing node", e))?;
            tracing::info!(node.name = %config.node_name, "node already existed; taken over");
        }
        Err(e) => return Err(Error::api("registering node", e)),
    }
    patch_status(&nodes, config, Report::Changed { ready: true }).await
}

/// A status write: a change of readiness, or a heartbeat that keeps the
/// conditions' transition times.
#[derive(Debug, Clone, Copy)]
enum Report {
    Changed { ready: bool },
    Heartbeat,
}

/// Refreshes the Ready condition every heartbeat until `shutdown`, then
/// reports the node not ready.
pub(crate) async fn heartbeat(
    client: kube::Client,
    config: Arc<NodeConfig>,
    shutdown: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(config.heartbeat) => {}
        }
        if let Err(error) = patch_status(&nodes, &config, Report::Heartbeat).await {
            tracing::warn!(error = %error_chain(&error), "node heartbeat failed");
        }
    }
    match patch_status(&nodes, &config, Report::Changed { ready: false }).await {
        Ok(()) => tracing::info!("node reported not ready"),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "could not report node not ready")
        }
    }
}

async fn patch_status(nodes: &Api<Node>, config: &NodeConfig, report: Report) -> Result<()> {
    let patch = json!({ "status": status(report, Timestamp::now()) });
    // Strategic merge keys conditions by type, so a heartbeat that leaves out
    // lastTransitionTime keeps the stored one.
    nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
        .map_err(|e| Error::api("updating node status", e))?;
    Ok(())
}

fn labels(node_name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", node_name),
        ("kubernetes.io/os", std::env::consts::OS),
        ("kubernetes.io/arch", kube_arch()),
        (FIXTURE_LABEL, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn status(report: Report, now: Timestamp) -> NodeStatus {
    let (ready, changed) = match report {
        Report::Changed { ready } => (ready, true),
        Report::Heartbeat => (true, false),
    };
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: changed.then_some(Time(now)),
    };
    let ready_condition = if ready {
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "hodei-test-node is posting ready status",
        )
    } else {
        condition(
            "Ready",
            "False",
            "KubeletNotReady",
            "hodei-test-node stopped",
        )
    };
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", cpu_count()),
        ("memory", "16Gi".to_owned()),
        ("pods", "110".to_owned()),
        ("ephemeral-storage", "100Gi".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), Quantity(v)))
    .collect();
    NodeStatus {
        conditions: Some(vec![
            ready_condition,
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "fixture",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "fixture",
            ),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "fixture"),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: NodeConfig::HOST_IP.to_owned(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: "localhost".to_owned(),
            },
        ]),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        node_info: Some(NodeSystemInfo {
            architecture: kube_arch().to_owned(),
            operating_system: std::env::consts::OS.to_owned(),
            os_image: "hodei-test-node (local processes)".to_owned(),
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            container_runtime_version: "hodei-test-node://0.1.0".to_owned(),
            kubelet_version: concat!("v0.0.0-hodei-test-node-", env!("CARGO_PKG_VERSION"))
                .to_owned(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    }
}

fn cpu_count() -> String {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .to_string()
}

fn kube_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_and_not_ready_statuses() {
        let now = Timestamp::UNIX_EPOCH;
        let ready = status(Report::Changed { ready: true }, now);
        let conditions = ready.conditions.unwrap_or_default();
        assert_eq!(conditions[0].type_, "Ready");
        assert_eq!(conditions[0].status, "True");
        assert!(conditions[0].last_transition_time.is_some());
        let beat = status(Report::Heartbeat, now)
            .conditions
            .unwrap_or_default();
        assert_eq!(beat[0].status, "True");
        assert!(beat[0].last_transition_time.is_none());
        let stopped = status(Report::Changed { ready: false }, now);
        assert_eq!(stopped.conditions.unwrap_or_default()[0].status, "False");
    }
}
