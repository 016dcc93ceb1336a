//! One worker's conversation with the server, from registration to the accepted result.

use std::{future::Future, time::Duration};

use hodei_proto::v1 as pb;
use nix::sys::signal::Signal;
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    WorkerAgent, WorkerError, oom,
    output::OutputSequencer,
    process::{DRAIN_AFTER_EXIT, JobProcess, OutputPiece, Sandbox},
};
use crate::{
    client::ClientTls,
    controller::WorkerOutcome,
    job::{JobId, ProcessExit},
    server::WORKER_API_MAX_MESSAGE_BYTES,
    wire::{Registration, ServerMessage, WorkerMessage},
};

/// Pieces of output buffered between the pipes and the sender.
const PIECE_QUEUE: usize = 64;
/// Shortest heartbeat interval the worker accepts, so a bad assignment cannot flood the server.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
/// Connection attempts before giving up; with the backoff below about 30 s in all, so a
/// busy or restarting server does not lose a starting worker.
const CONNECT_ATTEMPTS: u32 = 15;

/// Registration attempts while the server cannot check the worker's identity; with the
/// backoff in [`register`] about a minute in all.
const REGISTER_ATTEMPTS: u32 = 15;

/// How the job went, as reported to and accepted by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    /// The job that ran.
    pub job_id: JobId,
    /// How the command ended; `None` when it could not be started.
    pub exit: Option<ProcessExit>,
    /// Output chunks sent.
    pub chunks: u64,
}

struct Link {
    outbound: mpsc::Sender<pb::WorkerMessage>,
    inbound: Streaming<pb::ServerMessage>,
}

impl Link {
    async fn send(&self, message: WorkerMessage) -> Result<(), WorkerError> {
        self.outbound
            .send(message.into())
            .await
            .map_err(|_| WorkerError::ConnectionLost("the outbound stream closed".into()))
    }

    async fn receive(&mut self) -> Result<ServerMessage, WorkerError> {
        match self.inbound.message().await {
            Ok(Some(message)) => ServerMessage::try_from(message)
                .map_err(|e| WorkerError::Protocol(format!("the server sent an {e}"))),
            Ok(None) => Err(WorkerError::ConnectionLost(
                "the server closed the stream".into(),
            )),
            Err(status) => Err(WorkerError::ConnectionLost(status.message().to_owned())),
        }
    }
}

pub(super) async fn run(
    agent: WorkerAgent,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport, WorkerError> {
    let span = info_span!("worker", worker.id = %agent.worker_id);
    async move {
        let mut link = register(&agent).await?;
        let assignment = match link.receive().await {
            Ok(ServerMessage::Assign(a)) => a,
            Ok(other) => {
                return Err(WorkerError::Protocol(format!(
                    "expected an assignment, got {other:?}"
                )));
            }
            Err(WorkerError::ConnectionLost(message)) => {
                return Err(WorkerError::Refused(Box::new(tonic::Status::unavailable(
                    message,
                ))));
            }
            Err(e) => return Err(e),
        };
        let job_id = assignment.job_id;
        let spec = assignment.spec;
        let heartbeat = assignment.heartbeat_interval.max(MIN_HEARTBEAT);
        let kill_grace = assignment.kill_grace;
        info!(job.id = %job_id, command = %spec.command, "job assigned");

        let (pieces_tx, pieces) = mpsc::channel(PIECE_QUEUE);
        let oom_kills_before = oom::kills();
        let sandbox = Sandbox {
            scratch_base: agent.work_dir.as_deref(),
            owns_process: agent.owns_process,
        };
        let process = JobProcess::spawn(&spec, sandbox, pieces_tx);
        let (exit, chunks) = match process {
            Ok(process) => {
                let mut run = Running {
                    link: &mut link,
                    process,
                    pieces,
                    sequencer: OutputSequencer::new(agent.output_window_bytes),
                    heartbeat,
                    kill_grace,
                };
                let exit = run.until_exit(shutdown).await?;
                let last_seq = run.sequencer.last_seq();
                // Nothing of the job (processes, scratch dir) is left once it is reported.
                drop(run);
                link.send(WorkerMessage::Result {
                    outcome: oom::outcome(exit, oom_kills_before, oom::kills()),
                    last_seq,
                })
                .await?;
                (Some(exit), last_seq)
            }
            Err(message) => {
                warn!(%message, "the command could not be started");
                link.send(WorkerMessage::Result {
                    outcome: WorkerOutcome::SpawnFailed(message),
                    last_seq: 0,
                })
                .await?;
                (None, 0)
            }
        };
        await_acceptance(&mut link, agent.result_timeout).await?;
        info!(?exit, chunks, "result accepted");
        Ok(WorkerReport {
            job_id,
            exit,
            chunks,
        })
    }
    .instrument(span)
    .await
}

/// Connects and registers. A registration the server could not check now (UNAVAILABLE,
/// e.g. its platform's API is down) is tried again with backoff; a refusal is final.
async fn register(agent: &WorkerAgent) -> Result<Link, WorkerError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match connect(agent).await {
            Err(WorkerError::Refused(status))
                if status.code() == tonic::Code::Unavailable && attempt < REGISTER_ATTEMPTS =>
            {
                warn!(error = %status.message(), attempt, "the server could not check this worker's identity yet; retrying");
                tokio::time::sleep(Duration::from_secs(u64::from(attempt).min(5))).await;
            }
            result => return result,
        }
    }
}

