//! Pure mapping from a pod's status to lifecycle events, with grace periods applied.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};

use crate::event::{FailFastReason, PodEventKind};
use crate::pod_spec::CONTAINER_NAME;

/// What a pod's status says before grace periods are applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assessment {
    /// Waiting for the scheduler; nothing to report.
    Pending,
    /// The scheduler found no node; fatal only after the scheduling timeout.
    Unschedulable {
        /// The scheduler's message, e.g. `0/3 nodes are available: 3 Insufficient cpu.`
        message: String,
    },
    /// Image pulls are failing; fatal only after the image pull grace.
    PullFailing {
        /// `ErrImagePull` or `ImagePullBackOff`.
        reason: FailFastReason,
        /// The kubelet's message.
        message: String,
    },
    /// The status maps to this event whatever the time.
    Now(PodEventKind),
}

impl Assessment {
    /// Which grace clock applies, if any. Pull errors flip between `ErrImagePull` and
    /// `ImagePullBackOff`; both share one clock.
    #[must_use]
    pub fn clock(&self) -> Option<GraceClock> {
        match self {
            Self::Unschedulable { .. } => Some(GraceClock::Scheduling),
            Self::PullFailing { .. } => Some(GraceClock::ImagePull),
            Self::Pending | Self::Now(_) => None,
        }
    }
}

/// The two problems that are only fatal once they have lasted long enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraceClock {
    /// Measured against [`Grace::scheduling_timeout`].
    Scheduling,
    /// Measured against [`Grace::image_pull_grace`].
    ImagePull,
}

/// How long transient-looking problems may last before they become fail-fast events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grace {
    /// How long `ErrImagePull`/`ImagePullBackOff` may last.
    pub image_pull_grace: Duration,
    /// How long a pod may stay `Unschedulable`.
    pub scheduling_timeout: Duration,
}

/// Reads a pod's status. Terminal states win over everything else, then the worker
/// container's state, then the `PodScheduled` condition.
#[must_use]
pub fn assess(pod: &Pod) -> Assessment {
    let Some(status) = pod.status.as_ref() else {
        return Assessment::Pending;
    };
    let container = worker_container(status);
    match status.phase.as_deref() {
        Some("Succeeded") => return Assessment::Now(succeeded(container)),
        Some("Failed") => return Assessment::Now(failed(status, container)),
        _ => {}
    }
    if let Some(kind) = container.and_then(container_event) {
        return kind;
    }
    scheduling(status)
}

/// Applies the grace periods: `waited` is how long the problem behind `assessment`'s
/// [`clock`](Assessment::clock) has been observed. `None` means nothing to report.
#[must_use]
pub fn decide(assessment: &Assessment, waited: Duration, grace: &Grace) -> Option<PodEventKind> {
    match assessment {
        Assessment::Pending => None,
        Assessment::Unschedulable { message } => {
            (waited >= grace.scheduling_timeout).then(|| PodEventKind::FailFast {
                reason: FailFastReason::Unschedulable,
                message: message.clone(),
            })
        }
        Assessment::PullFailing { reason, message } => Some(if waited >= grace.image_pull_grace {
            PodEventKind::FailFast {
                reason: *reason,
                message: message.clone(),
            }
        } else {
            PodEventKind::PullingImage
        }),
        Assessment::Now(kind) => Some(kind.clone()),
    }
}

/// [`assess`] then [`decide`].
#[must_use]
pub fn classify(pod: &Pod, waited: Duration, grace: &Grace) -> Option<PodEventKind> {
    decide(&assess(pod), waited, grace)
}

fn worker_container(status: &PodStatus) -> Option<&ContainerStatus> {
    let statuses = status.container_statuses.as_deref()?;
    statuses
        .iter()
        .find(|c| c.name == CONTAINER_NAME)
        .or_else(|| statuses.first())
}

fn succeeded(container: Option<&ContainerStatus>) -> PodEventKind {
    let exit_code = container.and_then(terminated).map_or(0, |t| t.exit_code);
    PodEventKind::Succeeded { exit_code }
}

fn failed(status: &PodStatus, container: Option<&ContainerStatus>) -> PodEventKind {
    let terminated = container.and_then(terminated);
    // A pod-level reason (Evicted, DeadlineExceeded, admission failures) explains more than
    // the container's "Error" after it was killed.
    let reason = non_empty(status.reason.as_deref())
        .or_else(|| terminated.and_then(|t| non_empty(t.reason.as_deref())))
        .unwrap_or("Failed");
    let message = non_empty(status.message.as_deref())
        .or_else(|| terminated.and_then(|t| non_empty(t.message.as_deref())))
        .unwrap_or_default();
    PodEventKind::Failed {
        exit_code: terminated.map(|t| t.exit_code),
        reason: reason.to_owned(),
        message: message.to_owned(),
    }
}

fn container_event(container: &ContainerStatus) -> Option<Assessment> {
    let state = container.state.as_ref()?;
    if let Some(t) = state.terminated.as_ref() {
        // With restartPolicy Never the phase follows; don't wait for it.
        return Some(Assessment::Now(if t.exit_code == 0 {
            PodEventKind::Succeeded { exit_code: 0 }
        } else {
            PodEventKind::Failed {
                exit_code: Some(t.exit_code),
                reason: non_empty(t.reason.as_deref()).unwrap_or("Error").to_owned(),
                message: t.message.clone().unwrap_or_default(),
            }
        }));
    }
    if state.running.is_some() {
        return Some(Assessment::Now(PodEventKind::Running));
    }
    let waiting = state.waiting.as_ref()?;
    let message = waiting.message.clone().unwrap_or_default();
    let fail_now = |reason| {
        Assessment::Now(PodEventKind::FailFast {
            reason,
            message: message.clone(),
        })
    };
    Some(match waiting.reason.as_deref().unwrap_or_default() {
        "InvalidImageName" => fail_now(FailFastReason::InvalidImageName),
        "CreateContainerConfigError" => fail_now(FailFastReason::CreateContainerConfigError),
        "CreateContainerError" => fail_now(FailFastReason::CreateContainerError),
        "ErrImagePull" => Assessment::PullFailing {
            reason: FailFastReason::ErrImagePull,
            message,
        },
        "ImagePullBackOff" => Assessment::PullFailing {
            reason: FailFastReason::ImagePullBackOff,
            message,
        },
        // ContainerCreating, PodInitializing: the kubelet is pulling and setting up.
        _ => Assessment::Now(PodEventKind::PullingImage),
    })
}

fn scheduling(status: &PodStatus) -> Assessment {
    let condition = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "PodScheduled");
    match condition {
        Some(c) if c.status == "True" => Assessment::Now(PodEventKind::Scheduled),
        Some(c) if c.status == "False" && c.reason.as_deref() == Some("Unschedulable") => {
            Assessment::Unschedulable {
                message: c.message.clone().unwrap_or_default(),
            }
        }
        _ => Assessment::Pending,
    }
}

fn terminated(
    container: &ContainerStatus,
) -> Option<&k8s_openapi::api::core::v1::ContainerStateTerminated> {
    container.state.as_ref()?.terminated.as_ref()
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests;
