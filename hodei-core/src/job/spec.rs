//! What a job runs and what it needs: `JobSpec`, its builder and its validation.

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    Cpu, Memory, RetryPolicy, ValidationError, labels,
    limits::{
        MAX_ARG_BYTES, MAX_ARGS, MAX_CLASS_BYTES, MAX_COMMAND_BYTES, MAX_COMMAND_LINE_BYTES,
        MAX_ENV_BYTES, MAX_ENV_VAR_BYTES, MAX_ENV_VARS, MAX_IMAGE_BYTES, MAX_LABELS,
        MAX_NAME_BYTES, MAX_PROVIDER_BYTES, MAX_SPEC_BYTES, MAX_WORKING_DIR_BYTES,
    },
    placement::{self, NodeAffinityTerm, Toleration},
    secrets::{self, SecretRef},
    validation::excerpt,
};

/// Default time limit of a job when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest time limit a job may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Lowest priority a job may have.
pub const MIN_PRIORITY: i32 = -100;
/// Highest priority a job may have.
pub const MAX_PRIORITY: i32 = 100;

/// Everything a job needs to run. Built with [`JobSpec::builder`], which validates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Human-readable name; may be empty.
    pub name: String,
    /// Program to execute, looked up in `PATH` by the worker.
    pub command: String,
    /// Arguments passed to the program.
    pub args: Vec<String>,
    /// Extra environment variables of the command.
    pub env: BTreeMap<String, String>,
    /// Working directory of the command; the worker's default when absent.
    pub working_dir: Option<String>,
    /// Maximum run time, counted from the start of the command.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// CPU the job needs; the provider's default when absent.
    pub cpu: Option<Cpu>,
    /// Memory the job needs; the provider's default when absent.
    pub memory: Option<Memory>,
    /// Container image; a job that names one needs a container provider.
    pub image: Option<String>,
    /// Free-form labels, kept with the job and put on its worker where the provider can.
    pub labels: BTreeMap<String, String>,
    /// Provider that must run the job; the server chooses when absent.
    pub provider: Option<String>,
    /// Node labels the worker's node must have, over the provider's own; only on
    /// providers that place workers on nodes (Kubernetes), within the operator's allow-list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Node taints the worker tolerates, added to the provider's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Requirements on node labels that the worker's node must all meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_affinity: Vec<NodeAffinityTerm>,
    /// Local disk (container logs and scratch space) the worker needs; the provider's
    /// default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<Memory>,
    /// Resource class the operator defined (resources and placement); the job's own
    /// `cpu`, `memory` and `ephemeral_storage` override the class's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Env vars of the command whose values come from secrets, by name. Only the
    /// reference is kept; the platform resolves it where the worker runs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, SecretRef>,
    /// Files (absolute paths) holding one secret key each, mounted read-only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_files: BTreeMap<String, SecretRef>,
    /// Which of its own failures the job is run again after, and how many times.
    #[serde(default, skip_serializing_if = "RetryPolicy::is_none")]
    pub retry: RetryPolicy,
    /// Order among waiting jobs, from [`MIN_PRIORITY`] to [`MAX_PRIORITY`]: a higher one
    /// gets a free worker slot first. 0 by default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_zero(value: &i32) -> bool {
    *value == 0
}

