//! Conversions between `hodei.v1` wire messages and domain types.

use std::time::Duration;

use bytes::Bytes;
use hodei_proto::v1 as pb;
use time::OffsetDateTime;

use crate::{
    job::{FailureReason, Job, JobId, JobSpec, JobState, ProcessExit, ValidationError, WorkerId},
    logs::{OutputChunk, OutputStream},
};

/// Builds a validated spec from the wire; the error names the offending field.
pub fn spec_from_pb(spec: pb::JobSpec) -> Result<JobSpec, ValidationError> {
    let cpu = non_empty(spec.cpu)
        .map(|v| {
            v.parse()
                .map_err(|e| ValidationError::new("cpu", format!("{e}")))
        })
        .transpose()?;
    let memory = non_empty(spec.memory)
        .map(|v| {
            v.parse()
                .map_err(|e| ValidationError::new("memory", format!("{e}")))
        })
        .transpose()?;
    if spec.timeout_ms == 0 {
        return Err(ValidationError::new("timeout", "must be greater than zero"));
    }
    let spec = JobSpec {
        name: spec.name,
        command: spec.command,
        args: spec.args,
        env: spec.env.into_iter().collect(),
        working_dir: non_empty(spec.working_dir),
        timeout: Duration::from_millis(spec.timeout_ms),
        cpu,
        memory,
        image: spec.image,
        labels: spec.labels.into_iter().collect(),
        provider: spec.provider,
    };
    spec.validate()?;
    Ok(spec)
}

/// The wire form of a spec.
#[must_use]
pub fn spec_to_pb(spec: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        name: spec.name.clone(),
        command: spec.command.clone(),
        args: spec.args.clone(),
        env: spec.env.clone().into_iter().collect(),
        working_dir: spec.working_dir.clone().unwrap_or_default(),
        timeout_ms: millis(spec.timeout),
        cpu: spec.cpu.map(|c| c.to_string()).unwrap_or_default(),
        memory: spec.memory.map(|m| m.to_string()).unwrap_or_default(),
        image: spec.image.clone(),
        labels: spec.labels.clone().into_iter().collect(),
        provider: spec.provider.clone(),
    }
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn unix_ms(at: Option<OffsetDateTime>) -> i64 {
    at.map_or(0, |t| {
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    })
}

fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    (ms != 0)
        .then(|| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
        .flatten()
}

fn exit_reason(exit: ProcessExit) -> pb::terminal_reason::Kind {
    match exit {
        ProcessExit::Code(code) => pb::terminal_reason::Kind::ExitCode(code),
        ProcessExit::Signal(signal) => pb::terminal_reason::Kind::Signal(signal),
    }
}

/// The wire form of a state with its detail.
#[must_use]
pub fn status_to_pb(state: &JobState, detail: Option<&str>) -> pb::JobStatus {
    use pb::terminal_reason::Kind;
    let (phase, kind) = match state {
        JobState::Queued => (pb::JobPhase::Queued, None),
        JobState::Provisioning => (pb::JobPhase::Provisioning, None),
        JobState::Running => (pb::JobPhase::Running, None),
        JobState::Succeeded => (pb::JobPhase::Succeeded, Some(Kind::ExitCode(0))),
        JobState::Failed { reason } => (
            pb::JobPhase::Failed,
            Some(match reason {
                FailureReason::Exit { exit } => exit_reason(*exit),
                FailureReason::CommandNotStarted { message } => {
                    Kind::ProviderFailure(pb::ProviderFailure {
                        provider: String::new(),
                        reason: "CommandNotStarted".into(),
                        message: message.clone(),
                    })
                }
                FailureReason::ProviderFailure {
                    provider,
                    reason,
                    message,
                } => Kind::ProviderFailure(pb::ProviderFailure {
                    provider: provider.clone(),
                    reason: reason.clone(),
                    message: message.clone(),
                }),
                FailureReason::WorkerLost { message } => Kind::WorkerLost(pb::WorkerLost {
                    message: message.clone(),
                }),
                FailureReason::RegistrationTimeout { waited } => {
                    Kind::RegistrationTimeout(pb::RegistrationTimeout {
                        waited_ms: millis(*waited),
                    })
                }
                FailureReason::ServerRestarted => Kind::ServerRestarted(pb::ServerRestarted {}),
            }),
        ),
        JobState::Cancelled { exit } => (
            pb::JobPhase::Cancelled,
            Some(Kind::Cancelled(pb::Cancelled {
                exit_code: exit.and_then(|e| match e {
                    ProcessExit::Code(c) => Some(c),
                    ProcessExit::Signal(_) => None,
                }),
                signal: exit.and_then(|e| match e {
                    ProcessExit::Signal(s) => Some(s),
                    ProcessExit::Code(_) => None,
                }),
            })),
        ),
        JobState::TimedOut { timeout, .. } => (
            pb::JobPhase::TimedOut,
            Some(Kind::TimedOut(pb::TimedOut {
                timeout_ms: millis(*timeout),
            })),
        ),
    };
    pb::JobStatus {
        phase: phase.into(),
        reason: kind.map(|kind| pb::TerminalReason { kind: Some(kind) }),
        detail: detail.unwrap_or_default().to_owned(),
    }
}

