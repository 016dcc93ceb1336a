//! What a job adds to its worker pod beyond the template: required node affinity, env vars
//! from secret keys, and secret keys mounted as single read-only files.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, EnvVarSource, KeyToPath, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};

use super::{IDENTITY_TOKEN_DIR, SERVER_CA_DIR, TMP_DIR};

/// Prefix of the volume names of secret files, followed by their index.
const SECRET_FILE_VOLUME_PREFIX: &str = "hodei-secret-file-";
/// Mode of a mounted secret file: readable by its owner and the pod's `fsGroup`, which the
/// worker runs as.
const SECRET_FILE_MODE: i32 = 0o440;

/// One key of one secret in the pod's namespace; the kubelet reads it, never the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKey {
    /// Name of the secret.
    pub secret: String,
    /// Key within the secret.
    pub key: String,
}

/// The pod's affinity: one required node selector term holding every requirement, so all
/// must hold. None without requirements.
pub(super) fn affinity(requirements: &[NodeSelectorRequirement]) -> Option<Affinity> {
    (!requirements.is_empty()).then(|| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(requirements.to_vec()),
                    match_fields: None,
                }],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    })
}

/// An env var whose value the kubelet takes from a secret key; a missing secret or key
/// keeps the container from starting (`CreateContainerConfigError`), never an empty value.
pub(super) fn secret_env_var(name: &str, source: &SecretKey) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: source.secret.clone(),
                key: source.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The file name a path ends in.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// One volume per secret file, holding only that key under the file's name.
pub(super) fn secret_file_volumes(files: &BTreeMap<String, SecretKey>) -> Vec<Volume> {
    files
        .iter()
        .enumerate()
        .map(|(i, (path, source))| Volume {
            name: format!("{SECRET_FILE_VOLUME_PREFIX}{i}"),
            secret: Some(SecretVolumeSource {
                secret_name: Some(source.secret.clone()),
                items: Some(vec![KeyToPath {
                    key: source.key.clone(),
                    path: file_name(path).to_owned(),
                    mode: None,
                }]),
                default_mode: Some(SECRET_FILE_MODE),
                optional: Some(false),
            }),
            ..Volume::default()
        })
        .collect()
}

/// The read-only mount of each secret file at its path: the one item of its volume,
/// mounted alone (`subPath`) so the directory around it stays as the image made it.
pub(super) fn secret_file_mounts(files: &BTreeMap<String, SecretKey>) -> Vec<VolumeMount> {
    files
        .keys()
        .enumerate()
        .map(|(i, path)| VolumeMount {
            name: format!("{SECRET_FILE_VOLUME_PREFIX}{i}"),
            mount_path: path.clone(),
            sub_path: Some(file_name(path).to_owned()),
            read_only: Some(true),
            ..VolumeMount::default()
        })
        .collect()
}

