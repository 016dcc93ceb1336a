//! Settings of the Kubernetes provider: a plain value with a default for every field.

use std::{
    collections::BTreeMap,
    num::{NonZeroU32, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

pub use hodei_k8s::{
    DEFAULT_IDENTITY_TOKEN_AUDIENCE, DEFAULT_IMAGE_PULL_GRACE, DEFAULT_IMAGE_PULL_POLICY,
    DEFAULT_SCHEDULING_TIMEOUT, DEFAULT_SERVICE_ACCOUNT,
    DEFAULT_WRITES_PER_SECOND as DEFAULT_API_WRITES_PER_SECOND,
};

use super::ResourceClass;
use crate::job::{Cpu, Memory, ValidationError};

/// Namespace worker pods run in by default.
pub const DEFAULT_NAMESPACE: &str = "hodei-jobs-workers";
/// Worker image by default.
pub const DEFAULT_WORKER_IMAGE: &str = concat!("hodei-worker:", env!("CARGO_PKG_VERSION"));
/// CPU request of a job that gives none, by default.
pub const DEFAULT_CPU_REQUEST: Cpu = Cpu::from_millicores(500);
/// Memory request of a job that gives none, by default.
pub const DEFAULT_MEMORY_REQUEST: Memory = Memory::from_bytes(1 << 30);
/// CPU limit of a job that gives none, by default.
pub const DEFAULT_CPU_LIMIT: Cpu = Cpu::from_millicores(2000);
/// Memory limit of a job that gives none, by default.
pub const DEFAULT_MEMORY_LIMIT: Memory = Memory::from_bytes(4 << 30);
/// Local disk (`ephemeral-storage`) every worker pod requests, by default.
pub const DEFAULT_EPHEMERAL_STORAGE_REQUEST: Memory = Memory::from_bytes(1 << 30);
/// Local disk above which the kubelet evicts a worker pod, by default.
pub const DEFAULT_EPHEMERAL_STORAGE_LIMIT: Memory = Memory::from_bytes(10 << 30);
/// Most a worker pod's `/tmp` may hold, by default.
pub const DEFAULT_TMP_SIZE_LIMIT: Memory = Memory::from_bytes(1 << 30);
/// Most a worker pod's working directory may hold, by default.
pub const DEFAULT_WORKING_DIR_SIZE_LIMIT: Memory = Memory::from_bytes(8 << 30);
/// How long a pod may take to start and register, by default.
pub const DEFAULT_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(300);
/// The image pull policies Kubernetes knows.
pub const IMAGE_PULL_POLICIES: [&str; 3] = ["Always", "IfNotPresent", "Never"];

/// Everything the Kubernetes provider can be told. Start from [`Default`] and change
/// what differs; [`KubernetesProvider::connect`](super::KubernetesProvider::connect)
/// checks the result with [`validate`](Self::validate).
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesSettings {
    /// Namespace of the worker pods.
    pub namespace: String,
    /// Kubeconfig file; inferred (in-cluster or the default kubeconfig) when absent.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; the current one when absent.
    pub context: Option<String>,
    /// Image of the worker container when the job names none.
    pub worker_image: String,
    /// Default CPU request of a job that gives none.
    pub default_cpu_request: Cpu,
    /// Default memory request of a job that gives none.
    pub default_memory_request: Memory,
    /// Default CPU limit of a job that gives none.
    pub default_cpu_limit: Cpu,
    /// Default memory limit of a job that gives none.
    pub default_memory_limit: Memory,
    /// Local disk (`ephemeral-storage`: container logs and the `/tmp` and working-dir
    /// emptyDirs) every worker pod requests.
    pub default_ephemeral_storage_request: Memory,
    /// Local disk above which the kubelet evicts a worker pod; it must hold
    /// `tmp_size_limit` and `working_dir_size_limit` together.
    pub default_ephemeral_storage_limit: Memory,
    /// `sizeLimit` of the `/tmp` emptyDir of worker pods.
    pub tmp_size_limit: Memory,
    /// `sizeLimit` of the working-dir emptyDir of worker pods (of `/tmp` when a job works
    /// there).
    pub working_dir_size_limit: Memory,
    /// ServiceAccount of worker pods; it must hold no permissions.
    pub service_account: String,
    /// Keep finished pods this long for debugging before deleting them.
    pub ttl_after_finished: Option<Duration>,
    /// Image pull secrets of worker pods.
    pub image_pull_secrets: Vec<String>,
    /// Image pull policy of worker pods: one of [`IMAGE_PULL_POLICIES`].
    pub image_pull_policy: String,
    /// Node selector of worker pods.
    pub node_selector: BTreeMap<String, String>,
    /// Taints worker pods tolerate.
    pub tolerations: Vec<hodei_k8s::Toleration>,
    /// Most worker pods at once; further jobs stay queued. Unlimited when absent.
    pub max_pods: Option<NonZeroUsize>,
    /// How long image pull errors are tolerated before the job fails.
    pub image_pull_grace: Duration,
    /// How long a pod may stay unschedulable before the job fails.
    pub scheduling_timeout: Duration,
    /// How long a pod may take to start and register.
    pub registration_timeout: Duration,
    /// Address of the worker API workers in the cluster dial, e.g.
    /// `https://hodei-server:50052`;
    /// the server's own advertise address when absent.
    pub advertise_address: Option<String>,
    /// Most writes (create, delete) per second to the API server.
    pub api_writes_per_second: NonZeroU32,
    /// Audience of the ServiceAccount token projected into every worker pod (read-only,
    /// at `/var/run/secrets/hodei/token`, 10-minute lifetime, bound to the pod). The worker
    /// registers with it and the server checks it with a TokenReview for this audience.
    /// It is useless against the API server as long as the worker ServiceAccount holds no
    /// rights.
    pub identity_token_audience: String,
    /// ConfigMap in `namespace` whose key `ca.crt` holds the CA bundle workers verify an
    /// `https://` server with; mounted read-only into worker pods and named by
    /// `HODEI_SERVER_CA`. The system's roots when absent.
    pub server_ca_config_map: Option<String>,
    /// Node label keys a job may name in its node selector and node affinity, as patterns
    /// where `*` stands for any run of characters (`zone.example.com/*`). Empty by
    /// default: no job may choose its nodes.
    pub allowed_node_selectors: Vec<String>,
    /// Taint keys a job may tolerate, as patterns. Empty by default: none.
    pub allowed_tolerations: Vec<String>,
    /// Names of secrets (in `namespace`) a job may take env vars and files from, as
    /// patterns. Empty by default: none.
    pub allowed_secrets: Vec<String>,
    /// Resource classes jobs may pick by name; they bypass the allow-lists.
    pub resource_classes: BTreeMap<String, ResourceClass>,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            kubeconfig: None,
            context: None,
            worker_image: DEFAULT_WORKER_IMAGE.to_owned(),
            default_cpu_request: DEFAULT_CPU_REQUEST,
            default_memory_request: DEFAULT_MEMORY_REQUEST,
            default_cpu_limit: DEFAULT_CPU_LIMIT,
            default_memory_limit: DEFAULT_MEMORY_LIMIT,
            default_ephemeral_storage_request: DEFAULT_EPHEMERAL_STORAGE_REQUEST,
            default_ephemeral_storage_limit: DEFAULT_EPHEMERAL_STORAGE_LIMIT,
            tmp_size_limit: DEFAULT_TMP_SIZE_LIMIT,
            working_dir_size_limit: DEFAULT_WORKING_DIR_SIZE_LIMIT,
            service_account: DEFAULT_SERVICE_ACCOUNT.to_owned(),
            ttl_after_finished: None,
            image_pull_secrets: Vec::new(),
            image_pull_policy: DEFAULT_IMAGE_PULL_POLICY.to_owned(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            max_pods: None,
            image_pull_grace: DEFAULT_IMAGE_PULL_GRACE,
            scheduling_timeout: DEFAULT_SCHEDULING_TIMEOUT,
            registration_timeout: DEFAULT_REGISTRATION_TIMEOUT,
            advertise_address: None,
            api_writes_per_second: DEFAULT_API_WRITES_PER_SECOND,
            identity_token_audience: DEFAULT_IDENTITY_TOKEN_AUDIENCE.to_owned(),
            server_ca_config_map: None,
            allowed_node_selectors: Vec::new(),
            allowed_tolerations: Vec::new(),
            allowed_secrets: Vec::new(),
            resource_classes: BTreeMap::new(),
        }
    }
}

impl KubernetesSettings {
    /// Checks what the types leave open: Kubernetes names, the pull policy, requests
    /// within limits, scratch volumes within the local disk limit and the advertise
    /// address. The error names the field, e.g.
    /// `namespace`.
    pub fn validate(&self) -> Result<(), ValidationError> {
        dns_label("namespace", &self.namespace)?;
        dns_label("service_account", &self.service_account)?;
        for secret in &self.image_pull_secrets {
            dns_label("image_pull_secrets", secret)?;
        }
        if let Some(config_map) = &self.server_ca_config_map {
            dns_label("server_ca_config_map", config_map)?;
        }
        if !IMAGE_PULL_POLICIES.contains(&self.image_pull_policy.as_str()) {
            return Err(ValidationError::new(
                "image_pull_policy",
                format!(
                    "{:?} must be Always, IfNotPresent or Never",
                    self.image_pull_policy
                ),
            ));
        }
        if self.default_cpu_request > self.default_cpu_limit {
            return Err(ValidationError::new(
                "default_cpu_request",
                format!(
                    "{} exceeds the limit {}",
                    self.default_cpu_request, self.default_cpu_limit
                ),
            ));
        }
        if self.default_memory_request > self.default_memory_limit {
            return Err(ValidationError::new(
                "default_memory_request",
                format!(
                    "{} exceeds the limit {}",
                    self.default_memory_request, self.default_memory_limit
                ),
            ));
        }
        self.validate_local_disk()?;
        if let Some(address) = &self.advertise_address
            && !(address.starts_with("http://") || address.starts_with("https://"))
        {
            return Err(ValidationError::new(
                "advertise_address",
                format!("{address:?} must be a URL such as https://hodei-server:50052"),
            ));
        }
        let audience = &self.identity_token_audience;
        if audience.is_empty()
            || audience.len() > 253
            || audience
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ValidationError::new(
                "identity_token_audience",
                "must be 1 to 253 characters without spaces or control characters, e.g. hodei",
            ));
        }
        for (field, patterns) in [
            ("allowed_node_selectors", &self.allowed_node_selectors),
            ("allowed_tolerations", &self.allowed_tolerations),
            ("allowed_secrets", &self.allowed_secrets),
        ] {
            if let Some(bad) = patterns.iter().find(|p| {
                p.is_empty()
                    || p.len() > 317
                    || p.contains(|c: char| c.is_control() || c.is_whitespace() || c == ',')
            }) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "pattern {bad:?} must be 1 to 317 characters without spaces, commas or control characters"
                    ),
                ));
            }
        }
        super::classes::check_resource_classes(&self.resource_classes)?;
        Ok(())
    }
}

