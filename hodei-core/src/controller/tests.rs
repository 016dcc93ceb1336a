//! Every branch of a job's run in paused time: a fake provider, a hand-made worker link
//! and an in-memory store, so a 30 s heartbeat timeout takes milliseconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::task::AbortOnDropHandle;

use super::{
    ControllerConfig, FromWorker, JobController, RetentionPolicy, RetrySettings, SpaceProbe,
    StopReason, ToWorker, WorkerLink, WorkerOutcome,
};
use crate::{
    disk::{DiskSpace, FreeDiskFloor},
    job::{FailureReason, Job, JobId, JobSpec, JobState, ProcessExit, WorkerId},
    logs::{LogHub, OutputChunk, OutputStream},
    provider::{
        KnownWorkers, Provider, ProviderCapabilities, ProviderError, ProviderHealth,
        ProviderRegistry, ProvisionedWorker, WorkerEvent, WorkerLaunch,
    },
    store::{JobFilter, JobPage, JobStore, PageCollector, PageRequest, StoreError, WorkerRecord},
};

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
const PROVISION_TIMEOUT: Duration = Duration::from_secs(60);
const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(120);
pub(super) const KILL_GRACE: Duration = Duration::from_secs(10);
pub(super) const RESULT_GRACE: Duration = Duration::from_secs(10);
pub(super) const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// Jobs in memory, so no store I/O runs outside the paused clock. Updates can be made to
/// fail, and each terminal update records whether the job's log was still open.
#[derive(Debug, Default)]
struct MemoryStore {
    jobs: Mutex<HashMap<JobId, Job>>,
    /// Ids in the order inserted.
    inserted: Mutex<Vec<JobId>>,
    /// How many of the next updates fail; `u32::MAX` keeps failing.
    failing_updates: Mutex<u32>,
    /// The log hub, to see whether a job's log is closed when its final state is written.
    logs: std::sync::OnceLock<Arc<LogHub>>,
    /// Terminal updates written while the job's log was still open.
    terminal_before_log_closed: Mutex<Vec<JobId>>,
    workers: Mutex<HashMap<WorkerId, WorkerRecord>>,
}

impl MemoryStore {
    fn fail_updates(&self, count: u32) {
        *self.failing_updates.lock().unwrap() = count;
    }

    fn stored(&self, id: JobId) -> Option<Job> {
        self.jobs.lock().unwrap().get(&id).cloned()
    }
}

#[async_trait]
impl JobStore for MemoryStore {
    async fn insert(&self, job: &Job) -> Result<(), StoreError> {
        self.jobs.lock().unwrap().insert(job.id, job.clone());
        self.inserted.lock().unwrap().push(job.id);
        Ok(())
    }
    async fn update(&self, job: &Job) -> Result<(), StoreError> {
        {
            let mut failing = self.failing_updates.lock().unwrap();
            if *failing > 0 {
                if *failing != u32::MAX {
                    *failing -= 1;
                }
                return Err(StoreError::Io(std::io::Error::other("injected fault")));
            }
        }
        if job.state.is_terminal()
            && self
                .logs
                .get()
                .is_some_and(|logs| logs.live(job.id).is_some())
        {
            self.terminal_before_log_closed.lock().unwrap().push(job.id);
        }
        self.jobs.lock().unwrap().insert(job.id, job.clone());
        Ok(())
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        Ok(self.jobs.lock().unwrap().get(&id).cloned())
    }
    async fn list(&self, filter: &JobFilter, page: &PageRequest) -> Result<JobPage, StoreError> {
        let jobs = self.jobs.lock().unwrap();
        let inserted = self.inserted.lock().unwrap();
        let mut collector = PageCollector::new(filter, *page);
        // A job's creation sequence is its place in insertion order, counted from 1.
        for (index, id) in inserted.iter().enumerate().rev() {
            let seq = index as u64 + 1;
            if page.after.is_some_and(|after| seq >= after.seq()) {
                continue;
            }
            let Some(job) = jobs.get(id) else { continue };
            if collector.offer(seq, 0, job.clone()).is_break() {
                break;
            }
        }
        Ok(collector.finish())
    }
    async fn unfinished(&self) -> Result<Vec<Job>, StoreError> {
        let jobs = self.jobs.lock().unwrap();
        Ok(jobs
            .values()
            .filter(|j| !j.state.is_terminal())
            .cloned()
            .collect())
    }
    async fn finished_before(
        &self,
        cutoff: time::OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        let jobs = self.jobs.lock().unwrap();
        Ok(self
            .inserted
            .lock()
            .unwrap()
            .iter()
            .filter(|id| {
                jobs.get(id).is_some_and(|j| {
                    j.state.is_terminal() && j.finished_at.is_some_and(|at| at < cutoff)
                })
            })
            .take(limit as usize)
            .copied()
            .collect())
    }
    async fn finished_beyond(&self, keep: u64, limit: u32) -> Result<Vec<JobId>, StoreError> {
        let jobs = self.jobs.lock().unwrap();
        let finished: Vec<JobId> = self
            .inserted
            .lock()
            .unwrap()
            .iter()
            .filter(|id| jobs.get(id).is_some_and(|j| j.state.is_terminal()))
            .copied()
            .collect();
        let beyond = finished.len().saturating_sub(keep as usize);
        Ok(finished
            .into_iter()
            .take(beyond.min(limit as usize))
            .collect())
    }
    async fn delete_finished(&self, ids: &[JobId]) -> Result<Vec<JobId>, StoreError> {
        let mut jobs = self.jobs.lock().unwrap();
        let deleted: Vec<JobId> = ids
            .iter()
            .filter(|id| jobs.get(id).is_some_and(|j| j.state.is_terminal()))
            .copied()
            .collect();
        for id in &deleted {
            jobs.remove(id);
        }
        self.inserted
            .lock()
            .unwrap()
            .retain(|id| !deleted.contains(id));
        Ok(deleted)
    }
    async fn contains(&self, id: JobId) -> Result<bool, StoreError> {
        Ok(self.jobs.lock().unwrap().contains_key(&id))
    }
    async fn save_worker(&self, record: &WorkerRecord) -> Result<(), StoreError> {
        self.workers
            .lock()
            .unwrap()
            .insert(record.worker_id, record.clone());
        Ok(())
    }
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        Ok(self.workers.lock().unwrap().values().cloned().collect())
    }
    async fn remove_worker(&self, worker_id: WorkerId) -> Result<(), StoreError> {
        self.workers.lock().unwrap().remove(&worker_id);
        Ok(())
    }
}

