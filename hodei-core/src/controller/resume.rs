//! Running workers that may re-attach after their stream broke: each one's resume
//! credential (only its SHA-256 is kept, in memory and in the store) and the way to hand
//! a new stream to its job.
//!
//! A credential is 256 random bits, bound to one worker id and its job, and replaced on
//! every successful resume, so a credential seen once cannot be replayed after the worker
//! used it. The store has the digest of the current one before the worker gets it, so a
//! restarted server accepts the worker's next resume.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::worker_link::{ResumeCredential, WorkerLink};
use crate::{
    job::{JobId, WorkerId},
    logs::JobLog,
    store::{JobStore, WorkerRecord},
};

/// Why a resume was refused. The text never contains the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// No running job is known for this worker id.
    #[error("no running job is known for this worker")]
    UnknownWorker,
    /// The worker's job has ended; there is nothing to re-attach to.
    #[error("the worker's job has ended")]
    JobEnded,
    /// The resume credential does not match. The entry is kept for the real worker.
    #[error("the resume credential is not valid for this worker")]
    InvalidCredential,
    /// The renewed credential could not be stored; the old one stays valid, so the
    /// worker may try again.
    #[error("the server cannot store the renewed credential now")]
    Unavailable,
}

/// What a successful resume hands over.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub job_id: JobId,
    pub log: Arc<JobLog>,
    /// Where the new stream goes: the job's run.
    pub relink: mpsc::Sender<WorkerLink>,
    /// The credential for the next resume.
    pub credential: ResumeCredential,
}