impl KubernetesSettings {
    /// The disk request within its limit, and both scratch volumes non-empty and, together,
    /// within the limit: the kubelet evicts a pod over the limit before a volume's own
    /// `sizeLimit` could matter, and the container's logs need room too.
    fn validate_local_disk(&self) -> Result<(), ValidationError> {
        let limit = self.default_ephemeral_storage_limit;
        if self.default_ephemeral_storage_request > limit {
            return Err(ValidationError::new(
                "default_ephemeral_storage_request",
                format!(
                    "{} exceeds default_ephemeral_storage_limit {limit}",
                    self.default_ephemeral_storage_request
                ),
            ));
        }
        for (field, size) in [
            ("tmp_size_limit", self.tmp_size_limit),
            ("working_dir_size_limit", self.working_dir_size_limit),
        ] {
            if size.bytes() == 0 {
                return Err(ValidationError::new(field, "must be above 0, e.g. 1Gi"));
            }
        }
        let scratch = self
            .tmp_size_limit
            .bytes()
            .saturating_add(self.working_dir_size_limit.bytes());
        if scratch > limit.bytes() {
            return Err(ValidationError::new(
                "default_ephemeral_storage_limit",
                format!(
                    "{limit} cannot hold tmp_size_limit {} and working_dir_size_limit {} together \
                     ({}); raise it or lower them",
                    self.tmp_size_limit,
                    self.working_dir_size_limit,
                    Memory::from_bytes(scratch)
                ),
            ));
        }
        Ok(())
    }
}

