//! References to secrets a job receives: `SECRET/KEY`, never a value. The platform
//! resolves them where the worker runs; the server only passes the reference on.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{
    ValidationError, labels,
    limits::{MAX_SECRET_NAME_BYTES, MAX_SECRET_REFS, MAX_WORKING_DIR_BYTES},
    placement::{OptionSyntaxError, too_many},
    validation::excerpt,
};

/// Directories a secret file may not be put in: the kernel's and the device files.
const SYSTEM_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// One key of one secret, written `SECRET/KEY`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretRef {
    /// Name of the secret (in the workers' namespace on Kubernetes).
    pub secret: String,
    /// Key within the secret.
    pub key: String,
}

impl SecretRef {
    /// A reference to `key` of `secret`.
    pub fn new(secret: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            key: key.into(),
        }
    }

    fn check(&self, field: &str) -> Result<(), ValidationError> {
        let refuse = |message: String| Err(ValidationError::new(field.to_owned(), message));
        if self.secret.is_empty() || !labels::is_dns_subdomain(&self.secret) {
            return refuse(format!(
                "secret name {} must be a DNS subdomain: at most {MAX_SECRET_NAME_BYTES} bytes of \
                 lowercase [a-z0-9.-]",
                excerpt(&self.secret)
            ));
        }
        let key_ok = !self.key.is_empty()
            && self.key.len() <= MAX_SECRET_NAME_BYTES
            && self.key != "."
            && self.key != ".."
            && self
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !key_ok {
            return refuse(format!(
                "secret key {} must be 1 to {MAX_SECRET_NAME_BYTES} bytes of [A-Za-z0-9_.-]",
                excerpt(&self.key)
            ));
        }
        Ok(())
    }
}

impl FromStr for SecretRef {
    type Err = OptionSyntaxError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('/') {
            Some((secret, key)) if !secret.is_empty() && !key.is_empty() => {
                Ok(Self::new(secret, key))
            }
            _ => Err(OptionSyntaxError::new(
                text,
                "secret reference",
                "SECRET/KEY",
            )),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.secret, self.key)
    }
}

impl TryFrom<String> for SecretRef {
    type Error = OptionSyntaxError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<SecretRef> for String {
    fn from(reference: SecretRef) -> Self {
        reference.to_string()
    }
}

/// Checks secret env vars: names follow the env rules (no `=`, no `HODEI_` prefix) and
/// are not plain env vars of the job too; references are valid.
pub(super) fn check_secret_env(
    secret_env: &BTreeMap<String, SecretRef>,
    env: &BTreeMap<String, String>,
) -> Result<(), ValidationError> {
    too_many("secret_env", secret_env.len(), MAX_SECRET_REFS)?;
    for (name, reference) in secret_env {
        let field = format!("secret_env[{}]", excerpt(name));
        if name.is_empty() || name.contains('=') || name.contains(char::is_control) {
            return Err(ValidationError::new(
                field,
                "name must be non-empty, without '=' or control characters",
            ));
        }
        if name.starts_with("HODEI_") {
            return Err(ValidationError::new(
                field,
                "names starting with HODEI_ are reserved for the worker",
            ));
        }
        if env.contains_key(name) {
            return Err(ValidationError::new(
                field,
                "is also a plain env var of the job; give it one value only",
            ));
        }
        reference.check(&field)?;
    }
    Ok(())
}

/// Checks secret files: each path is absolute and plain (no `.`, `..` or empty parts),
/// outside `/proc`, `/sys` and `/dev`, neither the working directory nor one of its
/// parents, and no path is inside another.
pub(super) fn check_secret_files(
    secret_files: &BTreeMap<String, SecretRef>,
    working_dir: Option<&str>,
) -> Result<(), ValidationError> {
    too_many("secret_files", secret_files.len(), MAX_SECRET_REFS)?;
    for (path, reference) in secret_files {
        let field = format!("secret_files[{}]", excerpt(path));
        let refuse = |message: String| Err(ValidationError::new(field.clone(), message));
        if path.len() > MAX_WORKING_DIR_BYTES || path.contains(char::is_control) {
            return refuse(format!(
                "path must be at most {MAX_WORKING_DIR_BYTES} bytes without control characters"
            ));
        }
        let plain = path.len() > 1
            && path.starts_with('/')
            && path[1..]
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !plain {
            return refuse(
                "path must be an absolute file path without '.', '..' or empty parts, e.g. \
                 /etc/app/token"
                    .to_owned(),
            );
        }
        if let Some(dir) = SYSTEM_DIRS.iter().find(|dir| is_within(path, dir)) {
            return refuse(format!("path must not be inside {dir}"));
        }
        if let Some(dir) = working_dir
            && is_within(dir, path)
        {
            return refuse(format!(
                "path would hide the working directory {}",
                excerpt(dir)
            ));
        }
        if let Some(other) = secret_files
            .keys()
            .find(|other| *other != path && is_within(other, path))
        {
            return refuse(format!(
                "path would hide the secret file {}",
                excerpt(other)
            ));
        }
        reference.check(&field)?;
    }
    Ok(())
}

/// Whether `path` is `dir` or inside it.
fn is_within(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/') || dir.ends_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(paths: &[&str]) -> BTreeMap<String, SecretRef> {
        paths
            .iter()
            .map(|p| ((*p).to_owned(), SecretRef::new("db", "password")))
            .collect()
    }

