//! The gRPC server: the job API and the worker API on listeners of their own, each with
//! gRPC health, TLS when configured, transport limits, and reflection on the job API when
//! asked for.

mod data_dir_lock;
mod disk_health;
mod exposure;
mod follow;
mod follow_stream;
mod followers;
mod grpc_limits;
mod job_service;
mod list_budget;
mod store_health;
mod tls;
mod worker_service;

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use data_dir_lock::DataDirLock;
pub use data_dir_lock::{LOCK_FILE, LockHolder};
pub use disk_health::DISK_HEALTH_SERVICE;
pub use exposure::{Protection, Unprotected};
pub use followers::{FollowLimitError, FollowLimits};
pub use grpc_limits::{
    GrpcLimitError, GrpcLimits, JOB_API_MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES,
    WORKER_API_MAX_MESSAGE_BYTES,
};
use hodei_proto::v1::{
    job_service_server::JobServiceServer, worker_service_server::WorkerServiceServer,
};
pub use job_service::{AUDIT_TARGET, JobApi};
use rustls::ServerConfig;
pub use tls::{TlsError, TlsFiles, client_certificate};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{service::InterceptorLayer, transport::server::Router};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::layer::util::{Identity, Stack};
use tracing::{info, warn};
pub use worker_service::WorkerApi;

use crate::{
    auth::Authenticator,
    controller::{ControllerConfig, JobController},
    logs::LogHub,
    provider::{Provider, ProviderRegistry},
    store::{JobStore, SqliteStore, StoreError},
};

