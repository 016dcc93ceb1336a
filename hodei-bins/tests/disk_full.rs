//! A data directory that fills up: the real binaries, with the data directory on a small
//! tmpfs. The job that fills it ends with a clear reason, reads keep working, new jobs are
//! refused, and after space is freed and the server restarted nothing earlier is lost.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use hodei_test_fixtures::blocking::wait_until;
use support::{HODEI, Server, WORKER, text};

/// Size of the tmpfs the data directory lives on.
const TMPFS_SIZE: &str = "64m";
/// Space taken before the server starts, given back before the restart.
const BALLAST_BYTES: usize = 8 << 20;
/// The server's free-disk floor on that tmpfs.
const MIN_FREE_DISK: &str = "24Mi";
/// How many clients follow the job that fills the disk.
const FOLLOWERS: usize = 5;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    _root: tempfile::TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        use nix::mount::{MsFlags, mount};
        let root = tempfile::tempdir().unwrap();
        let mount_point = root.path().join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        mount(
            Some("hodei-test"),
            &mount_point,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap();
        Self {
            _root: root,
            mount: mount_point,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn server(data_dir: &Path, log_dir: &Path) -> Server {
    Server::start_logging_to(
        data_dir,
        log_dir,
        &[
            ("HODEI_WORKER_BIN", WORKER.to_owned()),
            ("HODEI_MIN_FREE_DISK", MIN_FREE_DISK.to_owned()),
            ("HODEI_KILL_GRACE", "2s".to_owned()),
        ],
    )
}

/// `hodei logs -f id` with its output thrown away and its errors kept.
fn follower(server: &Server, id: &str) -> Child {
    Command::new(HODEI)
        .args(["logs", "-f", id])
        .env("HODEI_SERVER_URL", server.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn phase(server: &Server, id: &str) -> String {
    server.job(id)["state"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_job_that_fills_the_data_directory_ends_clearly_and_nothing_earlier_is_lost() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let tmpfs = Tmpfs::mount(TMPFS_SIZE);
    let data_dir = tmpfs.mount.join("data");
    let ballast = tmpfs.mount.join("ballast");
    std::fs::write(&ballast, vec![1u8; BALLAST_BYTES]).unwrap();

    let first = server(&data_dir, logs.path());
    let earlier = first.hodei(&["run", "--", "echo", "written before the disk filled"]);
    assert_eq!(earlier.status.code(), Some(0), "{}", text(&earlier.stderr));
    let listed = first.hodei(&["list", "-o", "json"]);
    let earlier_id = serde_json::from_slice::<serde_json::Value>(&listed.stdout).unwrap()["jobs"]
        [0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let submitted = first.hodei(&["run", "--detach", "--", "yes"]);
    assert!(submitted.status.success(), "{}", text(&submitted.stderr));
    let filler = text(&submitted.stdout).trim().to_owned();
    let mut followers: Vec<Child> = (0..FOLLOWERS).map(|_| follower(&first, &filler)).collect();

    wait_until(Duration::from_secs(120), "the filling job ends", || {
        let phase = phase(&first, &filler);
        (!matches!(phase.as_str(), "queued" | "provisioning" | "running")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; server log:\n{}", first.log()));
    let job = first.job(&filler);
    assert_eq!(job["state"]["phase"], "failed", "{job}");
    assert_eq!(job["state"]["reason"]["kind"], "disk_full", "{job}");

    // Every follower gets to the end of the job and stops.
    for follower in &mut followers {
        wait_until(Duration::from_secs(60), "a follower ends", || {
            follower.try_wait().unwrap()
        })
        .unwrap();
    }

    // Reads keep working: the list, both jobs, the earlier job's log.
    let listed = first.hodei(&["list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let log = first.hodei(&["logs", &earlier_id]);
    assert_eq!(text(&log.stdout), "written before the disk filled\n");
    // New jobs are refused, naming the floor.
    let refused = first.hodei(&["run", "--", "true"]);
    assert_eq!(refused.status.code(), Some(125));
    let message = text(&refused.stderr);
    assert!(message.contains("HODEI_MIN_FREE_DISK"), "{message}");
    assert!(message.contains("not enough free disk"), "{message}");
    // No job stays running.
    let all: serde_json::Value =
        serde_json::from_slice(&first.hodei(&["list", "-o", "json"]).stdout).unwrap();
    for job in all["jobs"].as_array().unwrap() {
        let phase = job["state"]["phase"].as_str().unwrap();
        assert!(
            !matches!(phase, "queued" | "provisioning" | "running"),
            "{job}"
        );
    }
    first.stop();

    // Space comes back; after a restart everything written before is there.
    std::fs::remove_file(&ballast).unwrap();
    let second = server(&data_dir, logs.path());
    let log = second.hodei(&["logs", &earlier_id]);
    assert_eq!(text(&log.stdout), "written before the disk filled\n");
    let job = second.job(&filler);
    assert_eq!(job["state"]["reason"]["kind"], "disk_full", "{job}");
    let output = second.hodei(&["logs", &filler]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        output.stdout.len() > 1 << 20,
        "{} bytes",
        output.stdout.len()
    );
    // Whole lines of `yes`, cut only at the end.
    let body = &output.stdout[..output.stdout.len() - output.stdout.len() % 2];
    assert!(
        body.chunks(2).all(|line| line == b"y\n"),
        "the log is corrupt"
    );
    let after = second.hodei(&["run", "--", "echo", "room again"]);
    assert_eq!(
        text(&after.stdout),
        "room again\n",
        "{}",
        text(&after.stderr)
    );
    second.stop();
}
