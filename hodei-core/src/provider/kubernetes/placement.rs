//! What a job may ask of its pod on this cluster (the operator's allow-lists and resource
//! classes), and the placement and resources that result once the server's, the class's
//! and the job's own are merged.

use std::collections::BTreeMap;

use hodei_k8s::{NodeSelectorRequirement, SecretKey};

use super::{KubernetesSettings, ResourceClass};
use crate::{
    job::{Cpu, JobSpec, Memory, SecretRef, TolerationOperator, excerpt},
    provider::SpecRefusal,
};

/// Whether `text` matches `pattern`, where `*` stands for any run of characters
/// (`/` included) and everything else for itself.
pub(super) fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it currently swallows up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// One allow-list with the variable that sets it, for refusals.
struct AllowList<'a> {
    variable: &'static str,
    patterns: &'a [String],
}

impl AllowList<'_> {
    fn check(&self, field: String, what: &str, value: &str) -> Result<(), SpecRefusal> {
        if self.patterns.iter().any(|p| glob_match(p, value)) {
            return Ok(());
        }
        let allowed = if self.patterns.is_empty() {
            format!("{} is empty, so no job may ask for one", self.variable)
        } else {
            format!("{}={}", self.variable, self.patterns.join(","))
        };
        Err(SpecRefusal::new(
            field,
            format!("{what} {} is not allowed ({allowed})", excerpt(value)),
        ))
    }
}

/// The class a spec names, or the refusal naming it and the known ones.
pub(super) fn class_of<'a>(
    settings: &'a KubernetesSettings,
    spec: &JobSpec,
) -> Result<Option<&'a ResourceClass>, SpecRefusal> {
    let Some(name) = &spec.class else {
        return Ok(None);
    };
    settings
        .resource_classes
        .get(name)
        .map(Some)
        .ok_or_else(|| {
            let known = if settings.resource_classes.is_empty() {
                "none are defined: HODEI_K8S_RESOURCE_CLASSES_FILE is unset".to_owned()
            } else {
                let names: Vec<&str> = settings
                    .resource_classes
                    .keys()
                    .map(String::as_str)
                    .collect();
                format!("known: {}", names.join(", "))
            };
            SpecRefusal::new(
                "class",
                format!("resource class {} is not defined ({known})", excerpt(name)),
            )
        })
}

/// Refuses what the operator does not allow: an unknown class, node selector and node
/// affinity keys outside `allowed_node_selectors`, toleration keys outside
/// `allowed_tolerations`, secrets outside `allowed_secrets`, and secret files that would
/// clash with the worker's own mounts. What a class brings is not checked.
pub(super) fn check(settings: &KubernetesSettings, spec: &JobSpec) -> Result<(), SpecRefusal> {
    class_of(settings, spec)?;
    let nodes = AllowList {
        variable: "HODEI_K8S_ALLOWED_NODE_SELECTORS",
        patterns: &settings.allowed_node_selectors,
    };
    for key in spec.node_selector.keys() {
        nodes.check(
            format!("node_selector[{}]", excerpt(key)),
            "node selector key",
            key,
        )?;
    }
    for (i, term) in spec.node_affinity.iter().enumerate() {
        nodes.check(
            format!("node_affinity[{i}]"),
            "node affinity key",
            &term.key,
        )?;
    }
    let taints = AllowList {
        variable: "HODEI_K8S_ALLOWED_TOLERATIONS",
        patterns: &settings.allowed_tolerations,
    };
    for (i, toleration) in spec.tolerations.iter().enumerate() {
        taints.check(
            format!("tolerations[{i}]"),
            "toleration key",
            &toleration.key,
        )?;
    }
    let secrets = AllowList {
        variable: "HODEI_K8S_ALLOWED_SECRETS",
        patterns: &settings.allowed_secrets,
    };
    for (name, reference) in &spec.secret_env {
        secrets.check(
            format!("secret_env[{}]", excerpt(name)),
            "secret",
            &reference.secret,
        )?;
    }
    let working_dir = spec
        .working_dir
        .as_deref()
        .unwrap_or(hodei_k8s::DEFAULT_WORKING_DIR);
    for (path, reference) in &spec.secret_files {
        let field = || format!("secret_files[{}]", excerpt(path));
        secrets.check(field(), "secret", &reference.secret)?;
        hodei_k8s::check_secret_file_path(path, working_dir)
            .map_err(|message| SpecRefusal::new(field(), message))?;
    }
    Ok(())
}

/// Resources and placement of one pod, merged from the server's settings, the job's class
/// and the job itself (in that order, later winning).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PodPlacement {
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    pub ephemeral_storage: Option<Memory>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<hodei_k8s::Toleration>,
    pub node_affinity: Vec<NodeSelectorRequirement>,
    pub secret_env: BTreeMap<String, SecretKey>,
    pub secret_files: BTreeMap<String, SecretKey>,
}

