//! `hodei logs`, `get` and `cancel`.

use clap::{Args, ValueEnum};
use futures::StreamExt;
use hodei_core::{CancelOutcome, HodeiClient, JobEvent, JobId};

use super::{CliError, reconnect, render};
use crate::exit_code;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum Format {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(super) struct LogsArgs {
    /// Keep following until the job ends.
    #[arg(short, long)]
    follow: bool,
    /// Start at this output chunk (1 is the first), e.g. where a dropped follow said to.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    from_seq: u64,
    #[command(flatten)]
    job: JobArg,
}

#[derive(Debug, Args)]
pub(super) struct GetArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
    #[command(flatten)]
    job: JobArg,
}

#[derive(Debug, Args)]
pub(super) struct CancelArgs {
    #[command(flatten)]
    job: JobArg,
}

/// The `JOB` argument, parsed by [`JobArg::id`] so a bad id is a one-line usage error.
#[derive(Debug, Args)]
pub(super) struct JobArg {
    /// The job id.
    #[arg(value_name = "JOB")]
    job: String,
}

impl JobArg {
    pub(super) fn id(&self) -> Result<JobId, CliError> {
        self.job.parse().map_err(|e: hodei_core::ValidationError| {
            CliError::new(exit_code::USAGE, format!("invalid JOB: {}", e.message()))
        })
    }
}

pub(super) async fn logs(
    client: &HodeiClient,
    args: LogsArgs,
    reconnect_window: std::time::Duration,
) -> Result<u8, CliError> {
    let id = args.job.id()?;
    let mut output = render::OutputWriter::new();
    if args.follow {
        let mut events = client.follow_resuming(id, args.from_seq, reconnect_window);
        while let Some(event) = reconnect::next_job_event(&mut events, id).await {
            if let JobEvent::Output(chunk) = event? {
                output.write(&chunk)?;
            }
        }
    } else {
        let mut events = client.follow(id).from_seq(args.from_seq).await?;
        while let Some(event) = events.next().await {
            if let JobEvent::Output(chunk) = event? {
                output.write(&chunk)?;
            }
        }
    }
    output.flush()?;
    Ok(0)
}

pub(super) async fn get(client: &HodeiClient, args: GetArgs) -> Result<u8, CliError> {
    let job = client.get(args.job.id()?).await?;
    match args.output {
        Format::Text => println!("{}", render::job_text(&job)),
        Format::Json => println!("{}", render::json(&render::job_json(&job))?),
    }
    Ok(0)
}

pub(super) async fn cancel(client: &HodeiClient, args: CancelArgs) -> Result<u8, CliError> {
    let CancelOutcome { job, requested } = client.cancel(args.job.id()?).await?;
    if requested {
        println!("cancel requested for job {}", job.id);
    } else {
        println!("job {} had already ended: {}", job.id, job.state);
    }
    Ok(0)
}
