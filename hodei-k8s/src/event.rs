//! Typed pod lifecycle events the watcher emits.

use std::fmt;

/// One lifecycle transition of one worker pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    /// Worker id the pod was created for.
    pub worker_id: String,
    /// The pod's name.
    pub pod_name: String,
    /// What happened.
    pub kind: PodEventKind,
}

/// What happened to a worker pod. Per pod, events only move forward
/// (`Scheduled` → `PullingImage` → `Running` → a terminal kind → `Deleted`); steps the
/// watcher did not observe are skipped, never replayed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodEventKind {
    /// The scheduler bound the pod to a node.
    Scheduled,
    /// The kubelet is preparing the container: pulling the image (including pull retries
    /// still inside the grace period), mounting volumes.
    PullingImage,
    /// The worker container started.
    Running,
    /// The worker container exited with `exit_code` 0.
    Succeeded {
        /// The container's exit code.
        exit_code: i32,
    },
    /// The pod failed after it was created: the container exited non-zero, was OOM-killed,
    /// the pod was evicted or hit `activeDeadlineSeconds`.
    Failed {
        /// The container's exit code, when it ran at all.
        exit_code: Option<i32>,
        /// Kubernetes' reason: `OOMKilled`, `Error`, `Evicted`, `DeadlineExceeded`, ...
        reason: String,
        /// Kubernetes' message, possibly empty.
        message: String,
    },
    /// The pod will never run the worker; delete it and report the job failed.
    FailFast {
        /// Why.
        reason: FailFastReason,
        /// The kubelet's or scheduler's message.
        message: String,
    },
    /// The pod is gone from the API server (deleted by anyone, including this system).
    Deleted,
}

impl PodEventKind {
    /// True for `Succeeded`, `Failed` and `FailFast`: the worker will not (or no longer) run.
    #[must_use]
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Succeeded { .. } | Self::Failed { .. } | Self::FailFast { .. }
        )
    }

    /// Position in the forward-only order of events; equal ranks never follow each other.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Self::Scheduled => 1,
            Self::PullingImage => 2,
            Self::Running => 3,
            Self::Succeeded { .. } | Self::Failed { .. } | Self::FailFast { .. } => 4,
            Self::Deleted => 5,
        }
    }
}

/// Why a pod can never start the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailFastReason {
    /// The image reference does not parse (reported at once).
    InvalidImageName,
    /// Pulling the image kept failing for longer than the image pull grace.
    ErrImagePull,
    /// The kubelet is backing off pulls, for longer than the image pull grace.
    ImagePullBackOff,
    /// The container config refers to something missing, e.g. a secret (reported at once).
    CreateContainerConfigError,
    /// The runtime could not create the container (reported at once).
    CreateContainerError,
    /// No node fits the pod, for longer than the scheduling timeout.
    Unschedulable,
}

impl FailFastReason {
    /// The Kubernetes spelling of the reason, e.g. `ImagePullBackOff`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidImageName => "InvalidImageName",
            Self::ErrImagePull => "ErrImagePull",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::CreateContainerError => "CreateContainerError",
            Self::Unschedulable => "Unschedulable",
        }
    }
}

impl fmt::Display for FailFastReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
