//! One job's life: queue, provision, register, run, stop, record, and always clean up.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::{
    sync::{OwnedSemaphorePermit, mpsc, oneshot, watch},
    time::{Instant, sleep, sleep_until, timeout},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    Assignment, FromWorker, Inner, PendingWorker, StopReason, ToWorker, WorkerLink, WorkerOutcome,
    interrupted,
};
use crate::{
    job::{FailureReason, Job, JobState, WorkerId},
    observe,
    provider::{Provider, ProviderError, WorkerEvent, WorkerLaunch},
};

const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
const DESTROY_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) struct JobRun {
    inner: Arc<Inner>,
    job: Job,
    provider: Arc<dyn Provider>,
    status: watch::Sender<Job>,
    cancel: CancellationToken,
}

/// Why the run loop stopped waiting.
enum Interrupt {
    Cancelled,
    Shutdown,
}

/// Removes the worker even if the job task is dropped or panics.
struct WorkerGuard {
    inner: Arc<Inner>,
    provider: Arc<dyn Provider>,
    worker_id: WorkerId,
    armed: bool,
}

impl WorkerGuard {
    async fn destroy(mut self) {
        self.armed = false;
        destroy_worker(
            Arc::clone(&self.inner),
            Arc::clone(&self.provider),
            self.worker_id,
        )
        .await;
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        if self.armed
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            handle.spawn(destroy_worker(
                Arc::clone(&self.inner),
                Arc::clone(&self.provider),
                self.worker_id,
            ));
        }
    }
}

async fn destroy_worker(inner: Arc<Inner>, provider: Arc<dyn Provider>, worker_id: WorkerId) {
    inner.sessions.forget(worker_id);
    inner.tokens.revoke(worker_id);
    match timeout(DESTROY_TIMEOUT, provider.destroy(worker_id)).await {
        Ok(Ok(())) => debug!(worker.id = %worker_id, "worker destroyed"),
        Ok(Err(error)) => {
            warn!(worker.id = %worker_id, %error, "destroying the worker failed; the orphan sweep will retry")
        }
        Err(_) => {
            warn!(worker.id = %worker_id, "destroying the worker timed out; the orphan sweep will retry")
        }
    }
    if inner.lock_workers().remove(&worker_id) {
        observe::worker_count(provider.name(), -1.0);
    }
}

