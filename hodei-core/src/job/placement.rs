//! Where a job's worker may run: tolerations and node affinity terms, their text forms
//! (`key=value:Effect`, `key in (a,b)`) and their rules.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{
    ValidationError, labels,
    limits::{MAX_AFFINITY_VALUES, MAX_PLACEMENT_ENTRIES},
    validation::excerpt,
};

/// A text form of a placement or secret option that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input} is not a valid {what} (expected {hint})")]
pub struct OptionSyntaxError {
    input: String,
    what: &'static str,
    hint: &'static str,
}

impl OptionSyntaxError {
    pub(crate) fn new(input: &str, what: &'static str, hint: &'static str) -> Self {
        Self {
            input: excerpt(input),
            what,
            hint,
        }
    }
}

/// How a toleration matches a taint's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TolerationOperator {
    /// The taint's value must equal the toleration's.
    Equal,
    /// Any value of the taint's key matches.
    Exists,
}

/// Which taints a toleration matches, by effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaintEffect {
    /// `NoSchedule`.
    NoSchedule,
    /// `PreferNoSchedule`.
    PreferNoSchedule,
    /// `NoExecute`.
    NoExecute,
}

impl TaintEffect {
    /// The Kubernetes name of the effect.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoSchedule => "NoSchedule",
            Self::PreferNoSchedule => "PreferNoSchedule",
            Self::NoExecute => "NoExecute",
        }
    }
}

const TOLERATION_HINT: &str = "key=value:Effect, key:Effect, key=value or key, Effect one of NoSchedule, PreferNoSchedule, NoExecute";

/// A taint the worker tolerates. Text form: `key=value:Effect` (operator `Equal`),
/// `key:Effect` (operator `Exists`), `key=value` or `key` (any effect).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Toleration {
    /// Taint key.
    pub key: String,
    /// `Equal` when a value is given, `Exists` otherwise.
    pub operator: TolerationOperator,
    /// Taint value matched by `Equal`; empty for `Exists`.
    pub value: String,
    /// The effect matched; every effect when absent.
    pub effect: Option<TaintEffect>,
}

impl FromStr for Toleration {
    type Err = OptionSyntaxError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || OptionSyntaxError::new(text, "toleration", TOLERATION_HINT);
        let (rest, effect) = match text.rsplit_once(':') {
            Some((rest, effect)) => {
                let effect = match effect {
                    "NoSchedule" => TaintEffect::NoSchedule,
                    "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
                    "NoExecute" => TaintEffect::NoExecute,
                    _ => return Err(bad()),
                };
                (rest, Some(effect))
            }
            None => (text, None),
        };
        let (key, operator, value) = match rest.split_once('=') {
            Some((key, value)) => (key, TolerationOperator::Equal, value),
            None => (rest, TolerationOperator::Exists, ""),
        };
        if key.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            key: key.to_owned(),
            operator,
            value: value.to_owned(),
            effect,
        })
    }
}

impl fmt::Display for Toleration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if self.operator == TolerationOperator::Equal {
            write!(f, "={}", self.value)?;
        }
        if let Some(effect) = self.effect {
            write!(f, ":{}", effect.as_str())?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Toleration {
    type Error = OptionSyntaxError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Toleration> for String {
    fn from(toleration: Toleration) -> Self {
        toleration.to_string()
    }
}

/// How a node affinity term matches a node label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AffinityOperator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The node has the label.
    Exists,
    /// The node lacks the label.
    DoesNotExist,
}

impl AffinityOperator {
    /// The Kubernetes name of the operator.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "In",
            Self::NotIn => "NotIn",
            Self::Exists => "Exists",
            Self::DoesNotExist => "DoesNotExist",
        }
    }
}

const AFFINITY_HINT: &str = "'key in (a,b)', 'key notin (a,b)', 'key' or '!key'";

