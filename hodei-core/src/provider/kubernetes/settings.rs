//! Settings of the Kubernetes provider, from code or from the documented `HODEI_*` variables.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use crate::job::{Cpu, Memory, ValidationError};

/// Namespace worker pods run in by default.
pub const DEFAULT_NAMESPACE: &str = "hodei-jobs-workers";
/// ServiceAccount of worker pods by default; it must hold no permissions.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "hodei-jobs-worker";
/// Worker image by default.
pub const DEFAULT_WORKER_IMAGE: &str = "hodei-worker:latest";

/// Everything the Kubernetes provider can be told.
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
    /// ServiceAccount of worker pods.
    pub service_account: String,
    /// Keep finished pods this long for debugging before deleting them.
    pub ttl_after_finished: Option<Duration>,
    /// Image pull secrets of worker pods.
    pub image_pull_secrets: Vec<String>,
    /// Image pull policy of worker pods: `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// Node selector of worker pods.
    pub node_selector: BTreeMap<String, String>,
    /// Taints worker pods tolerate.
    pub tolerations: Vec<hodei_k8s::Toleration>,
    /// Most worker pods at once; further jobs stay queued.
    pub max_pods: Option<usize>,
    /// How long image pull errors are tolerated before the job fails.
    pub image_pull_grace: Duration,
    /// How long a pod may stay unschedulable before the job fails.
    pub scheduling_timeout: Duration,
    /// How long a pod may take to start and register.
    pub registration_timeout: Duration,
    /// Server address workers in the cluster dial, e.g. `http://hodei-server:50051`.
    pub advertise_address: Option<String>,
    /// Most writes (create, delete) per second to the API server.
    pub api_writes_per_second: u32,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            kubeconfig: None,
            context: None,
            worker_image: DEFAULT_WORKER_IMAGE.to_owned(),
            default_cpu_request: Cpu::from_millicores(500),
            default_memory_request: Memory::from_bytes(1 << 30),
            default_cpu_limit: Cpu::from_millicores(2000),
            default_memory_limit: Memory::from_bytes(4 << 30),
            service_account: DEFAULT_SERVICE_ACCOUNT.to_owned(),
            ttl_after_finished: None,
            image_pull_secrets: Vec::new(),
            image_pull_policy: hodei_k8s::DEFAULT_IMAGE_PULL_POLICY.to_owned(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            max_pods: None,
            image_pull_grace: Duration::from_secs(30),
            scheduling_timeout: Duration::from_secs(120),
            registration_timeout: Duration::from_secs(300),
            advertise_address: None,
            api_writes_per_second: 20,
        }
    }
}

impl KubernetesSettings {
    /// Reads the documented variables through `lookup` (e.g. `|k| std::env::var(k).ok()`).
    /// Unset or empty variables keep their defaults; an invalid value is an error that
    /// names the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ValidationError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut s = Self::default();
        if let Some(v) = get("HODEI_K8S_NAMESPACE") {
            s.namespace = dns_label("HODEI_K8S_NAMESPACE", v)?;
        }
        s.kubeconfig = get("HODEI_K8S_KUBECONFIG").map(PathBuf::from);
        s.context = get("HODEI_K8S_CONTEXT");
        if let Some(v) = get("HODEI_WORKER_IMAGE") {
            s.worker_image = v;
        }
        let cpu = |name: &'static str, default: Cpu| {
            get(name).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|e| ValidationError::new(name, format!("{e}")))
            })
        };
        let memory = |name: &'static str, default: Memory| {
            get(name).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|e| ValidationError::new(name, format!("{e}")))
            })
        };
        s.default_cpu_request = cpu("HODEI_K8S_DEFAULT_CPU_REQUEST", s.default_cpu_request)?;
        s.default_memory_request =
            memory("HODEI_K8S_DEFAULT_MEMORY_REQUEST", s.default_memory_request)?;
        s.default_cpu_limit = cpu("HODEI_K8S_DEFAULT_CPU_LIMIT", s.default_cpu_limit)?;
        s.default_memory_limit = memory("HODEI_K8S_DEFAULT_MEMORY_LIMIT", s.default_memory_limit)?;
        if let Some(v) = get("HODEI_K8S_SERVICE_ACCOUNT") {
            s.service_account = dns_label("HODEI_K8S_SERVICE_ACCOUNT", v)?;
        }
        if let Some(v) = get("HODEI_K8S_TTL_SECONDS_AFTER_FINISHED") {
            let secs: u64 = v.trim().parse().map_err(|_| {
                ValidationError::new(
                    "HODEI_K8S_TTL_SECONDS_AFTER_FINISHED",
                    format!("{v:?} is not a whole number of seconds"),
                )
            })?;
            s.ttl_after_finished = Some(Duration::from_secs(secs));
        }
        if let Some(v) = get("HODEI_K8S_IMAGE_PULL_SECRET") {
            s.image_pull_secrets = v
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(|n| dns_label("HODEI_K8S_IMAGE_PULL_SECRET", n.to_owned()))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("HODEI_K8S_IMAGE_PULL_POLICY") {
            if !["Always", "IfNotPresent", "Never"].contains(&v.as_str()) {
                return Err(ValidationError::new(
                    "HODEI_K8S_IMAGE_PULL_POLICY",
                    format!("{v:?} must be Always, IfNotPresent or Never"),
                ));
            }
            s.image_pull_policy = v;
        }
        if let Some(v) = get("HODEI_K8S_MAX_PODS") {
            let max: usize = v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                ValidationError::new(
                    "HODEI_K8S_MAX_PODS",
                    format!("{v:?} is not a positive number"),
                )
            })?;
            s.max_pods = Some(max);
        }
        if let Some(v) = get("HODEI_K8S_IMAGE_PULL_GRACE") {
            s.image_pull_grace = duration("HODEI_K8S_IMAGE_PULL_GRACE", &v)?;
        }
        if let Some(v) = get("HODEI_K8S_SCHEDULING_TIMEOUT") {
            s.scheduling_timeout = duration("HODEI_K8S_SCHEDULING_TIMEOUT", &v)?;
        }
        if let Some(v) = get("HODEI_K8S_REGISTRATION_TIMEOUT") {
            s.registration_timeout = duration("HODEI_K8S_REGISTRATION_TIMEOUT", &v)?;
        }
        if let Some(v) = get("HODEI_ADVERTISE_ADDRESS") {
            if !(v.starts_with("http://") || v.starts_with("https://")) {
                return Err(ValidationError::new(
                    "HODEI_ADVERTISE_ADDRESS",
                    format!("{v:?} must be a URL such as http://hodei-server:50051"),
                ));
            }
            s.advertise_address = Some(v);
        }
        if let Some(v) = get("HODEI_K8S_API_WRITES_PER_SECOND") {
            s.api_writes_per_second =
                v.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ValidationError::new(
                        "HODEI_K8S_API_WRITES_PER_SECOND",
                        format!("{v:?} is not a positive number"),
                    )
                })?;
        }
        if s.default_cpu_request > s.default_cpu_limit {
            return Err(ValidationError::new(
                "HODEI_K8S_DEFAULT_CPU_REQUEST",
                format!(
                    "{} exceeds the limit {}",
                    s.default_cpu_request, s.default_cpu_limit
                ),
            ));
        }
        if s.default_memory_request > s.default_memory_limit {
            return Err(ValidationError::new(
                "HODEI_K8S_DEFAULT_MEMORY_REQUEST",
                format!(
                    "{} exceeds the limit {}",
                    s.default_memory_request, s.default_memory_limit
                ),
            ));
        }
        Ok(s)
    }

    /// Reads the documented variables from the process environment.
    pub fn from_env() -> Result<Self, ValidationError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