/// What the fake platform does with one provision call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Provision {
    /// Create the worker and hand it to the test.
    Create,
    /// Refuse for good.
    Refuse,
    /// Refuse for now (a full quota).
    RefuseForNow,
    /// Never answer.
    Hang,
}

/// A worker the fake platform created; the test plays both the platform and the worker.
#[derive(Debug)]
pub(super) struct CreatedWorker {
    pub(super) launch: WorkerLaunch,
    pub(super) events: mpsc::UnboundedSender<WorkerEvent>,
}

#[derive(Debug)]
struct FakeProvider {
    plan: Mutex<VecDeque<Provision>>,
    max_workers: Option<usize>,
    provisions: Mutex<usize>,
    created: mpsc::UnboundedSender<CreatedWorker>,
    destroyed: watch::Sender<Vec<WorkerId>>,
}

#[async_trait]
impl Provider for FakeProvider {
    fn name(&self) -> &str {
        "fake"
    }

    fn capabilities(&self) -> ProviderCapabilities {
        ProviderCapabilities {
            containers: false,
            max_workers: self.max_workers,
            registration_timeout: REGISTRATION_TIMEOUT,
            worker_proof: crate::provider::WorkerProof::OneTimeToken,
        }
    }

    async fn health(&self) -> ProviderHealth {
        ProviderHealth::Healthy
    }

    async fn provision(&self, launch: WorkerLaunch) -> Result<ProvisionedWorker, ProviderError> {
        *self.provisions.lock().unwrap() += 1;
        let next = self
            .plan
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Provision::Create);
        match next {
            Provision::Create => {
                let (events, receiver) = mpsc::unbounded_channel();
                self.created.send(CreatedWorker { launch, events }).unwrap();
                Ok(ProvisionedWorker {
                    description: "fake worker".into(),
                    events: receiver,
                    locator: None,
                })
            }
            Provision::Refuse => Err(ProviderError::fatal("NoCapacity", "never")),
            Provision::RefuseForNow => Err(ProviderError::retryable("QuotaExceeded", "full")),
            Provision::Hang => std::future::pending().await,
        }
    }

    async fn destroy(&self, worker_id: WorkerId) -> Result<(), ProviderError> {
        self.destroyed.send_modify(|d| d.push(worker_id));
        Ok(())
    }

    async fn cleanup_orphans(&self, _: &dyn KnownWorkers) -> Result<usize, ProviderError> {
        Ok(0)
    }
}

/// The worker's end of a hand-made link.
pub(super) struct WorkerEnd {
    to_worker: mpsc::Receiver<ToWorker>,
    from_worker: mpsc::Sender<FromWorker>,
    /// What the worker re-attaches with, once its job is assigned.
    pub(super) resume_credential: Option<super::ResumeCredential>,
}

impl WorkerEnd {
    pub(super) async fn next(&mut self) -> ToWorker {
        self.to_worker.recv().await.expect("the controller hung up")
    }

    pub(super) async fn send(&self, message: FromWorker) {
        self.from_worker.send(message).await.unwrap();
    }

    /// Sends a heartbeat every 5 s until the returned handle is dropped.
    pub(super) fn keep_alive(&self) -> AbortOnDropHandle<()> {
        let heartbeat = self.from_worker.clone();
        AbortOnDropHandle::new(tokio::spawn(async move {
            while heartbeat.send(FromWorker::Alive).await.is_ok() {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }))
    }

    pub(super) async fn report(&self, exit: ProcessExit) {
        self.send(FromWorker::Result {
            outcome: WorkerOutcome::Exit(exit),
            last_seq: 0,
        })
        .await;
    }
}

pub(super) struct Harness {
    pub(super) controller: JobController,
    provider: Arc<FakeProvider>,
    store: Arc<MemoryStore>,
    pub(super) created: mpsc::UnboundedReceiver<CreatedWorker>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub(super) async fn start(plan: &[Provision]) -> Self {
        Self::with_max_workers(plan, None).await
    }

