//! The worker-facing gRPC `WorkerService`: registration, output, heartbeats, results.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use hodei_proto::v1::{self as pb, worker_service_server::WorkerService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    controller::{
        FromWorker, Intake, JobController, OutputIntake, RegistrationError, ResumeError, ToWorker,
        WorkerLink,
    },
    logs::{JobLog, OutputChunk},
    observe,
    wire::{Registration, Resumption, ServerMessage, WorkerMessage},
};

/// How long a connected worker has to send its registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `hodei.v1.WorkerService` for a [`JobController`].
#[derive(Debug, Clone)]
pub struct WorkerApi {
    controller: JobController,
}

impl WorkerApi {
    /// A service backed by `controller`.
    #[must_use]
    pub fn new(controller: JobController) -> Self {
        Self { controller }
    }
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;
type Outbound = mpsc::Sender<Result<pb::ServerMessage, Status>>;

fn invalid(error: &crate::job::ValidationError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// UNAVAILABLE when the identity could not be checked now (the worker retries),
/// UNAUTHENTICATED otherwise. The message never contains the credential.
fn registration_refused(error: &RegistrationError) -> Status {
    let message = format!("invalid credential: {error}");
    match error {
        RegistrationError::Unavailable(_) => Status::unavailable(message),
        _ => Status::unauthenticated(message),
    }
}

/// UNAUTHENTICATED for a wrong credential, NOT_FOUND for a worker without a running job,
/// FAILED_PRECONDITION for an ended job. The message never contains the credential.
fn resume_refused(error: &ResumeError) -> Status {
    let message = format!("cannot resume: {error}");
    match error {
        ResumeError::InvalidCredential => Status::unauthenticated(message),
        ResumeError::UnknownWorker => Status::not_found(message),
        ResumeError::JobEnded => Status::failed_precondition(message),
        ResumeError::Unavailable => Status::unavailable(message),
    }
}

/// The server's side of one attached stream, once its link has gone to the job's run:
/// what the run sends goes to the worker, and what the worker sends goes to the run.
struct Relay {
    to_worker_rx: mpsc::Receiver<ToWorker>,
    from_worker_tx: mpsc::Sender<FromWorker>,
    outbound: Outbound,
    outbound_rx: mpsc::Receiver<Result<pb::ServerMessage, Status>>,
}

impl Relay {
    /// A link for the job's run and the relay that serves it.
    fn new() -> (WorkerLink, Self) {
        let (to_worker, to_worker_rx) = mpsc::channel(16);
        let (from_worker_tx, from_worker) = mpsc::channel(64);
        let (outbound, outbound_rx) = mpsc::channel(64);
        let link = WorkerLink {
            to_worker,
            from_worker,
        };
        let relay = Self {
            to_worker_rx,
            from_worker_tx,
            outbound,
            outbound_rx,
        };
        (link, relay)
    }

    /// Starts relaying in tasks under `span`; the answer is the stream to the worker.
    fn start(
        self,
        inbound: Streaming<pb::WorkerMessage>,
        output: Output,
        span: &tracing::Span,
    ) -> Response<ServerStream> {
        let Self {
            to_worker_rx,
            from_worker_tx,
            outbound,
            outbound_rx,
        } = self;
        tokio::spawn(forward_to_worker(to_worker_rx, outbound.clone()).instrument(span.clone()));
        tokio::spawn(
            read_from_worker(inbound, output, from_worker_tx, outbound).instrument(span.clone()),
        );
        Response::new(Box::pin(ReceiverStream::new(outbound_rx)))
    }
}

impl WorkerApi {
    /// Re-attaches a running job's worker: checks and renews its resume credential, tells
    /// it the last stored chunk, and hands the new stream to the job's run.
    async fn resume(
        &self,
        inbound: Streaming<pb::WorkerMessage>,
        resumption: Resumption,
    ) -> Result<Response<ServerStream>, Status> {
        let Resumption {
            worker_id,
            credential,
        } = resumption;
        let resumed = self
            .controller
            .resume_worker(worker_id, &credential)
            .await
            .map_err(|error| {
                warn!(worker.id = %worker_id, %error, "worker resume refused");
                resume_refused(&error)
            })?;
        let (link, relay) = Relay::new();
        // The answer goes out before anything the job's run sends on the new stream.
        let last_seq = resumed.log.last_seq();
        relay
            .outbound
            .try_send(Ok(ServerMessage::Resumed {
                last_seq,
                credential: resumed.credential,
            }
            .into()))
            .map_err(|_| Status::internal("the new stream is not writable"))?;
        resumed
            .relink
            .send(link)
            .await
            .map_err(|_| resume_refused(&ResumeError::JobEnded))?;
        observe::worker_reconnected();
        let span = info_span!("worker_stream", worker.id = %worker_id, job.id = %resumed.job_id);
        info!(parent: &span, last_seq, "worker re-attached");
        let output = Output {
            log: resumed.log,
            intake: self.controller.intake().clone(),
            resumed_after: Some(last_seq),
            first_expected: None,
        };
        Ok(relay.start(inbound, output, &span))
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type AttachStream = ServerStream;

    async fn attach(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no registration within 10s"))??
            .ok_or_else(|| Status::invalid_argument("the stream closed before registration"))?;
        let register = match WorkerMessage::try_from(first).map_err(|e| invalid(&e))? {
            WorkerMessage::Register(register) => register,
            WorkerMessage::Resume(resumption) => return self.resume(inbound, resumption).await,
            _ => {
                return Err(Status::invalid_argument(
                    "invalid message: the first message must be register or resume",
                ));
            }
        };
        let Registration {
            worker_id,
            credential,
            worker_version,
        } = register;
        let pending = self
            .controller
            .registrations()
            .redeem(worker_id, &credential)
            .await
            .map_err(|error| {
                warn!(worker.id = %worker_id, %error, "worker registration refused");
                registration_refused(&error)
            })?;
        let (link, relay) = Relay::new();
        pending
            .attach
            .send(link)
            .map_err(|_| Status::failed_precondition("the job stopped waiting for this worker"))?;
        let span = info_span!("worker_stream", worker.id = %worker_id, job.id = %pending.job_id);
        info!(parent: &span, version = %worker_version, "worker attached");
        let output = Output {
            log: pending.log,
            intake: self.controller.intake().clone(),
            resumed_after: None,
            first_expected: (pending.first_seq > 1).then_some(pending.first_seq),
        };
        Ok(relay.start(inbound, output, &span))
    }
}

async fn forward_to_worker(mut commands: mpsc::Receiver<ToWorker>, outbound: Outbound) {
    while let Some(command) = commands.recv().await {
        let message = ServerMessage::from(command);
        if outbound.send(Ok(message.into())).await.is_err() {
            return;
        }
    }
}

/// Where a worker's output goes.
struct Output {
    log: Arc<JobLog>,
    intake: OutputIntake,
    /// On a resumed stream until its first output: the last stored chunk the worker was
    /// told, after which its resent output must start.
    resumed_after: Option<u64>,
    /// On the first stream of a job run again, until its first output: the sequence
    /// number the worker was told to start from.
    first_expected: Option<u64>,
}

async fn read_from_worker(
    mut inbound: Streaming<pb::WorkerMessage>,
    mut output: Output,
    controller: mpsc::Sender<FromWorker>,
    outbound: Outbound,
) {
    let ended = loop {
        let received = tokio::select! {
            received = inbound.message() => received,
            // The job is over: end the stream even if the worker does not.
            () = controller.closed() => return,
        };
        let next = match received {
            Ok(Some(message)) => match WorkerMessage::try_from(message) {
                Ok(next) => next,
                Err(error) => {
                    let _ = outbound.send(Err(invalid(&error))).await;
                    break FromWorker::Violation(format!("the worker sent an {error}"));
                }
            },
            Ok(None) => break FromWorker::Broken("the worker closed its stream".to_owned()),
            Err(status) => {
                break FromWorker::Broken(format!(
                    "the worker's stream failed: {}",
                    status.message()
                ));
            }
        };
        match next {
            WorkerMessage::Output(chunks) => match store_output(&mut output, &chunks) {
                Ok(intake) => {
                    let seq = match intake {
                        Intake::Stored(seq) => {
                            let _ = controller.try_send(FromWorker::Output);
                            seq
                        }
                        Intake::Refused { ack, refusal } => {
                            if let Some(reason) = refusal {
                                if controller
                                    .send(FromWorker::OutputRefused(reason))
                                    .await
                                    .is_err()
                                {
                                    return;
                                }
                            } else {
                                let _ = controller.try_send(FromWorker::Alive);
                            }
                            ack
                        }
                    };
                    if outbound
                        .send(Ok(ServerMessage::Ack(seq).into()))
                        .await
                        .is_err()
                    {
                        break FromWorker::Broken("the worker stopped reading".to_owned());
                    }
                }
                Err(status) => {
                    let reason = status.message().to_owned();
                    let _ = outbound.send(Err(status)).await;
                    break FromWorker::Violation(reason);
                }
            },
            WorkerMessage::Heartbeat => {
                let _ = controller.try_send(FromWorker::Alive);
            }
            WorkerMessage::Result { outcome, last_seq } => {
                debug!(?outcome, "worker reported the result");
                if controller
                    .send(FromWorker::Result { outcome, last_seq })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            WorkerMessage::Register(_) | WorkerMessage::Resume(_) => {
                let _ = outbound
                    .send(Err(Status::invalid_argument(
                        "invalid message: already registered",
                    )))
                    .await;
                break FromWorker::Violation("the worker registered twice".to_owned());
            }
        }
    };
    debug!(how = ?ended, "worker stream ended");
    let _ = controller.send(ended).await;
}

/// Takes a batch into the job's log, under the log quota and the disk floor.
fn store_output(output: &mut Output, chunks: &[OutputChunk]) -> Result<Intake, Status> {
    if let (Some(expected), Some(first)) = (output.first_expected, chunks.first()) {
        output.first_expected = None;
        // A worker that numbers from 1 on a later attempt would have its output taken for
        // what the log already holds, and lost.
        if first.seq != expected {
            return Err(Status::failed_precondition(format!(
                "invalid output: numbered from {} but {expected} was expected; the worker is older than the server",
                first.seq
            )));
        }
    }
    if let (Some(after), Some(first)) = (output.resumed_after, chunks.first()) {
        output.resumed_after = None;
        if first.seq != after + 1 {
            warn!(
                resumed_after = after,
                first = first.seq,
                "a resumed worker's output does not start after the last stored chunk"
            );
            observe::resume_gap();
        }
    }
    let before = output.log.last_seq();
    let intake = output
        .intake
        .take(&output.log, chunks)
        .map_err(|e| match e {
            crate::logs::AppendError::Io(_) => Status::internal(e.to_string()),
            e => Status::invalid_argument(format!("invalid output: {e}")),
        })?;
    let stored = chunks
        .iter()
        .filter(|c| c.seq > before && c.seq <= output.log.last_seq());
    let (bytes, lines) = stored.fold((0, 0), |(bytes, lines), c| {
        (
            bytes + c.data.len(),
            lines + memchr::memchr_iter(b'\n', &c.data).count(),
        )
    });
    crate::observe::output_stored(bytes, lines);
    Ok(intake)
}
