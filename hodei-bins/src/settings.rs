//! Settings shared by the binaries: server flags and env vars, paths, signals.

mod auth;
mod kubernetes;
mod limits;
mod parse;
mod retention;
mod retry;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use clap::{Args, ValueEnum};
use hodei_core::{
    HodeiServer, LocalProvider, Provider, ServerError, ValidationError,
    auth::Authenticator,
    controller::{self, ControllerConfig},
    provider::{RunAs, RunAsError},
    server::{DEFAULT_LISTEN_ADDR, DEFAULT_WORKER_LISTEN_ADDR, Protection, TlsFiles},
};

pub use self::{
    auth::AuthArgs,
    kubernetes::KubernetesArgs,
    limits::LimitArgs,
    parse::{duration as parse_duration, parse},
    retention::RetentionArgs,
    retry::RetryArgs,
};

/// Env var naming the `hodei-worker-bin` the local provider runs.
pub const ENV_WORKER_BIN: &str = "HODEI_WORKER_BIN";
const WORKER_BIN_NAME: &str = "hodei-worker-bin";

/// The user local jobs of a server running as root run as, unless `HODEI_LOCAL_RUN_AS`
/// names another.
pub const DEFAULT_RUN_AS_FOR_ROOT: &str = "nobody";

/// Server settings; every flag can also come from its `HODEI_*` variable.
#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// Address of the job API (clients).
    #[arg(long, env = "HODEI_LISTEN_ADDR", default_value_t = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
    /// Address of the worker API (workers).
    #[arg(long, env = "HODEI_WORKER_LISTEN_ADDR", default_value_t = DEFAULT_WORKER_LISTEN_ADDR)]
    pub worker_listen_addr: SocketAddr,
    /// The server's TLS certificate chain (PEM file); TLS on both listeners when set.
    #[arg(long, env = "HODEI_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of HODEI_TLS_CERT (PEM file).
    #[arg(long, env = "HODEI_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM file) that signs client certificates; callers may then authenticate
    /// with one.
    #[arg(long, env = "HODEI_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// CA bundle (PEM file) local workers verify this server's certificate with.
    #[arg(long, env = "HODEI_LOCAL_SERVER_CA")]
    pub local_server_ca: Option<PathBuf>,
    /// Serve gRPC reflection on the job API.
    #[arg(long, env = "HODEI_REFLECTION", default_value_t = false, action = clap::ArgAction::Set,
        value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse::switch)]
    pub reflection: bool,
    /// Serve off loopback without TLS or caller authentication (never in production).
    #[arg(long, env = "HODEI_INSECURE", default_value_t = false, action = clap::ArgAction::Set,
        value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", value_parser = parse::switch)]
    pub insecure: bool,
    /// Where jobs and logs are kept [default: the user's data dir + /hodei].
    #[arg(long, env = "HODEI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address workers dial to reach this server [default: http://LISTEN_IP:PORT].
    #[arg(long, env = "HODEI_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,
    /// Run jobs as local processes.
    #[arg(long, env = "HODEI_LOCAL_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub local_enabled: bool,
    /// Most local workers at once.
    #[arg(long, env = "HODEI_LOCAL_MAX_WORKERS", default_value_t = 256)]
    pub local_max_workers: usize,
    /// The `hodei-worker-bin` local workers run [default: next to this program, then PATH].
    #[arg(long, env = ENV_WORKER_BIN)]
    pub worker_bin: Option<PathBuf>,
    /// User (name or uid) local workers and their jobs run as, or a uid range FIRST-LAST
    /// to give each worker a uid of its own [default: nobody when the server runs as
    /// root, else the server's user].
    #[arg(long, env = "HODEI_LOCAL_RUN_AS")]
    pub local_run_as: Option<String>,
    /// How often workers send heartbeats.
    #[arg(long, env = "HODEI_HEARTBEAT_INTERVAL", value_parser = parse::duration,
        default_value_t = controller::DEFAULT_HEARTBEAT_INTERVAL.into())]
    pub heartbeat_interval: humantime::Duration,
    /// Silence after which a worker counts as lost.
    #[arg(long, env = "HODEI_HEARTBEAT_TIMEOUT", value_parser = parse::duration,
        default_value_t = controller::DEFAULT_HEARTBEAT_TIMEOUT.into())]
    pub heartbeat_timeout: humantime::Duration,
    /// How long a running job waits for its worker to re-attach after its stream broke.
    #[arg(long, env = "HODEI_RECONNECT_WINDOW", value_parser = parse::duration,
        default_value_t = controller::DEFAULT_RECONNECT_WINDOW.into())]
    pub reconnect_window: humantime::Duration,
    /// What SIGTERM does to running jobs: `hold` leaves them running (local workers
    /// outlive the server) and the next server process adopts them; `stop` stops them
    /// all, and local workers end with the server.
    #[arg(long, env = "HODEI_ON_SHUTDOWN", value_enum, default_value_t = OnShutdown::Hold)]
    pub on_shutdown: OnShutdown,
    /// Time between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, env = "HODEI_KILL_GRACE", value_parser = parse::duration,
        default_value_t = controller::DEFAULT_KILL_GRACE.into())]
    pub kill_grace: humantime::Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics; off unless set.
    #[arg(long, env = "HODEI_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How often workers the server does not know are removed.
    #[arg(long, env = "HODEI_SWEEP_INTERVAL", value_parser = parse::duration,
        default_value_t = controller::DEFAULT_SWEEP_INTERVAL.into())]
    pub sweep_interval: humantime::Duration,
    /// Limits on input and resources.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Which finished jobs are kept.
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// When failed jobs run again.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// What a server's shutdown does to its running jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnShutdown {
    /// Jobs keep running; the next server process adopts them.
    Hold,
    /// Every job is stopped and fails `ServerRestarted`.
    Stop,
}

