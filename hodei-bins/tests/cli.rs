//! The real binaries end to end: `hodei`, `hodei-server-bin` and `hodei-worker-bin`.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use hodei_test_fixtures::blocking::wait_until;
use support::{HODEI, Server, WORKER, metric, text};

fn hodei(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(HODEI)
        .args(args)
        .env("HODEI_DATA_DIR", data_dir)
        .env("HODEI_WORKER_BIN", WORKER)
        .env_remove("HODEI_SERVER_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// A server with the local provider and a short kill grace, plus `env`.
fn local_server(data_dir: &Path, env: &[(&str, String)]) -> Server {
    let mut all = vec![
        ("HODEI_WORKER_BIN", WORKER.to_owned()),
        ("HODEI_KILL_GRACE", "2s".to_owned()),
    ];
    all.extend_from_slice(env);
    Server::start(data_dir, &all)
}

#[test]
fn embedded_run_streams_both_streams_and_returns_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = hodei(
        dir.path(),
        &[
            "--embedded",
            "run",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).starts_with("err\n"),
        "stderr: {}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn a_signal_maps_to_128_plus_n_and_a_timeout_to_124() {
    let dir = tempfile::tempdir().unwrap();
    let killed = hodei(
        dir.path(),
        &["--embedded", "run", "--", "sh", "-c", "kill -9 $$"],
    );
    assert_eq!(killed.status.code(), Some(137), "{}", text(&killed.stderr));
    let timed_out = hodei(
        dir.path(),
        &["--embedded", "run", "--timeout", "1s", "--", "sleep", "30"],
    );
    assert_eq!(
        timed_out.status.code(),
        Some(124),
        "{}",
        text(&timed_out.stderr)
    );
    assert!(
        text(&timed_out.stderr).contains("timed out"),
        "{}",
        text(&timed_out.stderr)
    );
    let missing = hodei(dir.path(), &["--embedded", "run", "--", "/no/such/command"]);
    assert_eq!(
        missing.status.code(),
        Some(127),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn bad_input_is_one_clear_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bad_memory = hodei(
        dir.path(),
        &["--embedded", "run", "--memory", "abc", "--", "true"],
    );
    assert_eq!(bad_memory.status.code(), Some(2));
    let stderr = text(&bad_memory.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("invalid memory") && stderr.contains("abc"),
        "{stderr}"
    );

    let bad_timeout = hodei(
        dir.path(),
        &["--embedded", "run", "--timeout", "0s", "--", "true"],
    );
    assert_eq!(bad_timeout.status.code(), Some(2));
    assert!(
        text(&bad_timeout.stderr).contains("invalid timeout"),
        "{}",
        text(&bad_timeout.stderr)
    );

    let unknown_provider = hodei(
        dir.path(),
        &["--embedded", "run", "--provider", "nomad", "--", "true"],
    );
    assert_eq!(unknown_provider.status.code(), Some(125));
    let stderr = text(&unknown_provider.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("provider") && stderr.contains("nomad"),
        "{stderr}"
    );

    for command in ["logs", "get", "cancel"] {
        let bad_id = hodei(dir.path(), &["--embedded", command, "not-an-id"]);
        assert_eq!(bad_id.status.code(), Some(2), "{command}");
        let stderr = text(&bad_id.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("invalid JOB") && stderr.contains("not-an-id"),
            "{stderr}"
        );
    }
}

#[test]
fn a_standing_server_runs_detached_jobs_cancels_them_and_keeps_them_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path(), &[]);

    let done = server.hodei(&[
        "run",
        "--name",
        "greeting",
        "--",
        "sh",
        "-c",
        "echo hello; echo bye >&2",
    ]);
    assert_eq!(done.status.code(), Some(0), "{}", text(&done.stderr));
    assert_eq!(text(&done.stdout), "hello\n");

    let detached = server.hodei(&[
        "run",
        "--detach",
        "--",
        "sh",
        "-c",
        "echo started; sleep 300",
    ]);
    assert_eq!(
        detached.status.code(),
        Some(0),
        "{}",
        text(&detached.stderr)
    );
    let id = text(&detached.stdout).trim().to_owned();
    assert_eq!(id.len(), 36, "--detach prints only the id: {id:?}");

    wait_until(Duration::from_secs(20), "the detached job printed", || {
        text(&server.hodei(&["logs", &id]).stdout) == "started\n"
    })
    .unwrap();
    let cancel = server.hodei(&["cancel", &id]);
    assert_eq!(cancel.status.code(), Some(0), "{}", text(&cancel.stderr));
    let followed = server.hodei(&["logs", "-f", &id]);
    assert_eq!(text(&followed.stdout), "started\n");

    let job = server.job(&id);
    assert_eq!(job["state"]["phase"], "cancelled", "{job}");

    let listed = text(&server.hodei(&["list"]).stdout);
    assert!(
        listed.contains(&id) && listed.contains("cancelled"),
        "{listed}"
    );

    server.stop();
    let server = local_server(dir.path(), &[]);
    let job = server.job(&id);
    assert_eq!(
        job["state"]["phase"], "cancelled",
        "state survives a restart: {job}"
    );
    assert_eq!(
        text(&server.hodei(&["logs", &id]).stdout),
        "started\n",
        "logs survive a restart"
    );
    server.stop();
}

#[test]
fn metrics_move_after_a_job_and_logs_can_be_json() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path(), &[("HODEI_LOG_FORMAT", "json".to_owned())]);
    let log_path = server.log_path();
    let before = server.metrics();
    assert!(before.contains("200 OK"), "{before}");
    let out = server.hodei(&["run", "--", "sh", "-c", "echo one; echo two"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let after = server.metrics();
    assert_eq!(
        metric(&after, "hodei_jobs_submitted_total"),
        metric(&before, "hodei_jobs_submitted_total") + 1.0
    );
    assert_eq!(
        metric(&after, "hodei_jobs_finished_total{state=\"succeeded\""),
        1.0,
        "{after}"
    );
    assert_eq!(metric(&after, "hodei_output_lines_total"), 2.0, "{after}");
    assert_eq!(metric(&after, "hodei_output_bytes_total"), 8.0, "{after}");
    assert!(after.contains("hodei_job_start_phase_seconds"), "{after}");
    assert!(
        !after.contains(&text(&out.stdout)),
        "no job ids or output in labels"
    );
    server.stop();

    let logged = std::fs::read_to_string(&log_path).unwrap();
    let finished = logged
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
        })
        .find(|v| v["fields"]["message"] == "job finished")
        .unwrap_or_else(|| panic!("no 'job finished' line in {logged}"));
    assert!(
        finished["span"]["job.id"].is_string(),
        "spans carry job.id: {finished}"
    );
}
