//! The reading side of a job log: history first, then the live tail, each chunk once.

use std::{
    fs::File,
    io::{self, BufReader},
    path::Path,
};

use tokio::sync::watch;

use super::{OutputChunk, file_format, job_log::Progress};

/// Most bytes of output handed out by one `next_batch` call.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Reads one job's log from a sequence number onwards.
///
/// It reads the file, not the writer's memory, so it can fall behind without slowing
/// the writer and holds only a read buffer, however long the log.
#[derive(Debug)]
pub struct LogFollower {
    reader: Option<BufReader<File>>,
    read_bytes: u64,
    from_seq: u64,
    progress: Option<watch::Receiver<Progress>>,
}

impl LogFollower {
    pub(crate) fn open(
        path: &Path,
        from_seq: u64,
        progress: Option<watch::Receiver<Progress>>,
    ) -> io::Result<Self> {
        let reader = match File::open(path) {
            Ok(file) => Some(BufReader::with_capacity(64 * 1024, file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Self {
            reader,
            read_bytes: 0,
            from_seq,
            progress,
        })
    }

    /// The next chunks, waiting for new output while the log is open. `None` once the
    /// log is closed and everything in it has been returned. Cancel-safe.
    pub async fn next_batch(&mut self) -> io::Result<Option<Vec<OutputChunk>>> {
        loop {
            let (limit, closed) = match &self.progress {
                Some(rx) => {
                    let progress = *rx.borrow();
                    (progress.bytes, progress.closed)
                }
                None => (u64::MAX, true),
            };
            let batch = self.read_up_to(limit)?;
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
            if closed && (self.progress.is_none() || self.read_bytes >= limit) {
                return Ok(None);
            }
            if let Some(rx) = &mut self.progress
                && rx.changed().await.is_err()
            {
                // The writer is gone: whatever is on disk is all there is.
                self.progress = None;
            }
        }
    }

    fn read_up_to(&mut self, limit: u64) -> io::Result<Vec<OutputChunk>> {
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        let Some(reader) = &mut self.reader else {
            return Ok(batch);
        };
        while self.read_bytes < limit && batch_bytes < MAX_BATCH_BYTES {
            let Some(chunk) = file_format::read_record(reader)? else {
                break;
            };
            self.read_bytes += file_format::encoded_len(&chunk) as u64;
            if chunk.seq >= self.from_seq {
                batch_bytes += chunk.data.len();
                batch.push(chunk);
            }
        }
        Ok(batch)
    }
}
