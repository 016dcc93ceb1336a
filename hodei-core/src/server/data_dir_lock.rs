//! One server per data directory: an exclusive OS file lock, held for the server's life.
//!
//! The lock is `flock(2)` on `<data dir>/lock`, so the kernel releases it when the holder's
//! file is closed, also when the process is killed: a crash never leaves a stale lock.

use std::{
    fmt,
    fs::{File, TryLockError},
    io::{self, Read, Seek, SeekFrom, Write},
    path::Path,
};

use super::ServerError;

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = "lock";
/// Most bytes of a lock file read to name its holder; the holder writes far fewer.
const MAX_HOLDER_BYTES: u64 = 1024;
/// Most characters of a host name shown from a lock file.
const MAX_HOST_CHARS: usize = 255;

/// The process that holds a data directory, as its lock file names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockHolder {
    /// Its process id, when the lock file names one.
    pub pid: Option<u32>,
    /// The name of its host, when the lock file names one.
    pub host: Option<String>,
}

impl fmt::Display for LockHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.host) {
            (Some(pid), Some(host)) => write!(f, "pid {pid} on host {host}"),
            (Some(pid), None) => write!(f, "pid {pid} on an unknown host"),
            (None, _) => f.write_str("another process (its lock file does not name it yet)"),
        }
    }
}

impl LockHolder {
    /// This process.
    fn this_process() -> Self {
        Self {
            pid: Some(std::process::id()),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|host| host.into_string().ok()),
        }
    }

    /// The lock file's content: `pid=<pid>` and `host=<name>` lines.
    fn to_text(&self) -> String {
        let mut text = String::new();
        if let Some(pid) = self.pid {
            text.push_str(&format!("pid={pid}\n"));
        }
        if let Some(host) = &self.host {
            text.push_str(&format!("host={host}\n"));
        }
        text
    }

    /// Reads what [`to_text`](Self::to_text) wrote; anything else is ignored, and a host
    /// name is cut to printable characters, so a damaged file cannot garble the message.
    fn parse(text: &str) -> Self {
        let mut holder = Self::default();
        for line in text.lines() {
            match line.split_once('=') {
                Some(("pid", pid)) => holder.pid = pid.trim().parse().ok(),
                Some(("host", host)) => {
                    let host: String = host
                        .trim()
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_HOST_CHARS)
                        .collect();
                    holder.host = (!host.is_empty()).then_some(host);
                }
                _ => {}
            }
        }
        holder
    }
}

/// The exclusive lock on a data directory; dropping it releases the directory.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    /// Closing this file releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Locks `dir` (which must exist) without waiting and writes this process's pid and
    /// host name into the lock file. Fails with [`ServerError::DataDirInUse`], naming the
    /// holder, when another process (or another server in this one) holds it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, ServerError> {
        let path = dir.join(LOCK_FILE);
        let lock_error = |source| ServerError::LockFile {
            path: path.clone(),
            source,
        };
        // No truncation before the lock is ours: the file names the current holder.
        let mut file = crate::private_fs::file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_error)?;
        crate::private_fs::tighten(&path);
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ServerError::DataDirInUse {
                    dir: dir.to_owned(),
                    holder: read_holder(&mut file),
                });
            }
            Err(TryLockError::Error(source)) => return Err(lock_error(source)),
        }
        write_holder(&mut file, &LockHolder::this_process()).map_err(lock_error)?;
        Ok(Self { _file: file })
    }
}

/// The holder named in `file`; unknown fields when it cannot be read.
fn read_holder(file: &mut File) -> LockHolder {
    let mut text = String::new();
    match file.take(MAX_HOLDER_BYTES).read_to_string(&mut text) {
        Ok(_) => LockHolder::parse(&text),
        Err(_) => LockHolder::default(),
    }
}

fn write_holder(file: &mut File, holder: &LockHolder) -> io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(holder.to_text().as_bytes())?;
    file.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::private_fs::tests::mode_of;

    fn lock_file(dir: &Path) -> std::path::PathBuf {
        dir.join(LOCK_FILE)
    }

    #[test]
    fn a_second_lock_on_a_directory_is_refused_naming_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(mode_of(&lock_file(dir.path())), 0o600);

        let refused = DataDirLock::acquire(dir.path()).unwrap_err();
        let ServerError::DataDirInUse { dir: named, holder } = &refused else {
            panic!("expected DataDirInUse, got {refused:?}");
        };
        assert_eq!(named, dir.path());
        assert_eq!(*holder, LockHolder::this_process());
        let host = holder.host.as_deref().unwrap();
        assert_eq!(
            refused.to_string(),
            format!(
                "data directory {} is in use by pid {} on host {host}",
                dir.path().display(),
                std::process::id()
            )
        );
        // The refused attempt left the holder's record alone.
        let text = std::fs::read_to_string(lock_file(dir.path())).unwrap();
        assert_eq!(LockHolder::parse(&text), LockHolder::this_process());

        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn a_lock_file_left_behind_does_not_lock_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(lock_file(dir.path()), "pid=1\nhost=elsewhere\n").unwrap();
        DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(lock_file(dir.path())).unwrap();
        assert_eq!(
            text,
            format!(
                "pid={}\nhost={}\n",
                std::process::id(),
                LockHolder::this_process().host.unwrap()
            )
        );
    }

    #[test]
    fn a_damaged_lock_file_names_no_holder_and_no_control_characters() {
        assert_eq!(LockHolder::parse("garbage"), LockHolder::default());
        assert_eq!(
            LockHolder::default().to_string(),
            "another process (its lock file does not name it yet)"
        );
        let holder = LockHolder::parse("pid=12\nhost=a\u{1b}[2Jb\n");
        assert_eq!(holder.to_string(), "pid 12 on host a[2Jb");
        let long = format!("host={}", "h".repeat(1000));
        assert_eq!(LockHolder::parse(&long).host.unwrap().len(), MAX_HOST_CHARS);
    }
}