/// A state from the wire. Unknown or inconsistent input becomes an error naming the field.
pub fn status_from_pb(
    status: &pb::JobStatus,
    timeout: Duration,
) -> Result<JobState, ValidationError> {
    use pb::terminal_reason::Kind;
    let phase = pb::JobPhase::try_from(status.phase).map_err(|_| {
        ValidationError::new("status.phase", format!("unknown phase {}", status.phase))
    })?;
    let kind = status.reason.as_ref().and_then(|r| r.kind.clone());
    let missing = || ValidationError::new("status.reason", "a terminal phase needs a reason");
    Ok(match phase {
        pb::JobPhase::Unspecified => {
            return Err(ValidationError::new("status.phase", "is unspecified"));
        }
        pb::JobPhase::Queued => JobState::Queued,
        pb::JobPhase::Provisioning => JobState::Provisioning,
        pb::JobPhase::Running => JobState::Running,
        pb::JobPhase::Succeeded => JobState::Succeeded,
        pb::JobPhase::Failed => JobState::Failed {
            reason: match kind.ok_or_else(missing)? {
                Kind::ExitCode(code) => FailureReason::Exit {
                    exit: ProcessExit::Code(code),
                },
                Kind::Signal(signal) => FailureReason::Exit {
                    exit: ProcessExit::Signal(signal),
                },
                Kind::ProviderFailure(f)
                    if f.reason == "CommandNotStarted" && f.provider.is_empty() =>
                {
                    FailureReason::CommandNotStarted { message: f.message }
                }
                Kind::ProviderFailure(f) => FailureReason::ProviderFailure {
                    provider: f.provider,
                    reason: f.reason,
                    message: f.message,
                },
                Kind::WorkerLost(w) => FailureReason::WorkerLost { message: w.message },
                Kind::RegistrationTimeout(r) => FailureReason::RegistrationTimeout {
                    waited: Duration::from_millis(r.waited_ms),
                },
                Kind::ServerRestarted(_) => FailureReason::ServerRestarted,
                Kind::Cancelled(_) | Kind::TimedOut(_) => {
                    return Err(ValidationError::new(
                        "status.reason",
                        "does not match phase FAILED",
                    ));
                }
            },
        },
        pb::JobPhase::Cancelled => {
            let exit = match kind {
                Some(Kind::Cancelled(c)) => c
                    .signal
                    .map(ProcessExit::Signal)
                    .or(c.exit_code.map(ProcessExit::Code)),
                _ => None,
            };
            JobState::Cancelled { exit }
        }
        pb::JobPhase::TimedOut => {
            let timeout = match kind {
                Some(Kind::TimedOut(t)) => Duration::from_millis(t.timeout_ms),
                _ => timeout,
            };
            JobState::TimedOut {
                timeout,
                exit: None,
            }
        }
    })
}

/// The wire form of a job.
#[must_use]
pub fn job_to_pb(job: &Job) -> pb::Job {
    pb::Job {
        id: job.id.to_string(),
        spec: Some(spec_to_pb(&job.spec)),
        status: Some(status_to_pb(&job.state, job.detail.as_deref())),
        provider: job.provider.clone(),
        worker_id: job.worker_id.map(|w| w.to_string()).unwrap_or_default(),
        created_at_unix_ms: unix_ms(Some(job.created_at)),
        started_at_unix_ms: unix_ms(job.started_at),
        finished_at_unix_ms: unix_ms(job.finished_at),
    }
}

