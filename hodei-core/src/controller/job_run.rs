//! One job's life: queue, provision, register, run, stop, record, and always clean up.
//!
//! The decisions are pure functions in `outcome`, the phase timing lives in
//! `start_timeline`, and the worker's removal in `worker_guard`; this file waits on the
//! provider, the worker and the clock, and changes the job's state through one path.

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Instant, sleep, sleep_until, timeout},
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    Assignment, FromWorker, Inner, PendingWorker, ShutdownMode, StopReason, ToWorker, WorkerLink,
    admission::QueueTicket,
    outcome, resume, retry,
    scheduler::{Slot, Turn},
    start_timeline::StartTimeline,
    store_writes::{self, Written},
    worker_guard::WorkerGuard,
};
use crate::{
    job::{Attempt, FailureClass, FailureReason, Job, JobState, WorkerId},
    logs::{OutputChunk, OutputStream},
    observe,
    provider::{Provider, ProviderError, ProvisionedWorker, WorkerEvent, WorkerLaunch},
    store::WorkerRecord,
};

const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// The job's detail while its worker's stream is broken.
const RECONNECTING: &str = "worker reconnecting";

pub(super) struct JobRun {
    inner: Arc<Inner>,
    job: Job,
    provider: Arc<dyn Provider>,
    status: watch::Sender<Job>,
    cancel: CancellationToken,
    timeline: StartTimeline,
    /// The job's place in the queue while it waits; `None` once it left the queue.
    queued: Option<QueueTicket>,
    /// Set when the server refused to store more of the job's output: how it ends.
    refused: Option<FailureReason>,
    /// What the store keeps of the job's worker, once it has one.
    worker_record: Option<WorkerRecord>,
    /// For a job a restarted server took over: its worker, until the run starts on it.
    adoption: Option<Adoption>,
    /// Set while an adopted job's worker has not re-attached yet.
    awaiting_adopted: bool,
}

/// Where a run starts.
pub(super) enum Start {
    /// In the queue, holding its place.
    Queued(QueueTicket),
    /// On a worker an earlier server process started: it waits for the worker to
    /// re-attach and goes on from there.
    Adopted(Adoption),
}

/// A job that was running when the server last stopped, taken over by this process.
pub(super) struct Adoption {
    /// What the store kept of its worker, with the digest of its resume credential.
    pub record: WorkerRecord,
    /// The worker, known to this process (so no sweep takes it for an orphan).
    pub guard: WorkerGuard,
    /// Where the worker's new stream arrives when it resumes.
    pub relinks: mpsc::Receiver<WorkerLink>,
}

/// A worker the provider created, waiting for it to register.
struct CreatedWorker {
    worker_id: WorkerId,
    attach: oneshot::Receiver<WorkerLink>,
    events: mpsc::UnboundedReceiver<WorkerEvent>,
}

/// Why a provisioning attempt gave no worker.
enum NoWorker {
    /// The provider refused for now; the job waits and tries again.
    Refused(ProviderError),
    /// The job ended.
    Ended(JobState),
}

/// The server asked the worker to stop the job, and waits for its result until `deadline`.
#[derive(Debug, Clone, Copy)]
struct Stopping {
    reason: StopReason,
    deadline: Instant,
}

impl JobRun {
    pub(super) fn new(
        inner: Arc<Inner>,
        job: Job,
        provider: Arc<dyn Provider>,
        status: watch::Sender<Job>,
        cancel: CancellationToken,
        start: Start,
    ) -> Self {
        let timeline = StartTimeline::new(job.created_at);
        let (queued, adoption) = match start {
            Start::Queued(ticket) => (Some(ticket), None),
            Start::Adopted(adoption) => (None, Some(adoption)),
        };
        Self {
            inner,
            job,
            provider,
            status,
            cancel,
            timeline,
            queued,
            refused: None,
            worker_record: None,
            adoption,
            awaiting_adopted: false,
        }
    }

