//! The static tokens file: one identity a line, only token hashes, re-read on change.
//!
//! ```text
//! # comment
//! sha256:<64 hex digits of SHA-256(token)> <name> <role>[,<role>...]
//! ```

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use super::{Identity, Permissions, Role, TokenDigest};

/// The largest tokens file read.
pub const MAX_FILE_LEN: u64 = 1024 * 1024;
/// How often, at most, the file's size and mtime are checked for a change.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why a tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("cannot read it")]
    Io(#[source] std::io::Error),
    /// The file is larger than [`MAX_FILE_LEN`].
    #[error("it is {len} bytes, more than the limit of {MAX_FILE_LEN}")]
    TooLarge {
        /// Its size.
        len: u64,
    },
    /// A line is invalid.
    #[error("line {line}: {field}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// `hash`, `name` or `role`, or `line` for the line as a whole.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    permissions: Permissions,
}

type Entries = HashMap<TokenDigest, Entry>;

/// The line to add to a tokens file for `token`, held by `name` with `roles`.
#[must_use]
pub fn token_line(token: &str, name: &str, roles: &[Role]) -> String {
    let roles: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
    format!(
        "sha256:{} {name} {}",
        hex::encode(super::digest(token)),
        roles.join(",")
    )
}

fn line_error(line: usize, field: &'static str, reason: impl Into<String>) -> TokenFileError {
    TokenFileError::Line {
        line,
        field,
        reason: reason.into(),
    }
}

/// Parses a whole tokens file.
fn parse(text: &str) -> Result<Entries, TokenFileError> {
    let mut entries = Entries::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let [hash, name, roles] = fields[..] else {
            return Err(line_error(
                line,
                "line",
                format!(
                    "expected `sha256:<hex> <name> <role>[,<role>...]`, found {} fields",
                    fields.len()
                ),
            ));
        };
        let digest = parse_hash(hash).map_err(|reason| line_error(line, "hash", reason))?;
        if name.len() > 256 || name.chars().any(char::is_control) {
            return Err(line_error(
                line,
                "name",
                "must be at most 256 printable characters",
            ));
        }
        let roles = roles
            .split(',')
            .map(str::parse::<Role>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| line_error(line, "role", e.to_string()))?;
        let entry = Entry {
            name: name.to_owned(),
            permissions: Permissions::from_roles(roles),
        };
        if entries.insert(digest, entry).is_some() {
            return Err(line_error(
                line,
                "hash",
                "the same token hash is on an earlier line",
            ));
        }
    }
    Ok(entries)
}

fn parse_hash(field: &str) -> Result<TokenDigest, String> {
    let hex_digits = field
        .strip_prefix("sha256:")
        .ok_or("must start with `sha256:`")?;
    let mut digest = [0; 32];
    hex::decode_to_slice(hex_digits, &mut digest)
        .map_err(|_| "must be `sha256:` and 64 hex digits".to_owned())?;
    Ok(digest)
}

/// What identifies one version of the file: its length and modification time.
type Stamp = (u64, Option<SystemTime>);

async fn read(path: &Path) -> Result<(Entries, Stamp), TokenFileError> {
    let metadata = tokio::fs::metadata(path)
        .await
        .map_err(TokenFileError::Io)?;
    let stamp = (metadata.len(), metadata.modified().ok());
    if metadata.len() > MAX_FILE_LEN {
        return Err(TokenFileError::TooLarge {
            len: metadata.len(),
        });
    }
    let bytes = tokio::fs::read(path).await.map_err(TokenFileError::Io)?;
    // The file may have grown between the two calls.
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(TokenFileError::TooLarge {
            len: bytes.len() as u64,
        });
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| TokenFileError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    Ok((parse(&text)?, stamp))
}

struct State {
    entries: Arc<Entries>,
    stamp: Stamp,
    checked_at: Instant,
}

/// A tokens file, loaded, and re-read when its size or mtime changes (checked at most
/// once per [`RELOAD_CHECK_INTERVAL`] when a token is looked up). A broken new version
/// keeps the last good one in use and logs a warning naming the line.
pub struct TokenFile {
    path: PathBuf,
    check_interval: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("path", &self.path)
            .field("identities", &self.state.lock().entries.len())
            .finish_non_exhaustive()
    }
}

