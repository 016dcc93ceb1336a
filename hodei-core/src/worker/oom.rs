//! Whether the kernel's out-of-memory killer ended the job: the OOM-kill counter of the
//! worker's memory cgroup (the container's, in a pod), read before and after the command.

use nix::sys::signal::Signal;

use crate::{controller::WorkerOutcome, job::ProcessExit};

/// Where the kernel counts OOM kills: cgroup v2, then v1 (`oom_kill` since Linux 4.13).
const COUNTERS: [&str; 2] = [
    "/sys/fs/cgroup/memory.events",
    "/sys/fs/cgroup/memory/memory.oom_control",
];

/// OOM kills counted in this process's memory cgroup, where the kernel shows them.
pub(crate) fn kills() -> Option<u64> {
    COUNTERS.iter().find_map(|path| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| parse_kills(&text))
    })
}

fn parse_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
}

/// How a command that ended with `exit` ended, given the OOM-kill counter before it
/// started and after it ended: a SIGKILL while the counter rose is the OOM killer's.
pub(crate) fn outcome(exit: ProcessExit, before: Option<u64>, after: Option<u64>) -> WorkerOutcome {
    match (exit, before, after) {
        (ProcessExit::Signal(signal), Some(before), Some(after))
            if signal == Signal::SIGKILL as i32 && after > before =>
        {
            WorkerOutcome::OutOfMemory(exit)
        }
        _ => WorkerOutcome::Exit(exit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_counter_of_either_cgroup_version() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_kills(v1), Some(3));
        assert_eq!(parse_kills(v2), Some(2));
        assert_eq!(parse_kills("oom_kill_disable 0\n"), None);
    }

    #[test]
    fn only_a_sigkill_while_the_counter_rose_is_out_of_memory() {
        let killed = ProcessExit::Signal(9);
        assert_eq!(
            outcome(killed, Some(0), Some(1)),
            WorkerOutcome::OutOfMemory(killed)
        );
        assert_eq!(
            outcome(killed, Some(1), Some(1)),
            WorkerOutcome::Exit(killed)
        );
        assert_eq!(outcome(killed, None, None), WorkerOutcome::Exit(killed));
        let terminated = ProcessExit::Signal(15);
        assert_eq!(
            outcome(terminated, Some(0), Some(1)),
            WorkerOutcome::Exit(terminated)
        );
        let failed = ProcessExit::Code(137);
        assert_eq!(
            outcome(failed, Some(0), Some(1)),
            WorkerOutcome::Exit(failed)
        );
    }
}
