//! A follow that rides through a lost server: it reconnects with backoff and resumes from
//! the next output chunk, so every byte arrives once, in order, until the job ends.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::{ClientError, HodeiClient, JobEvent, JobEvents, JobId};

/// How long a resuming follow keeps trying to reach a lost server, by default.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(10 * 60);

/// What a resuming follow yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// An event of the job.
    Job(JobEvent),
    /// The stream to the server broke (`reason`); the follow is reconnecting.
    Lost {
        /// Why, in one line.
        reason: String,
    },
    /// The follow reached the server again after it was unreachable this long.
    Reconnected {
        /// Time from the break to the new stream.
        unreachable_for: Duration,
    },
}

/// Follows a job until it ends, reconnecting for up to a window when the server is lost.
/// Made by [`HodeiClient::follow_resuming`].
#[derive(Debug)]
pub struct ResumingEvents {
    client: HodeiClient,
    id: JobId,
    window: Duration,
    next_seq: u64,
    stream: Option<JobEvents>,
    lost_at: Option<Instant>,
    attempt: u32,
    ended: bool,
    include_output: bool,
}

impl HodeiClient {
    /// Follows job `id` live from output chunk `from_seq` (0 or 1: the start) until it
    /// ends. When the server is lost (connection refused or broken, UNAVAILABLE, a follow
    /// the server dropped), it reconnects with backoff and jitter for up to `window`, and
    /// resumes after the last chunk it yielded: each chunk comes once, in order.
    #[must_use]
    pub fn follow_resuming(&self, id: JobId, from_seq: u64, window: Duration) -> ResumingEvents {
        ResumingEvents {
            client: self.clone(),
            id,
            window,
            next_seq: from_seq,
            stream: None,
            lost_at: None,
            attempt: 0,
            ended: false,
            include_output: true,
        }
    }
}

/// Whether `error` means the server (or the way to it) went away, rather than a refusal.
fn is_lost_server(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } => true,
        ClientError::Status(status) => {
            matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
            ) || is_dropped_follower(status)
        }
        ClientError::InvalidResponse(_) | ClientError::InvalidToken => false,
    }
}

/// The server dropped the follow because it read too slowly; following again resumes.
fn is_dropped_follower(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted && status.message().contains("fell behind")
}

impl ResumingEvents {
    /// Only state changes, no output: for waiting on a job's end.
    #[must_use]
    pub fn states_only(mut self) -> Self {
        self.include_output = false;
        self
    }

    /// The next event; `None` after the job's terminal state. An error ends the follow:
    /// a refusal, or a server still lost when the window has passed.
    pub async fn next(&mut self) -> Option<Result<FollowEvent, ClientError>> {
        while !self.ended {
            let Some(stream) = self.stream.as_mut() else {
                match self.reconnect().await {
                    Ok(Some(event)) => return Some(Ok(event)),
                    Ok(None) => continue,
                    Err(error) => return Some(Err(error)),
                }
            };
            let lost = match stream.next().await {
                Some(Ok(event)) => return Some(Ok(self.seen(event))),
                Some(Err(error)) if is_lost_server(&error) => error.to_string(),
                Some(Err(error)) => return Some(Err(error)),
                None => "the stream ended before the job did".to_owned(),
            };
            self.stream = None;
            if self.lost_at.is_none() {
                self.lost_at = Some(Instant::now());
                self.attempt = 0;
                return Some(Ok(FollowEvent::Lost { reason: lost }));
            }
        }
        None
    }

    fn seen(&mut self, event: JobEvent) -> FollowEvent {
        match &event {
            JobEvent::Output(chunk) => self.next_seq = chunk.seq + 1,
            JobEvent::State { state, .. } => self.ended = state.is_terminal(),
        }
        FollowEvent::Job(event)
    }

    /// Opens a new stream, after a backoff when the server was lost. `Some` reports that
    /// the server is back.
    async fn reconnect(&mut self) -> Result<Option<FollowEvent>, ClientError> {
        if self.lost_at.is_some() {
            tokio::time::sleep(crate::backoff::reconnect_delay(self.attempt)).await;
            self.attempt = self.attempt.saturating_add(1);
        }
        let mut request = self.client.follow(self.id).from_seq(self.next_seq).live();
        if !self.include_output {
            request = request.states_only();
        }
        let opened = request.send().await;
        match opened {
            Ok(stream) => {
                self.stream = Some(stream);
                Ok(self.lost_at.take().map(|lost_at| FollowEvent::Reconnected {
                    unreachable_for: lost_at.elapsed(),
                }))
            }
            Err(error) if is_lost_server(&error) => {
                let lost_at = *self.lost_at.get_or_insert_with(Instant::now);
                if lost_at.elapsed() >= self.window {
                    return Err(error);
                }
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }
}