impl TokenFile {
    /// Reads `path`; fails if it is missing, too large or invalid.
    pub async fn load(path: PathBuf) -> Result<Self, TokenFileError> {
        Self::load_checking_every(path, RELOAD_CHECK_INTERVAL).await
    }

    /// Like [`load`](Self::load), checking for changes at most every `check_interval`.
    pub async fn load_checking_every(
        path: PathBuf,
        check_interval: Duration,
    ) -> Result<Self, TokenFileError> {
        let (entries, stamp) = read(&path).await?;
        info!(path = %path.display(), identities = entries.len(), "tokens file loaded");
        Ok(Self {
            path,
            check_interval,
            state: Mutex::new(State {
                entries: Arc::new(entries),
                stamp,
                checked_at: Instant::now(),
            }),
        })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity holding the token with this digest, after a reload if one is due.
    pub(crate) async fn lookup(&self, digest: &TokenDigest) -> Option<Identity> {
        self.reload_if_changed().await;
        let entries = Arc::clone(&self.state.lock().entries);
        entries
            .get(digest)
            .map(|e| Identity::new(e.name.clone(), e.permissions))
    }

    async fn reload_if_changed(&self) {
        let known = {
            let mut state = self.state.lock();
            let now = Instant::now();
            if now.duration_since(state.checked_at) < self.check_interval {
                return;
            }
            // One caller checks; the others go on with what is loaded.
            state.checked_at = now;
            state.stamp
        };
        let current = match tokio::fs::metadata(&self.path).await {
            Ok(m) => (m.len(), m.modified().ok()),
            Err(error) => {
                warn!(path = %self.path.display(), %error, "cannot read the tokens file; keeping the tokens loaded before");
                return;
            }
        };
        if current == known {
            return;
        }
        match read(&self.path).await {
            Ok((entries, stamp)) => {
                info!(path = %self.path.display(), identities = entries.len(), "tokens file reloaded");
                let mut state = self.state.lock();
                state.entries = Arc::new(entries);
                state.stamp = stamp;
            }
            Err(error) => {
                warn!(path = %self.path.display(), error = %error, "the changed tokens file is invalid; keeping the tokens loaded before");
                // Don't re-read the same broken version on every check.
                self.state.lock().stamp = current;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_of(token: &str) -> String {
        format!("sha256:{}", hex::encode(super::super::digest(token)))
    }

    #[test]
    fn lines_parse_into_identities_and_comments_are_skipped() {
        let text = format!(
            "# people\n\n  {} alice submit\n{} ops read,admin  \n",
            hash_of("a"),
            hash_of("b")
        );
        let entries = parse(&text).unwrap();
        let alice = &entries[&super::super::digest("a")];
        assert_eq!(alice.name, "alice");
        assert_eq!(
            alice.permissions,
            Permissions {
                submit: true,
                ..Permissions::default()
            }
        );
        assert_eq!(
            entries[&super::super::digest("b")].permissions,
            Permissions::ALL
        );
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let good = format!("{} alice submit\n", hash_of("a"));
        for (text, line, field) in [
            (format!("{good}sha256:abc bob submit"), 2, "hash"),
            (
                format!("{good}md5:{} bob submit", "0".repeat(64)),
                2,
                "hash",
            ),
            (format!("# x\n{} bob writer", hash_of("b")), 2, "role"),
            (format!("{} bob", hash_of("b")), 1, "line"),
            (
                format!("{good}{} bob submit extra", hash_of("b")),
                2,
                "line",
            ),
            (format!("{good}{good}"), 2, "hash"),
        ] {
            match parse(&text) {
                Err(TokenFileError::Line {
                    line: l, field: f, ..
                }) => assert_eq!((l, f), (line, field), "{text}"),
                other => panic!("{text:?} must fail on line {line}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_token_line_parses_back_to_its_identity() {
        let line = token_line("s3cret", "ci", &[Role::Submit, Role::Read]);
        assert!(!line.contains("s3cret"));
        let entries = parse(&line).unwrap();
        let entry = &entries[&super::super::digest("s3cret")];
        assert_eq!(entry.name, "ci");
        assert!(entry.permissions.submit && entry.permissions.read_all);
        assert!(!entry.permissions.cancel_any);
    }

    #[tokio::test]
    async fn a_file_over_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, vec![b'#'; MAX_FILE_LEN as usize + 1]).unwrap();
        assert!(matches!(
            TokenFile::load(path).await,
            Err(TokenFileError::TooLarge { .. })
        ));
    }
}