/// One requirement on a node's labels that the worker's node must meet (required node
/// affinity; all terms of a job must hold). Text form as in Kubernetes label selectors:
/// `key in (a,b)`, `key notin (a,b)`, `key` (exists), `!key` (does not exist).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeAffinityTerm {
    /// Node label key.
    pub key: String,
    /// How the label is matched.
    pub operator: AffinityOperator,
    /// Values for `In` and `NotIn`; empty otherwise.
    pub values: Vec<String>,
}

impl FromStr for NodeAffinityTerm {
    type Err = OptionSyntaxError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || OptionSyntaxError::new(text, "node affinity term", AFFINITY_HINT);
        let trimmed = text.trim();
        let Some(open) = trimmed.find('(') else {
            if trimmed.contains(char::is_whitespace) || trimmed.contains(')') {
                return Err(bad());
            }
            let (key, operator) = match trimmed.strip_prefix('!') {
                Some(key) => (key, AffinityOperator::DoesNotExist),
                None => (trimmed, AffinityOperator::Exists),
            };
            if key.is_empty() {
                return Err(bad());
            }
            return Ok(Self {
                key: key.to_owned(),
                operator,
                values: Vec::new(),
            });
        };
        let inner = trimmed[open + 1..].strip_suffix(')').ok_or_else(bad)?;
        let mut head = trimmed[..open].split_whitespace();
        let (Some(key), Some(operator), None) = (head.next(), head.next(), head.next()) else {
            return Err(bad());
        };
        let operator = match operator.to_ascii_lowercase().as_str() {
            "in" => AffinityOperator::In,
            "notin" => AffinityOperator::NotIn,
            _ => return Err(bad()),
        };
        let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
        if values.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(Self {
            key: key.to_owned(),
            operator,
            values,
        })
    }
}

