//! Where a job's output goes: into its log, while the log quota and the free-disk floor
//! allow; otherwise the job is refused further storage and must stop.

use std::{io, sync::Arc};

use super::disk_watch::DiskWatch;
use crate::{
    job::FailureReason,
    logs::{AppendError, Appended, JobLog, OutputChunk},
};

/// Largest stored output of one job, by default: 1 GiB.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 1 << 30;

/// What became of a batch of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Intake {
    /// Stored; acknowledge up to this sequence number.
    Stored(u64),
    /// Not (all) stored, and nothing of the job will be any more. Acknowledge `ack` so the
    /// worker is never blocked; `refusal`, the first time only, is why the job must stop.
    Refused {
        /// Sequence number to acknowledge.
        ack: u64,
        /// Why, when this batch is the one that started the refusal.
        refusal: Option<FailureReason>,
    },
}

/// Takes output into job logs under the quota and the disk floor. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct OutputIntake {
    max_log_bytes: u64,
    disk: Arc<DiskWatch>,
}

impl OutputIntake {
    pub(crate) fn new(max_log_bytes: u64, disk: Arc<DiskWatch>) -> Self {
        Self {
            max_log_bytes,
            disk,
        }
    }

    /// Stores what fits of `chunks` in `log`. Errors are the log's own refusals (gaps,
    /// oversized chunks, a closed log) and disk errors other than a full disk.
    pub(crate) fn take(&self, log: &JobLog, chunks: &[OutputChunk]) -> Result<Intake, AppendError> {
        let ack = chunks
            .iter()
            .map(|c| c.seq)
            .max()
            .unwrap_or(0)
            .max(log.last_seq());
        if log.is_refusing() {
            return Ok(Intake::Refused { ack, refusal: None });
        }
        if let Some(below) = self.disk.below_floor() {
            return Ok(Self::refuse(
                log,
                ack,
                FailureReason::DiskFull {
                    free_bytes: below.free_bytes,
                    min_free_bytes: below.min_free_bytes,
                },
            ));
        }
        match log.append_within(chunks, self.max_log_bytes) {
            Ok(Appended {
                last_seq,
                bytes,
                over_quota,
            }) => {
                self.disk.stored(bytes);
                if over_quota {
                    return Ok(Self::refuse(
                        log,
                        ack,
                        FailureReason::LogLimitExceeded {
                            limit_bytes: self.max_log_bytes,
                        },
                    ));
                }
                Ok(Intake::Stored(last_seq))
            }
            Err(AppendError::Io(error)) if error.kind() == io::ErrorKind::StorageFull => {
                self.disk.sample();
                Ok(Self::refuse(
                    log,
                    ack,
                    FailureReason::DiskFull {
                        free_bytes: 0,
                        min_free_bytes: self.disk.condition().min_free_bytes,
                    },
                ))
            }
            Err(error) => Err(error),
        }
    }

    fn refuse(log: &JobLog, ack: u64, reason: FailureReason) -> Intake {
        let first = log.refuse();
        Intake::Refused {
            ack,
            refusal: first.then_some(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{path::PathBuf, sync::atomic::Ordering, time::Duration};

    use bytes::Bytes;

    use super::*;
    use crate::{
        controller::disk_watch::tests::fake_probe,
        disk::FreeDiskFloor,
        job::JobId,
        logs::{LogHub, OutputStream},
    };

    fn chunk(seq: u64, len: usize) -> OutputChunk {
        OutputChunk {
            seq,
            stream: OutputStream::Stdout,
            data: Bytes::from(vec![b'y'; len]),
            emitted_at_us: 0,
        }
    }

    fn intake(max_log_bytes: u64) -> (OutputIntake, Arc<std::sync::atomic::AtomicU64>) {
        let (probe, free) = fake_probe();
        let disk = DiskWatch::new(
            PathBuf::from("/data"),
            FreeDiskFloor::Bytes(1 << 30),
            probe,
            Duration::from_secs(2),
        );
        (OutputIntake::new(max_log_bytes, disk), free)
    }

    #[test]
    fn output_is_stored_up_to_the_quota_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::open(dir.path()).unwrap();
        let log = hub.create(JobId::new()).unwrap();
        let (intake, _) = intake(100);
        assert_eq!(
            intake.take(&log, &[chunk(1, 40)]).unwrap(),
            Intake::Stored(1)
        );
        assert_eq!(
            intake
                .take(&log, &[chunk(2, 40), chunk(3, 40), chunk(4, 1)])
                .unwrap(),
            Intake::Refused {
                ack: 4,
                refusal: Some(FailureReason::LogLimitExceeded { limit_bytes: 100 })
            }
        );
        assert_eq!(
            log.last_seq(),
            3,
            "the first 20 bytes of chunk 3 fill the quota"
        );
        assert_eq!(
            intake.take(&log, &[chunk(5, 1)]).unwrap(),
            Intake::Refused {
                ack: 5,
                refusal: None
            },
            "later output is acknowledged, not stored, and the refusal told once"
        );
        assert_eq!(log.last_seq(), 3);
    }

    #[test]
    fn output_arriving_below_the_disk_floor_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::open(dir.path()).unwrap();
        let log = hub.create(JobId::new()).unwrap();
        let (intake, free) = intake(u64::MAX);
        free.store(1000, Ordering::Relaxed);
        intake.disk.sample();
        assert_eq!(
            intake.take(&log, &[chunk(1, 10)]).unwrap(),
            Intake::Refused {
                ack: 1,
                refusal: Some(FailureReason::DiskFull {
                    free_bytes: 1000,
                    min_free_bytes: 1 << 30
                })
            }
        );
        assert_eq!(log.last_seq(), 0);
    }
}
