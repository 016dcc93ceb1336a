//! The unprivileged user local workers (and so their jobs) run as: one user for all, or
//! a uid of its own for each worker from a range, so jobs cannot touch each other.

use std::{collections::HashSet, fmt, time::Duration};

use nix::{
    sys::signal::{Signal, kill},
    unistd::{Pid, Uid, User},
};
use parking_lot::Mutex;

/// Why a user to run workers as cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    /// No such user name.
    #[error("HODEI_LOCAL_RUN_AS: no user named {0:?}")]
    UnknownUser(String),
    /// The user database could not be read.
    #[error("HODEI_LOCAL_RUN_AS: cannot look up {user:?}")]
    Lookup {
        /// The user asked for.
        user: String,
        /// Why the lookup failed.
        #[source]
        source: nix::Error,
    },
    /// A uid range that is empty, starts at root, or does not parse.
    #[error("HODEI_LOCAL_RUN_AS: {0:?} is not a range FIRST-LAST of uids above 0")]
    BadRange(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ids {
    /// Every worker runs as this user and primary group.
    User { name: String, uid: u32, gid: u32 },
    /// Each worker gets a uid (and the gid of the same number) no running worker has.
    Range { first: u32, last: u32 },
}

/// Whom local workers run as. The worker gets no supplementary groups: the server drops
/// its own and does not add the user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    ids: Ids,
}

impl RunAs {
    /// `FIRST-LAST` is a uid range (see [`RunAs::uid_range`]); anything else a user name
    /// or numeric uid (see [`RunAs::user`]).
    pub fn parse(value: &str) -> Result<Self, RunAsError> {
        match value.split_once('-') {
            Some((first, last))
                if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let bad = || RunAsError::BadRange(value.to_owned());
                Self::uid_range(
                    first.parse().map_err(|_| bad())?,
                    last.parse().map_err(|_| bad())?,
                )
            }
            _ => Self::user(value),
        }
    }

    /// The user named `user`, or with the numeric uid `user`; a uid without an entry in
    /// the user database runs with the group of the same number.
    pub fn user(user: &str) -> Result<Self, RunAsError> {
        let lookup_error = |source| RunAsError::Lookup {
            user: user.to_owned(),
            source,
        };
        let ids = if let Ok(uid) = user.parse::<u32>() {
            match User::from_uid(Uid::from_raw(uid)).map_err(lookup_error)? {
                Some(entry) => Self::entry_ids(&entry),
                None => Ids::User {
                    name: uid.to_string(),
                    uid,
                    gid: uid,
                },
            }
        } else {
            let entry = User::from_name(user)
                .map_err(lookup_error)?
                .ok_or_else(|| RunAsError::UnknownUser(user.to_owned()))?;
            Self::entry_ids(&entry)
        };
        Ok(Self { ids })
    }

    /// Each worker runs as a uid of `first..=last` that no running worker has, with the
    /// group of the same number. The uids should belong to nobody else on the host: when
    /// a worker ends, every process left with its uid is killed.
    pub fn uid_range(first: u32, last: u32) -> Result<Self, RunAsError> {
        if first == 0 || first > last {
            return Err(RunAsError::BadRange(format!("{first}-{last}")));
        }
        Ok(Self {
            ids: Ids::Range { first, last },
        })
    }

    fn entry_ids(entry: &User) -> Ids {
        Ids::User {
            name: entry.name.clone(),
            uid: entry.uid.as_raw(),
            gid: entry.gid.as_raw(),
        }
    }

    /// Whether every worker would run as `uid` (and so a server running as `uid` may use
    /// this without being root).
    #[must_use]
    pub fn is_only(&self, uid: u32) -> bool {
        match self.ids {
            Ids::User { uid: user, .. } => user == uid,
            Ids::Range { .. } => false,
        }
    }
}

impl fmt::Display for RunAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ids {
            Ids::User { name, uid, gid } => write!(f, "{name} ({uid}:{gid})"),
            Ids::Range { first, last } => write!(f, "a uid of its own in {first}-{last}"),
        }
    }
}

/// The uid and gid one worker runs as, held until the worker has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct WorkerIds {
    pub uid: u32,
    pub gid: u32,
    /// The uid is this worker's alone: what is left of it can be killed by uid.
    pub own: bool,
}

/// Hands out the ids of workers; for a range, each uid to one running worker at a time.
#[derive(Debug)]
pub(super) struct IdPool {
    run_as: RunAs,
    taken: Mutex<(HashSet<u32>, u32)>,
}

impl IdPool {
    pub fn new(run_as: RunAs) -> Self {
        Self {
            run_as,
            taken: Mutex::new((HashSet::new(), 0)),
        }
    }

    pub fn run_as(&self) -> &RunAs {
        &self.run_as
    }

    /// Ids for a new worker; `None` when every uid of the range is taken. Uids are
    /// handed out in turn, so a freed one is not reused at once.
    pub fn take(&self) -> Option<WorkerIds> {
        match self.run_as.ids {
            Ids::User { uid, gid, .. } => Some(WorkerIds {
                uid,
                gid,
                own: false,
            }),
            Ids::Range { first, last } => {
                let mut guard = self.taken.lock();
                let (taken, next) = &mut *guard;
                let size = u64::from(last - first) + 1;
                let start = u64::from(*next);
                (0..size).find_map(|step| {
                    let offset = u32::try_from((start + step) % size).ok()?;
                    let uid = first + offset;
                    if !taken.insert(uid) {
                        return None;
                    }
                    *next = u32::try_from((u64::from(offset) + 1) % size).unwrap_or(0);
                    Some(WorkerIds {
                        uid,
                        gid: uid,
                        own: true,
                    })
                })
            }
        }
    }

