//! All job logs of a server: where they live on disk and which are still being written.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::{Mutex, MutexGuard};

use super::{JobLog, LogFollower};
use crate::job::JobId;

/// The job logs: the server writes a job's log while the job is active, and
/// followers read it live, or from disk once the job has ended.
#[derive(Debug)]
pub struct LogHub {
    dir: PathBuf,
    live: Mutex<HashMap<JobId, Arc<JobLog>>>,
}

impl LogHub {
    /// Keeps logs in `dir`, creating it (mode 0700) if needed.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        crate::private_fs::create_dir(&dir)?;
        Ok(Self {
            dir,
            live: Mutex::new(HashMap::new()),
        })
    }

    /// Starts the log of a new job.
    pub(crate) fn create(&self, job: JobId) -> io::Result<Arc<JobLog>> {
        let log = Arc::new(JobLog::create(&self.path(job))?);
        self.lock().insert(job, Arc::clone(&log));
        Ok(log)
    }

    /// Opens again the log of a job that was running when the server last stopped, to
    /// go on appending after what it holds.
    pub(crate) fn reopen(&self, job: JobId) -> io::Result<Arc<JobLog>> {
        let log = Arc::new(JobLog::reopen(&self.path(job))?);
        self.lock().insert(job, Arc::clone(&log));
        Ok(log)
    }

    /// The live log of an active job.
    #[must_use]
    pub(crate) fn live(&self, job: JobId) -> Option<Arc<JobLog>> {
        self.lock().get(&job).cloned()
    }

    /// Ends a job's log: followers get the rest and then the end. Returns once the log
    /// and its directory entry are synced to disk.
    pub(crate) async fn close(&self, job: JobId) -> io::Result<()> {
        let log = self.lock().remove(&job);
        match log {
            Some(log) => log.close().await,
            None => Ok(()),
        }
    }

    /// Deletes a job's log, for a job that was never stored.
    pub(crate) fn discard(&self, job: JobId) {
        if let Some(log) = self.lock().remove(&job) {
            log.finish();
            let _ = std::fs::remove_file(log.path());
        }
    }

    /// The directory holding the logs.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Deletes the log of a job that has ended; a log being written is kept.
    pub(crate) async fn remove(&self, job: JobId) -> io::Result<()> {
        if self.live(job).is_some() {
            return Ok(());
        }
        match tokio::fs::remove_file(self.path(job)).await {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// The jobs that have a log file.
    pub(crate) async fn stored_ids(&self) -> io::Result<Vec<JobId>> {
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        let mut ids = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|stem| stem.parse().ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Follows a job's log from `from_seq` (1 is the first chunk; 0 also means the start).
    pub fn follow(&self, job: JobId, from_seq: u64) -> io::Result<LogFollower> {
        let progress = self.live(job).map(|log| log.subscribe());
        LogFollower::open(&self.path(job), from_seq, progress)
    }

    /// Reads what a job's log holds now, from `from_seq`, without waiting for more.
    pub fn snapshot(&self, job: JobId, from_seq: u64) -> io::Result<LogFollower> {
        LogFollower::open(&self.path(job), from_seq, None)
    }

    fn path(&self, job: JobId) -> PathBuf {
        Path::new(&self.dir).join(format!("{job}.log"))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<JobId, Arc<JobLog>>> {
        self.live.lock()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::logs::{AppendError, OutputChunk, OutputStream};

    fn chunk(seq: u64, text: &str) -> OutputChunk {
        OutputChunk {
            seq,
            stream: OutputStream::Stdout,
            data: Bytes::copy_from_slice(text.as_bytes()),
            emitted_at_us: 0,
        }
    }

    async fn collect(mut follower: LogFollower) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Some(batch) = follower.next_batch().await.unwrap() {
            seqs.extend(batch.iter().map(|c| c.seq));
        }
        seqs
    }

    #[test]
    fn the_log_dir_and_each_log_are_private() {
        use crate::private_fs::tests::mode_of;

        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("logs");
        let hub = LogHub::open(&dir).unwrap();
        let job = JobId::new();
        hub.create(job).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&hub.path(job)), 0o600);
    }

    #[test]
    fn a_log_holds_a_file_descriptor_only_once_output_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::open(dir.path()).unwrap();
        let job = JobId::new();
        let path = hub.path(job);
        let descriptors_of_the_log = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == path))
                .count()
        };
        let log = hub.create(job).unwrap();
        assert!(path.exists(), "followers find the log from the start");
        assert_eq!(
            descriptors_of_the_log(),
            0,
            "a queued job holds no descriptor"
        );
        log.append(&[chunk(1, "a")]).unwrap();
        assert_eq!(descriptors_of_the_log(), 1);
        hub.discard(job);
        drop(log);
        assert_eq!(descriptors_of_the_log(), 0);
    }

    #[tokio::test]
    async fn follower_joining_mid_job_gets_every_chunk_once() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Arc::new(LogHub::open(dir.path()).unwrap());
        let job = JobId::new();
        let log = hub.create(job).unwrap();
        let early = hub.follow(job, 0).unwrap();
        for seq in 1..=500 {
            log.append(&[chunk(seq, "line\n")]).unwrap();
        }
        let middle = hub.follow(job, 0).unwrap();
        let from_300 = hub.follow(job, 300).unwrap();
        let tasks = [early, middle, from_300].map(|f| tokio::spawn(collect(f)));
        for seq in 501..=1000 {
            log.append(&[chunk(seq, "line\n")]).unwrap();
            if seq % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        hub.close(job).await.unwrap();
        let [early, middle, from_300] = tasks;
        assert_eq!(early.await.unwrap(), (1..=1000).collect::<Vec<_>>());
        assert_eq!(middle.await.unwrap(), (1..=1000).collect::<Vec<_>>());
        assert_eq!(from_300.await.unwrap(), (300..=1000).collect::<Vec<_>>());
        let late = hub.follow(job, 0).unwrap();
        assert_eq!(
            collect(late).await,
            (1..=1000).collect::<Vec<_>>(),
            "after the end"
        );
    }

    #[tokio::test]
    async fn resent_chunks_are_skipped_and_gaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::open(dir.path()).unwrap();
        let job = JobId::new();
        let log = hub.create(job).unwrap();
        assert_eq!(log.append(&[chunk(1, "a"), chunk(2, "b")]).unwrap(), 2);
        assert_eq!(log.append(&[chunk(2, "b"), chunk(3, "c")]).unwrap(), 3);
        assert!(matches!(
            log.append(&[chunk(5, "e")]),
            Err(AppendError::Gap {
                expected: 4,
                got: 5
            })
        ));
        hub.close(job).await.unwrap();
        assert!(matches!(
            log.append(&[chunk(4, "d")]),
            Err(AppendError::Closed)
        ));
        let mut text = Vec::new();
        let mut follower = hub.follow(job, 0).unwrap();
        while let Some(batch) = follower.next_batch().await.unwrap() {
            for c in batch {
                text.extend_from_slice(&c.data);
            }
        }
        assert_eq!(text, b"abc");
    }

    #[tokio::test]
    async fn a_reopened_log_goes_on_after_its_last_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobId::new();
        {
            let hub = LogHub::open(dir.path()).unwrap();
            let log = hub.create(job).unwrap();
            log.append(&[chunk(1, "one\n"), chunk(2, "two\n")]).unwrap();
            // A crash mid-write leaves half a record behind.
            let mut torn = Vec::new();
            crate::logs::file_format::encode_into(&chunk(3, "three\n"), &mut torn);
            torn.truncate(torn.len() - 2);
            std::io::Write::write_all(
                &mut std::fs::OpenOptions::new()
                    .append(true)
                    .open(hub.path(job))
                    .unwrap(),
                &torn,
            )
            .unwrap();
        }
        let hub = LogHub::open(dir.path()).unwrap();
        let log = hub.reopen(job).unwrap();
        assert_eq!(log.last_seq(), 2);
        assert_eq!(
            log.append(&[chunk(2, "two\n"), chunk(3, "three\n")])
                .unwrap(),
            3
        );
        hub.close(job).await.unwrap();
        let mut text = Vec::new();
        let mut follower = hub.follow(job, 0).unwrap();
        while let Some(batch) = follower.next_batch().await.unwrap() {
            for c in batch {
                text.extend_from_slice(&c.data);
            }
        }
        assert_eq!(text, b"one\ntwo\nthree\n");
    }

    #[tokio::test]
    async fn a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::open(dir.path()).unwrap();
        let follower = hub.follow(JobId::new(), 0).unwrap();
        assert!(collect(follower).await.is_empty());
    }
}
