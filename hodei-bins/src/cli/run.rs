//! `hodei run`: submit a job, stream its output live, exit with its exit code.

use std::{collections::BTreeMap, io::IsTerminal, str::FromStr};

use clap::Args;
use hodei_core::{
    HodeiClient, JobEvent, JobSpec, JobState,
    job::{RetryOn, RetryPolicy, SecretRef},
};

use super::{CliError, reconnect, render};
use crate::exit_code;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// Name of the job.
    #[arg(long)]
    name: Option<String>,
    /// Provider that must run the job (e.g. local, kubernetes).
    #[arg(long)]
    provider: Option<String>,
    /// CPU, e.g. 0.5 or 500m.
    #[arg(long)]
    cpu: Option<String>,
    /// Memory, e.g. 64Mi or 1Gi.
    #[arg(long)]
    memory: Option<String>,
    /// Time limit, e.g. 60s, 5m, 1h30m.
    #[arg(long, default_value = "1h")]
    timeout: String,
    /// Environment variable of the job (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Label of the job (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Container image; the job then needs a container provider.
    #[arg(long)]
    image: Option<String>,
    /// Working directory of the command (absolute).
    #[arg(long)]
    workdir: Option<String>,
    /// Node label the worker's node must have (repeatable; Kubernetes, keys the server
    /// allows).
    #[arg(long = "node-selector", value_name = "KEY=VALUE")]
    node_selectors: Vec<String>,
    /// Taint the worker tolerates: key=value:Effect, key:Effect, key=value or key
    /// (repeatable; Kubernetes, keys the server allows).
    #[arg(long = "toleration", value_name = "TOLERATION")]
    tolerations: Vec<String>,
    /// Requirement on node labels: 'key in (a,b)', 'key notin (a,b)', 'key' or '!key'
    /// (repeatable, all must hold; Kubernetes, keys the server allows).
    #[arg(long = "node-affinity", value_name = "TERM")]
    node_affinity: Vec<String>,
    /// Local disk of the worker, e.g. 2Gi (Kubernetes).
    #[arg(long = "ephemeral-storage", value_name = "BYTES")]
    ephemeral_storage: Option<String>,
    /// Resource class defined by the server's operator (Kubernetes).
    #[arg(long = "class", value_name = "NAME")]
    class: Option<String>,
    /// Env var of the job taken from a secret key (repeatable; Kubernetes, secrets the
    /// server allows).
    #[arg(long = "secret-env", value_name = "NAME=SECRET/KEY")]
    secret_env: Vec<String>,
    /// File holding a secret key, mounted read-only at PATH (repeatable; Kubernetes,
    /// secrets the server allows).
    #[arg(long = "secret-file", value_name = "PATH=SECRET/KEY")]
    secret_files: Vec<String>,
    /// Run the job again up to N times after its own failures (those --retry-on names;
    /// every failure of the command when it names none). Failures of the platform are
    /// retried by the server whatever this says.
    #[arg(long, value_name = "N", default_value_t = 0)]
    retries: u32,
    /// Own failure the job is run again after: exit-code=N[,N...], signal, oom or timeout;
    /// join several with | or repeat the flag.
    #[arg(long = "retry-on", value_name = "CONDITION")]
    retry_on: Vec<String>,
    /// Order among waiting jobs, from -100 to 100: a higher one gets a free worker slot
    /// first.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "N"
    )]
    priority: i32,
    /// Print only the job id and return at once.
    #[arg(long)]
    detach: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::new(exit_code::USAGE, message)
}

fn pairs(field: &str, values: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    values
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| usage(format!("invalid {field}: {pair:?} is not KEY=VALUE")))
        })
        .collect()
}

/// Each value parsed as `T`; the error names the flag.
fn each<T>(flag: &str, values: &[String]) -> Result<Vec<T>, CliError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    values
        .iter()
        .map(|v| {
            v.parse()
                .map_err(|e| usage(format!("invalid --{flag}: {e}")))
        })
        .collect()
}

/// `KEY=SECRET/KEY` pairs; the error names the flag.
fn secret_refs(flag: &str, values: &[String]) -> Result<BTreeMap<String, SecretRef>, CliError> {
    pairs(flag, values)?
        .into_iter()
        .map(|(name, reference)| {
            let reference = reference
                .parse()
                .map_err(|e| usage(format!("invalid --{flag} {name}: {e}")))?;
            Ok((name, reference))
        })
        .collect()
}