fn dns_label(field: &'static str, value: &str) -> Result<(), ValidationError> {
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            format!(
                "{value:?} is not a valid Kubernetes name (lowercase letters, digits and '-', at most 63)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation_and_are_valid() {
        let s = KubernetesSettings::default();
        assert_eq!(s.namespace, "hodei-jobs-workers");
        assert_eq!(s.worker_image, "hodei-worker:0.1.0");
        assert_eq!(s.default_cpu_request.to_string(), "500m");
        assert_eq!(s.default_memory_request.to_string(), "1Gi");
        assert_eq!(s.default_cpu_limit.to_string(), "2");
        assert_eq!(s.default_memory_limit.to_string(), "4Gi");
        assert_eq!(s.default_ephemeral_storage_request.to_string(), "1Gi");
        assert_eq!(s.default_ephemeral_storage_limit.to_string(), "10Gi");
        assert_eq!(s.tmp_size_limit.to_string(), "1Gi");
        assert_eq!(s.working_dir_size_limit.to_string(), "8Gi");
        assert_eq!(s.service_account, "hodei-jobs-worker");
        assert_eq!(s.image_pull_policy, "IfNotPresent");
        assert_eq!(s.image_pull_grace, Duration::from_secs(30));
        assert_eq!(s.scheduling_timeout, Duration::from_secs(120));
        assert_eq!(s.registration_timeout, Duration::from_secs(300));
        assert_eq!(s.api_writes_per_second.get(), 20);
        assert_eq!(s.identity_token_audience, "hodei");
        s.validate().unwrap();
    }

    #[test]
    fn invalid_values_name_the_field() {
        type Change = fn(&mut KubernetesSettings);
        let cases: [(&str, Change); 13] = [
            ("namespace", |s| s.namespace = "Bad_NS".into()),
            ("service_account", |s| s.service_account = "-sa".into()),
            ("image_pull_secrets", |s| {
                s.image_pull_secrets = vec!["ok".into(), String::new()];
            }),
            ("image_pull_policy", |s| {
                s.image_pull_policy = "Sometimes".into()
            }),
            ("default_cpu_request", |s| {
                s.default_cpu_request = Cpu::from_millicores(4000);
            }),
            ("default_memory_request", |s| {
                s.default_memory_limit = Memory::from_bytes(1 << 20);
            }),
            ("default_ephemeral_storage_request", |s| {
                s.default_ephemeral_storage_request = Memory::from_bytes(20 << 30);
            }),
            ("default_ephemeral_storage_limit", |s| {
                s.working_dir_size_limit = Memory::from_bytes(10 << 30);
            }),
            ("tmp_size_limit", |s| {
                s.tmp_size_limit = Memory::from_bytes(0)
            }),
            ("working_dir_size_limit", |s| {
                s.working_dir_size_limit = Memory::from_bytes(0);
            }),
            ("advertise_address", |s| {
                s.advertise_address = Some("hodei-server:50051".into());
            }),
            ("identity_token_audience", |s| {
                s.identity_token_audience = "two words".into();
            }),
            ("server_ca_config_map", |s| {
                s.server_ca_config_map = Some("Server CA".into());
            }),
        ];
        for (field, change) in cases {
            let mut settings = KubernetesSettings::default();
            change(&mut settings);
            let err = settings.validate().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn scratch_volumes_must_fit_the_disk_limit_together() {
        let fits = KubernetesSettings {
            default_ephemeral_storage_limit: Memory::from_bytes(9 << 30),
            ..KubernetesSettings::default()
        };
        fits.validate().unwrap();
        let too_small = KubernetesSettings {
            tmp_size_limit: Memory::from_bytes(2 << 30),
            ..fits
        };
        let err = too_small.validate().unwrap_err();
        assert_eq!(err.field(), "default_ephemeral_storage_limit");
        assert_eq!(
            err.message(),
            "9Gi cannot hold tmp_size_limit 2Gi and working_dir_size_limit 8Gi together (10Gi); \
             raise it or lower them"
        );
    }
}
