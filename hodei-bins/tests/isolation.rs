//! Local jobs are isolated from the server and from each other: the real binaries, with
//! the local provider.

#![allow(clippy::unwrap_used)]

mod support;

use std::{path::Path, time::Duration};

use hodei_test_fixtures::blocking::wait_until;
use support::{Server, WORKER, text};

/// A marker no other process has: this test process's id and a counter.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A server with the local provider and `env`, as a standalone server runs: as root,
/// its jobs run as nobody.
fn local_server(data_dir: &Path, env: &[(&str, String)]) -> Server {
    let mut all = vec![
        ("HODEI_WORKER_BIN", WORKER.to_owned()),
        ("HODEI_KILL_GRACE", "2s".to_owned()),
    ];
    all.extend_from_slice(env);
    Server::start(data_dir, &all)
}

/// Runs `script` with `sh -c` as a job until it ends; its stdout, after checking exit 0.
fn run(server: &Server, script: &str) -> String {
    let out = server.hodei(&["run", "--", "sh", "-c", script]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nserver log:\n{}",
        text(&out.stderr),
        server.log()
    );
    text(&out.stdout)
}

/// Whether a live process has `arg` among its arguments (a zombie has none).
fn alive_with_arg(arg: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
    })
}

/// Whether `text` holds 64 hex digits in a row, the shape of a worker token.
fn has_hex64(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .any(|run| run.len() >= 64)
}

#[test]
fn a_job_sees_neither_a_worker_token_nor_the_servers_environment() {
    let dir = tempfile::tempdir().unwrap();
    let hodei_marker = unique("hodei-marker-");
    let foo_marker = unique("foo-marker-");
    let server = local_server(
        dir.path(),
        &[
            ("HODEI_TEST_MARKER", hodei_marker.clone()),
            ("FOO_MARKER", foo_marker.clone()),
        ],
    );
    // Another job's worker is alive while the probe looks around.
    let other = server.hodei(&["run", "--detach", "--", "sh", "-c", "echo up; sleep 300"]);
    let other_id = text(&other.stdout).trim().to_owned();
    wait_until(Duration::from_secs(20), "the other job runs", || {
        text(&server.hodei(&["logs", &other_id]).stdout) == "up\n"
    })
    .unwrap();

    let own = run(&server, "env | cut -d= -f1");
    let readable = run(
        &server,
        "echo uid=$(id -u); for f in /proc/[0-9]*/environ; do \
         if tr '\\0' '\\n' < \"$f\" > /dev/null 2>&1; then echo \"read=$f\"; tr '\\0' '\\n' < \"$f\"; fi; \
         done",
    );
    let _ = server.hodei(&["cancel", &other_id]);
    server.stop();

    for name in own.lines() {
        assert!(
            ["PATH", "LANG", "HOME", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
            "the job sees {name}: {own}"
        );
    }
    assert!(
        readable.lines().any(|l| l.starts_with("read=")),
        "the probe reads at least its own environment: {readable}"
    );
    assert!(!readable.contains("HODEI_OTP_TOKEN"), "{readable}");
    assert!(!has_hex64(&readable), "a token-like value: {readable}");
    // The server and the workers hide their environment from processes of their user.
    for marker in [&hodei_marker, &foo_marker] {
        assert!(
            !readable.contains(marker.as_str()),
            "the job found {marker}: {readable}"
        );
    }
    assert!(
        !readable.contains("HODEI_WORKER_ID"),
        "the job read a worker's environment: {readable}"
    );
    if is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert!(
            readable.contains(&format!("uid={}\n", nobody.uid)),
            "a root server runs jobs as nobody: {readable}"
        );
    }
}

#[test]
fn processes_a_job_detached_from_its_group_end_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path(), &[]);
    let setsid = format!("3000.{}", unique(""));
    let double_fork = format!("3001.{}", unique(""));
    let out = run(
        &server,
        &format!(
            "setsid sleep {setsid} & (setsid sh -c 'sleep {double_fork} &' &); sleep 0.5; echo started"
        ),
    );
    assert_eq!(out, "started\n");
    wait_until(
        Duration::from_secs(10),
        "the detached sleeps are gone",
        || !alive_with_arg(&setsid) && !alive_with_arg(&double_fork),
    )
    .unwrap();
    server.stop();
}