    async fn with_max_workers(plan: &[Provision], max_workers: Option<usize>) -> Self {
        Self::with_config(plan, max_workers, |config| config).await
    }

    /// A harness whose controller config is `adjust`ed from the one every test uses.
    pub(super) async fn with_config(
        plan: &[Provision],
        max_workers: Option<usize>,
        adjust: impl FnOnce(ControllerConfig) -> ControllerConfig,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::build(
            plan,
            max_workers,
            adjust,
            Arc::new(MemoryStore::default()),
            dir,
        )
        .await
    }

    /// A harness whose `store` and logs `dir` may already hold jobs.
    async fn build(
        plan: &[Provision],
        max_workers: Option<usize>,
        adjust: impl FnOnce(ControllerConfig) -> ControllerConfig,
        store: Arc<MemoryStore>,
        dir: tempfile::TempDir,
    ) -> Self {
        let (created_tx, created) = mpsc::unbounded_channel();
        let provider = Arc::new(FakeProvider {
            plan: Mutex::new(plan.iter().copied().collect()),
            max_workers,
            provisions: Mutex::default(),
            created: created_tx,
            destroyed: watch::Sender::new(Vec::new()),
        });
        let mut providers = ProviderRegistry::new();
        providers.register(Arc::clone(&provider) as Arc<dyn Provider>);
        let config = ControllerConfig::builder("http://127.0.0.1:1")
            .heartbeat_timeout(HEARTBEAT_TIMEOUT)
            .provision_timeout(PROVISION_TIMEOUT)
            .kill_grace(KILL_GRACE)
            .result_grace(RESULT_GRACE)
            .space_probe(SpaceProbe::new(plenty_of_space))
            // Each test of a failure sees that failure end the job; retries have their
            // own tests.
            .retry(RetrySettings {
                infrastructure_retries: 0,
                ..RetrySettings::default()
            })
            .build();
        let config = adjust(config);
        let logs = Arc::new(LogHub::open(dir.path()).unwrap());
        store.logs.set(Arc::clone(&logs)).unwrap();
        let controller = JobController::start(
            config,
            Arc::clone(&store) as Arc<dyn JobStore>,
            logs,
            providers,
        )
        .await
        .unwrap();
        Self {
            controller,
            provider,
            store,
            created,
            _dir: dir,
        }
    }

    pub(super) async fn submit(&self) -> Job {
        let spec = JobSpec::builder("true")
            .timeout(JOB_TIMEOUT)
            .build()
            .unwrap();
        self.controller.submit(spec).await.unwrap()
    }

    /// The next worker the provider created.
    pub(super) async fn created(&mut self) -> CreatedWorker {
        self.created.recv().await.unwrap()
    }

    /// Registers `worker` as its server stream would, and returns the worker's end.
    pub(super) async fn register(&self, worker: &CreatedWorker) -> WorkerEnd {
        let pending = self
            .controller
            .registrations()
            .redeem(
                worker.launch.worker_id,
                worker
                    .launch
                    .otp_token
                    .as_deref()
                    .expect("a one-time token"),
            )
            .await
            .expect("the worker was expected");
        let (to_worker_tx, to_worker) = mpsc::channel(16);
        let (from_worker, from_worker_rx) = mpsc::channel(16);
        pending
            .attach
            .send(WorkerLink {
                to_worker: to_worker_tx,
                from_worker: from_worker_rx,
            })
            .unwrap();
        WorkerEnd {
            to_worker,
            from_worker,
            resume_credential: None,
        }
    }

    /// Re-attaches `worker` with `credential` as a resumed server stream would, and
    /// returns the worker's new end.
    pub(super) async fn reattach(
        &self,
        worker: &CreatedWorker,
        credential: &super::ResumeCredential,
    ) -> WorkerEnd {
        let resumed = self
            .controller
            .resume_worker(worker.launch.worker_id, credential)
            .await
            .expect("the worker may resume");
        let (to_worker_tx, to_worker) = mpsc::channel(16);
        let (from_worker, from_worker_rx) = mpsc::channel(16);
        resumed
            .relink
            .send(WorkerLink {
                to_worker: to_worker_tx,
                from_worker: from_worker_rx,
            })
            .await
            .unwrap();
        WorkerEnd {
            to_worker,
            from_worker,
            resume_credential: Some(resumed.credential),
        }
    }

    /// Submits a job, creates its worker and registers it; returns it assigned.
    pub(super) async fn running(&mut self) -> (Job, CreatedWorker, WorkerEnd) {
        let job = self.submit().await;
        let worker = self.created().await;
        let mut end = self.register(&worker).await;
        let ToWorker::Assign(assignment) = end.next().await else {
            panic!("the job was not assigned first");
        };
        end.resume_credential = Some(assignment.resume_credential);
        self.wait_for(job.id, |j| j.state == JobState::Running)
            .await;
        (job, worker, end)
    }