async fn connect(agent: &WorkerAgent) -> Result<Link, WorkerError> {
    let tls = ClientTls {
        ca: agent.server_ca.clone(),
        identity: None,
    };
    let endpoint = crate::client::endpoint(&agent.server_address, &tls)
        .map_err(|source| WorkerError::Connect {
            address: agent.server_address.clone(),
            source,
        })?
        .connect_timeout(Duration::from_secs(5));
    let mut attempt = 0;
    let channel = loop {
        attempt += 1;
        match endpoint.connect().await {
            Ok(channel) => break channel,
            Err(source) if attempt >= CONNECT_ATTEMPTS => {
                return Err(WorkerError::Connect {
                    address: agent.server_address.clone(),
                    source,
                });
            }
            Err(error) => {
                debug!(%error, attempt, "connecting to the server failed; retrying");
                tokio::time::sleep(Duration::from_millis((250 * u64::from(attempt)).min(2_000)))
                    .await;
            }
        }
    };
    let (outbound, outbound_rx) = mpsc::channel(32);
    let register = WorkerMessage::Register(Registration {
        worker_id: agent.worker_id,
        credential: agent.credential.clone(),
        worker_version: env!("CARGO_PKG_VERSION").to_owned(),
    });
    outbound
        .send(register.into())
        .await
        .map_err(|_| WorkerError::ConnectionLost("the outbound stream closed".into()))?;
    let mut client = pb::worker_service_client::WorkerServiceClient::new(channel)
        .max_decoding_message_size(WORKER_API_MAX_MESSAGE_BYTES)
        .max_encoding_message_size(WORKER_API_MAX_MESSAGE_BYTES);
    let inbound = client
        .attach(ReceiverStream::new(outbound_rx))
        .await
        .map_err(|status| WorkerError::Refused(Box::new(status)))?
        .into_inner();
    Ok(Link { outbound, inbound })
}

async fn await_acceptance(link: &mut Link, limit: Duration) -> Result<(), WorkerError> {
    let deadline = Instant::now() + limit;
    loop {
        tokio::select! {
            message = link.receive() => match message? {
                ServerMessage::ResultAccepted => return Ok(()),
                ServerMessage::Ack(_) | ServerMessage::Stop(_) => {}
                ServerMessage::Assign(_) => {
                    return Err(WorkerError::Protocol("a second assignment arrived".into()));
                }
            },
            () = sleep_until(deadline) => {
                return Err(WorkerError::ConnectionLost("the server did not accept the result in time".into()));
            }
        }
    }
}

