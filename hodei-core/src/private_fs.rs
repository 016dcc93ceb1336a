//! Private files and directories: what the server keeps is readable by its own user only.

use std::{
    fs::{DirBuilder, File, OpenOptions, Permissions},
    io,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::Path,
};

use tracing::warn;

/// Mode of every directory the server creates for its data.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file the server creates in its data directory.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700, and tightens an existing `dir`
/// this user owns. One it cannot tighten is used as it is, with a warning.
pub(crate) fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    tighten(dir);
    Ok(())
}

/// Options that create a file with mode 0600; add the access mode.
pub(crate) fn file_options() -> OpenOptions {
    let mut options = File::options();
    options.mode(FILE_MODE);
    options
}

/// Takes group and other permissions away from an existing `path` this user owns.
/// A missing path is fine; any other failure is a warning, not an error, so a data
/// directory on a file system without modes still works.
pub(crate) fn tighten(path: &Path) {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(error) => {
            warn!(path = %path.display(), %error, "cannot check the permissions of a data path");
            return;
        }
    };
    if meta.mode() & 0o077 == 0 {
        return;
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        warn!(
            path = %path.display(),
            owner = meta.uid(),
            "a data path belongs to another user and is open to others; leaving it as it is"
        );
        return;
    }
    let tightened = meta.mode() & 0o700;
    if let Err(error) = std::fs::set_permissions(path, Permissions::from_mode(tightened)) {
        warn!(path = %path.display(), %error, "cannot make a data path private");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The permission bits of `path`.
    pub(crate) fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_directory_and_its_new_parents_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&root.path().join("a")), 0o700);
    }

    #[test]
    fn an_existing_open_directory_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), Permissions::from_mode(0o755)).unwrap();
        create_dir(root.path()).unwrap();
        assert_eq!(mode_of(root.path()), 0o700);
    }

    #[test]
    fn a_new_file_is_private_and_an_old_one_is_tightened() {
        let root = tempfile::tempdir().unwrap();
        let new = root.path().join("new");
        file_options().create(true).append(true).open(&new).unwrap();
        assert_eq!(mode_of(&new), 0o600);

        let old = root.path().join("old");
        std::fs::write(&old, b"x").unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        tighten(&old);
        assert_eq!(mode_of(&old), 0o600);
        tighten(&root.path().join("missing"));
    }
}
