//! The report: figures with their method, as JSON and as a readable summary.

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::Context;
use serde::Serialize;

use crate::{procfs::Machine, stats::Summary};

/// One measured number and how it was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What it is.
    pub name: String,
    /// The number.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// How it was measured.
    pub method: String,
    /// The target, when there is one (informational; nothing fails on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether the value meets the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meets_target: Option<bool>,
}

impl Figure {
    /// A figure without a target.
    pub fn new(
        name: impl Into<String>,
        value: f64,
        unit: impl Into<String>,
        method: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            method: method.into(),
            target: None,
            meets_target: None,
        }
    }

    /// Adds a target and whether it is met.
    #[must_use]
    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = Some(target.into());
        self.meets_target = Some(met);
        self
    }
}

/// p50, p99 and max of `samples` (ms) as three figures named `<name> p50` etc.
pub fn percentiles(name: &str, samples: &[f64], method: &str) -> Vec<Figure> {
    let s = Summary::of(samples);
    let method = format!("{method}; n = {}, nearest-rank percentiles", s.n);
    vec![
        Figure::new(format!("{name} p50"), s.p50, "ms", &method),
        Figure::new(format!("{name} p99"), s.p99, "ms", &method),
        Figure::new(format!("{name} max"), s.max, "ms", method),
    ]
}

/// What one scenario produced.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// How long it took, in seconds.
    pub wall_seconds: f64,
    /// 1, 5 and 15 minute load averages of the machine just before it ran.
    pub load_average_before: [f64; 3],
    /// Its figures.
    pub figures: Vec<Figure>,
    /// Why it stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ScenarioReport {
    /// The report of a finished scenario.
    #[must_use]
    pub fn new(
        name: String,
        load_average_before: [f64; 3],
        took: Duration,
        result: anyhow::Result<Vec<Figure>>,
    ) -> Self {
        let (figures, error) = match result {
            Ok(figures) => (figures, None),
            Err(error) => (Vec::new(), Some(format!("{error:#}"))),
        };
        Self {
            name,
            wall_seconds: took.as_secs_f64(),
            load_average_before,
            figures,
            error,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command line.
    pub command: Vec<String>,
    /// Seconds since the epoch when the run started.
    pub started_at_unix: u64,
    /// The machine.
    pub machine: Machine,
    /// Results, in the order run.
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    /// An empty report of a run started now.
    #[must_use]
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            started_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            machine: Machine::current(),
            scenarios: Vec::new(),
        }
    }

    /// Writes the JSON report, creating its directory.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// A table per scenario.
    #[must_use]
    pub fn summary(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "machine: {} x {} ({} MiB)\n",
            m.nproc, m.cpu_model, m.memory_mib
        );
        for scenario in &self.scenarios {
            let _ = writeln!(
                out,
                "\n== {} ({:.1} s; load average before: {:.2})",
                scenario.name, scenario.wall_seconds, scenario.load_average_before[0]
            );
            if let Some(error) = &scenario.error {
                let _ = writeln!(out, "  FAILED: {error}");
            }
            for f in &scenario.figures {
                let target = match (&f.target, f.meets_target) {
                    (Some(t), Some(true)) => format!("  [target {t}: met]"),
                    (Some(t), _) => format!("  [target {t}: MISSED]"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "  {:<48} {:>12} {}{}",
                    f.name,
                    format_value(f.value),
                    f.unit,
                    target
                );
            }
        }
        out
    }
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}