struct Running<'a> {
    link: &'a mut Link,
    process: JobProcess,
    pieces: mpsc::Receiver<OutputPiece>,
    sequencer: OutputSequencer,
    heartbeat: Duration,
    kill_grace: Duration,
}

impl Running<'_> {
    /// Streams output until the command has ended and its output is drained.
    async fn until_exit(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<ProcessExit, WorkerError> {
        tokio::pin!(shutdown);
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        let mut exit: Option<ProcessExit> = None;
        let mut drain_deadline: Option<Instant> = None;
        let mut kill_at: Option<Instant> = None;
        let mut stopping = false;
        let mut pieces_open = true;
        loop {
            if exit.is_some() && !pieces_open {
                return Ok(exit.unwrap_or(ProcessExit::Code(-1)));
            }
            let window_open = self.sequencer.window_open();
            tokio::select! {
                piece = self.pieces.recv(), if pieces_open && window_open => match piece {
                    Some(piece) => {
                        if drain_deadline.is_some() {
                            drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                        }
                        self.send_output(piece).await?;
                    }
                    None => pieces_open = false,
                },
                message = self.link.receive() => match message {
                    Ok(ServerMessage::Ack(seq)) => self.sequencer.acked(seq),
                    Ok(ServerMessage::Stop(reason)) => {
                        if !stopping {
                            info!(?reason, "the server asked to stop the job");
                            stopping = true;
                            kill_at = Some(self.terminate());
                        }
                    }
                    Ok(other) => {
                        self.abandon();
                        return Err(WorkerError::Protocol(format!("unexpected message while running: {other:?}")));
                    }
                    Err(e) => {
                        warn!(error = %e, "lost the server; killing the job");
                        self.abandon();
                        return Err(e);
                    }
                },
                status = self.process.wait(), if exit.is_none() => {
                    let ended = status.unwrap_or(ProcessExit::Code(-1));
                    debug!(?ended, "job command ended");
                    exit = Some(ended);
                    // The job ends with its command: stray background processes go too.
                    self.process.kill_leftovers();
                    drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                () = &mut shutdown, if !stopping => {
                    info!("worker asked to shut down; stopping the job");
                    stopping = true;
                    kill_at = Some(self.terminate());
                }
                () = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() && exit.is_none() => {
                    warn!("the job ignored SIGTERM; sending SIGKILL");
                    self.process.signal_group(Signal::SIGKILL);
                    kill_at = None;
                }
                () = sleep_until(drain_deadline.unwrap_or_else(Instant::now)), if drain_deadline.is_some() && pieces_open && window_open => {
                    warn!("output pipes still open after the command ended; closing them");
                    pieces_open = false;
                    while let Ok(piece) = self.pieces.try_recv() {
                        self.send_output(piece).await?;
                    }
                    self.pieces.close();
                }
                _ = heartbeat.tick() => {
                    self.send_or_abandon(WorkerMessage::Heartbeat).await?;
                }
            }
        }
    }

    /// Numbers `first` and whatever output waits behind it, and sends it as one batch.
    async fn send_output(&mut self, first: OutputPiece) -> Result<(), WorkerError> {
        let chunks = self.sequencer.batch(first, &mut self.pieces);
        self.send_or_abandon(WorkerMessage::Output(chunks)).await
    }

    /// Sends to the server; if the stream is gone, the job is killed before the error returns.
    async fn send_or_abandon(&mut self, message: WorkerMessage) -> Result<(), WorkerError> {
        let sent = self.link.send(message).await;
        if sent.is_err() {
            self.abandon();
        }
        sent
    }

    /// SIGTERM to the group now; returns when SIGKILL is due.
    fn terminate(&self) -> Instant {
        self.process.signal_group(Signal::SIGTERM);
        Instant::now() + self.kill_grace
    }

    /// Kills the job when the worker cannot go on.
    fn abandon(&self) {
        self.process.signal_group(Signal::SIGKILL);
    }
}