impl fmt::Display for NodeAffinityTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operator {
            AffinityOperator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            AffinityOperator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            AffinityOperator::Exists => f.write_str(&self.key),
            AffinityOperator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

impl TryFrom<String> for NodeAffinityTerm {
    type Error = OptionSyntaxError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<NodeAffinityTerm> for String {
    fn from(term: NodeAffinityTerm) -> Self {
        term.to_string()
    }
}

/// Checks a node selector: at most [`MAX_PLACEMENT_ENTRIES`] labels, each a valid
/// Kubernetes label.
pub(crate) fn check_node_selector(
    selector: &std::collections::BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    too_many("node_selector", selector.len(), MAX_PLACEMENT_ENTRIES)?;
    for (key, value) in selector {
        labels::check(&format!("node_selector[{}]", excerpt(key)), key, value)?;
    }
    Ok(())
}

/// Checks tolerations: keys are label keys, values label values, `Exists` has no value.
pub(crate) fn check_tolerations(tolerations: &[Toleration]) -> Result<(), ValidationError> {
    too_many("tolerations", tolerations.len(), MAX_PLACEMENT_ENTRIES)?;
    for (i, toleration) in tolerations.iter().enumerate() {
        let field = format!("tolerations[{i}]");
        labels::check(&field, &toleration.key, &toleration.value)?;
        if toleration.operator == TolerationOperator::Exists && !toleration.value.is_empty() {
            return Err(ValidationError::new(
                field,
                "operator Exists takes no value",
            ));
        }
    }
    Ok(())
}

/// Checks node affinity terms: keys are label keys; `In`/`NotIn` have 1 to
/// [`MAX_AFFINITY_VALUES`] label values, `Exists`/`DoesNotExist` none.
pub(super) fn check_node_affinity(terms: &[NodeAffinityTerm]) -> Result<(), ValidationError> {
    too_many("node_affinity", terms.len(), MAX_PLACEMENT_ENTRIES)?;
    for (i, term) in terms.iter().enumerate() {
        let field = format!("node_affinity[{i}]");
        labels::check(&field, &term.key, "")?;
        match term.operator {
            AffinityOperator::In | AffinityOperator::NotIn => {
                if term.values.is_empty() || term.values.len() > MAX_AFFINITY_VALUES {
                    return Err(ValidationError::new(
                        field,
                        format!(
                            "operator {} needs 1 to {MAX_AFFINITY_VALUES} values",
                            term.operator.as_str()
                        ),
                    ));
                }
                for value in &term.values {
                    labels::check(&field, &term.key, value)?;
                    if value.is_empty() {
                        return Err(ValidationError::new(field, "values must not be empty"));
                    }
                }
            }
            AffinityOperator::Exists | AffinityOperator::DoesNotExist => {
                if !term.values.is_empty() {
                    return Err(ValidationError::new(
                        field,
                        format!("operator {} takes no values", term.operator.as_str()),
                    ));
                }
            }
        }
    }
    Ok(())
}

pub(super) fn too_many(field: &'static str, len: usize, max: usize) -> Result<(), ValidationError> {
    if len > max {
        return Err(ValidationError::new(
            field,
            format!("has {len} entries; at most {max} allowed"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_toleration_form_parses_and_prints_back() {
        for (text, operator, value, effect) in [
            (
                "gpu=true:NoSchedule",
                TolerationOperator::Equal,
                "true",
                Some(TaintEffect::NoSchedule),
            ),
            (
                "dedicated:NoExecute",
                TolerationOperator::Exists,
                "",
                Some(TaintEffect::NoExecute),
            ),
            ("pool=batch", TolerationOperator::Equal, "batch", None),
            ("example.com/spot", TolerationOperator::Exists, "", None),
        ] {
            let toleration: Toleration = text.parse().unwrap();
            assert_eq!(toleration.operator, operator, "{text}");
            assert_eq!(toleration.value, value, "{text}");
            assert_eq!(toleration.effect, effect, "{text}");
            assert_eq!(toleration.to_string(), text);
        }
        let err = "gpu=true:Sometimes".parse::<Toleration>().unwrap_err();
        assert!(err.to_string().contains("not a valid toleration"), "{err}");
        assert!("=x".parse::<Toleration>().is_err());
    }

    #[test]
    fn every_affinity_form_parses_and_prints_back() {
        let term: NodeAffinityTerm = "zone in (a, b)".parse().unwrap();
        assert_eq!(term.operator, AffinityOperator::In);
        assert_eq!(term.values, ["a", "b"]);
        assert_eq!(term.to_string(), "zone in (a,b)");
        let term: NodeAffinityTerm = "arch NotIn (arm64)".parse().unwrap();
        assert_eq!(term.operator, AffinityOperator::NotIn);
        assert_eq!(term.to_string(), "arch notin (arm64)");
        let term: NodeAffinityTerm = "gpu".parse().unwrap();
        assert_eq!(term.operator, AffinityOperator::Exists);
        let term: NodeAffinityTerm = "!spot".parse().unwrap();
        assert_eq!(term.operator, AffinityOperator::DoesNotExist);
        assert_eq!(term.to_string(), "!spot");
        for bad in [
            "zone in a,b",
            "zone is (a)",
            "zone in (a,)",
            "!",
            "a b",
            "in (a)",
        ] {
            assert!(bad.parse::<NodeAffinityTerm>().is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_name_the_entry() {
        let exists_with_value = Toleration {
            key: "gpu".into(),
            operator: TolerationOperator::Exists,
            value: "x".into(),
            effect: None,
        };
        let err = check_tolerations(&[exists_with_value]).unwrap_err();
        assert_eq!(err.field(), "tolerations[0]");
        let bad_key: Toleration = "bad key".parse().unwrap();
        assert_eq!(
            check_tolerations(&[bad_key]).unwrap_err().field(),
            "tolerations[0]"
        );
        let in_without_values = NodeAffinityTerm {
            key: "zone".into(),
            operator: AffinityOperator::In,
            values: vec![],
        };
        let ok: NodeAffinityTerm = "zone".parse().unwrap();
        let err = check_node_affinity(&[ok, in_without_values]).unwrap_err();
        assert_eq!(err.field(), "node_affinity[1]");
        assert!(err.message().contains("needs 1 to 32 values"), "{err}");
    }
}