    #[test]
    fn a_reference_parses_and_prints_back() {
        let reference: SecretRef = "db-creds/password".parse().unwrap();
        assert_eq!(reference, SecretRef::new("db-creds", "password"));
        assert_eq!(reference.to_string(), "db-creds/password");
        for bad in ["db", "/key", "db/", ""] {
            assert!(bad.parse::<SecretRef>().is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_env_rules_name_the_variable() {
        let env = BTreeMap::from([("TOKEN".to_owned(), "x".to_owned())]);
        let check = |name: &str, reference: SecretRef| {
            check_secret_env(&BTreeMap::from([(name.to_owned(), reference)]), &env)
        };
        check("DB_PASSWORD", SecretRef::new("db", "password")).unwrap();
        for (name, reference, message) in [
            ("HODEI_X", SecretRef::new("db", "k"), "reserved"),
            ("TOKEN", SecretRef::new("db", "k"), "plain env var"),
            ("A=B", SecretRef::new("db", "k"), "'='"),
            ("PW", SecretRef::new("Db_Creds", "k"), "secret name"),
            ("PW", SecretRef::new("db", "a/b"), "secret key"),
        ] {
            let err = check(name, reference).unwrap_err();
            assert_eq!(err.field(), format!("secret_env[\"{name}\"]"));
            assert!(err.message().contains(message), "{err}");
        }
    }

    #[test]
    fn secret_file_paths_must_be_plain_and_hide_nothing() {
        check_secret_files(&files(&["/etc/app/token", "/workspace/cfg"]), None).unwrap();
        for (paths, working_dir, bad, message) in [
            (&["relative"][..], None, "relative", "absolute"),
            (&["/"][..], None, "/", "absolute"),
            (&["/etc/../x"][..], None, "/etc/../x", "absolute"),
            (&["/a//b"][..], None, "/a//b", "absolute"),
            (&["/proc/self/x"][..], None, "/proc/self/x", "/proc"),
            (
                &["/data"][..],
                Some("/data/run"),
                "/data",
                "working directory",
            ),
            (
                &["/etc/app", "/etc/app/x"][..],
                None,
                "/etc/app",
                "secret file",
            ),
        ] {
            let err = check_secret_files(&files(paths), working_dir).unwrap_err();
            assert_eq!(err.field(), format!("secret_files[\"{bad}\"]"), "{err}");
            assert!(err.message().contains(message), "{err}");
        }
    }

    #[test]
    fn within_compares_whole_parts() {
        assert!(is_within(
            "/var/run/secrets/hodei/token",
            "/var/run/secrets/hodei"
        ));
        assert!(is_within("/tmp", "/tmp"));
        assert!(!is_within("/tmpfoo", "/tmp"));
        assert!(is_within("/anything", "/"));
    }
}
