//! `--embedded`: an in-process server with the local provider, for one command.

use std::net::SocketAddr;

use clap::Parser;
use tokio::{sync::oneshot, task::JoinHandle};

use super::CliError;
use crate::{exit_code, settings::ServerSettings};

/// A server running inside the CLI process, listening on loopback only.
#[derive(Debug)]
pub(super) struct EmbeddedServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug, Parser)]
struct EmbeddedArgs {
    #[command(flatten)]
    settings: ServerSettings,
}

impl EmbeddedServer {
    /// Starts it with the server's usual `HODEI_*` settings, on 127.0.0.1 and a free port.
    pub async fn start() -> Result<Self, CliError> {
        let mut settings = crate::settings::parse::<EmbeddedArgs>(["hodei-embedded"])
            .map_err(|e| CliError::new(exit_code::USAGE, super::one_line(&e.to_string())))?
            .settings;
        settings.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        settings.advertise_address = None;
        let server = settings
            .start(Vec::new(), hodei_core::auth::Authenticator::open())
            .await
            .map_err(|e| {
                CliError::new(exit_code::HODEI_ERROR, crate::server_main::format_chain(&e))
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
                    crate::server_main::format_chain(&error)
                );
            }
        });
        Ok(Self { addr, stop, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server; active jobs (e.g. after `--detach`) are stopped with it.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
