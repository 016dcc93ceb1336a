//! Scratch directories: a job's own (its home, and where it runs unless it names a
//! directory), and a local worker's (under which its job's goes); created empty and
//! private, removed with all they hold when dropped.

use std::{
    fs::DirBuilder,
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use tracing::warn;

/// A fresh directory, removed with everything in it when dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<prefix><random>` with mode 0700 under `base` (created if missing), or
    /// under the system's temp dir when `base` is `None`. The name is new, so nothing
    /// prepared in a shared base (a symlink, another user's directory) is ever used.
    pub fn create(base: Option<&Path>, prefix: &str) -> io::Result<Self> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        std::fs::create_dir_all(&base)?;
        let path = base.join(format!("{prefix}{}", uuid::Uuid::new_v4().simple()));
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self { path })
    }

    /// Takes charge of `path`, a scratch directory made earlier (by an earlier server
    /// process): it is removed when dropped.
    pub fn adopt(path: PathBuf) -> Self {
        Self { path }
    }

    /// Leaves the directory where it is: it is not removed.
    pub fn keep(self) -> PathBuf {
        let mut this = std::mem::ManuallyDrop::new(self);
        std::mem::take(&mut this.path)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Gives the owner full access to `dir` and every directory below it (symlinks are
/// not followed), so a job that made its files read-only cannot keep them.
fn open_up(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            open_up(&entry.path());
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let removed = std::fs::remove_dir_all(&self.path).or_else(|first| {
            if first.kind() == io::ErrorKind::PermissionDenied {
                open_up(&self.path);
                std::fs::remove_dir_all(&self.path)
            } else {
                Err(first)
            }
        });
        match removed {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                warn!(dir = %self.path.display(), %error, "cannot remove the job's scratch directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scratch_dir_is_new_private_and_removed_with_its_content() {
        let base = tempfile::tempdir().unwrap();
        let nested = base.path().join("missing/base");
        let first = ScratchDir::create(Some(&nested), "hodei-job-").unwrap();
        let second = ScratchDir::create(Some(&nested), "hodei-job-").unwrap();
        assert_ne!(first.path(), second.path());
        assert!(first.path().starts_with(&nested));
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        let sub = first.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("file"), b"x").unwrap();
        std::fs::create_dir(sub.join("locked")).unwrap();
        std::fs::write(sub.join("locked/file"), b"x").unwrap();
        std::fs::set_permissions(sub.join("locked"), std::fs::Permissions::from_mode(0o500))
            .unwrap();
        let path = first.path().to_owned();
        drop(first);
        assert!(!path.exists());
        assert!(second.path().exists());
    }

    #[test]
    fn without_a_base_it_goes_to_the_temp_dir() {
        let scratch = ScratchDir::create(None, "hodei-job-").unwrap();
        assert!(scratch.path().starts_with(std::env::temp_dir()));
    }
}
