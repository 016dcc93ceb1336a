//! Finds and kills what a job leaves behind, including processes that left its process
//! group (`setsid`, double forks): a worker that owns its process is their child
//! subreaper, so they stay its descendants and it can kill and reap them by pid.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::{
        prctl,
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{Pid, getpid},
};
use tracing::{debug, warn};

use crate::proc_stat::{self, ProcStat};

/// Rounds of find-and-kill before giving up on a job that forks as fast as it is killed.
const KILL_ROUNDS: usize = 50;
/// Longest time spent finding, killing and reaping, so a stuck process (e.g. in
/// uninterruptible sleep) cannot hold the worker.
const SWEEP_LIMIT: Duration = Duration::from_secs(5);

/// Makes this process the subreaper of its descendants, so an orphaned job process is
/// re-parented to it instead of to init; and makes it non-dumpable, so processes of the
/// same user (its jobs) can neither read its memory and environment through `/proc` nor
/// trace it.
pub(crate) fn own_descendants() {
    if let Err(error) = prctl::set_child_subreaper(true) {
        warn!(%error, "cannot become the subreaper of the job's processes");
    }
    if let Err(error) = prctl::set_dumpable(false) {
        warn!(%error, "cannot hide the worker's memory from its jobs");
    }
}

/// Every process visible in `/proc`. Processes that end while it is read are skipped.
fn processes() -> HashMap<i32, ProcStat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            Some((pid, proc_stat::parse(&stat)?))
        })
        .collect()
}

/// The descendants of `root` (not `root` itself) in `table`, parents before children.
fn descendants_in(table: &HashMap<i32, ProcStat>, root: i32) -> Vec<(i32, ProcStat)> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, stat) in table {
        children.entry(stat.parent).or_default().push(*pid);
    }
    let mut seen = HashSet::from([root]);
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(parent) = next.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if seen.insert(*child) {
                found.push((*child, table[child]));
                next.push(*child);
            }
        }
    }
    found
}

/// The live descendants of `root` (the command, leader of the job's process group).
pub(crate) fn live_descendants(root: Pid) -> Vec<Pid> {
    descendants_in(&processes(), root.as_raw())
        .into_iter()
        .filter(|(_, stat)| !stat.zombie)
        .map(|(pid, _)| Pid::from_raw(pid))
        .collect()
}

/// Whether `pid` lives outside process group `group` now (e.g. after `setsid`), so a
/// signal to the group does not reach it.
pub(crate) fn outside_group(pid: Pid, group: Pid) -> bool {
    proc_stat::read(pid.as_raw()).is_some_and(|stat| !stat.zombie && stat.group != group.as_raw())
}

/// SIGKILLs every descendant of this process and reaps each of its children by pid,
/// round after round, until none is left. `spare` is a child someone else waits for
/// (the job's command, which tokio reaps): it is killed but not reaped here. Never
/// waits for "any child", so no other waiter loses its child's status.
pub(crate) fn kill_all_descendants(spare: Option<Pid>) {
    let me = getpid().as_raw();
    let spare = spare.map(Pid::as_raw);
    let deadline = Instant::now() + SWEEP_LIMIT;
    for _ in 0..KILL_ROUNDS {
        let left: Vec<_> = descendants_in(&processes(), me)
            .into_iter()
            .filter(|(pid, _)| Some(*pid) != spare)
            .collect();
        if left.is_empty() {
            return;
        }
        debug!(count = left.len(), "killing processes the job left behind");
        for (pid, stat) in &left {
            if !stat.zombie {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
        let children: Vec<_> = left
            .iter()
            .filter(|(_, stat)| stat.parent == me)
            .map(|(pid, _)| Pid::from_raw(*pid))
            .collect();
        reap(children, deadline);
        if Instant::now() >= deadline {
            break;
        }
    }
    warn!("processes of the job are still there after repeated SIGKILLs");
}

/// Waits for each of `children` by its pid, until `deadline` at the latest.
fn reap(mut children: Vec<Pid>, deadline: Instant) {
    while !children.is_empty() {
        children.retain(|pid| {
            match waitpid(*pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) | Err(Errno::ECHILD) => false,
                Err(Errno::EINTR) => true,
                Err(error) => {
                    debug!(pid = pid.as_raw(), %error, "reaping a leftover process failed");
                    false
                }
            }
        });
        if children.is_empty() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_are_found_through_every_generation_and_nothing_else() {
        let stat = |parent| ProcStat {
            parent,
            group: 10,
            zombie: false,
            started: None,
        };
        let table = HashMap::from([
            (10, stat(1)),
            (11, stat(10)),
            (12, stat(11)),
            (13, stat(10)),
            (20, stat(1)),
            (21, stat(20)),
        ]);
        let mut found: Vec<_> = descendants_in(&table, 10)
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        found.sort_unstable();
        assert_eq!(found, [11, 12, 13]);
        assert!(descendants_in(&table, 12).is_empty());
    }
}
