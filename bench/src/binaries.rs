//! Where the release binaries under test are.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The programs a run uses.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `hodei-server-bin`.
    pub server: PathBuf,
    /// `hodei-worker-bin`.
    pub worker: PathBuf,
    /// `hodei` (only its size is reported; it may be missing).
    pub cli: PathBuf,
    /// This program, which is also the command of output jobs (`hodei-bench emit`).
    pub bench: PathBuf,
}

impl Binaries {
    /// `server` and `worker` when given, else the programs next to this one.
    pub fn locate(server: Option<&Path>, worker: Option<&Path>) -> anyhow::Result<Self> {
        let bench = std::env::current_exe().context("cannot find this program")?;
        let dir = bench.parent().unwrap_or(Path::new(".")).to_path_buf();
        let server = server.map_or_else(|| dir.join("hodei-server-bin"), Path::to_path_buf);
        let worker = worker.map_or_else(|| dir.join("hodei-worker-bin"), Path::to_path_buf);
        for path in [&server, &worker] {
            if !path.is_file() {
                bail!(
                    "{} not found; build it with `cargo build --release -p hodei-bins --no-default-features` \
                     or pass --server-bin/--worker-bin",
                    path.display()
                );
            }
        }
        let cli = server.with_file_name("hodei");
        Ok(Self {
            server: absolute(server)?,
            worker: absolute(worker)?,
            cli,
            bench,
        })
    }
}

fn absolute(path: PathBuf) -> anyhow::Result<PathBuf> {
    std::path::absolute(&path).with_context(|| format!("cannot resolve {}", path.display()))
}
