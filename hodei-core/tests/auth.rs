//! The job API decides who calls and what they may do: tokens, owners, NOT_FOUND for
//! others' jobs, env redaction, audit lines, and a tokens file that changes under a
//! running server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::BTreeMap,
    io::Write,
    path::Path,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use common::{Behaviour, TaskProvider};
use hodei_core::{
    ClientError, HodeiClient, HodeiServer, Job, JobId, JobSpec,
    auth::{Authenticator, CertificateIdentity, REDACTED_ENV_VALUE, Role, token_line},
    server::{AUDIT_TARGET, JobApi},
};
use hodei_proto::v1::{self as pb, job_service_server::JobService};
use hodei_test_fixtures::wait_until;
use tokio::task::JoinHandle;
use tonic::Code;

/// Every audit line any server in this test binary wrote.
fn audit_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        use tracing_subscriber::{filter::Targets, layer::SubscriberExt};
        let log = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&log);
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(move || AuditWriter(Arc::clone(&writer)))
                .with_filter(Targets::new().with_target(AUDIT_TARGET, tracing::Level::INFO)),
        );
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    })
    .clone()
}

use tracing_subscriber::Layer;

struct AuditWriter(Arc<Mutex<Vec<u8>>>);

impl Write for AuditWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The audit lines written so far, parsed.
fn audit_lines() -> Vec<serde_json::Value> {
    let log = audit_log();
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn audited(identity: &str, method: &str, job: Option<JobId>, outcome: &str) -> bool {
    audit_lines().iter().any(|line| {
        let fields = &line["fields"];
        fields["identity"] == identity
            && fields["method"] == method
            && fields["outcome"] == outcome
            && job.is_none_or(|id| fields["job.id"] == id.to_string())
    })
}

const TOKENS: [(&str, &str, &[Role]); 4] = [
    ("alice-token", "alice", &[Role::Submit]),
    ("bob-token", "bob", &[Role::Submit]),
    ("reader-token", "reader", &[Role::Read]),
    ("root-token", "root", &[Role::Admin]),
];

fn write_tokens(path: &Path, extra: &str) {
    let mut text = String::from("# test identities\n");
    for (token, name, roles) in TOKENS {
        text.push_str(&token_line(token, name, roles));
        text.push('\n');
    }
    text.push_str(extra);
    std::fs::write(path, text).unwrap();
}

struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(tokens: &Path) -> Self {
        audit_log();
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::builder()
            .tokens_file(tokens)
            .build()
            .await
            .unwrap();
        let server = HodeiServer::builder(dir.path())
            .provider(TaskProvider::new(Behaviour::NeverStart))
            .listen_addr("127.0.0.1:0".parse().unwrap())
            .worker_listen_addr("127.0.0.1:0".parse().unwrap())
            .auth(auth)
            .start()
            .await
            .unwrap();
        let url = format!("http://{}", server.local_addr());
        let (stop, task) = common::serve_in_background(server);
        Self {
            url,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn client(&self, token: Option<&str>) -> HodeiClient {
        HodeiClient::builder(self.url.clone())
            .maybe_token(token.map(str::to_owned))
            .connect()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap();
    }
}

fn spec_with_secret(secret: &str) -> JobSpec {
    JobSpec::builder("sleep")
        .env(BTreeMap::from([("API_KEY".to_owned(), secret.to_owned())]))
        .build()
        .unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> Code {
    result
        .expect_err("the call must fail")
        .code()
        .expect("a gRPC status")
}

async fn follow_code(client: &HodeiClient, id: JobId) -> Option<Code> {
    client.follow(id).await.err().and_then(|e| e.code())
}

fn env_value(job: &Job) -> &str {
    &job.spec.env["API_KEY"]
}

#[tokio::test]
async fn every_call_without_a_valid_token_is_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    write_tokens(&tokens, "");
    let server = Server::start(&tokens).await;
    let job = server
        .client(Some("alice-token"))
        .await
        .submit(&spec_with_secret("s"))
        .await
        .unwrap();
    for token in [None, Some("not-a-token")] {
        let client = server.client(token).await;
        let codes = [
            code(client.submit(&spec_with_secret("s")).await),
            code(client.get(job.id).await),
            code(client.list().await),
            code(client.cancel(job.id).await),
            follow_code(&client, job.id).await.unwrap(),
        ];
        assert_eq!(codes, [Code::Unauthenticated; 5], "token {token:?}");
        let error = client.list().await.unwrap_err();
        assert!(error.to_string().contains("HODEI_TOKEN"), "{error}");
    }
    assert!(audited(
        "<unauthenticated>",
        "SubmitJob",
        None,
        "unauthenticated"
    ));
    assert!(audited(
        "<unauthenticated>",
        "FollowJob",
        None,
        "unauthenticated"
    ));
    server.stop().await;
}

#[tokio::test]
async fn each_identity_sees_and_does_what_its_roles_allow() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    write_tokens(&tokens, "");
    let server = Server::start(&tokens).await;
    let alice = server.client(Some("alice-token")).await;
    let bob = server.client(Some("bob-token")).await;
    let reader = server.client(Some("reader-token")).await;
    let root = server.client(Some("root-token")).await;

    let alices = alice
        .submit(&spec_with_secret("alice-secret"))
        .await
        .unwrap();
    assert_eq!(alices.owner, "alice");
    assert!(audited("alice", "SubmitJob", Some(alices.id), "accepted"));
    let bobs = bob.submit(&spec_with_secret("bob-secret")).await.unwrap();
    let bobs_second = bob.submit(&spec_with_secret("bob-secret")).await.unwrap();

    // submit: its own jobs with their env values, nobody else's.
    let own = alice.get(alices.id).await.unwrap();
    assert_eq!(
        (own.owner.as_str(), env_value(&own)),
        ("alice", "alice-secret")
    );
    let listed: Vec<_> = alice
        .list()
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, [alices.id]);
    assert_eq!(
        bob.list().page_size(1).await.unwrap().jobs[0].id,
        bobs_second.id,
        "the limit counts the caller's own jobs"
    );
    assert!(
        alice.list().owner("bob").await.unwrap().jobs.is_empty(),
        "asking for another's jobs without leave to read them lists nothing"
    );
    let mine: Vec<_> = bob
        .list()
        .mine()
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(mine, [bobs_second.id, bobs.id]);
    let unknown = JobId::new();
    let hidden = alice.get(bobs.id).await.unwrap_err();
    let missing = alice.get(unknown).await.unwrap_err();
    assert_eq!(hidden.code(), Some(Code::NotFound));
    assert_eq!(
        hidden.to_string().replace(&bobs.id.to_string(), "ID"),
        missing.to_string().replace(&unknown.to_string(), "ID"),
        "another's job looks exactly like an unknown one"
    );
    assert_eq!(follow_code(&alice, bobs.id).await, Some(Code::NotFound));
    assert_eq!(code(alice.cancel(bobs.id).await), Code::NotFound);
    assert!(audited(
        "alice",
        "GetJob",
        Some(bobs.id),
        "not_found_hidden"
    ));
    assert!(audited(
        "alice",
        "CancelJob",
        Some(bobs.id),
        "not_found_hidden"
    ));
    assert!(alice.follow(alices.id).await.is_ok());

    // read: every job, env values redacted, no submit, no cancel.
    let seen = reader.get(alices.id).await.unwrap();
    assert_eq!(env_value(&seen), REDACTED_ENV_VALUE);
    assert!(reader.follow(bobs.id).await.is_ok());
    let listed = reader.list().await.unwrap().jobs;
    assert_eq!(listed.len(), 3);
    let of_bob = reader.list().owner("bob").await.unwrap().jobs;
    assert_eq!(of_bob.len(), 2);
    assert!(
        reader.list().mine().await.unwrap().jobs.is_empty(),
        "the reader submitted none"
    );
    assert!(listed.iter().all(|j| env_value(j) == REDACTED_ENV_VALUE));
    assert_eq!(code(reader.cancel(alices.id).await), Code::PermissionDenied);
    assert_eq!(
        code(reader.submit(&spec_with_secret("x")).await),
        Code::PermissionDenied
    );
    assert!(audited(
        "reader",
        "CancelJob",
        Some(alices.id),
        "permission_denied"
    ));
    assert!(audited("reader", "SubmitJob", None, "permission_denied"));

    // The owner cancels its own job; admin cancels anyone's and sees every env.
    let cancelled = alice.cancel(alices.id).await.unwrap();
    assert!(cancelled.requested);
    assert!(audited(
        "alice",
        "CancelJob",
        Some(alices.id),
        "cancel_requested"
    ));
    assert_eq!(env_value(&root.get(bobs.id).await.unwrap()), "bob-secret");
    assert!(
        root.list()
            .await
            .unwrap()
            .jobs
            .iter()
            .all(|j| env_value(j) != REDACTED_ENV_VALUE)
    );
    assert!(root.cancel(bobs.id).await.unwrap().requested);
    assert!(audited(
        "root",
        "CancelJob",
        Some(bobs.id),
        "cancel_requested"
    ));
    server.stop().await;
}

