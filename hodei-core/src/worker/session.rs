//! One worker's conversation with the server, from registration to the accepted result.

use std::{future::Future, time::Duration};

use nix::sys::signal::Signal;
use tokio::{
    sync::mpsc,
    time::{Instant, sleep_until},
};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    WorkerAgent, WorkerError,
    connection::{self, Connection},
    oom,
    output::OutputSequencer,
    process::{DRAIN_AFTER_EXIT, JobProcess, OutputPiece, Sandbox},
};
use crate::{
    controller::WorkerOutcome,
    job::{JobId, ProcessExit},
    wire::{ServerMessage, WorkerMessage},
};

/// Pieces of output buffered between the pipes and the sender.
const PIECE_QUEUE: usize = 64;
/// Shortest heartbeat interval the worker accepts, so a bad assignment cannot flood the server.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);

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

pub(super) async fn run(
    agent: WorkerAgent,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport, WorkerError> {
    let span = info_span!("worker", worker.id = %agent.worker_id);
    async move {
        let mut link = connection::register(&agent).await?;
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

        let mut conn = Connection::new(&agent, link, assignment.resume_credential);
        let mut sequencer =
            OutputSequencer::new(agent.output_window_bytes, agent.output_buffer_bytes)
                .starting_at(assignment.first_seq);
        let (pieces_tx, pieces) = mpsc::channel(PIECE_QUEUE);
        let oom_kills_before = oom::kills();
        let sandbox = Sandbox {
            scratch_base: agent.work_dir.as_deref(),
            owns_process: agent.owns_process,
        };
        let process = JobProcess::spawn(&spec, sandbox, pieces_tx);
        let (exit, outcome) = match process {
            Ok(process) => {
                let mut run = Running {
                    conn: &mut conn,
                    process,
                    pieces,
                    sequencer: &mut sequencer,
                    heartbeat,
                    kill_grace,
                };
                let (exit, interrupted) = run.until_exit(shutdown).await?;
                // Nothing of the job (processes, scratch dir) is left once it is reported.
                drop(run);
                let outcome = if interrupted {
                    WorkerOutcome::Interrupted(exit)
                } else {
                    oom::outcome(exit, oom_kills_before, oom::kills())
                };
                (Some(exit), outcome)
            }
            Err(message) => {
                warn!(%message, "the command could not be started");
                (None, WorkerOutcome::SpawnFailed(message))
            }
        };
        let chunks = sequencer.last_seq();
        report(&mut conn, &mut sequencer, outcome, agent.result_timeout).await?;
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

/// Sends the result and waits until the server accepts it, re-attaching (and resending
/// unacknowledged output first) as often as the stream breaks.
async fn report(
    conn: &mut Connection<'_>,
    sequencer: &mut OutputSequencer,
    outcome: WorkerOutcome,
    limit: Duration,
) -> Result<(), WorkerError> {
    let result = WorkerMessage::Result {
        outcome,
        last_seq: sequencer.last_seq(),
    };
    loop {
        while !conn.is_connected() {
            sleep_until(conn.next_attempt()).await;
            if let Some(stored) = conn.try_resume().await? {
                resend(conn, sequencer, stored).await;
            }
        }
        conn.send(result.clone()).await;
        let deadline = Instant::now() + limit;
        while conn.is_connected() {
            tokio::select! {
                message = conn.receive() => match message? {
                    Some(ServerMessage::ResultAccepted) => return Ok(()),
                    Some(ServerMessage::Ack(seq)) => sequencer.acked(seq),
                    Some(ServerMessage::Stop(_)) | None => {}
                    Some(other) => {
                        return Err(WorkerError::Protocol(format!(
                            "unexpected message after the result: {other:?}"
                        )));
                    }
                },
                () = sleep_until(deadline) => {
                    return Err(WorkerError::ConnectionLost("the server did not accept the result in time".into()));
                }
            }
        }
    }
}

/// Sends again, in order, the output the server has not stored (after `stored`).
async fn resend(conn: &mut Connection<'_>, sequencer: &mut OutputSequencer, stored: u64) {
    let batches = sequencer.resend_after(stored);
    let chunks: usize = batches.iter().map(Vec::len).sum();
    debug!(stored, chunks, "resending output the server did not store");
    for batch in batches {
        conn.send(WorkerMessage::Output(batch)).await;
    }
}

struct Running<'a, 'b> {
    conn: &'a mut Connection<'b>,
    process: JobProcess,
    pieces: mpsc::Receiver<OutputPiece>,
    sequencer: &'a mut OutputSequencer,
    heartbeat: Duration,
    kill_grace: Duration,
}

impl Running<'_, '_> {
    /// Streams output until the command has ended and its output is drained. Also says
    /// whether the worker stopped the command because it was itself told to shut down
    /// (and the server had not asked to stop the job).
    async fn until_exit(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(ProcessExit, bool), WorkerError> {
        let mut interrupted = false;
        tokio::pin!(shutdown);
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        let mut exit: Option<ProcessExit> = None;
        let mut drain_deadline: Option<Instant> = None;
        let mut kill_at: Option<Instant> = None;
        let mut stopping = false;
        let mut pieces_open = true;
        loop {
            if exit.is_some() && !pieces_open {
                return Ok((exit.unwrap_or(ProcessExit::Code(-1)), interrupted));
            }
            let connected = self.conn.is_connected();
            let next_attempt = self.conn.next_attempt();
            let window_open = self.sequencer.window_open(connected);
            tokio::select! {
                piece = self.pieces.recv(), if pieces_open && window_open => match piece {
                    Some(piece) => {
                        if drain_deadline.is_some() {
                            drain_deadline = Some(Instant::now() + DRAIN_AFTER_EXIT);
                        }
                        self.send_output(piece).await;
                    }
                    None => pieces_open = false,
                },
                message = self.conn.receive(), if connected => match message {
                    Ok(None) => {}
                    Ok(Some(ServerMessage::Ack(seq))) => self.sequencer.acked(seq),
                    Ok(Some(ServerMessage::Stop(reason))) => {
                        if !stopping {
                            info!(?reason, "the server asked to stop the job");
                            stopping = true;
                            kill_at = Some(self.terminate());
                        }
                    }
                    Ok(Some(other)) => {
                        self.abandon();
                        return Err(WorkerError::Protocol(format!("unexpected message while running: {other:?}")));
                    }
                    Err(e) => {
                        self.abandon();
                        return Err(e);
                    }
                },
                () = sleep_until(next_attempt), if !connected => {
                    match self.conn.try_resume().await {
                        Ok(Some(stored)) => resend(self.conn, self.sequencer, stored).await,
                        Ok(None) => {}
                        Err(e) => {
                            warn!(error = %e, "cannot re-attach to the server; killing the job");
                            self.abandon();
                            return Err(e);
                        }
                    }
                }
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
                    interrupted = true;
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
                        self.send_output(piece).await;
                    }
                    self.pieces.close();
                }
                _ = heartbeat.tick() => self.conn.send(WorkerMessage::Heartbeat).await,
            }
        }
    }

    /// Numbers `first` and whatever output waits behind it, and sends it as one batch
    /// (kept for later while the stream is broken).
    async fn send_output(&mut self, first: OutputPiece) {
        let chunks = self.sequencer.batch(first, &mut self.pieces);
        self.conn.send(WorkerMessage::Output(chunks)).await;
    }

    /// SIGTERM to the group now; returns when SIGKILL is due.
    fn terminate(&self) -> Instant {
        self.process.signal_group(Signal::SIGTERM);
        Instant::now() + self.kill_grace
    }

    /// Kills the job when the worker cannot go on (a protocol error, or the server gone
    /// for the whole reconnect window).
    fn abandon(&self) {
        self.process.signal_group(Signal::SIGKILL);
    }
}