impl OnShutdown {
    fn mode(self) -> controller::ShutdownMode {
        match self {
            Self::Hold => controller::ShutdownMode::HoldJobs,
            Self::Stop => controller::ShutdownMode::StopJobs,
        }
    }
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The worker binary was not found.
    #[error("cannot find {WORKER_BIN_NAME} next to this program or in PATH; set {ENV_WORKER_BIN}")]
    WorkerBinNotFound,
    /// No data directory could be chosen.
    #[error("cannot choose a data directory; set HODEI_DATA_DIR")]
    NoDataDir,
    /// No provider is enabled.
    #[error("no provider is enabled; set HODEI_LOCAL_ENABLED=true or enable another provider")]
    NoProvider,
    /// A setting is invalid; the error names its variable.
    #[error(transparent)]
    Invalid(ValidationError),
    /// The user to run local workers as cannot be used; the error names its variable.
    #[error(transparent)]
    RunAs(#[from] RunAsError),
    /// Only a server running as root can run jobs as another user.
    #[error("HODEI_LOCAL_RUN_AS={0}: only a server running as root can run jobs as another user")]
    RunAsNeedsRoot(String),
    /// The Kubernetes provider could not start.
    #[cfg(feature = "kubernetes")]
    #[error("the Kubernetes provider cannot start")]
    Kubernetes(#[source] hodei_core::provider::kubernetes::KubernetesError),
    /// The Kubernetes provider is enabled in a build without it.
    #[cfg(not(feature = "kubernetes"))]
    #[error(
        "HODEI_KUBERNETES_ENABLED is set but this build has no Kubernetes support (feature `kubernetes`)"
    )]
    NoKubernetesSupport,
    /// A listener off loopback lacks TLS or caller authentication.
    #[error("refusing to serve: {0}; {how}; or listen on 127.0.0.1, or set HODEI_INSECURE=1 to serve unprotected anyway", how = how_to_protect(.0))]
    Unprotected(hodei_core::server::Unprotected),
    /// Another server holds the data directory; the error names it.
    #[error(
        "{0}; stop that server first, or give this one a data directory of its own (HODEI_DATA_DIR)"
    )]
    DataDirInUse(ServerError),
    /// The server could not start.
    #[error(transparent)]
    Server(ServerError),
    /// Authentication could not be set up (e.g. a bad HODEI_AUTH_TOKENS_FILE).
    #[error(transparent)]
    Auth(hodei_core::auth::AuthSetupError),
    /// Kubernetes authentication (HODEI_AUTH_KUBERNETES) could not reach the cluster.
    #[cfg(feature = "kubernetes")]
    #[error("HODEI_AUTH_KUBERNETES is set but no Kubernetes client can be made")]
    KubernetesAuth(#[source] hodei_core::provider::kubernetes::KubernetesError),
}

/// The settings that supply what an unprotected listener lacks.
fn how_to_protect(unprotected: &hodei_core::server::Unprotected) -> String {
    unprotected
        .missing
        .iter()
        .map(|missing| match missing {
            Protection::Tls => "set HODEI_TLS_CERT and HODEI_TLS_KEY",
            Protection::CallerAuthentication => {
                "authenticate callers with HODEI_AUTH_TOKENS_FILE, HODEI_AUTH_KUBERNETES=1 or HODEI_TLS_CLIENT_CA"
            }
        })
        .collect::<Vec<_>>()
        .join(", and ")
}

impl From<ServerError> for SettingsError {
    fn from(error: ServerError) -> Self {
        match error {
            ServerError::Unprotected(unprotected) => Self::Unprotected(unprotected),
            in_use @ ServerError::DataDirInUse { .. } => Self::DataDirInUse(in_use),
            other => Self::Server(other),
        }
    }
}

