//! The writing side of one job's log: checks numbering, appends, and wakes followers.

use std::{
    fs::File,
    io::{self, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

use parking_lot::Mutex;

use tokio::sync::watch;

use super::{OutputChunk, file_format};

/// How far a log has been written. Followers read up to `bytes`, never past it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub bytes: u64,
    pub last_seq: u64,
    pub closed: bool,
}

/// Why an append was refused.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A chunk skipped sequence numbers.
    #[error("output chunk {got} arrived but {expected} was expected")]
    Gap {
        /// The next sequence number the log needs.
        expected: u64,
        /// What arrived.
        got: u64,
    },
    /// A chunk is larger than a log accepts.
    #[error("output chunk {seq} is {len} bytes; at most {max} allowed")]
    TooLarge {
        /// Its sequence number.
        seq: u64,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The job has ended; its log takes no more output.
    #[error("the log is closed")]
    Closed,
    /// Writing to disk failed.
    #[error("writing the log failed")]
    Io(#[from] io::Error),
}

#[derive(Debug)]
struct Writer {
    /// Open from the first output on: a queued job holds no file descriptor.
    file: Option<File>,
    buffer: Vec<u8>,
    /// Payload bytes stored so far, the measure of the log quota.
    payload: u64,
}

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Sequence number of the last stored chunk.
    pub last_seq: u64,
    /// Payload bytes this append stored.
    pub bytes: u64,
    /// A chunk did not fit under the quota: it and every later one were not stored.
    pub over_quota: bool,
}

/// The open, append-only log of one active job.
#[derive(Debug)]
pub struct JobLog {
    path: PathBuf,
    writer: Mutex<Writer>,
    progress: watch::Sender<Progress>,
    /// Set once the server stores no more of this job's output.
    refusing: AtomicBool,
}

impl JobLog {
    /// Creates the (empty) log file, so followers find it at once; it is opened for
    /// writing when the first output arrives.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        Self::open_for_append(path)?;
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(Writer {
                file: None,
                buffer: Vec::with_capacity(64 * 1024),
                payload: 0,
            }),
            progress: watch::Sender::new(Progress::default()),
            refusing: AtomicBool::new(false),
        })
    }

    /// Opens the log of a job that was running when the server last stopped, to go on
    /// appending after its last whole record. A record cut short by a crash is cut off,
    /// so the worker resends it whole. A missing file is an empty log.
    pub(crate) fn reopen(path: &Path) -> io::Result<Self> {
        let file = Self::open_for_append(path)?;
        let mut reader = io::BufReader::new(File::open(path)?);
        let (mut bytes, mut last_seq, mut payload) = (0u64, 0u64, 0u64);
        while let Some(chunk) = file_format::read_record(&mut reader)? {
            bytes += file_format::encoded_len(&chunk) as u64;
            payload += chunk.data.len() as u64;
            last_seq = chunk.seq;
        }
        if file.metadata()?.len() > bytes {
            file.set_len(bytes)?;
        }
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(Writer {
                // An empty log (a queued job's) holds no descriptor until output arrives.
                file: (bytes > 0).then_some(file),
                buffer: Vec::with_capacity(64 * 1024),
                payload,
            }),
            progress: watch::Sender::new(Progress {
                bytes,
                last_seq,
                closed: false,
            }),
            refusing: AtomicBool::new(false),
        })
    }

    /// Appends consecutive chunks. Chunks already in the log are skipped, so a
    /// resent batch is harmless. Returns the last sequence number stored.
    #[cfg(test)]
    pub fn append(&self, chunks: &[OutputChunk]) -> Result<u64, AppendError> {
        self.append_within(chunks, u64::MAX).map(|a| a.last_seq)
    }

    /// Like [`append`](Self::append), storing output only while the log's payload stays
    /// within `max_payload` bytes: the chunks that fit are stored, then the start of the
    /// chunk that crosses the limit, so the log holds exactly `max_payload` bytes.
    pub(crate) fn append_within(
        &self,
        chunks: &[OutputChunk],
        max_payload: u64,
    ) -> Result<Appended, AppendError> {
        let mut writer = self.writer.lock();
        let before = *self.progress.borrow();
        if before.closed {
            return Err(AppendError::Closed);
        }
        let mut last_seq = before.last_seq;
        let Writer {
            file,
            buffer,
            payload,
        } = &mut *writer;
        buffer.clear();
        let mut bytes = 0u64;
        let mut over_quota = false;
        for chunk in chunks {
            if chunk.seq <= last_seq {
                continue;
            }
            if chunk.seq != last_seq + 1 {
                return Err(AppendError::Gap {
                    expected: last_seq + 1,
                    got: chunk.seq,
                });
            }
            if chunk.data.len() > file_format::MAX_STORED_CHUNK_BYTES {
                return Err(AppendError::TooLarge {
                    seq: chunk.seq,
                    len: chunk.data.len(),
                    max: file_format::MAX_STORED_CHUNK_BYTES,
                });
            }
            let len = chunk.data.len() as u64;
            let room = max_payload.saturating_sub(payload.saturating_add(bytes));
            if len > room {
                over_quota = true;
                if room > 0 {
                    // `room` < `len` <= MAX_STORED_CHUNK_BYTES, so it fits a usize.
                    let start = OutputChunk {
                        data: chunk.data.slice(..usize::try_from(room).unwrap_or(0)),
                        ..chunk.clone()
                    };
                    file_format::encode_into(&start, buffer);
                    bytes += room;
                    last_seq = chunk.seq;
                }
                break;
            }
            file_format::encode_into(chunk, buffer);
            bytes += len;
            last_seq = chunk.seq;
        }
        let appended = Appended {
            last_seq,
            bytes,
            over_quota,
        };
        if buffer.is_empty() {
            return Ok(appended);
        }
        let file = match file {
            Some(file) => file,
            None => file.insert(Self::open_for_append(&self.path)?),
        };
        file.write_all(buffer)?;
        *payload += bytes;
        let written = buffer.len() as u64;
        self.progress.send_modify(|p| {
            p.bytes += written;
            p.last_seq = last_seq;
        });
        Ok(appended)
    }

    /// Stores no more output from now on. True the first time.
    pub(crate) fn refuse(&self) -> bool {
        !self.refusing.swap(true, Ordering::AcqRel)
    }

    /// True once the log stores no more output.
    pub(crate) fn is_refusing(&self) -> bool {
        self.refusing.load(Ordering::Acquire)
    }

    /// The sequence number of the last stored chunk (0 when empty).
    #[must_use]
    pub fn last_seq(&self) -> u64 {
        self.progress.borrow().last_seq
    }

    /// Takes no more output and lets followers finish once they have read it all. Returns
    /// the file written to, if any output was.
    pub(crate) fn finish(&self) -> Option<File> {
        let mut writer = self.writer.lock();
        self.progress.send_modify(|p| p.closed = true);
        writer.file.take()
    }

    /// Finishes the log and makes it survive a machine crash: its data, then the entry of
    /// its directory (a new file is only durable once its directory is). Syncing can take
    /// long after much output, so it runs off the async threads; this returns once done.
    pub(crate) async fn close(&self) -> io::Result<()> {
        let file = self.finish();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(file) = file {
                file.sync_data()?;
            }
            match path.parent() {
                Some(dir) => File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        })
        .await
        .map_err(io::Error::other)?
    }

    fn open_for_append(path: &Path) -> io::Result<File> {
        crate::private_fs::file_options()
            .create(true)
            .append(true)
            .open(path)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
