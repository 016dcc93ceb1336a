//! One `FollowJob` stream: history, then live output and state changes, ending with the
//! terminal state, or with an UNAVAILABLE status when the job can no longer be followed.

use async_trait::async_trait;
use tokio::sync::watch;
use tonic::Status;
use tracing::warn;

use crate::{
    client::JobEvent,
    controller::JobController,
    job::{Job, JobId},
    logs::{LogFollower, OutputChunk},
    store::StoreError,
};

use super::follow_stream::EventSink;

/// Start of the message of a follow that ends without the job's terminal state.
const CANNOT_FOLLOW: &str = "the job's log can no longer be followed";

/// Where a follow finds a job once its live state channel has closed.
#[async_trait]
pub(super) trait StoredJobs: Send + Sync {
    /// The job as it is now.
    async fn stored(&self, id: JobId) -> Result<Option<Job>, StoreError>;
}

#[async_trait]
impl StoredJobs for JobController {
    async fn stored(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.get(id).await
    }
}

async fn send_status(tx: &mut EventSink, job: &Job) -> Result<(), &'static str> {
    let state = JobEvent::State {
        state: job.state.clone(),
        detail: job.detail.clone(),
    };
    tx.send(state).await
}

/// Sends the rest of the log; the log must be closed.
async fn drain(follower: Option<&mut LogFollower>, tx: &mut EventSink) -> Result<(), &'static str> {
    let Some(follower) = follower else {
        return Ok(());
    };
    loop {
        match follower.next_batch().await {
            Ok(Some(batch)) => {
                for chunk in batch {
                    tx.send(JobEvent::Output(chunk)).await?;
                }
            }
            Ok(None) => return Ok(()),
            Err(error) => {
                tx.finish(super::job_service::internal(error));
                return Err("reading the log failed");
            }
        }
    }
}

/// History first, then live output and state changes; the terminal state comes last,
/// after every byte of output (the controller closes the log before it ends a job).
/// Returns why it stopped early.
pub(super) async fn follow(
    jobs: &impl StoredJobs,
    mut job: Job,
    watch: Option<watch::Receiver<Job>>,
    mut follower: Option<LogFollower>,
    tx: &mut EventSink,
) -> Result<(), &'static str> {
    // A job that has ended (or is no longer live) gets its output, then its state: the
    // terminal state is always the last event.
    let mut watch = match watch {
        Some(watch) if !job.state.is_terminal() => watch,
        _ => {
            drain(follower.as_mut(), tx).await?;
            return send_status(tx, &job).await;
        }
    };
    send_status(tx, &job).await?;
    loop {
        tokio::select! {
            next = next_output(&mut follower) => match next {
                Ok(Some(batch)) => {
                    for chunk in batch {
                        tx.send(JobEvent::Output(chunk)).await?;
                    }
                }
                Ok(None) => follower = None,
                Err(error) => {
                    tx.finish(super::job_service::internal(error));
                    return Err("reading the log failed");
                }
            },
            changed = watch.changed() => {
                let latest = if changed.is_ok() {
                    watch.borrow_and_update().clone()
                } else {
                    // A closed channel never waits again: the job ends here, one way or
                    // the other, instead of asking the store over and over.
                    match ended(jobs, job.id).await {
                        Ok(ended) => ended,
                        Err(status) => {
                            tx.finish(status);
                            return Err("the job can no longer be followed");
                        }
                    }
                };
                if latest.state.is_terminal() {
                    drain(follower.as_mut(), tx).await?;
                    return send_status(tx, &latest).await;
                }
                if latest.state != job.state || latest.detail != job.detail {
                    send_status(tx, &latest).await?;
                }
                job = latest;
            }
        }
    }
}

/// The job, terminal, once its live state channel has closed (the controller stores the
/// terminal state before it lets go of a job); anything else is an UNAVAILABLE status.
async fn ended(jobs: &impl StoredJobs, id: JobId) -> Result<Job, Status> {
    let reason = match jobs.stored(id).await {
        Ok(Some(job)) if job.state.is_terminal() => return Ok(job),
        Ok(Some(job)) => format!(
            "this server stopped tracking job {id} while it was {}",
            job.state.phase_name()
        ),
        Ok(None) => format!("job {id} is no longer stored"),
        Err(error) => format!("reading job {id} failed: {}", super::error_chain(&error)),
    };
    warn!(job.id = %id, %reason, "a follower of the job ends early");
    Err(Status::unavailable(format!("{CANNOT_FOLLOW}: {reason}")))
}

