//! Taking over at start what the previous server process left: jobs whose command was
//! handed to a worker are adopted (the job keeps its state and waits for its worker to
//! re-attach), jobs that had not started are queued again, and workers that belong to no
//! live job are removed.

use std::{collections::HashMap, sync::Arc};

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    ActiveJob, Inner,
    job_run::{Adoption, JobRun, Start},
    outcome,
    worker_guard::{self, WorkerGuard},
};
use crate::{
    job::{Job, JobState, WorkerId},
    observe,
    provider::Provider,
    store::{StoreError, WorkerRecord},
};

/// Runs to start once the orphan sweep has seen which workers are taken.
pub(super) type Recovered = Vec<(Job, JobRun)>;

/// Reads the jobs that were not finished when the server last stopped and decides each
/// one's fate. Adopted workers are known to this process when this returns, so an orphan
/// sweep after it leaves them alone.
pub(super) async fn recover(inner: &Arc<Inner>) -> Result<Recovered, StoreError> {
    let mut records: HashMap<WorkerId, WorkerRecord> = inner
        .store
        .workers()
        .await?
        .into_iter()
        .map(|record| (record.worker_id, record))
        .collect();
    let mut runs = Vec::new();
    // Every record left in `records` at the end names a worker no job takes over.
    for job in inner.store.unfinished().await? {
        let adoptable = job
            .worker_id
            .and_then(|id| records.get(&id))
            .filter(|record| record.job_id == job.id && record.resume_digest.is_some())
            .cloned();
        let Some(provider) = inner.providers.get(&job.provider).cloned() else {
            warn!(job.id = %job.id, provider = %job.provider, "the job's provider is not configured any more");
            fail(inner, job, "its provider is not configured any more").await?;
            continue;
        };
        match adoptable {
            Some(record) => {
                let worker_id = record.worker_id;
                match adopt(inner, job.clone(), provider, record) {
                    Ok(run) => {
                        records.remove(&worker_id);
                        runs.push((job, run));
                    }
                    Err(error) => {
                        warn!(job.id = %job.id, %error, "reopening the job's log failed");
                        fail(inner, job, "its log could not be reopened").await?;
                    }
                }
            }
            // Started by a server that kept no way to find its worker again.
            None if job.state == JobState::Running => {
                fail(inner, job, "its worker cannot be found again").await?;
            }
            // Its command never reached a worker: running it now runs it once.
            None => match requeue(inner, job.clone(), provider).await {
                Ok(run) => runs.push((job, run)),
                Err(error) => {
                    warn!(job.id = %job.id, %error, "reopening the job's log failed");
                    fail(inner, job, "its log could not be reopened").await?;
                }
            },
        }
    }
    for record in records.into_values() {
        inner
            .tasks
            .spawn(remove_leftover(Arc::clone(inner), record));
    }
    Ok(runs)
}

/// Takes over a job whose worker got its command: the worker may re-attach with the
/// credential whose digest the store kept.
fn adopt(
    inner: &Arc<Inner>,
    job: Job,
    provider: Arc<dyn Provider>,
    record: WorkerRecord,
) -> std::io::Result<JobRun> {
    let log = inner.logs.reopen(job.id)?;
    let (relink, relinks) = mpsc::channel(1);
    inner
        .registrations
        .resumes()
        .allow(record.clone(), log, relink);
    let guard = WorkerGuard::new(Arc::clone(inner), Arc::clone(&provider), record.worker_id);
    info!(job.id = %job.id, worker.id = %record.worker_id, "taking over a running job");
    let (status, cancel) = activate(inner, &job);
    if record.cancel_requested {
        // Asked before the restart: the stop goes out once the worker is back.
        info!(job.id = %job.id, "the job was being cancelled; cancelling it again");
        cancel.cancel();
    }
    Ok(JobRun::new(
        Arc::clone(inner),
        job,
        provider,
        status,
        cancel,
        Start::Adopted(Adoption {
            record,
            guard,
            relinks,
        }),
    ))
}

/// Queues again a job that had not started.
async fn requeue(
    inner: &Arc<Inner>,
    mut job: Job,
    provider: Arc<dyn Provider>,
) -> std::io::Result<JobRun> {
    inner.logs.reopen(job.id)?;
    if job.state != JobState::Queued || job.worker_id.is_some() {
        job.state = JobState::Queued;
        job.worker_id = None;
        job.detail = Some("queued again: the server restarted before the job started".into());
    }
    info!(job.id = %job.id, "queueing again a job that had not started");
    observe::job_requeued();
    let ticket = inner.admission.requeue(&job.owner);
    let (status, cancel) = activate(inner, &job);
    // The new state is written by the run's first step; readers see it in memory now.
    let _ = super::store_writes::write(inner, &job).await;
    Ok(JobRun::new(
        Arc::clone(inner),
        job,
        provider,
        status,
        cancel,
        Start::Queued(ticket),
    ))
}

/// Makes `job` active: readers find it in memory from now on.
fn activate(inner: &Inner, job: &Job) -> (watch::Sender<Job>, CancellationToken) {
    let (status, _) = watch::channel(job.clone());
    let cancel = CancellationToken::new();
    inner.lock_active().insert(
        job.id,
        ActiveJob {
            status: status.clone(),
            cancel: cancel.clone(),
        },
    );
    (status, cancel)
}

/// Ends a job that cannot go on after the restart.
async fn fail(inner: &Inner, mut job: Job, why: &str) -> Result<(), StoreError> {
    warn!(job.id = %job.id, state = job.state.phase_name(), why, "a job that was active when the server stopped cannot go on");
    job.state = outcome::server_stopped();
    job.detail = Some(format!("the server restarted and {why}"));
    job.finished_at = Some(OffsetDateTime::now_utc());
    inner.store.update(&job).await
}

/// Removes a worker an earlier process started for a job that is over (or never got it),
/// the way any worker is removed, once its provider has found it again.
async fn remove_leftover(inner: Arc<Inner>, record: WorkerRecord) {
    let worker_id = record.worker_id;
    let Some(provider) = inner.providers.get(&record.provider).cloned() else {
        warn!(worker.id = %worker_id, provider = %record.provider, "a leftover worker's provider is not configured; forgetting it");
        let _ = inner.store.remove_worker(worker_id).await;
        return;
    };
    if let Ok(None) = provider.adopt(worker_id, record.locator.as_deref()).await {
        // Gone already: only its record is left.
        if let Err(error) = inner.store.remove_worker(worker_id).await {
            warn!(worker.id = %worker_id, error = %crate::server::error_chain(&error), "forgetting a removed worker failed");
        }
        return;
    }
    info!(worker.id = %worker_id, "removing a worker whose job is over");
    worker_guard::destroy_worker(inner, provider, worker_id).await;
}
