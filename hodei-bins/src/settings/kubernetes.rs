//! The Kubernetes provider's flags and `HODEI_K8S_*` variables, and starting the provider
//! from them.

use std::sync::Arc;

use clap::ArgAction;
use hodei_core::Provider;

use super::{SettingsError, parse::switch};

/// Help heading of the Kubernetes flags.
const HEADING: &str = "Kubernetes provider";

#[cfg(feature = "kubernetes")]
pub use supported::KubernetesArgs;

#[cfg(feature = "kubernetes")]
mod supported {
    use std::{
        num::{NonZeroU32, NonZeroUsize},
        path::PathBuf,
        str::FromStr,
        time::Duration,
    };

    use clap::{Args, Command, builder::PossibleValuesParser};
    use hodei_core::{
        Cpu, Memory, ValidationError,
        provider::{KubernetesProvider, KubernetesSettings, kubernetes as k8s},
    };

    use super::{
        super::{ServerSettings, parse},
        *,
    };

    /// Flags of the Kubernetes provider; each can also come from its variable.
    #[derive(Debug, Clone, Args)]
    #[command(next_help_heading = HEADING)]
    pub struct KubernetesArgs {
        /// Register the Kubernetes provider; it comes first, so jobs go to pods unless
        /// they name another provider.
        #[arg(long = "kubernetes-enabled", env = "HODEI_KUBERNETES_ENABLED", value_name = "BOOL",
            default_value = "false", value_parser = switch, action = ArgAction::Set)]
        pub enabled: bool,
        /// Namespace of the worker pods.
        #[arg(long = "k8s-namespace", env = "HODEI_K8S_NAMESPACE", value_name = "NAME",
            default_value = k8s::DEFAULT_NAMESPACE)]
        pub namespace: String,
        /// Kubeconfig file [default: in-cluster, then KUBECONFIG or ~/.kube/config].
        #[arg(
            long = "k8s-kubeconfig",
            env = "HODEI_K8S_KUBECONFIG",
            value_name = "FILE"
        )]
        pub kubeconfig: Option<PathBuf>,
        /// Kubeconfig context [default: the current one].
        #[arg(long = "k8s-context", env = "HODEI_K8S_CONTEXT", value_name = "NAME")]
        pub context: Option<String>,
        /// Image of jobs that name none.
        #[arg(long = "worker-image", env = "HODEI_WORKER_IMAGE", value_name = "IMAGE",
            default_value = k8s::DEFAULT_WORKER_IMAGE)]
        pub worker_image: String,
        /// CPU request of a job that gives none.
        #[arg(long = "k8s-default-cpu-request", env = "HODEI_K8S_DEFAULT_CPU_REQUEST",
            value_name = "CPU", default_value_t = k8s::DEFAULT_CPU_REQUEST)]
        pub default_cpu_request: Cpu,
        /// Memory request of a job that gives none.
        #[arg(long = "k8s-default-memory-request", env = "HODEI_K8S_DEFAULT_MEMORY_REQUEST",
            value_name = "MEMORY", default_value_t = k8s::DEFAULT_MEMORY_REQUEST)]
        pub default_memory_request: Memory,
        /// CPU limit of a job that gives none.
        #[arg(long = "k8s-default-cpu-limit", env = "HODEI_K8S_DEFAULT_CPU_LIMIT",
            value_name = "CPU", default_value_t = k8s::DEFAULT_CPU_LIMIT)]
        pub default_cpu_limit: Cpu,
        /// Memory limit of a job that gives none.
        #[arg(long = "k8s-default-memory-limit", env = "HODEI_K8S_DEFAULT_MEMORY_LIMIT",
            value_name = "MEMORY", default_value_t = k8s::DEFAULT_MEMORY_LIMIT)]
        pub default_memory_limit: Memory,
        /// Local disk (ephemeral-storage: logs, /tmp and the working dir) every worker pod
        /// requests.
        #[arg(long = "k8s-default-ephemeral-storage-request",
            env = "HODEI_K8S_DEFAULT_EPHEMERAL_STORAGE_REQUEST", value_name = "BYTES",
            default_value_t = k8s::DEFAULT_EPHEMERAL_STORAGE_REQUEST)]
        pub default_ephemeral_storage_request: Memory,
        /// Local disk above which the kubelet evicts a worker pod; must hold the /tmp and
        /// working-dir size limits together.
        #[arg(long = "k8s-default-ephemeral-storage-limit",
            env = "HODEI_K8S_DEFAULT_EPHEMERAL_STORAGE_LIMIT", value_name = "BYTES",
            default_value_t = k8s::DEFAULT_EPHEMERAL_STORAGE_LIMIT)]
        pub default_ephemeral_storage_limit: Memory,
        /// Size limit of a worker pod's /tmp.
        #[arg(long = "k8s-tmp-size-limit", env = "HODEI_K8S_TMP_SIZE_LIMIT",
            value_name = "BYTES", default_value_t = k8s::DEFAULT_TMP_SIZE_LIMIT)]
        pub tmp_size_limit: Memory,
        /// Size limit of a worker pod's working directory.
        #[arg(long = "k8s-workdir-size-limit", env = "HODEI_K8S_WORKDIR_SIZE_LIMIT",
            value_name = "BYTES", default_value_t = k8s::DEFAULT_WORKING_DIR_SIZE_LIMIT)]
        pub working_dir_size_limit: Memory,
        /// ServiceAccount of worker pods; it must exist and hold no permissions.
        #[arg(long = "k8s-service-account", env = "HODEI_K8S_SERVICE_ACCOUNT",
            value_name = "NAME", default_value = k8s::DEFAULT_SERVICE_ACCOUNT)]
        pub service_account: String,
        /// Keep finished pods this many seconds, then delete them [default: delete at once].
        #[arg(long = "k8s-ttl-seconds-after-finished", env = "HODEI_K8S_TTL_SECONDS_AFTER_FINISHED",
            value_name = "SECONDS", value_parser = whole_seconds)]
        pub ttl_after_finished: Option<Duration>,
        /// Image pull secrets of worker pods, comma-separated.
        #[arg(long = "k8s-image-pull-secret", env = "HODEI_K8S_IMAGE_PULL_SECRET",
            value_name = "NAMES", value_delimiter = ',', value_parser = trimmed)]
        pub image_pull_secrets: Vec<String>,
        /// Image pull policy of worker pods.
        #[arg(long = "k8s-image-pull-policy", env = "HODEI_K8S_IMAGE_PULL_POLICY",
            value_name = "POLICY", default_value = k8s::DEFAULT_IMAGE_PULL_POLICY,
            value_parser = PossibleValuesParser::new(k8s::IMAGE_PULL_POLICIES))]
        pub image_pull_policy: String,
        /// Most worker pods at once; further jobs stay queued [default: unlimited].
        #[arg(long = "k8s-max-pods", env = "HODEI_K8S_MAX_PODS", value_name = "N",
            value_parser = positive::<NonZeroUsize>)]
        pub max_pods: Option<NonZeroUsize>,
        /// How long ErrImagePull/ImagePullBackOff is tolerated before the job fails.
        #[arg(long = "k8s-image-pull-grace", env = "HODEI_K8S_IMAGE_PULL_GRACE",
            value_name = "DURATION", value_parser = parse::duration,
            default_value_t = k8s::DEFAULT_IMAGE_PULL_GRACE.into())]
        pub image_pull_grace: humantime::Duration,
        /// How long a pod may stay unschedulable before the job fails.
        #[arg(long = "k8s-scheduling-timeout", env = "HODEI_K8S_SCHEDULING_TIMEOUT",
            value_name = "DURATION", value_parser = parse::duration,
            default_value_t = k8s::DEFAULT_SCHEDULING_TIMEOUT.into())]
        pub scheduling_timeout: humantime::Duration,
        /// How long a pod may take from creation to registration, image pull included.
        #[arg(long = "k8s-registration-timeout", env = "HODEI_K8S_REGISTRATION_TIMEOUT",
            value_name = "DURATION", value_parser = parse::duration,
            default_value_t = k8s::DEFAULT_REGISTRATION_TIMEOUT.into())]
        pub registration_timeout: humantime::Duration,
        /// Most pod creates and deletes per second sent to the API server.
        #[arg(long = "k8s-api-writes-per-second", env = "HODEI_K8S_API_WRITES_PER_SECOND",
            value_name = "N", value_parser = positive::<NonZeroU32>,
            default_value_t = k8s::DEFAULT_API_WRITES_PER_SECOND)]
        pub api_writes_per_second: NonZeroU32,
        /// Audience of the pod-bound ServiceAccount token projected into every worker pod
        /// (/var/run/secrets/hodei/token); workers register with it and the server checks
        /// it with a TokenReview for this audience.
        #[arg(
            long = "k8s-worker-token-audience",
            env = "HODEI_K8S_WORKER_TOKEN_AUDIENCE",
            value_name = "AUDIENCE",
            default_value = k8s::DEFAULT_IDENTITY_TOKEN_AUDIENCE
        )]
        pub identity_token_audience: String,
        /// ConfigMap (key ca.crt) with the CA bundle worker pods verify an https://
        /// server with [default: the system's roots].
        #[arg(
            long = "k8s-server-ca-configmap",
            env = "HODEI_K8S_SERVER_CA_CONFIGMAP",
            value_name = "NAME"
        )]
        pub server_ca_config_map: Option<String>,
        /// Node label keys a job may name in --node-selector and --node-affinity,
        /// comma-separated; `*` matches any run of characters [default: none].
        #[arg(long = "k8s-allowed-node-selectors", env = "HODEI_K8S_ALLOWED_NODE_SELECTORS",
            value_name = "PATTERNS", value_delimiter = ',', value_parser = trimmed)]
        pub allowed_node_selectors: Vec<String>,
        /// Taint keys a job may tolerate with --toleration, comma-separated patterns
        /// [default: none].
        #[arg(long = "k8s-allowed-tolerations", env = "HODEI_K8S_ALLOWED_TOLERATIONS",
            value_name = "PATTERNS", value_delimiter = ',', value_parser = trimmed)]
        pub allowed_tolerations: Vec<String>,
        /// Secrets a job may use with --secret-env and --secret-file, comma-separated
        /// name patterns [default: none].
        #[arg(long = "k8s-allowed-secrets", env = "HODEI_K8S_ALLOWED_SECRETS",
            value_name = "PATTERNS", value_delimiter = ',', value_parser = trimmed)]
        pub allowed_secrets: Vec<String>,
        /// JSON file of resource classes jobs pick with --class [default: no classes].
        #[arg(
            long = "k8s-resource-classes-file",
            env = "HODEI_K8S_RESOURCE_CLASSES_FILE",
            value_name = "FILE"
        )]
        pub resource_classes_file: Option<PathBuf>,
    }

    /// The non-empty patterns of a comma-separated list.
    fn patterns(values: &[String]) -> Vec<String> {
        values.iter().filter(|p| !p.is_empty()).cloned().collect()
    }

    impl KubernetesArgs {
        /// The resource classes of the classes file; none without one.
        fn resource_classes(
            &self,
        ) -> Result<std::collections::BTreeMap<String, k8s::ResourceClass>, SettingsError> {
            const VARIABLE: &str = "HODEI_K8S_RESOURCE_CLASSES_FILE";
            let Some(path) = &self.resource_classes_file else {
                return Ok(std::collections::BTreeMap::new());
            };
            let invalid =
                |message: String| SettingsError::Invalid(ValidationError::new(VARIABLE, message));
            let meta = std::fs::metadata(path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            if meta.len() > MAX_CLASSES_FILE_BYTES {
                return Err(invalid(format!(
                    "{} is {} bytes; at most {MAX_CLASSES_FILE_BYTES} allowed",
                    path.display(),
                    meta.len()
                )));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
            k8s::parse_resource_classes(&text)
                .map_err(|e| invalid(format!("{}: {}", path.display(), e.message())))
        }

        /// The provider's settings, checked; workers dial `advertise_address` (the
        /// server's, when set). An invalid setting is an error naming its variable.
        pub fn settings(
            &self,
            advertise_address: Option<String>,
        ) -> Result<KubernetesSettings, SettingsError> {
            let settings = KubernetesSettings {
                namespace: self.namespace.clone(),
                kubeconfig: self.kubeconfig.clone(),
                context: self.context.clone(),
                worker_image: self.worker_image.clone(),
                default_cpu_request: self.default_cpu_request,
                default_memory_request: self.default_memory_request,
                default_cpu_limit: self.default_cpu_limit,
                default_memory_limit: self.default_memory_limit,
                default_ephemeral_storage_request: self.default_ephemeral_storage_request,
                default_ephemeral_storage_limit: self.default_ephemeral_storage_limit,
                tmp_size_limit: self.tmp_size_limit,
                working_dir_size_limit: self.working_dir_size_limit,
                service_account: self.service_account.clone(),
                ttl_after_finished: self.ttl_after_finished,
                image_pull_secrets: self
                    .image_pull_secrets
                    .iter()
                    .filter(|name| !name.is_empty())
                    .cloned()
                    .collect(),
                image_pull_policy: self.image_pull_policy.clone(),
                max_pods: self.max_pods,
                image_pull_grace: self.image_pull_grace.into(),
                scheduling_timeout: self.scheduling_timeout.into(),
                registration_timeout: self.registration_timeout.into(),
                advertise_address,
                api_writes_per_second: self.api_writes_per_second,
                identity_token_audience: self.identity_token_audience.clone(),
                server_ca_config_map: self.server_ca_config_map.clone(),
                allowed_node_selectors: patterns(&self.allowed_node_selectors),
                allowed_tolerations: patterns(&self.allowed_tolerations),
                allowed_secrets: patterns(&self.allowed_secrets),
                resource_classes: self.resource_classes()?,
                ..KubernetesSettings::default()
            };
            settings.validate().map_err(|error| {
                // With the server's flags: `advertise_address` is one of them.
                let cmd = Self::augment_args(ServerSettings::augment_args(Command::new("")));
                SettingsError::Invalid(ValidationError::new(
                    variable_of(&cmd, error.field()),
                    variables_in(&cmd, error.message()),
                ))
            })?;
            Ok(settings)
        }

        /// The Kubernetes provider when enabled, else nothing; it lists the worker pods
        /// once to check that it can reach them.
        pub async fn start(
            &self,
            advertise_address: Option<String>,
        ) -> Result<Option<Arc<dyn Provider>>, SettingsError> {
            if !self.enabled {
                return Ok(None);
            }
            let settings = self.settings(advertise_address)?;
            let provider = KubernetesProvider::connect(settings)
                .await
                .map_err(SettingsError::Kubernetes)?;
            let settings = provider.settings();
            tracing::info!(
                namespace = %settings.namespace,
                context = settings.context.as_deref().unwrap_or("(current)"),
                kubeconfig = ?settings.kubeconfig,
                image = %settings.worker_image,
                "Kubernetes provider enabled"
            );
            Ok(Some(Arc::new(provider)))
        }
    }

    /// The variable (else the flag) behind the argument with id `field`, for errors found
    /// after parsing; `field` itself when no argument has that id.
    fn variable_of(cmd: &Command, field: &str) -> String {
        cmd.get_arguments()
            .find(|a| a.get_id() == field)
            .and_then(|a| {
                a.get_env()
                    .map(|v| v.to_string_lossy().into_owned())
                    .or_else(|| a.get_long().map(|l| format!("--{l}")))
            })
            .unwrap_or_else(|| field.to_owned())
    }

    /// `message` with each setting it names by field (a word with `_`, such as
    /// `tmp_size_limit`) named by its variable instead.
    fn variables_in(cmd: &Command, message: &str) -> String {
        let mut named = String::with_capacity(message.len());
        let mut rest = message;
        while let Some(start) = rest.find(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            named.push_str(&rest[..start]);
            let word = &rest[start..];
            let end = word
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(word.len());
            let word = &word[..end];
            let is_setting = word.contains('_') && cmd.get_arguments().any(|a| a.get_id() == word);
            if is_setting {
                named.push_str(&variable_of(cmd, word));
            } else {
                named.push_str(word);
            }
            rest = &rest[start + end..];
        }
        named.push_str(rest);
        named
    }

    /// Largest resource classes file read.
    const MAX_CLASSES_FILE_BYTES: u64 = 1024 * 1024;

    /// A whole number of seconds.
    fn whole_seconds(value: &str) -> Result<Duration, String> {
        value
            .trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| "not a whole number of seconds".to_owned())
    }

    /// A number above zero, as one of the `NonZero` integers.
    fn positive<T: FromStr>(value: &str) -> Result<T, String> {
        value
            .trim()
            .parse()
            .map_err(|_| "not a positive number".to_owned())
    }

    /// A value without surrounding spaces, e.g. one name of a comma-separated list.
    fn trimmed(value: &str) -> Result<String, String> {
        Ok(value.trim().to_owned())
    }

    #[cfg(test)]
    mod tests {
        use clap::FromArgMatches;

        use super::*;

        /// Parsed from `flags` alone: the variables of whoever runs the tests play no part.
        fn args(flags: &[&str]) -> KubernetesArgs {
            let cmd = KubernetesArgs::augment_args(Command::new("test")).mut_args(|a| a.env(None));
            let matches = cmd
                .try_get_matches_from(std::iter::once("test").chain(flags.iter().copied()))
                .unwrap();
            KubernetesArgs::from_arg_matches(&matches).unwrap()
        }

        #[test]
        fn the_variable_of_a_field() {
            #[derive(Debug, Args)]
            struct Fields {
                #[arg(long, env = "HODEI_NAMESPACE")]
                namespace: Option<String>,
                #[arg(long)]
                plain: Option<String>,
            }
            let cmd = Fields::augment_args(Command::new("x"));
            assert_eq!(variable_of(&cmd, "namespace"), "HODEI_NAMESPACE");
            assert_eq!(variable_of(&cmd, "plain"), "--plain");
            assert_eq!(variable_of(&cmd, "other"), "other");
        }

        #[test]
        fn the_flag_defaults_are_the_library_defaults() {
            let args = args(&[]);
            assert!(!args.enabled);
            assert_eq!(args.settings(None).unwrap(), KubernetesSettings::default());
        }

        #[test]
        fn flags_become_settings() {
            let settings = args(&[
                "--k8s-namespace=jobs",
                "--k8s-max-pods=50",
                "--k8s-image-pull-grace=5s",
                "--k8s-ttl-seconds-after-finished=120",
                "--k8s-image-pull-secret=regcred, other,,",
                "--k8s-default-memory-limit=8Gi",
                "--k8s-api-writes-per-second=5",
            ])
            .settings(Some("http://hodei-server:50051".into()))
            .unwrap();
            assert_eq!(settings.namespace, "jobs");
            assert_eq!(settings.max_pods, NonZeroUsize::new(50));
            assert_eq!(settings.image_pull_grace, Duration::from_secs(5));
            assert_eq!(settings.ttl_after_finished, Some(Duration::from_secs(120)));
            assert_eq!(settings.image_pull_secrets, ["regcred", "other"]);
            assert_eq!(settings.default_memory_limit.to_string(), "8Gi");
            assert_eq!(settings.api_writes_per_second, NonZeroU32::new(5).unwrap());
            assert_eq!(
                settings.advertise_address.as_deref(),
                Some("http://hodei-server:50051")
            );
        }

        #[test]
        fn scratch_volumes_too_big_for_the_disk_limit_name_every_setting_involved() {
            let error = args(&[
                "--k8s-workdir-size-limit=12Gi",
                "--k8s-tmp-size-limit=512Mi",
            ])
            .settings(None)
            .unwrap_err()
            .to_string();
            assert_eq!(
                error,
                "invalid HODEI_K8S_DEFAULT_EPHEMERAL_STORAGE_LIMIT: 10Gi cannot hold \
                 HODEI_K8S_TMP_SIZE_LIMIT 512Mi and HODEI_K8S_WORKDIR_SIZE_LIMIT 12Gi together \
                 (12800Mi); raise it or lower them"
            );
            let error = args(&["--k8s-default-ephemeral-storage-request=20Gi"])
                .settings(None)
                .unwrap_err()
                .to_string();
            assert_eq!(
                error,
                "invalid HODEI_K8S_DEFAULT_EPHEMERAL_STORAGE_REQUEST: 20Gi exceeds \
                 HODEI_K8S_DEFAULT_EPHEMERAL_STORAGE_LIMIT 10Gi"
            );
            let settings = args(&[
                "--k8s-default-ephemeral-storage-request=2Gi",
                "--k8s-default-ephemeral-storage-limit=20Gi",
                "--k8s-tmp-size-limit=4Gi",
                "--k8s-workdir-size-limit=16Gi",
            ])
            .settings(None)
            .unwrap();
            assert_eq!(
                [
                    settings.default_ephemeral_storage_request,
                    settings.default_ephemeral_storage_limit,
                    settings.tmp_size_limit,
                    settings.working_dir_size_limit,
                ]
                .map(|m| m.to_string()),
                ["2Gi", "20Gi", "4Gi", "16Gi"]
            );
        }

        #[test]
        fn allow_lists_and_classes_become_settings() {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("classes.json");
            std::fs::write(
                &file,
                r#"{"gpu": {"cpu": "4", "node_selector": {"pool": "gpu"}}}"#,
            )
            .unwrap();
            let settings = args(&[
                "--k8s-allowed-node-selectors=pool, zone.example.com/*",
                "--k8s-allowed-tolerations=dedicated",
                "--k8s-allowed-secrets=app-*,,",
                &format!("--k8s-resource-classes-file={}", file.display()),
            ])
            .settings(None)
            .unwrap();
            assert_eq!(
                settings.allowed_node_selectors,
                ["pool", "zone.example.com/*"]
            );
            assert_eq!(settings.allowed_tolerations, ["dedicated"]);
            assert_eq!(settings.allowed_secrets, ["app-*"]);
            assert_eq!(
                settings.resource_classes["gpu"].node_selector["pool"],
                "gpu"
            );

            std::fs::write(&file, r#"{"gpu": {"cpus": "4"}}"#).unwrap();
            let error = args(&[&format!("--k8s-resource-classes-file={}", file.display())])
                .settings(None)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("invalid HODEI_K8S_RESOURCE_CLASSES_FILE: "),
                "{error}"
            );
            assert!(error.contains("unknown field `cpus`"), "{error}");
            let error = args(&["--k8s-allowed-secrets=a b"])
                .settings(None)
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with("invalid HODEI_K8S_ALLOWED_SECRETS: "),
                "{error}"
            );
        }

        #[test]
        fn an_invalid_setting_names_its_variable() {
            for (flags, advertise, variable) in [
                (&["--k8s-namespace=Bad_NS"][..], None, "HODEI_K8S_NAMESPACE"),
                (
                    &["--k8s-default-cpu-request=4"][..],
                    None,
                    "HODEI_K8S_DEFAULT_CPU_REQUEST",
                ),
                (&[][..], Some("hodei:50051"), "HODEI_ADVERTISE_ADDRESS"),
                (
                    &["--k8s-default-ephemeral-storage-request=11Gi"][..],
                    None,
                    "HODEI_K8S_DEFAULT_EPHEMERAL_STORAGE_REQUEST",
                ),
            ] {
                let error = args(flags)
                    .settings(advertise.map(str::to_owned))
                    .unwrap_err()
                    .to_string();
                assert!(
                    error.starts_with(&format!("invalid {variable}: ")),
                    "{error}"
                );
            }
        }
    }
}

/// Flags of the Kubernetes provider in a build without it: only the switch, so that
/// turning it on is an error rather than ignored.
#[cfg(not(feature = "kubernetes"))]
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = HEADING)]
pub struct KubernetesArgs {
    /// Register the Kubernetes provider (not in this build).
    #[arg(long = "kubernetes-enabled", env = "HODEI_KUBERNETES_ENABLED", value_name = "BOOL",
        default_value = "false", value_parser = switch, action = ArgAction::Set)]
    pub enabled: bool,
}

#[cfg(not(feature = "kubernetes"))]
impl KubernetesArgs {
    /// Nothing; an error when the provider is enabled.
    pub async fn start(
        &self,
        _advertise_address: Option<String>,
    ) -> Result<Option<Arc<dyn Provider>>, SettingsError> {
        if self.enabled {
            return Err(SettingsError::NoKubernetesSupport);
        }
        Ok(None)
    }
}