/// Whether `path` is `dir` or inside it.
fn is_within(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Refuses a secret file path that would hide or sit inside one of the worker's own
/// mounts: inside the identity token or server CA directories, or at or above one of
/// them, `/tmp` or the working directory. A file inside `/tmp` or the working directory
/// is fine.
///
/// # Errors
/// Why the path cannot be used, naming the mount it clashes with.
pub fn check_secret_file_path(path: &str, working_dir: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.ends_with('/') {
        return Err(format!(
            "secret file path {path:?} is not an absolute file path"
        ));
    }
    for dir in [IDENTITY_TOKEN_DIR, SERVER_CA_DIR] {
        if is_within(path, dir) {
            return Err(format!(
                "secret file path {path:?} is inside {dir}, which the worker uses"
            ));
        }
    }
    for dir in [IDENTITY_TOKEN_DIR, SERVER_CA_DIR, TMP_DIR, working_dir] {
        if is_within(dir, path) {
            return Err(format!(
                "secret file path {path:?} would hide {dir}, which the worker uses"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{WorkerPodSpec, tests::spec};
    use super::*;

    fn render_json(spec: &WorkerPodSpec) -> serde_json::Value {
        serde_json::to_value(spec.render()).expect("pod serializes")
    }

    fn with_extras() -> WorkerPodSpec {
        let mut s = spec();
        s.node_selector = BTreeMap::from([("pool".to_owned(), "batch".to_owned())]);
        s.node_affinity = vec![
            NodeSelectorRequirement {
                key: "zone".into(),
                operator: "In".into(),
                values: Some(vec!["a".into(), "b".into()]),
            },
            NodeSelectorRequirement {
                key: "spot".into(),
                operator: "DoesNotExist".into(),
                values: None,
            },
        ];
        s.secret_env = BTreeMap::from([(
            "DB_PASSWORD".to_owned(),
            SecretKey {
                secret: "db".into(),
                key: "password".into(),
            },
        )]);
        s.secret_files = BTreeMap::from([(
            "/etc/app/token".to_owned(),
            SecretKey {
                secret: "app".into(),
                key: "api-token".into(),
            },
        )]);
        s
    }

    #[test]
    fn required_node_affinity_is_one_term_with_every_requirement() {
        let pod = render_json(&with_extras());
        assert_eq!(
            pod["spec"]["affinity"],
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a", "b"]},
                    {"key": "spot", "operator": "DoesNotExist"},
                ]}]
            }}})
        );
        assert_eq!(pod["spec"]["nodeSelector"], json!({"pool": "batch"}));
        assert!(render_json(&spec())["spec"].get("affinity").is_none());
    }

    #[test]
    fn a_secret_env_var_is_a_secret_key_ref_and_worker_vars_still_win() {
        let mut s = with_extras();
        s.secret_env.insert(
            super::super::ENV_WORKER_ID.to_owned(),
            SecretKey {
                secret: "x".into(),
                key: "y".into(),
            },
        );
        let pod = render_json(&s);
        let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
        assert!(
            env.contains(&json!({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef":
            {"name": "db", "key": "password", "optional": false}}}))
        );
        assert!(env.contains(&json!({"name": super::super::ENV_WORKER_ID, "value": "w-1"})));
        assert_eq!(
            env.iter()
                .filter(|e| e["name"] == super::super::ENV_WORKER_ID)
                .count(),
            1
        );
    }

    #[test]
    fn a_secret_file_is_one_item_mounted_read_only_at_its_path() {
        let pod = render_json(&with_extras());
        let volume = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "hodei-secret-file-0")
            .unwrap()
            .clone();
        assert_eq!(
            volume,
            json!({"name": "hodei-secret-file-0", "secret": {
                "secretName": "app",
                "items": [{"key": "api-token", "path": "token"}],
                "defaultMode": 0o440,
                "optional": false,
            }})
        );
        let container = &pod["spec"]["containers"][0];
        assert!(
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .contains(&json!({
                    "name": "hodei-secret-file-0",
                    "mountPath": "/etc/app/token",
                    "subPath": "token",
                    "readOnly": true,
                }))
        );
        // The root filesystem stays read-only; the file is a mount of its own.
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    }

    #[test]
    fn secret_file_paths_that_clash_with_worker_mounts_are_refused() {
        check_secret_file_path("/etc/app/token", "/workspace").unwrap();
        check_secret_file_path("/workspace/config", "/workspace").unwrap();
        for (path, clash) in [
            (
                "/var/run/secrets/hodei/token",
                "inside /var/run/secrets/hodei",
            ),
            ("/var/run/secrets", "hide /var/run/secrets/hodei"),
            ("/etc/hodei", "hide /etc/hodei/ca"),
            ("/tmp", "hide /tmp"),
            ("/data", "hide /data/run"),
        ] {
            let err = check_secret_file_path(path, "/data/run").unwrap_err();
            assert!(err.contains(clash), "{path}: {err}");
        }
        let mut s = with_extras();
        s.secret_files.insert(
            "/var/run/secrets/hodei/token".into(),
            SecretKey {
                secret: "a".into(),
                key: "b".into(),
            },
        );
        assert!(matches!(s.validate(), Err(crate::Error::InvalidSpec(_))));
    }
}
