//! Tokens end to end with the real binaries: `hodei token new` makes a token and its
//! line; with the line in the server's tokens file the token runs jobs, without a token
//! the CLI says what to set.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use hodei_test_fixtures::{ServerCommand, ServerProcess, blocking::wait_until};
use support::{HODEI, SERVER, WORKER, free_port, metric, scrape, text};

/// `hodei args` against `url`, with `token` in HODEI_TOKEN when given and no token else.
fn hodei(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(HODEI);
    command
        .args(args)
        .env("HODEI_SERVER_URL", url)
        .env_remove("HODEI_TOKEN")
        .env_remove("HODEI_TOKEN_FILE")
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("HODEI_TOKEN", token);
    }
    command.output().unwrap()
}

fn new_token(name: &str, roles: &str) -> (String, String) {
    let out = Command::new(HODEI)
        .args(["token", "new", name, "--role", roles])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let line = text(&out.stderr)
        .lines()
        .find(|l| l.starts_with("sha256:"))
        .unwrap()
        .to_owned();
    (token, line)
}

fn server(data_dir: &Path, tokens_file: &Path, metrics_addr: &str) -> ServerProcess {
    ServerCommand::new(SERVER)
        .port(free_port())
        .env("HODEI_DATA_DIR", data_dir)
        .env("HODEI_WORKER_BIN", WORKER)
        .env("HODEI_AUTH_TOKENS_FILE", tokens_file)
        .env("HODEI_METRICS_ADDR", metrics_addr)
        .log_file(data_dir.join("server.log"))
        .spawn()
        .unwrap()
}

#[test]
fn a_new_token_in_the_tokens_file_runs_jobs_and_no_token_gets_a_hint() {
    let (token, line) = new_token("ci", "submit,read");
    assert_eq!(token.len(), 64, "256 bits in hex: {token}");
    assert!(!line.contains(&token), "the line holds only the hash");
    assert!(line.ends_with(" ci submit,read"), "{line}");

    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&tokens_file, format!("# CI\n{line}\n")).unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let process = server(dir.path(), &tokens_file, &metrics_addr);
    let url = process.url();
    wait_until(Duration::from_secs(30), "the server answers", || {
        hodei(&url, Some(&token), &["list"]).status.success()
    })
    .unwrap_or_else(|e| panic!("{e}; server log:\n{}", process.log()));

    let out = hodei(&url, Some(&token), &["run", "--", "sh", "-c", "echo hello"]);
    assert_eq!(text(&out.stdout), "hello\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0));

    // A job that knows the server's address still cannot use its job API.
    let script = format!("{HODEI} --server {url} list; echo \"exit=$?\"");
    let out = hodei(&url, Some(&token), &["run", "--", "sh", "-c", &script]);
    assert_eq!(text(&out.stdout), "exit=125\n", "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("hint: set HODEI_TOKEN"),
        "{}",
        text(&out.stderr)
    );
    let listed = hodei(&url, Some(&token), &["list", "-o", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let jobs = &listed["jobs"];
    let id = jobs[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(jobs[0]["owner"], "ci");
    let shown = hodei(&url, Some(&token), &["get", &id]);
    assert!(
        text(&shown.stdout).contains("owner:     ci"),
        "{}",
        text(&shown.stdout)
    );

    // The same token from a file.
    let token_file = dir.path().join("my-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let from_file = Command::new(HODEI)
        .args(["get", &id])
        .env("HODEI_SERVER_URL", &url)
        .env_remove("HODEI_TOKEN")
        .env("HODEI_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    assert!(from_file.status.success(), "{}", text(&from_file.stderr));

    for token in [None, Some("wrong")] {
        let out = hodei(&url, token, &["run", "--", "true"]);
        assert_eq!(out.status.code(), Some(125), "token {token:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("hint: set HODEI_TOKEN"), "{stderr}");
        assert!(
            !stderr.contains(&token_file.display().to_string()),
            "{stderr}"
        );
    }
    let refused = metric(
        &scrape(&metrics_addr),
        "hodei_job_api_refusals_total{reason=\"unauthenticated\"}",
    );
    assert!(refused >= 2.0, "refusals counted: {refused}");
    process.stop(Duration::from_secs(30)).unwrap();
}

#[test]
fn a_broken_tokens_file_stops_the_server_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&tokens_file, "# ok\nsha256:abc ci submit\n").unwrap();
    let out = Command::new(SERVER)
        .env("HODEI_LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("HODEI_DATA_DIR", dir.path())
        .env("HODEI_WORKER_BIN", WORKER)
        .env("HODEI_AUTH_TOKENS_FILE", &tokens_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("HODEI_AUTH_TOKENS_FILE") && stderr.contains("line 2: hash"),
        "{stderr}"
    );
}

#[test]
fn a_job_of_an_embedded_server_cannot_call_it() {
    // The job tries the job API on every loopback port that listens (the embedded
    // server's among them) with no token, as another user of the host could.
    let script = format!(
        r#"for hex in $(awk '$4 == "0A" && $2 ~ /^0100007F:/ {{ split($2, a, ":"); print a[2] }}' /proc/net/tcp); do
  port=$(printf '%d' "0x$hex")
  if timeout 5 {HODEI} --server "http://127.0.0.1:$port" list >/dev/null 2>"$HOME/err"; then
    echo "listed jobs on $port"
  elif grep -q 'hint: set HODEI_TOKEN' "$HOME/err"; then
    echo "refused on $port"
  fi
done"#
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(HODEI)
        .args(["--embedded", "run", "--", "sh", "-c", &script])
        .env("HODEI_DATA_DIR", dir.path())
        .env("HODEI_WORKER_BIN", WORKER)
        .env_remove("HODEI_SERVER_URL")
        .env_remove("HODEI_TOKEN")
        .env_remove("HODEI_TOKEN_FILE")
        // The embedded server says where it serves, so the test knows its port.
        .env("HODEI_LOG", "hodei_core::server=info")
        .env("HODEI_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let jobs_addr = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find_map(|line| line["fields"]["jobs"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no serving line in {stderr}"));
    let port = jobs_addr.rsplit_once(':').unwrap().1;
    assert!(stdout.contains(&format!("refused on {port}\n")), "{stdout}");
    assert!(
        !stdout.contains(&format!("listed jobs on {port}\n")),
        "{stdout}"
    );
}
