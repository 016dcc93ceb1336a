//! Flags, turned into a [`BenchConfig`] in one place; everything after that sees only the
//! config.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::PossibleValue};

use crate::{
    abuse::AbuseConfig,
    config::{
        BenchConfig, Concurrency, DEFAULT_REPORT, Dispatch, Kubernetes, Latency, Provider,
        Scenario, Start, TargetConfig, Throughput,
    },
    emit::EmitArgs,
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
    /// Hits a local server with thousands of follows, a flood of submits, oversized specs
    /// and worker messages, and a job writing 4 MiB pieces; prints its peak memory, open
    /// files, refusals and whether health stayed SERVING (exit 1 if not).
    Abuse(AbuseArgs),
}

/// How hard `abuse` hits the server; the defaults are [`AbuseConfig`]'s.
#[derive(Debug, Clone, Args)]
struct AbuseArgs {
    /// `FollowJob` streams opened at once.
    #[arg(long, default_value_t = AbuseConfig::default().followers)]
    followers: usize,
    /// Connections the follows are spread over.
    #[arg(long, default_value_t = AbuseConfig::default().follow_connections)]
    follow_connections: usize,
    /// `true` jobs submitted as fast as the server takes them.
    #[arg(long, default_value_t = AbuseConfig::default().jobs)]
    jobs: usize,
    /// Submits in flight at once.
    #[arg(long, default_value_t = AbuseConfig::default().submit_parallel)]
    submit_parallel: usize,
    /// Oversized specs of each kind (over the spec limits, over the message limit).
    #[arg(long, default_value_t = AbuseConfig::default().oversized)]
    oversized: usize,
    /// Worker streams opened with a first message over the worker API's limit.
    #[arg(long, default_value_t = AbuseConfig::default().worker_oversized)]
    worker_oversized: usize,
    /// MiB the big-output job writes, in 4 MiB pieces.
    #[arg(long, default_value_t = AbuseConfig::default().output_mib)]
    output_mib: u64,
    /// Workers the server runs at once.
    #[arg(long, default_value_t = AbuseConfig::default().max_workers)]
    max_workers: usize,
    /// A setting of the server under test, e.g. `HODEI_MAX_QUEUED_JOBS_PER_OWNER=20000`
    /// (repeatable).
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = key_value)]
    server_env: Vec<(String, String)>,
    /// The hodei-server-bin to abuse [default: next to this program].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The hodei-worker-bin the server runs [default: next to this program].
    #[arg(long)]
    worker_bin: Option<PathBuf>,
}

/// `KEY=VALUE`, for a `HODEI_*` setting.
fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if key.starts_with("HODEI_") => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected HODEI_NAME=VALUE".to_owned()),
    }
}

impl AbuseArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let bins = crate::binaries::Binaries::locate(
            self.server_bin.as_deref(),
            self.worker_bin.as_deref(),
        )?;
        let config = AbuseConfig {
            followers: self.followers,
            follow_connections: self.follow_connections,
            jobs: self.jobs,
            submit_parallel: self.submit_parallel,
            oversized: self.oversized,
            worker_oversized: self.worker_oversized,
            output_mib: self.output_mib,
            max_workers: self.max_workers,
            server_env: self.server_env,
        };
        crate::abuse::run(&config, &bins)
    }
}

impl ValueEnum for Scenario {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.about()))
    }
}

impl ValueEnum for Provider {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(self.about()))
    }
}

