//! One `hodei-server-bin` per data directory, and a killed one does not block the next.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use hodei_test_fixtures::{ServerCommand, blocking::wait_until};
use support::{SERVER, Server, WORKER};

#[test]
fn a_second_server_on_a_data_directory_exits_naming_the_first_and_a_killed_one_blocks_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HODEI_WORKER_BIN", WORKER.to_owned())];
    let first = Server::start(dir.path(), &env);

    let mut second = ServerCommand::new(SERVER)
        .env("HODEI_DATA_DIR", dir.path())
        .env("HODEI_WORKER_BIN", WORKER)
        .log_file(dir.path().join("second.log"))
        .spawn()
        .unwrap();
    let status = wait_until(Duration::from_secs(30), "the second server exits", || {
        second.try_wait().unwrap()
    })
    .unwrap();
    let log = second.log();
    assert!(!status.success(), "{log}");
    let expected = format!(
        "hodei-server-bin: data directory {} is in use by pid {} on host ",
        dir.path().display(),
        first.pid()
    );
    assert!(log.contains(&expected), "{log}");
    assert!(log.contains("HODEI_DATA_DIR"), "{log}");
    // The first server did not notice.
    let listed = first.hodei(&["list"]);
    assert!(listed.status.success(), "{}", support::text(&listed.stderr));

    // The kernel releases a killed server's lock: the next one starts on the directory.
    first.kill();
    Server::start(dir.path(), &env).stop();
}