/// Merges the placement of `spec`; `class` is the one it names ([`class_of`]).
pub(super) fn merge(
    settings: &KubernetesSettings,
    class: Option<&ResourceClass>,
    spec: &JobSpec,
) -> PodPlacement {
    let mut node_selector = settings.node_selector.clone();
    let mut tolerations = settings.tolerations.clone();
    if let Some(class) = class {
        node_selector.extend(class.node_selector.clone());
        tolerations.extend(class.tolerations.iter().map(toleration));
    }
    node_selector.extend(spec.node_selector.clone());
    for added in spec.tolerations.iter().map(toleration) {
        if !tolerations.contains(&added) {
            tolerations.push(added);
        }
    }
    PodPlacement {
        cpu: spec.cpu.or(class.and_then(|c| c.cpu)),
        memory: spec.memory.or(class.and_then(|c| c.memory)),
        ephemeral_storage: spec
            .ephemeral_storage
            .or(class.and_then(|c| c.ephemeral_storage)),
        node_selector,
        tolerations,
        node_affinity: spec
            .node_affinity
            .iter()
            .map(|term| NodeSelectorRequirement {
                key: term.key.clone(),
                operator: term.operator.as_str().to_owned(),
                values: (!term.values.is_empty()).then(|| term.values.clone()),
            })
            .collect(),
        secret_env: secret_keys(&spec.secret_env),
        secret_files: secret_keys(&spec.secret_files),
    }
}

fn toleration(t: &crate::job::Toleration) -> hodei_k8s::Toleration {
    hodei_k8s::Toleration {
        key: Some(t.key.clone()),
        operator: Some(
            match t.operator {
                TolerationOperator::Equal => "Equal",
                TolerationOperator::Exists => "Exists",
            }
            .to_owned(),
        ),
        value: (t.operator == TolerationOperator::Equal).then(|| t.value.clone()),
        effect: t.effect.map(|e| e.as_str().to_owned()),
        toleration_seconds: None,
    }
}

