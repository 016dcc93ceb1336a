//! The worker pod template: what to run and where, rendered as a Pod Security "restricted" pod.

use std::collections::BTreeMap;
use std::fmt;

mod extras;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath,
    LocalObjectReference, NodeSelectorRequirement, Pod, PodSecurityContext, PodSpec,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccountTokenProjection, Toleration, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::{Error, Result};
use crate::labels;

pub use extras::{SecretKey, check_secret_file_path};

/// Service account worker pods run as unless told otherwise.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "hodei-jobs-worker";
/// Working directory (an `emptyDir`) used when the spec names none.
pub const DEFAULT_WORKING_DIR: &str = "/workspace";
/// Image pull policy of the worker container by default.
pub const DEFAULT_IMAGE_PULL_POLICY: &str = "IfNotPresent";
/// Name of the single container in every worker pod.
pub const CONTAINER_NAME: &str = "worker";
/// Env var carrying the worker id into the pod.
pub const ENV_WORKER_ID: &str = "HODEI_WORKER_ID";
/// Env var carrying the server's gRPC address into the pod.
pub const ENV_SERVER_ADDRESS: &str = "HODEI_SERVER_ADDRESS";
/// Env var naming the file the worker reads its credential from: the projected token.
pub const ENV_WORKER_TOKEN_FILE: &str = "HODEI_WORKER_TOKEN_FILE";
/// Env var naming the directory under which the worker makes the job's scratch home
/// and working directory: the pod's working-dir volume.
pub const ENV_WORK_DIR: &str = "HODEI_WORK_DIR";
/// Env var with how long the worker tries to re-attach after its stream to the server
/// broke (e.g. `10m`).
pub const ENV_RECONNECT_WINDOW: &str = "HODEI_RECONNECT_WINDOW";
/// Audience of the projected identity token unless told otherwise.
pub const DEFAULT_IDENTITY_TOKEN_AUDIENCE: &str = "hodei";

/// Directory of the projected identity token in the worker container.
pub const IDENTITY_TOKEN_DIR: &str = "/var/run/secrets/hodei";
/// File name of the projected identity token in [`IDENTITY_TOKEN_DIR`].
pub const IDENTITY_TOKEN_FILE: &str = "token";
/// Lifetime the kubelet gives the projected identity token (Kubernetes' minimum); the
/// kubelet renews it before it expires. The server accepts it once.
pub const IDENTITY_TOKEN_SECONDS: i64 = 600;
const IDENTITY_TOKEN_VOLUME: &str = "hodei-identity";

/// Env var with the path of the CA bundle the worker verifies the server with.
pub const ENV_SERVER_CA: &str = "HODEI_SERVER_CA";
/// Directory the server CA ConfigMap is mounted at in the worker container.
pub const SERVER_CA_DIR: &str = "/etc/hodei/ca";
/// Key of the CA bundle in the server CA ConfigMap, and its file name in [`SERVER_CA_DIR`].
pub const SERVER_CA_KEY: &str = "ca.crt";
const SERVER_CA_VOLUME: &str = "hodei-server-ca";

/// UID and GID the worker runs as; the image must not need root.
const RUN_AS: i64 = 1000;
const TMP_DIR: &str = "/tmp";
const TMP_VOLUME: &str = "tmp";
const WORKDIR_VOLUME: &str = "workspace";

/// CPU, memory and local disk for the worker pod, as Kubernetes quantities (`"500m"`,
/// `"256Mi"`, `"10Gi"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerResources {
    /// CPU the scheduler reserves.
    pub cpu_request: String,
    /// CPU the container is throttled to.
    pub cpu_limit: String,
    /// Memory the scheduler reserves.
    pub memory_request: String,
    /// Memory above which the container is OOM-killed.
    pub memory_limit: String,
    /// Local disk (`ephemeral-storage`: logs, the emptyDirs) the scheduler reserves.
    pub ephemeral_storage_request: String,
    /// Local disk above which the kubelet evicts the pod.
    pub ephemeral_storage_limit: String,
    /// `sizeLimit` of the `/tmp` emptyDir; the kubelet evicts the pod beyond it.
    pub tmp_size_limit: String,
    /// `sizeLimit` of the working-dir emptyDir (of the one volume when the working dir is
    /// `/tmp`); the kubelet evicts the pod beyond it.
    pub working_dir_size_limit: String,
}

