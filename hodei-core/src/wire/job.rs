//! The job protocol (`jobs.proto`): specs, exits, states, jobs, output chunks and events.

use std::time::Duration;

use bytes::Bytes;
use hodei_proto::v1::{self as pb, terminal_reason::Kind};
use time::OffsetDateTime;

use super::{millis, missing, placement};
use crate::{
    client::JobEvent,
    job::{
        Attempt, FailureClass, FailureReason, Job, JobSpec, JobState, ProcessExit, RetryOn,
        RetryPolicy, ValidationError,
    },
    logs::{OutputChunk, OutputStream},
};

/// Builds a validated spec; the error names the offending field.
impl TryFrom<pb::JobSpec> for JobSpec {
    type Error = ValidationError;

    fn try_from(spec: pb::JobSpec) -> Result<Self, Self::Error> {
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
        let ephemeral_storage = non_empty(spec.ephemeral_storage)
            .map(|v| {
                v.parse()
                    .map_err(|e| ValidationError::new("ephemeral_storage", format!("{e}")))
            })
            .transpose()?;
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
            node_selector: spec.node_selector.into_iter().collect(),
            tolerations: placement::decode_list("tolerations", spec.tolerations)?,
            node_affinity: placement::decode_list("node_affinity", spec.node_affinity)?,
            ephemeral_storage,
            class: spec.resource_class,
            secret_env: placement::decode_refs(spec.secret_env),
            secret_files: placement::decode_refs(spec.secret_files),
            retry: spec
                .retry
                .map(retry_policy)
                .transpose()?
                .unwrap_or_default(),
            priority: spec.priority,
        };
        spec.validate()?;
        Ok(spec)
    }
}

impl From<&JobSpec> for pb::JobSpec {
    fn from(spec: &JobSpec) -> Self {
        Self {
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
            node_selector: spec.node_selector.clone().into_iter().collect(),
            tolerations: spec.tolerations.iter().map(Into::into).collect(),
            node_affinity: spec.node_affinity.iter().map(Into::into).collect(),
            ephemeral_storage: spec
                .ephemeral_storage
                .map(|m| m.to_string())
                .unwrap_or_default(),
            resource_class: spec.class.clone(),
            secret_env: placement::encode_refs(&spec.secret_env),
            secret_files: placement::encode_refs(&spec.secret_files),
            retry: (!spec.retry.is_none()).then(|| pb::RetryPolicy {
                retries: spec.retry.retries,
                on: spec.retry.on.iter().map(ToString::to_string).collect(),
            }),
            priority: spec.priority,
        }
    }
}

