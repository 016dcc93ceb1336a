//! `hodei logs`, `get`, `list` and `cancel`.

use clap::{Args, ValueEnum};
use futures::StreamExt;
use hodei_core::{HodeiClient, JobEvent};

use super::{CliError, render};

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
    /// The job id.
    job: String,
}

#[derive(Debug, Args)]
pub(super) struct GetArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
    /// The job id.
    job: String,
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Most jobs to show.
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
}

#[derive(Debug, Args)]
pub(super) struct CancelArgs {
    /// The job id.
    job: String,
}

pub(super) async fn logs(client: &HodeiClient, args: LogsArgs) -> Result<u8, CliError> {
    let mut events = client.follow(&args.job, 0, true, args.follow).await?;
    let mut output = render::OutputWriter::new();
    while let Some(event) = events.next().await {
        if let JobEvent::Output(chunk) = event? {
            output.write(&chunk)?;
        }
    }
    output.flush()?;
    Ok(0)
}

pub(super) async fn get(client: &HodeiClient, args: GetArgs) -> Result<u8, CliError> {
    let job = client.get_raw(&args.job).await?;
    match args.output {
        Format::Text => println!("{}", render::job_text(&job)),
        Format::Json => println!("{}", render::json(&job)?),
    }
    Ok(0)
}

pub(super) async fn list(client: &HodeiClient, args: ListArgs) -> Result<u8, CliError> {
    let jobs = client.list(args.limit).await?;
    match args.output {
        Format::Json => println!("{}", render::json(&jobs)?),
        Format::Text => {
            println!(
                "{:<36}  {:<12}  {:<10}  {:<20}  COMMAND",
                "ID", "STATE", "PROVIDER", "CREATED"
            );
            for job in &jobs {
                println!("{}", render::job_row(job));
            }
        }
    }
    Ok(0)
}

pub(super) async fn cancel(client: &HodeiClient, args: CancelArgs) -> Result<u8, CliError> {
    let (job, requested) = client.cancel(&args.job).await?;
    if requested {
        println!("cancel requested for job {}", job.id);
    } else {
        println!("job {} had already ended: {}", job.id, job.state);
    }
    Ok(0)
}