fn secret_keys(refs: &BTreeMap<String, SecretRef>) -> BTreeMap<String, SecretKey> {
    refs.iter()
        .map(|(name, r)| {
            (
                name.clone(),
                SecretKey {
                    secret: r.secret.clone(),
                    key: r.key.clone(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_values_with_star_for_any_run() {
        for (pattern, text, matches) in [
            ("pool", "pool", true),
            ("pool", "pools", false),
            ("zone.example.com/*", "zone.example.com/rack", true),
            ("zone.example.com/*", "zone.example.com", false),
            ("*", "anything/at/all", true),
            ("app-*-ro", "app-db-ro", true),
            ("app-*-ro", "app-db-rw", false),
            ("a*b*c", "aXbYbZc", true),
            ("", "", true),
            ("", "x", false),
        ] {
            assert_eq!(glob_match(pattern, text), matches, "{pattern} ~ {text}");
        }
    }

    fn settings() -> KubernetesSettings {
        KubernetesSettings {
            allowed_node_selectors: vec!["pool".into(), "zone/*".into()],
            allowed_tolerations: vec!["dedicated".into()],
            allowed_secrets: vec!["app-*".into()],
            resource_classes: BTreeMap::from([
                ("gpu".to_owned(), ResourceClass::default()),
                ("large".to_owned(), ResourceClass::default()),
            ]),
            ..KubernetesSettings::default()
        }
    }

    fn refusal(settings: &KubernetesSettings, spec: JobSpec) -> SpecRefusal {
        check(settings, &spec).unwrap_err()
    }

    #[test]
    fn what_the_allow_lists_do_not_cover_is_refused_naming_the_setting() {
        let s = settings();
        let ok = JobSpec::builder("true")
            .node_selector(BTreeMap::from([("zone/rack".to_owned(), "r1".to_owned())]))
            .tolerations(vec!["dedicated=ci:NoSchedule".parse().unwrap()])
            .secret_env(BTreeMap::from([(
                "PW".to_owned(),
                SecretRef::new("app-db", "password"),
            )]))
            .class("gpu")
            .build()
            .unwrap();
        check(&s, &ok).unwrap();

        let r = refusal(
            &s,
            JobSpec::builder("true")
                .node_selector(BTreeMap::from([("gpu".to_owned(), "a100".to_owned())]))
                .build()
                .unwrap(),
        );
        assert_eq!(r.field, "node_selector[\"gpu\"]");
        assert_eq!(
            r.message,
            "node selector key \"gpu\" is not allowed (HODEI_K8S_ALLOWED_NODE_SELECTORS=pool,zone/*)"
        );
        let r = refusal(
            &s,
            JobSpec::builder("true")
                .node_affinity(vec!["arch in (arm64)".parse().unwrap()])
                .build()
                .unwrap(),
        );
        assert_eq!(r.field, "node_affinity[0]");
        assert!(r.message.contains("node affinity key \"arch\""), "{r}");
        let r = refusal(
            &s,
            JobSpec::builder("true")
                .tolerations(vec!["gpu:NoSchedule".parse().unwrap()])
                .build()
                .unwrap(),
        );
        assert_eq!(
            r.message,
            "toleration key \"gpu\" is not allowed (HODEI_K8S_ALLOWED_TOLERATIONS=dedicated)"
        );
        let r = refusal(
            &s,
            JobSpec::builder("true")
                .secret_files(BTreeMap::from([(
                    "/etc/db/pw".to_owned(),
                    SecretRef::new("db", "pw"),
                )]))
                .build()
                .unwrap(),
        );
        assert_eq!(r.field, "secret_files[\"/etc/db/pw\"]");
        assert_eq!(
            r.message,
            "secret \"db\" is not allowed (HODEI_K8S_ALLOWED_SECRETS=app-*)"
        );
        let r = refusal(&s, JobSpec::builder("true").class("huge").build().unwrap());
        assert_eq!(r.field, "class");
        assert_eq!(
            r.message,
            "resource class \"huge\" is not defined (known: gpu, large)"
        );
    }

    #[test]
    fn by_default_nothing_is_allowed() {
        let s = KubernetesSettings::default();
        let r = refusal(
            &s,
            JobSpec::builder("true")
                .secret_env(BTreeMap::from([(
                    "PW".to_owned(),
                    SecretRef::new("app-db", "password"),
                )]))
                .build()
                .unwrap(),
        );
        assert_eq!(
            r.message,
            "secret \"app-db\" is not allowed (HODEI_K8S_ALLOWED_SECRETS is empty, so no job \
             may ask for one)"
        );
        let r = refusal(&s, JobSpec::builder("true").class("gpu").build().unwrap());
        assert!(
            r.message
                .contains("HODEI_K8S_RESOURCE_CLASSES_FILE is unset"),
            "{r}"
        );
        // Resources alone need no allow-list.
        let storage = JobSpec::builder("true")
            .ephemeral_storage("2Gi".parse().unwrap())
            .build()
            .unwrap();
        check(&s, &storage).unwrap();
    }

    #[test]
    fn a_secret_file_over_a_worker_mount_is_refused() {
        let s = KubernetesSettings {
            allowed_secrets: vec!["*".into()],
            ..KubernetesSettings::default()
        };
        let r = refusal(
            &s,
            JobSpec::builder("true")
                .secret_files(BTreeMap::from([(
                    "/var/run/secrets/hodei/token".to_owned(),
                    SecretRef::new("app", "token"),
                )]))
                .build()
                .unwrap(),
        );
        assert_eq!(r.field, "secret_files[\"/var/run/secrets/hodei/token\"]");
        assert!(r.message.contains("the worker uses"), "{r}");
        let r = refusal(
            &s,
            JobSpec::builder("true")
                .secret_files(BTreeMap::from([(
                    "/workspace".to_owned(),
                    SecretRef::new("app", "token"),
                )]))
                .build()
                .unwrap(),
        );
        assert!(r.message.contains("would hide /workspace"), "{r}");
    }

    #[test]
    fn the_job_wins_over_its_class_and_the_class_over_the_server() {
        let mut s = settings();
        s.node_selector = BTreeMap::from([
            ("pool".to_owned(), "default".to_owned()),
            ("os".to_owned(), "linux".to_owned()),
        ]);
        s.tolerations = vec![toleration(&"base:NoSchedule".parse().unwrap())];
        let class = ResourceClass {
            cpu: Some("4".parse().unwrap()),
            memory: Some("16Gi".parse().unwrap()),
            ephemeral_storage: Some("50Gi".parse().unwrap()),
            node_selector: BTreeMap::from([("pool".to_owned(), "gpu".to_owned())]),
            tolerations: vec!["nvidia.com/gpu:NoSchedule".parse().unwrap()],
        };
        let spec = JobSpec::builder("true")
            .memory("32Gi".parse().unwrap())
            .node_selector(BTreeMap::from([("pool".to_owned(), "gpu-big".to_owned())]))
            .tolerations(vec!["base:NoSchedule".parse().unwrap()])
            .build()
            .unwrap();
        let merged = merge(&s, Some(&class), &spec);
        assert_eq!(merged.cpu.unwrap().to_string(), "4");
        assert_eq!(merged.memory.unwrap().to_string(), "32Gi");
        assert_eq!(merged.ephemeral_storage.unwrap().to_string(), "50Gi");
        assert_eq!(
            merged.node_selector,
            BTreeMap::from([
                ("os".to_owned(), "linux".to_owned()),
                ("pool".to_owned(), "gpu-big".to_owned()),
            ])
        );
        let keys: Vec<_> = merged
            .tolerations
            .iter()
            .map(|t| t.key.clone().unwrap())
            .collect();
        assert_eq!(
            keys,
            ["base", "nvidia.com/gpu"],
            "a repeated toleration is added once"
        );
    }
}