#[test]
fn a_cancelled_job_takes_its_detached_processes_along() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path(), &[]);
    let marker = format!("3002.{}", unique(""));
    let detached = server.hodei(&[
        "run",
        "--detach",
        "--",
        "sh",
        "-c",
        &format!("setsid sleep {marker} & echo started; sleep 300"),
    ]);
    let id = text(&detached.stdout).trim().to_owned();
    wait_until(Duration::from_secs(20), "the job started", || {
        text(&server.hodei(&["logs", &id]).stdout) == "started\n" && alive_with_arg(&marker)
    })
    .unwrap();
    let cancel = server.hodei(&["cancel", &id]);
    assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    wait_until(
        Duration::from_secs(20),
        "the detached sleep is gone",
        || !alive_with_arg(&marker),
    )
    .unwrap();
    server.stop();
}

#[test]
fn each_job_runs_in_its_own_scratch_home_that_is_gone_afterwards() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path(), &[]);
    let script = "echo \"$(pwd) $HOME\"; touch file && echo writable";
    let first = run(&server, script);
    let second = run(&server, script);
    let dir_of = |out: &str| -> String {
        let line = out.lines().next().unwrap();
        let (pwd, home) = line.split_once(' ').unwrap();
        assert_eq!(pwd, home, "the scratch dir is the job's home: {out}");
        assert!(out.contains("writable"), "{out}");
        pwd.to_owned()
    };
    let (first, second) = (dir_of(&first), dir_of(&second));
    assert_ne!(first, second);
    for scratch in [first, second] {
        assert!(
            Path::new(&scratch)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("hodei-job-"),
            "{scratch}"
        );
        // The worker's own directory, around the job's, goes with the worker.
        let worker_dir = Path::new(&scratch).parent().unwrap().to_owned();
        assert!(
            worker_dir
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("hodei-worker-"),
            "{scratch}"
        );
        wait_until(
            Duration::from_secs(10),
            "the scratch and worker dirs are removed",
            || !Path::new(&scratch).exists() && !worker_dir.exists(),
        )
        .unwrap();
    }
    server.stop();
}

#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = local_server(&data, &[]);
    run(&server, "echo logged");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("logs")), 0o700);
    assert_eq!(mode(&data.join("jobs.db")), 0o600);
    for entry in std::fs::read_dir(data.join("logs")).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
    server.stop();
}

#[test]
fn with_a_uid_range_a_job_can_touch_neither_the_files_nor_the_environment_of_another() {
    if !is_root() {
        eprintln!("skipped: only root can run jobs as other uids");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(
        dir.path(),
        &[("HODEI_LOCAL_RUN_AS", "4200000-4200009".to_owned())],
    );
    let secret = unique("secret-");
    let first = server.hodei(&[
        "run",
        "--detach",
        "-e",
        &format!("SECRET={secret}"),
        "--",
        "sh",
        "-c",
        "echo \"$SECRET\" > \"$HOME/file\"; echo \"home=$HOME uid=$(id -u)\"; sleep 300",
    ]);
    let first_id = text(&first.stdout).trim().to_owned();
    let mut first_log = String::new();
    wait_until(Duration::from_secs(20), "the first job started", || {
        first_log = text(&server.hodei(&["logs", &first_id]).stdout);
        first_log.starts_with("home=")
    })
    .unwrap();
    let home = first_log
        .trim()
        .strip_prefix("home=")
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_owned();
    let probe = run(
        &server,
        &format!(
            "echo uid=$(id -u); cat {home}/file 2>/dev/null; ls {home} 2>/dev/null; \
             cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; true"
        ),
    );
    let _ = server.hodei(&["cancel", &first_id]);
    server.stop();
    assert!(!probe.contains(&secret), "{probe}");
    assert!(!probe.contains("file"), "{probe}");
    let uid_of = |text: &str| {
        text.split("uid=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
            .unwrap()
    };
    let (first_uid, probe_uid) = (uid_of(&first_log), uid_of(&probe));
    assert_ne!(first_uid, probe_uid);
    for uid in [first_uid, probe_uid] {
        let uid: u32 = uid.parse().unwrap();
        assert!((4_200_000..=4_200_009).contains(&uid), "{uid}");
    }
}

#[test]
fn an_embedded_server_runs_jobs_as_the_calling_user() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::HODEI)
        .args(["--embedded", "run", "--", "id", "-u"])
        .env("HODEI_DATA_DIR", dir.path())
        .env("HODEI_WORKER_BIN", WORKER)
        .env("HODEI_LOCAL_RUN_AS", "nobody")
        .env_remove("HODEI_SERVER_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        nix::unistd::geteuid().as_raw().to_string()
    );
}
