//! `hodei-server-bin`: reads flags and `HODEI_*` variables, starts the server, serves
//! until SIGTERM or SIGINT.

use std::process::ExitCode;

use clap::Parser;

use crate::settings::ServerSettings;

/// The Hodei Jobs server.
#[derive(Debug, Parser)]
#[command(name = "hodei-server-bin", version, about)]
struct ServerArgs {
    #[command(flatten)]
    settings: ServerSettings,
}

/// Runs the server until it is told to stop.
#[must_use]
pub fn main() -> ExitCode {
    let args = ServerArgs::parse();
    crate::telemetry::init("info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hodei-server-bin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args.settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format_chain(error.as_ref()), "server failed");
            eprintln!("hodei-server-bin: {}", format_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: ServerSettings) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(addr) = settings.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    }
    let preferred = kubernetes_provider().await?;
    let server = settings.start(preferred).await?;
    tracing::info!(addr = %server.local_addr(), data_dir = %settings.data_dir()?.display(), "hodei server ready");
    server
        .serve_with_shutdown(crate::settings::termination_signal())
        .await?;
    Ok(())
}

/// The Kubernetes provider when `HODEI_KUBERNETES_ENABLED` is set; it comes first, so
/// jobs go to pods unless they name another provider.
#[cfg(feature = "kubernetes")]
async fn kubernetes_provider()
-> Result<Vec<std::sync::Arc<dyn hodei_core::Provider>>, Box<dyn std::error::Error>> {
    let enabled = std::env::var("HODEI_KUBERNETES_ENABLED").unwrap_or_default();
    let enabled = match enabled.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => false,
        "1" | "true" | "yes" | "on" => true,
        other => {
            return Err(format!(
                "invalid HODEI_KUBERNETES_ENABLED: {other:?} (expected 1/0, true/false)"
            )
            .into());
        }
    };
    if !enabled {
        return Ok(Vec::new());
    }
    let builder = hodei_core::provider::KubernetesProviderBuilder::from_env()?;
    let settings = builder.current_settings().clone();
    let provider = builder
        .build()
        .await
        .map_err(|e| format!("the Kubernetes provider cannot start: {}", format_chain(&e)))?;
    tracing::info!(
        namespace = %settings.namespace,
        context = settings.context.as_deref().unwrap_or("(current)"),
        kubeconfig = ?settings.kubeconfig,
        image = %settings.worker_image,
        "Kubernetes provider enabled"
    );
    Ok(vec![std::sync::Arc::new(provider)])
}

#[cfg(not(feature = "kubernetes"))]
async fn kubernetes_provider()
-> Result<Vec<std::sync::Arc<dyn hodei_core::Provider>>, Box<dyn std::error::Error>> {
    if std::env::var("HODEI_KUBERNETES_ENABLED")
        .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    {
        return Err("HODEI_KUBERNETES_ENABLED is set but this build has no Kubernetes support (feature `kubernetes`)".into());
    }
    Ok(Vec::new())
}

/// An error and its causes on one line.
#[must_use]
pub fn format_chain(error: &dyn std::error::Error) -> String {
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