fn duration(name: &'static str, value: &str) -> Result<Duration, ValidationError> {
    humantime::parse_duration(value.trim())
        .map_err(|e| ValidationError::new(name, format!("{value:?}: {e} (expected e.g. 30s, 2m)")))
}

fn dns_label(name: &'static str, value: String) -> Result<String, ValidationError> {
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
        Ok(value)
    } else {
        Err(ValidationError::new(
            name,
            format!(
                "{value:?} is not a valid Kubernetes name (lowercase letters, digits and '-', at most 63)"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<KubernetesSettings, ValidationError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        KubernetesSettings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_documentation() {
        let s = from(&[]).unwrap();
        assert_eq!(s.namespace, "hodei-jobs-workers");
        assert_eq!(s.default_cpu_request.to_string(), "500m");
        assert_eq!(s.default_memory_request.to_string(), "1Gi");
        assert_eq!(s.default_cpu_limit.to_string(), "2");
        assert_eq!(s.default_memory_limit.to_string(), "4Gi");
        assert_eq!(s.service_account, "hodei-jobs-worker");
        assert_eq!(s.image_pull_grace, Duration::from_secs(30));
    }

    #[test]
    fn variables_are_read() {
        let s = from(&[
            ("HODEI_K8S_NAMESPACE", "jobs"),
            ("HODEI_K8S_MAX_PODS", "50"),
            ("HODEI_K8S_IMAGE_PULL_GRACE", "5s"),
            ("HODEI_K8S_TTL_SECONDS_AFTER_FINISHED", "120"),
            ("HODEI_K8S_IMAGE_PULL_SECRET", "regcred"),
            ("HODEI_ADVERTISE_ADDRESS", "http://hodei-server:50051"),
            ("HODEI_K8S_DEFAULT_MEMORY_LIMIT", "8Gi"),
        ])
        .unwrap();
        assert_eq!(s.namespace, "jobs");
        assert_eq!(s.max_pods, Some(50));
        assert_eq!(s.image_pull_grace, Duration::from_secs(5));
        assert_eq!(s.ttl_after_finished, Some(Duration::from_secs(120)));
        assert_eq!(s.image_pull_secrets, vec!["regcred".to_owned()]);
        assert_eq!(
            s.advertise_address.as_deref(),
            Some("http://hodei-server:50051")
        );
        assert_eq!(s.default_memory_limit.to_string(), "8Gi");
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (name, value) in [
            ("HODEI_K8S_NAMESPACE", "Bad_NS"),
            ("HODEI_K8S_MAX_PODS", "0"),
            ("HODEI_K8S_MAX_PODS", "many"),
            ("HODEI_K8S_IMAGE_PULL_GRACE", "soon"),
            ("HODEI_K8S_DEFAULT_CPU_REQUEST", "abc"),
            ("HODEI_K8S_DEFAULT_MEMORY_LIMIT", "4Qi"),
            ("HODEI_K8S_TTL_SECONDS_AFTER_FINISHED", "-1"),
            ("HODEI_ADVERTISE_ADDRESS", "hodei-server:50051"),
            ("HODEI_K8S_IMAGE_PULL_POLICY", "Sometimes"),
        ] {
            let err = from(&[(name, value)]).unwrap_err();
            assert_eq!(err.field(), name, "{err}");
        }
        let err = from(&[("HODEI_K8S_DEFAULT_CPU_REQUEST", "4")]).unwrap_err();
        assert_eq!(err.field(), "HODEI_K8S_DEFAULT_CPU_REQUEST");
    }
}