impl JobRun {
    pub(super) fn new(
        inner: Arc<Inner>,
        job: Job,
        provider: Arc<dyn Provider>,
        status: watch::Sender<Job>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            inner,
            job,
            provider,
            status,
            cancel,
        }
    }

    pub(super) async fn run(mut self) {
        let mut guard = None;
        let state = self.drive(&mut guard).await;
        self.inner.logs.close(self.job.id);
        let finished_at = OffsetDateTime::now_utc();
        self.job.finished_at = Some(finished_at);
        info!(state = %state, "job finished");
        observe::job_finished(
            &state,
            (finished_at - self.job.created_at)
                .try_into()
                .unwrap_or_default(),
        );
        self.set_state(state).await;
        self.inner.lock_active().remove(&self.job.id);
        if let Some(guard) = guard {
            guard.destroy().await;
        }
    }

    async fn drive(&mut self, guard: &mut Option<WorkerGuard>) -> JobState {
        let _permit = match self.wait_for_slot().await {
            Ok(permit) => permit,
            Err(interrupt) => return self.interrupted_before_start(interrupt),
        };
        observe::start_phase("queued", self.since_created());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let worker_id = WorkerId::new();
            self.job.worker_id = Some(worker_id);
            self.set_state(JobState::Provisioning).await;
            let capabilities = self.provider.capabilities();
            let token = self
                .inner
                .tokens
                .issue(worker_id, capabilities.registration_timeout);
            let (attach_tx, attach_rx) = oneshot::channel();
            let Some(log) = self.inner.logs.live(self.job.id) else {
                return JobState::Failed {
                    reason: FailureReason::WorkerLost {
                        message: "the job log was closed before the worker started".into(),
                    },
                };
            };
            self.inner.sessions.expect(
                worker_id,
                PendingWorker {
                    job_id: self.job.id,
                    log,
                    attach: attach_tx,
                },
            );
            self.inner.lock_workers().insert(worker_id);
            *guard = Some(WorkerGuard {
                inner: Arc::clone(&self.inner),
                provider: Arc::clone(&self.provider),
                worker_id,
                armed: true,
            });
            let launch = WorkerLaunch {
                worker_id,
                job_id: self.job.id,
                spec: self.job.spec.clone(),
                server_address: self.inner.config.advertise_address.clone(),
                otp_token: token,
            };
            let span = info_span!("provision", worker.id = %worker_id);
            let provision_started = Instant::now();
            observe::worker_count(self.provider.name(), 1.0);
            let provisioned = tokio::select! {
                result = timeout(self.inner.config.provision_timeout, self.provider.provision(launch)).instrument(span) => result,
                interrupt = self.interrupted() => return self.interrupted_before_start(interrupt),
            };
            match provisioned {
                Ok(Ok(worker)) => {
                    observe::start_phase("provisioning", provision_started.elapsed());
                    info!(worker.id = %worker_id, where = %worker.description, "worker provisioned");
                    return self
                        .await_registration(worker_id, attach_rx, worker.events)
                        .await;
                }
                Ok(Err(error)) if error.retryable => {
                    if let Some(guard) = guard.take() {
                        guard.destroy().await;
                    }
                    if let Err(interrupt) = self.back_off(&error, attempt).await {
                        return self.interrupted_before_start(interrupt);
                    }
                }
                Ok(Err(error)) => return self.provider_failure(&error.reason, &error.message),
                Err(_) => {
                    return self.provider_failure(
                        "ProvisionTimeout",
                        &format!(
                            "the provider did not create the worker within {}",
                            humantime::format_duration(self.inner.config.provision_timeout)
                        ),
                    );
                }
            }
        }
    }

    async fn wait_for_slot(&mut self) -> Result<Option<OwnedSemaphorePermit>, Interrupt> {
        let Some(slots) = self.inner.slots.get(self.provider.name()).cloned() else {
            return Ok(None);
        };
        if slots.available_permits() == 0 {
            self.set_detail(format!(
                "waiting for a free {} worker slot",
                self.provider.name()
            ))
            .await;
        }
        tokio::select! {
            permit = slots.acquire_owned() => Ok(permit.ok()),
            interrupt = self.interrupted() => Err(interrupt),
        }
    }

    async fn back_off(&mut self, error: &ProviderError, attempt: u32) -> Result<(), Interrupt> {
        let delay = MAX_RETRY_BACKOFF.min(Duration::from_secs(1u64 << attempt.min(5)));
        warn!(%error, retry_in = ?delay, "provider refused the worker for now; job stays queued");
        self.job.worker_id = None;
        observe::phase_changed(&self.job.state, &JobState::Queued);
        self.job.state = JobState::Queued;
        self.set_detail(format!("waiting: {error}")).await;
        tokio::select! {
            () = sleep(delay) => Ok(()),
            interrupt = self.interrupted() => Err(interrupt),
        }
    }

    async fn await_registration(
        &mut self,
        worker_id: WorkerId,
        attach: oneshot::Receiver<WorkerLink>,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
    ) -> JobState {
        let waited = self.provider.capabilities().registration_timeout;
        let started = Instant::now();
        let deadline = started + waited;
        // Registration counts from placement when the provider reports one.
        let mut placed_at: Option<Instant> = None;
        tokio::pin!(attach);
        loop {
            tokio::select! {
                link = &mut attach => {
                    let Ok(link) = link else {
                        return worker_lost("the worker's registration was dropped");
                    };
                    observe::start_phase("registration", placed_at.unwrap_or(started).elapsed());
                    info!(worker.id = %worker_id, "worker registered");
                    let unplaced_since = placed_at.is_none().then_some(started);
                    return self.run_on_worker(link, events, unplaced_since).await;
                }
                event = events.recv() => match event {
                    Some(WorkerEvent::Scheduled { detail }) => {
                        observe::start_phase("scheduling", started.elapsed());
                        placed_at = Some(Instant::now());
                        self.set_detail(detail).await;
                    }
                    Some(WorkerEvent::Progress { detail }) => self.set_detail(detail).await,
                    Some(WorkerEvent::Exited { exit, message }) => {
                        let how = exit.map_or_else(|| message.clone(), |e| e.to_string());
                        return self.provider_failure("WorkerExited", &format!("worker exited before registering ({how})"));
                    }
                    Some(WorkerEvent::Failed { reason, message }) => return self.provider_failure(&reason, &message),
                    None => return self.provider_failure("WorkerGone", "the provider stopped reporting on the worker"),
                },
                () = sleep_until(deadline) => {
                    return JobState::Failed { reason: FailureReason::RegistrationTimeout { waited } };
                }
                interrupt = self.interrupted() => return self.interrupted_before_start(interrupt),
            }
        }
    }

    /// Runs the job on a registered worker. `unplaced_since` is when the worker was
    /// created, if its placement has not been reported yet (a watch can lag behind the
    /// worker's own connection).
    async fn run_on_worker(
        &mut self,
        mut link: WorkerLink,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
        mut unplaced_since: Option<Instant>,
    ) -> JobState {
        let config = self.inner.config.clone();
        let assignment = Assignment {
            job_id: self.job.id,
            spec: self.job.spec.clone(),
            heartbeat_interval: config.heartbeat_interval,
            kill_grace: config.kill_grace,
        };
        if link
            .to_worker
            .send(ToWorker::Assign(Box::new(assignment)))
            .await
            .is_err()
        {
            return worker_lost("the worker disconnected before it got the job");
        }
        self.job.started_at = Some(OffsetDateTime::now_utc());
        self.job.detail = None;
        self.set_state(JobState::Running).await;

        let running_since = Instant::now();
        let mut first_output = true;
        let timeout_at = running_since + self.job.spec.timeout;
        let mut heartbeat_deadline = Instant::now() + config.heartbeat_timeout;
        let mut stopping: Option<(StopReason, Instant)> = None;
        let mut events_open = true;
        loop {
            let stop_deadline = stopping.map(|(_, at)| at);
            tokio::select! {
                message = link.from_worker.recv() => match message {
                    Some(FromWorker::Alive) => heartbeat_deadline = Instant::now() + config.heartbeat_timeout,
                    Some(FromWorker::Output) => {
                        heartbeat_deadline = Instant::now() + config.heartbeat_timeout;
                        if std::mem::take(&mut first_output) {
                            observe::start_phase("first_output", running_since.elapsed());
                        }
                    }
                    Some(FromWorker::Result { outcome, last_seq }) => {
                        self.check_output_complete(last_seq);
                        let _ = link.to_worker.send(ToWorker::ResultAccepted).await;
                        return finished_state(&outcome, stopping.map(|(r, _)| r), self.job.spec.timeout);
                    }
                    Some(FromWorker::Broken(message)) => return self.lost_or_stopped(stopping, &message),
                    None => return self.lost_or_stopped(stopping, "the worker's stream closed without a result"),
                },
                event = events.recv(), if events_open => match event {
                    Some(WorkerEvent::Scheduled { detail }) => {
                        if let Some(created) = unplaced_since.take() {
                            observe::start_phase("scheduling", created.elapsed());
                        }
                        debug!(%detail, "worker placed after it registered");
                    }
                    Some(WorkerEvent::Progress { detail }) => debug!(%detail, "worker progress"),
                    Some(WorkerEvent::Exited { exit, message }) => {
                        let how = exit.map_or(message, |e| e.to_string());
                        return self.lost_or_stopped(stopping, &format!("worker exited before reporting a result ({how})"));
                    }
                    Some(WorkerEvent::Failed { reason, message }) => {
                        if let Some((reason, _)) = stopping {
                            return stopped_without_result(reason, self.job.spec.timeout);
                        }
                        return self.provider_failure(&reason, &message);
                    }
                    None => events_open = false,
                },
                () = sleep_until(heartbeat_deadline) => {
                    return self.lost_or_stopped(stopping, &format!(
                        "no heartbeat for {}", humantime::format_duration(config.heartbeat_timeout)
                    ));
                }
                () = sleep_until(timeout_at), if stopping.is_none() => {
                    info!("job timed out; stopping it");
                    stopping = Some((StopReason::TimedOut, Instant::now() + config.kill_grace + config.result_grace));
                    let _ = link.to_worker.send(ToWorker::Stop(StopReason::TimedOut)).await;
                }
                interrupt = self.interrupted(), if stopping.is_none() => {
                    let reason = match interrupt {
                        Interrupt::Cancelled => StopReason::Cancelled,
                        Interrupt::Shutdown => StopReason::Shutdown,
                    };
                    info!(?reason, "stopping the job");
                    stopping = Some((reason, Instant::now() + config.kill_grace + config.result_grace));
                    let _ = link.to_worker.send(ToWorker::Stop(reason)).await;
                }
                () = sleep_until(stop_deadline.unwrap_or_else(Instant::now)), if stop_deadline.is_some() => {
                    warn!("the worker did not report after being stopped; removing it");
                    let reason = stopping.map_or(StopReason::Cancelled, |(r, _)| r);
                    return stopped_without_result(reason, self.job.spec.timeout);
                }
            }
        }
    }

    fn check_output_complete(&mut self, last_seq: u64) {
        let stored = self
            .inner
            .logs
            .live(self.job.id)
            .map_or(0, |log| log.last_seq());
        if stored != last_seq {
            warn!(
                stored,
                reported = last_seq,
                "worker reported more output than was stored"
            );
            self.job.detail = Some(format!(
                "output incomplete: {stored} of {last_seq} chunks stored"
            ));
        }
    }

    fn lost_or_stopped(&self, stopping: Option<(StopReason, Instant)>, message: &str) -> JobState {
        if let Some((reason, _)) = stopping {
            return stopped_without_result(reason, self.job.spec.timeout);
        }
        warn!(message, "worker lost");
        worker_lost(message)
    }

    fn provider_failure(&self, reason: &str, message: &str) -> JobState {
        warn!(reason, message, "provider failure");
        JobState::Failed {
            reason: FailureReason::ProviderFailure {
                provider: self.provider.name().to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
            },
        }
    }

    fn interrupted_before_start(&self, interrupt: Interrupt) -> JobState {
        match interrupt {
            Interrupt::Cancelled => JobState::Cancelled { exit: None },
            Interrupt::Shutdown => interrupted(),
        }
    }

    async fn interrupted(&self) -> Interrupt {
        tokio::select! {
            biased;
            () = self.inner.shutdown.cancelled() => Interrupt::Shutdown,
            () = self.cancel.cancelled() => Interrupt::Cancelled,
        }
    }

    async fn set_state(&mut self, state: JobState) {
        observe::phase_changed(&self.job.state, &state);
        self.job.state = state;
        self.publish().await;
    }

    fn since_created(&self) -> Duration {
        (OffsetDateTime::now_utc() - self.job.created_at)
            .try_into()
            .unwrap_or_default()
    }

    async fn set_detail(&mut self, detail: String) {
        if self.job.detail.as_deref() == Some(detail.as_str()) {
            return;
        }
        self.job.detail = Some(detail);
        self.publish().await;
    }

    async fn publish(&mut self) {
        if let Err(error) = self.inner.store.update(&self.job).await {
            warn!(%error, "storing the job state failed");
        }
        self.status.send_replace(self.job.clone());
    }
}

