//! Command-line and environment options of the `hodei-test-node` binary.

use std::path::PathBuf;
use std::time::Duration;

use crate::{ImageMap, NodeConfig, Result};

/// Test fixture node agent for a local kube-apiserver: registers a Node, binds
/// unbound pods to it and runs their container as a local process.
#[derive(Debug, clap::Parser)]
#[command(name = "hodei-test-node", version)]
pub struct Args {
    /// Name of the Node to register.
    #[arg(long, env = "HODEI_TEST_NODE_NAME", default_value = "hodei-test-node")]
    pub node_name: String,
    /// IMAGE=PATH: run PATH for containers of IMAGE. Repeatable; in the
    /// environment, comma-separated. A tagless IMAGE matches every tag.
    #[arg(
        long = "image-map",
        value_name = "IMAGE=PATH",
        env = "HODEI_TEST_NODE_IMAGE_MAP",
        value_delimiter = ','
    )]
    pub image_map: Vec<String>,
    /// Kubeconfig to use; default: KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "HODEI_TEST_NODE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory for per-pod scratch dirs, logs and pid files.
    #[arg(long, env = "HODEI_TEST_NODE_WORK_DIR", default_value_os_t = default_work_dir())]
    pub work_dir: PathBuf,
    /// Seconds between Node status and Lease refreshes.
    #[arg(long, default_value_t = 10)]
    pub heartbeat_seconds: u64,
    /// Seconds an unmapped image shows ErrImagePull before ImagePullBackOff.
    #[arg(long, default_value_t = 2)]
    pub image_pull_backoff_seconds: u64,
    /// File to write once the node is registered and watching pods.
    #[arg(long, env = "HODEI_TEST_NODE_READY_FILE")]
    pub ready_file: Option<PathBuf>,
}

impl Args {
    /// Validates the options into a [`NodeConfig`].
    pub fn into_config(self) -> Result<NodeConfig> {
        Ok(NodeConfig {
            node_name: self.node_name,
            image_map: ImageMap::from_entries(&self.image_map)?,
            work_dir: self.work_dir,
            heartbeat: Duration::from_secs(self.heartbeat_seconds.max(1)),
            image_pull_backoff: Duration::from_secs(self.image_pull_backoff_seconds),
            ready_file: self.ready_file,
        })
    }
}

fn default_work_dir() -> PathBuf {
    std::env::temp_dir().join("hodei-test-node")
}
