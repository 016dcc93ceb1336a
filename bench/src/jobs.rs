//! Running one job through the client and timing what the follower sees.

use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use hodei_core::{HodeiClient, JobEvent, JobSpec, JobState, OutputChunk};

/// Limit given to every benchmark job, far above what any should take.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(600);

/// When things happened to one job, counted from just before `submit` was called.
#[derive(Debug, Clone)]
pub struct Trace {
    /// The job.
    pub id: hodei_core::JobId,
    /// Just before `submit` was called; the other times count from here.
    pub start: Instant,
    /// `submit` returned.
    pub submitted: Duration,
    /// The follower first saw Provisioning (it may see Running first when it joins late
    /// or the two changes fall between two looks at the job).
    pub provisioning: Option<Duration>,
    /// The follower first saw Running.
    pub running: Option<Duration>,
    /// The first output chunk arrived.
    pub first_output: Option<Duration>,
    /// The last output chunk arrived.
    pub last_output: Option<Duration>,
    /// The terminal state arrived (after the last output).
    pub terminal: Duration,
    /// The terminal state.
    pub state: JobState,
}

/// A job running `command args` with the benchmark timeout.
pub fn spec(command: impl Into<String>, args: &[String]) -> anyhow::Result<JobSpec> {
    Ok(JobSpec::builder(command.into())
        .args(args.iter().cloned())
        .timeout(JOB_TIMEOUT)
        .build()?)
}

/// Submits `spec`, follows it to the end and calls `on_output` for each chunk on arrival.
pub async fn run(
    client: &HodeiClient,
    spec: &JobSpec,
    include_output: bool,
    mut on_output: impl FnMut(&OutputChunk),
) -> anyhow::Result<Trace> {
    let start = Instant::now();
    let job = client.submit(spec).await?;
    let submitted = start.elapsed();
    let follow = client.follow(job.id).live();
    let mut events = if include_output {
        follow
    } else {
        follow.states_only()
    }
    .await?;
    let (mut provisioning, mut running) = (None, None);
    let (mut first_output, mut last_output) = (None, None);
    while let Some(event) = events.next().await {
        match event? {
            JobEvent::Output(chunk) => {
                let now = start.elapsed();
                first_output.get_or_insert(now);
                last_output = Some(now);
                on_output(&chunk);
            }
            JobEvent::State { state, .. } => match state {
                JobState::Provisioning => {
                    provisioning.get_or_insert_with(|| start.elapsed());
                }
                JobState::Running => {
                    running.get_or_insert_with(|| start.elapsed());
                }
                state if state.is_terminal() => {
                    return Ok(Trace {
                        id: job.id,
                        start,
                        submitted,
                        provisioning,
                        running,
                        first_output,
                        last_output,
                        terminal: start.elapsed(),
                        state,
                    });
                }
                _ => {}
            },
        }
    }
    bail!(
        "the follow stream of job {} ended before a terminal state",
        job.id
    )
}

/// Milliseconds of a duration.
#[must_use]
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}
