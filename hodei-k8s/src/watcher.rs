//! One resilient watch per namespace that streams typed pod events to a channel.

use std::pin::pin;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, debug, info_span, warn};

use crate::event::PodEvent;
use crate::labels;
use crate::lifecycle::Grace;
use crate::tracker::Tracker;

/// How long `ErrImagePull`/`ImagePullBackOff` may last before `FailFast` by default.
pub const DEFAULT_IMAGE_PULL_GRACE: Duration = Duration::from_secs(30);
/// How long a pod may stay `Unschedulable` before `FailFast` by default.
pub const DEFAULT_SCHEDULING_TIMEOUT: Duration = Duration::from_secs(120);

/// How the pod watcher selects pods and when it gives up on them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatcherConfig {
    /// Which pods to watch; defaults to `hodei.io/managed=true`.
    pub label_selector: String,
    /// How long `ErrImagePull`/`ImagePullBackOff` may last before `FailFast`
    /// (default [`DEFAULT_IMAGE_PULL_GRACE`]).
    pub image_pull_grace: Duration,
    /// How long a pod may stay `Unschedulable` before `FailFast`
    /// (default [`DEFAULT_SCHEDULING_TIMEOUT`]).
    pub scheduling_timeout: Duration,
    /// How often running grace clocks are re-checked in memory (default 1 s); no API calls.
    pub recheck_interval: Duration,
    /// Events buffered for a slow receiver before the watcher waits (default 1024).
    pub channel_capacity: usize,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            label_selector: labels::MANAGED_SELECTOR.to_owned(),
            image_pull_grace: DEFAULT_IMAGE_PULL_GRACE,
            scheduling_timeout: DEFAULT_SCHEDULING_TIMEOUT,
            recheck_interval: Duration::from_secs(1),
            channel_capacity: 1024,
        }
    }
}

/// How the watch is doing, for health checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchHealth {
    /// The watch's latest request succeeded, or none has failed yet.
    Ok,
    /// Every request since `since` has failed; the watch keeps retrying with backoff.
    Failing {
        /// When the first of these failures happened.
        since: std::time::Instant,
        /// The latest failure.
        error: String,
    },
}

/// Handle on the background task watching pods. Dropping it (or [`stop`](Self::stop))
/// ends the watch; so does dropping the event receiver.
#[derive(Debug)]
pub struct PodWatcher {
    task: JoinHandle<()>,
    health: Arc<Mutex<WatchHealth>>,
}

impl PodWatcher {
    /// Starts one watch over pods in `namespace` matching `config.label_selector` and
    /// returns the receiving end of its events.
    ///
    /// The watch lists, then watches, and on any failure (including `410 Gone`) backs off
    /// and lists again; pods that vanished meanwhile come out as
    /// [`Deleted`](crate::PodEventKind::Deleted) and terminal states reached meanwhile are
    /// still reported. Events for one pod arrive in order and each at most once. Must be
    /// called inside a Tokio runtime.
    #[must_use]
    pub fn spawn(
        client: Client,
        namespace: &str,
        config: WatcherConfig,
    ) -> (Self, mpsc::Receiver<PodEvent>) {
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let span = info_span!("pod_watcher", k8s.namespace = %namespace, selector = %config.label_selector);
        let health = Arc::new(Mutex::new(WatchHealth::Ok));
        let task = tokio::spawn(run(api, config, tx, Arc::clone(&health)).instrument(span));
        (Self { task, health }, rx)
    }

    /// Whether the watch is getting answers from the API server.
    #[must_use]
    pub fn health(&self) -> WatchHealth {
        self.health.lock().clone()
    }

    /// True once the watch has ended (its receiver was dropped).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Ends the watch.
    pub fn stop(self) {
        // Drop aborts the task.
    }
}

impl Drop for PodWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    api: Api<Pod>,
    config: WatcherConfig,
    tx: mpsc::Sender<PodEvent>,
    health: Arc<Mutex<WatchHealth>>,
) {
    let watch_config = watcher::Config::default().labels(&config.label_selector);
    let mut stream = pin!(watcher(api, watch_config).default_backoff());
    let mut recheck = tokio::time::interval(config.recheck_interval);
    recheck.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tracker = Tracker::new(Grace {
        image_pull_grace: config.image_pull_grace,
        scheduling_timeout: config.scheduling_timeout,
    });
    loop {
        let events = tokio::select! {
            item = stream.next() => match item {
                Some(Ok(event)) => {
                    // `Init` comes before each (re)list is even sent; only answers count.
                    if !matches!(event, watcher::Event::Init) {
                        record(&health, None);
                    }
                    tracker.handle(event, Instant::now())
                }
                Some(Err(error)) => {
                    // The backoff layer delays the retry; the watcher relists when needed.
                    warn!(%error, "pod watch failed, retrying");
                    record(&health, Some(error.to_string()));
                    continue;
                }
                None => {
                    warn!("pod watch stream ended");
                    return;
                }
            },
            _ = recheck.tick() => tracker.recheck(Instant::now()),
            () = tx.closed() => return,
        };
        for event in events {
            debug!(pod.name = %event.pod_name, worker.id = %event.worker_id, kind = ?event.kind, "pod event");
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Notes a success (`None`) or a failure of the watch's latest request.
fn record(health: &Mutex<WatchHealth>, failure: Option<String>) {
    let mut health = health.lock();
    *health = match (failure, &*health) {
        (None, _) => WatchHealth::Ok,
        (Some(error), WatchHealth::Failing { since, .. }) => WatchHealth::Failing {
            since: *since,
            error,
        },
        (Some(error), WatchHealth::Ok) => WatchHealth::Failing {
            since: std::time::Instant::now(),
            error,
        },
    };
}

#[cfg(test)]
mod tests;
