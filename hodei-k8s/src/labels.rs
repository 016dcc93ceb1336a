//! Label and annotation keys on worker pods, and making values valid for Kubernetes.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `app` label value shared by every worker pod.
pub const APP: &str = "hodei-jobs-worker";
/// Label key marking pods this system owns (value `true`).
pub const MANAGED: &str = "hodei.io/managed";
/// Label key naming the provider that created the pod (value `kubernetes`).
pub const PROVIDER: &str = "hodei.io/provider";
/// Label key (sanitized value) and annotation key (exact value) of the worker id.
pub const WORKER_ID: &str = "hodei.io/worker-id";
/// Label key (sanitized value) and annotation key (exact value) of the job id.
pub const JOB_ID: &str = "hodei.io/job-id";
/// Prefix of every worker pod name; the worker id follows it.
pub const POD_NAME_PREFIX: &str = "hodei-worker-";
/// Label selector matching every pod this system manages.
pub const MANAGED_SELECTOR: &str = "hodei.io/managed=true";

/// Longest label value (and label name segment) Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;
/// Longest label key prefix (a DNS subdomain).
const MAX_LABEL_PREFIX: usize = 253;

/// The labels every worker pod carries, on top of which callers may add their own.
#[must_use]
pub fn managed_labels(worker_id: &str, job_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app".to_owned(), APP.to_owned()),
        (MANAGED.to_owned(), "true".to_owned()),
        (PROVIDER.to_owned(), "kubernetes".to_owned()),
        (WORKER_ID.to_owned(), sanitize_label_value(worker_id)),
        (JOB_ID.to_owned(), sanitize_label_value(job_id)),
    ])
}

/// The worker id of a managed pod: the exact annotation, else the label, else the pod
/// name without its `hodei-worker-` prefix.
#[must_use]
pub fn worker_id_of(meta: &ObjectMeta) -> Option<String> {
    exact_or_label(meta, WORKER_ID).or_else(|| {
        meta.name
            .as_deref()
            .and_then(|n| n.strip_prefix(POD_NAME_PREFIX))
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    })
}

/// The job id of a managed pod: the exact annotation, else the (sanitized) label.
#[must_use]
pub fn job_id_of(meta: &ObjectMeta) -> Option<String> {
    exact_or_label(meta, JOB_ID)
}

fn exact_or_label(meta: &ObjectMeta, key: &str) -> Option<String> {
    let from = |map: Option<&BTreeMap<String, String>>| {
        map.and_then(|m| m.get(key))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    from(meta.annotations.as_ref()).or_else(|| from(meta.labels.as_ref()))
}

/// Turns any string into a valid label value: at most 63 characters of `[A-Za-z0-9-_.]`,
/// starting and ending with an alphanumeric. Other characters become `-`; an input with
/// no alphanumeric at all becomes the empty value.
#[must_use]
pub fn sanitize_label_value(value: &str) -> String {
    let replaced: String = value
        .chars()
        .map(|c| if is_label_char(c) { c } else { '-' })
        .take(MAX_LABEL_VALUE)
        .collect();
    replaced
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned()
}

/// True when `value` is already a valid label value.
#[must_use]
pub fn is_valid_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= MAX_LABEL_VALUE
            && value.chars().all(is_label_char)
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// True when `key` is a valid label key: an optional DNS-subdomain prefix and `/`, then a
/// name of up to 63 characters shaped like a non-empty label value.
#[must_use]
pub fn is_valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| p.len() <= MAX_LABEL_PREFIX && is_dns_subdomain(p));
    prefix_ok && !name.is_empty() && is_valid_label_value(name)
}

/// True when `name` is an RFC 1123 subdomain: lowercase alphanumerics, `-` and `.`,
/// starting and ending with an alphanumeric, at most 253 characters.
#[must_use]
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LABEL_PREFIX
        && name
            .split('.')
            .all(|part| !part.is_empty() && is_dns_label_chars(part))
}

fn is_dns_label_chars(part: &str) -> bool {
    part.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        && part.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_pass_through_unchanged() {
        let id = "0b7c4c8e-5d0f-4c1b-9a57-1e0f2d3c4b5a";
        assert_eq!(sanitize_label_value(id), id);
        assert!(is_valid_label_value(id));
    }

    #[test]
    fn invalid_values_are_made_valid() {
        let cases = [
            ("job/with spaces", "job-with-spaces"),
            ("--edge--", "edge"),
            ("ünïcode", "n-code"),
            ("!!!", ""),
        ];
        for (input, expected) in cases {
            let got = sanitize_label_value(input);
            assert_eq!(got, expected, "input {input:?}");
            assert!(is_valid_label_value(&got), "{got:?}");
        }
        let long = "a".repeat(100) + "-";
        assert_eq!(sanitize_label_value(&long).len(), 63);
        let trailing = "a".repeat(62) + "-b";
        assert_eq!(sanitize_label_value(&trailing), "a".repeat(62));
    }

    #[test]
    fn label_keys() {
        assert!(is_valid_label_key("team"));
        assert!(is_valid_label_key("example.com/team"));
        assert!(!is_valid_label_key("Example.com/team"));
        assert!(!is_valid_label_key("example.com/"));
        assert!(!is_valid_label_key("a/b/c"));
        assert!(!is_valid_label_key(&"x".repeat(64)));
    }

    #[test]
    fn identity_prefers_exact_annotations() {
        let mut meta = ObjectMeta {
            name: Some("hodei-worker-w1".into()),
            labels: Some(managed_labels("w1", "Job 7")),
            ..ObjectMeta::default()
        };
        assert_eq!(job_id_of(&meta).as_deref(), Some("Job-7"));
        meta.annotations = Some(BTreeMap::from([(JOB_ID.to_owned(), "Job 7".to_owned())]));
        assert_eq!(job_id_of(&meta).as_deref(), Some("Job 7"));
        assert_eq!(worker_id_of(&meta).as_deref(), Some("w1"));
        meta.labels = None;
        assert_eq!(worker_id_of(&meta).as_deref(), Some("w1"));
        meta.name = Some("other".into());
        assert_eq!(worker_id_of(&meta), None);
    }

    #[test]
    fn dns_subdomains() {
        assert!(is_dns_subdomain("hodei-worker-abc.1"));
        assert!(!is_dns_subdomain("Hodei"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(!is_dns_subdomain("a-"));
    }
}
