//! The placement and secret parts of a job spec on the wire: tolerations, node affinity
//! terms and secret references.

use std::collections::BTreeMap;

use hodei_proto::v1 as pb;

use crate::job::{
    AffinityOperator, NodeAffinityTerm, SecretRef, TaintEffect, Toleration, TolerationOperator,
    ValidationError,
};

impl From<&Toleration> for pb::Toleration {
    fn from(toleration: &Toleration) -> Self {
        Self {
            key: toleration.key.clone(),
            operator: match toleration.operator {
                TolerationOperator::Equal => "Equal",
                TolerationOperator::Exists => "Exists",
            }
            .to_owned(),
            value: toleration.value.clone(),
            effect: toleration
                .effect
                .map(|e| e.as_str().to_owned())
                .unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::Toleration> for Toleration {
    type Error = ValidationError;

    fn try_from(toleration: pb::Toleration) -> Result<Self, Self::Error> {
        let operator = match toleration.operator.as_str() {
            "Equal" => TolerationOperator::Equal,
            "Exists" => TolerationOperator::Exists,
            other => {
                return Err(ValidationError::new(
                    "operator",
                    format!("{other:?} must be Equal or Exists"),
                ));
            }
        };
        let effect = match toleration.effect.as_str() {
            "" => None,
            "NoSchedule" => Some(TaintEffect::NoSchedule),
            "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
            "NoExecute" => Some(TaintEffect::NoExecute),
            other => {
                return Err(ValidationError::new(
                    "effect",
                    format!("{other:?} must be NoSchedule, PreferNoSchedule, NoExecute or empty"),
                ));
            }
        };
        Ok(Self {
            key: toleration.key,
            operator,
            value: toleration.value,
            effect,
        })
    }
}

impl From<&NodeAffinityTerm> for pb::NodeAffinityTerm {
    fn from(term: &NodeAffinityTerm) -> Self {
        Self {
            key: term.key.clone(),
            operator: term.operator.as_str().to_owned(),
            values: term.values.clone(),
        }
    }
}

impl TryFrom<pb::NodeAffinityTerm> for NodeAffinityTerm {
    type Error = ValidationError;

    fn try_from(term: pb::NodeAffinityTerm) -> Result<Self, Self::Error> {
        let operator = match term.operator.as_str() {
            "In" => AffinityOperator::In,
            "NotIn" => AffinityOperator::NotIn,
            "Exists" => AffinityOperator::Exists,
            "DoesNotExist" => AffinityOperator::DoesNotExist,
            other => {
                return Err(ValidationError::new(
                    "operator",
                    format!("{other:?} must be In, NotIn, Exists or DoesNotExist"),
                ));
            }
        };
        Ok(Self {
            key: term.key,
            operator,
            values: term.values,
        })
    }
}

impl From<&SecretRef> for pb::SecretKeyRef {
    fn from(reference: &SecretRef) -> Self {
        Self {
            secret: reference.secret.clone(),
            key: reference.key.clone(),
        }
    }
}

impl From<pb::SecretKeyRef> for SecretRef {
    fn from(reference: pb::SecretKeyRef) -> Self {
        Self::new(reference.secret, reference.key)
    }
}

/// Decodes a list, naming a bad entry `field[i]`.
pub(super) fn decode_list<W, D>(field: &str, items: Vec<W>) -> Result<Vec<D>, ValidationError>
where
    D: TryFrom<W, Error = ValidationError>,
{
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| D::try_from(item).map_err(|e| e.within(&format!("{field}[{i}]"))))
        .collect()
}

/// Decodes a map of secret references.
pub(super) fn decode_refs(
    refs: impl IntoIterator<Item = (String, pb::SecretKeyRef)>,
) -> BTreeMap<String, SecretRef> {
    refs.into_iter().map(|(k, r)| (k, r.into())).collect()
}

/// Encodes a map of secret references.
pub(super) fn encode_refs<M>(refs: &BTreeMap<String, SecretRef>) -> M
where
    M: FromIterator<(String, pb::SecretKeyRef)>,
{
    refs.iter().map(|(k, r)| (k.clone(), r.into())).collect()
}

#[cfg(test)]
mod tests {
    use crate::job::JobSpec;

    use super::*;

    fn spec_with_every_option() -> JobSpec {
        JobSpec::builder("true")
            .node_selector(BTreeMap::from([("pool".to_owned(), "batch".to_owned())]))
            .tolerations(
                [
                    "gpu=true:NoSchedule",
                    "dedicated:NoExecute",
                    "pool=x",
                    "spot",
                ]
                .map(|t| t.parse().unwrap())
                .to_vec(),
            )
            .node_affinity(
                ["zone in (a,b)", "arch notin (arm64)", "ssd", "!spot"]
                    .map(|t| t.parse().unwrap())
                    .to_vec(),
            )
            .ephemeral_storage("2Gi".parse().unwrap())
            .class("large")
            .secret_env(BTreeMap::from([(
                "DB_PASSWORD".to_owned(),
                SecretRef::new("db", "password"),
            )]))
            .secret_files(BTreeMap::from([(
                "/etc/app/token".to_owned(),
                SecretRef::new("app", "token"),
            )]))
            .build()
            .unwrap()
    }

    #[test]
    fn every_placement_and_secret_option_round_trips() {
        let spec = spec_with_every_option();
        let wire = pb::JobSpec::from(&spec);
        assert_eq!(wire.ephemeral_storage, "2Gi");
        assert_eq!(wire.resource_class.as_deref(), Some("large"));
        assert_eq!(
            wire.tolerations[0],
            pb::Toleration {
                key: "gpu".into(),
                operator: "Equal".into(),
                value: "true".into(),
                effect: "NoSchedule".into(),
            }
        );
        assert_eq!(
            wire.secret_env["DB_PASSWORD"],
            pb::SecretKeyRef {
                secret: "db".into(),
                key: "password".into()
            }
        );
        assert_eq!(JobSpec::try_from(wire).unwrap(), spec);
        let plain = JobSpec::builder("true").build().unwrap();
        assert_eq!(JobSpec::try_from(pb::JobSpec::from(&plain)).unwrap(), plain);
    }

    #[test]
    fn bad_options_on_the_wire_name_the_field() {
        let good = pb::JobSpec::from(&spec_with_every_option());
        let field = |change: fn(&mut pb::JobSpec)| {
            let mut wire = good.clone();
            change(&mut wire);
            JobSpec::try_from(wire).unwrap_err().field().to_owned()
        };
        assert_eq!(
            field(|w| w.tolerations[1].operator = "Maybe".into()),
            "tolerations[1].operator"
        );
        assert_eq!(
            field(|w| w.tolerations[0].effect = "Never".into()),
            "tolerations[0].effect"
        );
        assert_eq!(
            field(|w| w.node_affinity[2].operator = "Gt".into()),
            "node_affinity[2].operator"
        );
        assert_eq!(
            field(|w| w.ephemeral_storage = "lots".into()),
            "ephemeral_storage"
        );
        assert_eq!(
            field(|w| {
                w.secret_env.insert(
                    "PW".into(),
                    pb::SecretKeyRef {
                        secret: "Bad Name".into(),
                        key: "k".into(),
                    },
                );
            }),
            "secret_env[\"PW\"]"
        );
    }
}
