//! Memory, CPU time and children of a process, read from `/proc`.

use anyhow::Context;

/// Clock ticks per second in `/proc/<pid>/stat`: USER_HZ, fixed at 100 on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Resident now (VmRSS).
    pub rss_kib: u64,
    /// Peak resident (VmHWM).
    pub peak_kib: u64,
}

/// CPU time used so far, in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTime {
    /// The process itself (utime + stime).
    pub own: f64,
    /// Its children that have been waited for (cutime + cstime).
    pub children: f64,
}

impl std::ops::Sub for CpuTime {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self {
            own: self.own - rhs.own,
            children: self.children - rhs.children,
        }
    }
}

/// VmRSS and VmHWM of `pid`.
pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Ok(Memory {
        rss_kib: field("VmRSS:").unwrap_or(0),
        peak_kib: field("VmHWM:").unwrap_or(0),
    })
}

/// utime + stime and cutime + cstime of `pid` (`"self"` for this process).
pub fn cpu(pid: &str) -> anyhow::Result<CpuTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    // After ')': state is field 3, so utime (14) .. cstime (17) are at 11..=14.
    let ticks: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    anyhow::ensure!(ticks.len() == 4, "malformed stat of {pid}");
    Ok(CpuTime {
        own: (ticks[0] + ticks[1]) / TICKS_PER_SECOND,
        children: (ticks[2] + ticks[3]) / TICKS_PER_SECOND,
    })
}

/// Direct children of `pid`, from `/proc/<pid>/task/*/children`.
#[must_use]
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Sum of VmRSS of `pids`, in KiB; processes that are gone count 0.
#[must_use]
pub fn rss_sum(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&pid| memory(pid).ok())
        .map(|m| m.rss_kib)
        .sum()
}

/// Machine description for the report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub nproc: usize,
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release.
    pub kernel: String,
    /// MemTotal, in MiB.
    pub memory_mib: u64,
}

impl Machine {
    /// Reads this machine.
    #[must_use]
    pub fn current() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        Self {
            nproc: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default(),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            memory_mib: meminfo
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |kib| kib / 1024),
        }
    }
}

/// The 1, 5 and 15 minute load averages (zeros when unreadable).
#[must_use]
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut values = text.split_whitespace().map(|v| v.parse().unwrap_or(0.0));
    [(); 3].map(|()| values.next().unwrap_or(0.0))
}
