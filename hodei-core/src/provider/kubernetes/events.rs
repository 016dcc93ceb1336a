//! Routes the one namespace-wide pod watch to the job that owns each worker pod.

use std::{collections::HashMap, sync::Arc};

use parking_lot::{Mutex, MutexGuard};

use hodei_k8s::{PodEvent, PodEventKind};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::{job::ProcessExit, provider::WorkerEvent};

/// Reasons under which Kubernetes killed a worker rather than the job ending by itself.
const KILLED_BY_PLATFORM: [&str; 3] = ["OOMKilled", "Evicted", "DeadlineExceeded"];

/// Worker id → the owning job's event channel.
#[derive(Debug, Default, Clone)]
pub(super) struct Routes {
    inner: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<WorkerEvent>>>>,
}

impl Routes {
    pub fn add(&self, worker_id: String) -> mpsc::UnboundedReceiver<WorkerEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(worker_id, tx);
        rx
    }

    /// Stops routing; events of a pod we delete ourselves are not news to its job.
    pub fn remove(&self, worker_id: &str) {
        self.lock().remove(worker_id);
    }

    /// Sends an event of the provider's own to a worker's job.
    pub fn notify(&self, worker_id: &str, event: WorkerEvent) {
        if let Some(route) = self.lock().get(worker_id) {
            let _ = route.send(event);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<WorkerEvent>>> {
        self.inner.lock()
    }

    /// Delivers pod events until the watch ends.
    pub async fn run(self, mut events: mpsc::Receiver<PodEvent>) {
        while let Some(event) = events.recv().await {
            debug!(pod.name = %event.pod_name, worker.id = %event.worker_id, kind = ?event.kind, "pod event");
            let Some(route) = self.lock().get(&event.worker_id).cloned() else {
                continue;
            };
            let _ = route.send(worker_event(&event.pod_name, event.kind));
        }
        warn!("the pod watch ended; no more pod events will be delivered");
    }
}

/// What a pod event means for the job on that pod.
pub(super) fn worker_event(pod_name: &str, kind: PodEventKind) -> WorkerEvent {
    let progress = |detail: &str| WorkerEvent::Progress {
        detail: format!("pod {pod_name}: {detail}"),
    };
    match kind {
        PodEventKind::Scheduled => WorkerEvent::Scheduled {
            detail: format!("pod {pod_name}: scheduled"),
        },
        PodEventKind::PullingImage => progress("pulling image"),
        PodEventKind::Running => progress("running"),
        PodEventKind::Succeeded { exit_code } => WorkerEvent::Exited {
            exit: Some(ProcessExit::Code(exit_code)),
            message: format!("pod {pod_name} succeeded"),
        },
        PodEventKind::Failed {
            exit_code,
            reason,
            message,
        } if KILLED_BY_PLATFORM.contains(&reason.as_str()) => WorkerEvent::Failed {
            message: describe(pod_name, exit_code, &message),
            reason,
        },
        PodEventKind::Failed {
            exit_code,
            reason,
            message,
        } => WorkerEvent::Exited {
            exit: exit_code.map(ProcessExit::Code),
            message: format!("{reason}: {}", describe(pod_name, exit_code, &message)),
        },
        PodEventKind::FailFast { reason, message } => WorkerEvent::Failed {
            reason: reason.as_str().to_owned(),
            message,
        },
        PodEventKind::Deleted => WorkerEvent::Failed {
            reason: "PodDeleted".to_owned(),
            message: format!("worker pod {pod_name} was deleted by someone else"),
        },
    }
}

fn describe(pod_name: &str, exit_code: Option<i32>, message: &str) -> String {
    let mut text = format!("worker pod {pod_name}");
    if let Some(code) = exit_code {
        text.push_str(&format!(" exited with code {code}"));
    }
    if !message.is_empty() {
        text.push_str(": ");
        text.push_str(message);
    }
    text
}

#[cfg(test)]
mod tests {
    use hodei_k8s::FailFastReason;

    use super::*;

    #[test]
    fn platform_kills_become_failures_with_their_reason() {
        let event = worker_event(
            "hodei-worker-a",
            PodEventKind::Failed {
                exit_code: Some(137),
                reason: "OOMKilled".into(),
                message: String::new(),
            },
        );
        assert!(
            matches!(&event, WorkerEvent::Failed { reason, message } if reason == "OOMKilled" && message.contains("137")),
            "{event:?}"
        );
    }

    #[test]
    fn fail_fast_keeps_the_kubelet_message() {
        let event = worker_event(
            "p",
            PodEventKind::FailFast {
                reason: FailFastReason::ImagePullBackOff,
                message: "Back-off pulling image \"nope:1\"".into(),
            },
        );
        assert_eq!(
            event,
            WorkerEvent::Failed {
                reason: "ImagePullBackOff".into(),
                message: "Back-off pulling image \"nope:1\"".into()
            }
        );
    }

    #[test]
    fn binding_to_a_node_is_the_scheduled_event() {
        assert_eq!(
            worker_event("p", PodEventKind::Scheduled),
            WorkerEvent::Scheduled {
                detail: "pod p: scheduled".into()
            }
        );
        assert!(matches!(
            worker_event("p", PodEventKind::PullingImage),
            WorkerEvent::Progress { .. }
        ));
    }

    #[test]
    fn deletion_by_someone_else_is_a_failure() {
        assert!(
            matches!(worker_event("p", PodEventKind::Deleted), WorkerEvent::Failed { reason, .. } if reason == "PodDeleted")
        );
    }

    #[tokio::test]
    async fn events_reach_only_the_owning_job() {
        let routes = Routes::default();
        let mut mine = routes.add("w1".into());
        let mut other = routes.add("w2".into());
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(routes.clone().run(rx));
        tx.send(PodEvent {
            worker_id: "w1".into(),
            pod_name: "hodei-worker-w1".into(),
            kind: PodEventKind::Running,
        })
        .await
        .unwrap();
        drop(tx);
        task.await.unwrap();
        assert!(matches!(
            mine.recv().await,
            Some(WorkerEvent::Progress { .. })
        ));
        assert!(other.try_recv().is_err());
    }
}
