//! A store that fails its writes: the job API's health says so, readers see the newest
//! state, and once writes succeed again the state is stored and health recovers.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use common::{Behaviour, TaskProvider, TestServer, health, sh, wait_for_health};
use hodei_core::{
    HodeiServer, Job, JobId, JobState, WorkerId,
    controller::ControllerConfig,
    store::{JobFilter, JobPage, JobStore, PageRequest, SqliteStore, StoreError, WorkerRecord},
};
use hodei_test_fixtures::wait_until;
use time::OffsetDateTime;
use tonic_health::pb::health_check_response::ServingStatus;

/// The SQLite store, whose updates fail while `failing` is set.
#[derive(Debug)]
struct FlakyStore {
    inner: SqliteStore,
    failing: AtomicBool,
}

#[async_trait]
impl JobStore for FlakyStore {
    async fn insert(&self, job: &Job) -> Result<(), StoreError> {
        self.inner.insert(job).await
    }
    async fn update(&self, job: &Job) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io(std::io::Error::other(
                "injected write failure",
            )));
        }
        self.inner.update(job).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, filter: &JobFilter, page: &PageRequest) -> Result<JobPage, StoreError> {
        self.inner.list(filter, page).await
    }
    async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        self.inner.unfinished().await
    }
    async fn finished_before(
        &self,
        cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        self.inner.finished_before(cutoff, limit).await
    }
    async fn finished_beyond(&self, keep: u64, limit: u32) -> Result<Vec<JobId>, StoreError> {
        self.inner.finished_beyond(keep, limit).await
    }
    async fn delete_finished(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError> {
        self.inner.delete_finished(ids).await
    }
    async fn contains(&self, id: JobId) -> Result<bool, StoreError> {
        self.inner.contains(id).await
    }
    async fn save_worker(&self, record: &WorkerRecord) -> Result<(), StoreError> {
        self.inner.save_worker(record).await
    }
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        self.inner.workers().await
    }
    async fn remove_worker(&self, worker_id: WorkerId) -> Result<(), StoreError> {
        self.inner.remove_worker(worker_id).await
    }
}

#[tokio::test]
async fn failing_state_writes_turn_health_not_serving_and_lose_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::open(dir.path()).await.unwrap(),
        failing: AtomicBool::new(false),
    });
    let server = HodeiServer::builder(dir.path())
        .shared_provider(Arc::new(TaskProvider::new(Behaviour::RunWorker)))
        .listen_addr("127.0.0.1:0".parse().unwrap())
        .worker_listen_addr("127.0.0.1:0".parse().unwrap())
        .store(Arc::clone(&store) as Arc<dyn JobStore>)
        .controller(ControllerConfig {
            heartbeat_interval: Duration::from_millis(200),
            ..ControllerConfig::default()
        })
        .start()
        .await
        .unwrap();
    let server = TestServer::serve(server, dir.path()).await;
    let (client, url) = (server.client.clone(), server.url.clone());
    assert_eq!(health(&url, "").await, ServingStatus::Serving);

    let go = dir.path().join("go");
    let job = client
        .submit(&sh(&format!(
            "while [ ! -e {} ]; do sleep 0.05; done",
            go.display()
        )))
        .await
        .unwrap();
    wait_until(Duration::from_secs(20), "the job runs", || async {
        client.get(job.id).await.unwrap().state == JobState::Running
    })
    .await
    .unwrap();

    store.failing.store(true, Ordering::SeqCst);
    std::fs::write(&go, b"").unwrap();
    wait_for_health(&url, "", ServingStatus::NotServing, Duration::from_secs(30)).await;
    assert_eq!(
        health(&url, "hodei.v1.JobService").await,
        ServingStatus::NotServing
    );
    // Readers get the state the job reached, though the store still has the old one.
    assert_eq!(client.get(job.id).await.unwrap().state, JobState::Succeeded);
    assert_eq!(
        store.inner.get(job.id).await.unwrap().unwrap().state,
        JobState::Running
    );

    store.failing.store(false, Ordering::SeqCst);
    wait_for_health(&url, "", ServingStatus::Serving, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(30), "the final state is stored", || {
        let store = Arc::clone(&store);
        async move { store.inner.get(job.id).await.unwrap().unwrap().state == JobState::Succeeded }
    })
    .await
    .unwrap();
    server.stop().await;
}
