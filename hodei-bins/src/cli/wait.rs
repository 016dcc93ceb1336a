//! `hodei wait`: waits for a job to end and exits with its exit code, riding through a
//! server restart.

use std::time::Duration;

use clap::Args;
use hodei_core::{HodeiClient, JobEvent, JobState};

use super::{CliError, inspect::JobArg, reconnect};
use crate::exit_code;

#[derive(Debug, Args)]
pub(super) struct WaitArgs {
    /// Stop waiting after this long, e.g. 30s or 10m, and exit with 122 [default: wait
    /// until the job ends].
    #[arg(long, value_parser = crate::settings::parse_duration)]
    timeout: Option<humantime::Duration>,
    #[command(flatten)]
    job: JobArg,
}

pub(super) async fn wait(
    client: &HodeiClient,
    args: WaitArgs,
    reconnect_window: Duration,
) -> Result<u8, CliError> {
    let id = args.job.id()?;
    let ended = async {
        let mut events = client
            .follow_resuming(id, 0, reconnect_window)
            .states_only();
        while let Some(event) = reconnect::next_job_event(&mut events, id).await {
            if let JobEvent::State { state, .. } = event?
                && state.is_terminal()
            {
                return Ok(state);
            }
        }
        Err(CliError::new(
            exit_code::HODEI_ERROR,
            format!("the follow of job {id} ended before the job"),
        ))
    };
    let state = match args.timeout {
        Some(timeout) => match tokio::time::timeout(timeout.into(), ended).await {
            Ok(state) => state?,
            Err(_) => {
                eprintln!(
                    "hodei: job {id} has not ended after {timeout}; stopped waiting (the job goes on)"
                );
                return Ok(exit_code::WAIT_TIMED_OUT);
            }
        },
        None => ended.await?,
    };
    if !matches!(state, JobState::Succeeded) {
        eprintln!("hodei: job {id} {state}");
    }
    Ok(exit_code::for_state(&state))
}