/// The next output batch, or never when output is not followed or has ended.
async fn next_output(
    follower: &mut Option<LogFollower>,
) -> std::io::Result<Option<Vec<OutputChunk>>> {
    match follower {
        Some(follower) => follower.next_batch().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use futures::StreamExt;

    use super::*;
    use crate::job::{JobSpec, JobState, ProcessExit};
    use crate::server::follow_stream::event_stream;

    /// A store that says the job is running for its first `running_answers` lookups and
    /// that it succeeded afterwards; it counts the lookups.
    #[derive(Debug)]
    struct CountingStore {
        job: Job,
        running_answers: usize,
        lookups: AtomicUsize,
    }

    #[async_trait]
    impl StoredJobs for CountingStore {
        async fn stored(&self, _id: JobId) -> Result<Option<Job>, StoreError> {
            let lookup = self.lookups.fetch_add(1, Ordering::SeqCst);
            let state = if lookup < self.running_answers {
                JobState::Running
            } else {
                JobState::from_exit(ProcessExit::Code(0))
            };
            Ok(Some(Job {
                state,
                ..self.job.clone()
            }))
        }
    }

    fn running_job() -> Job {
        Job {
            state: JobState::Running,
            ..Job::new(JobSpec::builder("true").build().unwrap(), "test")
        }
    }

    /// Follows `job` whose state channel is already closed, with no output, and returns
    /// every event sent.
    async fn follow_closed(store: &CountingStore) -> Vec<Result<JobEvent, Status>> {
        let (state, watch) = watch::channel(store.job.clone());
        drop(state);
        let (mut tx, mut rx) = event_stream(Duration::from_secs(60), 0);
        let _ = follow(store, store.job.clone(), Some(watch), None, &mut tx).await;
        drop(tx);
        let mut events = Vec::new();
        while let Some(event) = rx.next().await {
            events.push(event.map(|e| JobEvent::try_from(e).unwrap()));
        }
        events
    }

    #[tokio::test]
    async fn a_job_already_terminal_in_its_live_channel_gets_its_output_before_its_state() {
        let dir = tempfile::tempdir().unwrap();
        let hub = crate::logs::LogHub::open(dir.path()).unwrap();
        let job = Job {
            state: JobState::from_exit(ProcessExit::Code(0)),
            ..running_job()
        };
        let log = hub.create(job.id).unwrap();
        log.append(&[OutputChunk {
            seq: 1,
            stream: crate::logs::OutputStream::Stdout,
            data: bytes::Bytes::from_static(b"started\n"),
            emitted_at_us: 0,
        }])
        .unwrap();
        // The run has published the end but not yet let go of the job.
        let follower = hub.follow(job.id, 0).unwrap();
        hub.close(job.id).await.unwrap();
        let (_state, watch) = watch::channel(job.clone());
        let store = CountingStore {
            job: job.clone(),
            running_answers: 0,
            lookups: AtomicUsize::new(0),
        };
        let (mut tx, mut rx) = event_stream(Duration::from_secs(60), 0);
        follow(&store, job, Some(watch), Some(follower), &mut tx)
            .await
            .unwrap();
        drop(tx);
        let mut events = Vec::new();
        while let Some(event) = rx.next().await {
            events.push(JobEvent::try_from(event.unwrap()).unwrap());
        }
        assert!(
            matches!(&events[0], JobEvent::Output(chunk) if chunk.seq == 1),
            "{events:?}"
        );
        assert!(
            matches!(
                &events[1],
                JobEvent::State {
                    state: JobState::Succeeded,
                    ..
                }
            ),
            "{events:?}"
        );
        assert_eq!(events.len(), 2, "{events:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follow_whose_job_channel_closed_while_stored_running_ends_after_one_lookup() {
        let store = CountingStore {
            job: running_job(),
            running_answers: 100,
            lookups: AtomicUsize::new(0),
        };
        let events = follow_closed(&store).await;
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(matches!(
            &events[0],
            Ok(JobEvent::State {
                state: JobState::Running,
                ..
            })
        ));
        let status = events[1].as_ref().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            format!(
                "the job's log can no longer be followed: this server stopped tracking job {} while it was running",
                store.job.id
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_follow_whose_job_channel_closed_after_the_job_ended_ends_with_the_stored_state() {
        let store = CountingStore {
            job: running_job(),
            running_answers: 0,
            lookups: AtomicUsize::new(0),
        };
        let events = follow_closed(&store).await;
        assert_eq!(store.lookups.load(Ordering::SeqCst), 1);
        assert!(
            matches!(
                events.last(),
                Some(Ok(JobEvent::State {
                    state: JobState::Succeeded,
                    ..
                }))
            ),
            "{events:?}"
        );
    }
}
