//! The `hodei` command line: run jobs, follow their output, inspect and cancel them.

mod embedded;
mod inspect;
mod list;
mod reconnect;
mod render;
mod run;
mod token;
mod wait;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use hodei_core::HodeiClient;

use crate::exit_code;

/// Default server URL.
pub const DEFAULT_SERVER_URL: &str = "http://localhost:50051";

/// Run jobs on ephemeral workers.
#[derive(Debug, Parser)]
#[command(name = "hodei", version, about)]
pub struct Cli {
    /// Server to talk to.
    #[arg(long, global = true, env = "HODEI_SERVER_URL", default_value = DEFAULT_SERVER_URL)]
    server: String,
    /// CA bundle (PEM file) that signed the server's certificate, for https:// servers
    /// [default: the system's roots].
    #[arg(long, global = true, env = "HODEI_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM file) for servers that authenticate callers by certificate.
    #[arg(
        long,
        global = true,
        env = "HODEI_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The private key of --client-cert (PEM file).
    #[arg(
        long,
        global = true,
        env = "HODEI_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Run an in-process server with the local provider for this one command.
    #[arg(long, global = true)]
    embedded: bool,
    /// Bearer token sent to the server.
    #[arg(
        long,
        global = true,
        env = "HODEI_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// File holding the bearer token (used when no --token / HODEI_TOKEN is given).
    #[arg(long, global = true, env = "HODEI_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// How long `run`, `logs -f` and `wait` keep reconnecting to a server they lost, e.g. 30s.
    #[arg(long, global = true, env = "HODEI_RECONNECT_WINDOW",
        value_parser = crate::settings::parse_duration,
        default_value_t = hodei_core::DEFAULT_RECONNECT_WINDOW.into())]
    reconnect_window: humantime::Duration,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a job and stream its output; exits with the job's exit code.
    Run(Box<run::RunArgs>),
    /// Print a job's output.
    Logs(inspect::LogsArgs),
    /// Show one job.
    Get(inspect::GetArgs),
    /// List jobs, newest first, one page at a time.
    List(list::ListArgs),
    /// Wait until a job ends; exits with its exit code, as `run` does.
    Wait(wait::WaitArgs),
    /// Cancel a job.
    Cancel(inspect::CancelArgs),
    /// Make bearer tokens for the server's tokens file.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// A failure of the CLI itself, printed on one line.
#[derive(Debug)]
pub struct CliError {
    message: String,
    code: u8,
}

impl CliError {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code,
        }
    }
}

/// Printed after an UNAUTHENTICATED answer.
const TOKEN_HINT: &str =
    "hint: set HODEI_TOKEN (or --token, or HODEI_TOKEN_FILE) to a token the server accepts";

impl From<hodei_core::ClientError> for CliError {
    fn from(error: hodei_core::ClientError) -> Self {
        let mut message = one_line(&hodei_core::server::error_chain(&error));
        if error.is_unauthenticated() {
            message = format!("{message}\nhodei: {TOKEN_HINT}");
        }
        Self::new(exit_code::HODEI_ERROR, message)
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Connects to `url` with the TLS files the command line names.
async fn connect(cli: &Cli, url: String, token: Option<String>) -> Result<HodeiClient, CliError> {
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read(path).map_err(|e| {
            CliError::new(
                exit_code::USAGE,
                format!("cannot read {flag} {}: {e}", path.display()),
            )
        })
    };
    let ca = cli
        .ca_cert
        .as_ref()
        .map(|path| read(path, "--ca-cert (HODEI_CA_CERT)"))
        .transpose()?;
    let identity = match (&cli.client_cert, &cli.client_key) {
        (Some(cert), Some(key)) => Some((
            read(cert, "--client-cert (HODEI_CLIENT_CERT)")?,
            read(key, "--client-key (HODEI_CLIENT_KEY)")?,
        )),
        _ => None,
    };
    let builder = HodeiClient::builder(url)
        .maybe_token(token)
        .maybe_ca_certificate(ca);
    let client = match identity {
        Some((cert, key)) => builder.client_identity(cert, key).connect().await?,
        None => builder.connect().await?,
    };
    Ok(client)
}

/// Parses the command line, runs it, and returns the documented exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init("error");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hodei: cannot start the async runtime: {error}");
            return ExitCode::from(exit_code::HODEI_ERROR);
        }
    };
    let code = runtime.block_on(async move {
        match execute(cli).await {
            Ok(code) => code,
            Err(error) => {
                eprintln!("hodei: {}", error.message);
                error.code
            }
        }
    });
    // Don't wait for background tasks (e.g. an embedded server's workers) to wind down.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    ExitCode::from(code)
}

async fn execute(cli: Cli) -> Result<u8, CliError> {
    if let Command::Token(command) = cli.command {
        return Ok(token::run(command));
    }
    let token = token::resolve(cli.token.clone(), cli.token_file.as_deref())?;
    let embedded = if cli.embedded {
        Some(embedded::EmbeddedServer::start().await?)
    } else {
        None
    };
    let url = embedded
        .as_ref()
        .map_or(cli.server.clone(), embedded::EmbeddedServer::url);
    let token = match &embedded {
        Some(server) => Some(server.token().to_owned()),
        None => token,
    };
    let client = connect(&cli, url, token).await?;
    let code = match cli.command {
        Command::Run(args) => {
            run::run(
                &client,
                *args,
                embedded.is_some(),
                cli.reconnect_window.into(),
            )
            .await
        }
        Command::Logs(args) => inspect::logs(&client, args, cli.reconnect_window.into()).await,
        Command::Get(args) => inspect::get(&client, args).await,
        Command::List(args) => list::list(&client, args).await,
        Command::Wait(args) => wait::wait(&client, args, cli.reconnect_window.into()).await,
        Command::Cancel(args) => inspect::cancel(&client, args).await,
        // Answered above, before connecting.
        Command::Token(command) => Ok(token::run(command)),
    };
    if let Some(server) = embedded {
        server.stop().await;
    }
    code
}
