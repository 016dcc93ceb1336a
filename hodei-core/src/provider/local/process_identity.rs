//! Finding a local worker again after a server restart: its process id, made safe against
//! reuse by the process's start time, and what the worker holds (its uid, its directory).

use std::{path::PathBuf, time::Duration};

use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::run_as::WorkerIds;

/// How often an adopted worker (not a child of this process) is checked for its end.
pub(super) const ADOPTED_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What the server stores to find a local worker again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Locator {
    pub pid: i32,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat`, field 22):
    /// a process id reused by another process has another start time.
    pub started: u64,
    /// The ids it runs as, when the provider picked them.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The uid is this worker's alone.
    #[serde(default)]
    pub own_uid: bool,
    /// The worker's private directory.
    pub dir: PathBuf,
}

impl Locator {
    pub fn new(pid: Pid, ids: Option<WorkerIds>, dir: PathBuf) -> Option<Self> {
        Some(Self {
            pid: pid.as_raw(),
            started: start_time(pid)?,
            uid: ids.map(|ids| ids.uid),
            gid: ids.map(|ids| ids.gid),
            own_uid: ids.is_some_and(|ids| ids.own),
            dir,
        })
    }

    pub fn encode(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }

    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.pid)
    }

    pub fn ids(&self) -> Option<WorkerIds> {
        Some(WorkerIds {
            uid: self.uid?,
            gid: self.gid?,
            own: self.own_uid,
        })
    }

    /// True while the very process it names runs (not a zombie, not a newer process that
    /// got the same id).
    pub fn is_alive(&self) -> bool {
        start_time(self.pid()) == Some(self.started)
    }
}

/// The start time of a live process; `None` for a zombie or a process that is gone.
fn start_time(pid: Pid) -> Option<u64> {
    crate::proc_stat::read(pid.as_raw())
        .filter(|stat| !stat.zombie)
        .and_then(|stat| stat.started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_another_process() {
        let me = Pid::this();
        let locator = Locator::new(me, None, PathBuf::from("/tmp/x")).unwrap();
        assert!(locator.is_alive());
        let decoded = Locator::decode(&locator.encode().unwrap()).unwrap();
        assert_eq!(decoded, locator);
        let reused = Locator {
            started: locator.started + 1,
            ..locator
        };
        assert!(!reused.is_alive(), "a reused pid is not the worker");
        assert!(Locator::decode("pid 42").is_none());
    }

    #[tokio::test]
    async fn an_ended_process_is_not_alive() {
        let mut child = tokio::process::Command::new("true").spawn().unwrap();
        let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
        let locator = Locator::new(pid, None, PathBuf::from("/tmp/x"));
        child.wait().await.unwrap();
        assert!(locator.is_none_or(|l| !l.is_alive()));
    }
}