/// Default address of the job API (clients).
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 50051);
/// Default address of the worker API (workers).
pub const DEFAULT_WORKER_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 50052);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No provider was configured.
    #[error("no provider is configured; add at least one (e.g. LocalProvider)")]
    NoProvider,
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be used.
    #[error("cannot use data directory {dir}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another process, or another server in this one, holds the data directory's lock.
    #[error("data directory {} is in use by {holder}", dir.display())]
    DataDirInUse {
        /// The directory.
        dir: PathBuf,
        /// Who holds it, as its lock file says.
        holder: LockHolder,
    },
    /// The lock file of the data directory could not be opened, locked or written.
    #[error("cannot lock the data directory with {}", path.display())]
    LockFile {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// TLS could not be set up.
    #[error("TLS cannot be set up")]
    Tls(#[from] TlsError),
    /// A listener other hosts can reach lacks a protection and `insecure` is not set.
    #[error("refusing to serve: {0}")]
    Unprotected(Unprotected),
    /// A transport limit cannot work.
    #[error(transparent)]
    GrpcLimit(#[from] GrpcLimitError),
    /// A bound of the `FollowJob` streams cannot work.
    #[error(transparent)]
    FollowLimit(#[from] FollowLimitError),
    /// gRPC reflection could not be set up.
    #[error("setting up gRPC reflection failed")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// A Hodei Jobs server: bound, recovered and ready to serve.
///
/// It holds its data directory's lock from [`start`](HodeiServerBuilder::start) until it
/// is dropped or [`serve_with_shutdown`](Self::serve_with_shutdown) has drained it.
#[derive(Debug)]
pub struct HodeiServer {
    controller: JobController,
    data_dir_lock: DataDirLock,
    jobs: Listener,
    workers: Listener,
    tls: Option<Arc<ServerConfig>>,
    reflection: bool,
    auth: Authenticator,
    limits: GrpcLimits,
    follow_limits: FollowLimits,
}

#[derive(Debug)]
struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    async fn bind(addr: SocketAddr) -> Result<Self, ServerError> {
        let bind_error = |source| ServerError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Self { listener, addr })
    }
}

#[bon::bon]
impl HodeiServer {
    /// Checks that the server is protected as far as it is exposed, locks `data_dir`
    /// (refusing with [`ServerError::DataDirInUse`] while another server holds it), binds
    /// both listeners, opens the store under `data_dir`, marks jobs interrupted by a
    /// previous stop as failed, and starts the controller.
    #[builder(finish_fn = start)]
    pub async fn new(
        /// Where jobs and logs are kept.
        #[builder(start_fn, into)]
        data_dir: PathBuf,
        /// Providers in preference order.
        #[builder(field)]
        providers: Vec<Arc<dyn Provider>>,
        /// Address of the job API (clients). Port 0 picks a free port.
        #[builder(default = DEFAULT_LISTEN_ADDR)]
        listen_addr: SocketAddr,
        /// Address of the worker API (workers). Port 0 picks a free port.
        #[builder(default = DEFAULT_WORKER_LISTEN_ADDR)]
        worker_listen_addr: SocketAddr,
        /// Address workers dial; default `http://<worker listen ip>:<port>` (`https://` with
        /// TLS) with 127.0.0.1 for an unspecified ip. It replaces the `advertise_address` of
        /// `controller`.
        #[builder(into)]
        advertise_address: Option<String>,
        /// TLS on both listeners; plaintext when absent.
        tls: Option<TlsFiles>,
        /// Serve gRPC reflection on the job API.
        #[builder(default)]
        reflection: bool,
        /// Serve even when a listener off loopback lacks TLS or the job API lacks caller
        /// authentication; the server then warns and sets the `hodei_insecure` gauge.
        #[builder(default)]
        insecure: bool,
        /// Timing of the job lifecycle: heartbeats, deadlines, graces, sweeps.
        #[builder(default)]
        controller: ControllerConfig,
        /// A store other than the embedded SQLite one under `data_dir`.
        store: Option<Arc<dyn JobStore>>,
        /// Who may call the job API; default open (every caller is an anonymous admin).
        #[builder(default)]
        auth: Authenticator,
        /// Message sizes, HTTP/2 limits and the call deadline of both listeners.
        #[builder(default)]
        grpc_limits: GrpcLimits,
        /// How many `FollowJob` streams may be open, and how long one may stall.
        #[builder(default)]
        follow_limits: FollowLimits,
    ) -> Result<Self, ServerError> {
        if providers.is_empty() {
            return Err(ServerError::NoProvider);
        }
        grpc_limits.validate()?;
        follow_limits.validate()?;
        let exposure = exposure::Exposure {
            job_addr: listen_addr,
            worker_addr: worker_listen_addr,
            tls: tls.is_some(),
            caller_authentication: auth.is_configured(),
        };
        match exposure.check() {
            Ok(()) => crate::observe::insecure(false),
            Err(unprotected) if insecure => {
                warn!(
                    addr = %unprotected.addr,
                    "serving insecurely as asked: {unprotected}; anyone who reaches it can run commands"
                );
                crate::observe::insecure(true);
            }
            Err(unprotected) => return Err(ServerError::Unprotected(unprotected)),
        }
        let tls = tls.as_ref().map(tls::server_config).transpose()?;
        crate::private_fs::create_dir(&data_dir).map_err(|source| ServerError::DataDir {
            dir: data_dir.clone(),
            source,
        })?;
        // Before anything else touches the directory, and before binding, so a second
        // server on the same directory and ports names the directory's holder.
        let data_dir_lock = DataDirLock::acquire(&data_dir)?;
        let jobs = Listener::bind(listen_addr).await?;
        let workers = Listener::bind(worker_listen_addr).await?;
        let advertise_address =
            advertise_address.unwrap_or_else(|| advertise_for(workers.addr, tls.is_some()));
        let store: Arc<dyn JobStore> = match store {
            Some(store) => store,
            None => Arc::new(SqliteStore::open(&data_dir).await?),
        };
        let logs_dir = data_dir.join("logs");
        let logs = Arc::new(
            LogHub::open(&logs_dir).map_err(|source| ServerError::DataDir {
                dir: logs_dir,
                source,
            })?,
        );
        let mut registry = ProviderRegistry::new();
        for provider in providers {
            registry.register(provider);
        }
        let config = ControllerConfig {
            advertise_address,
            ..controller
        };
        let controller = JobController::start(config, store, logs, registry).await?;
        Ok(Self {
            controller,
            data_dir_lock,
            jobs,
            workers,
            tls,
            reflection,
            auth,
            limits: grpc_limits,
            follow_limits,
        })
    }

    /// The address of the job API actually bound (useful with port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.jobs.addr
    }

    /// The address of the worker API actually bound (useful with port 0).
    #[must_use]
    pub fn worker_addr(&self) -> SocketAddr {
        self.workers.addr
    }

    /// The controller, for host programs that submit jobs in-process.
    #[must_use]
    pub fn controller(&self) -> &JobController {
        &self.controller
    }

    /// Serves until `shutdown` completes, then stops active jobs and removes their workers.
    /// Both listeners report NOT_SERVING from the start of the drain; workers can still
    /// report during it.
    pub async fn serve_with_shutdown(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let (job_health, job_health_service) = tonic_health::server::health_reporter();
        let (worker_health, worker_health_service) = tonic_health::server::health_reporter();
        let job_bytes = self.limits.job_api_max_message_bytes;
        let mut job_router = self
            .limits
            .server()
            .layer(connection_layer())
            .add_service(job_health_service)
            .add_service(
                JobServiceServer::new(
                    JobApi::new(self.controller.clone(), self.auth.clone())
                        .with_follow_limits(self.follow_limits)
                        .with_max_message_bytes(job_bytes),
                )
                .max_decoding_message_size(job_bytes)
                .max_encoding_message_size(job_bytes),
            );
        if self.reflection {
            job_router = job_router.add_service(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(hodei_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                    .build_v1()?,
            );
        }
        let worker_bytes = self.limits.worker_api_max_message_bytes;
        let worker_router = self
            .limits
            .server()
            .layer(connection_layer())
            .add_service(worker_health_service)
            .add_service(
                WorkerServiceServer::new(WorkerApi::new(self.controller.clone()))
                    .max_decoding_message_size(worker_bytes)
                    .max_encoding_message_size(worker_bytes),
            );
        job_health.set_serving::<JobServiceServer<JobApi>>().await;
        worker_health
            .set_serving::<WorkerServiceServer<WorkerApi>>()
            .await;
        let disk_health = tokio::spawn(disk_health::report(
            self.controller.disk(),
            job_health.clone(),
        ));
        info!(
            jobs = %self.jobs.addr,
            workers = %self.workers.addr,
            tls = self.tls.is_some(),
            providers = ?self.controller.providers().all().iter().map(|p| p.name()).collect::<Vec<_>>(),
            "serving"
        );
        let stopped = CancellationToken::new();
        let draining = CancellationToken::new();
        tokio::spawn(store_health::follow(
            job_health.clone(),
            self.controller.store_healthy(),
            draining.clone(),
        ));
        let drain = {
            let controller = self.controller.clone();
            let stopped = stopped.clone();
            async move {
                shutdown.await;
                draining.cancel();
                info!("shutting down: stopping active jobs");
                // Health tells load balancers the truth from the first moment of the drain.
                not_serving::<JobServiceServer<JobApi>>(&job_health).await;
                not_serving::<WorkerServiceServer<WorkerApi>>(&worker_health).await;
                controller.shutdown(Duration::from_secs(30)).await;
                stopped.cancel();
            }
        };
        let serve_jobs = serve(
            job_router,
            self.jobs.listener,
            self.tls.clone(),
            stopped.clone(),
        );
        let serve_workers = serve(
            worker_router,
            self.workers.listener,
            self.tls,
            stopped.clone(),
        );
        let served = async {
            let result = tokio::try_join!(serve_jobs, serve_workers);
            // If one listener failed, the other stops too.
            stopped.cancel();
            result
        };
        let ((), result) = tokio::join!(
            async {
                tokio::select! {
                    () = drain => {}
                    () = stopped.cancelled() => {}
                }
            },
            served
        );
        disk_health.abort();
        // Released only now: the drain above has stopped every job that used the store.
        drop(self.data_dir_lock);
        result?;
        Ok(())
    }
}

async fn not_serving<S: tonic::server::NamedService>(health: &HealthReporter) {
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health.set_not_serving::<S>().await;
}

/// The interceptor every request passes first.
type ConnectionInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
type HodeiRouter = Router<Stack<InterceptorLayer<ConnectionInterceptor>, Identity>>;

fn connection_layer() -> InterceptorLayer<ConnectionInterceptor> {
    InterceptorLayer::new(tls::connection_interceptor as ConnectionInterceptor)
}

/// Serves `router` on `listener`, over TLS with `tls`, until `stopped`.
async fn serve(
    router: HodeiRouter,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    stopped: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let signal = stopped.cancelled_owned();
    match tls {
        Some(config) => {
            router
                .serve_with_incoming_shutdown(tls::incoming(listener, config), signal)
                .await
        }
        // Our own listener bypasses tonic's tcp_nodelay setting; set it on each accepted
        // socket, or small messages wait for delayed ACKs (about 40 ms each).
        None => {
            router
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    signal,
                )
                .await
        }
    }
}

/// The address workers on this host dial to reach a worker listener bound to `addr`.
fn advertise_for(addr: SocketAddr, tls: bool) -> String {
    let ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// An error and its causes on one line, each cause once.
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl<S: hodei_server_builder::State> HodeiServerBuilder<S> {
    /// Adds a provider; providers are preferred in the order added.
    pub fn provider(mut self, provider: impl Provider) -> Self {
        self.providers.push(Arc::new(provider));
        self
    }

    /// Adds a provider that is already shared.
    pub fn shared_provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.providers.push(provider);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::DEFAULT_ADVERTISE_ADDRESS;

    #[test]
    fn the_default_advertise_address_is_that_of_the_default_worker_listen_address() {
        assert_eq!(
            advertise_for(DEFAULT_WORKER_LISTEN_ADDR, false),
            DEFAULT_ADVERTISE_ADDRESS
        );
        assert_eq!(
            advertise_for("10.0.0.7:7000".parse().unwrap(), false),
            "http://10.0.0.7:7000"
        );
        assert_eq!(
            advertise_for("[::]:7000".parse().unwrap(), true),
            "https://127.0.0.1:7000"
        );
        assert_eq!(
            advertise_for("[fd00::1]:7000".parse().unwrap(), true),
            "https://[fd00::1]:7000"
        );
    }
}
