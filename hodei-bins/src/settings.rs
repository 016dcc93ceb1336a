//! Settings shared by the binaries: server flags and env vars, paths, signals.

mod auth;
mod kubernetes;
mod parse;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use clap::Args;
use hodei_core::{
    HodeiServer, LocalProvider, Provider, ServerError, ValidationError,
    auth::Authenticator,
    controller::{self, ControllerConfig},
    server::DEFAULT_LISTEN_ADDR,
};

pub use self::{auth::AuthArgs, kubernetes::KubernetesArgs, parse::parse};

/// Env var naming the `hodei-worker-bin` the local provider runs.
pub const ENV_WORKER_BIN: &str = "HODEI_WORKER_BIN";
const WORKER_BIN_NAME: &str = "hodei-worker-bin";

/// Server settings; every flag can also come from its `HODEI_*` variable.
#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    /// Address to listen on.
    #[arg(long, env = "HODEI_LISTEN_ADDR", default_value_t = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
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
    /// How often workers send heartbeats.
    #[arg(long, env = "HODEI_HEARTBEAT_INTERVAL", value_parser = parse::duration,
        default_value_t = controller::DEFAULT_HEARTBEAT_INTERVAL.into())]
    pub heartbeat_interval: humantime::Duration,
    /// Silence after which a worker counts as lost.
    #[arg(long, env = "HODEI_HEARTBEAT_TIMEOUT", value_parser = parse::duration,
        default_value_t = controller::DEFAULT_HEARTBEAT_TIMEOUT.into())]
    pub heartbeat_timeout: humantime::Duration,
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
    /// The server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Authentication could not be set up (e.g. a bad HODEI_AUTH_TOKENS_FILE).
    #[error(transparent)]
    Auth(hodei_core::auth::AuthSetupError),
    /// Kubernetes authentication (HODEI_AUTH_KUBERNETES) could not reach the cluster.
    #[cfg(feature = "kubernetes")]
    #[error("HODEI_AUTH_KUBERNETES is set but no Kubernetes client can be made")]
    KubernetesAuth(#[source] hodei_core::provider::kubernetes::KubernetesError),
}

impl ServerSettings {
    /// The data directory to use.
    pub fn data_dir(&self) -> Result<PathBuf, SettingsError> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => default_data_dir(),
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
            .maybe_advertise_address(self.advertise_address.clone())
            .controller(ControllerConfig {
                heartbeat_interval: self.heartbeat_interval.into(),
                heartbeat_timeout: self.heartbeat_timeout.into(),
                kill_grace: self.kill_grace.into(),
                sweep_interval: self.sweep_interval.into(),
                ..ControllerConfig::default()
            });
        let has_preferred = !preferred.is_empty();
        for provider in preferred {
            builder = builder.shared_provider(provider);
        }
        if self.local_enabled {
            let worker_bin = match &self.worker_bin {
                Some(path) => path.clone(),
                None => find_worker_bin().ok_or(SettingsError::WorkerBinNotFound)?,
            };
            builder = builder.provider(
                LocalProvider::builder(worker_bin)
                    .max_workers(self.local_max_workers)
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
