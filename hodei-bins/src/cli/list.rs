//! `hodei list`: jobs newest first, selected by state, owner, labels and creation time,
//! one page per call.

use clap::Args;
use hodei_core::{HodeiClient, JobList, JobPhase};
use serde::Serialize;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{CliError, inspect::Format, render};

/// The `--owner` value that means the calling identity.
const ME: &str = "me";

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Only jobs in this state (repeatable): queued, provisioning, running, succeeded,
    /// failed, cancelled, timed_out.
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    states: Vec<JobPhase>,
    /// Only jobs whose labels match this Kubernetes label selector, e.g. team=a,
    /// 'tier!=db' or 'env in (dev,test)' (repeatable: every one must hold).
    #[arg(long = "selector", short = 'l', value_name = "SELECTOR")]
    selectors: Vec<String>,
    /// Only jobs submitted by this identity; `me` is the identity the server knows the
    /// caller by.
    #[arg(long, value_name = "NAME")]
    owner: Option<String>,
    /// Only jobs created at or after this time (RFC 3339, e.g. 2026-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    created_after: Option<OffsetDateTime>,
    /// Only jobs created before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    created_before: Option<OffsetDateTime>,
    /// Most jobs to show (at most 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// Continue a list: the next page token a previous `hodei list` printed, with the
    /// same filters.
    #[arg(long, value_name = "TOKEN")]
    page_token: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    output: Format,
}

fn parse_state(value: &str) -> Result<JobPhase, String> {
    value
        .parse()
        .map_err(|e: hodei_core::ValidationError| e.message().to_owned())
}

fn parse_time(value: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(value, &Rfc3339)
        .map_err(|e| format!("{e}; expected RFC 3339, e.g. 2026-01-01T00:00:00Z"))
}

/// What `-o json` prints: the page and where the next one starts ("" when none).
#[derive(Serialize)]
struct JsonPage<'a> {
    jobs: Vec<serde_json::Value>,
    next_page_token: &'a str,
}

pub(super) async fn list(client: &HodeiClient, args: ListArgs) -> Result<u8, CliError> {
    let mut request = client
        .list()
        .states(args.states)
        .label_selector(args.selectors.join(","))
        .page_size(args.limit);
    request = match args.owner.as_deref() {
        Some(ME) => request.mine(),
        Some(owner) => request.owner(owner),
        None => request,
    };
    if let Some(time) = args.created_after {
        request = request.created_after(time);
    }
    if let Some(time) = args.created_before {
        request = request.created_before(time);
    }
    if let Some(token) = args.page_token {
        request = request.page_token(token);
    }
    let JobList {
        jobs,
        truncated,
        next_page_token,
    } = request.await?;
    if truncated {
        eprintln!(
            "note: showing the newest {} jobs that fit in one answer",
            jobs.len()
        );
    }
    match args.output {
        Format::Json => println!(
            "{}",
            render::json(&JsonPage {
                jobs: jobs.iter().map(render::job_json).collect(),
                next_page_token: next_page_token.as_deref().unwrap_or_default(),
            })?
        ),
        Format::Text => {
            println!(
                "{:<36}  {:<12}  {:<10}  {:<20}  COMMAND",
                "ID", "STATE", "PROVIDER", "CREATED"
            );
            for job in &jobs {
                println!("{}", render::job_row(job));
            }
            if let Some(token) = next_page_token {
                eprintln!("more jobs: add --page-token {token} for the next page");
            }
        }
    }
    Ok(0)
}
