//! The gRPC server: job and worker services, health and reflection, over one listener.

mod job_service;
mod worker_service;

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use hodei_proto::v1::{
    job_service_server::JobServiceServer, worker_service_server::WorkerServiceServer,
};
pub use job_service::{AUDIT_TARGET, JobApi};
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tracing::info;
pub use worker_service::WorkerApi;

use crate::{
    auth::Authenticator,
    controller::{ControllerConfig, JobController},
    logs::LogHub,
    provider::{Provider, ProviderRegistry},
    store::{JobStore, SqliteStore, StoreError},
};

/// Default address the server listens on.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 50051);

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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// gRPC reflection could not be set up.
    #[error("setting up gRPC reflection failed")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("the gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
}

/// A Hodei Jobs server: bound, recovered and ready to serve.
#[derive(Debug)]
pub struct HodeiServer {
    controller: JobController,
    listener: TcpListener,
    local_addr: SocketAddr,
    auth: Authenticator,
}

#[bon::bon]
impl HodeiServer {
    /// Binds the listener, opens the store under `data_dir`, marks jobs interrupted by a
    /// previous stop as failed, and starts the controller.
    #[builder(finish_fn = start)]
    pub async fn new(
        /// Where jobs and logs are kept.
        #[builder(start_fn, into)]
        data_dir: PathBuf,
        /// Providers in preference order.
        #[builder(field)]
        providers: Vec<Arc<dyn Provider>>,
        /// Address to listen on. Port 0 picks a free port.
        #[builder(default = DEFAULT_LISTEN_ADDR)]
        listen_addr: SocketAddr,
        /// Address workers dial; default `http://<listen ip>:<port>` with 127.0.0.1 for
        /// an unspecified ip. It replaces the `advertise_address` of `controller`.
        #[builder(into)]
        advertise_address: Option<String>,
        /// Timing of the job lifecycle: heartbeats, deadlines, graces, sweeps.
        #[builder(default)]
        controller: ControllerConfig,
        /// A store other than the embedded SQLite one under `data_dir`.
        store: Option<Arc<dyn JobStore>>,
        /// Who may call the job API; default open (every caller is an anonymous admin).
        #[builder(default)]
        auth: Authenticator,
    ) -> Result<Self, ServerError> {
        if providers.is_empty() {
            return Err(ServerError::NoProvider);
        }
        let listener =
            TcpListener::bind(listen_addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: listen_addr,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: listen_addr,
            source,
        })?;
        let advertise_address = advertise_address.unwrap_or_else(|| advertise_for(local_addr));
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
            listener,
            local_addr,
            auth,
        })
    }

    /// The address actually bound (useful with port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The controller, for host programs that submit jobs in-process.
    #[must_use]
    pub fn controller(&self) -> &JobController {
        &self.controller
    }

    /// Serves until `shutdown` completes, then stops active jobs and removes their workers.
    pub async fn serve_with_shutdown(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hodei_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let jobs = JobServiceServer::new(JobApi::new(self.controller.clone(), self.auth.clone()));
        let workers = WorkerServiceServer::new(WorkerApi::new(self.controller.clone()));
        health.set_serving::<JobServiceServer<JobApi>>().await;
        health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
        info!(addr = %self.local_addr, providers = ?self.controller.providers().all().iter().map(|p| p.name()).collect::<Vec<_>>(), "serving");
        let controller = self.controller.clone();
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(jobs)
            .add_service(workers)
            // Our own listener bypasses tonic's tcp_nodelay setting; set it on each accepted
            // socket, or small messages wait for delayed ACKs (about 40 ms each).
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                async move {
                    shutdown.await;
                    info!("shutting down: stopping active jobs");
                    // Health tells load balancers the truth from the first moment of the drain.
                    health
                        .set_service_status("", ServingStatus::NotServing)
                        .await;
                    health.set_not_serving::<JobServiceServer<JobApi>>().await;
                    health
                        .set_not_serving::<WorkerServiceServer<WorkerApi>>()
                        .await;
                    controller.shutdown(Duration::from_secs(30)).await;
                },
            )
            .await?;
        Ok(())
    }
}

/// The address workers on this host dial to reach a server bound to `addr`.
fn advertise_for(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    format!("http://{ip}:{}", addr.port())
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
    fn the_default_advertise_address_is_that_of_the_default_listen_address() {
        assert_eq!(
            advertise_for(DEFAULT_LISTEN_ADDR),
            DEFAULT_ADVERTISE_ADDRESS
        );
        assert_eq!(
            advertise_for("10.0.0.7:7000".parse().unwrap()),
            "http://10.0.0.7:7000"
        );
    }
}
