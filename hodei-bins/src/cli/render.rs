//! How the CLI shows output, phases and jobs.

use std::io::{self, Write};

use hodei_core::{Job, JobId, JobState, OutputChunk, OutputStream};

use super::CliError;
use crate::exit_code;

/// Writes job output to our stdout and stderr, byte for byte.
#[derive(Debug)]
pub(super) struct OutputWriter {
    stdout: io::Stdout,
    stderr: io::Stderr,
}

impl OutputWriter {
    pub fn new() -> Self {
        Self {
            stdout: io::stdout(),
            stderr: io::stderr(),
        }
    }

    /// Writes and flushes at once, so output appears live.
    pub fn write(&mut self, chunk: &OutputChunk) -> Result<(), CliError> {
        let result = match chunk.stream {
            OutputStream::Stdout => {
                let mut out = self.stdout.lock();
                out.write_all(&chunk.data).and_then(|()| out.flush())
            }
            OutputStream::Stderr => {
                let mut err = self.stderr.lock();
                err.write_all(&chunk.data).and_then(|()| err.flush())
            }
        };
        result.map_err(|e| {
            CliError::new(
                exit_code::HODEI_ERROR,
                format!("writing output failed: {e}"),
            )
        })
    }

    pub fn flush(&mut self) -> Result<(), CliError> {
        self.stdout
            .flush()
            .and_then(|()| self.stderr.flush())
            .map_err(|e| {
                CliError::new(
                    exit_code::HODEI_ERROR,
                    format!("writing output failed: {e}"),
                )
            })
    }
}

/// Shows phase changes on stderr when it is a terminal.
#[derive(Debug)]
pub(super) struct PhaseLine {
    enabled: bool,
    job_id: String,
    last: Option<(String, Option<String>)>,
}

impl PhaseLine {
    pub fn new(enabled: bool, job_id: JobId) -> Self {
        Self {
            enabled,
            job_id: job_id.to_string(),
            last: None,
        }
    }

    pub fn show(&mut self, state: &JobState, detail: Option<&str>) {
        if !self.enabled || state.is_terminal() {
            return;
        }
        let current = (state.phase_name().to_owned(), detail.map(str::to_owned));
        if self.last.as_ref() == Some(&current) {
            return;
        }
        let short_id = self.job_id.get(..8).unwrap_or(&self.job_id);
        match detail {
            Some(detail) => eprintln!(
                "\x1b[2m[hodei {short_id}] {}: {detail}\x1b[0m",
                state.phase_name()
            ),
            None => eprintln!("\x1b[2m[hodei {short_id}] {}\x1b[0m", state.phase_name()),
        }
        self.last = Some(current);
    }
}

fn time(at: Option<time::OffsetDateTime>) -> String {
    at.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".to_owned())
}

/// Pretty JSON of jobs, as `get -o json` and `list -o json` print them.
pub(super) fn json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map_err(|e| CliError::new(exit_code::HODEI_ERROR, e.to_string()))
}

/// A job as JSON, with whose fault each failure was (`state.class`: `user` or
/// `infrastructure`) next to its reason.
pub(super) fn job_json(job: &Job) -> serde_json::Value {
    let mut value = serde_json::to_value(job).unwrap_or_default();
    let mark = |state: &JobState, at: Option<&mut serde_json::Value>| {
        if let (Some(class), Some(serde_json::Value::Object(state))) = (state.failure_class(), at) {
            state.insert("class".to_owned(), class.name().into());
        }
    };
    mark(&job.state, value.get_mut("state"));
    for (i, attempt) in job.attempts.iter().enumerate() {
        mark(
            &attempt.state,
            value.pointer_mut(&format!("/attempts/{i}/state")),
        );
    }
    value
}

/// ` (user failure)` or ` (infrastructure failure)` for a failed state; empty otherwise.
fn class_note(state: &JobState) -> String {
    match state {
        JobState::Failed { reason } => format!(" ({} failure)", reason.class()),
        _ => String::new(),
    }
}

/// A job as `key: value` lines.
pub(super) fn job_text(job: &Job) -> String {
    let mut command = vec![job.spec.command.clone()];
    command.extend(job.spec.args.iter().cloned());
    let mut lines = vec![
        format!("id:        {}", job.id),
        format!(
            "name:      {}",
            if job.spec.name.is_empty() {
                "-"
            } else {
                &job.spec.name
            }
        ),
        format!("state:     {}{}", job.state, class_note(&job.state)),
        format!("command:   {}", command.join(" ")),
        format!("provider:  {}", job.provider),
        format!(
            "owner:     {}",
            if job.owner.is_empty() {
                "-"
            } else {
                &job.owner
            }
        ),
        format!("priority:  {}", job.spec.priority),
        format!(
            "worker:    {}",
            job.worker_id
                .map_or_else(|| "-".to_owned(), |w| w.to_string())
        ),
        format!("created:   {}", time(Some(job.created_at))),
        format!("started:   {}", time(job.started_at)),
        format!("finished:  {}", time(job.finished_at)),
    ];
    if let Some(detail) = &job.detail {
        lines.push(format!("detail:    {detail}"));
    }
    if !job.attempts.is_empty() || !job.spec.retry.is_none() {
        lines.push(format!("attempt:   {}", job.attempt()));
    }
    for attempt in &job.attempts {
        lines.push(format!(
            "attempt {}: worker {}, {}{}, ended {}",
            attempt.number,
            attempt
                .worker_id
                .map_or_else(|| "-".to_owned(), |w| w.to_string()),
            attempt.state,
            class_note(&attempt.state),
            time(Some(attempt.finished_at)),
        ));
    }
    if !job.spec.retry.is_none() {
        let on: Vec<String> = job.spec.retry.on.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "retries:   {} on {}",
            job.spec.retry.retries,
            if on.is_empty() {
                "any failure of the command".to_owned()
            } else {
                on.join(", ")
            }
        ));
    }
    lines.extend(placement_lines(&job.spec));
    lines.join("\n")
}

