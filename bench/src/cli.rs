//! Flags, and the run of the selected scenarios into one report.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    binaries::Binaries,
    emit::EmitArgs,
    report::{Report, ScenarioReport},
    scenarios,
};

/// Measures a real hodei-server-bin: output latency, throughput, start latency,
/// concurrency, dispatch overhead and idle footprint.
#[derive(Debug, Parser)]
#[command(
    name = "hodei-bench",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes timestamped or bulk lines to stdout (the command of benchmark jobs).
    #[command(hide = true)]
    Emit(EmitArgs),
}

/// One benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Server and worker memory at idle, and binary sizes.
    Idle,
    /// Write-to-client delay of output lines written at a steady rate.
    Latency,
    /// Bytes per second of one job writing as fast as it can.
    Throughput,
    /// Submit to provisioning, running, terminal and first output.
    Start,
    /// Many `sleep` jobs at once: wall time, server memory and CPU.
    Concurrency,
    /// Many `true` jobs a few at a time against direct spawns.
    Dispatch,
}

/// What to run and how big.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenarios to run (comma-separated or repeated) [default: all].
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
    /// The hodei-server-bin to measure [default: next to this program].
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// The hodei-worker-bin the server runs [default: next to this program].
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench-report.json")]
    pub out: PathBuf,
    /// Latency: lines per second.
    #[arg(long, default_value_t = 200)]
    pub latency_rate: u32,
    /// Latency: number of lines.
    #[arg(long, default_value_t = 1000)]
    pub latency_count: u32,
    /// Throughput: MiB the job writes.
    #[arg(long, default_value_t = 256)]
    pub throughput_mib: u64,
    /// Throughput: bytes per line, newline included.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(2..=65536))]
    pub line_len: u64,
    /// Start: number of sequential jobs (each of `true`, then each of `echo`).
    #[arg(long, default_value_t = 50)]
    pub start_jobs: usize,
    /// Concurrency: job counts to run at once, one round each.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 500])]
    pub concurrency: Vec<usize>,
    /// Concurrency: seconds each job sleeps.
    #[arg(long, default_value_t = 1)]
    pub concurrency_sleep: u32,
    /// Dispatch: number of `true` jobs.
    #[arg(long, default_value_t = 200)]
    pub dispatch_jobs: usize,
    /// Dispatch: jobs in flight at once.
    #[arg(long, default_value_t = 8)]
    pub dispatch_parallel: usize,
}

impl BenchArgs {
    fn selected(&self) -> Vec<Scenario> {
        if self.scenarios.is_empty() {
            Scenario::value_variants().to_vec()
        } else {
            Scenario::value_variants()
                .iter()
                .copied()
                .filter(|s| self.scenarios.contains(s))
                .collect()
        }
    }
}

/// Parses the command line and runs it.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Emit(args)) => crate::emit::run(&args),
        None => bench(cli.bench),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hodei-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let bins = Binaries::locate(&args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut report = Report::new(std::env::args().collect());
    for scenario in args.selected() {
        let name = scenario
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        eprintln!("hodei-bench: running {name} ...");
        let load = crate::procfs::load_average();
        let started = Instant::now();
        let result = runtime.block_on(scenarios::run(scenario, &args, &bins));
        let scenario_report = ScenarioReport::new(name, load, started.elapsed(), result);
        if let Some(error) = &scenario_report.error {
            eprintln!("hodei-bench: {} failed: {error}", scenario_report.name);
        }
        report.scenarios.push(scenario_report);
    }
    report.write(&args.out)?;
    print!("{}", report.summary());
    println!("report: {}", args.out.display());
    Ok(if report.scenarios.iter().any(|s| s.error.is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
