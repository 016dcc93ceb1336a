//! The worker-facing gRPC `WorkerService`: registration, output, heartbeats, results.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use hodei_proto::v1::{
    self as pb, server_message, worker_message, worker_service_server::WorkerService,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    controller::{FromWorker, JobController, StopReason, ToWorker, WorkerLink, WorkerOutcome},
    job::{ProcessExit, WorkerId},
    logs::JobLog,
    wire,
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

fn message(message: server_message::Message) -> Result<pb::ServerMessage, Status> {
    Ok(pb::ServerMessage {
        message: Some(message),
    })
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
        let Some(worker_message::Message::Register(register)) = first.message else {
            return Err(Status::invalid_argument(
                "invalid message: the first message must be register",
            ));
        };
        let worker_id: WorkerId = register
            .worker_id
            .parse()
            .map_err(|e: crate::job::ValidationError| Status::invalid_argument(e.to_string()))?;
        if let Err(error) = self
            .controller
            .tokens()
            .redeem(worker_id, &register.otp_token)
        {
            warn!(worker.id = %worker_id, %error, "worker registration refused");
            return Err(Status::unauthenticated(format!(
                "invalid otp_token: {error}"
            )));
        }
        let pending = self.controller.sessions().claim(worker_id).ok_or_else(|| {
            Status::failed_precondition(format!("no job is waiting for worker {worker_id}"))
        })?;
        let (to_worker, to_worker_rx) = mpsc::channel(16);
        let (from_worker_tx, from_worker) = mpsc::channel(64);
        let (outbound, outbound_rx) = mpsc::channel(64);
        pending
            .attach
            .send(WorkerLink {
                to_worker,
                from_worker,
            })
            .map_err(|_| Status::failed_precondition("the job stopped waiting for this worker"))?;
        let span = info_span!("worker_stream", worker.id = %worker_id, job.id = %pending.job_id);
        info!(parent: &span, version = %register.worker_version, "worker attached");
        tokio::spawn(forward_to_worker(to_worker_rx, outbound.clone()).instrument(span.clone()));
        tokio::spawn(
            read_from_worker(inbound, pending.log, from_worker_tx, outbound).instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound_rx))))
    }
}

async fn forward_to_worker(mut commands: mpsc::Receiver<ToWorker>, outbound: Outbound) {
    while let Some(command) = commands.recv().await {
        let converted = match command {
            ToWorker::Assign(a) => server_message::Message::Assignment(pb::Assignment {
                job_id: a.job_id.to_string(),
                spec: Some(wire::spec_to_pb(&a.spec)),
                heartbeat_interval_ms: wire::millis(a.heartbeat_interval),
                kill_grace_ms: wire::millis(a.kill_grace),
            }),
            ToWorker::Stop(reason) => server_message::Message::Cancel(pb::CancelJob {
                reason: match reason {
                    StopReason::Cancelled => pb::CancelReason::User,
                    StopReason::TimedOut => pb::CancelReason::Timeout,
                    StopReason::Shutdown => pb::CancelReason::Shutdown,
                }
                .into(),
            }),
            ToWorker::ResultAccepted => {
                server_message::Message::ResultAccepted(pb::ResultAccepted {})
            }
        };
        if outbound.send(message(converted)).await.is_err() {
            return;
        }
    }
}

async fn read_from_worker(
    mut inbound: Streaming<pb::WorkerMessage>,
    log: Arc<JobLog>,
    controller: mpsc::Sender<FromWorker>,
    outbound: Outbound,
) {
    let broken = loop {
        let received = tokio::select! {
            received = inbound.message() => received,
            // The job is over: end the stream even if the worker does not.
            () = controller.closed() => return,
        };
        let next = match received {
            Ok(Some(pb::WorkerMessage { message: Some(m) })) => m,
            Ok(Some(_)) => break "the worker sent an empty message".to_owned(),
            Ok(None) => break "the worker closed its stream".to_owned(),
            Err(status) => break format!("the worker's stream failed: {}", status.message()),
        };
        match next {
            worker_message::Message::Output(batch) => match store_output(&log, batch) {
                Ok(seq) => {
                    let _ = controller.try_send(FromWorker::Output);
                    if outbound
                        .send(message(server_message::Message::Ack(pb::OutputAck { seq })))
                        .await
                        .is_err()
                    {
                        break "the worker stopped reading".to_owned();
                    }
                }
                Err(status) => {
                    let reason = status.message().to_owned();
                    let _ = outbound.send(Err(status)).await;
                    break reason;
                }
            },
            worker_message::Message::Heartbeat(_) => {
                let _ = controller.try_send(FromWorker::Alive);
            }
            worker_message::Message::Result(result) => {
                let outcome = match result.outcome {
                    Some(pb::job_result::Outcome::ExitCode(c)) => {
                        WorkerOutcome::Exit(ProcessExit::Code(c))
                    }
                    Some(pb::job_result::Outcome::Signal(s)) => {
                        WorkerOutcome::Exit(ProcessExit::Signal(s))
                    }
                    Some(pb::job_result::Outcome::SpawnError(m)) => WorkerOutcome::SpawnFailed(m),
                    None => {
                        let _ = outbound
                            .send(Err(Status::invalid_argument(
                                "invalid result.outcome: is missing",
                            )))
                            .await;
                        break "the worker sent a result without an outcome".to_owned();
                    }
                };
                debug!(?outcome, "worker reported the result");
                let report = FromWorker::Result {
                    outcome,
                    last_seq: result.last_seq,
                };
                if controller.send(report).await.is_err() {
                    return;
                }
            }
            worker_message::Message::Register(_) => {
                let _ = outbound
                    .send(Err(Status::invalid_argument(
                        "invalid message: already registered",
                    )))
                    .await;
                break "the worker registered twice".to_owned();
            }
        }
    };
    debug!(reason = %broken, "worker stream ended");
    let _ = controller.send(FromWorker::Broken(broken)).await;
}

fn store_output(log: &JobLog, batch: pb::OutputBatch) -> Result<u64, Status> {
    let chunks = batch
        .chunks
        .into_iter()
        .map(wire::chunk_from_pb)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
    let lines: usize = chunks
        .iter()
        .map(|c| memchr::memchr_iter(b'\n', &c.data).count())
        .sum();
    let stored = log.append(&chunks).map_err(|e| match e {
        crate::logs::AppendError::Io(_) => Status::internal(e.to_string()),
        e => Status::invalid_argument(format!("invalid output: {e}")),
    })?;
    crate::observe::output_stored(bytes, lines);
    Ok(stored)
}
