//! The client-facing gRPC `JobService`.

use std::pin::Pin;

use futures::Stream;
use hodei_proto::v1::{self as pb, job_service_server::JobService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info_span, warn};

use crate::{
    client::JobEvent,
    controller::{JobController, SubmitError},
    job::{Job, JobId, JobSpec, ValidationError},
    logs::{LogFollower, OutputChunk},
    provider::SelectionError,
};

const DEFAULT_LIST_LIMIT: u32 = 100;
const MAX_LIST_LIMIT: u32 = 1000;

/// Serves `hodei.v1.JobService` from a [`JobController`].
#[derive(Debug, Clone)]
pub struct JobApi {
    controller: JobController,
}

impl JobApi {
    /// A service backed by `controller`.
    #[must_use]
    pub fn new(controller: JobController) -> Self {
        Self { controller }
    }

    async fn existing(&self, id: JobId) -> Result<Job, Status> {
        self.controller
            .get(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("job {id} not found")))
    }
}

fn invalid(error: &ValidationError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The job id field of a request.
fn job_id(id: &str) -> Result<JobId, Status> {
    id.parse().map_err(|e| invalid(&e))
}

fn internal(error: impl std::error::Error) -> Status {
    warn!(%error, "request failed");
    Status::internal(error.to_string())
}

fn submit_status(error: SubmitError) -> Status {
    match error {
        SubmitError::Invalid(e) => invalid(&e),
        SubmitError::NoProvider(e @ SelectionError::UnknownProvider { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        SubmitError::NoProvider(e @ SelectionError::Unhealthy { .. }) => {
            Status::unavailable(e.to_string())
        }
        SubmitError::NoProvider(e) => Status::failed_precondition(e.to_string()),
        e @ SubmitError::ShuttingDown => Status::unavailable(e.to_string()),
        e @ (SubmitError::Store(_) | SubmitError::Log(_)) => internal(e),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("invalid spec: is missing"))?;
        let spec = JobSpec::try_from(spec).map_err(|e| invalid(&e))?;
        let job = self.controller.submit(spec).await.map_err(submit_status)?;
        Ok(Response::new(pb::SubmitJobResponse {
            job: Some((&job).into()),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = job_id(&request.into_inner().job_id)?;
        Ok(Response::new((&self.existing(id).await?).into()))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => DEFAULT_LIST_LIMIT,
            n if n > MAX_LIST_LIMIT => {
                return Err(Status::invalid_argument(format!(
                    "invalid limit: {n} exceeds the maximum of {MAX_LIST_LIMIT}"
                )));
            }
            n => n,
        };
        let jobs = self.controller.list(limit).await.map_err(internal)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(Into::into).collect(),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let id = job_id(&request.into_inner().job_id)?;
        let outcome = self
            .controller
            .cancel(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("job {id} not found")))?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some((&outcome.job).into()),
            cancel_requested: outcome.requested,
        }))
    }

    type FollowJobStream = EventStream;

    async fn follow_job(
        &self,
        request: Request<pb::FollowJobRequest>,
    ) -> Result<Response<Self::FollowJobStream>, Status> {
        let request = request.into_inner();
        let id = job_id(&request.job_id)?;
        let watch = if request.follow {
            self.controller.watch(id)
        } else {
            None
        };
        let job = match &watch {
            Some(rx) => rx.borrow().clone(),
            None => self.existing(id).await?,
        };
        // A snapshot reads what is on disk now and ends; a follow tracks the live log.
        let logs = self.controller.logs();
        let follower = if request.include_output {
            let follower = if request.follow {
                logs.follow(id, request.from_seq)
            } else {
                logs.snapshot(id, request.from_seq)
            };
            Some(follower.map_err(internal)?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(16);
        let controller = self.controller.clone();
        tokio::spawn(
            async move {
                if let Err(closed) = follow(controller, job, watch, follower, &tx).await {
                    debug!(reason = closed, "follower stopped");
                }
            }
            .instrument(info_span!("follow", job.id = %id)),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type EventSender = mpsc::Sender<Result<pb::JobEvent, Status>>;

async fn send(tx: &EventSender, event: JobEvent) -> Result<(), &'static str> {
    tx.send(Ok(event.into()))
        .await
        .map_err(|_| "client went away")
}

async fn send_status(tx: &EventSender, job: &Job) -> Result<(), &'static str> {
    let state = JobEvent::State {
        state: job.state.clone(),
        detail: job.detail.clone(),
    };
    send(tx, state).await
}

/// Sends the rest of the log; the log must be closed.
async fn drain(follower: Option<&mut LogFollower>, tx: &EventSender) -> Result<(), &'static str> {
    let Some(follower) = follower else {
        return Ok(());
    };
    loop {
        match follower.next_batch().await {
            Ok(Some(batch)) => {
                for chunk in batch {
                    send(tx, JobEvent::Output(chunk)).await?;
                }
            }
            Ok(None) => return Ok(()),
            Err(error) => {
                let _ = tx.send(Err(internal(error))).await;
                return Err("reading the log failed");
            }
        }
    }
}

/// History first, then live output and state changes; the terminal state comes last,
/// after every byte of output (the controller closes the log before it ends a job).
async fn follow(
    controller: JobController,
    mut job: Job,
    watch: Option<tokio::sync::watch::Receiver<Job>>,
    mut follower: Option<LogFollower>,
    tx: &EventSender,
) -> Result<(), &'static str> {
    let Some(mut watch) = watch else {
        drain(follower.as_mut(), tx).await?;
        return send_status(tx, &job).await;
    };
    send_status(tx, &job).await?;
    loop {
        tokio::select! {
            next = next_output(&mut follower) => match next {
                Ok(Some(batch)) => {
                    for chunk in batch {
                        send(tx, JobEvent::Output(chunk)).await?;
                    }
                }
                Ok(None) => follower = None,
                Err(error) => {
                    let _ = tx.send(Err(internal(error))).await;
                    return Err("reading the log failed");
                }
            },
            changed = watch.changed() => {
                let latest = if changed.is_ok() {
                    watch.borrow_and_update().clone()
                } else {
                    // The job left the active set: its final state is in the store.
                    match controller.get(job.id).await {
                        Ok(Some(stored)) => stored,
                        _ => return Err("job vanished"),
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

/// The next output batch, or never when output is not followed or has ended.
async fn next_output(
    follower: &mut Option<LogFollower>,
) -> std::io::Result<Option<Vec<OutputChunk>>> {
    match follower {
        Some(follower) => follower.next_batch().await,
        None => std::future::pending().await,
    }
}
