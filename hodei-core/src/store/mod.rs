//! Where jobs and their states are kept, so they outlive the job and the server.

mod filter;
mod page;
mod sqlite;

use async_trait::async_trait;

pub use filter::JobFilter;
pub use page::{
    DEFAULT_PAGE_SIZE, JobPage, LIST_SCAN_LIMIT, MAX_PAGE_SIZE, PageCollector, PageRequest,
    PageToken,
};
pub use sqlite::SqliteStore;

use time::OffsetDateTime;

use crate::job::{Job, JobId, WorkerId};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the operation.
    #[error("job store database error")]
    Database(#[from] sqlx::Error),
    /// A stored record could not be read back.
    #[error("stored job {id} is corrupt")]
    Corrupt {
        /// The job.
        id: String,
        /// What failed.
        #[source]
        source: serde_json::Error,
    },
    /// A job could not be encoded.
    #[error("job could not be encoded")]
    Encode(#[source] serde_json::Error),
    /// Creating the data directory failed.
    #[error("creating the data directory failed")]
    Io(#[from] std::io::Error),
}

/// What the server keeps about one of its workers so that a restarted server can find it
/// again: which job it runs, where its provider started it, and the digest of the
/// credential it resumes with.
#[derive(Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    /// The worker.
    pub worker_id: WorkerId,
    /// Its job.
    pub job_id: JobId,
    /// The provider that started it.
    pub provider: String,
    /// The provider's own way to find the worker again (e.g. a process id and its start
    /// time), opaque to the server.
    pub locator: Option<String>,
    /// SHA-256 of the worker's current resume credential, once its job was handed to it.
    /// A worker without one never ran its job's command.
    pub resume_digest: Option<[u8; 32]>,
    /// Someone asked to cancel the job; a server that takes the job over stops it.
    pub cancel_requested: bool,
}

impl std::fmt::Debug for WorkerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerRecord")
            .field("worker_id", &self.worker_id)
            .field("job_id", &self.job_id)
            .field("provider", &self.provider)
            .field("locator", &self.locator)
            .field("resumable", &self.resume_digest.is_some())
            .field("cancel_requested", &self.cancel_requested)
            .finish()
    }
}

/// Persists jobs. Every write is a single atomic statement, so a failure leaves
/// nothing half-written.
#[async_trait]
pub trait JobStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a new job.
    async fn insert(&self, job: &Job) -> Result<(), StoreError>;
    /// Replaces a stored job with its newer version.
    async fn update(&self, job: &Job) -> Result<(), StoreError>;
    /// One job, if known.
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError>;
    /// One page of the jobs `filter` selects, newest first: up to `page.size` jobs older
    /// than `page.after`, holding no more than `page.max_bytes` of stored records (the
    /// first job always fits), reading at most [`LIST_SCAN_LIMIT`] stored jobs.
    async fn list(&self, filter: &JobFilter, page: &PageRequest) -> Result<JobPage, StoreError>;
    /// Jobs that were not terminal when last written.
    async fn unfinished(&self) -> Result<Vec<Job>, StoreError>;
    /// Up to `limit` finished (terminal) jobs that finished before `cutoff`, oldest first.
    async fn finished_before(
        &self,
        cutoff: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError>;
    /// Up to `limit` finished jobs beyond the newest `keep` finished ones, oldest first.
    /// `finished_beyond(0, n)` is the oldest `n` finished jobs.
    async fn finished_beyond(&self, keep: u64, limit: u32) -> Result<Vec<JobId>, StoreError>;
    /// Deletes the finished jobs among `ids`, all in one transaction, and returns those
    /// deleted. A job that is not terminal is never deleted.
    async fn delete_finished(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError>;
    /// True when a job with this id is stored.
    async fn contains(&self, id: JobId) -> Result<bool, StoreError>;
    /// Stores a worker's record, replacing the one it had.
    async fn save_worker(&self, record: &WorkerRecord) -> Result<(), StoreError>;
    /// Every stored worker record.
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError>;
    /// Forgets a worker, once it is removed.
    async fn remove_worker(&self, worker_id: WorkerId) -> Result<(), StoreError>;
}
