//! `hodei-server-bin`: reads flags and `HODEI_*` variables, starts the server, serves
//! until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;

use crate::settings::{AuthArgs, KubernetesArgs, ServerSettings};

/// The Hodei Jobs server.
#[derive(Debug, Parser)]
#[command(name = "hodei-server-bin", version, about)]
struct ServerArgs {
    #[command(flatten)]
    settings: ServerSettings,
    #[command(flatten)]
    kubernetes: KubernetesArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

/// Runs the server until it is told to stop.
#[must_use]
pub fn main() -> ExitCode {
    let args: ServerArgs = crate::settings::parse(std::env::args_os()).unwrap_or_else(|e| e.exit());
    crate::telemetry::init("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hodei-server-bin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %hodei_core::server::error_chain(error.as_ref()), "server failed");
            eprintln!(
                "hodei-server-bin: {}",
                hodei_core::server::error_chain(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let ServerArgs {
        mut settings,
        kubernetes,
        auth,
    } = args;
    settings.run_jobs_unprivileged_when_root();
    match crate::descriptors::raise_open_files_limit() {
        Ok(limit) => tracing::info!(limit, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open file limit"),
    }
    if let Some(addr) = settings.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    // The Kubernetes provider comes first, so jobs go to pods unless they name another.
    let preferred = kubernetes.start(settings.advertise_address.clone()).await?;
    // Client certificates become identities when the TLS layer verifies them.
    let client_certificates = settings.tls().is_some() && settings.tls_client_ca.is_some();
    let auth = auth.authenticator(&kubernetes, client_certificates).await?;
    if !auth.is_configured() {
        tracing::warn!(
            "no authentication is configured: every job API caller is an anonymous admin; set HODEI_AUTH_TOKENS_FILE or HODEI_AUTH_KUBERNETES"
        );
    }
    let server = settings
        .start(preferred.into_iter().collect(), auth)
        .await?;
    tracing::info!(addr = %server.local_addr(), data_dir = %settings.data_dir()?.display(), "hodei server ready");
    server
        .serve_with_shutdown(crate::settings::termination_signal())
        .await?;
    Ok(())
}
