//! Flags, and the run of the selected scenarios into one report.

use std::{path::PathBuf, process::ExitCode, time::Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    binaries::Binaries,
    emit::EmitArgs,
    report::{Report, ScenarioReport},
    scenarios,
    target::Target,
};

/// Measures a real hodei-server-bin: output latency, throughput, start latency,
/// concurrency, dispatch overhead and idle footprint.
#[derive(Debug, Parser)]
#[command(
    name = "hodei-bench",
    version,
    about,
    args_conflicts_with_subcommands = true,
    args_override_self = true
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

/// Where the benchmark jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    /// Worker processes on this machine (the server's local provider).
    Local,
    /// Worker pods in a Kubernetes namespace (the server's Kubernetes provider).
    Kubernetes,
}

/// What to run and how big.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenarios to run (comma-separated or repeated) [default: all that the provider
    /// supports].
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    pub scenarios: Vec<Scenario>,
    /// Where jobs run. `kubernetes` needs KUBECONFIG (used to watch pods and run the
    /// kubectl baseline), a prepared worker namespace and a worker image the cluster runs;
    /// see docs/BENCHMARKS.md.
    #[arg(long, value_enum, default_value = "local")]
    pub provider: Provider,
    /// Kubernetes: the worker namespace.
    #[arg(long, default_value = "hodei-jobs-workers")]
    pub k8s_namespace: String,
    /// Kubernetes: the kubeconfig the server uses [default: KUBECONFIG].
    #[arg(long)]
    pub k8s_server_kubeconfig: Option<PathBuf>,
    /// Kubernetes: the worker image of job pods.
    #[arg(long, default_value = "hodei-worker:latest")]
    pub k8s_worker_image: String,
    /// Kubernetes: an image whose entrypoint is a POSIX shell, for the `kubectl run`
    /// baseline pods.
    #[arg(long, default_value = "hodei-bench-shell:latest")]
    pub k8s_baseline_image: String,
    /// Kubernetes: the server's HODEI_K8S_API_WRITES_PER_SECOND [default: the server's].
    #[arg(long)]
    pub k8s_api_writes_per_second: Option<u32>,
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
    /// Concurrency: job counts to run at once, one round each [default: 100,500 locally,
    /// 50,200 on Kubernetes].
    #[arg(long, value_delimiter = ',')]
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
    fn selected(&self) -> anyhow::Result<Vec<Scenario>> {
        let supported = |s: &Scenario| self.provider == Provider::Local || s.runs_on_kubernetes();
        if self.scenarios.is_empty() {
            return Ok(Scenario::value_variants()
                .iter()
                .copied()
                .filter(supported)
                .collect());
        }
        if let Some(local_only) = self.scenarios.iter().find(|s| !supported(s)) {
            anyhow::bail!(
                "--scenario {}: runs on the local provider only",
                scenario_name(*local_only)
            );
        }
        Ok(Scenario::value_variants()
            .iter()
            .copied()
            .filter(|s| self.scenarios.contains(s))
            .collect())
    }

    /// The concurrency rounds to run.
    #[must_use]
    pub fn concurrency_rounds(&self) -> Vec<usize> {
        match (self.concurrency.is_empty(), self.provider) {
            (false, _) => self.concurrency.clone(),
            (true, Provider::Local) => vec![100, 500],
            (true, Provider::Kubernetes) => vec![50, 200],
        }
    }
}

impl Scenario {
    /// Idle footprint and dispatch overhead measure worker processes of the server itself.
    fn runs_on_kubernetes(self) -> bool {
        !matches!(self, Self::Idle | Self::Dispatch)
    }
}

fn scenario_name(scenario: Scenario) -> String {
    scenario
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
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
    let selected = args.selected()?;
    let bins = Binaries::locate(&args)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let target = runtime.block_on(Target::from_args(&args))?;
    let mut report = Report::new(std::env::args().collect());
    for scenario in selected {
        let name = scenario_name(scenario);
        eprintln!("hodei-bench: running {name} ...");
        let load = crate::procfs::load_average();
        let started = Instant::now();
        let result = runtime.block_on(scenarios::run(scenario, &args, &bins, &target));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> BenchArgs {
        let argv = std::iter::once("hodei-bench").chain(flags.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").bench
    }

    #[test]
    fn kubernetes_runs_the_pod_scenarios_with_cluster_sized_rounds() {
        let k8s = args(&["--provider", "kubernetes"]);
        assert_eq!(
            k8s.selected().expect("defaults are supported"),
            [
                Scenario::Latency,
                Scenario::Throughput,
                Scenario::Start,
                Scenario::Concurrency
            ]
        );
        assert_eq!(k8s.concurrency_rounds(), [50, 200]);
        let local = args(&[]);
        assert_eq!(local.selected().expect("all").len(), 6);
        assert_eq!(local.concurrency_rounds(), [100, 500]);
        assert_eq!(args(&["--concurrency", "7"]).concurrency_rounds(), [7]);
    }

    #[test]
    fn a_local_only_scenario_on_kubernetes_is_refused_by_name() {
        let error = args(&["--provider", "kubernetes", "--scenario", "latency,dispatch"])
            .selected()
            .expect_err("dispatch needs worker processes");
        assert!(error.to_string().contains("--scenario dispatch"), "{error}");
    }
}
