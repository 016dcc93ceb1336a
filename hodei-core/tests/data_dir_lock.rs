//! One server per data directory: a second one on it refuses to start, naming the first.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Behaviour, TaskProvider};
use hodei_core::{HodeiClient, HodeiServer, ServerError};

async fn start(dir: &Path) -> Result<HodeiServer, ServerError> {
    HodeiServer::builder(dir)
        .provider(TaskProvider::new(Behaviour::NeverStart))
        .listen_addr("127.0.0.1:0".parse().unwrap())
        .worker_listen_addr("127.0.0.1:0".parse().unwrap())
        .start()
        .await
}

#[tokio::test]
async fn a_second_server_on_a_data_directory_fails_naming_the_first_until_it_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path()).await.unwrap();
    let url = format!("http://{}", first.local_addr());
    let (stop, task) = common::serve_in_background(first);

    let refused = start(dir.path()).await.unwrap_err();
    let ServerError::DataDirInUse { dir: named, holder } = &refused else {
        panic!("expected DataDirInUse, got {refused:?}");
    };
    assert_eq!(named, dir.path());
    assert_eq!(holder.pid, Some(std::process::id()));
    let message = refused.to_string();
    assert!(
        message.starts_with(&format!(
            "data directory {} is in use by pid {} on host ",
            dir.path().display(),
            std::process::id()
        )),
        "{message}"
    );
    // The refused server changed nothing: the first one still serves.
    let client = HodeiClient::connect(url).await.unwrap();
    client.list().page_size(10).await.unwrap();

    let _ = stop.send(());
    task.await.unwrap();
    start(dir.path()).await.unwrap();
}

#[tokio::test]
async fn a_dropped_server_releases_its_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(dir.path()).await.unwrap();
    drop(first);
    start(dir.path()).await.unwrap();
}
