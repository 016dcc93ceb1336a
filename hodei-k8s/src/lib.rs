//! Kubernetes mechanics of Hodei Jobs: the worker pod template, pod lifecycle events,
//! deletion and orphan listing. Knows pods, not jobs.
//!
//! ```no_run
//! use hodei_k8s::{PodEventKind, PodWatcher, WatcherConfig, WorkerPodSpec, WorkerPods, WorkerResources};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let (_watcher, mut events) = PodWatcher::spawn(client.clone(), "jobs", WatcherConfig::default());
//! let pods = WorkerPods::new(client, "jobs");
//! let spec = WorkerPodSpec::builder()
//!     .worker_id("w-1")
//!     .job_id("job-1")
//!     .namespace("jobs")
//!     .image("ghcr.io/example/hodei-worker:1")
//!     .server_address("https://hodei-server:50052")
//!     .resources(WorkerResources {
//!         cpu_request: "500m".into(),
//!         cpu_limit: "2".into(),
//!         memory_request: "1Gi".into(),
//!         memory_limit: "4Gi".into(),
//!         ephemeral_storage_request: "1Gi".into(),
//!         ephemeral_storage_limit: "10Gi".into(),
//!         tmp_size_limit: "1Gi".into(),
//!         working_dir_size_limit: "8Gi".into(),
//!     })
//!     .active_deadline_seconds(3600)
//!     .build();
//! let pod = pods.create(&spec).await?;
//! while let Some(event) = events.recv().await {
//!     if event.kind.is_terminal() || event.kind == PodEventKind::Deleted {
//!         pods.delete(&event.pod_name, 30).await?;
//!         break;
//!     }
//! }
//! # drop(pod);
//! # Ok(())
//! # }
//! ```

mod error;
mod event;
pub mod labels;
pub mod lifecycle;
mod pod_spec;
mod pods;
mod rate_limit;
pub mod reviews;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
mod tracker;
mod watcher;

pub use error::{Error, Result};
pub use event::{FailFastReason, PodEvent, PodEventKind};
/// Requirement on a node label, for required node affinity (re-exported likewise).
pub use k8s_openapi::api::core::v1::NodeSelectorRequirement;
/// Taint toleration of a worker pod (re-exported so callers need not depend on k8s-openapi).
pub use k8s_openapi::api::core::v1::Toleration;
pub use pod_spec::{
    DEFAULT_IDENTITY_TOKEN_AUDIENCE, DEFAULT_IMAGE_PULL_POLICY, DEFAULT_SERVICE_ACCOUNT,
    DEFAULT_WORKING_DIR, SecretKey, WorkerPodSpec, WorkerResources, check_secret_file_path,
    pod_name,
};
pub use pods::{DEFAULT_WRITES_PER_SECOND, ManagedPod, PodPhase, WorkerPods};
pub use rate_limit::RateLimiter;
pub use watcher::{
    DEFAULT_IMAGE_PULL_GRACE, DEFAULT_SCHEDULING_TIMEOUT, PodWatcher, WatchHealth, WatcherConfig,
};