impl RunArgs {
    fn retry_policy(&self) -> Result<RetryPolicy, CliError> {
        if !self.retry_on.is_empty() && self.retries == 0 {
            return Err(usage("--retry-on needs --retries N (how many times)"));
        }
        let mut on = std::collections::BTreeSet::new();
        for value in &self.retry_on {
            on.extend(
                RetryOn::parse_all(value).map_err(|e| usage(format!("invalid --retry-on: {e}")))?,
            );
        }
        Ok(RetryPolicy {
            retries: self.retries,
            on,
        })
    }

    fn spec(&self) -> Result<JobSpec, CliError> {
        let cpu = self
            .cpu
            .as_deref()
            .map(|c| c.parse().map_err(|e| usage(format!("invalid cpu: {e}"))))
            .transpose()?;
        let memory = self
            .memory
            .as_deref()
            .map(|m| m.parse().map_err(|e| usage(format!("invalid memory: {e}"))))
            .transpose()?;
        let timeout = humantime::parse_duration(&self.timeout).map_err(|e| {
            usage(format!(
                "invalid timeout: {:?}: {e} (expected e.g. 60s, 5m, 1h)",
                self.timeout
            ))
        })?;
        let ephemeral_storage = self
            .ephemeral_storage
            .as_deref()
            .map(|m| {
                m.parse()
                    .map_err(|e| usage(format!("invalid --ephemeral-storage: {e}")))
            })
            .transpose()?;
        let (command, args) = self
            .command
            .split_first()
            .ok_or_else(|| usage("invalid command: is missing"))?;
        JobSpec::builder(command.clone())
            .args(args.iter().cloned())
            .name(self.name.clone().unwrap_or_default())
            .env(pairs("env", &self.env)?)
            .labels(pairs("label", &self.labels)?)
            .maybe_working_dir(self.workdir.clone())
            .timeout(timeout)
            .maybe_cpu(cpu)
            .maybe_memory(memory)
            .maybe_image(self.image.clone())
            .maybe_provider(self.provider.clone())
            .node_selector(pairs("node-selector", &self.node_selectors)?)
            .tolerations(each("toleration", &self.tolerations)?)
            .node_affinity(each("node-affinity", &self.node_affinity)?)
            .maybe_ephemeral_storage(ephemeral_storage)
            .maybe_class(self.class.clone())
            .secret_env(secret_refs("secret-env", &self.secret_env)?)
            .secret_files(secret_refs("secret-file", &self.secret_files)?)
            .retry(self.retry_policy()?)
            .priority(self.priority)
            .build()
            .map_err(|e| usage(e.to_string()))
    }
}

