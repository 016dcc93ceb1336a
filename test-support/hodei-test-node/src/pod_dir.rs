//! The per-pod directory on the host: scratch working dir, output log, pid file.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `<work_dir>/pods/<namespace>_<name>_<uid>/`.
#[derive(Debug, Clone)]
pub(crate) struct PodDir {
    root: PathBuf,
}

impl PodDir {
    /// Creates the directory and its `scratch/` working dir.
    pub(crate) fn create(work_dir: &Path, namespace: &str, name: &str, uid: &str) -> Result<Self> {
        let root = work_dir
            .join("pods")
            .join(format!("{namespace}_{name}_{uid}"));
        let dir = Self { root };
        std::fs::create_dir_all(dir.scratch())
            .map_err(|e| Error::io(format!("creating {}", dir.scratch().display()), e))?;
        Ok(dir)
    }

    /// Working dir (and HOME) of a container whose own working dir does not
    /// exist on this host.
    pub(crate) fn scratch(&self) -> PathBuf {
        self.root.join("scratch")
    }

    /// Combined stdout and stderr of the container.
    pub(crate) fn log(&self) -> PathBuf {
        self.root.join("output.log")
    }

    /// Process-group id of the running container, so `down.sh` can reap
    /// containers of an agent that was killed without cleaning up.
    pub(crate) fn pid_file(&self) -> PathBuf {
        self.root.join("pid")
    }

    /// Deletes the scratch dir; the log stays for post-mortems.
    pub(crate) fn remove_scratch(&self) {
        if let Err(error) = std::fs::remove_dir_all(self.scratch())
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(%error, dir = %self.scratch().display(), "could not remove scratch dir");
        }
    }
}
