//! Timestamps, on this machine's clock, of what a watch on the namespace's pods shows:
//! when each pod appeared, was bound to a node, ran, finished and went away. Pod
//! timestamps stored by the API server have one-second resolution; arrival times on a
//! watch resolve the start phases in milliseconds.

use std::{
    collections::HashMap,
    future::ready,
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::{Mutex, MutexGuard};

use anyhow::{Context, bail};
use futures::StreamExt;
use hodei_test_fixtures::wait_until;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use tokio::{sync::oneshot, task::JoinHandle};

/// Longest wait for the watch's initial list.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// When one pod was first seen in each state.
#[derive(Debug, Clone, Default)]
pub struct PodTimes {
    /// The `hodei.io/job-id` label, for worker pods.
    pub job_id: Option<String>,
    /// First event for the pod (its creation, for pods created after the watch started).
    pub created: Option<Instant>,
    /// `spec.nodeName` first set.
    pub scheduled: Option<Instant>,
    /// Phase `Running` first seen.
    pub running: Option<Instant>,
    /// Phase `Succeeded` or `Failed` first seen.
    pub finished: Option<Instant>,
    /// Deletion requested (`deletionTimestamp`) first seen.
    pub deleting: Option<Instant>,
    /// The pod left the API.
    pub gone: Option<Instant>,
}

type Table = Arc<Mutex<HashMap<String, PodTimes>>>;

/// A running watch on one namespace's pods; stops when dropped.
#[derive(Debug)]
pub struct PodClock {
    table: Table,
    task: JoinHandle<()>,
}

impl PodClock {
    /// Starts watching and returns once the initial list is in, so every pod created
    /// afterwards is seen from its first event.
    pub async fn start(client: kube::Client, namespace: &str) -> anyhow::Result<Self> {
        let api: Api<Pod> = Api::namespaced(client, namespace);
        let table = Table::default();
        let (listed_tx, listed_rx) = oneshot::channel();
        let task = tokio::spawn(watch(api, table.clone(), listed_tx));
        match tokio::time::timeout(LIST_TIMEOUT, listed_rx).await {
            Ok(Ok(())) => Ok(Self { table, task }),
            Ok(Err(_)) => bail!("the pod watch on {namespace} ended before its first list"),
            Err(_) => bail!("the pod watch on {namespace} did not list within {LIST_TIMEOUT:?}"),
        }
    }

    /// What is known of the pod called `name`.
    #[must_use]
    pub fn pod(&self, name: &str) -> Option<PodTimes> {
        self.lock().get(name).cloned()
    }

    /// The name of the worker pod of job `job_id`, and what is known of it.
    #[must_use]
    pub fn job(&self, job_id: &str) -> Option<(String, PodTimes)> {
        self.lock()
            .iter()
            .find(|(_, p)| p.job_id.as_deref() == Some(job_id))
            .map(|(name, p)| (name.clone(), p.clone()))
    }

    /// Every pod seen so far.
    #[must_use]
    pub fn all(&self) -> Vec<PodTimes> {
        self.lock().values().cloned().collect()
    }

    /// Waits up to `limit` until the pod called `name` has left the API.
    pub async fn wait_gone(&self, name: &str, limit: Duration) -> anyhow::Result<()> {
        wait_until(limit, &format!("pod {name} has left the API"), || {
            ready(self.pod(name).is_none_or(|p| p.gone.is_some()))
        })
        .await?;
        Ok(())
    }

    /// Waits up to `limit` until every pod seen has left the API.
    pub async fn wait_all_gone(&self, limit: Duration) -> anyhow::Result<()> {
        let left = || self.all().iter().filter(|p| p.gone.is_none()).count();
        wait_until(limit, "every pod has left the API", || ready(left() == 0))
            .await
            .with_context(|| format!("{} pods still exist", left()))
    }

    /// Waits up to `limit` until the pod called `name` was seen Succeeded or Failed, and
    /// returns when that was.
    pub async fn wait_finished(&self, name: &str, limit: Duration) -> anyhow::Result<Instant> {
        Ok(wait_until(limit, &format!("pod {name} has finished"), || {
            ready(self.pod(name).and_then(|p| p.finished))
        })
        .await?)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, PodTimes>> {
        self.table.lock()
    }
}

impl Drop for PodClock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The most pods in phase Running at the same moment, from their Running and finish
/// (or, failing that, deletion or disappearance) times.
#[must_use]
pub fn peak_running(pods: &[PodTimes]) -> usize {
    let mut edges: Vec<(Instant, i32)> = Vec::new();
    for pod in pods {
        if let Some(running) = pod.running {
            edges.push((running, 1));
            if let Some(end) = pod.finished.or(pod.deleting).or(pod.gone) {
                edges.push((end, -1));
            }
        }
    }
    // At equal times, count the ends first: a pod that finished as another started
    // did not overlap it.
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        peak = peak.max(now);
    }
    usize::try_from(peak).unwrap_or(0)
}

async fn watch(api: Api<Pod>, table: Table, listed: oneshot::Sender<()>) {
    let mut listed = Some(listed);
    let mut events = pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        let now = Instant::now();
        let Ok(event) = event else { continue };
        let mut table = table.lock();
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                record(&mut table, &pod, now);
            }
            watcher::Event::Delete(pod) => {
                if let Some(times) = pod.metadata.name.and_then(|n| table.get_mut(&n)) {
                    times.gone.get_or_insert(now);
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = listed.take() {
                    let _ = listed.send(());
                }
            }
            watcher::Event::Init => {}
        }
    }
}

