//! A host program that runs its own Hodei server with the local provider, submits one
//! job, and prints its output.
//!
//! `cargo build --bins && cargo run -p hodei-examples --bin embedded_server`

use futures::StreamExt;
use hodei_core::{HodeiClient, HodeiServer, JobEvent, JobSpec, LocalProvider};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let worker_bin = std::env::var("HODEI_WORKER_BIN")
        .unwrap_or_else(|_| "target/debug/hodei-worker-bin".into());
    let data_dir = tempfile::tempdir()?;
    let server = HodeiServer::builder(data_dir.path())
        .provider(LocalProvider::builder(worker_bin).build())
        .listen_addr("127.0.0.1:0".parse()?)
        .worker_listen_addr("127.0.0.1:0".parse()?)
        .start()
        .await?;
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));

    let client = HodeiClient::connect(url).await?;
    let spec = JobSpec::builder("sh")
        .args(["-c", "echo hello from an embedded server"])
        .build()?;
    let job = client.submit(&spec).await?;
    let mut events = client.follow(job.id).live().await?;
    while let Some(event) = events.next().await {
        match event? {
            JobEvent::Output(chunk) => print!("{}", String::from_utf8_lossy(&chunk.data)),
            JobEvent::State { state, .. } if state.is_terminal() => {
                println!("job {}: {state}", job.id)
            }
            JobEvent::State { .. } => {}
        }
    }
    let _ = stop.send(());
    serving.await??;
    Ok(())
}
