//! A job's own scratch directory: its home, and where it runs unless it names a
//! directory; created empty and private, removed when the job ends.

use std::{
    fs::DirBuilder,
    io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
};

use tracing::warn;

/// A fresh directory, removed with everything in it when dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `hodei-job-<random>` with mode 0700 under `base` (created if missing), or
    /// under the system's temp dir when `base` is `None`. The name is new, so nothing
    /// prepared in a shared base (a symlink, another user's directory) is ever used.
    pub fn create(base: Option<&Path>) -> io::Result<Self> {
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        std::fs::create_dir_all(&base)?;
        let path = base.join(format!("hodei-job-{}", uuid::Uuid::new_v4().simple()));
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self { path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
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
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn each_scratch_dir_is_new_private_and_removed_with_its_content() {
        let base = tempfile::tempdir().unwrap();
        let nested = base.path().join("missing/base");
        let first = ScratchDir::create(Some(&nested)).unwrap();
        let second = ScratchDir::create(Some(&nested)).unwrap();
        assert_ne!(first.path(), second.path());
        assert!(first.path().starts_with(&nested));
        let mode = std::fs::metadata(first.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        std::fs::create_dir(first.path().join("sub")).unwrap();
        std::fs::write(first.path().join("sub/file"), b"x").unwrap();
        let path = first.path().to_owned();
        drop(first);
        assert!(!path.exists());
        assert!(second.path().exists());
    }

    #[test]
    fn without_a_base_it_goes_to_the_temp_dir() {
        let scratch = ScratchDir::create(None).unwrap();
        assert!(scratch.path().starts_with(std::env::temp_dir()));
    }
}