    /// Waits until the job satisfies `condition`, and returns it.
    pub(super) async fn wait_for(&self, id: JobId, condition: impl Fn(&Job) -> bool) -> Job {
        if let Some(mut status) = self.controller.watch(id)
            && let Ok(job) = status.wait_for(|j| condition(j)).await
        {
            return job.clone();
        }
        let job = self.controller.get(id).await.unwrap().unwrap();
        assert!(condition(&job), "the job ended as {job:?}");
        job
    }

    /// Waits for the job's terminal state.
    pub(super) async fn ended(&self, id: JobId) -> JobState {
        self.wait_for(id, |j| j.state.is_terminal()).await.state
    }

    /// Waits until the provider was asked to remove `worker_id`.
    pub(super) async fn destroyed(&self, worker_id: WorkerId) {
        let mut destroyed = self.provider.destroyed.subscribe();
        tokio::time::timeout(
            Duration::from_secs(1),
            destroyed.wait_for(|d| d.contains(&worker_id)),
        )
        .await
        .expect("the worker was not removed")
        .unwrap();
    }

    fn provisions(&self) -> usize {
        *self.provider.provisions.lock().unwrap()
    }
}

fn provider_failure(reason: &str) -> impl Fn(&JobState) -> bool + '_ {
    move |state| {
        matches!(state, JobState::Failed { reason: FailureReason::ProviderFailure { provider, reason: r, .. } }
            if provider == "fake" && r == reason)
    }
}

