//! Dedupe, grace timers and relist bookkeeping, driven by hand-made watch events.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::event::FailFastReason;

const GRACE: Grace = Grace {
    image_pull_grace: Duration::from_secs(30),
    scheduling_timeout: Duration::from_secs(120),
};

fn pod(name: &str, uid: &str, status: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "uid": uid,
            "annotations": {"hodei.io/worker-id": name.trim_start_matches("hodei-worker-")}
        },
        "spec": {"containers": [{"name": "worker", "image": "img"}]},
        "status": status,
    }))
    .expect("valid pod json")
}

fn scheduled(name: &str) -> Pod {
    pod(
        name,
        "u1",
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}),
    )
}

fn waiting(name: &str, reason: &str) -> Pod {
    pod(
        name,
        "u1",
        json!({
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "worker", "image": "img", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": reason, "message": format!("{reason} msg")}}}]
        }),
    )
}

fn running(name: &str) -> Pod {
    pod(
        name,
        "u1",
        json!({
            "phase": "Running",
            "containerStatuses": [{"name": "worker", "image": "img", "imageID": "", "ready": true,
                "restartCount": 0, "state": {"running": {}}}]
        }),
    )
}

fn exited(name: &str, code: i32) -> Pod {
    pod(
        name,
        "u1",
        json!({
            "phase": if code == 0 { "Succeeded" } else { "Failed" },
            "containerStatuses": [{"name": "worker", "image": "img", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": "Error"}}}]
        }),
    )
}

fn unschedulable(name: &str) -> Pod {
    pod(
        name,
        "u1",
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": "0/1 nodes are available: 1 Insufficient cpu."}]}),
    )
}

fn kinds(events: Vec<PodEvent>) -> Vec<PodEventKind> {
    events.into_iter().map(|e| e.kind).collect()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn events_carry_worker_id_and_pod_name() {
    let mut t = Tracker::new(GRACE);
    let events = t.handle(Event::Apply(scheduled("hodei-worker-w1")), Instant::now());
    assert_eq!(
        events,
        vec![PodEvent {
            worker_id: "w1".into(),
            pod_name: "hodei-worker-w1".into(),
            kind: PodEventKind::Scheduled,
        }]
    );
}

#[test]
fn each_transition_is_emitted_once_and_only_forward() {
    let mut t = Tracker::new(GRACE);
    let now = Instant::now();
    let mut all = Vec::new();
    for pod in [
        scheduled("p"),
        scheduled("p"),
        waiting("p", "ContainerCreating"),
        running("p"),
        running("p"),
        waiting("p", "ContainerCreating"),
        exited("p", 0),
        exited("p", 0),
    ] {
        all.extend(kinds(t.handle(Event::Apply(pod), now)));
    }
    assert_eq!(
        all,
        vec![
            PodEventKind::Scheduled,
            PodEventKind::PullingImage,
            PodEventKind::Running,
            PodEventKind::Succeeded { exit_code: 0 },
        ]
    );
}

#[test]
fn pull_errors_fail_fast_on_the_timer_once_the_grace_runs_out() {
    let mut t = Tracker::new(GRACE);
    let t0 = Instant::now();
    assert_eq!(
        kinds(t.handle(Event::Apply(waiting("p", "ErrImagePull")), t0)),
        vec![PodEventKind::PullingImage]
    );
    // The kubelet flips to ImagePullBackOff: same clock, no new event.
    assert!(
        t.handle(
            Event::Apply(waiting("p", "ImagePullBackOff")),
            t0 + secs(20)
        )
        .is_empty()
    );
    assert!(t.recheck(t0 + secs(29)).is_empty());
    assert_eq!(
        kinds(t.recheck(t0 + secs(30))),
        vec![PodEventKind::FailFast {
            reason: FailFastReason::ImagePullBackOff,
            message: "ImagePullBackOff msg".into(),
        }]
    );
    assert!(t.recheck(t0 + secs(90)).is_empty(), "emitted once");
}

#[test]
fn pull_clock_restarts_when_the_error_clears() {
    let mut t = Tracker::new(GRACE);
    let t0 = Instant::now();
    t.handle(Event::Apply(waiting("p", "ErrImagePull")), t0);
    t.handle(
        Event::Apply(waiting("p", "ContainerCreating")),
        t0 + secs(20),
    );
    t.handle(Event::Apply(waiting("p", "ErrImagePull")), t0 + secs(25));
    assert!(t.recheck(t0 + secs(40)).is_empty());
    assert!(matches!(
        kinds(t.recheck(t0 + secs(55))).as_slice(),
        [PodEventKind::FailFast {
            reason: FailFastReason::ErrImagePull,
            ..
        }]
    ));
}

#[test]
fn unschedulable_fails_fast_after_the_scheduling_timeout() {
    let mut t = Tracker::new(GRACE);
    let t0 = Instant::now();
    assert!(t.handle(Event::Apply(unschedulable("p")), t0).is_empty());
    assert!(t.recheck(t0 + secs(119)).is_empty());
    let events = kinds(t.recheck(t0 + secs(121)));
    assert!(matches!(
        events.as_slice(),
        [PodEventKind::FailFast { reason: FailFastReason::Unschedulable, message }] if message.contains("Insufficient cpu")
    ));
}

#[test]
fn scheduling_in_time_stops_the_clock() {
    let mut t = Tracker::new(GRACE);
    let t0 = Instant::now();
    t.handle(Event::Apply(unschedulable("p")), t0);
    t.handle(Event::Apply(scheduled("p")), t0 + secs(60));
    assert!(t.recheck(t0 + secs(500)).is_empty());
}

#[test]
fn delete_with_terminal_final_state_emits_it_before_deleted() {
    let mut t = Tracker::new(GRACE);
    let now = Instant::now();
    t.handle(Event::Apply(running("p")), now);
    assert_eq!(
        kinds(t.handle(Event::Delete(exited("p", 3)), now)),
        vec![
            PodEventKind::Failed {
                exit_code: Some(3),
                reason: "Error".into(),
                message: String::new()
            },
            PodEventKind::Deleted,
        ]
    );
    assert_eq!(t.len(), 0);
}

#[test]
fn delete_of_a_running_pod_is_just_deleted() {
    let mut t = Tracker::new(GRACE);
    let now = Instant::now();
    t.handle(Event::Apply(running("p")), now);
    assert_eq!(
        kinds(t.handle(Event::Delete(running("p")), now)),
        vec![PodEventKind::Deleted]
    );
}

#[test]
fn relist_reports_missed_terminal_states_and_vanished_pods() {
    let mut t = Tracker::new(GRACE);
    let now = Instant::now();
    t.handle(Event::Apply(running("a")), now);
    t.handle(Event::Apply(running("b")), now);
    let mut events = t.handle(Event::Init, now);
    events.extend(t.handle(Event::InitApply(exited("a", 0)), now));
    events.extend(t.handle(Event::InitDone, now));
    let summary: Vec<_> = events.into_iter().map(|e| (e.pod_name, e.kind)).collect();
    assert_eq!(
        summary,
        vec![
            ("a".to_owned(), PodEventKind::Succeeded { exit_code: 0 }),
            ("b".to_owned(), PodEventKind::Deleted),
        ]
    );
    assert_eq!(t.len(), 1);
}

#[test]
fn relisting_an_unchanged_pod_emits_nothing() {
    let mut t = Tracker::new(GRACE);
    let now = Instant::now();
    t.handle(Event::Apply(running("a")), now);
    let mut events = t.handle(Event::Init, now);
    events.extend(t.handle(Event::InitApply(running("a")), now));
    events.extend(t.handle(Event::InitDone, now));
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn a_new_pod_under_an_old_name_ends_the_old_one() {
    let mut t = Tracker::new(GRACE);
    let now = Instant::now();
    t.handle(Event::Apply(running("p")), now);
    let mut replacement = scheduled("p");
    replacement.metadata.uid = Some("u2".into());
    assert_eq!(
        kinds(t.handle(Event::Apply(replacement), now)),
        vec![PodEventKind::Deleted, PodEventKind::Scheduled]
    );
}