pub(super) async fn run(
    client: &HodeiClient,
    args: RunArgs,
    embedded: bool,
    reconnect_window: std::time::Duration,
) -> Result<u8, CliError> {
    if args.detach && embedded {
        return Err(usage(
            "--detach needs a standing server; it cannot be combined with --embedded",
        ));
    }
    let spec = args.spec()?;
    let job = client.submit(&spec).await?;
    if args.detach {
        println!("{}", job.id);
        return Ok(0);
    }
    let id = job.id;
    let phases = std::io::stderr().is_terminal();
    let mut events = client.follow_resuming(id, 0, reconnect_window);
    let mut output = render::OutputWriter::new();
    let mut shown = render::PhaseLine::new(phases, id);
    let mut cancelled = false;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            event = reconnect::next_job_event(&mut events, id) => match event {
                Some(Ok(JobEvent::Output(chunk))) => output.write(&chunk)?,
                Some(Ok(JobEvent::State { state, detail })) => {
                    shown.show(&state, detail.as_deref());
                    if state.is_terminal() {
                        output.flush()?;
                        if !matches!(state, JobState::Succeeded) {
                            eprintln!("hodei: job {id} {state}");
                        }
                        return Ok(exit_code::for_state(&state));
                    }
                }
                Some(Err(error)) => return Err(error),
                None => return Err(CliError::new(exit_code::HODEI_ERROR, format!("the follow of job {id} ended before the job"))),
            },
            _ = &mut interrupt, if !cancelled => {
                cancelled = true;
                eprintln!("hodei: cancelling job {id} (Ctrl-C again to stop waiting)");
                client.cancel(id).await?;
                tokio::spawn(async {
                    let _ = tokio::signal::ctrl_c().await;
                    std::process::exit(i32::from(exit_code::CANCELLED));
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hodei_core::job::{AffinityOperator, TaintEffect, TolerationOperator};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn spec(flags: &[&str]) -> Result<JobSpec, CliError> {
        let argv = std::iter::once("run")
            .chain(flags.iter().copied())
            .chain(["--", "true"]);
        Cli::try_parse_from(argv).unwrap().run.spec()
    }

    fn error(flags: &[&str]) -> String {
        let error = spec(flags).unwrap_err();
        assert_eq!(error.code, crate::exit_code::USAGE);
        error.message
    }

    #[test]
    fn placement_and_secret_flags_become_the_spec() {
        let spec = spec(&[
            "--node-selector=pool=batch",
            "--node-selector",
            "zone.example.com/rack=r1",
            "--toleration=gpu=true:NoSchedule",
            "--toleration=dedicated:NoExecute",
            "--toleration=spot",
            "--node-affinity=arch in (amd64, arm64)",
            "--node-affinity=!preemptible",
            "--ephemeral-storage=2Gi",
            "--class=large",
            "--secret-env=DB_PASSWORD=db-creds/password",
            "--secret-file=/etc/app/token=app/api-token",
        ])
        .unwrap();
        assert_eq!(spec.node_selector["pool"], "batch");
        assert_eq!(spec.node_selector["zone.example.com/rack"], "r1");
        let t = &spec.tolerations;
        assert_eq!(
            (t[0].operator, t[0].value.as_str()),
            (TolerationOperator::Equal, "true")
        );
        assert_eq!(t[0].effect, Some(TaintEffect::NoSchedule));
        assert_eq!(
            (t[1].operator, t[1].effect),
            (TolerationOperator::Exists, Some(TaintEffect::NoExecute))
        );
        assert_eq!((t[2].key.as_str(), t[2].effect), ("spot", None));
        assert_eq!(spec.node_affinity[0].operator, AffinityOperator::In);
        assert_eq!(spec.node_affinity[0].values, ["amd64", "arm64"]);
        assert_eq!(
            spec.node_affinity[1].operator,
            AffinityOperator::DoesNotExist
        );
        assert_eq!(spec.ephemeral_storage.unwrap().to_string(), "2Gi");
        assert_eq!(spec.class.as_deref(), Some("large"));
        assert_eq!(
            spec.secret_env["DB_PASSWORD"],
            SecretRef::new("db-creds", "password")
        );
        assert_eq!(
            spec.secret_files["/etc/app/token"],
            SecretRef::new("app", "api-token")
        );
    }

    #[test]
    fn priority_flag_sets_the_priority_and_is_checked() {
        assert_eq!(spec(&[]).unwrap().priority, 0);
        assert_eq!(spec(&["--priority", "-5"]).unwrap().priority, -5);
        assert_eq!(spec(&["--priority=20"]).unwrap().priority, 20);
        assert!(error(&["--priority=101"]).contains("priority"));
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_flag() {
        for (flag, needle) in [
            ("--toleration=gpu:Never", "invalid --toleration"),
            ("--node-affinity=arch in amd64", "invalid --node-affinity"),
            ("--ephemeral-storage=lots", "invalid --ephemeral-storage"),
            ("--secret-env=DB_PASSWORD", "invalid secret-env"),
            (
                "--secret-env=DB_PASSWORD=db",
                "invalid --secret-env DB_PASSWORD",
            ),
            ("--secret-file=relative=app/token", "secret_files"),
            ("--node-selector=pool", "invalid node-selector"),
            ("--class=Big", "invalid class"),
        ] {
            let message = error(&[flag]);
            assert!(message.contains(needle), "{flag}: {message}");
        }
    }

    #[test]
    fn retry_flags_become_the_policy_and_bad_ones_are_usage_errors() {
        let asked = spec(&[
            "--retries=2",
            "--retry-on=exit-code=1,2|oom",
            "--retry-on",
            "timeout",
        ])
        .unwrap();
        assert_eq!(asked.retry.retries, 2);
        assert_eq!(
            asked.retry.on,
            std::collections::BTreeSet::from([
                RetryOn::ExitCode(1),
                RetryOn::ExitCode(2),
                RetryOn::OutOfMemory,
                RetryOn::Timeout
            ])
        );
        assert!(spec(&[]).unwrap().retry.is_none());
        assert!(error(&["--retry-on=signal"]).contains("--retries"));
        assert!(error(&["--retries=1", "--retry-on=sometimes"]).contains("invalid --retry-on"));
        assert!(error(&["--retries=11"]).contains("retry.retries"));
    }
}
