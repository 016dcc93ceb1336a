//! Kubernetes' rules for label keys and values, which every job label follows so that it
//! can be put on a pod unchanged.

use super::{
    ValidationError,
    limits::{MAX_LABEL_NAME_BYTES, MAX_LABEL_PREFIX_BYTES, MAX_LABEL_VALUE_BYTES},
};

/// Checks one label; `field` names it in the error.
pub(super) fn check(field: &str, key: &str, value: &str) -> Result<(), ValidationError> {
    let refuse = |message: String| Err(ValidationError::new(field.to_owned(), message));
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns_subdomain(prefix)
    {
        return refuse(format!(
            "key prefix must be a DNS subdomain: at most {MAX_LABEL_PREFIX_BYTES} bytes of \
             lowercase [a-z0-9.-], each dot-separated part starting and ending alphanumeric"
        ));
    }
    if name.is_empty() || !is_qualified_token(name, MAX_LABEL_NAME_BYTES) {
        return refuse(format!(
            "key name must be 1 to {MAX_LABEL_NAME_BYTES} bytes of [A-Za-z0-9_.-], starting \
             and ending alphanumeric, after an optional \"prefix/\""
        ));
    }
    if !value.is_empty() && !is_qualified_token(value, MAX_LABEL_VALUE_BYTES) {
        return refuse(format!(
            "value must be at most {MAX_LABEL_VALUE_BYTES} bytes of [A-Za-z0-9_.-], starting \
             and ending alphanumeric"
        ));
    }
    Ok(())
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most `max` bytes.
fn is_qualified_token(s: &str, max: usize) -> bool {
    let bytes = s.as_bytes();
    s.len() <= max
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A lowercase RFC 1123 subdomain of at most 253 bytes.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= MAX_LABEL_PREFIX_BYTES
        && s.split('.').all(|part| {
            let bytes = part.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            bytes.first().is_some_and(alnum)
                && bytes.last().is_some_and(alnum)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str, value: &str) -> Option<String> {
        check("labels", key, value)
            .err()
            .map(|e| e.message().to_owned())
    }

    #[test]
    fn kubernetes_style_labels_are_accepted() {
        let prefix = format!("{}.example.com", "a".repeat(60));
        let long_name = "n".repeat(MAX_LABEL_NAME_BYTES);
        let long_value = "v".repeat(MAX_LABEL_VALUE_BYTES);
        for (key, value) in [
            ("team", "build"),
            ("app.kubernetes.io/name", "hodei"),
            ("Team_1.x-y", ""),
            (&format!("{prefix}/{long_name}"), long_value.as_str()),
        ] {
            assert_eq!(message(key, value), None, "{key}={value}");
        }
    }

    #[test]
    fn keys_outside_the_rules_are_refused_naming_the_part_and_its_limit() {
        let too_long_prefix = format!("{}/a", "p".repeat(MAX_LABEL_PREFIX_BYTES + 1));
        let too_long_name = "n".repeat(MAX_LABEL_NAME_BYTES + 1);
        for (key, part) in [
            ("Example.com/a", "key prefix"),
            ("example..com/a", "key prefix"),
            ("-x.com/a", "key prefix"),
            ("/a", "key prefix"),
            (too_long_prefix.as_str(), "key prefix"),
            ("a/b/c", "key name"),
            ("example.com/", "key name"),
            ("", "key name"),
            ("-team", "key name"),
            ("team-", "key name"),
            ("te am", "key name"),
            ("te\u{7}am", "key name"),
            ("tëam", "key name"),
            (too_long_name.as_str(), "key name"),
        ] {
            let message = message(key, "v").unwrap_or_else(|| panic!("{key:?} accepted"));
            assert!(message.starts_with(part), "{key:?}: {message}");
        }
        let name_limit = message(&too_long_name, "v").unwrap();
        assert!(name_limit.contains("1 to 63 bytes"), "{name_limit}");
        let prefix_limit = message(&too_long_prefix, "v").unwrap();
        assert!(prefix_limit.contains("at most 253 bytes"), "{prefix_limit}");
    }

    #[test]
    fn values_outside_the_rules_are_refused_naming_the_limit() {
        let too_long = "v".repeat(MAX_LABEL_VALUE_BYTES + 1);
        for value in ["-v", "v.", "a b", "a\nb", "a\u{0}b", too_long.as_str()] {
            let message = message("team", value).unwrap_or_else(|| panic!("{value:?} accepted"));
            assert!(
                message.starts_with("value must be at most 63 bytes"),
                "{value:?}: {message}"
            );
        }
    }
}
