//! The worker protocol (`worker.proto`): what a worker and the server say on its stream.

use std::{fmt, time::Duration};

use hodei_proto::v1::{self as pb, job_result, server_message, worker_message};

use super::{millis, missing};
use crate::{
    controller::{Assignment, ResumeCredential, StopReason, ToWorker, WorkerOutcome},
    job::{ValidationError, WorkerId},
    logs::OutputChunk,
};

/// Longest credential a worker may present; pod-bound ServiceAccount tokens are a few KiB.
pub(crate) const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;

fn bounded_credential(credential: String) -> Result<String, ValidationError> {
    bounded(credential, "register.credential")
}

fn bounded(credential: String, field: &'static str) -> Result<String, ValidationError> {
    if credential.len() > MAX_CREDENTIAL_BYTES {
        return Err(ValidationError::new(
            field,
            format!("must be at most {MAX_CREDENTIAL_BYTES} bytes"),
        ));
    }
    Ok(credential)
}

/// A worker's registration: the first message on its stream, and only the first.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Registration {
    pub worker_id: WorkerId,
    /// What proves the worker is the one the server started (a one-time token or a
    /// platform credential). Secret: never printed.
    pub credential: String,
    pub worker_version: String,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("worker_id", &self.worker_id)
            .field("credential", &"<redacted>")
            .field("worker_version", &self.worker_version)
            .finish()
    }
}

/// A worker re-attaching after its stream broke: the first message on the new stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resumption {
    pub worker_id: WorkerId,
    pub credential: ResumeCredential,
}

/// What a worker tells the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WorkerMessage {
    /// Who the worker is.
    Register(Registration),
    /// A running job's worker is back.
    Resume(Resumption),
    /// Consecutive output chunks.
    Output(Vec<OutputChunk>),
    /// The worker is alive.
    Heartbeat,
    /// How the job ended.
    Result {
        outcome: WorkerOutcome,
        /// Sequence number of the last output chunk sent (0 when none).
        last_seq: u64,
    },
}

/// What the server tells a worker.
#[derive(Debug, Clone)]
pub(crate) enum ServerMessage {
    /// Run this job.
    Assign(Box<Assignment>),
    /// Output up to and including this sequence number is stored.
    Ack(u64),
    /// Stop the job.
    Stop(StopReason),
    /// The result is stored; the worker may exit.
    ResultAccepted,
    /// The answer to a resume: output up to `last_seq` is stored; resend the rest.
    Resumed {
        last_seq: u64,
        credential: ResumeCredential,
    },
}

impl From<ToWorker> for ServerMessage {
    fn from(command: ToWorker) -> Self {
        match command {
            ToWorker::Assign(assignment) => Self::Assign(assignment),
            ToWorker::Stop(reason) => Self::Stop(reason),
            ToWorker::ResultAccepted => Self::ResultAccepted,
        }
    }
}

impl From<WorkerMessage> for pb::WorkerMessage {
    fn from(message: WorkerMessage) -> Self {
        let message = match message {
            WorkerMessage::Register(r) => worker_message::Message::Register(pb::Register {
                worker_id: r.worker_id.to_string(),
                credential: r.credential,
                worker_version: r.worker_version,
            }),
            WorkerMessage::Resume(r) => worker_message::Message::Resume(pb::Resume {
                worker_id: r.worker_id.to_string(),
                resume_credential: r.credential.expose().to_owned(),
            }),
            WorkerMessage::Output(chunks) => worker_message::Message::Output(pb::OutputBatch {
                chunks: chunks.into_iter().map(Into::into).collect(),
            }),
            WorkerMessage::Heartbeat => worker_message::Message::Heartbeat(pb::Heartbeat {}),
            WorkerMessage::Result { outcome, last_seq } => {
                worker_message::Message::Result(pb::JobResult {
                    outcome: Some(match outcome {
                        WorkerOutcome::Exit(exit) => job_result::Outcome::Exit(exit.into()),
                        WorkerOutcome::OutOfMemory(exit) => {
                            job_result::Outcome::OomKilled(exit.into())
                        }
                        WorkerOutcome::SpawnFailed(message) => {
                            job_result::Outcome::NotStarted(pb::CommandNotStarted { message })
                        }
                        WorkerOutcome::Interrupted(exit) => {
                            job_result::Outcome::Interrupted(exit.into())
                        }
                    }),
                    last_seq,
                })
            }
        };
        Self {
            message: Some(message),
        }
    }
}

impl TryFrom<pb::WorkerMessage> for WorkerMessage {
    type Error = ValidationError;

