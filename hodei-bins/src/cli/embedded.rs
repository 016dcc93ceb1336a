//! `--embedded`: an in-process server with the local provider, for one command.

use std::net::SocketAddr;

use clap::Parser;
use tokio::{sync::oneshot, task::JoinHandle};

use super::CliError;
use crate::{exit_code, settings::ServerSettings};

/// The identity the CLI calls its embedded server as.
const EMBEDDED_CALLER: &str = "embedded";

/// A server running inside the CLI process, listening on loopback only, that answers
/// only calls carrying this run's random token.
pub(super) struct EmbeddedServer {
    addr: SocketAddr,
    token: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug, Parser)]
struct EmbeddedArgs {
    #[command(flatten)]
    settings: ServerSettings,
}

impl std::fmt::Debug for EmbeddedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedServer")
            .field("addr", &self.addr)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl EmbeddedServer {
    /// Starts it with the server's usual `HODEI_*` settings, on 127.0.0.1 and a free port.
    pub async fn start() -> Result<Self, CliError> {
        let mut settings = crate::settings::parse::<EmbeddedArgs>(["hodei-embedded"])
            .map_err(|e| CliError::new(exit_code::USAGE, super::one_line(&e.to_string())))?
            .settings;
        settings.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.worker_listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.advertise_address = None;
        // Jobs run as the calling user, the only one who can reach this server.
        settings.local_run_as = None;
        // Its ports are gone with it, so its workers could never re-attach: its jobs
        // end with it.
        settings.on_shutdown = crate::settings::OnShutdown::Stop;
        // Only the holder of this run's random token may call it: other users of the
        // host reach the loopback port too.
        let token = hodei_core::auth::generate_token();
        let auth = hodei_core::auth::Authenticator::builder()
            .token(
                &token,
                hodei_core::auth::Identity::new(
                    EMBEDDED_CALLER,
                    hodei_core::auth::Permissions::ALL,
                ),
            )
            .build()
            .await
            .map_err(|e| {
                CliError::new(exit_code::HODEI_ERROR, hodei_core::server::error_chain(&e))
            })?;
        let server = settings.start(Vec::new(), auth).await.map_err(|e| {
            CliError::new(exit_code::HODEI_ERROR, hodei_core::server::error_chain(&e))
        })?;
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(error) = server.serve_with_shutdown(shutdown).await {
                eprintln!(
                    "hodei: embedded server failed: {}",
                    hodei_core::server::error_chain(&error)
                );
            }
        });
        Ok(Self {
            addr,
            token,
            stop,
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token this run's calls carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Stops the server; active jobs (e.g. after `--detach`) are stopped with it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
