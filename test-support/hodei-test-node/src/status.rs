//! Pod status as a kubelet reports it, built from what the test node knows.

use k8s_openapi::api::core::v1::{
    ContainerState as K8sContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::NodeConfig;
use crate::process::Exit;

/// Pod phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    /// The phase a `restartPolicy: Never` pod ends in after `exit`.
    pub(crate) fn after(exit: Exit) -> Self {
        if exit.exit_code() == 0 {
            Self::Succeeded
        } else {
            Self::Failed
        }
    }
}

/// State of the pod's one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    Waiting {
        reason: &'static str,
        message: String,
    },
    Running {
        started_at: Timestamp,
        container_id: String,
    },
    Terminated {
        exit: Exit,
        /// `Completed`/`Error` when `None`.
        reason: Option<&'static str>,
        message: Option<String>,
        started_at: Option<Timestamp>,
        finished_at: Timestamp,
        container_id: Option<String>,
    },
}

/// What to report for one pod.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) phase: Phase,
    pub(crate) start_time: Timestamp,
    pub(crate) state: State,
    /// Pod-level `reason` and `message`, e.g. `DeadlineExceeded`.
    pub(crate) pod_reason: Option<(&'static str, String)>,
}

/// The full status for `report`; conditions that keep their status keep
/// their transition time from `pod`, and `PodScheduled` is carried over.
pub(crate) fn pod_status(pod: &Pod, report: &Report, now: Timestamp) -> PodStatus {
    let container = pod.spec.as_ref().and_then(|spec| spec.containers.first());
    let name = container.map(|c| c.name.clone()).unwrap_or_default();
    let image = container.and_then(|c| c.image.clone()).unwrap_or_default();
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = existing
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            message,
            last_transition_time: Some(since),
            ..PodCondition::default()
        }
    };
    let (sandbox, ready, not_ready_reason) = match report.phase {
        Phase::Pending => (true, false, "ContainersNotReady"),
        Phase::Running => (matches!(report.state, State::Running { .. }), true, ""),
        Phase::Succeeded => (false, false, "PodCompleted"),
        Phase::Failed => (false, false, "PodFailed"),
    };
    let (reason, message) = if ready {
        (None, None)
    } else if report.phase == Phase::Pending {
        (
            Some(not_ready_reason),
            Some(format!("containers with unready status: [{name}]")),
        )
    } else {
        (Some(not_ready_reason), None)
    };
    let mut conditions = vec![
        condition("PodReadyToStartContainers", sandbox, None, None),
        condition("Initialized", true, None, None),
        condition("Ready", ready, reason, message.clone()),
        condition("ContainersReady", ready, reason, message),
    ];
    conditions.extend(
        existing
            .iter()
            .filter(|c| c.type_ == "PodScheduled")
            .cloned(),
    );

    PodStatus {
        phase: Some(report.phase.as_str().to_owned()),
        conditions: Some(conditions),
        host_ip: Some(NodeConfig::HOST_IP.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: NodeConfig::HOST_IP.to_owned(),
        }]),
        start_time: Some(Time(report.start_time)),
        reason: report.pod_reason.as_ref().map(|(r, _)| (*r).to_owned()),
        message: report.pod_reason.as_ref().map(|(_, m)| m.clone()),
        container_statuses: Some(vec![container_status(name, image, &report.state)]),
        ..PodStatus::default()
    }
}

fn container_status(name: String, image: String, state: &State) -> ContainerStatus {
    let (k8s_state, container_id, running) = match state {
        State::Waiting { reason, message } => (
            K8sContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some((*reason).to_owned()),
                    message: Some(message.clone()),
                }),
                ..K8sContainerState::default()
            },
            None,
            false,
        ),
        State::Running {
            started_at,
            container_id,
        } => (
            K8sContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..K8sContainerState::default()
            },
            Some(container_id.clone()),
            true,
        ),
        State::Terminated {
            exit,
            reason,
            message,
            started_at,
            finished_at,
            container_id,
        } => {
            let default_reason = if exit.exit_code() == 0 {
                "Completed"
            } else {
                "Error"
            };
            (
                K8sContainerState {
                    terminated: Some(ContainerStateTerminated {
                        container_id: container_id.clone(),
                        exit_code: exit.exit_code(),
                        signal: exit.signal(),
                        reason: Some(reason.unwrap_or(default_reason).to_owned()),
                        message: message.clone(),
                        started_at: started_at.map(Time),
                        finished_at: Some(Time(*finished_at)),
                    }),
                    ..K8sContainerState::default()
                },
                container_id.clone(),
                false,
            )
        }
    };
    ContainerStatus {
        name,
        image,
        image_id: String::new(),
        container_id,
        ready: running,
        started: Some(running),
        restart_count: 0,
        state: Some(k8s_state),
        ..ContainerStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn pod() -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "worker".to_owned(),
                    image: Some("w:1".to_owned()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".to_owned(),
                    status: "True".to_owned(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .expect("condition present")
    }

    #[test]
    fn failed_exit_is_error_with_code() {
        let now = Timestamp::UNIX_EPOCH;
        let report = Report {
            phase: Phase::after(Exit::Code(3)),
            start_time: now,
            state: State::Terminated {
                exit: Exit::Code(3),
                reason: None,
                message: None,
                started_at: Some(now),
                finished_at: now,
                container_id: Some("x://1".to_owned()),
            },
            pod_reason: None,
        };
        let status = pod_status(&pod(), &report, now);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let terminated = status
            .container_statuses
            .as_ref()
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.terminated)
            .expect("terminated");
        assert_eq!(terminated.exit_code, 3);
        assert_eq!(terminated.reason.as_deref(), Some("Error"));
        assert_eq!(
            condition(&status, "Ready").reason.as_deref(),
            Some("PodFailed")
        );
        assert_eq!(condition(&status, "PodScheduled").status, "True");
    }

    #[test]
    fn waiting_is_pending_and_not_ready() {
        let now = Timestamp::UNIX_EPOCH;
        let report = Report {
            phase: Phase::Pending,
            start_time: now,
            state: State::Waiting {
                reason: "ErrImagePull",
                message: "nope".to_owned(),
            },
            pod_reason: None,
        };
        let status = pod_status(&pod(), &report, now);
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let ready = condition(&status, "ContainersReady");
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [worker]")
        );
        let waiting = status
            .container_statuses
            .as_ref()
            .and_then(|c| c[0].state.clone())
            .and_then(|s| s.waiting)
            .expect("waiting");
        assert_eq!(waiting.reason.as_deref(), Some("ErrImagePull"));
    }
}