fn worker_lost(message: &str) -> JobState {
    JobState::Failed {
        reason: FailureReason::WorkerLost {
            message: message.to_owned(),
        },
    }
}

fn finished_state(
    outcome: &WorkerOutcome,
    stopped: Option<StopReason>,
    limit: Duration,
) -> JobState {
    let exit = match outcome {
        WorkerOutcome::Exit(exit) => Some(*exit),
        WorkerOutcome::SpawnFailed(_) => None,
    };
    match stopped {
        Some(StopReason::TimedOut) => {
            return JobState::TimedOut {
                timeout: limit,
                exit,
            };
        }
        Some(StopReason::Cancelled) => return JobState::Cancelled { exit },
        Some(StopReason::Shutdown) => return interrupted(),
        None => {}
    }
    match outcome {
        WorkerOutcome::Exit(exit) => JobState::from_exit(*exit),
        WorkerOutcome::SpawnFailed(message) => JobState::Failed {
            reason: FailureReason::CommandNotStarted {
                message: message.clone(),
            },
        },
    }
}

fn stopped_without_result(reason: StopReason, limit: Duration) -> JobState {
    match reason {
        StopReason::TimedOut => JobState::TimedOut {
            timeout: limit,
            exit: None,
        },
        StopReason::Cancelled => JobState::Cancelled { exit: None },
        StopReason::Shutdown => interrupted(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ProcessExit;

    #[test]
    fn a_stopped_job_keeps_the_reason_it_was_stopped_for() {
        let limit = Duration::from_secs(5);
        let killed = WorkerOutcome::Exit(ProcessExit::Signal(15));
        assert_eq!(
            finished_state(&killed, Some(StopReason::TimedOut), limit),
            JobState::TimedOut {
                timeout: limit,
                exit: Some(ProcessExit::Signal(15))
            }
        );
        assert_eq!(
            finished_state(&killed, Some(StopReason::Cancelled), limit),
            JobState::Cancelled {
                exit: Some(ProcessExit::Signal(15))
            }
        );
        assert_eq!(
            finished_state(&killed, None, limit),
            JobState::from_exit(ProcessExit::Signal(15))
        );
        assert!(matches!(
            finished_state(&WorkerOutcome::SpawnFailed("nope".into()), None, limit),
            JobState::Failed {
                reason: FailureReason::CommandNotStarted { .. }
            }
        ));
    }
}