    fn try_from(message: pb::WorkerMessage) -> Result<Self, Self::Error> {
        Ok(match message.message.ok_or_else(|| missing("message"))? {
            worker_message::Message::Register(r) => Self::Register(Registration {
                worker_id: r
                    .worker_id
                    .parse()
                    .map_err(|e: ValidationError| e.within("register"))?,
                credential: bounded_credential(r.credential)?,
                worker_version: r.worker_version,
            }),
            worker_message::Message::Resume(r) => Self::Resume(Resumption {
                worker_id: r
                    .worker_id
                    .parse()
                    .map_err(|e: ValidationError| e.within("resume"))?,
                credential: ResumeCredential::new(bounded(
                    r.resume_credential,
                    "resume.resume_credential",
                )?),
            }),
            worker_message::Message::Output(batch) => Self::Output(
                batch
                    .chunks
                    .into_iter()
                    .enumerate()
                    .map(|(i, chunk)| {
                        OutputChunk::try_from(chunk)
                            .map_err(|e| e.within(&format!("output.chunks[{i}]")))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            worker_message::Message::Heartbeat(_) => Self::Heartbeat,
            worker_message::Message::Result(result) => Self::Result {
                outcome: match result.outcome.ok_or_else(|| missing("result.outcome"))? {
                    job_result::Outcome::Exit(exit) => WorkerOutcome::Exit(
                        exit.try_into()
                            .map_err(|e: ValidationError| e.within("result.exit"))?,
                    ),
                    job_result::Outcome::OomKilled(exit) => WorkerOutcome::OutOfMemory(
                        exit.try_into()
                            .map_err(|e: ValidationError| e.within("result.oom_killed"))?,
                    ),
                    job_result::Outcome::NotStarted(n) => WorkerOutcome::SpawnFailed(n.message),
                    job_result::Outcome::Interrupted(exit) => WorkerOutcome::Interrupted(
                        exit.try_into()
                            .map_err(|e: ValidationError| e.within("result.interrupted"))?,
                    ),
                },
                last_seq: result.last_seq,
            },
        })
    }
}

impl From<StopReason> for pb::StopReason {
    fn from(reason: StopReason) -> Self {
        match reason {
            StopReason::Cancelled => Self::Cancelled,
            StopReason::TimedOut => Self::TimedOut,
            StopReason::Shutdown => Self::Shutdown,
            StopReason::OutputRefused => Self::OutputRefused,
        }
    }
}

/// A stop reason from its wire number.
fn stop_reason(value: i32) -> Result<StopReason, ValidationError> {
    match pb::StopReason::try_from(value) {
        Ok(pb::StopReason::Cancelled) => Ok(StopReason::Cancelled),
        Ok(pb::StopReason::TimedOut) => Ok(StopReason::TimedOut),
        Ok(pb::StopReason::Shutdown) => Ok(StopReason::Shutdown),
        Ok(pb::StopReason::OutputRefused) => Ok(StopReason::OutputRefused),
        Ok(pb::StopReason::Unspecified) | Err(_) => Err(ValidationError::new(
            "reason",
            format!("unknown stop reason {value}"),
        )),
    }
}

impl From<&Assignment> for pb::Assignment {
    fn from(assignment: &Assignment) -> Self {
        Self {
            job_id: assignment.job_id.to_string(),
            spec: Some((&assignment.spec).into()),
            heartbeat_interval_ms: millis(assignment.heartbeat_interval),
            kill_grace_ms: millis(assignment.kill_grace),
            resume_credential: assignment.resume_credential.expose().to_owned(),
            first_seq: assignment.first_seq,
        }
    }
}

impl TryFrom<pb::Assignment> for Assignment {
    type Error = ValidationError;

    fn try_from(assignment: pb::Assignment) -> Result<Self, Self::Error> {
        Ok(Self {
            job_id: assignment.job_id.parse()?,
            spec: assignment
                .spec
                .ok_or_else(|| missing("spec"))?
                .try_into()
                .map_err(|e: ValidationError| e.within("spec"))?,
            heartbeat_interval: Duration::from_millis(assignment.heartbeat_interval_ms),
            kill_grace: Duration::from_millis(assignment.kill_grace_ms),
            resume_credential: ResumeCredential::new(bounded(
                assignment.resume_credential,
                "resume_credential",
            )?),
            first_seq: assignment.first_seq.max(1),
        })
    }
}

impl From<ServerMessage> for pb::ServerMessage {
    fn from(message: ServerMessage) -> Self {
        let message = match message {
            ServerMessage::Assign(a) => server_message::Message::Assignment((&*a).into()),
            ServerMessage::Ack(seq) => server_message::Message::Ack(pb::OutputAck { seq }),
            ServerMessage::Stop(reason) => server_message::Message::Stop(pb::StopJob {
                reason: pb::StopReason::from(reason).into(),
            }),
            ServerMessage::ResultAccepted => {
                server_message::Message::ResultAccepted(pb::ResultAccepted {})
            }
            ServerMessage::Resumed {
                last_seq,
                credential,
            } => server_message::Message::Resumed(pb::Resumed {
                last_seq,
                resume_credential: credential.expose().to_owned(),
            }),
        };
        Self {
            message: Some(message),
        }
    }
}

impl TryFrom<pb::ServerMessage> for ServerMessage {
    type Error = ValidationError;

    fn try_from(message: pb::ServerMessage) -> Result<Self, Self::Error> {
        Ok(match message.message.ok_or_else(|| missing("message"))? {
            server_message::Message::Assignment(a) => Self::Assign(Box::new(
                a.try_into()
                    .map_err(|e: ValidationError| e.within("assignment"))?,
            )),
            server_message::Message::Ack(ack) => Self::Ack(ack.seq),
            server_message::Message::Stop(stop) => {
                Self::Stop(stop_reason(stop.reason).map_err(|e| e.within("stop"))?)
            }
            server_message::Message::ResultAccepted(_) => Self::ResultAccepted,
            server_message::Message::Resumed(r) => Self::Resumed {
                last_seq: r.last_seq,
                credential: ResumeCredential::new(
                    bounded(r.resume_credential, "resume_credential")
                        .map_err(|e| e.within("resumed"))?,
                ),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{
        job::{JobId, JobSpec, ProcessExit},
        logs::OutputStream,
    };

    fn every_worker_message() -> Vec<WorkerMessage> {
        let chunk = |seq, stream, data: &'static [u8]| OutputChunk {
            seq,
            stream,
            data: Bytes::from_static(data),
            emitted_at_us: 1_700_000_000_000_000 + i64::try_from(seq).unwrap(),
        };
        vec![
            WorkerMessage::Register(Registration {
                worker_id: WorkerId::new(),
                credential: "token".into(),
                worker_version: "1.2.3".into(),
            }),
            WorkerMessage::Resume(Resumption {
                worker_id: WorkerId::new(),
                credential: ResumeCredential::new("ab".repeat(32)),
            }),
            WorkerMessage::Output(vec![]),
            WorkerMessage::Output(vec![
                chunk(1, OutputStream::Stdout, b"out\n"),
                chunk(2, OutputStream::Stderr, b"\xff\xfe"),
            ]),
            WorkerMessage::Heartbeat,
            WorkerMessage::Result {
                outcome: WorkerOutcome::Exit(ProcessExit::Code(0)),
                last_seq: 2,
            },
            WorkerMessage::Result {
                outcome: WorkerOutcome::Exit(ProcessExit::Code(3)),
                last_seq: 0,
            },
            WorkerMessage::Result {
                outcome: WorkerOutcome::Exit(ProcessExit::Signal(15)),
                last_seq: 7,
            },
            WorkerMessage::Result {
                outcome: WorkerOutcome::SpawnFailed("no such file".into()),
                last_seq: 0,
            },
            WorkerMessage::Result {
                outcome: WorkerOutcome::OutOfMemory(ProcessExit::Signal(9)),
                last_seq: 7,
            },
            WorkerMessage::Result {
                outcome: WorkerOutcome::Interrupted(ProcessExit::Signal(15)),
                last_seq: 3,
            },
        ]
    }

    fn every_server_message() -> Vec<ServerMessage> {
        let spec = JobSpec::builder("sh")
            .args(["-c", "echo hi"])
            .memory("64Mi".parse().unwrap())
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        vec![
            ServerMessage::Assign(Box::new(Assignment {
                job_id: JobId::new(),
                spec,
                heartbeat_interval: Duration::from_secs(5),
                kill_grace: Duration::from_millis(2500),
                resume_credential: ResumeCredential::new("cd".repeat(32)),
                first_seq: 42,
            })),
            ServerMessage::Ack(0),
            ServerMessage::Ack(42),
            ServerMessage::Stop(StopReason::Cancelled),
            ServerMessage::Stop(StopReason::TimedOut),
            ServerMessage::Stop(StopReason::Shutdown),
            ServerMessage::Stop(StopReason::OutputRefused),
            ServerMessage::ResultAccepted,
            ServerMessage::Resumed {
                last_seq: 0,
                credential: ResumeCredential::new("ef".repeat(32)),
            },
            ServerMessage::Resumed {
                last_seq: 17,
                credential: ResumeCredential::new("01".repeat(32)),
            },
        ]
    }

    /// `Assignment` has no `PartialEq`; this compares every field of it.
    fn same(a: &ServerMessage, b: &ServerMessage) -> bool {
        match (a, b) {
            (ServerMessage::Assign(a), ServerMessage::Assign(b)) => {
                let Assignment {
                    job_id,
                    spec,
                    heartbeat_interval,
                    kill_grace,
                    resume_credential,
                    first_seq,
                } = &**a;
                *job_id == b.job_id
                    && *spec == b.spec
                    && *heartbeat_interval == b.heartbeat_interval
                    && *kill_grace == b.kill_grace
                    && *resume_credential == b.resume_credential
                    && *first_seq == b.first_seq
            }
            (
                ServerMessage::Resumed {
                    last_seq: a,
                    credential: x,
                },
                ServerMessage::Resumed {
                    last_seq: b,
                    credential: y,
                },
            ) => a == b && x == y,
            (ServerMessage::Ack(a), ServerMessage::Ack(b)) => a == b,
            (ServerMessage::Stop(a), ServerMessage::Stop(b)) => a == b,
            (ServerMessage::ResultAccepted, ServerMessage::ResultAccepted) => true,
            _ => false,
        }
    }

    /// No wildcards: a new variant fails to compile here until the samples include it.
    #[test]
    fn the_samples_cover_every_message() {
        let worker: std::collections::BTreeSet<_> = every_worker_message()
            .iter()
            .map(|m| match m {
                WorkerMessage::Register(_) => "register",
                WorkerMessage::Resume(_) => "resume",
                WorkerMessage::Output(_) => "output",
                WorkerMessage::Heartbeat => "heartbeat",
                WorkerMessage::Result {
                    outcome: WorkerOutcome::Exit(_),
                    ..
                } => "exit",
                WorkerMessage::Result {
                    outcome: WorkerOutcome::SpawnFailed(_),
                    ..
                } => "spawn_failed",
                WorkerMessage::Result {
                    outcome: WorkerOutcome::OutOfMemory(_),
                    ..
                } => "out_of_memory",
                WorkerMessage::Result {
                    outcome: WorkerOutcome::Interrupted(_),
                    ..
                } => "interrupted",
            })
            .collect();
        assert_eq!(worker.len(), 8, "{worker:?}");
        let server: std::collections::BTreeSet<_> = every_server_message()
            .iter()
            .map(|m| match m {
                ServerMessage::Assign(_) => "assign",
                ServerMessage::Ack(_) => "ack",
                ServerMessage::Stop(StopReason::Cancelled) => "cancelled",
                ServerMessage::Stop(StopReason::TimedOut) => "timed_out",
                ServerMessage::Stop(StopReason::Shutdown) => "shutdown",
                ServerMessage::Stop(StopReason::OutputRefused) => "output_refused",
                ServerMessage::ResultAccepted => "result_accepted",
                ServerMessage::Resumed { .. } => "resumed",
            })
            .collect();
        assert_eq!(server.len(), 8, "{server:?}");
    }

    #[test]
    fn every_worker_message_round_trips() {
        for message in every_worker_message() {
            let wire = pb::WorkerMessage::from(message.clone());
            assert_eq!(WorkerMessage::try_from(wire).unwrap(), message);
        }
    }

    #[test]
    fn every_server_message_round_trips() {
        for message in every_server_message() {
            let wire = pb::ServerMessage::from(message.clone());
            let back = ServerMessage::try_from(wire).unwrap();
            assert!(same(&back, &message), "{back:?} != {message:?}");
        }
    }

    #[test]
    fn every_controller_command_has_its_message() {
        let assignment = Assignment {
            job_id: JobId::new(),
            spec: JobSpec::builder("true").build().unwrap(),
            heartbeat_interval: Duration::from_secs(5),
            kill_grace: Duration::from_secs(10),
            resume_credential: ResumeCredential::default(),
            first_seq: 1,
        };
        let cases = [
            (
                ToWorker::Assign(Box::new(assignment.clone())),
                ServerMessage::Assign(Box::new(assignment)),
            ),
            (
                ToWorker::Stop(StopReason::TimedOut),
                ServerMessage::Stop(StopReason::TimedOut),
            ),
            (ToWorker::ResultAccepted, ServerMessage::ResultAccepted),
        ];
        for (command, expected) in cases {
            let message = ServerMessage::from(command);
            assert!(same(&message, &expected), "{message:?}");
        }
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let registration = Registration {
            worker_id: WorkerId::new(),
            credential: "s3cret".into(),
            worker_version: "1".into(),
        };
        assert!(!format!("{registration:?}").contains("s3cret"));
        let secret = ResumeCredential::new("s3cret".into());
        let resume = WorkerMessage::Resume(Resumption {
            worker_id: WorkerId::new(),
            credential: secret.clone(),
        });
        let resumed = ServerMessage::Resumed {
            last_seq: 1,
            credential: secret,
        };
        assert!(!format!("{resume:?}").contains("s3cret"));
        assert!(!format!("{resumed:?}").contains("s3cret"));
    }

    #[test]
    fn bad_worker_messages_are_errors_naming_the_field() {
        let field = |message: worker_message::Message| {
            WorkerMessage::try_from(pb::WorkerMessage {
                message: Some(message),
            })
            .unwrap_err()
            .field()
            .to_owned()
        };
        assert_eq!(
            WorkerMessage::try_from(pb::WorkerMessage { message: None })
                .unwrap_err()
                .field(),
            "message"
        );
        assert_eq!(
            field(worker_message::Message::Register(pb::Register {
                worker_id: "nope".into(),
                ..Default::default()
            })),
            "register.worker_id"
        );
        assert_eq!(
            field(worker_message::Message::Register(pb::Register {
                worker_id: WorkerId::new().to_string(),
                credential: "x".repeat(MAX_CREDENTIAL_BYTES + 1),
                ..Default::default()
            })),
            "register.credential"
        );
        assert_eq!(
            field(worker_message::Message::Resume(pb::Resume {
                worker_id: "nope".into(),
                ..Default::default()
            })),
            "resume.worker_id"
        );
        assert_eq!(
            field(worker_message::Message::Resume(pb::Resume {
                worker_id: WorkerId::new().to_string(),
                resume_credential: "x".repeat(MAX_CREDENTIAL_BYTES + 1),
            })),
            "resume.resume_credential"
        );
        let good = pb::OutputChunk {
            seq: 1,
            stream: pb::OutputStream::Stdout.into(),
            ..Default::default()
        };
        assert_eq!(
            field(worker_message::Message::Output(pb::OutputBatch {
                chunks: vec![good.clone(), pb::OutputChunk { seq: 0, ..good }],
            })),
            "output.chunks[1].seq"
        );
        assert_eq!(
            field(worker_message::Message::Result(pb::JobResult {
                outcome: None,
                last_seq: 0,
            })),
            "result.outcome"
        );
        assert_eq!(
            field(worker_message::Message::Result(pb::JobResult {
                outcome: Some(job_result::Outcome::Exit(pb::ProcessExit { kind: None })),
                last_seq: 0,
            })),
            "result.exit.kind"
        );
    }

    #[test]
    fn bad_server_messages_are_errors_naming_the_field() {
        let field = |message: Option<server_message::Message>| {
            ServerMessage::try_from(pb::ServerMessage { message })
                .unwrap_err()
                .field()
                .to_owned()
        };
        assert_eq!(field(None), "message");
        for reason in [0, 99] {
            assert_eq!(
                field(Some(server_message::Message::Stop(pb::StopJob { reason }))),
                "stop.reason"
            );
        }
        let assignment = pb::Assignment::from(&Assignment {
            job_id: JobId::new(),
            spec: JobSpec::builder("true").build().unwrap(),
            heartbeat_interval: Duration::from_secs(5),
            kill_grace: Duration::from_secs(10),
            resume_credential: ResumeCredential::default(),
            first_seq: 1,
        });
        let assign = |a| Some(server_message::Message::Assignment(a));
        assert_eq!(
            field(assign(pb::Assignment {
                job_id: "x".into(),
                ..assignment.clone()
            })),
            "assignment.job_id"
        );
        assert_eq!(
            field(assign(pb::Assignment {
                spec: None,
                ..assignment.clone()
            })),
            "assignment.spec"
        );
        let mut bad_spec = assignment;
        if let Some(spec) = bad_spec.spec.as_mut() {
            spec.timeout_ms = 0;
        }
        assert_eq!(field(assign(bad_spec)), "assignment.spec.timeout");
    }
}
