//! A client of a standing server: submits a job and follows it to the end.
//!
//! `cargo run -p hodei-examples --bin submit_job -- http://localhost:50051`

use futures::StreamExt;
use hodei_core::{HodeiClient, JobEvent, JobSpec};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://localhost:50051".into());
    let client = HodeiClient::connect(url).await?;
    let spec = JobSpec::builder("sh")
        .args(["-c", "for i in 1 2 3; do echo tick $i; sleep 1; done"])
        .name("ticks")
        .build()?;
    let job = client.submit(&spec).await?;
    println!("submitted {}", job.id);
    let mut events = client.follow(job.id).live().await?;
    while let Some(event) = events.next().await {
        match event? {
            JobEvent::Output(chunk) => print!("{}", String::from_utf8_lossy(&chunk.data)),
            JobEvent::State { state, detail } => println!(
                "-> {state}{}",
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ),
        }
    }
    Ok(())
}
