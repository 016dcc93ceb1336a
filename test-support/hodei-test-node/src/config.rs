//! What one test node agent is told to do, independent of how it was told.

use std::path::PathBuf;
use std::time::Duration;

use crate::ImageMap;

/// Settings of one test node agent.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Name of the Node object, and of its Lease.
    pub node_name: String,
    /// Which local binary runs for which image.
    pub image_map: ImageMap,
    /// Per-pod directories (scratch working dir, log, pid file) live here.
    pub work_dir: PathBuf,
    /// How often the Node status and Lease are refreshed.
    pub heartbeat: Duration,
    /// How long an unmapped image stays `ErrImagePull` before `ImagePullBackOff`.
    pub image_pull_backoff: Duration,
    /// Written (with the node name) once the node is registered and the pod
    /// watch has listed every pod, so scripts can wait for it.
    pub ready_file: Option<PathBuf>,
}

impl NodeConfig {
    /// The address reported as the node's and pods' host IP.
    pub(crate) const HOST_IP: &'static str = "127.0.0.1";
}