#[bon::bon]
impl JobSpec {
    /// A job that runs `command`; validated when built.
    ///
    /// ```
    /// # use hodei_core::JobSpec;
    /// let spec = JobSpec::builder("sh")
    ///     .args(["-c".to_owned(), "echo hello".to_owned()])
    ///     .timeout(std::time::Duration::from_secs(30))
    ///     .build()?;
    /// assert_eq!(spec.command, "sh");
    /// # Ok::<(), hodei_core::ValidationError>(())
    /// ```
    #[builder(on(String, into))]
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        #[builder(start_fn)] command: String,
        #[builder(default)] name: String,
        #[builder(default, with = |args: impl IntoIterator<Item = impl Into<String>>| args.into_iter().map(Into::into).collect())]
        args: Vec<String>,
        #[builder(default)] env: BTreeMap<String, String>,
        working_dir: Option<String>,
        #[builder(default = DEFAULT_TIMEOUT)] timeout: Duration,
        cpu: Option<Cpu>,
        memory: Option<Memory>,
        image: Option<String>,
        #[builder(default)] labels: BTreeMap<String, String>,
        provider: Option<String>,
        #[builder(default)] node_selector: BTreeMap<String, String>,
        #[builder(default)] tolerations: Vec<Toleration>,
        #[builder(default)] node_affinity: Vec<NodeAffinityTerm>,
        ephemeral_storage: Option<Memory>,
        class: Option<String>,
        #[builder(default)] secret_env: BTreeMap<String, SecretRef>,
        #[builder(default)] secret_files: BTreeMap<String, SecretRef>,
        #[builder(default)] retry: RetryPolicy,
        #[builder(default)] priority: i32,
    ) -> Result<Self, ValidationError> {
        let spec = Self {
            name,
            command,
            args,
            env,
            working_dir,
            timeout,
            cpu,
            memory,
            image,
            labels,
            provider,
            node_selector,
            tolerations,
            node_affinity,
            ephemeral_storage,
            class,
            secret_env,
            secret_files,
            retry,
            priority,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every field against its rules and the limits in [`crate::job::limits`]; the
    /// error names the first offending field and the limit it breaks.
    pub fn validate(&self) -> Result<(), ValidationError> {
        text("name", &self.name, MAX_NAME_BYTES)?;
        if self.command.trim().is_empty() {
            return Err(ValidationError::new("command", "must not be empty"));
        }
        text("command", &self.command, MAX_COMMAND_BYTES)?;
        self.validate_args()?;
        self.retry.validate()?;
        self.validate_env()?;
        if let Some(dir) = &self.working_dir {
            text("working_dir", dir, MAX_WORKING_DIR_BYTES)?;
            if !dir.starts_with('/') {
                return Err(ValidationError::new(
                    "working_dir",
                    format!("{} must be an absolute path", excerpt(dir)),
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(ValidationError::new("timeout", "must be greater than zero"));
        }
        if self.timeout > MAX_TIMEOUT {
            return Err(ValidationError::new(
                "timeout",
                format!(
                    "{} exceeds the maximum of {}",
                    humantime::format_duration(self.timeout),
                    humantime::format_duration(MAX_TIMEOUT)
                ),
            ));
        }
        if let Some(image) = &self.image {
            text("image", image, MAX_IMAGE_BYTES)?;
            if image.is_empty() || image.chars().any(char::is_whitespace) {
                return Err(ValidationError::new(
                    "image",
                    format!("{} is not a valid image reference", excerpt(image)),
                ));
            }
        }
        if let Some(provider) = &self.provider {
            if provider.trim().is_empty() {
                return Err(ValidationError::new(
                    "provider",
                    "must not be empty when given",
                ));
            }
            text("provider", provider, MAX_PROVIDER_BYTES)?;
        }
        if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&self.priority) {
            return Err(ValidationError::new(
                "priority",
                format!(
                    "{} is outside {MIN_PRIORITY}..={MAX_PRIORITY}",
                    self.priority
                ),
            ));
        }
        self.validate_labels()?;
        self.validate_placement()?;
        secrets::check_secret_env(&self.secret_env, &self.env)?;
        secrets::check_secret_files(&self.secret_files, self.working_dir.as_deref())?;
        let total = self.total_bytes();
        if total > MAX_SPEC_BYTES {
            return Err(ValidationError::new(
                "spec",
                format!("is {total} bytes in total; at most {MAX_SPEC_BYTES} allowed"),
            ));
        }
        Ok(())
    }

    fn validate_args(&self) -> Result<(), ValidationError> {
        if self.args.len() > MAX_ARGS {
            return Err(ValidationError::new(
                "args",
                format!(
                    "has {} arguments; at most {MAX_ARGS} allowed",
                    self.args.len()
                ),
            ));
        }
        for (i, arg) in self.args.iter().enumerate() {
            let field = || format!("args[{i}]");
            at_most(field, arg.len(), MAX_ARG_BYTES)?;
            if arg.contains('\0') {
                return Err(ValidationError::new(field(), "must not contain NUL bytes"));
            }
        }
        let command_line: usize =
            self.command.len() + self.args.iter().map(String::len).sum::<usize>();
        if command_line > MAX_COMMAND_LINE_BYTES {
            return Err(ValidationError::new(
                "args",
                format!(
                    "command and arguments are {command_line} bytes in total; at most \
                     {MAX_COMMAND_LINE_BYTES} allowed"
                ),
            ));
        }
        Ok(())
    }

    fn validate_env(&self) -> Result<(), ValidationError> {
        if self.env.len() > MAX_ENV_VARS {
            return Err(ValidationError::new(
                "env",
                format!(
                    "has {} variables; at most {MAX_ENV_VARS} allowed",
                    self.env.len()
                ),
            ));
        }
        let mut total = 0usize;
        for (key, value) in &self.env {
            let field = || format!("env[{}]", excerpt(key));
            if key.is_empty() {
                return Err(ValidationError::new(
                    "env",
                    "variable names must not be empty",
                ));
            }
            let size = key.len() + value.len();
            if size > MAX_ENV_VAR_BYTES {
                return Err(ValidationError::new(
                    field(),
                    format!("name and value are {size} bytes; at most {MAX_ENV_VAR_BYTES} allowed"),
                ));
            }
            if key.contains('=') || key.contains(char::is_control) {
                return Err(ValidationError::new(
                    field(),
                    "name must not contain '=' or control characters",
                ));
            }
            if value.contains('\0') {
                return Err(ValidationError::new(
                    field(),
                    "value must not contain NUL bytes",
                ));
            }
            if key.starts_with("HODEI_") {
                return Err(ValidationError::new(
                    field(),
                    "names starting with HODEI_ are reserved for the worker",
                ));
            }
            total += size;
        }
        if total > MAX_ENV_BYTES {
            return Err(ValidationError::new(
                "env",
                format!("is {total} bytes in total; at most {MAX_ENV_BYTES} allowed"),
            ));
        }
        Ok(())
    }

    fn validate_labels(&self) -> Result<(), ValidationError> {
        if self.labels.len() > MAX_LABELS {
            return Err(ValidationError::new(
                "labels",
                format!(
                    "has {} labels; at most {MAX_LABELS} allowed",
                    self.labels.len()
                ),
            ));
        }
        for (key, value) in &self.labels {
            labels::check(&format!("labels[{}]", excerpt(key)), key, value)?;
        }
        Ok(())
    }

    fn validate_placement(&self) -> Result<(), ValidationError> {
        placement::check_node_selector(&self.node_selector)?;
        placement::check_tolerations(&self.tolerations)?;
        placement::check_node_affinity(&self.node_affinity)?;
        if self.ephemeral_storage.is_some_and(|s| s.bytes() == 0) {
            return Err(ValidationError::new(
                "ephemeral_storage",
                "must be above 0, e.g. 2Gi",
            ));
        }
        if let Some(class) = &self.class {
            let ok = !class.is_empty()
                && class.len() <= MAX_CLASS_BYTES
                && class
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(ValidationError::new(
                    "class",
                    format!(
                        "{} must be 1 to {MAX_CLASS_BYTES} bytes of lowercase [a-z0-9-]",
                        excerpt(class)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The options only some providers honour, by field name, in a fixed order: placement
    /// (`node_selector`, `tolerations`, `node_affinity`, `ephemeral_storage`, `class`) and
    /// secrets (`secret_env`, `secret_files`). Empty for a job that asks for none.
    #[must_use]
    pub fn platform_options(&self) -> Vec<&'static str> {
        [
            ("secret_env", !self.secret_env.is_empty()),
            ("secret_files", !self.secret_files.is_empty()),
            ("node_selector", !self.node_selector.is_empty()),
            ("tolerations", !self.tolerations.is_empty()),
            ("node_affinity", !self.node_affinity.is_empty()),
            ("ephemeral_storage", self.ephemeral_storage.is_some()),
            ("class", self.class.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, asked)| asked.then_some(name))
        .collect()
    }

    /// Every string of the spec, added up.
    fn total_bytes(&self) -> usize {
        let map = |m: &BTreeMap<String, String>| -> usize {
            m.iter().map(|(k, v)| k.len() + v.len()).sum()
        };
        let optional = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let refs = |m: &BTreeMap<String, SecretRef>| -> usize {
            m.iter()
                .map(|(k, r)| k.len() + r.secret.len() + r.key.len())
                .sum()
        };
        self.name.len()
            + self.command.len()
            + self.args.iter().map(String::len).sum::<usize>()
            + map(&self.env)
            + optional(&self.working_dir)
            + optional(&self.image)
            + map(&self.labels)
            + optional(&self.provider)
            + map(&self.node_selector)
            + self
                .tolerations
                .iter()
                .map(|t| t.key.len() + t.value.len())
                .sum::<usize>()
            + self
                .node_affinity
                .iter()
                .map(|t| t.key.len() + t.values.iter().map(String::len).sum::<usize>())
                .sum::<usize>()
            + optional(&self.class)
            + refs(&self.secret_env)
            + refs(&self.secret_files)
    }
}

/// Refuses a value longer than `max` bytes.
fn at_most(field: impl FnOnce() -> String, len: usize, max: usize) -> Result<(), ValidationError> {
    if len > max {
        return Err(ValidationError::new(
            field(),
            format!("is {len} bytes; at most {max} allowed"),
        ));
    }
    Ok(())
}

/// Refuses a text field longer than `max` bytes or holding control characters, which
/// have no place in names, paths and references (and could forge log lines or terminal
/// output where the value is shown).
fn text(field: &'static str, value: &str, max: usize) -> Result<(), ValidationError> {
    at_most(|| field.to_owned(), value.len(), max)?;
    if let Some((at, c)) = value.char_indices().find(|(_, c)| c.is_control()) {
        return Err(ValidationError::new(
            field,
            format!(
                "must not contain control characters (found U+{:04X} at byte {at})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Serializes durations as humantime text ("1h 30m") and reads them back.
pub(crate) mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<JobSpec, ValidationError>) -> String {
        result
            .expect_err("spec should be refused")
            .field()
            .to_owned()
    }

    #[test]
    fn a_plain_command_is_valid() {
        let spec = JobSpec::builder("echo").args(["hi"]).build().unwrap();
        assert_eq!(spec.timeout, DEFAULT_TIMEOUT);
        assert_eq!(spec.args, vec!["hi".to_owned()]);
    }

    #[test]
    fn empty_command_names_command() {
        assert_eq!(field_of(JobSpec::builder("  ").build()), "command");
    }

    #[test]
    fn zero_timeout_names_timeout() {
        assert_eq!(
            field_of(JobSpec::builder("true").timeout(Duration::ZERO).build()),
            "timeout"
        );
        assert_eq!(
            field_of(
                JobSpec::builder("true")
                    .timeout(MAX_TIMEOUT + Duration::from_secs(1))
                    .build()
            ),
            "timeout"
        );
    }

    #[test]
    fn oversized_env_names_env() {
        let env = (0..9)
            .map(|i| (format!("BIG{i}"), "x".repeat(120 * 1024)))
            .collect();
        let err = JobSpec::builder("true").env(env).build().unwrap_err();
        assert_eq!(err.field(), "env");
        assert!(err.to_string().contains("bytes in total"), "{err}");
    }

    #[test]
    fn bad_env_key_names_the_variable() {
        let env = BTreeMap::from([("A=B".to_owned(), "1".to_owned())]);
        assert_eq!(
            field_of(JobSpec::builder("true").env(env).build()),
            "env[\"A=B\"]"
        );
        let env = BTreeMap::from([("HODEI_OTP_TOKEN".to_owned(), "x".to_owned())]);
        assert_eq!(
            field_of(JobSpec::builder("true").env(env).build()),
            "env[\"HODEI_OTP_TOKEN\"]"
        );
    }

    #[test]
    fn priority_outside_its_range_names_priority() {
        assert_eq!(
            JobSpec::builder("true").build().unwrap().priority,
            0,
            "priority defaults to 0"
        );
        for ok in [MIN_PRIORITY, 0, MAX_PRIORITY] {
            assert!(
                JobSpec::builder("true").priority(ok).build().is_ok(),
                "{ok}"
            );
        }
        for bad in [MIN_PRIORITY - 1, MAX_PRIORITY + 1, i32::MAX] {
            let err = JobSpec::builder("true").priority(bad).build().unwrap_err();
            assert_eq!(err.field(), "priority");
            assert!(err.message().contains("-100..=100"), "{err}");
        }
    }

    #[test]
    fn priority_round_trips_through_json_and_old_specs_read_as_0() {
        let spec = JobSpec::builder("true").priority(-7).build().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"priority\":-7"), "{json}");
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
        let plain = serde_json::to_string(&JobSpec::builder("true").build().unwrap()).unwrap();
        assert!(!plain.contains("priority"), "{plain}");
    }

    #[test]
    fn relative_working_dir_is_refused() {
        assert_eq!(
            field_of(JobSpec::builder("true").working_dir("tmp").build()),
            "working_dir"
        );
    }

    #[test]
    fn bad_label_and_image_are_refused() {
        let labels = BTreeMap::from([("team".to_owned(), "has space".to_owned())]);
        assert_eq!(
            field_of(JobSpec::builder("true").labels(labels).build()),
            "labels[\"team\"]"
        );
        assert_eq!(
            field_of(JobSpec::builder("true").image("bad image").build()),
            "image"
        );
        assert_eq!(
            field_of(JobSpec::builder("true").provider("").build()),
            "provider"
        );
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = JobSpec::builder("echo")
            .args(["a"])
            .memory("64Mi".parse().unwrap())
            .cpu("250m".parse().unwrap())
            .timeout(Duration::from_secs(90))
            .build()
            .unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"64Mi\""), "{json}");
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
    }

    fn placed() -> JobSpec {
        JobSpec::builder("true")
            .node_selector(BTreeMap::from([("pool".to_owned(), "batch".to_owned())]))
            .tolerations(vec!["gpu=true:NoSchedule".parse().unwrap()])
            .node_affinity(vec!["zone in (a,b)".parse().unwrap()])
            .ephemeral_storage("2Gi".parse().unwrap())
            .class("large")
            .secret_env(BTreeMap::from([(
                "DB_PASSWORD".to_owned(),
                "db/password".parse().unwrap(),
            )]))
            .secret_files(BTreeMap::from([(
                "/etc/app/token".to_owned(),
                "app/token".parse().unwrap(),
            )]))
            .build()
            .unwrap()
    }

    #[test]
    fn placement_and_secret_errors_name_the_field() {
        let base = placed();
        type Change = fn(&mut JobSpec);
        let cases: [(&str, Change); 7] = [
            ("node_selector[\"bad key\"]", |s| {
                s.node_selector.insert("bad key".into(), "v".into());
            }),
            ("tolerations[1]", |s| {
                s.tolerations.push("pool=has space".parse().unwrap());
            }),
            ("node_affinity[0]", |s| {
                s.node_affinity[0].values.clear();
            }),
            ("ephemeral_storage", |s| {
                s.ephemeral_storage = Some(Memory::from_bytes(0));
            }),
            ("class", |s| s.class = Some("Large Class".into())),
            ("secret_env[\"HODEI_TOKEN\"]", |s| {
                s.secret_env
                    .insert("HODEI_TOKEN".into(), "db/password".parse().unwrap());
            }),
            ("secret_files[\"relative\"]", |s| {
                s.secret_files
                    .insert("relative".into(), "db/password".parse().unwrap());
            }),
        ];
        for (field, change) in cases {
            let mut spec = base.clone();
            change(&mut spec);
            let err = spec.validate().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn too_many_node_selector_labels_are_refused() {
        let selector = (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        let err = JobSpec::builder("true")
            .node_selector(selector)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "node_selector");
        assert!(err.message().contains("at most 32"), "{err}");
    }

    #[test]
    fn platform_options_list_what_the_job_asks_for() {
        assert!(
            JobSpec::builder("true")
                .build()
                .unwrap()
                .platform_options()
                .is_empty()
        );
        assert_eq!(
            placed().platform_options(),
            [
                "secret_env",
                "secret_files",
                "node_selector",
                "tolerations",
                "node_affinity",
                "ephemeral_storage",
                "class"
            ]
        );
    }

    #[test]
    fn placement_and_secret_references_round_trip_through_json() {
        let spec = placed();
        let json = serde_json::to_string(&spec).unwrap();
        assert!(json.contains("\"gpu=true:NoSchedule\""), "{json}");
        assert!(json.contains("\"db/password\""), "{json}");
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), spec);
        // A spec stored before these options existed still reads.
        let plain = JobSpec::builder("true").build().unwrap();
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("secret"), "{json}");
        assert_eq!(serde_json::from_str::<JobSpec>(&json).unwrap(), plain);
    }
}
