//! `hodei run`: submit a job, stream its output live, exit with its exit code.

use std::{collections::BTreeMap, io::IsTerminal};

use clap::Args;
use hodei_core::{HodeiClient, JobEvent, JobSpec, JobState};

use super::{CliError, reconnect, render};
use crate::exit_code;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// Name of the job.
    #[arg(long)]
    name: Option<String>,
    /// Provider that must run the job (e.g. local, kubernetes).
    #[arg(long)]
    provider: Option<String>,
    /// CPU, e.g. 0.5 or 500m.
    #[arg(long)]
    cpu: Option<String>,
    /// Memory, e.g. 64Mi or 1Gi.
    #[arg(long)]
    memory: Option<String>,
    /// Time limit, e.g. 60s, 5m, 1h30m.
    #[arg(long, default_value = "1h")]
    timeout: String,
    /// Environment variable of the job (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Label of the job (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Container image; the job then needs a container provider.
    #[arg(long)]
    image: Option<String>,
    /// Working directory of the command (absolute).
    #[arg(long)]
    workdir: Option<String>,
    /// Print only the job id and return at once.
    #[arg(long)]
    detach: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::new(exit_code::USAGE, message)
}

fn pairs(field: &str, values: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    values
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| usage(format!("invalid {field}: {pair:?} is not KEY=VALUE")))
        })
        .collect()
}

impl RunArgs {
    fn spec(&self) -> Result<JobSpec, CliError> {
        let cpu = self
            .cpu
            .as_deref()
            .map(|c| c.parse().map_err(|e| usage(format!("invalid cpu: {e}"))))
            .transpose()?;
        let memory = self
            .memory
            .as_deref()
            .map(|m| m.parse().map_err(|e| usage(format!("invalid memory: {e}"))))
            .transpose()?;
        let timeout = humantime::parse_duration(&self.timeout).map_err(|e| {
            usage(format!(
                "invalid timeout: {:?}: {e} (expected e.g. 60s, 5m, 1h)",
                self.timeout
            ))
        })?;
        let (command, args) = self
            .command
            .split_first()
            .ok_or_else(|| usage("invalid command: is missing"))?;
        JobSpec::builder(command.clone())
            .args(args.iter().cloned())
            .name(self.name.clone().unwrap_or_default())
            .env(pairs("env", &self.env)?)
            .labels(pairs("label", &self.labels)?)
            .maybe_working_dir(self.workdir.clone())
            .timeout(timeout)
            .maybe_cpu(cpu)
            .maybe_memory(memory)
            .maybe_image(self.image.clone())
            .maybe_provider(self.provider.clone())
            .build()
            .map_err(|e| usage(e.to_string()))
    }
}

pub(super) async fn run(
    client: &HodeiClient,
    args: RunArgs,
    embedded: bool,
    reconnect_window: std::time::Duration,
) -> Result<u8, CliError> {
    if args.detach && embedded {
        return Err(usage(
            "--detach needs a standing server; it cannot be combined with --embedded",
        ));
    }
    let spec = args.spec()?;
    let job = client.submit(&spec).await?;
    if args.detach {
        println!("{}", job.id);
        return Ok(0);
    }
    let id = job.id;
    let phases = std::io::stderr().is_terminal();
    let mut events = client.follow_resuming(id, 0, reconnect_window);
    let mut output = render::OutputWriter::new();
    let mut shown = render::PhaseLine::new(phases, id);
    let mut cancelled = false;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            event = reconnect::next_job_event(&mut events, id) => match event {
                Some(Ok(JobEvent::Output(chunk))) => output.write(&chunk)?,
                Some(Ok(JobEvent::State { state, detail })) => {
                    shown.show(&state, detail.as_deref());
                    if state.is_terminal() {
                        output.flush()?;
                        if !matches!(state, JobState::Succeeded) {
                            eprintln!("hodei: job {id} {state}");
                        }
                        return Ok(exit_code::for_state(&state));
                    }
                }
                Some(Err(error)) => return Err(error),
                None => return Err(CliError::new(exit_code::HODEI_ERROR, format!("the follow of job {id} ended before the job"))),
            },
            _ = &mut interrupt, if !cancelled => {
                cancelled = true;
                eprintln!("hodei: cancelling job {id} (Ctrl-C again to stop waiting)");
                client.cancel(id).await?;
                tokio::spawn(async {
                    let _ = tokio::signal::ctrl_c().await;
                    std::process::exit(i32::from(exit_code::CANCELLED));
                });
            }
        }
    }
}
