//! Per-pod memory that turns watch events into deduplicated, forward-only pod events.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use tokio::time::Instant;

use crate::event::{PodEvent, PodEventKind};
use crate::labels;
use crate::lifecycle::{Assessment, Grace, GraceClock, assess, decide};

/// What the watcher remembers about each pod it has seen. In memory only.
#[derive(Debug)]
pub(crate) struct Tracker {
    grace: Grace,
    pods: HashMap<String, Tracked>,
    /// Names listed since the last `Init`; `Some` only while a relist is under way.
    relisted: Option<HashSet<String>>,
}

#[derive(Debug)]
struct Tracked {
    uid: Option<String>,
    worker_id: String,
    assessment: Assessment,
    /// Which grace clock is running and since when.
    clock: Option<(GraceClock, Instant)>,
    /// Rank of the last emitted event; 0 before the first.
    emitted: u8,
}

impl Tracker {
    pub(crate) fn new(grace: Grace) -> Self {
        Self {
            grace,
            pods: HashMap::new(),
            relisted: None,
        }
    }

    /// Feeds one watcher event; returns the pod events it causes, in order.
    pub(crate) fn handle(&mut self, event: Event<Pod>, now: Instant) -> Vec<PodEvent> {
        match event {
            Event::Apply(pod) => self.apply(&pod, now),
            Event::Delete(pod) => self.deleted(&pod, now),
            Event::Init => {
                self.relisted = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(pod) => {
                if let (Some(seen), Some(name)) =
                    (self.relisted.as_mut(), pod.metadata.name.as_ref())
                {
                    seen.insert(name.clone());
                }
                self.apply(&pod, now)
            }
            Event::InitDone => self.relist_done(),
        }
    }

    /// Emits what grace periods that ran out since the last watch event now imply.
    pub(crate) fn recheck(&mut self, now: Instant) -> Vec<PodEvent> {
        let grace = self.grace;
        self.pods
            .iter_mut()
            .filter(|(_, t)| t.clock.is_some())
            .filter_map(|(name, t)| t.evaluate(name, now, &grace))
            .collect()
    }

    /// Number of pods currently remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pods.len()
    }

    fn apply(&mut self, pod: &Pod, now: Instant) -> Vec<PodEvent> {
        let Some(name) = pod.metadata.name.clone() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        // Same name, new uid: the old pod is gone even if its deletion was never seen.
        if self
            .pods
            .get(&name)
            .is_some_and(|t| t.uid.is_some() && t.uid != pod.metadata.uid)
        {
            events.extend(self.forget(&name));
        }
        let tracked = self.pods.entry(name.clone()).or_insert_with(|| Tracked {
            uid: pod.metadata.uid.clone(),
            worker_id: labels::worker_id_of(&pod.metadata).unwrap_or_else(|| name.clone()),
            assessment: Assessment::Pending,
            clock: None,
            emitted: 0,
        });
        tracked.observe(assess(pod), now);
        events.extend(tracked.evaluate(&name, now, &self.grace));
        events
    }

    fn deleted(&mut self, pod: &Pod, now: Instant) -> Vec<PodEvent> {
        let Some(name) = pod.metadata.name.clone() else {
            return Vec::new();
        };
        let mut events = Vec::new();
        // The final object may carry a terminal status no earlier event showed.
        let last = assess(pod);
        if matches!(&last, Assessment::Now(kind) if kind.is_terminal()) {
            events.extend(self.apply(pod, now));
        }
        if !self.pods.contains_key(&name) {
            let worker_id = labels::worker_id_of(&pod.metadata).unwrap_or_else(|| name.clone());
            events.push(event(&name, &worker_id, PodEventKind::Deleted));
            return events;
        }
        events.extend(self.forget(&name));
        events
    }

    fn relist_done(&mut self) -> Vec<PodEvent> {
        let Some(seen) = self.relisted.take() else {
            return Vec::new();
        };
        let vanished: Vec<String> = self
            .pods
            .keys()
            .filter(|name| !seen.contains(*name))
            .cloned()
            .collect();
        vanished.iter().flat_map(|name| self.forget(name)).collect()
    }

    /// Drops a pod from memory with a final `Deleted`.
    fn forget(&mut self, name: &str) -> Option<PodEvent> {
        let tracked = self.pods.remove(name)?;
        Some(event(name, &tracked.worker_id, PodEventKind::Deleted))
    }
}

impl Tracked {
    fn observe(&mut self, assessment: Assessment, now: Instant) {
        self.clock = match (assessment.clock(), self.clock) {
            (Some(clock), Some((running, since))) if clock == running => Some((running, since)),
            (Some(clock), _) => Some((clock, now)),
            (None, _) => None,
        };
        self.assessment = assessment;
    }

    /// The next event for this pod, if its state moved forward.
    fn evaluate(&mut self, name: &str, now: Instant, grace: &Grace) -> Option<PodEvent> {
        let waited = self
            .clock
            .map(|(_, since)| now.saturating_duration_since(since))
            .unwrap_or_default();
        let kind = decide(&self.assessment, waited, grace)?;
        if kind.rank() <= self.emitted {
            return None;
        }
        self.emitted = kind.rank();
        if kind.is_terminal() {
            // Nothing after a terminal event but Deleted; no clock needs rechecking.
            self.clock = None;
        }
        Some(event(name, &self.worker_id, kind))
    }
}

fn event(pod_name: &str, worker_id: &str, kind: PodEventKind) -> PodEvent {
    PodEvent {
        worker_id: worker_id.to_owned(),
        pod_name: pod_name.to_owned(),
        kind,
    }
}

#[cfg(test)]
mod tests;