fn record(table: &mut HashMap<String, PodTimes>, pod: &Pod, now: Instant) {
    let Some(name) = pod.metadata.name.clone() else {
        return;
    };
    let times = table.entry(name).or_default();
    if times.job_id.is_none() {
        times.job_id = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(hodei_k8s::labels::JOB_ID))
            .cloned();
    }
    times.created.get_or_insert(now);
    if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
        times.scheduled.get_or_insert(now);
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Running") => {
            times.running.get_or_insert(now);
        }
        Some("Succeeded" | "Failed") => {
            times.finished.get_or_insert(now);
        }
        _ => {}
    }
    if pod.metadata.deletion_timestamp.is_some() {
        times.deleting.get_or_insert(now);
    }
}

/// Milliseconds from `from` to `to`, when both happened and in that order.
#[must_use]
pub fn between(from: Option<Instant>, to: Option<Instant>) -> Option<f64> {
    Some(to?.checked_duration_since(from?)?.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(start: Instant, running: u64, end: Option<u64>) -> PodTimes {
        PodTimes {
            running: Some(start + Duration::from_millis(running)),
            finished: end.map(|e| start + Duration::from_millis(e)),
            ..PodTimes::default()
        }
    }

    #[test]
    fn peak_running_counts_overlaps_not_pods() {
        let t = Instant::now();
        // 0-10 and 5-15 overlap; 10-20 starts as the first ends; one never ran.
        let pods = [
            pod(t, 0, Some(10)),
            pod(t, 5, Some(15)),
            pod(t, 10, Some(20)),
            PodTimes::default(),
        ];
        assert_eq!(peak_running(&pods), 2);
        assert_eq!(peak_running(&[]), 0);
        // A pod still running at the end counts until then.
        assert_eq!(peak_running(&[pod(t, 0, None), pod(t, 30, Some(40))]), 2);
    }

    #[test]
    fn between_needs_both_in_order() {
        let t = Instant::now();
        let later = t + Duration::from_millis(7);
        assert_eq!(between(Some(t), Some(later)), Some(7.0));
        assert_eq!(between(Some(later), Some(t)), None);
        assert_eq!(between(None, Some(t)), None);
    }
}