#[tokio::test(start_paused = true)]
async fn a_reported_exit_ends_the_job_and_removes_the_worker() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, mut end) = harness.running().await;
    end.send(FromWorker::Output).await;
    end.report(ProcessExit::Code(3)).await;
    assert!(matches!(end.next().await, ToWorker::ResultAccepted));
    assert_eq!(
        harness.ended(job.id).await,
        JobState::from_exit(ProcessExit::Code(3))
    );
    harness.destroyed(worker.launch.worker_id).await;
    assert_eq!(harness.controller.active_jobs(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_does_not_create_the_worker_in_time_fails_the_job() {
    let mut harness = Harness::start(&[Provision::Hang]).await;
    let job = harness.submit().await;
    let started = Instant::now();
    let state = harness.ended(job.id).await;
    assert!(provider_failure("ProvisionTimeout")(&state), "{state:?}");
    assert_eq!(started.elapsed(), PROVISION_TIMEOUT);
    let worker_id = harness
        .controller
        .get(job.id)
        .await
        .unwrap()
        .unwrap()
        .worker_id
        .unwrap();
    harness.destroyed(worker_id).await;
    assert!(harness.created.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_stops_reporting_before_registration_fails_the_job() {
    let mut harness = Harness::start(&[]).await;
    let job = harness.submit().await;
    let worker = harness.created().await;
    drop(worker.events);
    let state = harness.ended(job.id).await;
    assert!(provider_failure("WorkerGone")(&state), "{state:?}");
    harness.destroyed(worker.launch.worker_id).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_exits_before_registering_fails_the_job_with_its_exit() {
    let mut harness = Harness::start(&[]).await;
    let job = harness.submit().await;
    let worker = harness.created().await;
    worker
        .events
        .send(WorkerEvent::Exited {
            exit: Some(ProcessExit::Code(127)),
            message: String::new(),
        })
        .unwrap();
    let state = harness.ended(job.id).await;
    assert!(provider_failure("WorkerExited")(&state), "{state:?}");
    assert!(state.to_string().contains("exit code 127"), "{state}");
}

#[tokio::test(start_paused = true)]
async fn a_platform_failure_before_registration_fails_the_job_with_its_reason() {
    let mut harness = Harness::start(&[]).await;
    let job = harness.submit().await;
    let worker = harness.created().await;
    worker
        .events
        .send(WorkerEvent::Progress {
            detail: "pulling image".into(),
        })
        .unwrap();
    harness
        .wait_for(job.id, |j| j.detail.as_deref() == Some("pulling image"))
        .await;
    worker
        .events
        .send(WorkerEvent::Failed {
            reason: "ImagePullBackOff".into(),
            message: "no such image".into(),
        })
        .unwrap();
    let state = harness.ended(job.id).await;
    assert!(provider_failure("ImagePullBackOff")(&state), "{state:?}");
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_never_registers_times_out_and_is_removed() {
    let mut harness = Harness::start(&[]).await;
    let job = harness.submit().await;
    let worker = harness.created().await;
    let started = Instant::now();
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Failed {
            reason: FailureReason::RegistrationTimeout {
                waited: REGISTRATION_TIMEOUT
            }
        }
    );
    assert_eq!(started.elapsed(), REGISTRATION_TIMEOUT);
    harness.destroyed(worker.launch.worker_id).await;
    assert!(
        harness
            .controller
            .registrations()
            .redeem(
                worker.launch.worker_id,
                worker.launch.otp_token.as_deref().unwrap()
            )
            .await
            .is_err(),
        "a late registration finds nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_worker_is_lost_after_the_heartbeat_timeout() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, end) = harness.running().await;
    tokio::time::sleep(HEARTBEAT_TIMEOUT / 2).await;
    end.send(FromWorker::Alive).await;
    let alive_at = Instant::now();
    let state = harness.ended(job.id).await;
    assert_eq!(
        state,
        JobState::Failed {
            reason: FailureReason::WorkerLost {
                message: "no heartbeat for 30s".into()
            }
        }
    );
    assert_eq!(
        alive_at.elapsed(),
        HEARTBEAT_TIMEOUT,
        "a heartbeat renews the deadline"
    );
    harness.destroyed(worker.launch.worker_id).await;
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_stream_closes_and_never_comes_back_is_lost_after_the_window() {
    const WINDOW: Duration = Duration::from_secs(120);
    let mut harness = Harness::with_config(&[], None, |config| ControllerConfig {
        reconnect_window: WINDOW,
        ..config
    })
    .await;
    let (job, _worker, end) = harness.running().await;
    drop(end);
    let closed_at = Instant::now();
    let reconnecting = harness.wait_for(job.id, |j| j.detail.is_some()).await;
    assert_eq!(reconnecting.state, JobState::Running);
    assert_eq!(reconnecting.detail.as_deref(), Some("worker reconnecting"));
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Failed {
            reason: FailureReason::WorkerLost {
                message: "the worker did not reconnect within 2m".into()
            }
        }
    );
    assert_eq!(closed_at.elapsed(), WINDOW);
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_exits_while_running_is_lost() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, _end) = harness.running().await;
    worker
        .events
        .send(WorkerEvent::Exited {
            exit: Some(ProcessExit::Signal(9)),
            message: String::new(),
        })
        .unwrap();
    let state = harness.ended(job.id).await;
    assert!(
        matches!(&state, JobState::Failed { reason: FailureReason::WorkerLost { message } } if message.contains("killed by signal 9")),
        "{state:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_job_whose_worker_stays_silent_ends_at_the_stop_deadline() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, mut end) = harness.running().await;
    let outcome = harness.controller.cancel(job.id).await.unwrap().unwrap();
    assert!(outcome.requested);
    assert!(matches!(
        end.next().await,
        ToWorker::Stop(StopReason::Cancelled)
    ));
    let stopped_at = Instant::now();
    // Heartbeats keep coming, but no result does.
    let _heartbeats = end.keep_alive();
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Cancelled { exit: None }
    );
    assert_eq!(stopped_at.elapsed(), KILL_GRACE + RESULT_GRACE);
    harness.destroyed(worker.launch.worker_id).await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_job_keeps_the_exit_its_worker_reports() {
    let mut harness = Harness::start(&[]).await;
    let (job, _worker, mut end) = harness.running().await;
    harness.controller.cancel(job.id).await.unwrap();
    assert!(matches!(
        end.next().await,
        ToWorker::Stop(StopReason::Cancelled)
    ));
    end.report(ProcessExit::Signal(15)).await;
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Cancelled {
            exit: Some(ProcessExit::Signal(15))
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_is_stopped_and_ends_at_the_stop_deadline() {
    let mut harness = Harness::start(&[]).await;
    let (job, _worker, mut end) = harness.running().await;
    let started = Instant::now();
    let _heartbeats = end.keep_alive();
    assert!(matches!(
        end.next().await,
        ToWorker::Stop(StopReason::TimedOut)
    ));
    assert_eq!(started.elapsed(), JOB_TIMEOUT);
    assert_eq!(
        harness.ended(job.id).await,
        JobState::TimedOut {
            timeout: JOB_TIMEOUT,
            exit: None
        }
    );
    assert_eq!(started.elapsed(), JOB_TIMEOUT + KILL_GRACE + RESULT_GRACE);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_job_keeps_the_signal_that_ended_it() {
    let mut harness = Harness::start(&[]).await;
    let (job, _worker, mut end) = harness.running().await;
    let _heartbeats = end.keep_alive();
    assert!(matches!(
        end.next().await,
        ToWorker::Stop(StopReason::TimedOut)
    ));
    end.report(ProcessExit::Signal(9)).await;
    assert_eq!(
        harness.ended(job.id).await,
        JobState::TimedOut {
            timeout: JOB_TIMEOUT,
            exit: Some(ProcessExit::Signal(9))
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_its_worker_is_created_is_cancelled_and_the_worker_removed() {
    let harness = Harness::start(&[Provision::Hang]).await;
    let job = harness.submit().await;
    let provisioning = harness
        .wait_for(job.id, |j| j.state == JobState::Provisioning)
        .await;
    harness.controller.cancel(job.id).await.unwrap();
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Cancelled { exit: None }
    );
    harness.destroyed(provisioning.worker_id.unwrap()).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_before_its_worker_registers_is_cancelled() {
    let mut harness = Harness::start(&[]).await;
    let job = harness.submit().await;
    let worker = harness.created().await;
    harness.controller.cancel(job.id).await.unwrap();
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Cancelled { exit: None }
    );
    harness.destroyed(worker.launch.worker_id).await;
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_in_the_queue_never_gets_a_worker() {
    let mut harness = Harness::with_max_workers(&[], Some(1)).await;
    let (_first, _worker, _end) = harness.running().await;
    let second = harness.submit().await;
    let waiting = harness.wait_for(second.id, |j| j.detail.is_some()).await;
    assert_eq!(waiting.state, JobState::Queued);
    assert_eq!(
        waiting.detail.as_deref(),
        Some("queued: 1st in line (priority 0), waiting for a free fake worker slot (1 running)")
    );
    harness.controller.cancel(second.id).await.unwrap();
    assert_eq!(
        harness.ended(second.id).await,
        JobState::Cancelled { exit: None }
    );
    assert_eq!(harness.provisions(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_queued_job_starts_when_a_worker_slot_frees() {
    let mut harness = Harness::with_max_workers(&[], Some(1)).await;
    let (first, _worker, first_end) = harness.running().await;
    let second = harness.submit().await;
    tokio::time::sleep(HEARTBEAT_TIMEOUT / 2).await;
    assert_eq!(
        harness
            .controller
            .get(second.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Queued
    );
    assert_eq!(harness.provisions(), 1, "one worker at a time");
    first_end.report(ProcessExit::Code(0)).await;
    assert_eq!(harness.ended(first.id).await, JobState::Succeeded);
    let worker = harness.created().await;
    assert_eq!(worker.launch.job_id, second.id);
}

#[tokio::test(start_paused = true)]
async fn a_provider_refusal_fails_the_job_with_the_providers_reason() {
    let harness = Harness::start(&[Provision::Refuse]).await;
    let job = harness.submit().await;
    let state = harness.ended(job.id).await;
    assert!(provider_failure("NoCapacity")(&state), "{state:?}");
    assert_eq!(harness.provisions(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_for_now_keeps_the_job_queued_with_the_reason_then_retries() {
    let mut harness = Harness::start(&[Provision::RefuseForNow, Provision::RefuseForNow]).await;
    let job = harness.submit().await;
    let refused_at = Instant::now();
    let waiting = harness
        .wait_for(job.id, |j| {
            j.state == JobState::Queued && j.detail.is_some()
        })
        .await;
    assert_eq!(
        waiting.detail.as_deref(),
        Some("waiting: QuotaExceeded: full")
    );
    assert_eq!(waiting.worker_id, None);
    let worker = harness.created().await;
    assert_eq!(harness.provisions(), 3);
    assert_eq!(
        refused_at.elapsed(),
        Duration::from_secs(2 + 4),
        "the wait doubles after each refusal"
    );
    let mut end = harness.register(&worker).await;
    assert!(matches!(end.next().await, ToWorker::Assign(_)));
    end.report(ProcessExit::Code(0)).await;
    assert_eq!(harness.ended(job.id).await, JobState::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_job_cancelled_while_it_waits_after_a_refusal_is_cancelled() {
    let harness = Harness::start(&[Provision::RefuseForNow]).await;
    let job = harness.submit().await;
    harness
        .wait_for(job.id, |j| {
            j.state == JobState::Queued && j.detail.is_some()
        })
        .await;
    harness.controller.cancel(job.id).await.unwrap();
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Cancelled { exit: None }
    );
    assert_eq!(harness.provisions(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_stops_running_jobs_and_records_why() {
    let mut harness = Harness::start(&[]).await;
    let (job, worker, mut end) = harness.running().await;
    let controller = harness.controller.clone();
    let shutdown = tokio::spawn(async move { controller.shutdown(Duration::from_secs(60)).await });
    assert!(matches!(
        end.next().await,
        ToWorker::Stop(StopReason::Shutdown)
    ));
    end.report(ProcessExit::Signal(15)).await;
    shutdown.await.unwrap();
    assert_eq!(
        harness.ended(job.id).await,
        JobState::Failed {
            reason: FailureReason::ServerRestarted
        }
    );
    harness.destroyed(worker.launch.worker_id).await;
}

#[tokio::test(start_paused = true)]
async fn a_result_with_output_missing_from_the_log_says_so() {
    let mut harness = Harness::start(&[]).await;
    let (job, _worker, end) = harness.running().await;
    let log = harness.controller.logs().live(job.id).unwrap();
    log.append(&[OutputChunk {
        seq: 1,
        stream: OutputStream::Stdout,
        data: "one\n".into(),
        emitted_at_us: 0,
    }])
    .unwrap();
    end.send(FromWorker::Result {
        outcome: WorkerOutcome::Exit(ProcessExit::Code(0)),
        last_seq: 2,
    })
    .await;
    let ended = harness.wait_for(job.id, |j| j.state.is_terminal()).await;
    assert_eq!(ended.state, JobState::Succeeded);
    assert_eq!(
        ended.detail.as_deref(),
        Some("output incomplete: 1 of 2 chunks stored")
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_submitted_during_shutdown_is_refused() {
    let harness = Harness::start(&[]).await;
    harness.controller.shutdown(Duration::from_secs(1)).await;
    assert!(harness.controller.is_shutting_down());
    let spec = JobSpec::builder("true").build().unwrap();
    assert!(matches!(
        harness.controller.submit(spec).await,
        Err(super::SubmitError::ShuttingDown)
    ));
    assert_eq!(harness.provisions(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_final_state_is_written_after_the_log_is_closed() {
    let mut harness = Harness::start(&[]).await;
    let (job, _worker, end) = harness.running().await;
    end.report(ProcessExit::Code(0)).await;
    harness.ended(job.id).await;
    wait_until(|| harness.controller.active_jobs() == 0).await;
    assert_eq!(
        harness.store.stored(job.id).map(|j| j.state),
        Some(JobState::Succeeded)
    );
    assert!(
        harness
            .store
            .terminal_before_log_closed
            .lock()
            .unwrap()
            .is_empty()
    );
}

/// Polls `condition` while the paused clock runs, for up to a minute of it.
async fn wait_until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_final_state_the_store_refuses_a_few_times_is_stored_by_the_retries() {
    let mut harness = Harness::start(&[]).await;
    let (job, _worker, end) = harness.running().await;
    let mut healthy = harness.controller.store_healthy();
    harness.store.fail_updates(3);
    end.report(ProcessExit::Code(0)).await;
    healthy.wait_for(|h| !h).await.unwrap();
    healthy.wait_for(|h| *h).await.unwrap();
    wait_until(|| harness.controller.active_jobs() == 0).await;
    assert_eq!(
        harness.store.stored(job.id).map(|j| j.state),
        Some(JobState::Succeeded)
    );
    assert_eq!(
        harness.controller.get(job.id).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn a_final_state_the_store_keeps_refusing_stays_in_memory_until_stored() {
    let mut harness = Harness::start(&[]).await;
    let (job, _worker, end) = harness.running().await;
    let healthy = harness.controller.store_healthy();
    harness.store.fail_updates(u32::MAX);
    end.report(ProcessExit::Code(0)).await;
    harness.ended(job.id).await;
    // Well past the in-line retries and several background rounds.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!*healthy.borrow());
    assert_eq!(harness.controller.active_jobs(), 1);
    assert_eq!(
        harness.store.stored(job.id).map(|j| j.state),
        Some(JobState::Running),
        "the store still has the older state"
    );
    let seen = harness.controller.get(job.id).await.unwrap().unwrap();
    assert_eq!(seen.state, JobState::Succeeded);
    let listed = harness
        .controller
        .list(&JobFilter::default(), &PageRequest::first(10))
        .await
        .unwrap()
        .jobs;
    assert_eq!(listed[0].state, JobState::Succeeded);
    let running = JobFilter::builder()
        .states([crate::job::JobPhase::Running])
        .build();
    let listed = harness
        .controller
        .list(&running, &PageRequest::first(10))
        .await
        .unwrap();
    assert!(
        listed.jobs.is_empty(),
        "a job stored as running but now succeeded is not listed as running"
    );
    let cancel = harness.controller.cancel(job.id).await.unwrap().unwrap();
    assert!(!cancel.requested);
    assert_eq!(cancel.job.state, JobState::Succeeded);

    harness.store.fail_updates(0);
    wait_until(|| harness.controller.active_jobs() == 0).await;
    assert!(*healthy.borrow());
    assert_eq!(
        harness.store.stored(job.id).map(|j| j.state),
        Some(JobState::Succeeded)
    );
    assert_eq!(
        harness.controller.get(job.id).await.unwrap().unwrap().state,
        JobState::Succeeded
    );
}

#[tokio::test(start_paused = true)]
async fn states_refused_while_running_are_stored_newest_last() {
    let mut harness = Harness::start(&[]).await;
    harness.store.fail_updates(u32::MAX);
    let job = harness.submit().await;
    let worker = harness.created().await;
    let mut end = harness.register(&worker).await;
    assert!(matches!(end.next().await, ToWorker::Assign(_)));
    let _alive = end.keep_alive();
    harness
        .wait_for(job.id, |j| j.state == JobState::Running)
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    harness.store.fail_updates(0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        harness.store.stored(job.id).map(|j| j.state),
        Some(JobState::Running)
    );
    assert_eq!(harness.controller.active_jobs(), 1);
    assert!(*harness.controller.store_healthy().borrow());
    end.report(ProcessExit::Code(1)).await;
    wait_until(|| harness.controller.active_jobs() == 0).await;
    assert_eq!(
        harness.store.stored(job.id).map(|j| j.state),
        Some(JobState::from_exit(ProcessExit::Code(1)))
    );
}

fn plenty_of_space(_: &std::path::Path) -> std::io::Result<DiskSpace> {
    Ok(DiskSpace {
        available: u64::MAX / 2,
        total: u64::MAX,
    })
}

/// A filesystem of 1000 bytes where each job log takes 100.
fn hundred_bytes_per_log(dir: &std::path::Path) -> std::io::Result<DiskSpace> {
    let logs = std::fs::read_dir(dir)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count() as u64;
    Ok(DiskSpace {
        available: 1000u64.saturating_sub(100 * logs),
        total: 1000,
    })
}

/// Stores a job that finished `hours_ago`, with a log file.
async fn finished_job(store: &MemoryStore, dir: &std::path::Path, hours_ago: i64) -> JobId {
    let mut job = Job::new(JobSpec::builder("true").build().unwrap(), "fake");
    job.state = JobState::Succeeded;
    job.finished_at = Some(time::OffsetDateTime::now_utc() - time::Duration::hours(hours_ago));
    store.insert(&job).await.unwrap();
    std::fs::write(log_path(dir, job.id), b"").unwrap();
    job.id
}

fn log_path(dir: &std::path::Path, id: JobId) -> std::path::PathBuf {
    dir.join(format!("{id}.log"))
}

const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn finished_jobs_past_the_age_and_their_logs_are_deleted_and_others_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::default());
    let old = finished_job(&store, dir.path(), 48).await;
    let recent = finished_job(&store, dir.path(), 1).await;
    let orphan = JobId::new();
    std::fs::write(log_path(dir.path(), orphan), b"").unwrap();
    let path = dir.path().to_owned();
    let retention = RetentionPolicy::builder()
        .max_age(Duration::from_secs(24 * 3600))
        .interval(RETENTION_INTERVAL)
        .build();
    let mut harness = Harness::build(
        &[],
        None,
        |config| ControllerConfig {
            retention,
            ..config
        },
        Arc::clone(&store),
        dir,
    )
    .await;
    let (running, _worker, end) = harness.running().await;
    let _alive = end.keep_alive();
    wait_until(|| !log_path(&path, old).exists()).await;
    assert!(store.stored(old).is_none());
    assert!(!log_path(&path, orphan).exists(), "a log without a job");
    assert!(store.stored(recent).is_some());
    assert!(log_path(&path, recent).exists());

    // A job that finished long ago appears later; the next run deletes it.
    let late = finished_job(&store, &path, 72).await;
    tokio::time::sleep(RETENTION_INTERVAL * 2).await;
    assert!(store.stored(late).is_none());
    assert!(!log_path(&path, late).exists());
    assert!(store.stored(recent).is_some());
    assert_eq!(
        harness
            .controller
            .get(running.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Running
    );
    assert!(log_path(&path, running.id).exists());
}

#[tokio::test(start_paused = true)]
async fn only_the_newest_finished_jobs_are_kept_when_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::default());
    let mut ids = Vec::new();
    for hours_ago in [4, 3, 2, 1] {
        ids.push(finished_job(&store, dir.path(), hours_ago).await);
    }
    let path = dir.path().to_owned();
    let retention = RetentionPolicy::builder()
        .max_finished_jobs(2)
        .interval(RETENTION_INTERVAL)
        .build();
    let _harness = Harness::build(
        &[],
        None,
        |config| ControllerConfig {
            retention,
            ..config
        },
        Arc::clone(&store),
        dir,
    )
    .await;
    wait_until(|| store.stored(ids[1]).is_none()).await;
    assert!(store.stored(ids[0]).is_none());
    assert!(!log_path(&path, ids[0]).exists());
    assert!(store.stored(ids[2]).is_some());
    assert!(store.stored(ids[3]).is_some());
    assert!(log_path(&path, ids[3]).exists());
}

#[tokio::test(start_paused = true)]
async fn the_oldest_finished_jobs_are_deleted_while_the_disk_is_below_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::default());
    let mut ids = Vec::new();
    for hours_ago in (1..=8).rev() {
        ids.push(finished_job(&store, dir.path(), hours_ago).await);
    }
    let path = dir.path().to_owned();
    let retention = RetentionPolicy::builder()
        .interval(RETENTION_INTERVAL)
        .build();
    let mut harness = Harness::build(
        &[],
        None,
        |config| ControllerConfig {
            retention,
            min_free_disk: FreeDiskFloor::Bytes(500),
            space_probe: SpaceProbe::new(hundred_bytes_per_log),
            ..config
        },
        Arc::clone(&store),
        dir,
    )
    .await;
    // 8 logs leave 200 bytes free: the 3 oldest go, leaving 500.
    wait_until(|| store.stored(ids[2]).is_none()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ids[..3].iter().all(|id| store.stored(*id).is_none()));
    assert!(ids[3..].iter().all(|id| store.stored(*id).is_some()));
    assert_eq!(hundred_bytes_per_log(&path).unwrap().available, 500);

    // A running job's log takes 100 more: the next run deletes one more finished job,
    // never the running one.
    let (running, _worker, end) = harness.running().await;
    let _alive = end.keep_alive();
    tokio::time::sleep(RETENTION_INTERVAL * 2).await;
    assert!(store.stored(ids[3]).is_none());
    assert!(ids[4..].iter().all(|id| store.stored(*id).is_some()));
    assert!(log_path(&path, running.id).exists());
    assert!(store.stored(running.id).is_some());
}
