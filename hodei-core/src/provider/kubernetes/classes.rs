//! Resource classes: named sets of resources and placement the operator defines and jobs
//! pick by name (`--class`). A class is trusted: the allow-lists do not apply to it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::job::{
    Cpu, Memory, Toleration, ValidationError, check_node_selector, check_tolerations,
    limits::MAX_CLASS_BYTES,
};

/// Most classes an operator may define.
pub const MAX_RESOURCE_CLASSES: usize = 256;

/// One resource class. Every field is optional; a job's own `cpu`, `memory` and
/// `ephemeral_storage` override the class's, its node selector keys override the class's,
/// and its tolerations are added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceClass {
    /// CPU request and limit, e.g. `"2"`.
    #[serde(default)]
    pub cpu: Option<Cpu>,
    /// Memory request and limit, e.g. `"8Gi"`.
    #[serde(default)]
    pub memory: Option<Memory>,
    /// Local disk request and limit, e.g. `"20Gi"`.
    #[serde(default)]
    pub ephemeral_storage: Option<Memory>,
    /// Node labels the pod's node must have.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pod tolerates, in the `key=value:Effect` form.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
}

/// Reads classes from JSON: an object of class name to class, e.g.
/// `{"gpu": {"cpu": "4", "memory": "16Gi", "node_selector": {"pool": "gpu"},
/// "tolerations": ["nvidia.com/gpu:NoSchedule"]}}`. The error names the class and field.
pub fn parse_resource_classes(
    json: &str,
) -> Result<BTreeMap<String, ResourceClass>, ValidationError> {
    let classes: BTreeMap<String, ResourceClass> = serde_json::from_str(json)
        .map_err(|e| ValidationError::new("resource_classes", e.to_string()))?;
    check_resource_classes(&classes)?;
    Ok(classes)
}

/// Checks class names (lowercase DNS labels) and what each class holds.
pub(super) fn check_resource_classes(
    classes: &BTreeMap<String, ResourceClass>,
) -> Result<(), ValidationError> {
    if classes.len() > MAX_RESOURCE_CLASSES {
        return Err(ValidationError::new(
            "resource_classes",
            format!(
                "has {} classes; at most {MAX_RESOURCE_CLASSES} allowed",
                classes.len()
            ),
        ));
    }
    for (name, class) in classes {
        let within = |e: ValidationError| {
            ValidationError::new(
                "resource_classes",
                format!("class {name:?}: invalid {}: {}", e.field(), e.message()),
            )
        };
        let name_ok = !name.is_empty()
            && name.len() <= MAX_CLASS_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(ValidationError::new(
                "resource_classes",
                format!("class name {name:?} must be 1 to {MAX_CLASS_BYTES} bytes of [a-z0-9-]"),
            ));
        }
        check_node_selector(&class.node_selector).map_err(within)?;
        check_tolerations(&class.tolerations).map_err(within)?;
        if class.ephemeral_storage.is_some_and(|s| s.bytes() == 0) {
            return Err(within(ValidationError::new(
                "ephemeral_storage",
                "must be above 0",
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_read_from_json() {
        let classes = parse_resource_classes(
            r#"{"gpu": {"cpu": "4", "memory": "16Gi", "ephemeral_storage": "50Gi",
                "node_selector": {"pool": "gpu"},
                "tolerations": ["nvidia.com/gpu:NoSchedule"]},
                "small": {"cpu": "250m"}}"#,
        )
        .unwrap();
        let gpu = &classes["gpu"];
        assert_eq!(gpu.cpu.unwrap().to_string(), "4");
        assert_eq!(gpu.memory.unwrap().to_string(), "16Gi");
        assert_eq!(gpu.node_selector["pool"], "gpu");
        assert_eq!(gpu.tolerations[0].to_string(), "nvidia.com/gpu:NoSchedule");
        assert_eq!(classes["small"].memory, None);
    }

    #[test]
    fn bad_classes_are_refused_naming_the_class() {
        for (json, needle) in [
            (r#"{"Big": {}}"#, "class name \"Big\""),
            (r#"{"gpu": {"cpus": "4"}}"#, "unknown field `cpus`"),
            (r#"{"gpu": {"cpu": "lots"}}"#, "cpu quantity"),
            (
                r#"{"gpu": {"node_selector": {"bad key": "x"}}}"#,
                "class \"gpu\": invalid node_selector[\"bad key\"]",
            ),
            (r#"{"gpu": {"tolerations": ["x:Never"]}}"#, "toleration"),
        ] {
            let err = parse_resource_classes(json).unwrap_err();
            assert_eq!(err.field(), "resource_classes");
            assert!(err.message().contains(needle), "{json}: {err}");
        }
    }
}
