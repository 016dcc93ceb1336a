//! The abuse itself: each function hits the server one way and counts what it answered.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use hodei_core::{HodeiClient, JobId, JobSpec, job::limits::MAX_ARG_BYTES};
use hodei_proto::v1::{
    self as pb, job_service_client::JobServiceClient, worker_service_client::WorkerServiceClient,
};
use tonic::{Streaming, transport::Channel};

use super::tally::Tally;

/// A new HTTP/2 connection to `url`.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await?)
}

/// A job API client without message limits of its own, so the server's are what count.
fn jobs_client(channel: Channel) -> JobServiceClient<Channel> {
    JobServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

fn wire(spec: &JobSpec) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        spec: Some(spec.into()),
    }
}

/// Asks to follow `job` `count` times, all at once, spread over `connections`
/// connections; returns the streams the server accepted (held open by the caller).
pub async fn follow_many(
    url: &str,
    job: JobId,
    count: usize,
    connections: usize,
    tally: &Tally,
) -> anyhow::Result<Vec<Streaming<pb::JobEvent>>> {
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(connect(url).await?);
    }
    let request = pb::FollowJobRequest {
        job_id: job.to_string(),
        from_seq: 0,
        include_output: true,
        follow: true,
    };
    let answers: Vec<_> = stream::iter(0..count)
        .map(|i| {
            let mut client = jobs_client(channels[i % channels.len()].clone());
            let request = request.clone();
            async move { client.follow_job(request).await }
        })
        .buffer_unordered(count.max(1))
        .collect()
        .await;
    let mut open = Vec::new();
    for answer in answers {
        match answer {
            Ok(response) => {
                tally.count("follow", "Ok", "stream open");
                open.push(response.into_inner());
            }
            Err(status) => tally.refused("follow", &status),
        }
    }
    Ok(open)
}

/// Submits `count` `true` jobs, `parallel` at a time, on one connection.
pub async fn submit_flood(
    channel: Channel,
    count: usize,
    parallel: usize,
    tally: &Tally,
) -> anyhow::Result<()> {
    let request = wire(&JobSpec::builder("true").build()?);
    let client = jobs_client(channel);
    stream::iter(0..count)
        .for_each_concurrent(parallel.max(1), |_| {
            let mut client = client.clone();
            let request = request.clone();
            async move {
                match client.submit_job(request).await {
                    Ok(_) => tally.count("submit", "Ok", "accepted"),
                    Err(status) => tally.refused("submit", &status),
                }
            }
        })
        .await;
    Ok(())
}

/// Sends `count` specs over the spec limits and `count` over the job API message limit.
pub async fn oversized_specs(channel: Channel, count: usize, message_limit: usize, tally: &Tally) {
    let mut client = jobs_client(channel);
    let over_spec = spec_with_arg("a".repeat(MAX_ARG_BYTES + 1));
    let over_message = spec_with_arg("a".repeat(message_limit + 1));
    for (phase, request) in [
        ("spec over limits", over_spec),
        ("message over limit", over_message),
    ] {
        for _ in 0..count {
            match client.submit_job(request.clone()).await {
                Ok(_) => tally.count(phase, "Ok", "accepted (should not be)"),
                Err(status) => tally.refused(phase, &status),
            }
        }
    }
}

/// A request the client-side builder would refuse: the wire fields are set directly.
fn spec_with_arg(arg: String) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        spec: Some(pb::JobSpec {
            command: "echo".into(),
            args: vec![arg],
            timeout_ms: 60_000,
            ..Default::default()
        }),
    }
}

/// Opens `count` worker streams whose first message is `bytes` long (a registration
/// with a huge credential).
pub async fn worker_oversized(worker_url: &str, count: usize, bytes: usize, tally: &Tally) {
    let Ok(channel) = connect(worker_url).await else {
        tally.count("worker message over limit", "connect", "failed");
        return;
    };
    let message = pb::WorkerMessage {
        message: Some(pb::worker_message::Message::Register(pb::Register {
            worker_id: "abuse".into(),
            credential: "c".repeat(bytes),
            worker_version: String::new(),
        })),
    };
    for _ in 0..count {
        let mut client = WorkerServiceClient::new(channel.clone())
            .max_encoding_message_size(usize::MAX)
            .max_decoding_message_size(usize::MAX);
        let outbound = stream::iter([message.clone()]);
        let answer = tokio::time::timeout(Duration::from_secs(30), async {
            let mut inbound = client.attach(outbound).await?.into_inner();
            inbound.message().await
        })
        .await;
        match answer {
            Ok(Ok(_)) => tally.count(
                "worker message over limit",
                "Ok",
                "answered (should not be)",
            ),
            Ok(Err(status)) => tally.refused("worker message over limit", &status),
            Err(_) => tally.count("worker message over limit", "timeout", "no answer in 30s"),
        }
    }
}

/// Runs a job writing `mib` MiB in 4 MiB pieces and waits for its end; returns its
/// final state.
pub async fn big_output(
    client: Arc<HodeiClient>,
    mib: u64,
    limit: Duration,
) -> anyhow::Result<String> {
    let pieces = mib.div_ceil(4);
    let script = format!("for i in $(seq {pieces}); do head -c 4194304 /dev/zero; done");
    let spec = JobSpec::builder("sh")
        .args(["-c".to_owned(), script])
        .build()?;
    let job = client.submit(&spec).await?;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = client.get(job.id).await?;
        if now.state.is_terminal() {
            return Ok(now.state.to_string());
        }
        if tokio::time::Instant::now() >= deadline {
            client.cancel(job.id).await?;
            return Ok(format!("still {} after {limit:?}; cancelled", now.state));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
