//! Running workers that may re-attach after their stream broke: each one's resume
//! credential (only its SHA-256 is kept) and the way to hand a new stream to its job.
//!
//! A credential is 256 random bits, bound to one worker id and its job, and replaced on
//! every successful resume, so a credential seen once cannot be replayed after the worker
//! used it.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::worker_link::{ResumeCredential, WorkerLink};
use crate::{
    job::{JobId, WorkerId},
    logs::JobLog,
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
    job_id: JobId,
    digest: [u8; 32],
    log: Arc<JobLog>,
    relink: mpsc::Sender<WorkerLink>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("job_id", &self.job_id)
            .field("digest", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// One entry per running worker: added when its job starts on it, removed when the
/// worker is destroyed. Bounded by the number of workers.
#[derive(Debug, Default)]
pub(crate) struct ResumeTable {
    entries: Mutex<HashMap<WorkerId, Entry>>,
}

impl ResumeTable {
    /// Lets `worker_id` re-attach to `job_id`; new streams go to `relink`. Returns the
    /// credential to hand to the worker.
    pub fn allow(
        &self,
        worker_id: WorkerId,
        job_id: JobId,
        log: Arc<JobLog>,
        relink: mpsc::Sender<WorkerLink>,
    ) -> ResumeCredential {
        let (credential, digest) = fresh();
        self.entries.lock().insert(
            worker_id,
            Entry {
                job_id,
                digest,
                log,
                relink,
            },
        );
        credential
    }

    /// Checks `credential` for `worker_id` and renews it. A wrong credential leaves the
    /// entry as it was, so a guess cannot lock the real worker out.
    pub fn resume(
        &self,
        worker_id: WorkerId,
        credential: &ResumeCredential,
    ) -> Result<Resumed, ResumeError> {
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
        let (credential, digest) = fresh();
        entry.digest = digest;
        Ok(Resumed {
            job_id: entry.job_id,
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

fn fresh() -> (ResumeCredential, [u8; 32]) {
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
    use crate::logs::LogHub;

    fn log(dir: &tempfile::TempDir, job_id: JobId) -> Arc<JobLog> {
        let hub = LogHub::open(dir.path()).unwrap();
        hub.create(job_id).unwrap()
    }

    #[tokio::test]
    async fn a_resume_renews_the_credential_and_hands_over_the_relink() {
        let dir = tempfile::tempdir().unwrap();
        let (worker_id, job_id) = (WorkerId::new(), JobId::new());
        let (relink, _relinks) = mpsc::channel(1);
        let table = ResumeTable::default();
        let first = table.allow(worker_id, job_id, log(&dir, job_id), relink);
        assert_eq!(first.expose().len(), 64);

        let wrong = ResumeCredential::new("00".repeat(32));
        assert_eq!(
            table.resume(worker_id, &wrong).unwrap_err(),
            ResumeError::InvalidCredential
        );
        assert_eq!(
            table.resume(WorkerId::new(), &first).unwrap_err(),
            ResumeError::UnknownWorker
        );
        let resumed = table.resume(worker_id, &first).unwrap();
        assert_eq!(resumed.job_id, job_id);
        assert_ne!(resumed.credential, first);
        assert_eq!(
            table.resume(worker_id, &first).unwrap_err(),
            ResumeError::InvalidCredential,
            "a used credential is not valid again"
        );
        assert!(table.resume(worker_id, &resumed.credential).is_ok());
    }

    #[tokio::test]
    async fn an_ended_or_forgotten_job_cannot_be_resumed() {
        let dir = tempfile::tempdir().unwrap();
        let table = ResumeTable::default();
        let (worker_id, job_id) = (WorkerId::new(), JobId::new());
        let (relink, relinks) = mpsc::channel(1);
        let credential = table.allow(worker_id, job_id, log(&dir, job_id), relink);
        drop(relinks);
        assert_eq!(
            table.resume(worker_id, &credential).unwrap_err(),
            ResumeError::JobEnded
        );

        let other = WorkerId::new();
        let (relink, _relinks) = mpsc::channel(1);
        let credential = table.allow(other, job_id, log(&dir, JobId::new()), relink);
        table.forget(other);
        assert_eq!(
            table.resume(other, &credential).unwrap_err(),
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
