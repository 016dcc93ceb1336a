//! Watches free space on the filesystem that holds the job logs and publishes whether it
//! is below the floor: below it the server takes no new jobs and stores no more output.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::disk::{self, DiskSpace, FreeDiskFloor};

/// How often free space is sampled, by default.
pub const DEFAULT_DISK_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Output stored between two samples that triggers one at once, so a fast writer is
/// caught between the periodic samples.
const RECHECK_AFTER_BYTES: u64 = 16 << 20;

/// How free space is measured: [`disk::space`] unless a test or a host program says
/// otherwise.
#[derive(Clone)]
pub struct SpaceProbe(Arc<MeasureFn>);

type MeasureFn = dyn Fn(&Path) -> io::Result<DiskSpace> + Send + Sync;

impl SpaceProbe {
    /// Measures with `probe`.
    pub fn new(probe: impl Fn(&Path) -> io::Result<DiskSpace> + Send + Sync + 'static) -> Self {
        Self(Arc::new(probe))
    }

    pub(crate) fn measure(&self, path: &Path) -> io::Result<DiskSpace> {
        (self.0)(path)
    }
}

impl Default for SpaceProbe {
    fn default() -> Self {
        Self::new(disk::space)
    }
}

impl fmt::Debug for SpaceProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpaceProbe")
    }
}

/// Free space at the last sample, against the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskCondition {
    /// Bytes free.
    pub free_bytes: u64,
    /// The floor in bytes.
    pub min_free_bytes: u64,
}

impl DiskCondition {
    /// True when less than the floor is free.
    #[must_use]
    pub fn is_below_floor(&self) -> bool {
        self.free_bytes < self.min_free_bytes
    }

    /// Free bytes in a readable unit, e.g. `812.3 MiB`.
    pub(crate) fn free(&self) -> String {
        disk::readable(self.free_bytes)
    }
}

/// Samples free space and publishes the [`DiskCondition`].
#[derive(Debug)]
pub(crate) struct DiskWatch {
    dir: PathBuf,
    floor: FreeDiskFloor,
    probe: SpaceProbe,
    interval: Duration,
    condition: watch::Sender<DiskCondition>,
    stored_since_sample: AtomicU64,
}

impl DiskWatch {
    /// Watches the filesystem holding `dir`, and takes a first sample.
    pub(crate) fn new(
        dir: PathBuf,
        floor: FreeDiskFloor,
        probe: SpaceProbe,
        interval: Duration,
    ) -> Arc<Self> {
        let watch = Arc::new(Self {
            dir,
            floor,
            probe,
            interval,
            // Until the first sample answers, the disk counts as fine: a probe that
            // cannot measure must not stop the server.
            condition: watch::Sender::new(DiskCondition {
                free_bytes: u64::MAX,
                min_free_bytes: 0,
            }),
            stored_since_sample: AtomicU64::new(0),
        });
        watch.sample();
        watch
    }

    /// Samples every interval until `stop`.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    self.sample();
                }
                () = stop.cancelled() => return,
            }
        }
    }

    /// Measures now and publishes the result; false when measuring failed (the last
    /// sample then stands).
    pub(crate) fn sample(&self) -> bool {
        self.stored_since_sample.store(0, Ordering::Relaxed);
        let space = match self.probe.measure(&self.dir) {
            Ok(space) => space,
            Err(error) => {
                warn!(dir = %self.dir.display(), %error, "measuring free disk space failed");
                return false;
            }
        };
        let now = DiskCondition {
            free_bytes: space.available,
            min_free_bytes: self.floor.bytes_on(space.total),
        };
        crate::observe::disk_free(now.free_bytes, now.is_below_floor());
        let before = self.condition.send_replace(now);
        match (before.is_below_floor(), now.is_below_floor()) {
            (false, true) => warn!(
                dir = %self.dir.display(),
                free = %now.free(),
                floor = %self.floor,
                "free disk below the floor: new jobs are refused and output is not stored"
            ),
            (true, false) => info!(
                dir = %self.dir.display(),
                free = %now.free(),
                "free disk back above the floor"
            ),
            _ => {}
        }
        true
    }

    /// Counts `bytes` of stored output, sampling at once after every few megabytes.
    pub(crate) fn stored(&self, bytes: u64) {
        let before = self.stored_since_sample.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) >= RECHECK_AFTER_BYTES {
            self.sample();
        }
    }

    /// The condition now, when it is below the floor.
    pub(crate) fn below_floor(&self) -> Option<DiskCondition> {
        Some(*self.condition.borrow()).filter(DiskCondition::is_below_floor)
    }

    /// The condition at the last sample.
    pub(crate) fn condition(&self) -> DiskCondition {
        *self.condition.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<DiskCondition> {
        self.condition.subscribe()
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn floor(&self) -> FreeDiskFloor {
        self.floor
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// A probe reporting whatever `free` holds, on a 100 GiB filesystem.
    pub(crate) fn fake_probe() -> (SpaceProbe, Arc<AtomicU64>) {
        let free = Arc::new(AtomicU64::new(50 << 30));
        let shared = Arc::clone(&free);
        let probe = SpaceProbe::new(move |_| {
            Ok(DiskSpace {
                available: shared.load(Ordering::Relaxed),
                total: 100 << 30,
            })
        });
        (probe, free)
    }

    #[tokio::test(start_paused = true)]
    async fn the_condition_follows_the_samples() {
        let (probe, free) = fake_probe();
        let watch = DiskWatch::new(
            PathBuf::from("/data"),
            FreeDiskFloor::Bytes(1 << 30),
            probe,
            Duration::from_secs(2),
        );
        assert_eq!(watch.below_floor(), None);
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&watch).run(stop.clone()));
        free.store(10 << 20, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            watch.below_floor(),
            Some(DiskCondition {
                free_bytes: 10 << 20,
                min_free_bytes: 1 << 30
            })
        );
        free.store(2 << 30, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(watch.below_floor(), None);
        stop.cancel();
    }

    #[test]
    fn a_fast_writer_triggers_a_sample_between_ticks() {
        let (probe, free) = fake_probe();
        let watch = DiskWatch::new(
            PathBuf::from("/data"),
            FreeDiskFloor::Percent(5),
            probe,
            Duration::from_secs(3600),
        );
        free.store(1 << 30, Ordering::Relaxed);
        watch.stored(8 << 20);
        assert_eq!(watch.below_floor(), None, "not yet 16 MiB");
        watch.stored(8 << 20);
        assert_eq!(
            watch.below_floor().map(|c| c.min_free_bytes),
            Some(5 << 30),
            "5% of 100 GiB"
        );
    }

    #[test]
    fn a_probe_that_fails_leaves_the_condition_as_it_was() {
        let watch = DiskWatch::new(
            PathBuf::from("/data"),
            FreeDiskFloor::Bytes(1),
            SpaceProbe::new(|_| Err(io::Error::other("no statvfs"))),
            Duration::from_secs(2),
        );
        assert_eq!(watch.below_floor(), None);
    }
}