/// Everything needed to start one worker pod. The job's command is not here: the worker
/// image's default entrypoint (`hodei-worker-bin`) registers and receives it over gRPC.
#[derive(Clone, bon::Builder)]
#[builder(on(String, into))]
pub struct WorkerPodSpec {
    /// Worker id; the pod is named `hodei-worker-{worker_id}`, so it must keep that name a
    /// valid DNS subdomain (lowercase alphanumerics, `-`, `.`).
    pub worker_id: String,
    /// Job the worker will run; recorded as a label (sanitized) and an annotation (exact).
    pub job_id: String,
    /// Namespace the pod lives in.
    pub namespace: String,
    /// Worker image whose entrypoint is `hodei-worker-bin`.
    pub image: String,
    /// gRPC address the worker dials back to (`HODEI_SERVER_ADDRESS`).
    pub server_address: String,
    /// CPU and memory requests and limits.
    pub resources: WorkerResources,
    /// Seconds after which the kubelet kills the pod (`activeDeadlineSeconds`).
    pub active_deadline_seconds: i64,
    /// The job's environment; the `HODEI_*` worker variables win on a name clash.
    #[builder(default)]
    pub env: BTreeMap<String, String>,
    /// Service account the pod runs as; its token is not mounted.
    #[builder(default = DEFAULT_SERVICE_ACCOUNT.to_owned())]
    pub service_account: String,
    /// Names of secrets used to pull the image.
    #[builder(default)]
    pub image_pull_secrets: Vec<String>,
    /// `Always`, `IfNotPresent` or `Never`; `IfNotPresent` by default, so images loaded
    /// into a node (kind, k3d) work even with a `:latest` tag.
    #[builder(default = DEFAULT_IMAGE_PULL_POLICY.to_owned())]
    pub image_pull_policy: String,
    /// Node labels the pod must be scheduled onto.
    #[builder(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pod tolerates.
    #[builder(default)]
    pub tolerations: Vec<Toleration>,
    /// Requirements on node labels that the pod's node must all meet (required node
    /// affinity, one term).
    #[builder(default)]
    pub node_affinity: Vec<NodeSelectorRequirement>,
    /// Env vars of the worker container taken from secret keys by the kubelet
    /// (`secretKeyRef`); the pod spec holds only the reference. The `HODEI_*` worker
    /// variables win on a name clash.
    #[builder(default)]
    pub secret_env: BTreeMap<String, SecretKey>,
    /// Secret keys mounted read-only as single files, by absolute path; see
    /// [`check_secret_file_path`] for the paths refused.
    #[builder(default)]
    pub secret_files: BTreeMap<String, SecretKey>,
    /// Absolute working directory, backed by an `emptyDir`; defaults to `/workspace`.
    pub working_dir: Option<String>,
    /// Labels added to the managed ones; they cannot override `app` or `hodei.io/*` labels.
    #[builder(default)]
    pub extra_labels: BTreeMap<String, String>,
    /// Audience of the ServiceAccount token the kubelet projects into the pod at
    /// `/var/run/secrets/hodei/token` (named by `HODEI_WORKER_TOKEN_FILE`): a short-lived
    /// token bound to this pod, with which the worker proves it runs in the pod the server
    /// created. The pod spec itself holds no secret.
    #[builder(default = DEFAULT_IDENTITY_TOKEN_AUDIENCE.to_owned())]
    pub identity_token_audience: String,
    /// ConfigMap (in the pod's namespace) whose key [`SERVER_CA_KEY`] holds the CA bundle
    /// the worker verifies the server with; mounted read-only at [`SERVER_CA_DIR`] and
    /// named by `HODEI_SERVER_CA`. Not mounted when absent.
    pub server_ca_config_map: Option<String>,
    /// How long the worker tries to re-attach after its stream broke, as a duration
    /// (`10m`), given as `HODEI_RECONNECT_WINDOW`; the worker's default when absent.
    pub reconnect_window: Option<String>,
}

impl fmt::Debug for WorkerPodSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPodSpec")
            .field("worker_id", &self.worker_id)
            .field("job_id", &self.job_id)
            .field("namespace", &self.namespace)
            .field("image", &self.image)
            .field("server_address", &self.server_address)
            .field("identity_token_audience", &self.identity_token_audience)
            .field("resources", &self.resources)
            .field("active_deadline_seconds", &self.active_deadline_seconds)
            .field("env_keys", &self.env.keys().collect::<Vec<_>>())
            .field("secret_env", &self.secret_env)
            .field("secret_files", &self.secret_files)
            .field("service_account", &self.service_account)
            .field("working_dir", &self.working_dir)
            .field("server_ca_config_map", &self.server_ca_config_map)
            .finish_non_exhaustive()
    }
}

