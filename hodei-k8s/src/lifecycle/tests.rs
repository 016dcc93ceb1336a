//! Realistic pod statuses, as the API server reports them, mapped to events.

use super::*;
use serde_json::{Value, json};

const GRACE: Grace = Grace {
    image_pull_grace: Duration::from_secs(30),
    scheduling_timeout: Duration::from_secs(120),
};
const BEFORE_PULL_GRACE: Duration = Duration::from_secs(5);
const AFTER_PULL_GRACE: Duration = Duration::from_secs(31);

fn pod(status: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hodei-worker-w1", "namespace": "jobs"},
        "spec": {"containers": [{"name": "worker", "image": "img"}]},
        "status": status,
    }))
    .expect("valid pod json")
}

fn scheduled_conditions() -> Value {
    json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2025-01-01T10:00:02Z"},
        {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-01-01T10:00:01Z"},
        {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": "2025-01-01T10:00:01Z"},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T10:00:00Z"}
    ])
}

fn waiting(reason: &str, message: &str) -> Pod {
    pod(json!({
        "phase": "Pending",
        "conditions": scheduled_conditions(),
        "hostIP": "10.0.0.5",
        "startTime": "2025-01-01T10:00:01Z",
        "containerStatuses": [{
            "name": "worker",
            "image": "registry.example.com/hodei/worker:nope",
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "started": false,
            "state": {"waiting": {"reason": reason, "message": message}}
        }]
    }))
}

fn terminated_pod(phase: &str, terminated: Value, pod_reason: Option<(&str, &str)>) -> Pod {
    let mut status = json!({
        "phase": phase,
        "conditions": scheduled_conditions(),
        "containerStatuses": [{
            "name": "worker",
            "image": "hodei/worker:1",
            "imageID": "docker.io/hodei/worker@sha256:abc",
            "containerID": "containerd://123",
            "ready": false,
            "restartCount": 0,
            "started": false,
            "state": {"terminated": terminated}
        }]
    });
    if let Some((reason, message)) = pod_reason {
        status["reason"] = json!(reason);
        status["message"] = json!(message);
    }
    pod(status)
}

fn unschedulable() -> Pod {
    pod(json!({
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
            "lastTransitionTime": "2025-01-01T10:00:00Z"
        }],
        "qosClass": "Burstable"
    }))
}

const PULL_MSG: &str = "rpc error: code = NotFound desc = failed to pull and unpack image \"registry.example.com/hodei/worker:nope\": not found";

#[test]
fn err_image_pull_is_pulling_within_grace() {
    let pod = waiting("ErrImagePull", PULL_MSG);
    assert_eq!(
        classify(&pod, BEFORE_PULL_GRACE, &GRACE),
        Some(PodEventKind::PullingImage)
    );
    assert_eq!(assess(&pod).clock(), Some(GraceClock::ImagePull));
}

#[test]
fn err_image_pull_fails_fast_after_grace() {
    let pod = waiting("ErrImagePull", PULL_MSG);
    assert_eq!(
        classify(&pod, AFTER_PULL_GRACE, &GRACE),
        Some(PodEventKind::FailFast {
            reason: FailFastReason::ErrImagePull,
            message: PULL_MSG.to_owned(),
        })
    );
}

#[test]
fn image_pull_back_off_waits_for_the_same_grace() {
    let msg = "Back-off pulling image \"registry.example.com/hodei/worker:nope\"";
    let pod = waiting("ImagePullBackOff", msg);
    assert_eq!(
        classify(&pod, BEFORE_PULL_GRACE, &GRACE),
        Some(PodEventKind::PullingImage)
    );
    assert_eq!(
        classify(&pod, AFTER_PULL_GRACE, &GRACE),
        Some(PodEventKind::FailFast {
            reason: FailFastReason::ImagePullBackOff,
            message: msg.to_owned(),
        })
    );
}

#[test]
fn invalid_image_name_fails_at_once() {
    let msg = "Failed to apply default image tag \"Bad Image\": couldn't parse image name \"Bad Image\": invalid reference format";
    let pod = waiting("InvalidImageName", msg);
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::FailFast {
            reason: FailFastReason::InvalidImageName,
            message: msg.to_owned(),
        })
    );
}

#[test]
fn create_container_config_error_fails_at_once() {
    let msg = "secret \"registry-creds\" not found";
    let pod = waiting("CreateContainerConfigError", msg);
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::FailFast {
            reason: FailFastReason::CreateContainerConfigError,
            message: msg.to_owned(),
        })
    );
}

#[test]
fn create_container_error_fails_at_once() {
    let msg = "failed to generate container spec: failed to create working directory";
    let pod = waiting("CreateContainerError", msg);
    assert!(matches!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::FailFast {
            reason: FailFastReason::CreateContainerError,
            ..
        })
    ));
}

