//! The worker's stream to the server: dialing, registering, and re-attaching with its
//! resume credential when the stream breaks while the job runs.

use std::time::Duration;

use hodei_proto::v1 as pb;
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};
use tracing::{debug, info, warn};

use super::{WorkerAgent, WorkerError};
use crate::{
    client::ClientTls,
    controller::ResumeCredential,
    server::WORKER_API_MAX_MESSAGE_BYTES,
    wire::{Registration, Resumption, ServerMessage, WorkerMessage},
};

/// Connection attempts before a first registration gives up; with the backoff below about
/// 30 s in all, so a busy or restarting server does not lose a starting worker.
const CONNECT_ATTEMPTS: u32 = 15;
/// Registration attempts while the server cannot check the worker's identity; with the
/// backoff in [`register`] about a minute in all.
const REGISTER_ATTEMPTS: u32 = 15;
/// Longest a resume attempt (connect and the server's answer) may take.
const RESUME_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// One open stream.
pub(super) struct Link {
    outbound: mpsc::Sender<pb::WorkerMessage>,
    inbound: Streaming<pb::ServerMessage>,
}

impl Link {
    pub async fn send(&self, message: WorkerMessage) -> Result<(), WorkerError> {
        self.outbound
            .send(message.into())
            .await
            .map_err(|_| WorkerError::ConnectionLost("the outbound stream closed".into()))
    }

    pub async fn receive(&mut self) -> Result<ServerMessage, WorkerError> {
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

/// Connects and registers. A registration the server could not check now (UNAVAILABLE,
/// e.g. its platform's API is down) is tried again with backoff; a refusal is final.
pub(super) async fn register(agent: &WorkerAgent) -> Result<Link, WorkerError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let registration = WorkerMessage::Register(Registration {
            worker_id: agent.worker_id,
            credential: agent.credential.clone(),
            worker_version: env!("CARGO_PKG_VERSION").to_owned(),
        });
        let opened = match dial(agent, CONNECT_ATTEMPTS).await {
            Ok(channel) => open(channel, registration).await,
            Err(e) => Err(e),
        };
        match opened {
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

async fn dial(agent: &WorkerAgent, attempts: u32) -> Result<Channel, WorkerError> {
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
    loop {
        attempt += 1;
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(source) if attempt >= attempts => {
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
    }
}

/// Opens the stream with `first` as its first message.
async fn open(channel: Channel, first: WorkerMessage) -> Result<Link, WorkerError> {
    let (outbound, outbound_rx) = mpsc::channel(32);
    outbound
        .send(first.into())
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

/// The stream of a worker whose job runs: open, or broken and being re-attached with
/// backoff until the reconnect window passes.
pub(super) struct Connection<'a> {
    agent: &'a WorkerAgent,
    link: Option<Link>,
    credential: ResumeCredential,
    /// Since when the stream is broken, while it is.
    lost_at: Option<Instant>,
    next_attempt: Instant,
    attempt: u32,
}

impl<'a> Connection<'a> {
    pub fn new(agent: &'a WorkerAgent, link: Link, credential: ResumeCredential) -> Self {
        Self {
            agent,
            link: Some(link),
            credential,
            lost_at: None,
            next_attempt: Instant::now(),
            attempt: 0,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// When the next resume attempt is due.
    pub fn next_attempt(&self) -> Instant {
        self.next_attempt
    }

    /// Sends on the open stream; a failed send marks it broken. Nothing is sent while
    /// the stream is broken.
    pub async fn send(&mut self, message: WorkerMessage) {
        let Some(link) = &self.link else { return };
        if let Err(error) = link.send(message).await {
            self.broken(&error);
        }
    }

    /// The next message on the open stream; never resolves while the stream is broken.
    /// A broken stream is noted and returned as `None`; protocol errors are returned.
    pub async fn receive(&mut self) -> Result<Option<ServerMessage>, WorkerError> {
        let Some(link) = &mut self.link else {
            return Ok(std::future::pending().await);
        };
        match link.receive().await {
            Ok(message) => Ok(Some(message)),
            Err(error @ WorkerError::ConnectionLost(_)) => {
                self.broken(&error);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Drops the stream and schedules the first resume attempt.
    pub fn broken(&mut self, error: &WorkerError) {
        if self.link.take().is_some() {
            warn!(%error, "lost the server; the job keeps running while the worker reconnects");
            self.lost_at = Some(Instant::now());
            self.attempt = 0;
            self.next_attempt = Instant::now() + crate::backoff::reconnect_delay(self.attempt);
        }
    }

    /// One resume attempt. `Ok(Some(last_seq))` once re-attached, with the last output
    /// chunk the server has stored; `Ok(None)` when it failed and another is scheduled.
    /// An error when the server refused for good or the reconnect window has passed.
    pub async fn try_resume(&mut self) -> Result<Option<u64>, WorkerError> {
        if self.link.is_some() {
            return Ok(None);
        }
        let resume = WorkerMessage::Resume(Resumption {
            worker_id: self.agent.worker_id,
            credential: self.credential.clone(),
        });
        let attempt = async {
            let mut link = open(dial(self.agent, 1).await?, resume).await?;
            match link.receive().await? {
                ServerMessage::Resumed {
                    last_seq,
                    credential,
                } => Ok((link, last_seq, credential)),
                other => Err(WorkerError::Protocol(format!(
                    "expected resumed, got {other:?}"
                ))),
            }
        };
        let result = tokio::time::timeout(RESUME_ATTEMPT_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(WorkerError::ConnectionLost(
                    "the resume attempt timed out".into(),
                ))
            });
        match result {
            Ok((link, last_seq, credential)) => {
                info!(
                    last_seq,
                    away = ?self.lost_at.map(|at| at.elapsed()),
                    "re-attached to the server"
                );
                self.link = Some(link);
                self.credential = credential;
                self.lost_at = None;
                Ok(Some(last_seq))
            }
            Err(WorkerError::Refused(status)) if is_final(status.code()) => {
                Err(WorkerError::Refused(status))
            }
            Err(error) => {
                let window = self.agent.reconnect_window;
                let lost_at = *self.lost_at.get_or_insert_with(Instant::now);
                if lost_at.elapsed() >= window {
                    return Err(WorkerError::ConnectionLost(format!(
                        "could not reconnect within {} ({error})",
                        humantime::format_duration(window)
                    )));
                }
                self.attempt += 1;
                self.next_attempt = Instant::now() + crate::backoff::reconnect_delay(self.attempt);
                debug!(%error, attempt = self.attempt, "resume attempt failed; retrying");
                Ok(None)
            }
        }
    }
}

/// Refusals a later attempt cannot change: the server knows the job is gone or the
/// credential is wrong.
fn is_final(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unauthenticated
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::InvalidArgument
            | tonic::Code::PermissionDenied
    )
}