    pub(super) async fn run(mut self) {
        let holds = self.inner.config.on_shutdown == ShutdownMode::HoldJobs;
        let shutdown = self.inner.shutdown.clone();
        let (state, guard) = loop {
            let mut guard = None;
            let driven = tokio::select! {
                state = self.drive(&mut guard) => Some(state),
                () = shutdown.cancelled(), if holds => None,
            };
            let Some(state) = driven else {
                return self.hold(guard).await;
            };
            let state = outcome::refused(state, self.refused.take());
            let retry = retry::decide(
                &state,
                &self.job.spec,
                &self.job.attempts,
                &self.inner.config.retry,
            );
            match retry {
                Some(retry) if !self.cancel.is_cancelled() && !shutdown.is_cancelled() => {
                    if let Err(reason) = self.again(state, retry, guard).await {
                        break (self.stopped_without_result(reason), None);
                    }
                }
                _ => break (state, guard),
            }
        };
        self.queued = None;
        // The log is on disk before the final state is: a stored end implies its output.
        if let Err(error) = self.inner.logs.close(self.job.id).await {
            warn!(%error, "syncing the job log failed; its end may be lost in a machine crash");
            observe::log_sync_failed();
            let note = "the log may be incomplete after a machine crash: syncing it failed";
            self.job.detail = Some(match self.job.detail.take() {
                Some(detail) => format!("{detail}; {note}"),
                None => note.to_owned(),
            });
        }
        let finished_at = OffsetDateTime::now_utc();
        self.job.finished_at = Some(finished_at);
        info!(state = %state, "job finished");
        observe::job_finished(
            &state,
            (finished_at - self.job.created_at)
                .try_into()
                .unwrap_or_default(),
        );
        // A final state the store refused keeps the job in memory, where readers find it,
        // until the background retrier has stored it.
        if self.set_state(state).await == Written::Stored
            || !self.inner.store_writes.is_pending(self.job.id)
        {
            self.inner.lock_active().remove(&self.job.id);
        }
        if let Some(guard) = guard {
            guard.destroy().await;
        }
    }

    /// Ends the current attempt with `state` and queues the job to run again on a new
    /// worker after the retry's wait: the attempt is recorded with the job, its worker
    /// removed, and the log marks where the next attempt starts. An error when the job is
    /// stopped while it waits.
    async fn again(
        &mut self,
        state: JobState,
        retry: retry::Retry,
        guard: Option<WorkerGuard>,
    ) -> Result<(), StopReason> {
        let number = self.job.attempt();
        warn!(attempt = number, class = %retry.class, %state, retry_in = ?retry.delay, "the attempt failed; the job runs again");
        observe::job_retried(retry.class);
        if let Some(guard) = guard {
            guard.destroy().await;
        }
        self.job.attempts.push(Attempt {
            number,
            worker_id: self.job.worker_id.take(),
            state: state.clone(),
            started_at: self.job.started_at.take(),
            finished_at: OffsetDateTime::now_utc(),
        });
        self.mark_attempt(number + 1, retry.class, &state);
        self.refused = None;
        self.worker_record = None;
        self.awaiting_adopted = false;
        self.timeline = StartTimeline::new(OffsetDateTime::now_utc());
        self.queued = Some(self.inner.admission.requeue(&self.job.owner));
        self.job.detail = Some(format!(
            "attempt {} in {}: attempt {number} failed ({} failure: {state})",
            number + 1,
            humantime::format_duration(Duration::from_secs(retry.delay.as_secs().max(1))),
            retry.class
        ));
        self.set_state(JobState::Queued).await;
        tokio::select! {
            () = sleep(retry.delay) => Ok(()),
            reason = self.stop_requested() => Err(reason),
        }
    }

    /// Writes where attempt `number` starts into the job's log, on stderr, so followers
    /// see it between the attempts' output.
    fn mark_attempt(&self, number: u32, class: FailureClass, previous: &JobState) {
        let Some(log) = self.inner.logs.live(self.job.id) else {
            return;
        };
        let text = format!(
            "hodei: attempt {number} of job {} starts; attempt {} failed ({class} failure: {previous})\n",
            self.job.id,
            number - 1
        );
        let marker = OutputChunk {
            seq: log.last_seq() + 1,
            stream: OutputStream::Stderr,
            data: text.into_bytes().into(),
            emitted_at_us: crate::logs::now_us(),
        };
        if let Err(error) = log.append_within(&[marker], u64::MAX) {
            warn!(%error, "marking the next attempt in the log failed");
        }
    }

