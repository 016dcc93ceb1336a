//! A worker whose connection to the server is cut again and again while its job prints:
//! it re-attaches each time, and every line is stored exactly once, in order.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{Behaviour, TaskProvider, TestServer, follow, sh};
use futures::StreamExt;
use hodei_core::{
    FailureReason, HodeiClient, HodeiServer, Job, JobEvent, JobState, controller::ControllerConfig,
};
use hodei_test_fixtures::wait_until;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Forwards TCP connections to `upstream` until told to cut them all.
struct CuttingProxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepted: Arc<AtomicUsize>,
    _accept: JoinHandle<()>,
}

impl CuttingProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn({
            let (upstream, connections, accepted) =
                (upstream.clone(), connections.clone(), accepted.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let Some(target) = *upstream.lock().unwrap() else {
                        continue;
                    };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let forward = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    let mut live = connections.lock().unwrap();
                    live.retain(|c| !c.is_finished());
                    live.push(forward);
                }
            }
        });
        Self {
            addr,
            upstream,
            connections,
            accepted,
            _accept: accept,
        }
    }

    /// Drops every open connection, both ways.
    fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// A server whose workers dial it through `proxy`, and a client of its job API.
async fn start_behind(
    dir: &std::path::Path,
    provider: &TaskProvider,
    proxy: &CuttingProxy,
) -> TestServer {
    let server = HodeiServer::builder(dir)
        .shared_provider(Arc::new(provider.clone()))
        .listen_addr("127.0.0.1:0".parse().unwrap())
        .worker_listen_addr("127.0.0.1:0".parse().unwrap())
        .advertise_address(format!("http://{}", proxy.addr))
        .controller(ControllerConfig {
            heartbeat_interval: Duration::from_millis(200),
            heartbeat_timeout: Duration::from_secs(3),
            retry: common::failures_end_jobs(),
            ..ControllerConfig::default()
        })
        .start()
        .await
        .unwrap();
    *proxy.upstream.lock().unwrap() = Some(server.worker_addr());
    TestServer::serve(server, dir).await
}

async fn wait_until_running(client: &HodeiClient, job: &Job) {
    wait_until(Duration::from_secs(10), "the job runs", || async {
        client.get(job.id).await.unwrap().state == JobState::Running
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_again_and_again_resumes_and_no_line_is_lost_or_doubled() {
    const LINES: usize = 300;
    const CUTS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let proxy = CuttingProxy::start().await;
    let provider = TaskProvider::new(Behaviour::RunWorker);
    let setup = start_behind(dir.path(), &provider, &proxy).await;
    let client = setup.client.clone();

    let script =
        format!("i=1; while [ $i -le {LINES} ]; do echo line $i; i=$((i+1)); sleep 0.01; done");
    let job = client.submit(&sh(&script)).await.unwrap();
    let live = tokio::spawn({
        let (client, job) = (client.clone(), job.clone());
        async move { follow(&client, &job, 0).await }
    });
    wait_until_running(&setup.client, &job).await;
    for _ in 0..CUTS {
        tokio::time::sleep(Duration::from_millis(400)).await;
        proxy.cut();
    }

    let followed = tokio::time::timeout(Duration::from_secs(60), live)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(followed.final_state(), &JobState::Succeeded);
    let stored = follow(&client, &job, 0).await;
    let expected: String = (1..=LINES).map(|i| format!("line {i}\n")).collect();
    for (what, seen) in [
        ("the live follower", &followed),
        ("the stored log", &stored),
    ] {
        assert_eq!(
            String::from_utf8_lossy(&seen.stdout),
            expected,
            "{what} has every line exactly once, in order"
        );
        let consecutive: Vec<u64> = (1..=seen.seqs.len() as u64).collect();
        assert_eq!(seen.seqs, consecutive, "{what} has no gap or repeat");
    }
    assert_eq!(
        provider.launches().len(),
        1,
        "the same worker carried on: no second worker was started"
    );
    assert!(
        proxy.accepted.load(Ordering::SeqCst) > CUTS,
        "the worker re-attached after every cut ({} connections)",
        proxy.accepted.load(Ordering::SeqCst)
    );
    setup.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_re_attach_within_its_window_kills_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = CuttingProxy::start().await;
    let mut provider = TaskProvider::new(Behaviour::RunWorker);
    provider.worker_reconnect_window = Some(Duration::from_secs(1));
    let setup = start_behind(dir.path(), &provider, &proxy).await;
    let job = setup
        .client
        .submit(&sh("echo $$; exec sleep 1000"))
        .await
        .unwrap();
    wait_until_running(&setup.client, &job).await;
    let mut events = setup.client.follow(job.id).live().await.unwrap();
    let pid: i32 = loop {
        match events.next().await.unwrap().unwrap() {
            JobEvent::Output(chunk) => {
                break String::from_utf8_lossy(&chunk.data).trim().parse().unwrap();
            }
            JobEvent::State { .. } => {}
        }
    };
    // The server is unreachable from now on.
    *proxy.upstream.lock().unwrap() = None;
    proxy.cut();

    common::wait_gone(pid, "after the reconnect window").await;
    let state = wait_until(Duration::from_secs(10), "the job ends", || async {
        let job = setup.client.get(job.id).await.unwrap();
        job.state.is_terminal().then_some(job.state)
    })
    .await
    .unwrap();
    let JobState::Failed {
        reason: FailureReason::WorkerLost { message },
    } = &state
    else {
        panic!("{state:?}");
    };
    assert!(
        message.contains("could not reconnect within 1s"),
        "{message}"
    );
    setup.stop().await;
}