/// What to run and how big; the defaults are the config's.
#[derive(Debug, Clone, Args)]
struct BenchArgs {
    /// Scenarios to run (comma-separated or repeated) [default: all that the provider
    /// supports].
    #[arg(long = "scenario", value_enum, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Where jobs run. `kubernetes` needs KUBECONFIG (used to watch pods and run the
    /// kubectl baseline), a prepared worker namespace and a worker image the cluster runs;
    /// see docs/BENCHMARKS.md.
    #[arg(long, value_enum, default_value = "local")]
    provider: Provider,
    /// Kubernetes: the worker namespace.
    #[arg(long, default_value_t = Kubernetes::default().namespace)]
    k8s_namespace: String,
    /// Kubernetes: the kubeconfig the server uses [default: KUBECONFIG].
    #[arg(long)]
    k8s_server_kubeconfig: Option<PathBuf>,
    /// Kubernetes: the worker image of job pods; it must hold hodei-bench at
    /// --k8s-bench-bin.
    #[arg(long, default_value_t = Kubernetes::default().worker_image)]
    k8s_worker_image: String,
    /// Kubernetes: an image with a POSIX shell at /bin/sh, for the baseline pods.
    #[arg(long, default_value_t = Kubernetes::default().baseline_image)]
    k8s_baseline_image: String,
    /// Kubernetes: where hodei-bench is inside the worker image (output jobs run it).
    #[arg(long, default_value_t = Kubernetes::default().bench_bin)]
    k8s_bench_bin: String,
    /// Kubernetes: a program that makes a loopback port reachable from pods and prints
    /// the URL they dial, run once per server (scripts/cluster/expose-to-pods.sh)
    /// [default: pods dial 127.0.0.1].
    #[arg(long)]
    k8s_expose: Option<PathBuf>,
    /// Kubernetes: the server's HODEI_K8S_API_WRITES_PER_SECOND [default: the server's].
    #[arg(long)]
    k8s_api_writes_per_second: Option<u32>,
    /// The hodei-server-bin to measure [default: next to this program].
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The hodei-worker-bin the server runs [default: next to this program].
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long, default_value = DEFAULT_REPORT)]
    out: PathBuf,
    /// Latency: lines per second.
    #[arg(long, default_value_t = Latency::default().rate)]
    latency_rate: u32,
    /// Latency: number of lines.
    #[arg(long, default_value_t = Latency::default().count)]
    latency_count: u32,
    /// Throughput: MiB the job writes.
    #[arg(long, default_value_t = Throughput::default().mib)]
    throughput_mib: u64,
    /// Throughput: bytes per line, newline included.
    #[arg(
        long,
        default_value_t = Throughput::default().line_len,
        value_parser = clap::value_parser!(u64).range(2..=65536)
    )]
    line_len: u64,
    /// Start: number of sequential jobs (each of `true`, then each of `echo`).
    #[arg(long, default_value_t = Start::default().jobs)]
    start_jobs: usize,
    /// Concurrency: job counts to run at once, one round each [default: 100,500 locally,
    /// 50,200 on Kubernetes].
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Concurrency: seconds each job sleeps.
    #[arg(long, default_value_t = Concurrency::DEFAULT_SLEEP_SECS)]
    concurrency_sleep: u32,
    /// Dispatch: number of `true` jobs.
    #[arg(long, default_value_t = Dispatch::default().jobs)]
    dispatch_jobs: usize,
    /// Dispatch: jobs in flight at once.
    #[arg(long, default_value_t = Dispatch::default().parallel)]
    dispatch_parallel: usize,
}

impl BenchArgs {
    /// The run these flags ask for; `command_line` goes into the report.
    fn into_config(self, command_line: Vec<String>) -> anyhow::Result<BenchConfig> {
        let scenarios = self.selected()?;
        let target = match self.provider {
            Provider::Local => TargetConfig::Local,
            Provider::Kubernetes => TargetConfig::Kubernetes(Kubernetes {
                namespace: self.k8s_namespace,
                server_kubeconfig: self.k8s_server_kubeconfig,
                worker_image: self.k8s_worker_image,
                baseline_image: self.k8s_baseline_image,
                bench_bin: self.k8s_bench_bin,
                expose: self.k8s_expose,
                api_writes_per_second: self.k8s_api_writes_per_second,
            }),
        };
        let mut concurrency = Concurrency::for_provider(self.provider);
        if !self.concurrency.is_empty() {
            concurrency.rounds = self.concurrency;
        }
        concurrency.sleep_secs = self.concurrency_sleep;
        Ok(BenchConfig {
            scenarios,
            target,
            server_bin: self.server_bin,
            worker_bin: self.worker_bin,
            report: self.out,
            command_line,
            latency: Latency {
                rate: self.latency_rate,
                count: self.latency_count,
            },
            throughput: Throughput {
                mib: self.throughput_mib,
                line_len: self.line_len,
            },
            start: Start {
                jobs: self.start_jobs,
            },
            concurrency,
            dispatch: Dispatch {
                jobs: self.dispatch_jobs,
                parallel: self.dispatch_parallel,
            },
        })
    }

    /// The scenarios asked for, in run order; by default all that the provider supports.
    fn selected(&self) -> anyhow::Result<Vec<Scenario>> {
        if let Some(unsupported) = self.scenarios.iter().find(|s| !s.runs_on(self.provider)) {
            anyhow::bail!(
                "--scenario {}: runs on the local provider only",
                unsupported.name()
            );
        }
        Ok(Scenario::ALL
            .into_iter()
            .filter(|s| {
                if self.scenarios.is_empty() {
                    s.runs_on(self.provider)
                } else {
                    self.scenarios.contains(s)
                }
            })
            .collect())
    }
}