impl WorkerPodSpec {
    /// The pod's name: `hodei-worker-{worker_id}`.
    #[must_use]
    pub fn pod_name(&self) -> String {
        pod_name(&self.worker_id)
    }

    /// The working directory the container starts in.
    #[must_use]
    pub fn effective_working_dir(&self) -> &str {
        self.working_dir.as_deref().unwrap_or(DEFAULT_WORKING_DIR)
    }

    /// Checks what [`render`](Self::render) cannot repair: the pod name, the image, the
    /// working dir, the deadline and the extra label keys. Label values are sanitized instead.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the first problem found.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidSpec(reason));
        if self.worker_id.is_empty() || !labels::is_dns_subdomain(&self.pod_name()) {
            return invalid(format!(
                "worker id {:?} does not make a valid pod name (lowercase alphanumerics, '-', '.')",
                self.worker_id
            ));
        }
        if self.image.trim().is_empty() {
            return invalid("image is empty".to_owned());
        }
        if !self.effective_working_dir().starts_with('/') {
            return invalid(format!(
                "working dir {:?} is not absolute",
                self.effective_working_dir()
            ));
        }
        if self.active_deadline_seconds <= 0 {
            return invalid(format!(
                "active deadline must be positive, got {}",
                self.active_deadline_seconds
            ));
        }
        if let Some(key) = self
            .extra_labels
            .keys()
            .find(|k| !labels::is_valid_label_key(k))
        {
            return invalid(format!("label key {key:?} is not valid"));
        }
        for path in self.secret_files.keys() {
            check_secret_file_path(path, self.effective_working_dir())
                .map_err(Error::InvalidSpec)?;
        }
        Ok(())
    }

    /// Renders the pod. Label values are sanitized; call [`validate`](Self::validate) first
    /// to catch what sanitizing cannot fix ([`WorkerPods::create`](crate::WorkerPods::create)
    /// does).
    #[must_use]
    pub fn render(&self) -> Pod {
        Pod {
            metadata: self.metadata(),
            spec: Some(PodSpec {
                containers: vec![self.container()],
                restart_policy: Some("Never".to_owned()),
                active_deadline_seconds: Some(self.active_deadline_seconds),
                service_account_name: Some(self.service_account.clone()),
                automount_service_account_token: Some(false),
                // Service env vars would leak cluster topology into the job's environment.
                enable_service_links: Some(false),
                image_pull_secrets: (!self.image_pull_secrets.is_empty()).then(|| {
                    self.image_pull_secrets
                        .iter()
                        .map(|name| LocalObjectReference { name: name.clone() })
                        .collect()
                }),
                node_selector: (!self.node_selector.is_empty()).then(|| self.node_selector.clone()),
                tolerations: (!self.tolerations.is_empty()).then(|| self.tolerations.clone()),
                affinity: extras::affinity(&self.node_affinity),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(RUN_AS),
                    run_as_group: Some(RUN_AS),
                    fs_group: Some(RUN_AS),
                    seccomp_profile: Some(runtime_default_seccomp()),
                    ..PodSecurityContext::default()
                }),
                volumes: Some(self.volumes()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn metadata(&self) -> ObjectMeta {
        let mut pod_labels: BTreeMap<String, String> = self
            .extra_labels
            .iter()
            .map(|(k, v)| (k.clone(), labels::sanitize_label_value(v)))
            .collect();
        // Managed labels go last so extra labels cannot break the watcher's selector.
        pod_labels.extend(labels::managed_labels(&self.worker_id, &self.job_id));
        ObjectMeta {
            name: Some(self.pod_name()),
            namespace: Some(self.namespace.clone()),
            labels: Some(pod_labels),
            annotations: Some(BTreeMap::from([
                (labels::WORKER_ID.to_owned(), self.worker_id.clone()),
                (labels::JOB_ID.to_owned(), self.job_id.clone()),
            ])),
            ..ObjectMeta::default()
        }
    }

    fn container(&self) -> Container {
        let working_dir = self.effective_working_dir().to_owned();
        let mut mounts = vec![VolumeMount {
            name: TMP_VOLUME.to_owned(),
            mount_path: TMP_DIR.to_owned(),
            ..VolumeMount::default()
        }];
        if working_dir != TMP_DIR {
            mounts.push(VolumeMount {
                name: WORKDIR_VOLUME.to_owned(),
                mount_path: working_dir.clone(),
                ..VolumeMount::default()
            });
        }
        mounts.push(VolumeMount {
            name: IDENTITY_TOKEN_VOLUME.to_owned(),
            mount_path: IDENTITY_TOKEN_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        if self.server_ca_config_map.is_some() {
            mounts.push(VolumeMount {
                name: SERVER_CA_VOLUME.to_owned(),
                mount_path: SERVER_CA_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
        mounts.extend(extras::secret_file_mounts(&self.secret_files));
        Container {
            name: CONTAINER_NAME.to_owned(),
            image: Some(self.image.clone()),
            image_pull_policy: Some(self.image_pull_policy.clone()),
            env: Some(self.env_vars()),
            resources: Some(self.resource_requirements()),
            working_dir: Some(working_dir),
            volume_mounts: Some(mounts),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_owned()]),
                    add: None,
                }),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }
    }

    fn env_vars(&self) -> Vec<EnvVar> {
        let mut vars: BTreeMap<String, EnvVar> = self
            .secret_env
            .iter()
            .map(|(name, source)| (name.clone(), extras::secret_env_var(name, source)))
            .collect();
        for (name, value) in self.plain_env() {
            vars.insert(
                name.clone(),
                EnvVar {
                    name,
                    value: Some(value),
                    value_from: None,
                },
            );
        }
        vars.into_values().collect()
    }

    /// The job's plain env vars with the worker's own on top.
    fn plain_env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self
            .env
            .iter()
            .filter(|(name, _)| !self.secret_env.contains_key(*name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.insert(ENV_WORKER_ID.to_owned(), self.worker_id.clone());
        env.insert(ENV_SERVER_ADDRESS.to_owned(), self.server_address.clone());
        env.insert(
            ENV_WORK_DIR.to_owned(),
            self.effective_working_dir().to_owned(),
        );
        env.insert(
            ENV_WORKER_TOKEN_FILE.to_owned(),
            format!("{IDENTITY_TOKEN_DIR}/{IDENTITY_TOKEN_FILE}"),
        );
        if self.server_ca_config_map.is_some() {
            env.insert(
                ENV_SERVER_CA.to_owned(),
                format!("{SERVER_CA_DIR}/{SERVER_CA_KEY}"),
            );
        }
        if let Some(window) = &self.reconnect_window {
            env.insert(ENV_RECONNECT_WINDOW.to_owned(), window.clone());
        }
        env
    }

    fn resource_requirements(&self) -> ResourceRequirements {
        let r = &self.resources;
        let amounts = |cpu: &str, memory: &str, storage: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.to_owned())),
                ("memory".to_owned(), Quantity(memory.to_owned())),
                ("ephemeral-storage".to_owned(), Quantity(storage.to_owned())),
            ])
        };
        ResourceRequirements {
            requests: Some(amounts(
                &r.cpu_request,
                &r.memory_request,
                &r.ephemeral_storage_request,
            )),
            limits: Some(amounts(
                &r.cpu_limit,
                &r.memory_limit,
                &r.ephemeral_storage_limit,
            )),
            claims: None,
        }
    }

    fn volumes(&self) -> Vec<Volume> {
        let empty_dir = |name: &str, size_limit: &str| Volume {
            name: name.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: None,
                size_limit: Some(Quantity(size_limit.to_owned())),
            }),
            ..Volume::default()
        };
        let r = &self.resources;
        let mut volumes = if self.effective_working_dir() == TMP_DIR {
            // One volume holds the job's working directory: it gets that limit.
            vec![empty_dir(TMP_VOLUME, &r.working_dir_size_limit)]
        } else {
            vec![
                empty_dir(TMP_VOLUME, &r.tmp_size_limit),
                empty_dir(WORKDIR_VOLUME, &r.working_dir_size_limit),
            ]
        };
        volumes.push(Volume {
            name: IDENTITY_TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(self.identity_token_audience.clone()),
                        expiration_seconds: Some(IDENTITY_TOKEN_SECONDS),
                        path: IDENTITY_TOKEN_FILE.to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                default_mode: Some(0o400),
            }),
            ..Volume::default()
        });
        if let Some(config_map) = &self.server_ca_config_map {
            volumes.push(Volume {
                name: SERVER_CA_VOLUME.to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: config_map.clone(),
                    items: Some(vec![KeyToPath {
                        key: SERVER_CA_KEY.to_owned(),
                        path: SERVER_CA_KEY.to_owned(),
                        mode: None,
                    }]),
                    default_mode: Some(0o444),
                    optional: Some(false),
                }),
                ..Volume::default()
            });
        }
        volumes.extend(extras::secret_file_volumes(&self.secret_files));
        volumes
    }
}