struct Entry {
    /// What the store keeps of the worker, with the digest of its current credential.
    record: WorkerRecord,
    digest: [u8; 32],
    log: Arc<JobLog>,
    relink: mpsc::Sender<WorkerLink>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("job_id", &self.record.job_id)
            .field("digest", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One entry per running worker: added when its job starts on it (or when a restarted
/// server adopts it), removed when the worker is destroyed. Bounded by the number of
/// workers.
#[derive(Debug, Default)]
pub(crate) struct ResumeTable {
    entries: Mutex<HashMap<WorkerId, Entry>>,
    /// Held across a resume's check, store write and renewal, so two resumes of one
    /// credential cannot both succeed. Resumes are rare: one per broken stream.
    renewing: tokio::sync::Mutex<()>,
}

impl ResumeTable {
    /// Lets the worker of `record` re-attach to its job with the credential whose digest
    /// `record` holds; new streams go to `relink`. A record without a digest is ignored.
    pub fn allow(&self, record: WorkerRecord, log: Arc<JobLog>, relink: mpsc::Sender<WorkerLink>) {
        let Some(digest) = record.resume_digest else {
            return;
        };
        self.entries.lock().insert(
            record.worker_id,
            Entry {
                record,
                digest,
                log,
                relink,
            },
        );
    }

    /// Checks `credential` for `worker_id`, stores the digest of a new one and hands it
    /// out. A wrong credential leaves the entry as it was, so a guess cannot lock the real
    /// worker out; so does a failed store write, so the worker can try again.
    pub async fn resume(
        &self,
        worker_id: WorkerId,
        credential: &ResumeCredential,
        store: &dyn JobStore,
    ) -> Result<Resumed, ResumeError> {
        let _renewing = self.renewing.lock().await;
        let mut record = {
            let mut entries = self.entries.lock();
            let entry = entries
                .get_mut(&worker_id)
                .ok_or(ResumeError::UnknownWorker)?;
            if !same_digest(&entry.digest, &digest(credential.expose())) {
                return Err(ResumeError::InvalidCredential);
            }
            if entry.relink.is_closed() {
                entries.remove(&worker_id);
                return Err(ResumeError::JobEnded);
            }
            entry.record.clone()
        };
        let (credential, digest) = issue();
        record.resume_digest = Some(digest);
        if let Err(error) = store.save_worker(&record).await {
            tracing::warn!(worker.id = %worker_id, error = %crate::server::error_chain(&error), "storing a renewed resume credential failed");
            return Err(ResumeError::Unavailable);
        }
        let mut entries = self.entries.lock();
        let entry = entries.get_mut(&worker_id).ok_or(ResumeError::JobEnded)?;
        entry.digest = digest;
        entry.record = record;
        Ok(Resumed {
            job_id: entry.record.job_id,
            log: Arc::clone(&entry.log),
            relink: entry.relink.clone(),
            credential,
        })
    }

    /// Forgets `worker_id`, e.g. when it is destroyed.
    pub fn forget(&self, worker_id: WorkerId) {
        self.entries.lock().remove(&worker_id);
    }
}

/// A new credential and its digest.
pub(super) fn issue() -> (ResumeCredential, [u8; 32]) {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let digest = digest(&secret);
    (ResumeCredential::new(secret), digest)
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares in time independent of where the digests differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter()
        .zip(b)
        .fold(0u8, |diff, (x, y)| diff | (x ^ y))
        .eq(&0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{logs::LogHub, store::SqliteStore};

    fn log(dir: &tempfile::TempDir, job_id: JobId) -> Arc<JobLog> {
        let hub = LogHub::open(dir.path().join("logs")).unwrap();
        hub.create(job_id).unwrap()
    }

    /// A record of a worker of `job_id` whose credential is returned.
    fn record(job_id: JobId) -> (WorkerRecord, ResumeCredential) {
        let (credential, digest) = issue();
        let record = WorkerRecord {
            worker_id: WorkerId::new(),
            job_id,
            provider: "local".into(),
            locator: None,
            resume_digest: Some(digest),
            cancel_requested: false,
        };
        (record, credential)
    }

    #[tokio::test]
    async fn a_resume_stores_and_renews_the_credential_and_hands_over_the_relink() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let job_id = JobId::new();
        let (record, first) = record(job_id);
        let worker_id = record.worker_id;
        let (relink, _relinks) = mpsc::channel(1);
        let table = ResumeTable::default();
        table.allow(record, log(&dir, job_id), relink);
        assert_eq!(first.expose().len(), 64);

        let wrong = ResumeCredential::new("00".repeat(32));
        assert_eq!(
            table.resume(worker_id, &wrong, &store).await.unwrap_err(),
            ResumeError::InvalidCredential
        );
        assert_eq!(
            table
                .resume(WorkerId::new(), &first, &store)
                .await
                .unwrap_err(),
            ResumeError::UnknownWorker
        );
        let resumed = table.resume(worker_id, &first, &store).await.unwrap();
        assert_eq!(resumed.job_id, job_id);
        assert_ne!(resumed.credential, first);
        let stored = store.workers().await.unwrap();
        assert_eq!(
            stored[0].resume_digest,
            Some(digest(resumed.credential.expose())),
            "the store holds the digest of the credential handed out"
        );
        assert_eq!(
            table.resume(worker_id, &first, &store).await.unwrap_err(),
            ResumeError::InvalidCredential,
            "a used credential is not valid again"
        );
        assert!(
            table
                .resume(worker_id, &resumed.credential, &store)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn an_ended_or_forgotten_job_cannot_be_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let table = ResumeTable::default();
        let job_id = JobId::new();
        let (ended, credential) = record(job_id);
        let worker_id = ended.worker_id;
        let (relink, relinks) = mpsc::channel(1);
        table.allow(ended, log(&dir, job_id), relink);
        drop(relinks);
        assert_eq!(
            table
                .resume(worker_id, &credential, &store)
                .await
                .unwrap_err(),
            ResumeError::JobEnded
        );

        let (forgotten, credential) = record(job_id);
        let other = forgotten.worker_id;
        let (relink, _relinks) = mpsc::channel(1);
        table.allow(forgotten, log(&dir, JobId::new()), relink);
        table.forget(other);
        assert_eq!(
            table.resume(other, &credential, &store).await.unwrap_err(),
            ResumeError::UnknownWorker
        );
    }

    #[test]
    fn digests_compare_by_content() {
        let a = digest("a");
        assert!(same_digest(&a, &digest("a")));
        assert!(!same_digest(&a, &digest("b")));
    }
}