#[test]
fn container_creating_is_pulling_image() {
    let pod = waiting("ContainerCreating", "");
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::PullingImage)
    );
}

#[test]
fn unschedulable_is_silent_before_the_timeout() {
    let pod = unschedulable();
    assert_eq!(classify(&pod, Duration::from_secs(119), &GRACE), None);
    assert_eq!(assess(&pod).clock(), Some(GraceClock::Scheduling));
}

#[test]
fn unschedulable_fails_fast_after_the_timeout() {
    match classify(&unschedulable(), Duration::from_secs(120), &GRACE) {
        Some(PodEventKind::FailFast {
            reason: FailFastReason::Unschedulable,
            message,
        }) => {
            assert!(message.contains("Insufficient memory"), "{message}");
        }
        other => panic!("expected Unschedulable fail-fast, got {other:?}"),
    }
}

#[test]
fn fresh_pod_without_status_reports_nothing() {
    assert_eq!(
        classify(
            &pod(json!({"phase": "Pending", "qosClass": "Burstable"})),
            Duration::from_secs(999),
            &GRACE
        ),
        None
    );
}

#[test]
fn scheduled_before_the_kubelet_reports() {
    let pod = pod(json!({
        "phase": "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T10:00:00Z"}]
    }));
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Scheduled)
    );
}

#[test]
fn running_container() {
    let pod = pod(json!({
        "phase": "Running",
        "conditions": scheduled_conditions(),
        "containerStatuses": [{
            "name": "worker", "image": "hodei/worker:1", "imageID": "sha", "ready": true,
            "restartCount": 0, "started": true,
            "state": {"running": {"startedAt": "2025-01-01T10:00:03Z"}}
        }]
    }));
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Running)
    );
}

#[test]
fn oom_killed_with_exit_137() {
    let pod = terminated_pod(
        "Failed",
        json!({"exitCode": 137, "reason": "OOMKilled", "startedAt": "2025-01-01T10:00:03Z", "finishedAt": "2025-01-01T10:01:00Z", "containerID": "containerd://123"}),
        None,
    );
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Failed {
            exit_code: Some(137),
            reason: "OOMKilled".to_owned(),
            message: String::new(),
        })
    );
}

#[test]
fn evicted_uses_the_pod_reason_and_message() {
    let msg = "The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 512Mi. Container worker was using 3Gi, request is 0, has larger consumption of ephemeral-storage.";
    let pod = terminated_pod(
        "Failed",
        json!({"exitCode": 137, "reason": "Error", "finishedAt": "2025-01-01T10:01:00Z"}),
        Some(("Evicted", msg)),
    );
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Failed {
            exit_code: Some(137),
            reason: "Evicted".to_owned(),
            message: msg.to_owned(),
        })
    );
}

#[test]
fn evicted_before_the_container_ran_has_no_exit_code() {
    let pod = pod(json!({
        "phase": "Failed",
        "reason": "Evicted",
        "message": "Pod was rejected: The node had condition: [DiskPressure]."
    }));
    assert!(matches!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Failed { exit_code: None, ref reason, .. }) if reason == "Evicted"
    ));
}

#[test]
fn deadline_exceeded() {
    let pod = terminated_pod(
        "Failed",
        json!({"exitCode": 143, "reason": "Error", "finishedAt": "2025-01-01T11:00:00Z"}),
        Some((
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        )),
    );
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Failed {
            exit_code: Some(143),
            reason: "DeadlineExceeded".to_owned(),
            message: "Pod was active on the node longer than the specified deadline".to_owned(),
        })
    );
}

#[test]
fn succeeded_exit_0() {
    let pod = terminated_pod(
        "Succeeded",
        json!({"exitCode": 0, "reason": "Completed", "finishedAt": "2025-01-01T10:05:00Z"}),
        None,
    );
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Succeeded { exit_code: 0 })
    );
}

#[test]
fn failed_exit_3() {
    let pod = terminated_pod(
        "Failed",
        json!({"exitCode": 3, "reason": "Error", "finishedAt": "2025-01-01T10:05:00Z"}),
        None,
    );
    assert_eq!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Failed {
            exit_code: Some(3),
            reason: "Error".to_owned(),
            message: String::new(),
        })
    );
}

#[test]
fn terminated_container_counts_before_the_phase_catches_up() {
    let pod = terminated_pod(
        "Running",
        json!({"exitCode": 3, "reason": "Error", "finishedAt": "2025-01-01T10:05:00Z"}),
        None,
    );
    assert!(matches!(
        classify(&pod, Duration::ZERO, &GRACE),
        Some(PodEventKind::Failed {
            exit_code: Some(3),
            ..
        })
    ));
}
