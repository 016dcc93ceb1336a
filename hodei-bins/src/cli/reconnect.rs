//! What `hodei run` and `hodei logs -f` say while they ride through a lost server.

use std::io::IsTerminal;

use hodei_core::{ClientError, FollowEvent, JobEvent, JobId, ResumingEvents};

use super::CliError;
use crate::exit_code;

/// The next job event of `events`; notices of a lost and regained server go to stderr
/// when it is a terminal. `None` after the job's terminal state.
pub(super) async fn next_job_event(
    events: &mut ResumingEvents,
    id: JobId,
) -> Option<Result<JobEvent, CliError>> {
    let notices = std::io::stderr().is_terminal();
    loop {
        match events.next().await? {
            Ok(FollowEvent::Job(event)) => return Some(Ok(event)),
            Ok(FollowEvent::Lost { reason }) => {
                if notices {
                    eprintln!("hodei: lost the server ({reason}); reconnecting to follow job {id}");
                }
            }
            Ok(FollowEvent::Reconnected { unreachable_for }) => {
                if notices {
                    eprintln!(
                        "hodei: the server was unreachable for {}; following job {id} again",
                        humantime::format_duration(round_to_tenths(unreachable_for))
                    );
                }
            }
            Err(error) => return Some(Err(lost(error, id))),
        }
    }
}

fn round_to_tenths(duration: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(duration.as_millis().div_ceil(100) as u64 * 100)
}

fn lost(error: ClientError, id: JobId) -> CliError {
    let error = CliError::from(error);
    CliError::new(
        exit_code::HODEI_ERROR,
        format!("while following job {id}: {}", error.message),
    )
}