impl ServerSettings {
    /// TLS for both listeners, when a certificate is set.
    #[must_use]
    pub fn tls(&self) -> Option<TlsFiles> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return None;
        };
        let files = TlsFiles::new(cert, key);
        Some(match &self.tls_client_ca {
            Some(ca) => files.client_ca(ca),
            None => files,
        })
    }

    /// The data directory to use.
    pub fn data_dir(&self) -> Result<PathBuf, SettingsError> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => default_data_dir(),
        }
    }

    /// A standalone server running as root runs local jobs as [`DEFAULT_RUN_AS_FOR_ROOT`]
    /// unless `HODEI_LOCAL_RUN_AS` names a user.
    pub fn run_jobs_unprivileged_when_root(&mut self) {
        if self.local_run_as.is_none() && nix::unistd::geteuid().is_root() {
            self.local_run_as = Some(DEFAULT_RUN_AS_FOR_ROOT.to_owned());
        }
    }

    /// Starts a server with these settings: `preferred` providers first, then the local
    /// provider if enabled; `auth` decides who may call the job API.
    pub async fn start(
        &self,
        preferred: Vec<Arc<dyn Provider>>,
        auth: Authenticator,
    ) -> Result<HodeiServer, SettingsError> {
        let mut builder = HodeiServer::builder(self.data_dir()?)
            .auth(auth)
            .listen_addr(self.listen_addr)
            .worker_listen_addr(self.worker_listen_addr)
            .maybe_tls(self.tls())
            .reflection(self.reflection)
            .insecure(self.insecure)
            .grpc_limits(self.limits.grpc_limits())
            .follow_limits(self.limits.follow_limits())
            .maybe_advertise_address(self.advertise_address.clone())
            .controller(self.limits.apply(ControllerConfig {
                heartbeat_interval: self.heartbeat_interval.into(),
                heartbeat_timeout: self.heartbeat_timeout.into(),
                reconnect_window: self.reconnect_window.into(),
                on_shutdown: self.on_shutdown.mode(),
                kill_grace: self.kill_grace.into(),
                sweep_interval: self.sweep_interval.into(),
                retention: self.retention.policy(),
                retry: self.retry.settings(),
                ..ControllerConfig::default()
            }));
        let has_preferred = !preferred.is_empty();
        for provider in preferred {
            builder = builder.shared_provider(provider);
        }
        if self.local_enabled {
            let worker_bin = match &self.worker_bin {
                Some(path) => path.clone(),
                None => find_worker_bin().ok_or(SettingsError::WorkerBinNotFound)?,
            };
            let run_as = self.local_run_as.as_deref().map(RunAs::parse).transpose()?;
            if let Some(run_as) = &run_as {
                let me = nix::unistd::geteuid();
                if !me.is_root() && !run_as.is_only(me.as_raw()) {
                    return Err(SettingsError::RunAsNeedsRoot(run_as.to_string()));
                }
                tracing::info!(%run_as, "local workers and their jobs run as this user");
            }
            // Jobs of this user (the default, and always with `hodei --embedded`) must
            // not read this process's environment or memory through /proc or ptrace.
            if let Err(error) = nix::sys::prctl::set_dumpable(false) {
                tracing::warn!(%error, "cannot hide the server's memory from its local jobs");
            }
            builder = builder.provider(
                LocalProvider::builder(worker_bin)
                    .max_workers(self.local_max_workers)
                    .maybe_run_as(run_as)
                    .maybe_server_ca(self.local_server_ca.clone())
                    .outlive_server(self.on_shutdown == OnShutdown::Hold)
                    .build(),
            );
        } else if !has_preferred {
            return Err(SettingsError::NoProvider);
        }
        Ok(builder.start().await?)
    }
}

/// The user's data directory for Hodei.
pub fn default_data_dir() -> Result<PathBuf, SettingsError> {
    dirs::data_local_dir()
        .map(|d| d.join("hodei"))
        .ok_or(SettingsError::NoDataDir)
}

/// `hodei-worker-bin` next to the running program, else in PATH.
#[must_use]
pub fn find_worker_bin() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(WORKER_BIN_NAME)))
        .filter(|p| p.is_file());
    beside.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(WORKER_BIN_NAME))
                .find(|p| p.is_file())
        })
    })
}

/// Completes on SIGTERM or SIGINT.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use hodei_core::server::Unprotected;

    use super::*;

    #[test]
    fn an_unprotected_listener_is_told_only_what_it_lacks() {
        let refusal = |missing: Vec<Protection>| {
            SettingsError::Unprotected(Unprotected {
                addr: "0.0.0.0:50052".parse().unwrap(),
                missing,
            })
            .to_string()
        };
        let tls_only = refusal(vec![Protection::Tls]);
        assert!(
            tls_only.contains("HODEI_TLS_CERT and HODEI_TLS_KEY"),
            "{tls_only}"
        );
        assert!(!tls_only.contains("HODEI_AUTH_TOKENS_FILE"), "{tls_only}");
        assert!(tls_only.contains("HODEI_INSECURE=1"), "{tls_only}");
        let auth_only = refusal(vec![Protection::CallerAuthentication]);
        assert!(auth_only.contains("HODEI_AUTH_KUBERNETES=1"), "{auth_only}");
        assert!(!auth_only.contains("HODEI_TLS_KEY"), "{auth_only}");
        assert_eq!(auth_only.lines().count(), 1);
    }
}