/// The pod name for a worker id.
#[must_use]
pub fn pod_name(worker_id: &str) -> String {
    format!("{}{worker_id}", labels::POD_NAME_PREFIX)
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn spec() -> WorkerPodSpec {
        WorkerPodSpec::builder()
            .worker_id("w-1")
            .job_id("job 42/x")
            .namespace("jobs")
            .image("ghcr.io/hodei/worker:1.0")
            .server_address("http://hodei:50051")
            .resources(WorkerResources {
                cpu_request: "250m".into(),
                cpu_limit: "1".into(),
                memory_request: "128Mi".into(),
                memory_limit: "512Mi".into(),
                ephemeral_storage_request: "256Mi".into(),
                ephemeral_storage_limit: "2Gi".into(),
                tmp_size_limit: "128Mi".into(),
                working_dir_size_limit: "1Gi".into(),
            })
            .active_deadline_seconds(600)
            .env(BTreeMap::from([
                ("FOO".to_owned(), "bar".to_owned()),
                (ENV_WORKER_TOKEN_FILE.to_owned(), "/spoofed".to_owned()),
            ]))
            .extra_labels(BTreeMap::from([
                ("team".to_owned(), "data eng".to_owned()),
                (labels::MANAGED.to_owned(), "false".to_owned()),
            ]))
            .build()
    }

    fn render_json(spec: &WorkerPodSpec) -> serde_json::Value {
        serde_json::to_value(spec.render()).expect("pod serializes")
    }

    #[test]
    fn worker_env_overrides_job_env() {
        let pod = render_json(&spec());
        let env = &pod["spec"]["containers"][0]["env"];
        assert_eq!(
            env,
            &json!([
                {"name": "FOO", "value": "bar"},
                {"name": ENV_SERVER_ADDRESS, "value": "http://hodei:50051"},
                {"name": ENV_WORKER_ID, "value": "w-1"},
                {"name": ENV_WORKER_TOKEN_FILE, "value": "/var/run/secrets/hodei/token"},
                {"name": ENV_WORK_DIR, "value": "/workspace"},
            ])
        );
    }

    #[test]
    fn the_reconnect_window_reaches_the_worker_when_set() {
        let mut spec = spec();
        spec.reconnect_window = Some("15m".into());
        let pod = render_json(&spec);
        let env = pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .clone();
        assert!(
            env.contains(&json!({"name": ENV_RECONNECT_WINDOW, "value": "15m"})),
            "{env:?}"
        );
    }

    #[test]
    fn extra_labels_are_sanitized_and_cannot_override_managed_ones() {
        let pod = render_json(&spec());
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["team"], "data-eng");
        assert_eq!(labels[labels::MANAGED], "true");
        assert_eq!(labels[labels::JOB_ID], "job-42-x");
        assert_eq!(pod["metadata"]["annotations"][labels::JOB_ID], "job 42/x");
    }

    #[test]
    fn no_command_so_the_image_entrypoint_runs() {
        let pod = render_json(&spec());
        let container = &pod["spec"]["containers"][0];
        assert!(container.get("command").is_none());
        assert!(container.get("args").is_none());
    }

    #[test]
    fn local_disk_is_requested_limited_and_each_scratch_volume_is_bounded() {
        let pod = render_json(&spec());
        let resources = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(resources["requests"]["ephemeral-storage"], "256Mi");
        assert_eq!(resources["limits"]["ephemeral-storage"], "2Gi");
        let volumes = &pod["spec"]["volumes"];
        assert_eq!(
            volumes[0],
            json!({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "128Mi"}})
        );
        assert_eq!(
            volumes[1],
            json!({"name": WORKDIR_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}})
        );
    }

    #[test]
    fn working_dir_gets_its_own_volume_unless_it_is_tmp() {
        let mut s = spec();
        s.working_dir = Some("/tmp".into());
        let pod = render_json(&s);
        assert_eq!(pod["spec"]["volumes"].as_array().map(Vec::len), Some(2));
        assert_eq!(pod["spec"]["containers"][0]["workingDir"], "/tmp");
        assert_eq!(
            pod["spec"]["volumes"][0],
            json!({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}),
            "/tmp holds the working dir, so it gets the working dir's limit"
        );

        s.working_dir = Some("/data/run".into());
        let pod = render_json(&s);
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"][1],
            json!({"name": WORKDIR_VOLUME, "mountPath": "/data/run"})
        );
    }

    #[test]
    fn an_identity_token_is_always_projected_read_only() {
        let s = spec();
        let pod = render_json(&s);
        let volume = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == IDENTITY_TOKEN_VOLUME)
            .unwrap()
            .clone();
        assert_eq!(
            volume["projected"]["sources"][0]["serviceAccountToken"],
            json!({"audience": "hodei", "expirationSeconds": 600, "path": "token"})
        );
        let mount = pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == IDENTITY_TOKEN_VOLUME)
            .unwrap()
            .clone();
        assert_eq!(
            mount,
            json!({"name": IDENTITY_TOKEN_VOLUME, "mountPath": IDENTITY_TOKEN_DIR, "readOnly": true})
        );
        // The pod still gets no API token of its own.
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);

        let mut other = spec();
        other.identity_token_audience = "other".into();
        let pod = render_json(&other);
        assert_eq!(
            pod["spec"]["volumes"][2]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "other"
        );
    }

    #[test]
    fn the_pod_spec_holds_no_secret() {
        let pod = render_json(&spec());
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        let names: Vec<&str> = env.iter().filter_map(|e| e["name"].as_str()).collect();
        assert!(
            names
                .iter()
                .all(|n| !n.contains("TOKEN") || *n == ENV_WORKER_TOKEN_FILE),
            "{names:?}"
        );
        assert!(env.iter().all(|e| e.get("valueFrom").is_none()), "{env:?}");
    }

    #[test]
    fn a_server_ca_is_mounted_read_only_from_its_config_map_only_when_asked() {
        let mut s = spec();
        let pod = render_json(&s);
        assert!(!pod.to_string().contains(ENV_SERVER_CA));
        assert!(!pod.to_string().contains("configMap"));

        s.server_ca_config_map = Some("hodei-server-ca".into());
        let pod = render_json(&s);
        let volume = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == SERVER_CA_VOLUME)
            .unwrap()
            .clone();
        assert_eq!(
            volume["configMap"],
            json!({
                "name": "hodei-server-ca",
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                "defaultMode": 0o444,
                "optional": false,
            })
        );
        let container = &pod["spec"]["containers"][0];
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == SERVER_CA_VOLUME)
            .unwrap()
            .clone();
        assert_eq!(
            mount,
            json!({"name": SERVER_CA_VOLUME, "mountPath": "/etc/hodei/ca", "readOnly": true})
        );
        assert!(
            container["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": ENV_SERVER_CA, "value": "/etc/hodei/ca/ca.crt"}))
        );
        // Still "restricted": no host paths, the same locked-down container.
        assert!(!pod.to_string().contains("hostPath"));
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    }

    #[test]
    fn validate_rejects_what_render_cannot_fix() {
        assert!(spec().validate().is_ok());
        let cases: [fn(&mut WorkerPodSpec); 5] = [
            |s| s.worker_id = "Upper_Case".into(),
            |s| s.image = " ".into(),
            |s| s.working_dir = Some("relative".into()),
            |s| s.active_deadline_seconds = 0,
            |s| {
                s.extra_labels.insert("bad key!".into(), "v".into());
            },
        ];
        for (i, break_it) in cases.iter().enumerate() {
            let mut s = spec();
            break_it(&mut s);
            assert!(
                matches!(s.validate(), Err(Error::InvalidSpec(_))),
                "case {i} should be rejected"
            );
        }
    }

    #[test]
    fn builder_defaults() {
        let s = spec();
        assert_eq!(s.service_account, DEFAULT_SERVICE_ACCOUNT);
        assert_eq!(s.effective_working_dir(), DEFAULT_WORKING_DIR);
        assert!(s.image_pull_secrets.is_empty());
    }
}
