//! Jobs and clients ride through a server that is killed and started again: the job
//! keeps running on its local worker, which re-attaches to the new server process;
//! `hodei run` and `hodei logs -f` reconnect, resume after the last chunk they printed,
//! print each byte once, and exit with the job's outcome. A worker whose server never
//! comes back gives up after its reconnect window and kills its job.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    io::Read,
    process::{Child, Command, Stdio},
    time::Duration,
};

use hodei_test_fixtures::blocking::wait_until;
use support::{HODEI, Server, WORKER, free_port, text};

/// The exit code of the job `hodei run` follows.
const RUN_EXIT: i32 = 3;

/// Prints `line 0` to `line 399`, one every 10 ms.
const NUMBERED_LINES: &str =
    "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); sleep 0.01; done";

fn hodei(url: &str, args: &[&str]) -> Child {
    Command::new(HODEI)
        .args(args)
        .env("HODEI_SERVER_URL", url)
        .env("HODEI_RECONNECT_WINDOW", "60s")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit; its exit code, stdout and stderr.
fn finish(mut child: Child) -> (Option<i32>, String, String) {
    let status = wait_until(Duration::from_secs(90), "the CLI exits", || {
        child.try_wait().unwrap()
    })
    .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status.code(), stdout, stderr)
}

/// Exactly the lines `line 0` to `line 399`, each once and in order.
fn assert_every_line_once(output: &str) {
    let expected: String = (0..400).map(|n| format!("line {n}\n")).collect();
    assert!(output == expected, "got:\n{output}");
}

#[test]
fn run_and_logs_follow_print_each_byte_once_across_a_killed_and_restarted_server() {
    let dir = tempfile::tempdir().unwrap();
    let (port, worker_port) = (free_port(), free_port());
    let env = [("HODEI_WORKER_BIN", WORKER.to_owned())];
    let server = Server::start_with_ports(dir.path(), port, worker_port, &env);
    let url = server.url();

    let detached = server.hodei(&["run", "--detach", "--", "sh", "-c", NUMBERED_LINES]);
    assert!(detached.status.success(), "{}", text(&detached.stderr));
    let followed_id = text(&detached.stdout).trim().to_owned();
    let follower = hodei(&url, &["logs", "-f", &followed_id]);
    let exiting = format!("{NUMBERED_LINES}; exit {RUN_EXIT}");
    let runner = hodei(&url, &["run", "--", "sh", "-c", &exiting]);
    wait_until(Duration::from_secs(30), "both jobs have printed", || {
        let listed: serde_json::Value =
            serde_json::from_slice(&server.hodei(&["list", "-o", "json"]).stdout).unwrap();
        let jobs = listed["jobs"].as_array().unwrap();
        (jobs.len() == 2
            && jobs.iter().all(|job| {
                let id = job["id"].as_str().unwrap();
                text(&server.hodei(&["logs", id]).stdout).contains("line 20\n")
            }))
        .then_some(())
    })
    .unwrap();

    server.kill();
    std::thread::sleep(Duration::from_millis(500));
    let server = Server::start_with_ports(dir.path(), port, worker_port, &env);

    let (code, followed, stderr) = finish(follower);
    assert_eq!(code, Some(0), "{stderr}");
    let stored = text(&server.hodei(&["logs", &followed_id]).stdout);
    assert_every_line_once(&stored);
    assert_eq!(
        followed, stored,
        "logs -f printed the stored log exactly once"
    );

    let (code, ran, stderr) = finish(runner);
    let listed: serde_json::Value =
        serde_json::from_slice(&server.hodei(&["list", "-o", "json"]).stdout).unwrap();
    let run_job = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["id"] != followed_id.as_str())
        .unwrap()
        .clone();
    let stored = text(
        &server
            .hodei(&["logs", run_job["id"].as_str().unwrap()])
            .stdout,
    );
    assert_every_line_once(&stored);
    assert_eq!(ran, stored, "run printed the stored log exactly once");
    assert_eq!(run_job["state"]["phase"], "failed", "{run_job}");
    assert_eq!(run_job["state"]["reason"]["kind"], "exit", "{run_job}");
    assert_eq!(code, Some(RUN_EXIT), "{stderr}");
    let followed_job = server.job(&followed_id);
    assert_eq!(
        followed_job["state"]["phase"], "succeeded",
        "{followed_job}"
    );
    server.stop();
}

#[test]
fn a_worker_whose_server_never_returns_kills_its_job_and_the_next_server_marks_it_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (port, worker_port) = (free_port(), free_port());
    let env = [
        ("HODEI_WORKER_BIN", WORKER.to_owned()),
        ("HODEI_RECONNECT_WINDOW", "3s".to_owned()),
        // The lost worker's job ends; it is not run again.
        ("HODEI_INFRA_RETRIES", "0".to_owned()),
    ];
    let server = Server::start_with_ports(dir.path(), port, worker_port, &env);
    let script = "echo started $$; exec sleep 1000";
    let detached = server.hodei(&["run", "--detach", "--", "sh", "-c", script]);
    assert!(detached.status.success(), "{}", text(&detached.stderr));
    let id = text(&detached.stdout).trim().to_owned();
    let job_pid: i32 = wait_until(Duration::from_secs(30), "the job runs", || {
        text(&server.hodei(&["logs", &id]).stdout)
            .strip_prefix("started ")
            .and_then(|pid| pid.trim().parse().ok())
    })
    .unwrap();

    server.kill();
    wait_until(
        Duration::from_secs(30),
        "the worker gives up and kills its job",
        || (!std::path::Path::new(&format!("/proc/{job_pid}")).exists()).then_some(()),
    )
    .unwrap();

    let server = Server::start_with_ports(dir.path(), port, worker_port, &env);
    let job = wait_until(Duration::from_secs(30), "the job ends", || {
        let job = server.job(&id);
        (job["state"]["phase"] != "running").then_some(job)
    })
    .unwrap();
    assert_eq!(job["state"]["reason"]["kind"], "worker_lost", "{job}");
    assert_eq!(
        text(&server.hodei(&["logs", &id]).stdout),
        format!("started {job_pid}\n")
    );
    server.stop();
}
