//! The server over TLS in one process: clients and workers verify it with a test CA, a
//! plaintext client is told what is wrong, and a rotated certificate is picked up.

#![allow(clippy::unwrap_used)]

mod common;

use std::{path::Path, time::Duration};

use common::{Behaviour, TaskProvider, follow};
use hodei_core::{
    HodeiClient, HodeiServer, JobSpec, JobState, ProcessExit, auth::Authenticator, server::TlsFiles,
};
use tokio::{sync::oneshot, task::JoinHandle};

/// A test certificate authority that issues server certificates into a directory.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A client certificate for `name` and its key, PEM encoded.
    fn issue_client(&self, name: &str) -> (String, String) {
        self.issue_client_with_roles(name, &[])
    }

    /// A client certificate for `name` with `roles` as its O values, and its key.
    fn issue_client_with_roles(&self, name: &str, roles: &[&str]) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        for role in roles {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *role);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate as [`issue_server`](Self::issue_server) does, and a client CA
    /// (written into `dir`) whose certificates the server accepts.
    fn issue_server_with_client_ca(&self, dir: &Path) -> (TestCa, TlsFiles) {
        let clients = TestCa::new("client ca");
        let client_ca = dir.join("client-ca.crt");
        std::fs::write(&client_ca, &clients.pem).unwrap();
        let tls = self.issue_server(dir).client_ca(&client_ca);
        (clients, tls)
    }

    /// Writes a certificate for localhost and 127.0.0.1 and its key into `dir`.
    fn issue_server(&self, dir: &Path) -> TlsFiles {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = TlsFiles::new(dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

struct TlsServer {
    port: u16,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl TlsServer {
    /// A server with workers that run, open to every caller, its data under `dir`.
    async fn start(dir: &Path, tls: TlsFiles) -> Self {
        let provider = TaskProvider::new(Behaviour::RunWorker);
        Self::start_with(provider, dir, tls, Authenticator::open()).await
    }

    async fn start_with(
        provider: TaskProvider,
        dir: &Path,
        tls: TlsFiles,
        auth: Authenticator,
    ) -> Self {
        let server = HodeiServer::builder(dir.join("data"))
            .provider(provider)
            .listen_addr("127.0.0.1:0".parse().unwrap())
            .worker_listen_addr("127.0.0.1:0".parse().unwrap())
            .tls(tls)
            .auth(auth)
            .start()
            .await
            .unwrap();
        let port = server.local_addr().port();
        let (stop, task) = common::serve_in_background(server);
        Self { port, stop, task }
    }

    async fn client(&self, ca: &TestCa) -> Result<HodeiClient, hodei_core::ClientError> {
        HodeiClient::builder(format!("https://localhost:{}", self.port))
            .ca_certificate(ca.pem.as_bytes())
            .connect()
            .await
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

#[tokio::test]
async fn a_client_and_a_worker_that_trust_the_ca_run_a_job_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test ca");
    let tls = ca.issue_server(dir.path());
    let mut provider = TaskProvider::new(Behaviour::RunWorker);
    provider.server_ca = Some(ca.pem.clone().into_bytes());
    let server =
        TlsServer::start_with(provider.clone(), dir.path(), tls, Authenticator::open()).await;
    let client = server.client(&ca).await.unwrap();

    let spec = JobSpec::builder("sh")
        .args(["-c", "echo over tls"])
        .build()
        .unwrap();
    let job = client.submit(&spec).await.unwrap();
    let followed = follow(&client, &job, 0).await;
    assert_eq!(followed.stdout, b"over tls\n");
    assert_eq!(
        followed.final_state(),
        &JobState::from_exit(ProcessExit::Code(0))
    );
    // The worker dialed the worker API over TLS, not the job API.
    let launch = provider.launches().pop().unwrap();
    assert!(
        launch.server_address.starts_with("https://127.0.0.1:"),
        "{}",
        launch.server_address
    );
    assert!(
        !launch
            .server_address
            .ends_with(&format!(":{}", server.port))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test ca");
    let server = TlsServer::start(dir.path(), ca.issue_server(dir.path())).await;
    let error = server
        .client(&TestCa::new("another ca"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("certificate"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn a_plaintext_client_against_the_tls_port_is_told_to_use_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test ca");
    let server = TlsServer::start(dir.path(), ca.issue_server(dir.path())).await;
    let url = format!("http://127.0.0.1:{}", server.port);
    let outcome = match HodeiClient::connect(url).await {
        Ok(client) => client.list().await.map(drop),
        Err(error) => Err(error),
    };
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("https://"), "{error}");
    assert!(error.contains("TLS"), "{error}");
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_to_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (TestCa::new("old ca"), TestCa::new("new ca"));
    let server = TlsServer::start(dir.path(), old_ca.issue_server(dir.path())).await;
    server.client(&old_ca).await.unwrap().list().await.unwrap();

    new_ca.issue_server(dir.path());
    // The files are checked at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.client(&new_ca).await.unwrap().list().await.unwrap();
    assert!(server.client(&old_ca).await.is_err());
    server.stop().await;
}

#[tokio::test]
async fn a_client_certificate_must_come_from_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server ca");
    let (clients, tls) = ca.issue_server_with_client_ca(dir.path());
    let server = TlsServer::start(dir.path(), tls).await;
    let connect = |(cert, key): (String, String)| {
        HodeiClient::builder(format!("https://localhost:{}", server.port))
            .ca_certificate(ca.pem.as_bytes())
            .client_identity(cert, key)
            .connect()
    };
    connect(clients.issue_client("alice"))
        .await
        .unwrap()
        .list()
        .await
        .unwrap();
    // Without a certificate the TLS level still lets a caller in.
    server.client(&ca).await.unwrap().list().await.unwrap();
    let stranger = TestCa::new("stranger ca").issue_client("mallory");
    let refused = match connect(stranger).await {
        Ok(client) => client.list().await.map(drop),
        Err(error) => Err(error),
    };
    assert!(
        refused.is_err(),
        "a certificate from another CA was accepted"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_verified_client_certificate_is_the_caller_and_its_o_values_its_roles() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server ca");
    let (clients, tls) = ca.issue_server_with_client_ca(dir.path());
    let auth = Authenticator::builder()
        .client_certificates(true)
        .build()
        .await
        .unwrap();
    let provider = TaskProvider::new(Behaviour::RunWorker);
    let server = TlsServer::start_with(provider, dir.path(), tls, auth).await;
    let as_holder = |(cert, key): (String, String)| {
        HodeiClient::builder(format!("https://localhost:{}", server.port))
            .ca_certificate(ca.pem.as_bytes())
            .client_identity(cert, key)
            .connect()
    };
    let ci = as_holder(clients.issue_client_with_roles("ci-runner", &["submit"]))
        .await
        .unwrap();
    let job = ci
        .submit(&JobSpec::builder("true").build().unwrap())
        .await
        .unwrap();
    assert_eq!(job.owner, "ci-runner");

    let viewer = as_holder(clients.issue_client_with_roles("viewer", &["read"]))
        .await
        .unwrap();
    let refused = viewer
        .submit(&JobSpec::builder("true").build().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::PermissionDenied),
        "{refused}"
    );
    assert_eq!(viewer.get(job.id).await.unwrap().owner, "ci-runner");

    // Without a certificate (and without a token) nobody is let in.
    let anonymous = server.client(&ca).await.unwrap();
    assert!(anonymous.list().await.unwrap_err().is_unauthenticated());
    server.stop().await;
}