/// Parses the command line and runs it.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Emit(args)) => crate::emit::run(&args),
        Some(Command::Abuse(args)) => args.run(),
        None => cli
            .bench
            .into_config(std::env::args().collect())
            .and_then(|config| crate::runner::run(&config)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("hodei-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(flags: &[&str]) -> anyhow::Result<BenchConfig> {
        let argv = std::iter::once("hodei-bench").chain(flags.iter().copied());
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        cli.bench.into_config(Vec::new())
    }

    #[test]
    fn kubernetes_runs_the_pod_scenarios_with_cluster_sized_rounds() {
        let k8s = config(&["--provider", "kubernetes"]).expect("defaults are supported");
        assert_eq!(
            k8s.scenarios,
            [
                Scenario::Latency,
                Scenario::Throughput,
                Scenario::Start,
                Scenario::Concurrency
            ]
        );
        assert_eq!(k8s.concurrency.rounds, [50, 200]);
        assert_eq!(k8s.target, TargetConfig::Kubernetes(Kubernetes::default()));
        let local = config(&[]).expect("all");
        assert_eq!(local.scenarios.len(), 6);
        assert_eq!(local.concurrency.rounds, [100, 500]);
        assert_eq!(
            config(&["--concurrency", "7"]).expect("local").concurrency,
            Concurrency {
                rounds: vec![7],
                sleep_secs: 1
            }
        );
    }

    #[test]
    fn a_local_only_scenario_on_kubernetes_is_refused_by_name() {
        let error = config(&["--provider", "kubernetes", "--scenario", "latency,dispatch"])
            .expect_err("dispatch needs worker processes");
        assert!(error.to_string().contains("--scenario dispatch"), "{error}");
    }

    #[test]
    fn every_flag_lands_in_its_scenario() {
        let config = config(&[
            "--scenario",
            "dispatch,latency",
            "--latency-rate",
            "5",
            "--latency-count",
            "6",
            "--throughput-mib",
            "7",
            "--line-len",
            "8",
            "--start-jobs",
            "9",
            "--concurrency-sleep",
            "10",
            "--dispatch-jobs",
            "11",
            "--dispatch-parallel",
            "12",
            "--out",
            "r.json",
        ])
        .expect("valid");
        assert_eq!(config.scenarios, [Scenario::Latency, Scenario::Dispatch]);
        assert_eq!(config.latency, Latency { rate: 5, count: 6 });
        assert_eq!(
            config.throughput,
            Throughput {
                mib: 7,
                line_len: 8
            }
        );
        assert_eq!(config.start, Start { jobs: 9 });
        assert_eq!(config.concurrency.sleep_secs, 10);
        assert_eq!(
            config.dispatch,
            Dispatch {
                jobs: 11,
                parallel: 12
            }
        );
        assert_eq!(config.report, PathBuf::from("r.json"));
        assert_eq!(config.target, TargetConfig::Local);
    }

    #[test]
    fn abuse_flags_default_to_the_abuse_config_and_scale_it() {
        let abuse = |flags: &[&str]| {
            let argv = ["hodei-bench", "abuse"]
                .into_iter()
                .chain(flags.iter().copied());
            match Cli::try_parse_from(argv).expect("flags parse").command {
                Some(Command::Abuse(args)) => args,
                other => panic!("not abuse: {other:?}"),
            }
        };
        let defaults = abuse(&[]);
        assert_eq!(defaults.followers, AbuseConfig::default().followers);
        assert_eq!(defaults.jobs, AbuseConfig::default().jobs);
        assert_eq!(defaults.output_mib, AbuseConfig::default().output_mib);
        let scaled = abuse(&["--followers", "10", "--jobs", "5", "--follow-connections=3"]);
        assert_eq!(
            (scaled.followers, scaled.jobs, scaled.follow_connections),
            (10, 5, 3)
        );
    }

    #[test]
    fn the_flag_defaults_are_the_config_defaults() {
        let config = config(&[]).expect("defaults");
        assert_eq!(config.latency, Latency::default());
        assert_eq!(config.throughput, Throughput::default());
        assert_eq!(config.start, Start::default());
        assert_eq!(config.dispatch, Dispatch::default());
        assert_eq!(
            config.concurrency,
            Concurrency::for_provider(Provider::Local)
        );
        assert_eq!(config.report, PathBuf::from(DEFAULT_REPORT));
    }
}