    /// The server is shutting down and holds its jobs for the next server process: a job
    /// whose command was handed to its worker keeps running, and its worker re-attaches
    /// to the next process; a job that had not started goes back to the queue.
    async fn hold(mut self, guard: Option<WorkerGuard>) {
        self.queued = None;
        let started = self
            .worker_record
            .as_ref()
            .is_some_and(|record| record.resume_digest.is_some());
        if started {
            if let Some(guard) = guard {
                guard.release();
            }
            info!("the server is shutting down; the job keeps running for the next server process");
        } else {
            if let Some(guard) = guard {
                guard.destroy().await;
            }
            if self.job.state != JobState::Queued {
                self.job.worker_id = None;
                self.job.detail =
                    Some("queued again: the server stopped before the job started".to_owned());
                self.set_state(JobState::Queued).await;
            }
        }
        if let Err(error) = self.inner.logs.close(self.job.id).await {
            warn!(%error, "syncing the job log failed");
        }
        self.inner.lock_active().remove(&self.job.id);
    }

    async fn drive(&mut self, guard: &mut Option<WorkerGuard>) -> JobState {
        if let Some(adoption) = self.adoption.take() {
            return self.drive_adopted(adoption, guard).await;
        }
        let _permit = match self.wait_for_slot().await {
            Ok(permit) => permit,
            Err(reason) => return self.stopped_without_result(reason),
        };
        self.queued = None;
        self.timeline.dequeued();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.provision(guard).await {
                Ok(worker) => return self.await_registration(worker).await,
                Err(NoWorker::Ended(state)) => return state,
                Err(NoWorker::Refused(error)) => {
                    if let Some(guard) = guard.take() {
                        guard.destroy().await;
                    }
                    if let Err(reason) = self.back_off(&error, attempt).await {
                        return self.stopped_without_result(reason);
                    }
                }
            }
        }
    }

    /// Waits in line for a worker slot, saying in the job's detail where it stands.
    async fn wait_for_slot(&mut self) -> Result<Slot, StopReason> {
        let mut waiting = self.inner.scheduler.wait(
            &self.job.owner,
            self.provider.name(),
            self.job.spec.priority,
        );
        loop {
            tokio::select! {
                turn = waiting.next() => match turn {
                    Turn::Admitted(slot) => {
                        // Its place in line is past; the next state says what happens now.
                        if self.job.detail.as_ref().is_some_and(|d| d.starts_with("queued:")) {
                            self.job.detail = None;
                        }
                        return Ok(slot);
                    }
                    Turn::Detail(detail) => self.set_detail(detail).await,
                },
                reason = self.stop_requested() => return Err(reason),
            }
        }
    }

    /// Asks the provider for a worker, which `guard` then owns.
    async fn provision(
        &mut self,
        guard: &mut Option<WorkerGuard>,
    ) -> Result<CreatedWorker, NoWorker> {
        let worker_id = WorkerId::new();
        self.job.worker_id = Some(worker_id);
        self.set_state(JobState::Provisioning).await;
        let Some(log) = self.inner.logs.live(self.job.id) else {
            return Err(NoWorker::Ended(outcome::worker_lost(
                "the job log was closed before the worker started",
            )));
        };
        let (attach_tx, attach) = oneshot::channel();
        let token = self.inner.registrations.expect(
            worker_id,
            PendingWorker {
                job_id: self.job.id,
                first_seq: log.last_seq() + 1,
                log,
                attach: attach_tx,
            },
            &self.provider,
            self.provider.capabilities().registration_timeout,
        );
        *guard = Some(WorkerGuard::new(
            Arc::clone(&self.inner),
            Arc::clone(&self.provider),
            worker_id,
        ));
        let launch = WorkerLaunch {
            worker_id,
            job_id: self.job.id,
            spec: self.job.spec.clone(),
            server_address: self.inner.config.advertise_address.clone(),
            reconnect_window: self.inner.config.reconnect_window,
            otp_token: token,
        };
        let limit = self.inner.config.provision_timeout;
        let span = info_span!("provision", worker.id = %worker_id);
        self.timeline.provisioning();
        let provisioned = tokio::select! {
            result = timeout(limit, self.provider.provision(launch)).instrument(span) => result,
            reason = self.stop_requested() => return Err(NoWorker::Ended(self.stopped_without_result(reason))),
        };
        match provisioned {
            Ok(Ok(worker)) => {
                self.timeline.created();
                info!(worker.id = %worker_id, where = %worker.description, "worker provisioned");
                self.remember_worker(WorkerRecord {
                    worker_id,
                    job_id: self.job.id,
                    provider: self.provider.name().to_owned(),
                    locator: worker.locator,
                    resume_digest: None,
                    cancel_requested: false,
                })
                .await;
                Ok(CreatedWorker {
                    worker_id,
                    attach,
                    events: worker.events,
                })
            }
            Ok(Err(error)) if error.retryable => Err(NoWorker::Refused(error)),
            Ok(Err(error)) => Err(NoWorker::Ended(
                self.provider_failure(&error.reason, &error.message),
            )),
            Err(_) => Err(NoWorker::Ended(self.provider_failure(
                "ProvisionTimeout",
                &format!(
                    "the provider did not create the worker within {}",
                    humantime::format_duration(limit)
                ),
            ))),
        }
    }

    /// Puts the job back in the queue after a refusal and waits before the next attempt.
    async fn back_off(&mut self, error: &ProviderError, attempt: u32) -> Result<(), StopReason> {
        let delay = MAX_RETRY_BACKOFF.min(Duration::from_secs(1u64 << attempt.min(5)));
        warn!(%error, retry_in = ?delay, "provider refused the worker for now; job stays queued");
        self.job.worker_id = None;
        self.job.detail = Some(format!("waiting: {error}"));
        // Queued again, so counted again; an admitted job is never turned away here.
        let _queued = self.inner.admission.requeue(&self.job.owner);
        self.set_state(JobState::Queued).await;
        tokio::select! {
            () = sleep(delay) => Ok(()),
            reason = self.stop_requested() => Err(reason),
        }
    }

    async fn await_registration(&mut self, worker: CreatedWorker) -> JobState {
        let CreatedWorker {
            worker_id,
            attach,
            mut events,
        } = worker;
        let waited = self.provider.capabilities().registration_timeout;
        let deadline = Instant::now() + waited;
        tokio::pin!(attach);
        loop {
            tokio::select! {
                link = &mut attach => {
                    let Ok(link) = link else {
                        return outcome::worker_lost("the worker's registration was dropped");
                    };
                    self.timeline.registered();
                    info!(worker.id = %worker_id, "worker registered");
                    return self.run_on_worker(worker_id, link, events).await;
                }
                event = events.recv() => match event {
                    Some(WorkerEvent::Scheduled { detail }) => {
                        self.timeline.placed();
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
                reason = self.stop_requested() => return self.stopped_without_result(reason),
            }
        }
    }

    /// Runs the job on a registered worker until it reports a result, goes away, or
    /// stays silent past a deadline. A broken stream is not a lost worker: the job waits
    /// up to the reconnect window for the worker to re-attach on a new stream.
    async fn run_on_worker(
        &mut self,
        worker_id: WorkerId,
        link: WorkerLink,
        events: mpsc::UnboundedReceiver<WorkerEvent>,
    ) -> JobState {
        let config = self.inner.config.clone();
        let limit = self.job.spec.timeout;
        let Some(log) = self.inner.logs.live(self.job.id) else {
            return outcome::worker_lost("the job log was closed before the job started");
        };
        let (relink, relinks) = mpsc::channel(1);
        let (resume_credential, digest) = resume::issue();
        let mut record = self.worker_record.clone().unwrap_or_else(|| WorkerRecord {
            worker_id,
            job_id: self.job.id,
            provider: self.provider.name().to_owned(),
            locator: None,
            resume_digest: None,
            cancel_requested: false,
        });
        record.resume_digest = Some(digest);
        // Stored before the worker gets the job: a job whose command may run is always
        // one a restarted server finds again.
        self.remember_worker(record.clone()).await;
        let first_seq = log.last_seq() + 1;
        self.inner
            .registrations
            .resumes()
            .allow(record, log, relink);
        let assignment = Assignment {
            job_id: self.job.id,
            spec: self.job.spec.clone(),
            heartbeat_interval: config.heartbeat_interval,
            kill_grace: config.kill_grace,
            resume_credential,
            first_seq,
        };
        if link
            .to_worker
            .send(ToWorker::Assign(Box::new(assignment)))
            .await
            .is_err()
        {
            return outcome::worker_lost("the worker disconnected before it got the job");
        }
        self.job.started_at = Some(OffsetDateTime::now_utc());
        self.job.detail = None;
        self.set_state(JobState::Running).await;
        self.timeline.running();
        let timeout_at = Instant::now() + limit;
        self.supervise(worker_id, Some(link), relinks, events, timeout_at)
            .await
    }

    /// Takes over a job whose worker an earlier server process started: finds the worker
    /// through its provider, then waits up to the reconnect window for it to re-attach.
    /// The job's timeout still counts from when it started.
    async fn drive_adopted(
        &mut self,
        adoption: Adoption,
        guard: &mut Option<WorkerGuard>,
    ) -> JobState {
        let Adoption {
            record,
            guard: adopted,
            relinks,
        } = adoption;
        *guard = Some(adopted);
        let worker_id = record.worker_id;
        // It runs already: counted at once, even past a cap.
        let _slot = self
            .inner
            .scheduler
            .take_now(&self.job.owner, self.provider.name());
        let locator = record.locator.clone();
        self.worker_record = Some(record);
        let found = timeout(
            self.inner.config.provision_timeout,
            self.provider.adopt(worker_id, locator.as_deref()),
        )
        .await;
        let events = match found {
            Ok(Ok(Some(worker))) => {
                info!(worker.id = %worker_id, where = %worker.description, "took over the worker of a running job");
                worker.events
            }
            Ok(Ok(None)) => {
                warn!(worker.id = %worker_id, "the worker of a running job was gone when the server started");
                observe::job_lost_after_restart();
                return outcome::worker_lost("the worker was gone when the server restarted");
            }
            Ok(Err(error)) => {
                warn!(worker.id = %worker_id, %error, "the provider cannot look for the worker; waiting for it to re-attach");
                ProvisionedWorker::unobserved("").events
            }
            Err(_) => {
                warn!(worker.id = %worker_id, "the provider did not answer about the worker; waiting for it to re-attach");
                ProvisionedWorker::unobserved("").events
            }
        };
        observe::job_adopted();
        self.awaiting_adopted = true;
        self.set_detail(RECONNECTING.to_owned()).await;
        let timeout_at = Instant::now() + self.time_left();
        let state = self
            .supervise(worker_id, None, relinks, events, timeout_at)
            .await;
        if self.awaiting_adopted
            && matches!(
                &state,
                JobState::Failed {
                    reason: FailureReason::WorkerLost { .. }
                }
            )
        {
            observe::job_lost_after_restart();
        }
        state
    }

    /// What is left of the job's timeout, counted from when it started (by the wall
    /// clock, since it may have started in an earlier server process).
    fn time_left(&self) -> Duration {
        let limit = self.job.spec.timeout;
        let Some(started_at) = self.job.started_at else {
            return limit;
        };
        let ran = OffsetDateTime::now_utc() - started_at;
        limit.saturating_sub(ran.try_into().unwrap_or_default())
    }

    /// Records that the job is to be cancelled, so that a server taking it over after a
    /// restart still stops it.
    async fn remember_cancel(&mut self) {
        if let Some(mut record) = self.worker_record.clone().filter(|r| !r.cancel_requested) {
            record.cancel_requested = true;
            self.remember_worker(record).await;
        }
    }

    /// Keeps what the store knows of the job's worker up to date; a failed write only
    /// means the job cannot be taken over by a restarted server.
    async fn remember_worker(&mut self, record: WorkerRecord) {
        if let Err(error) = self.inner.store.save_worker(&record).await {
            warn!(worker.id = %record.worker_id, error = %crate::server::error_chain(&error), "storing the worker failed; the job will not survive a server restart");
        }
        self.worker_record = Some(record);
    }

    /// Watches a job on its worker until it reports a result, goes away, or stays silent
    /// past a deadline. Without a `link`, the worker's stream starts broken: the job waits
    /// for it to re-attach.
    async fn supervise(
        &mut self,
        worker_id: WorkerId,
        link: Option<WorkerLink>,
        mut relinks: mpsc::Receiver<WorkerLink>,
        mut events: mpsc::UnboundedReceiver<WorkerEvent>,
        timeout_at: Instant,
    ) -> JobState {
        let config = self.inner.config.clone();
        let limit = self.job.spec.timeout;
        let mut heartbeat_deadline = Instant::now() + config.heartbeat_timeout;
        let mut stopping: Option<Stopping> = None;
        // Set while the worker's stream is broken: when the job gives up on it.
        let mut disconnected: Option<Instant> = link
            .is_none()
            .then(|| Instant::now() + config.reconnect_window);
        let mut link = link.unwrap_or_else(WorkerLink::broken);
        let mut events_open = true;
        loop {
            let stop_reason = stopping.map(|s| s.reason);
            let connected = disconnected.is_none();
            tokio::select! {
                message = link.from_worker.recv(), if connected => match message {
                    Some(FromWorker::Alive) => heartbeat_deadline = Instant::now() + config.heartbeat_timeout,
                    Some(FromWorker::Output) => {
                        heartbeat_deadline = Instant::now() + config.heartbeat_timeout;
                        self.timeline.output();
                    }
                    Some(FromWorker::Result { outcome, last_seq }) => {
                        self.check_output_complete(last_seq);
                        let _ = link.to_worker.send(ToWorker::ResultAccepted).await;
                        return outcome::reported(&outcome, stop_reason, limit);
                    }
                    Some(FromWorker::OutputRefused(reason)) => {
                        heartbeat_deadline = Instant::now() + config.heartbeat_timeout;
                        if self.refused.is_none() {
                            warn!(%reason, "output refused; stopping the job");
                            self.refused = Some(reason);
                        }
                        // A job already being stopped keeps its deadline; the refusal
                        // still decides how it ends.
                        if stopping.is_none() {
                            stopping = Some(self.stop(&link, StopReason::OutputRefused).await);
                        }
                    }
                    Some(FromWorker::Violation(message)) => return self.worker_gone(stop_reason, &message),
                    Some(FromWorker::Broken(message)) => {
                        if stop_reason == Some(StopReason::Shutdown) {
                            return self.worker_gone(stop_reason, &message);
                        }
                        disconnected = Some(self.disconnected(&message).await);
                    }
                    None => {
                        if stop_reason == Some(StopReason::Shutdown) {
                            return self.worker_gone(stop_reason, "the worker's stream closed without a result");
                        }
                        disconnected = Some(self.disconnected("the worker's stream closed").await);
                    }
                },
                // A new stream replaces the old one, even one not yet seen broken.
                Some(new_link) = relinks.recv() => {
                    info!(worker.id = %worker_id, "worker re-attached");
                    self.awaiting_adopted = false;
                    link = new_link;
                    disconnected = None;
                    heartbeat_deadline = Instant::now() + config.heartbeat_timeout;
                    if self.job.detail.as_deref() == Some(RECONNECTING) {
                        self.job.detail = None;
                        self.publish().await;
                    }
                    // A stop decided while the worker was away (or perhaps lost with the
                    // old stream) goes out now, with a fresh deadline to report.
                    if let Some(reason) = stop_reason {
                        stopping = Some(self.stop(&link, reason).await);
                    }
                }
                event = events.recv(), if events_open => match event {
                    Some(WorkerEvent::Scheduled { detail }) => {
                        self.timeline.placed();
                        debug!(%detail, "worker placed after it registered");
                    }
                    Some(WorkerEvent::Progress { detail }) => debug!(%detail, "worker progress"),
                    Some(WorkerEvent::Exited { exit, message }) => {
                        let how = exit.map_or(message, |e| e.to_string());
                        return self.worker_gone(stop_reason, &format!("worker exited before reporting a result ({how})"));
                    }
                    Some(WorkerEvent::Failed { reason, message }) => {
                        if let Some(stopped) = stop_reason {
                            return self.stopped_without_result(stopped);
                        }
                        return self.provider_failure(&reason, &message);
                    }
                    None => events_open = false,
                },
                () = sleep_until(heartbeat_deadline), if connected => {
                    return self.worker_gone(stop_reason, &format!(
                        "no heartbeat for {}", humantime::format_duration(config.heartbeat_timeout)
                    ));
                }
                () = sleep_until(disconnected.unwrap_or_else(Instant::now)), if !connected => {
                    return self.worker_gone(stop_reason, &format!(
                        "the worker did not reconnect within {}",
                        humantime::format_duration(config.reconnect_window)
                    ));
                }
                () = sleep_until(timeout_at), if stopping.is_none() => {
                    info!("job timed out; stopping it");
                    stopping = Some(self.stop(&link, StopReason::TimedOut).await);
                }
                reason = self.stop_requested(), if stopping.is_none() => {
                    info!(?reason, "stopping the job");
                    if reason == StopReason::Cancelled {
                        self.remember_cancel().await;
                    }
                    if reason == StopReason::Shutdown && !connected {
                        return self.worker_gone(Some(reason), "the worker was away when the server shut down");
                    }
                    stopping = Some(self.stop(&link, reason).await);
                }
                // Away or not, a stopped job waits no longer than the kill and result
                // graces: removing the worker then ends the job's processes.
                () = sleep_until(stopping.map_or_else(Instant::now, |s| s.deadline)), if stopping.is_some() => {
                    warn!("the worker did not report after being stopped; removing it");
                    return self.stopped_without_result(stop_reason.unwrap_or(StopReason::Cancelled));
                }
            }
        }
    }

    /// The worker's stream broke: the job waits for it to re-attach until the returned
    /// deadline, and says so in its detail.
    async fn disconnected(&mut self, message: &str) -> Instant {
        let window = self.inner.config.reconnect_window;
        warn!(message, reconnect_window = ?window, "the worker's stream broke; waiting for it to reconnect");
        self.set_detail(RECONNECTING.to_owned()).await;
        Instant::now() + window
    }

    /// Tells the worker to stop the job, and gives it the kill grace and the result grace
    /// to report.
    async fn stop(&self, link: &WorkerLink, reason: StopReason) -> Stopping {
        let config = &self.inner.config;
        let _ = link.to_worker.send(ToWorker::Stop(reason)).await;
        Stopping {
            reason,
            deadline: Instant::now() + config.kill_grace + config.result_grace,
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

    fn worker_gone(&self, stopping: Option<StopReason>, message: &str) -> JobState {
        if stopping.is_none() {
            warn!(message, "worker lost");
        }
        outcome::worker_gone(stopping, self.job.spec.timeout, message)
    }

    fn stopped_without_result(&self, reason: StopReason) -> JobState {
        outcome::stopped_without_result(reason, self.job.spec.timeout)
    }

    fn provider_failure(&self, reason: &str, message: &str) -> JobState {
        warn!(reason, message, "provider failure");
        outcome::provider_failure(self.provider.name(), reason, message)
    }

    /// Resolves when someone cancels the job or the server starts shutting down.
    /// A server that holds its jobs across a shutdown does not stop them for it.
    async fn stop_requested(&self) -> StopReason {
        let stops_jobs = self.inner.config.on_shutdown == ShutdownMode::StopJobs;
        tokio::select! {
            biased;
            () = self.inner.shutdown.cancelled(), if stops_jobs => StopReason::Shutdown,
            () = self.cancel.cancelled() => StopReason::Cancelled,
        }
    }

    /// The one way the job's state changes: counted, stored and published.
    async fn set_state(&mut self, state: JobState) -> Written {
        observe::phase_changed(&self.job.state, &state);
        self.job.state = state;
        self.publish().await
    }

    async fn set_detail(&mut self, detail: String) {
        if self.job.detail.as_deref() == Some(detail.as_str()) {
            return;
        }
        self.job.detail = Some(detail);
        self.publish().await;
    }

    /// Readers see the new state at once (from memory while the job is active); the
    /// store gets it after, retried if it fails.
    async fn publish(&mut self) -> Written {
        self.status.send_replace(self.job.clone());
        store_writes::write(&self.inner, &self.job).await
    }
}
