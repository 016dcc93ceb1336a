//! What a benchmark run measures and how big: plain values with defaults, filled from
//! the command line in `cli` and read by the runner and the scenarios, which never see
//! the flags.

use std::path::PathBuf;

/// Where the report goes unless told otherwise.
pub const DEFAULT_REPORT: &str = "target/bench-report.json";

/// One benchmark scenario; [`Scenario::about`] says what it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Idle,
    Latency,
    Throughput,
    Start,
    Concurrency,
    Dispatch,
}

impl Scenario {
    /// Every scenario, in the order a run takes them.
    pub const ALL: [Self; 6] = [
        Self::Idle,
        Self::Latency,
        Self::Throughput,
        Self::Start,
        Self::Concurrency,
        Self::Dispatch,
    ];

    /// Its name in flags and reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Latency => "latency",
            Self::Throughput => "throughput",
            Self::Start => "start",
            Self::Concurrency => "concurrency",
            Self::Dispatch => "dispatch",
        }
    }

    /// What it measures, in one line.
    #[must_use]
    pub fn about(self) -> &'static str {
        match self {
            Self::Idle => "Server and worker memory at idle, and binary sizes",
            Self::Latency => "Write-to-client delay of output lines written at a steady rate",
            Self::Throughput => "Bytes per second of one job writing as fast as it can",
            Self::Start => "Submit to provisioning, running, terminal and first output",
            Self::Concurrency => "Many `sleep` jobs at once: wall time, server memory and CPU",
            Self::Dispatch => "Many `true` jobs a few at a time against direct spawns",
        }
    }

    /// Whether it runs on `provider`: idle footprint and dispatch overhead measure worker
    /// processes of the server itself.
    #[must_use]
    pub fn runs_on(self, provider: Provider) -> bool {
        provider == Provider::Local || !matches!(self, Self::Idle | Self::Dispatch)
    }
}

/// Where the benchmark jobs run; [`Provider::about`] says how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Local,
    Kubernetes,
}

impl Provider {
    /// Both providers.
    pub const ALL: [Self; 2] = [Self::Local, Self::Kubernetes];

    /// Its name in flags and reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Kubernetes => "kubernetes",
        }
    }

    /// What it is, in one line.
    #[must_use]
    pub fn about(self) -> &'static str {
        match self {
            Self::Local => "Worker processes on this machine (the server's local provider)",
            Self::Kubernetes => {
                "Worker pods in a Kubernetes namespace (the server's Kubernetes provider)"
            }
        }
    }
}

/// A whole run: which scenarios, where, and each scenario's parameters.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The scenarios to run, in order; each runs on the target's provider.
    pub scenarios: Vec<Scenario>,
    /// Where jobs run.
    pub target: TargetConfig,
    /// The hodei-server-bin to measure; `None`: next to this program.
    pub server_bin: Option<PathBuf>,
    /// The hodei-worker-bin the server runs; `None`: next to this program.
    pub worker_bin: Option<PathBuf>,
    /// Where to write the JSON report.
    pub report: PathBuf,
    /// The command line, recorded in the report.
    pub command_line: Vec<String>,
    /// The latency scenario.
    pub latency: Latency,
    /// The throughput scenario.
    pub throughput: Throughput,
    /// The start scenario.
    pub start: Start,
    /// The concurrency scenario.
    pub concurrency: Concurrency,
    /// The dispatch scenario.
    pub dispatch: Dispatch,
}

/// Where the benchmark jobs run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetConfig {
    /// The server's local provider.
    Local,
    /// The server's Kubernetes provider, in a prepared namespace.
    Kubernetes(Kubernetes),
}

impl TargetConfig {
    /// The provider it selects.
    #[must_use]
    pub fn provider(&self) -> Provider {
        match self {
            Self::Local => Provider::Local,
            Self::Kubernetes(_) => Provider::Kubernetes,
        }
    }
}