#[tokio::test]
async fn a_changed_tokens_file_is_picked_up_and_a_broken_one_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    write_tokens(&tokens, "");
    let server = Server::start(&tokens).await;
    let newcomer = server.client(Some("new-token")).await;
    assert_eq!(code(newcomer.list().await), Code::Unauthenticated);

    write_tokens(
        &tokens,
        &format!("{}\n", token_line("new-token", "carol", &[Role::Read])),
    );
    wait_until(Duration::from_secs(5), "the new token works", || {
        let newcomer = newcomer.clone();
        async move { newcomer.list().await.is_ok() }
    })
    .await
    .unwrap();

    write_tokens(&tokens, "sha256:nothex carol read\n");
    // Past the reload check: the broken version was read and refused by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(newcomer.list().await.is_ok(), "the last good tokens stay");
    let alice = server.client(Some("alice-token")).await;
    assert!(alice.list().await.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn a_verified_client_certificate_names_the_caller_and_its_roles() {
    let dir = tempfile::tempdir().unwrap();
    let server = HodeiServer::builder(dir.path())
        .provider(TaskProvider::new(Behaviour::NeverStart))
        .listen_addr("127.0.0.1:0".parse().unwrap())
        .worker_listen_addr("127.0.0.1:0".parse().unwrap())
        .start()
        .await
        .unwrap();
    let auth = Authenticator::builder()
        .client_certificates(true)
        .build()
        .await
        .unwrap();
    let api = JobApi::new(server.controller().clone(), auth);
    let submit = |certificate: Option<CertificateIdentity>| {
        let mut request = tonic::Request::new(pb::SubmitJobRequest {
            spec: Some((&spec_with_secret("s")).into()),
        });
        if let Some(certificate) = certificate {
            // What the TLS layer puts there for a certificate it verified.
            request.extensions_mut().insert(certificate);
        }
        request
    };
    let ci = CertificateIdentity {
        common_name: "ci-runner".into(),
        organizations: vec!["submit".into()],
    };
    let job = api
        .submit_job(submit(Some(ci)))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(job.owner, "ci-runner");
    let viewer = CertificateIdentity {
        common_name: "viewer".into(),
        organizations: vec!["read".into()],
    };
    assert_eq!(
        api.submit_job(submit(Some(viewer)))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    assert_eq!(
        api.submit_job(submit(None)).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    server.controller().shutdown(Duration::from_secs(1)).await;
}