    /// Marks the ids of a worker an earlier server process started as taken, so no new
    /// worker gets its uid while it runs. False if the uid is already taken here.
    pub fn claim(&self, ids: WorkerIds) -> bool {
        !ids.own || self.taken.lock().0.insert(ids.uid)
    }

    /// Gives the uid of an ended worker back, after killing what is left under it.
    pub fn release(&self, ids: WorkerIds) {
        if ids.own {
            kill_all_of(ids.uid);
            self.taken.lock().0.remove(&ids.uid);
        }
    }
}

/// Rounds of find-and-kill before giving up on processes that fork as fast as they die.
const KILL_ROUNDS: usize = 50;

/// SIGKILLs every process whose real or effective uid is `uid`, round after round until
/// none is left: a worker's uid is its own, so this is whatever its job left behind.
fn kill_all_of(uid: u32) {
    for _ in 0..KILL_ROUNDS {
        let left = processes_of(uid);
        if left.is_empty() {
            return;
        }
        for pid in left {
            let _ = kill(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::warn!(uid, "processes of an ended worker's uid are still there");
}

/// The live processes whose real or effective uid is `uid`.
fn processes_of(uid: u32) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(entry.path().join("status")).ok()?;
            let (real, effective, zombie) = parse_status(&status)?;
            (!zombie && (real == uid || effective == uid)).then_some(Pid::from_raw(pid))
        })
        .collect()
}

/// Real uid, effective uid and whether it is a zombie, from `/proc/PID/status`.
fn parse_status(status: &str) -> Option<(u32, u32, bool)> {
    let mut ids = None;
    let mut zombie = false;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            let mut fields = rest.split_ascii_whitespace();
            ids = Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?));
        } else if let Some(rest) = line.strip_prefix("State:") {
            zombie = rest.trim_start().starts_with(['Z', 'X']);
        }
    }
    ids.map(|(real, effective)| (real, effective, zombie))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_found_by_name_or_uid_and_an_unknown_name_is_refused() {
        let nobody = RunAs::user("nobody").unwrap();
        let Ids::User { uid, .. } = nobody.ids else {
            panic!("a user")
        };
        assert_ne!(uid, 0);
        assert_eq!(RunAs::user(&uid.to_string()).unwrap(), nobody);
        assert_eq!(RunAs::parse("nobody").unwrap(), nobody);
        assert_eq!(
            RunAs::user("4000000").unwrap().ids,
            Ids::User {
                name: "4000000".into(),
                uid: 4_000_000,
                gid: 4_000_000
            }
        );
        assert!(RunAs::user("root").unwrap().is_only(0));
        assert!(matches!(
            RunAs::user("no-such-user-hodei"),
            Err(RunAsError::UnknownUser(name)) if name == "no-such-user-hodei"
        ));
    }

    #[test]
    fn a_range_parses_and_a_bad_one_is_refused() {
        assert_eq!(
            RunAs::parse("100000-100009").unwrap().ids,
            Ids::Range {
                first: 100_000,
                last: 100_009
            }
        );
        for bad in ["0-10", "10-9", "10-x", "10-"] {
            assert!(
                matches!(RunAs::parse(bad), Err(RunAsError::BadRange(_))),
                "{bad}"
            );
        }
        assert!(!RunAs::parse("5-6").unwrap().is_only(5));
    }

    #[test]
    fn each_worker_of_a_range_gets_a_uid_no_running_worker_has() {
        let pool = IdPool::new(RunAs::uid_range(4_100_000, 4_100_002).unwrap());
        let ids: Vec<_> = (0..3).map(|_| pool.take().unwrap()).collect();
        let uids: HashSet<_> = ids.iter().map(|i| i.uid).collect();
        assert_eq!(uids.len(), 3);
        assert!(ids.iter().all(|i| i.own && i.gid == i.uid));
        assert_eq!(pool.take(), None, "the range is used up");
        pool.release(ids[1]);
        assert_eq!(pool.take().map(|i| i.uid), Some(ids[1].uid));
    }

    #[test]
    fn freed_uids_are_reused_last() {
        let pool = IdPool::new(RunAs::uid_range(4_100_000, 4_100_002).unwrap());
        let first = pool.take().unwrap();
        pool.release(first);
        assert_ne!(pool.take().unwrap().uid, first.uid);
    }

    #[test]
    fn status_gives_uids_and_state() {
        let status = "Name:\tsleep\nState:\tS (sleeping)\nUid:\t7\t8\t8\t8\n";
        assert_eq!(parse_status(status), Some((7, 8, false)));
        let zombie = "State:\tZ (zombie)\nUid:\t7\t7\t7\t7\n";
        assert_eq!(parse_status(zombie), Some((7, 7, true)));
        assert_eq!(parse_status("Name:\tx\n"), None);
    }
}