/// A cluster prepared for Hodei Jobs (namespace, accounts, quota).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// The worker namespace.
    pub namespace: String,
    /// The kubeconfig the server uses; `None` leaves it to KUBECONFIG.
    pub server_kubeconfig: Option<PathBuf>,
    /// The worker image of job pods; it must hold `bench_bin`.
    pub worker_image: String,
    /// An image with a POSIX shell at `/bin/sh`, for baseline pods.
    pub baseline_image: String,
    /// Where `hodei-bench` is inside the worker image: the command of output jobs.
    pub bench_bin: String,
    /// A program that makes a loopback port reachable from pods and prints the URL they
    /// dial (the local cluster's `scripts/cluster/expose-to-pods.sh`); `None`: pods dial
    /// the server on 127.0.0.1, which works only when they share this machine's network.
    pub expose: Option<PathBuf>,
    /// The server's HODEI_K8S_API_WRITES_PER_SECOND; `None` keeps its default.
    pub api_writes_per_second: Option<u32>,
}

impl Kubernetes {
    /// The image `scripts/build-images.sh bench` builds: the worker image plus
    /// `hodei-bench` at [`Self::DEFAULT_BENCH_BIN`].
    pub const DEFAULT_IMAGE: &str = concat!("hodei-worker-bench:", env!("CARGO_PKG_VERSION"));
    /// Where that image holds `hodei-bench`.
    pub const DEFAULT_BENCH_BIN: &str = "/usr/local/bin/hodei-bench";
}

impl Default for Kubernetes {
    fn default() -> Self {
        Self {
            namespace: "hodei-jobs-workers".to_owned(),
            server_kubeconfig: None,
            worker_image: Self::DEFAULT_IMAGE.to_owned(),
            baseline_image: Self::DEFAULT_IMAGE.to_owned(),
            bench_bin: Self::DEFAULT_BENCH_BIN.to_owned(),
            expose: None,
            api_writes_per_second: None,
        }
    }
}

/// Output latency: a job writes timestamped lines at a steady rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Lines per second.
    pub rate: u32,
    /// Number of lines.
    pub count: u32,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            rate: 200,
            count: 1000,
        }
    }
}

/// Throughput: one job writes bulk lines as fast as it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throughput {
    /// MiB the job writes.
    pub mib: u64,
    /// Bytes per line, newline included (2 to 65536).
    pub line_len: u64,
}

impl Default for Throughput {
    fn default() -> Self {
        Self {
            mib: 256,
            line_len: 100,
        }
    }
}

/// Start latency: sequential jobs, each timed per phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Number of sequential jobs (locally each of `true`, then each of `echo`).
    pub jobs: usize,
}

impl Default for Start {
    fn default() -> Self {
        Self { jobs: 50 }
    }
}

/// Concurrency: many `sleep` jobs at once, one round per job count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concurrency {
    /// Job counts to run at once, one round each, each on a fresh server.
    pub rounds: Vec<usize>,
    /// Seconds each job sleeps.
    pub sleep_secs: u32,
}

impl Concurrency {
    /// Seconds each job sleeps unless told otherwise.
    pub const DEFAULT_SLEEP_SECS: u32 = 1;

    /// The default for `provider`: a cluster's namespace quota holds fewer pods than a
    /// machine holds processes.
    #[must_use]
    pub fn for_provider(provider: Provider) -> Self {
        let rounds = match provider {
            Provider::Local => vec![100, 500],
            Provider::Kubernetes => vec![50, 200],
        };
        Self {
            rounds,
            sleep_secs: Self::DEFAULT_SLEEP_SECS,
        }
    }
}

/// Dispatch overhead: many `true` jobs, a few at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dispatch {
    /// Number of jobs.
    pub jobs: usize,
    /// Jobs in flight at once (at least 1).
    pub parallel: usize,
}

impl Default for Dispatch {
    fn default() -> Self {
        Self {
            jobs: 200,
            parallel: 8,
        }
    }
}
