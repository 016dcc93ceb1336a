//! Helpers shared by the binaries' integration tests: a `hodei-server-bin` with the
//! `hodei` CLI pointed at it, and metrics scraping.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use hodei_test_fixtures::{ServerCommand, ServerProcess, blocking::wait_until};

pub const HODEI: &str = env!("CARGO_BIN_EXE_hodei");
pub const SERVER: &str = env!("CARGO_BIN_EXE_hodei-server-bin");
pub const WORKER: &str = env!("CARGO_BIN_EXE_hodei-worker-bin");

/// Longest wait for a started server to answer `hodei list`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a server to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    hodei_test_fixtures::free_port().unwrap()
}

/// Lossy UTF-8 of a program's output.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A `hodei-server-bin` on loopback with its data in `data_dir`, its log in
/// `data_dir/server-<port>.log` and its metrics on another free port; killed (SIGKILL)
/// when dropped.
pub struct Server {
    process: ServerProcess,
    metrics_addr: String,
}

impl Server {
    /// Starts a server on a free port with `env` and waits until it answers.
    pub fn start(data_dir: &Path, env: &[(&str, String)]) -> Self {
        Self::start_on(data_dir, free_port(), env)
    }

    /// Starts a server on `port` with `env` and waits until it answers.
    pub fn start_on(data_dir: &Path, port: u16, env: &[(&str, String)]) -> Self {
        Self::start_with_ports(data_dir, port, free_port(), env)
    }

    /// Starts a server with its job API on `port` and its worker API on `worker_port`,
    /// with `env`, and waits until it answers.
    pub fn start_with_ports(
        data_dir: &Path,
        port: u16,
        worker_port: u16,
        env: &[(&str, String)],
    ) -> Self {
        Self::start_full(data_dir, data_dir, port, worker_port, env)
    }

    /// Starts a server on free ports with `env` and its log in `log_dir`, and waits until
    /// it answers.
    pub fn start_logging_to(data_dir: &Path, log_dir: &Path, env: &[(&str, String)]) -> Self {
        Self::start_full(data_dir, log_dir, free_port(), free_port(), env)
    }

    fn start_full(
        data_dir: &Path,
        log_dir: &Path,
        port: u16,
        worker_port: u16,
        env: &[(&str, String)],
    ) -> Self {
        let metrics_addr = format!("127.0.0.1:{}", free_port());
        let process = ServerCommand::new(SERVER)
            .port(port)
            .worker_port(worker_port)
            // Jobs left running by a test end with its server, unless the test says.
            .env("HODEI_ON_SHUTDOWN", "stop")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("HODEI_DATA_DIR", data_dir)
            .env("HODEI_METRICS_ADDR", &metrics_addr)
            .log_file(log_dir.join(format!("server-{port}.log")))
            .spawn()
            .unwrap();
        let server = Self {
            process,
            metrics_addr,
        };
        wait_until(READY_TIMEOUT, "the server answers", || {
            server.hodei(&["list"]).status.success()
        })
        .unwrap_or_else(|e| panic!("{e}; server log:\n{}", server.log()));
        server
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Its URL.
    pub fn url(&self) -> String {
        self.process.url()
    }

    /// The port of its job API.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The port of its worker API.
    pub fn worker_port(&self) -> u16 {
        self.process.worker_port()
    }

    /// The URL of its worker API.
    pub fn worker_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.worker_port())
    }

    /// Runs `hodei args` against it.
    pub fn hodei(&self, args: &[&str]) -> Output {
        Command::new(HODEI)
            .args(args)
            .env("HODEI_SERVER_URL", self.url())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `hodei get id -o json`.
    pub fn job(&self, id: &str) -> serde_json::Value {
        let out = self.hodei(&["get", id, "-o", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Its metrics now: the whole HTTP response.
    pub fn metrics(&self) -> String {
        scrape(&self.metrics_addr)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Where its log is.
    pub fn log_path(&self) -> PathBuf {
        self.process.log_path().unwrap().to_owned()
    }

    /// Stops it with SIGTERM and checks that it exited cleanly.
    pub fn stop(self) {
        let status = self.process.stop(STOP_GRACE).unwrap();
        assert!(status.success(), "server exited with {status}");
    }

    /// Kills it with SIGKILL: no cleanup runs.
    pub fn kill(self) {
        self.process.kill();
    }
}

/// The whole response to `GET /metrics` over plain HTTP/1.0.
pub fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The sum of the samples whose line starts with `prefix` (a name, or a name and labels).
pub fn metric(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
