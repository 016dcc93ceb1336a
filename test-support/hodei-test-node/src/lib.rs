//! A test-only node agent: plays kubelet *and* scheduler for a local
//! kube-apiserver so that end-to-end tests can run real pods without containers.
//!
//! **This is a test fixture, not a kubelet.** It registers one Ready [`Node`],
//! binds every unbound pod to it through the `pods/binding` subresource, and runs
//! each pod's single container as a local process: the container image is looked
//! up in an [`ImageMap`] (`hodei-worker:latest=/path/to/hodei-worker-bin`) and the
//! mapped binary is run with the container's arguments and plain `value` env.
//! It reports pod status the way a kubelet would (phases, conditions, container
//! states with exit codes and reasons, `ErrImagePull`/`ImagePullBackOff` for
//! unmapped images, `DeadlineExceeded`) and honours graceful deletion.
//!
//! It gives no isolation and enforces nothing: no container runtime, namespaces,
//! cgroups, users, volumes, probes, restarts, init containers or resource limits.
//! Admission (Pod Security, quotas, service accounts) still runs in the
//! apiserver, which is what the tests rely on.
//!
//! [`Node`]: k8s_openapi::api::core::v1::Node

mod binder;
mod cli;
mod client;
mod config;
mod error;
mod image_map;
mod lease;
mod node;
mod pod_client;
mod pod_dir;
mod pod_task;
mod process;
mod status;
mod watch;

pub use cli::Args;
pub use client::connect;
pub use config::NodeConfig;
pub use error::{Error, Result};
pub use image_map::ImageMap;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Registers the node and serves pods until `shutdown` is cancelled.
///
/// On shutdown, running containers are stopped, their pods are marked
/// `Failed`, and the node is reported not ready.
pub async fn run(
    client: kube::Client,
    config: NodeConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let config = Arc::new(config);
    if config.image_map.is_empty() {
        tracing::warn!("no --image-map entries: every pod will report ErrImagePull");
    }
    node::register(&client, &config).await?;
    let heartbeat = tokio::spawn(node::heartbeat(
        client.clone(),
        Arc::clone(&config),
        shutdown.clone(),
    ));
    let lease = tokio::spawn(lease::renew(
        client.clone(),
        Arc::clone(&config),
        shutdown.clone(),
    ));
    let served = watch::serve(client, Arc::clone(&config), shutdown.clone()).await;
    // Whatever ended the watch, the node must not stay "Ready" behind us.
    shutdown.cancel();
    for task in [heartbeat, lease] {
        if let Err(error) = task.await {
            tracing::warn!(%error, "background task ended abnormally");
        }
    }
    served
}