/// A job's retry policy; a condition that does not parse is an error naming `retry.on`.
fn retry_policy(policy: pb::RetryPolicy) -> Result<RetryPolicy, ValidationError> {
    let on = policy
        .on
        .iter()
        .map(|text| {
            text.parse::<RetryOn>()
                .map_err(|e| ValidationError::new("retry.on", e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok(RetryPolicy {
        retries: policy.retries,
        on,
    })
}

impl From<ProcessExit> for pb::ProcessExit {
    fn from(exit: ProcessExit) -> Self {
        let kind = match exit {
            ProcessExit::Code(code) => pb::process_exit::Kind::Code(code),
            ProcessExit::Signal(signal) => pb::process_exit::Kind::Signal(signal),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<pb::ProcessExit> for ProcessExit {
    type Error = ValidationError;

    fn try_from(exit: pb::ProcessExit) -> Result<Self, Self::Error> {
        match exit.kind {
            Some(pb::process_exit::Kind::Code(code)) => Ok(Self::Code(code)),
            Some(pb::process_exit::Kind::Signal(signal)) => Ok(Self::Signal(signal)),
            None => Err(missing("kind")),
        }
    }
}

/// An optional exit inside a reason: absent is `None`, present must be whole.
fn optional_exit(exit: Option<pb::ProcessExit>) -> Result<Option<ProcessExit>, ValidationError> {
    exit.map(ProcessExit::try_from)
        .transpose()
        .map_err(|e| e.within("exit"))
}

impl From<&FailureReason> for pb::TerminalReason {
    fn from(reason: &FailureReason) -> Self {
        let kind = match reason {
            FailureReason::Exit { exit } => Kind::Exit((*exit).into()),
            FailureReason::OutOfMemory { exit } => Kind::OutOfMemory(pb::OutOfMemory {
                exit: Some((*exit).into()),
            }),
            FailureReason::CommandNotStarted { message } => {
                Kind::CommandNotStarted(pb::CommandNotStarted {
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
            FailureReason::LogLimitExceeded { limit_bytes } => {
                Kind::LogLimitExceeded(pb::LogLimitExceeded {
                    limit_bytes: *limit_bytes,
                })
            }
            FailureReason::DiskFull {
                free_bytes,
                min_free_bytes,
            } => Kind::DiskFull(pb::DiskFull {
                free_bytes: *free_bytes,
                min_free_bytes: *min_free_bytes,
            }),
        };
        Self {
            kind: Some(kind),
            class: pb_class(reason.class()).into(),
        }
    }
}

impl TryFrom<pb::TerminalReason> for FailureReason {
    type Error = ValidationError;

    fn try_from(reason: pb::TerminalReason) -> Result<Self, Self::Error> {
        Ok(match reason.kind.ok_or_else(|| missing("kind"))? {
            Kind::Exit(exit) => Self::Exit {
                exit: exit
                    .try_into()
                    .map_err(|e: ValidationError| e.within("exit"))?,
            },
            Kind::OutOfMemory(o) => Self::OutOfMemory {
                exit: optional_exit(o.exit)
                    .map_err(|e| e.within("out_of_memory"))?
                    .ok_or_else(|| missing("out_of_memory.exit"))?,
            },
            Kind::CommandNotStarted(c) => Self::CommandNotStarted { message: c.message },
            Kind::ProviderFailure(f) => Self::ProviderFailure {
                provider: f.provider,
                reason: f.reason,
                message: f.message,
            },
            Kind::WorkerLost(w) => Self::WorkerLost { message: w.message },
            Kind::RegistrationTimeout(r) => Self::RegistrationTimeout {
                waited: Duration::from_millis(r.waited_ms),
            },
            Kind::ServerRestarted(_) => Self::ServerRestarted,
            Kind::LogLimitExceeded(l) => Self::LogLimitExceeded {
                limit_bytes: l.limit_bytes,
            },
            Kind::DiskFull(d) => Self::DiskFull {
                free_bytes: d.free_bytes,
                min_free_bytes: d.min_free_bytes,
            },
            Kind::Cancelled(_) => {
                return Err(ValidationError::new(
                    "kind",
                    "cancelled is not a failure reason",
                ));
            }
            Kind::TimedOut(_) => {
                return Err(ValidationError::new(
                    "kind",
                    "timed_out is not a failure reason",
                ));
            }
        })
    }
}

/// The phase and reason of a state; `detail` is left empty for the caller to fill in.
impl From<&JobState> for pb::JobStatus {
    fn from(state: &JobState) -> Self {
        let (phase, kind) = match state {
            JobState::Queued => (pb::JobPhase::Queued, None),
            JobState::Provisioning => (pb::JobPhase::Provisioning, None),
            JobState::Running => (pb::JobPhase::Running, None),
            JobState::Succeeded => (
                pb::JobPhase::Succeeded,
                Some(Kind::Exit(ProcessExit::Code(0).into())),
            ),
            JobState::Failed { reason } => {
                (pb::JobPhase::Failed, pb::TerminalReason::from(reason).kind)
            }
            JobState::Cancelled { exit } => (
                pb::JobPhase::Cancelled,
                Some(Kind::Cancelled(pb::Cancelled {
                    exit: exit.map(Into::into),
                })),
            ),
            JobState::TimedOut { timeout, exit } => (
                pb::JobPhase::TimedOut,
                Some(Kind::TimedOut(pb::TimedOut {
                    timeout_ms: millis(*timeout),
                    exit: exit.map(Into::into),
                })),
            ),
        };
        let class = state
            .failure_class()
            .map_or(pb::FailureClass::Unspecified, pb_class);
        Self {
            phase: phase.into(),
            reason: kind.map(|kind| pb::TerminalReason {
                kind: Some(kind),
                class: class.into(),
            }),
            detail: String::new(),
        }
    }
}

fn pb_class(class: FailureClass) -> pb::FailureClass {
    match class {
        FailureClass::User => pb::FailureClass::User,
        FailureClass::Infrastructure => pb::FailureClass::Infrastructure,
    }
}

/// The state a status describes; its `detail` is not part of the state. The reason must
/// fit the phase.
impl TryFrom<pb::JobStatus> for JobState {
    type Error = ValidationError;

    fn try_from(status: pb::JobStatus) -> Result<Self, Self::Error> {
        let phase = pb::JobPhase::try_from(status.phase).map_err(|_| {
            ValidationError::new("phase", format!("unknown phase {}", status.phase))
        })?;
        let reason = status.reason;
        let kind = reason.as_ref().and_then(|r| r.kind.as_ref());
        let mismatch = || {
            ValidationError::new(
                "reason",
                format!("does not fit phase {}", phase.as_str_name()),
            )
        };
        let needs_reason = || ValidationError::new("reason", "a terminal phase needs a reason");
        let within_reason = |e: ValidationError| e.within("reason");
        Ok(match phase {
            pb::JobPhase::Unspecified => {
                return Err(ValidationError::new("phase", "is unspecified"));
            }
            pb::JobPhase::Queued | pb::JobPhase::Provisioning | pb::JobPhase::Running
                if reason.is_some() =>
            {
                return Err(mismatch());
            }
            pb::JobPhase::Queued => Self::Queued,
            pb::JobPhase::Provisioning => Self::Provisioning,
            pb::JobPhase::Running => Self::Running,
            pb::JobPhase::Succeeded => match kind {
                None => Self::Succeeded,
                Some(Kind::Exit(exit))
                    if ProcessExit::try_from(*exit) == Ok(ProcessExit::Code(0)) =>
                {
                    Self::Succeeded
                }
                Some(_) => return Err(mismatch()),
            },
            pb::JobPhase::Failed => Self::Failed {
                reason: reason
                    .ok_or_else(needs_reason)?
                    .try_into()
                    .map_err(within_reason)?,
            },
            pb::JobPhase::Cancelled => match reason.and_then(|r| r.kind) {
                Some(Kind::Cancelled(c)) => Self::Cancelled {
                    exit: optional_exit(c.exit)
                        .map_err(|e| e.within("cancelled"))
                        .map_err(within_reason)?,
                },
                Some(_) => return Err(mismatch()),
                None => return Err(needs_reason()),
            },
            pb::JobPhase::TimedOut => match reason.and_then(|r| r.kind) {
                Some(Kind::TimedOut(t)) => Self::TimedOut {
                    timeout: Duration::from_millis(t.timeout_ms),
                    exit: optional_exit(t.exit)
                        .map_err(|e| e.within("timed_out"))
                        .map_err(within_reason)?,
                },
                Some(_) => return Err(mismatch()),
                None => return Err(needs_reason()),
            },
        })
    }
}

/// A state with its progress note.
fn status(state: &JobState, detail: Option<&str>) -> pb::JobStatus {
    pb::JobStatus {
        detail: detail.unwrap_or_default().to_owned(),
        ..state.into()
    }
}

/// The progress note and the state of a status.
fn status_parts(mut status: pb::JobStatus) -> Result<(JobState, Option<String>), ValidationError> {
    let detail = non_empty(std::mem::take(&mut status.detail));
    Ok((status.try_into()?, detail))
}

impl From<&Job> for pb::Job {
    fn from(job: &Job) -> Self {
        Self {
            id: job.id.to_string(),
            spec: Some((&job.spec).into()),
            status: Some(status(&job.state, job.detail.as_deref())),
            provider: job.provider.clone(),
            owner: job.owner.clone(),
            worker_id: job.worker_id.map(|w| w.to_string()).unwrap_or_default(),
            created_at_unix_ms: unix_ms(Some(job.created_at)),
            started_at_unix_ms: unix_ms(job.started_at),
            finished_at_unix_ms: unix_ms(job.finished_at),
            attempts: job.attempts.iter().map(Into::into).collect(),
        }
    }
}

impl From<&Attempt> for pb::JobAttempt {
    fn from(attempt: &Attempt) -> Self {
        Self {
            number: attempt.number,
            worker_id: attempt.worker_id.map(|w| w.to_string()).unwrap_or_default(),
            status: Some(status(&attempt.state, None)),
            started_at_unix_ms: unix_ms(attempt.started_at),
            finished_at_unix_ms: unix_ms(Some(attempt.finished_at)),
        }
    }
}

impl TryFrom<pb::JobAttempt> for Attempt {
    type Error = ValidationError;

    fn try_from(attempt: pb::JobAttempt) -> Result<Self, Self::Error> {
        let (state, _) = status_parts(attempt.status.ok_or_else(|| missing("status"))?)
            .map_err(|e| e.within("status"))?;
        Ok(Self {
            number: attempt.number,
            worker_id: non_empty(attempt.worker_id)
                .map(|w| w.parse())
                .transpose()?,
            state,
            started_at: from_unix_ms("started_at_unix_ms", attempt.started_at_unix_ms)?,
            finished_at: from_unix_ms("finished_at_unix_ms", attempt.finished_at_unix_ms)?
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        })
    }
}

/// A job as a client sees it.
impl TryFrom<pb::Job> for Job {
    type Error = ValidationError;

    fn try_from(job: pb::Job) -> Result<Self, Self::Error> {
        let spec = job
            .spec
            .ok_or_else(|| missing("spec"))?
            .try_into()
            .map_err(|e: ValidationError| e.within("spec"))?;
        let (state, detail) = status_parts(job.status.ok_or_else(|| missing("status"))?)
            .map_err(|e| e.within("status"))?;
        Ok(Self {
            id: job
                .id
                .parse()
                .map_err(|e: ValidationError| ValidationError::new("id", e.message().to_owned()))?,
            spec,
            state,
            detail,
            provider: job.provider,
            owner: job.owner,
            worker_id: non_empty(job.worker_id).map(|w| w.parse()).transpose()?,
            created_at: from_unix_ms("created_at_unix_ms", job.created_at_unix_ms)?
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            started_at: from_unix_ms("started_at_unix_ms", job.started_at_unix_ms)?,
            finished_at: from_unix_ms("finished_at_unix_ms", job.finished_at_unix_ms)?,
            attempts: job
                .attempts
                .into_iter()
                .enumerate()
                .map(|(i, a)| Attempt::try_from(a).map_err(|e| e.within(&format!("attempts[{i}]"))))
                .collect::<Result<_, _>>()?,
        })
    }
}

impl From<OutputStream> for pb::OutputStream {
    fn from(stream: OutputStream) -> Self {
        match stream {
            OutputStream::Stdout => Self::Stdout,
            OutputStream::Stderr => Self::Stderr,
        }
    }
}

impl From<OutputChunk> for pb::OutputChunk {
    fn from(chunk: OutputChunk) -> Self {
        Self {
            seq: chunk.seq,
            stream: pb::OutputStream::from(chunk.stream).into(),
            data: chunk.data.to_vec(),
            emitted_at_unix_us: chunk.emitted_at_us,
        }
    }
}

impl TryFrom<pb::OutputChunk> for OutputChunk {
    type Error = ValidationError;

    fn try_from(chunk: pb::OutputChunk) -> Result<Self, Self::Error> {
        let stream = match pb::OutputStream::try_from(chunk.stream) {
            Ok(pb::OutputStream::Stdout) => OutputStream::Stdout,
            Ok(pb::OutputStream::Stderr) => OutputStream::Stderr,
            Ok(pb::OutputStream::Unspecified) | Err(_) => {
                return Err(ValidationError::new(
                    "stream",
                    format!("unknown stream {}", chunk.stream),
                ));
            }
        };
        if chunk.seq == 0 {
            return Err(ValidationError::new("seq", "sequence numbers start at 1"));
        }
        Ok(Self {
            seq: chunk.seq,
            stream,
            data: Bytes::from(chunk.data),
            emitted_at_us: chunk.emitted_at_unix_us,
        })
    }
}

impl From<JobEvent> for pb::JobEvent {
    fn from(event: JobEvent) -> Self {
        let event = match event {
            JobEvent::Output(chunk) => pb::job_event::Event::Output(chunk.into()),
            JobEvent::State { state, detail } => {
                pb::job_event::Event::Status(status(&state, detail.as_deref()))
            }
        };
        Self { event: Some(event) }
    }
}

impl TryFrom<pb::JobEvent> for JobEvent {
    type Error = ValidationError;

    fn try_from(event: pb::JobEvent) -> Result<Self, Self::Error> {
        match event.event.ok_or_else(|| missing("event"))? {
            pb::job_event::Event::Output(chunk) => Ok(Self::Output(
                chunk
                    .try_into()
                    .map_err(|e: ValidationError| e.within("output"))?,
            )),
            pb::job_event::Event::Status(status) => {
                let (state, detail) = status_parts(status).map_err(|e| e.within("status"))?;
                Ok(Self::State { state, detail })
            }
        }
    }
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

/// Milliseconds since the Unix epoch; 0 for "not yet".
pub(super) fn unix_ms(at: Option<OffsetDateTime>) -> i64 {
    at.map_or(0, |t| {
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    })
}

/// A time from milliseconds since the Unix epoch; 0 is "not yet".
pub(super) fn from_unix_ms(
    field: &'static str,
    ms: i64,
) -> Result<Option<OffsetDateTime>, ValidationError> {
    if ms == 0 {
        return Ok(None);
    }
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(Some)
        .map_err(|_| ValidationError::new(field, format!("{ms} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> JobSpec {
        JobSpec::builder("sh")
            .args(["-c", "exit 3"])
            .cpu("500m".parse().unwrap())
            .memory("64Mi".parse().unwrap())
            .working_dir("/tmp")
            .image("alpine:3")
            .provider("kubernetes")
            .name("build")
            .env([("A".to_owned(), "1".to_owned())].into())
            .labels([("team".to_owned(), "x".to_owned())].into())
            .timeout(Duration::from_millis(1500))
            .build()
            .unwrap()
    }

    fn every_failure_reason() -> Vec<FailureReason> {
        vec![
            FailureReason::Exit {
                exit: ProcessExit::Code(3),
            },
            FailureReason::Exit {
                exit: ProcessExit::Signal(9),
            },
            FailureReason::OutOfMemory {
                exit: ProcessExit::Signal(9),
            },
            FailureReason::CommandNotStarted {
                message: "not found".into(),
            },
            FailureReason::ProviderFailure {
                provider: "kubernetes".into(),
                reason: "ImagePullBackOff".into(),
                message: "pull failed".into(),
            },
            // An empty provider name is an ordinary provider failure, not a sentinel.
            FailureReason::ProviderFailure {
                provider: String::new(),
                reason: "CommandNotStarted".into(),
                message: "m".into(),
            },
            FailureReason::WorkerLost {
                message: "no heartbeat for 30s".into(),
            },
            FailureReason::RegistrationTimeout {
                waited: Duration::from_secs(30),
            },
            FailureReason::ServerRestarted,
            FailureReason::LogLimitExceeded { limit_bytes: 65536 },
            FailureReason::DiskFull {
                free_bytes: 1234,
                min_free_bytes: 1 << 30,
            },
        ]
    }

    fn every_state() -> Vec<JobState> {
        let mut states = vec![
            JobState::Queued,
            JobState::Provisioning,
            JobState::Running,
            JobState::Succeeded,
            JobState::Cancelled { exit: None },
            JobState::Cancelled {
                exit: Some(ProcessExit::Signal(15)),
            },
            JobState::Cancelled {
                exit: Some(ProcessExit::Code(0)),
            },
            JobState::TimedOut {
                timeout: Duration::from_secs(1),
                exit: None,
            },
            JobState::TimedOut {
                timeout: Duration::from_secs(1),
                exit: Some(ProcessExit::Signal(15)),
            },
            JobState::TimedOut {
                timeout: Duration::from_millis(250),
                exit: Some(ProcessExit::Signal(9)),
            },
            JobState::TimedOut {
                timeout: Duration::from_secs(1),
                exit: Some(ProcessExit::Code(2)),
            },
        ];
        states.extend(
            every_failure_reason()
                .into_iter()
                .map(|reason| JobState::Failed { reason }),
        );
        states
    }

    /// Names each variant with no wildcard, so a new variant fails to compile here until
    /// the lists above include it.
    fn variant(state: &JobState) -> &'static str {
        match state {
            JobState::Queued => "queued",
            JobState::Provisioning => "provisioning",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Cancelled { .. } => "cancelled",
            JobState::TimedOut { .. } => "timed_out",
            JobState::Failed { reason } => match reason {
                FailureReason::Exit { .. } => "exit",
                FailureReason::OutOfMemory { .. } => "out_of_memory",
                FailureReason::CommandNotStarted { .. } => "command_not_started",
                FailureReason::ProviderFailure { .. } => "provider_failure",
                FailureReason::WorkerLost { .. } => "worker_lost",
                FailureReason::RegistrationTimeout { .. } => "registration_timeout",
                FailureReason::ServerRestarted => "server_restarted",
                FailureReason::LogLimitExceeded { .. } => "log_limit_exceeded",
                FailureReason::DiskFull { .. } => "disk_full",
            },
        }
    }

    #[test]
    fn the_samples_cover_every_state_and_failure_reason() {
        let covered: std::collections::BTreeSet<_> = every_state().iter().map(variant).collect();
        assert_eq!(covered.len(), 15, "{covered:?}");
    }

    #[test]
    fn every_failure_reason_round_trips() {
        for reason in every_failure_reason() {
            let wire = pb::TerminalReason::from(&reason);
            assert_eq!(FailureReason::try_from(wire).unwrap(), reason);
        }
    }

    #[test]
    fn every_state_round_trips_through_a_status() {
        for state in every_state() {
            let wire = pb::JobStatus::from(&state);
            assert_eq!(JobState::try_from(wire).unwrap(), state);
        }
    }

    #[test]
    fn every_state_round_trips_through_a_job_and_an_event() {
        for state in every_state() {
            let mut job = Job::new(spec(), "local");
            job.created_at = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
            job.started_at = Some(job.created_at + Duration::from_millis(1234));
            job.finished_at = state
                .is_terminal()
                .then(|| job.created_at + Duration::from_secs(5));
            job.worker_id = Some(crate::job::WorkerId::new());
            job.state = state.clone();
            job.detail = Some("note".into());
            job.owner = "alice".into();
            assert_eq!(Job::try_from(pb::Job::from(&job)).unwrap(), job);

            for detail in [None, Some("pulling image".to_owned())] {
                let event = JobEvent::State {
                    state: state.clone(),
                    detail,
                };
                let wire = pb::JobEvent::from(event.clone());
                assert_eq!(JobEvent::try_from(wire).unwrap(), event);
            }
        }
    }

    #[test]
    fn a_timed_out_status_carries_the_signal_that_ended_the_job() {
        let state = JobState::TimedOut {
            timeout: Duration::from_secs(1),
            exit: Some(ProcessExit::Signal(15)),
        };
        let wire = pb::JobStatus::from(&state);
        let Some(Kind::TimedOut(timed_out)) = wire.reason.and_then(|r| r.kind) else {
            panic!("a timed out status needs a timed_out reason");
        };
        assert_eq!(
            timed_out.exit,
            Some(pb::ProcessExit {
                kind: Some(pb::process_exit::Kind::Signal(15))
            })
        );
    }

    #[test]
    fn command_not_started_has_its_own_reason_kind() {
        let reason = FailureReason::CommandNotStarted {
            message: "not found".into(),
        };
        assert!(matches!(
            pb::TerminalReason::from(&reason).kind,
            Some(Kind::CommandNotStarted(_))
        ));
    }

    #[test]
    fn output_events_round_trip() {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let event = JobEvent::Output(OutputChunk {
                seq: 7,
                stream,
                data: Bytes::from_static(b"\xff\x00 not utf-8\n"),
                emitted_at_us: 1_700_000_000_123_456,
            });
            let wire = pb::JobEvent::from(event.clone());
            assert_eq!(JobEvent::try_from(wire).unwrap(), event);
        }
    }

    #[test]
    fn bad_memory_on_the_wire_names_memory() {
        let spec = pb::JobSpec {
            command: "true".into(),
            memory: "abc".into(),
            timeout_ms: 1000,
            ..Default::default()
        };
        let err = JobSpec::try_from(spec).unwrap_err();
        assert_eq!(err.field(), "memory");
        assert!(err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn priority_round_trips_and_out_of_range_on_the_wire_names_priority() {
        for priority in [-100, -1, 0, 42, 100] {
            let spec = JobSpec { priority, ..spec() };
            let wire = pb::JobSpec::from(&spec);
            assert_eq!(wire.priority, priority);
            assert_eq!(JobSpec::try_from(wire).unwrap(), spec);
        }
        let err = JobSpec::try_from(pb::JobSpec {
            priority: 101,
            ..pb::JobSpec::from(&spec())
        })
        .unwrap_err();
        assert_eq!(err.field(), "priority");
    }

    #[test]
    fn zero_timeout_on_the_wire_names_timeout() {
        let spec = pb::JobSpec {
            command: "true".into(),
            ..Default::default()
        };
        assert_eq!(JobSpec::try_from(spec).unwrap_err().field(), "timeout");
    }

    #[test]
    fn a_spec_over_a_limit_on_the_wire_names_the_field_and_the_limit() {
        use crate::job::limits::{MAX_ARGS, MAX_WORKING_DIR_BYTES};
        let base = pb::JobSpec {
            command: "true".into(),
            timeout_ms: 1000,
            ..Default::default()
        };
        let err = JobSpec::try_from(pb::JobSpec {
            working_dir: "\u{1}".repeat(1 << 20),
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(err.field(), "working_dir");
        assert!(
            err.message()
                .contains(&format!("at most {MAX_WORKING_DIR_BYTES} allowed")),
            "{err}"
        );
        let err = JobSpec::try_from(pb::JobSpec {
            args: vec![String::new(); MAX_ARGS + 1],
            ..base.clone()
        })
        .unwrap_err();
        assert_eq!(err.field(), "args");
        let err = JobSpec::try_from(pb::JobSpec {
            memory: "9".repeat(1 << 20),
            ..base
        })
        .unwrap_err();
        assert_eq!(err.field(), "memory");
        assert!(err.to_string().len() < 300, "{err}");
    }

    fn field_of_status(phase: pb::JobPhase, kind: Option<Kind>) -> String {
        let status = pb::JobStatus {
            phase: phase.into(),
            reason: kind.map(|kind| pb::TerminalReason {
                kind: Some(kind),
                ..Default::default()
            }),
            detail: String::new(),
        };
        JobState::try_from(status).unwrap_err().field().to_owned()
    }

    #[test]
    fn inconsistent_statuses_are_errors_naming_the_field() {
        let no_exit = pb::ProcessExit { kind: None };
        let cases = [
            (pb::JobPhase::Unspecified, None, "phase"),
            (pb::JobPhase::Failed, None, "reason"),
            (pb::JobPhase::Cancelled, None, "reason"),
            (pb::JobPhase::TimedOut, None, "reason"),
            (
                pb::JobPhase::Running,
                Some(Kind::ServerRestarted(pb::ServerRestarted {})),
                "reason",
            ),
            (
                pb::JobPhase::Succeeded,
                Some(Kind::Exit(ProcessExit::Code(1).into())),
                "reason",
            ),
            (
                pb::JobPhase::Failed,
                Some(Kind::Cancelled(pb::Cancelled { exit: None })),
                "reason.kind",
            ),
            (
                pb::JobPhase::Failed,
                Some(Kind::Exit(no_exit)),
                "reason.exit.kind",
            ),
            (
                pb::JobPhase::Cancelled,
                Some(Kind::TimedOut(pb::TimedOut::default())),
                "reason",
            ),
            (
                pb::JobPhase::Cancelled,
                Some(Kind::Cancelled(pb::Cancelled {
                    exit: Some(no_exit),
                })),
                "reason.cancelled.exit.kind",
            ),
            (
                pb::JobPhase::TimedOut,
                Some(Kind::TimedOut(pb::TimedOut {
                    timeout_ms: 1,
                    exit: Some(no_exit),
                })),
                "reason.timed_out.exit.kind",
            ),
        ];
        for (phase, kind, field) in cases {
            assert_eq!(
                field_of_status(phase, kind.clone()),
                field,
                "{phase:?} {kind:?}"
            );
        }
        let unknown = pb::JobStatus {
            phase: 99,
            ..Default::default()
        };
        assert_eq!(JobState::try_from(unknown).unwrap_err().field(), "phase");
    }

    #[test]
    fn bad_jobs_and_events_are_errors_naming_the_field() {
        let good = pb::Job::from(&Job::new(spec(), "local"));
        let field = |job: pb::Job| Job::try_from(job).unwrap_err().field().to_owned();
        assert_eq!(
            field(pb::Job {
                spec: None,
                ..good.clone()
            }),
            "spec"
        );
        assert_eq!(
            field(pb::Job {
                status: None,
                ..good.clone()
            }),
            "status"
        );
        assert_eq!(
            field(pb::Job {
                id: "nope".into(),
                ..good.clone()
            }),
            "id"
        );
        assert_eq!(
            field(pb::Job {
                worker_id: "nope".into(),
                ..good.clone()
            }),
            "worker_id"
        );
        assert_eq!(
            field(pb::Job {
                finished_at_unix_ms: i64::MAX,
                ..good.clone()
            }),
            "finished_at_unix_ms"
        );
        let mut bad_spec = good.clone();
        if let Some(spec) = bad_spec.spec.as_mut() {
            spec.cpu = "lots".into();
        }
        assert_eq!(field(bad_spec), "spec.cpu");

        let event_field =
            |event: pb::JobEvent| JobEvent::try_from(event).unwrap_err().field().to_owned();
        assert_eq!(event_field(pb::JobEvent { event: None }), "event");
        let chunk = pb::OutputChunk {
            seq: 1,
            stream: pb::OutputStream::Stdout.into(),
            ..Default::default()
        };
        let output = |chunk| pb::JobEvent {
            event: Some(pb::job_event::Event::Output(chunk)),
        };
        assert_eq!(
            event_field(output(pb::OutputChunk {
                seq: 0,
                ..chunk.clone()
            })),
            "output.seq"
        );
        assert_eq!(
            event_field(output(pb::OutputChunk {
                stream: 0,
                ..chunk.clone()
            })),
            "output.stream"
        );
        assert_eq!(
            event_field(output(pb::OutputChunk { stream: 7, ..chunk })),
            "output.stream"
        );
        assert_eq!(
            event_field(pb::JobEvent {
                event: Some(pb::job_event::Event::Status(pb::JobStatus::default())),
            }),
            "status.phase"
        );
    }
}