/// A job from the wire, as a client sees it.
pub fn job_from_pb(job: pb::Job) -> Result<Job, ValidationError> {
    let spec = spec_from_pb(
        job.spec
            .ok_or_else(|| ValidationError::new("job.spec", "is missing"))?,
    )?;
    let status = job
        .status
        .ok_or_else(|| ValidationError::new("job.status", "is missing"))?;
    let state = status_from_pb(&status, spec.timeout)?;
    Ok(Job {
        id: job.id.parse()?,
        state,
        detail: non_empty(status.detail),
        provider: job.provider,
        worker_id: non_empty(job.worker_id)
            .map(|w| w.parse::<WorkerId>())
            .transpose()?,
        created_at: from_unix_ms(job.created_at_unix_ms).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        started_at: from_unix_ms(job.started_at_unix_ms),
        finished_at: from_unix_ms(job.finished_at_unix_ms),
        spec,
    })
}

/// Parses a job id field of a request.
pub fn job_id_from_pb(id: &str) -> Result<JobId, ValidationError> {
    id.parse()
}

/// The wire form of an output chunk.
#[must_use]
pub fn chunk_to_pb(chunk: OutputChunk) -> pb::OutputChunk {
    pb::OutputChunk {
        seq: chunk.seq,
        stream: match chunk.stream {
            OutputStream::Stdout => pb::OutputStream::Stdout,
            OutputStream::Stderr => pb::OutputStream::Stderr,
        }
        .into(),
        data: chunk.data.to_vec(),
        emitted_at_unix_us: chunk.emitted_at_us,
    }
}

/// An output chunk from the wire.
pub fn chunk_from_pb(chunk: pb::OutputChunk) -> Result<OutputChunk, ValidationError> {
    let stream = match pb::OutputStream::try_from(chunk.stream) {
        Ok(pb::OutputStream::Stdout) => OutputStream::Stdout,
        Ok(pb::OutputStream::Stderr) => OutputStream::Stderr,
        _ => {
            return Err(ValidationError::new(
                "output.chunks.stream",
                format!("unknown stream {}", chunk.stream),
            ));
        }
    };
    if chunk.seq == 0 {
        return Err(ValidationError::new(
            "output.chunks.seq",
            "sequence numbers start at 1",
        ));
    }
    Ok(OutputChunk {
        seq: chunk.seq,
        stream,
        data: Bytes::from(chunk.data),
        emitted_at_us: chunk.emitted_at_unix_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_memory_on_the_wire_names_memory() {
        let spec = pb::JobSpec {
            command: "true".into(),
            memory: "abc".into(),
            timeout_ms: 1000,
            ..Default::default()
        };
        let err = spec_from_pb(spec).unwrap_err();
        assert_eq!(err.field(), "memory");
        assert!(err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn zero_timeout_on_the_wire_names_timeout() {
        let spec = pb::JobSpec {
            command: "true".into(),
            ..Default::default()
        };
        assert_eq!(spec_from_pb(spec).unwrap_err().field(), "timeout");
    }

    #[test]
    fn jobs_round_trip_through_the_wire() {
        let spec = JobSpec::builder("sh")
            .args(["-c", "exit 3"])
            .cpu("500m".parse().unwrap())
            .build()
            .unwrap();
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::from_exit(ProcessExit::Code(3)),
            JobState::from_exit(ProcessExit::Signal(9)),
            JobState::Cancelled {
                exit: Some(ProcessExit::Signal(15)),
            },
            JobState::Failed {
                reason: FailureReason::ProviderFailure {
                    provider: "kubernetes".into(),
                    reason: "ImagePullBackOff".into(),
                    message: "pull failed".into(),
                },
            },
            JobState::Failed {
                reason: FailureReason::CommandNotStarted {
                    message: "not found".into(),
                },
            },
            JobState::Failed {
                reason: FailureReason::RegistrationTimeout {
                    waited: Duration::from_secs(30),
                },
            },
        ] {
            let mut job = Job::new(spec.clone(), "local");
            job.created_at = from_unix_ms(unix_ms(Some(job.created_at))).unwrap();
            job.state = state;
            job.detail = Some("note".into());
            assert_eq!(job_from_pb(job_to_pb(&job)).unwrap(), job);
        }
    }
}
