//! The real binaries over TLS, and the server's refusal to serve unprotected off loopback.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use hodei_test_fixtures::{ServerCommand, blocking::wait_until};
use support::{HODEI, SERVER, WORKER, free_port, metric, scrape, text};

/// A CA and a server certificate for localhost and 127.0.0.1, written into `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let pki = Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        };
        std::fs::write(&pki.ca, ca_pem).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}

fn hodei(args: &[&str]) -> Output {
    Command::new(HODEI)
        .args(args)
        .env_remove("HODEI_SERVER_URL")
        .env_remove("HODEI_CA_CERT")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_cli_and_a_local_worker_run_a_job_against_a_tls_server() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = ServerCommand::new(SERVER)
        .without_inherited_hodei_env()
        .env("HODEI_DATA_DIR", dir.path().join("data"))
        .env("HODEI_WORKER_BIN", WORKER)
        .env("HODEI_TLS_CERT", &pki.cert)
        .env("HODEI_TLS_KEY", &pki.key)
        .env("HODEI_LOCAL_SERVER_CA", &pki.ca)
        .log_file(dir.path().join("server.log"))
        .spawn()
        .unwrap();
    let url = format!("https://localhost:{}", server.port());
    let ca = pki.ca.to_str().unwrap();
    wait_until(Duration::from_secs(30), "the server answers", || {
        hodei(&["--server", &url, "--ca-cert", ca, "list"])
            .status
            .success()
    })
    .unwrap_or_else(|e| panic!("{e}; server log:\n{}", server.log()));

    let out = hodei(&[
        "--server",
        &url,
        "--ca-cert",
        ca,
        "run",
        "--",
        "sh",
        "-c",
        "echo over tls",
    ]);
    assert_eq!(text(&out.stdout), "over tls\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{}", server.log());

    // Without the CA the server's certificate is not trusted, and the user is told.
    let untrusted = hodei(&["--server", &url, "list"]);
    assert!(!untrusted.status.success());
    assert!(
        text(&untrusted.stderr).contains("certificate"),
        "{}",
        text(&untrusted.stderr)
    );
    // Plaintext against the TLS port: told to use https://.
    let plaintext = hodei(&[
        "--server",
        &format!("http://127.0.0.1:{}", server.port()),
        "list",
    ]);
    assert!(!plaintext.status.success());
    let stderr = text(&plaintext.stderr);
    assert!(
        stderr.contains("TLS") && stderr.contains("https://"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// A server whose job API listens on all interfaces at `port`, without TLS or
/// authentication.
fn unprotected_server(dir: &Path, port: u16, args: &[&str]) -> ServerCommand {
    let mut command = ServerCommand::new(SERVER)
        .without_inherited_hodei_env()
        .env("HODEI_DATA_DIR", dir.join("data"))
        .env("HODEI_WORKER_BIN", WORKER)
        .arg("--listen-addr")
        .arg(format!("0.0.0.0:{port}"));
    for arg in args {
        command = command.arg(arg);
    }
    command
}

#[test]
fn off_loopback_without_tls_or_authentication_the_server_refuses_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut server = unprotected_server(dir.path(), free_port(), &[])
        .log_file(&log)
        .spawn()
        .unwrap();
    let status = wait_until(Duration::from_secs(30), "the server exits", || {
        server.try_wait().transpose()
    })
    .unwrap()
    .unwrap();
    assert!(!status.success());
    let output = std::fs::read_to_string(&log).unwrap();
    let line = output
        .lines()
        .find(|l| l.starts_with("hodei-server-bin: "))
        .unwrap_or_else(|| panic!("{output}"));
    assert!(line.contains("0.0.0.0:"), "{line}");
    for hint in [
        "no TLS",
        "no caller authentication",
        "HODEI_TLS_CERT",
        "HODEI_TLS_KEY",
        "HODEI_AUTH_TOKENS_FILE",
        "HODEI_AUTH_KUBERNETES",
        "HODEI_TLS_CLIENT_CA",
        "HODEI_INSECURE=1",
    ] {
        assert!(line.contains(hint), "{hint} missing from: {line}");
    }
}

#[test]
fn with_insecure_it_serves_off_loopback_and_says_so_in_the_log_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let port = free_port();
    let server = unprotected_server(dir.path(), port, &["--insecure"])
        .env("HODEI_METRICS_ADDR", &metrics_addr)
        .log_file(dir.path().join("server.log"))
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(30), "the server answers", || {
        hodei(&["--server", &url, "list"]).status.success()
    })
    .unwrap_or_else(|e| panic!("{e}; server log:\n{}", server.log()));
    assert!(
        server.log().contains("serving insecurely"),
        "{}",
        server.log()
    );
    assert_eq!(metric(&scrape(&metrics_addr), "hodei_insecure "), 1.0);
    server.stop(Duration::from_secs(30)).unwrap();
}