/// The placement and secret options of a spec, one line each, for those it has. Secrets
/// are shown as the references they are (`NAME=SECRET/KEY`); the server never has a value.
fn placement_lines(spec: &hodei_core::JobSpec) -> Vec<String> {
    let joined = |items: Vec<String>| items.join(", ");
    let refs = |m: &std::collections::BTreeMap<String, hodei_core::job::SecretRef>| {
        joined(m.iter().map(|(k, r)| format!("{k}={r}")).collect())
    };
    [
        ("class:", spec.class.clone().unwrap_or_default()),
        (
            "node selector:",
            joined(
                spec.node_selector
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            ),
        ),
        (
            "tolerations:",
            joined(spec.tolerations.iter().map(ToString::to_string).collect()),
        ),
        (
            "node affinity:",
            joined(spec.node_affinity.iter().map(ToString::to_string).collect()),
        ),
        (
            "ephemeral storage:",
            spec.ephemeral_storage
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ),
        ("secret env:", refs(&spec.secret_env)),
        ("secret files:", refs(&spec.secret_files)),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(key, value)| format!("{key} {value}"))
    .collect()
}

/// One table row of `hodei list`.
pub(super) fn job_row(job: &Job) -> String {
    let mut command = job.spec.command.clone();
    for arg in &job.spec.args {
        command.push(' ');
        command.push_str(arg);
    }
    if command.chars().count() > 40 {
        command = command.chars().take(39).collect::<String>() + "…";
    }
    format!(
        "{:<36}  {:<12}  {:<10}  {:<20}  {}",
        job.id,
        job.state.phase_name(),
        job.provider,
        time(Some(job.created_at)),
        command
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hodei_core::{JobSpec, ProcessExit};

    use super::*;

    fn timed_out(exit: Option<ProcessExit>) -> Job {
        let mut job = Job::new(JobSpec::builder("sleep").build().unwrap(), "local");
        job.state = JobState::TimedOut {
            timeout: Duration::from_secs(1),
            exit,
        };
        job
    }

    #[test]
    fn get_shows_placement_and_secret_references_only() {
        let spec = JobSpec::builder("true")
            .node_selector([("pool".to_owned(), "batch".to_owned())].into())
            .tolerations(vec!["gpu=true:NoSchedule".parse().unwrap()])
            .class("large")
            .secret_env(
                [(
                    "DB_PASSWORD".to_owned(),
                    hodei_core::job::SecretRef::new("db", "password"),
                )]
                .into(),
            )
            .build()
            .unwrap();
        let text = job_text(&Job::new(spec, "kubernetes"));
        for line in [
            "\npriority:  0\n",
            "\nclass: large",
            "\nnode selector: pool=batch",
            "\ntolerations: gpu=true:NoSchedule",
            "\nsecret env: DB_PASSWORD=db/password",
        ] {
            assert!(text.contains(line), "{line:?} missing from {text}");
        }
        assert!(!text.contains("secret files"), "{text}");
        let plain = job_text(&Job::new(
            JobSpec::builder("true").build().unwrap(),
            "local",
        ));
        assert!(
            !plain.contains("secret") && !plain.contains("class"),
            "{plain}"
        );
    }

    #[test]
    fn a_timed_out_job_shows_the_signal_that_ended_it() {
        for signal in [15, 9] {
            let job = timed_out(Some(ProcessExit::Signal(signal)));
            let json: serde_json::Value = serde_json::from_str(&json(&job).unwrap()).unwrap();
            assert_eq!(json["state"]["phase"], "timed_out");
            assert_eq!(json["state"]["timeout"], "1s");
            assert_eq!(json["state"]["exit"]["signal"], signal);
            let text = job_text(&job);
            assert!(
                text.contains(&format!(
                    "state:     timed out after 1s (killed by signal {signal})"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn a_job_stopped_for_its_output_says_which_limit_and_setting() {
        let mut job = timed_out(None);
        job.state = JobState::Failed {
            reason: hodei_core::FailureReason::LogLimitExceeded { limit_bytes: 65536 },
        };
        let text = job_text(&job);
        assert!(text.contains("log limit exceeded"), "{text}");
        assert!(
            text.contains("64.0 KiB (HODEI_MAX_LOG_BYTES=65536)"),
            "{text}"
        );
        job.state = JobState::Failed {
            reason: hodei_core::FailureReason::DiskFull {
                free_bytes: 0,
                min_free_bytes: 1 << 30,
            },
        };
        let text = job_text(&job);
        assert!(
            text.contains("disk full: only 0 B free on the server, below the floor of 1.0 GiB (HODEI_MIN_FREE_DISK)"),
            "{text}"
        );
    }

    #[test]
    fn a_timed_out_job_that_never_reported_shows_no_exit() {
        let job = timed_out(None);
        let json: serde_json::Value = serde_json::from_str(&json(&job).unwrap()).unwrap();
        assert!(json["state"]["exit"].is_null(), "{json}");
        assert!(job_text(&job).contains("state:     timed out after 1s\n"));
    }
}
