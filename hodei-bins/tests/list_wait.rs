//! `hodei list` with filters and pages, and `hodei wait` with its exit codes, against the
//! real binaries.

#![allow(clippy::unwrap_used)]

mod support;

use std::{path::Path, process::Output, time::Duration};

use hodei_test_fixtures::blocking::wait_until;
use serde_json::Value;
use support::{Server, WORKER, text};

/// A server with the local provider and a short kill grace.
fn local_server(data_dir: &Path) -> Server {
    Server::start(
        data_dir,
        &[
            ("HODEI_WORKER_BIN", WORKER.to_owned()),
            ("HODEI_KILL_GRACE", "2s".to_owned()),
        ],
    )
}

/// `hodei list -o json args`: the ids listed and the next page token.
fn listed(server: &Server, args: &[&str]) -> (Vec<String>, String) {
    let mut all = vec!["list", "-o", "json"];
    all.extend_from_slice(args);
    let out = server.hodei(&all);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, page["next_page_token"].as_str().unwrap().to_owned())
}

fn detached(server: &Server, args: &[&str]) -> String {
    let mut all = vec!["run", "--detach"];
    all.extend_from_slice(args);
    let out = server.hodei(&all);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

fn ran(out: &Output) -> i32 {
    out.status.code().unwrap()
}

#[test]
fn list_selects_by_state_label_owner_and_time_and_pages_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path());
    assert_eq!(
        ran(&server.hodei(&["run", "-l", "team=a", "--", "true"])),
        0
    );
    assert_eq!(
        ran(&server.hodei(&["run", "-l", "team=b", "--", "true"])),
        0
    );
    let sleeping = detached(&server, &["-l", "team=a", "--", "sleep", "60"]);
    wait_until(Duration::from_secs(20), "the job runs", || {
        listed(&server, &["--state", "running"]).0 == [sleeping.clone()]
    })
    .unwrap();

    let (all, token) = listed(&server, &[]);
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], sleeping, "newest first");
    assert_eq!(token, "", "no page follows");
    let (team_a, _) = listed(&server, &["-l", "team=a"]);
    assert_eq!(team_a, [all[0].clone(), all[2].clone()]);
    let (done_a, _) = listed(&server, &["-l", "team=a", "--state", "succeeded"]);
    assert_eq!(done_a, [all[2].clone()]);
    let (either, _) = listed(
        &server,
        &[
            "--state",
            "running",
            "--state",
            "succeeded",
            "-l",
            "team!=a",
        ],
    );
    assert_eq!(either, [all[1].clone()]);
    assert_eq!(
        listed(&server, &["--owner", "me"]).0,
        all,
        "an open server's caller owns them"
    );
    assert!(listed(&server, &["--owner", "someone-else"]).0.is_empty());
    assert_eq!(
        listed(&server, &["--created-after", "2020-01-01T00:00:00Z"]).0,
        all
    );
    assert!(
        listed(&server, &["--created-before", "2020-01-01T00:00:00+02:00"])
            .0
            .is_empty()
    );

    // One job per page: three pages, each job once, newest first.
    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let mut args = vec!["--limit", "1"];
        if !token.is_empty() {
            args.extend(["--page-token", token.as_str()]);
        }
        let (ids, next) = listed(&server, &args);
        paged.extend(ids);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(paged, all);
    let table = server.hodei(&["list", "--limit", "1"]);
    assert!(
        text(&table.stderr).contains("--page-token "),
        "the table says how to go on: {}",
        text(&table.stderr)
    );

    let bad = server.hodei(&["list", "-l", "team in ()"]);
    assert_eq!(ran(&bad), 125);
    assert!(
        text(&bad.stderr).contains("invalid label_selector"),
        "{}",
        text(&bad.stderr)
    );
    let bad = server.hodei(&["list", "--page-token", "nope"]);
    assert_eq!(ran(&bad), 125);
    assert!(
        text(&bad.stderr).contains("invalid page_token"),
        "{}",
        text(&bad.stderr)
    );
    assert_eq!(ran(&server.hodei(&["list", "--state", "sleeping"])), 2);
    assert_eq!(
        ran(&server.hodei(&["list", "--created-after", "yesterday"])),
        2
    );

    assert_eq!(ran(&server.hodei(&["cancel", &sleeping])), 0);
    server.stop();
}

#[test]
fn wait_exits_with_the_jobs_code_or_its_own_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = local_server(dir.path());
    let failing = detached(&server, &["--", "sh", "-c", "sleep 1; exit 3"]);
    let waited = server.hodei(&["wait", &failing]);
    assert_eq!(ran(&waited), 3, "{}", text(&waited.stderr));
    assert_eq!(text(&waited.stdout), "", "wait prints no output of the job");
    let again = server.hodei(&["wait", &failing]);
    assert_eq!(ran(&again), 3, "a job that already ended answers at once");

    let sleeping = detached(&server, &["--", "sleep", "60"]);
    let timed_out = server.hodei(&["wait", "--timeout", "1s", &sleeping]);
    assert_eq!(ran(&timed_out), 122, "{}", text(&timed_out.stderr));
    assert!(
        text(&timed_out.stderr).contains("stopped waiting"),
        "{}",
        text(&timed_out.stderr)
    );
    assert_eq!(
        server.job(&sleeping)["state"]["phase"],
        "running",
        "the job goes on"
    );
    assert_eq!(ran(&server.hodei(&["cancel", &sleeping])), 0);
    let cancelled = server.hodei(&["wait", "--timeout", "30s", &sleeping]);
    assert_eq!(ran(&cancelled), 123, "{}", text(&cancelled.stderr));

    let unknown = server.hodei(&["wait", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(ran(&unknown), 125, "{}", text(&unknown.stderr));
    server.stop();
}
