//! The node's single pod watch: unbound pods go to the binder, pods bound to
//! this node go to their [`PodTask`](crate::pod_task::PodTask).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch as channel;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::error::error_chain;
use crate::pod_task::PodTask;
use crate::{Error, NodeConfig, Result, binder};

/// A bind that has not shown up in the watch by then is tried again.
const REBIND_AFTER: Duration = Duration::from_secs(10);
/// How long shutdown waits for pod tasks to stop their containers.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// Watches all pods (field selectors cannot say "mine or unbound") until
/// `shutdown`, then waits for the pod tasks to stop their containers.
pub(crate) async fn serve(
    client: kube::Client,
    config: Arc<NodeConfig>,
    shutdown: CancellationToken,
) -> Result<()> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut router = Router {
        client,
        config,
        shutdown: shutdown.clone(),
        pods: HashMap::new(),
        binding: HashMap::new(),
        relisted: None,
        tasks: JoinSet::new(),
    };
    let mut announced = false;
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = events.next() => event,
        };
        while router.tasks.try_join_next().is_some() {}
        match event {
            None => break,
            Some(Err(error)) => {
                tracing::warn!(error = %error_chain(&error), "pod watch error; retrying")
            }
            Some(Ok(Event::Init)) => router.relisted = Some(HashSet::new()),
            Some(Ok(Event::InitApply(pod) | Event::Apply(pod))) => router.apply(pod),
            Some(Ok(Event::Delete(pod))) => router.delete(&pod),
            Some(Ok(Event::InitDone)) => {
                router.forget_unlisted();
                if !announced {
                    announced = true;
                    announce_ready(&router.config)?;
                }
            }
        }
    }
    shutdown.cancel();
    router.drain().await;
    Ok(())
}

fn announce_ready(config: &NodeConfig) -> Result<()> {
    tracing::info!(node.name = %config.node_name, "node ready and watching pods");
    if let Some(path) = &config.ready_file {
        std::fs::write(path, &config.node_name)
            .map_err(|e| Error::io(format!("writing ready file {}", path.display()), e))?;
    }
    Ok(())
}

struct Router {
    client: kube::Client,
    config: Arc<NodeConfig>,
    shutdown: CancellationToken,
    /// Pods with a task, by uid.
    pods: HashMap<String, channel::Sender<Option<Pod>>>,
    /// Unbound pods with a bind under way, by uid.
    binding: HashMap<String, Instant>,
    /// Uids seen since the watch last (re)listed, until the list is done.
    relisted: Option<HashSet<String>>,
    tasks: JoinSet<()>,
}

impl Router {
    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(seen) = &mut self.relisted {
            seen.insert(uid.clone());
        }
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        if node.is_empty() {
            return self.bind(&pod, uid);
        }
        self.binding.remove(&uid);
        if node != self.config.node_name {
            return;
        }
        if let Some(updates) = self.pods.get(&uid) {
            updates.send_replace(Some(pod));
            return;
        }
        let meta = &pod.metadata;
        let span = tracing::info_span!(
            "pod",
            pod.namespace = meta.namespace.as_deref().unwrap_or_default(),
            pod.name = meta.name.as_deref().unwrap_or_default(),
            pod.uid = %uid,
        );
        let (updates, receiver) = channel::channel(Some(pod.clone()));
        let task = PodTask::new(
            self.client.clone(),
            Arc::clone(&self.config),
            pod,
            receiver,
            self.shutdown.clone(),
        );
        self.tasks.spawn(task.run().instrument(span));
        self.pods.insert(uid, updates);
    }

    fn bind(&mut self, pod: &Pod, uid: String) {
        // An unbound pod being deleted goes away without a kubelet.
        if pod.metadata.deletion_timestamp.is_some() {
            return;
        }
        let now = Instant::now();
        if self
            .binding
            .get(&uid)
            .is_some_and(|since| now < *since + REBIND_AFTER)
        {
            return;
        }
        self.binding.insert(uid.clone(), now);
        let meta = &pod.metadata;
        self.tasks.spawn(binder::bind(
            self.client.clone(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
            uid,
            self.config.node_name.clone(),
        ));
    }

    fn delete(&mut self, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        self.binding.remove(uid);
        if let Some(updates) = self.pods.remove(uid) {
            updates.send_replace(None);
        }
    }

    /// After a relist, pods that were not listed were deleted while the watch
    /// was down.
    fn forget_unlisted(&mut self) {
        let Some(seen) = self.relisted.take() else {
            return;
        };
        self.binding.retain(|uid, _| seen.contains(uid));
        self.pods.retain(|uid, updates| {
            let listed = seen.contains(uid);
            if !listed {
                updates.send_replace(None);
            }
            listed
        });
    }

    /// Waits for the tasks, which see `shutdown`; their update channels stay
    /// open meanwhile so that they do not mistake shutdown for deletion.
    async fn drain(mut self) {
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, all_done).await.is_err() {
            tracing::warn!("pod tasks did not finish in time; their containers are killed on exit");
        }
    }
}
