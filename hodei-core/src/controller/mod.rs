//! The job controller: accepts jobs and drives each one from queue to cleanup.

mod admission;
mod adoption;
mod disk_watch;
mod job_run;
#[cfg(test)]
mod limits_tests;
mod outcome;
mod output_intake;
#[cfg(test)]
mod reconnect_tests;
mod registration;
mod resume;
mod retention;
mod retry;
#[cfg(test)]
mod retry_tests;
mod scheduler;
#[cfg(test)]
mod scheduling_tests;
mod start_timeline;
mod store_writes;
mod sweeper;
#[cfg(test)]
mod tests;
mod worker_guard;
mod worker_link;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use parking_lot::{Mutex, MutexGuard};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, info, info_span, warn};

pub use admission::{DEFAULT_MAX_QUEUED_JOBS, DEFAULT_MAX_QUEUED_JOBS_PER_OWNER};
pub use disk_watch::{DEFAULT_DISK_CHECK_INTERVAL, DiskCondition, SpaceProbe};
pub use output_intake::DEFAULT_MAX_LOG_BYTES;
pub(crate) use output_intake::{Intake, OutputIntake};
pub(crate) use registration::RegistrationError;
pub(crate) use registration::WorkerRegistrations;
pub(crate) use resume::ResumeError;
pub use retention::{DEFAULT_RETENTION_BATCH, DEFAULT_RETENTION_INTERVAL, RetentionPolicy};
pub use retry::{
    DEFAULT_INFRASTRUCTURE_RETRIES, DEFAULT_MAX_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF, RetrySettings,
};
pub(crate) use worker_link::PendingWorker;
pub(crate) use worker_link::{
    Assignment, FromWorker, ResumeCredential, StopReason, ToWorker, WorkerLink, WorkerOutcome,
};

use crate::{
    disk::{DEFAULT_MIN_FREE_DISK, FreeDiskFloor},
    job::{Job, JobId, JobSpec, ValidationError, WorkerId},
    logs::LogHub,
    provider::{ProviderRegistry, SelectionError, SpecRefusal},
    store::{JobFilter, JobPage, JobStore, PageRequest, StoreError},
};

/// How often workers send heartbeats, by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Silence after which a worker counts as lost, by default.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a provider's create call may take, by default.
pub const DEFAULT_PROVISION_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between SIGTERM and SIGKILL when a job is stopped, by default.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(10);
/// Extra time after the kill grace to wait for a stopped job's result, by default.
pub const DEFAULT_RESULT_GRACE: Duration = Duration::from_secs(10);
/// How long a running job waits for its worker to re-attach after its stream broke, by
/// default.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(600);
/// How often workers the server does not know are removed, by default.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Address workers dial by default: the worker API of a server on this host's default port.
pub const DEFAULT_ADVERTISE_ADDRESS: &str = "http://127.0.0.1:50052";

/// What a server's shutdown does to the jobs it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Every active job is stopped (it ends `Failed: ServerRestarted`) and its worker
    /// removed: for servers whose workers end with them.
    #[default]
    StopJobs,
    /// Running jobs keep running: their workers hold on and re-attach to the next server
    /// process, which adopts them. Jobs that have not started are queued again, in the
    /// store, for the next process.
    HoldJobs,
}

/// Timing of the job lifecycle. Every wait has a deadline.
#[derive(Debug, Clone, bon::Builder)]
pub struct ControllerConfig {
    /// Address workers dial to reach this server, e.g. `http://127.0.0.1:50052`. A
    /// [`HodeiServer`](crate::HodeiServer) sets it to its own advertise address.
    #[builder(start_fn, into)]
    pub advertise_address: String,
    /// How often workers send heartbeats.
    #[builder(default = DEFAULT_HEARTBEAT_INTERVAL)]
    pub heartbeat_interval: Duration,
    /// Silence after which a worker counts as lost.
    #[builder(default = DEFAULT_HEARTBEAT_TIMEOUT)]
    pub heartbeat_timeout: Duration,
    /// Longest a provider's create call may take.
    #[builder(default = DEFAULT_PROVISION_TIMEOUT)]
    pub provision_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a job is stopped.
    #[builder(default = DEFAULT_KILL_GRACE)]
    pub kill_grace: Duration,
    /// Extra time after the kill grace to wait for a stopped job's result.
    #[builder(default = DEFAULT_RESULT_GRACE)]
    pub result_grace: Duration,
    /// What a shutdown does to the jobs this server runs.
    #[builder(default)]
    pub on_shutdown: ShutdownMode,
    /// How long a running job waits for its worker to re-attach after its stream broke.
    /// Meanwhile the heartbeat deadline is suspended and the job's timeout still counts;
    /// a worker not back in time ends the job `WorkerLost`.
    #[builder(default = DEFAULT_RECONNECT_WINDOW)]
    pub reconnect_window: Duration,
    /// How often workers the server does not know are removed.
    #[builder(default = DEFAULT_SWEEP_INTERVAL)]
    pub sweep_interval: Duration,
    /// Which finished jobs are kept, and how often the others are deleted.
    #[builder(default)]
    pub retention: RetentionPolicy,
    /// When a failed job runs again.
    #[builder(default)]
    pub retry: RetrySettings,
    /// Most jobs queued at once (accepted and not yet given a worker slot); more submits
    /// are refused.
    #[builder(default = DEFAULT_MAX_QUEUED_JOBS)]
    pub max_queued_jobs: usize,
    /// Most jobs of one owner queued at once; more submits of that owner are refused.
    #[builder(default = DEFAULT_MAX_QUEUED_JOBS_PER_OWNER)]
    pub max_queued_jobs_per_owner: usize,
    /// Most jobs of one owner running at once, on all providers together (a job runs from
    /// leaving the queue until its run ends); 0 means no cap. Jobs of an owner at its cap
    /// wait, and other owners' jobs go ahead of them.
    #[builder(default)]
    pub max_running_per_owner: usize,
    /// Caps of running jobs for named owners, in place of
    /// [`max_running_per_owner`](Self::max_running_per_owner); 0 means no cap for that
    /// owner.
    #[builder(default)]
    pub max_running_per_owner_overrides: BTreeMap<String, usize>,
    /// Most output bytes stored for one job. A job whose output passes it is stopped and
    /// fails `LogLimitExceeded`.
    #[builder(default = DEFAULT_MAX_LOG_BYTES)]
    pub max_log_bytes: u64,
    /// Least free space on the filesystem of the job logs. Below it submits are refused
    /// and jobs whose output arrives are stopped (`DiskFull`).
    #[builder(default = DEFAULT_MIN_FREE_DISK)]
    pub min_free_disk: FreeDiskFloor,
    /// How often free disk space is measured.
    #[builder(default = DEFAULT_DISK_CHECK_INTERVAL)]
    pub disk_check_interval: Duration,
    /// How free disk space is measured.
    #[builder(default)]
    pub space_probe: SpaceProbe,
}

impl Default for ControllerConfig {
    /// Every default, with workers dialing [`DEFAULT_ADVERTISE_ADDRESS`].
    fn default() -> Self {
        Self::builder(DEFAULT_ADVERTISE_ADDRESS).build()
    }
}

/// Why a job was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A field of the spec is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No provider can take the job.
    #[error(transparent)]
    NoProvider(#[from] SelectionError),
    /// The chosen provider cannot or may not honour an option of the job.
    #[error("provider {provider:?} refuses the job: {refusal}")]
    Refused {
        /// The provider.
        provider: String,
        /// What it refuses and why.
        #[source]
        refusal: SpecRefusal,
    },
    /// The job could not be stored.
    #[error("storing the job failed")]
    Store(#[from] StoreError),
    /// The job's log could not be created.
    #[error("creating the job log failed")]
    Log(#[source] std::io::Error),
    /// The server is shutting down and takes no new jobs.
    #[error("the server is shutting down and takes no new jobs")]
    ShuttingDown,
    /// As many jobs are queued as the server allows.
    #[error("queue full: {queued} jobs are queued (HODEI_MAX_QUEUED_JOBS={limit})")]
    QueueFull {
        /// Jobs queued now.
        queued: usize,
        /// The cap.
        limit: usize,
    },
    /// As many jobs of this owner are queued as the server allows.
    #[error(
        "queue full: {queued} jobs of owner {owner:?} are queued (HODEI_MAX_QUEUED_JOBS_PER_OWNER={limit})"
    )]
    OwnerQueueFull {
        /// The identity the job was submitted as (`anonymous` on a server without
        /// authentication, empty for jobs a host program submits in-process).
        owner: String,
        /// Jobs of that owner queued now.
        queued: usize,
        /// The cap.
        limit: usize,
    },
    /// Free disk space is below the floor.
    #[error(
        "not enough free disk: {} free on {}, HODEI_MIN_FREE_DISK={floor}",
        crate::disk::readable(*free_bytes),
        dir.display()
    )]
    DiskBelowFloor {
        /// Bytes free at the last sample.
        free_bytes: u64,
        /// The directory whose filesystem is short of space.
        dir: std::path::PathBuf,
        /// The floor.
        floor: FreeDiskFloor,
    },
}

impl SubmitError {
    /// The metric label of a refusal because the server is full, if this is one.
    fn full_reason(&self) -> Option<&'static str> {
        match self {
            Self::QueueFull { .. } => Some("queue_full"),
            Self::OwnerQueueFull { .. } => Some("owner_queue_full"),
            Self::DiskBelowFloor { .. } => Some("disk_below_floor"),
            _ => None,
        }
    }
}

/// Result of a cancel request.
#[derive(Debug, Clone)]
pub struct CancelOutcome {
    /// The job as it is now.
    pub job: Job,
    /// False when the job had already ended.
    pub requested: bool,
}

#[derive(Debug)]
struct ActiveJob {
    status: watch::Sender<Job>,
    cancel: CancellationToken,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: ControllerConfig,
    store: Arc<dyn JobStore>,
    logs: Arc<LogHub>,
    providers: ProviderRegistry,
    registrations: WorkerRegistrations,
    active: Mutex<HashMap<JobId, ActiveJob>>,
    /// Workers that are provisioned and not yet destroyed.
    workers: Mutex<HashSet<WorkerId>>,
    /// Which queued job gets a worker slot next.
    scheduler: Arc<scheduler::Scheduler>,
    store_writes: store_writes::StoreWrites,
    admission: Arc<admission::Admission>,
    disk: Arc<disk_watch::DiskWatch>,
    intake: OutputIntake,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Accepts jobs and runs each through its lifecycle. Cheap to clone.
#[derive(Debug, Clone)]
pub struct JobController {
    inner: Arc<Inner>,
}

impl JobController {
    /// Starts a controller and takes over what the server process before it left: jobs
    /// whose command reached a worker wait for that worker to re-attach, jobs that had
    /// not started are queued again, and workers nobody knows are removed.
    pub async fn start(
        config: ControllerConfig,
        store: Arc<dyn JobStore>,
        logs: Arc<LogHub>,
        providers: ProviderRegistry,
    ) -> Result<Self, StoreError> {
        let capacity = providers
            .all()
            .iter()
            .filter_map(|p| {
                p.capabilities()
                    .max_workers
                    .map(|max| (p.name().to_owned(), max))
            })
            .collect();
        let scheduler = scheduler::Scheduler::new(
            capacity,
            scheduler::OwnerCaps {
                default: config.max_running_per_owner,
                overrides: config.max_running_per_owner_overrides.clone(),
            },
        );
        let admission =
            admission::Admission::new(config.max_queued_jobs, config.max_queued_jobs_per_owner);
        let disk = disk_watch::DiskWatch::new(
            logs.dir().to_owned(),
            config.min_free_disk,
            config.space_probe.clone(),
            config.disk_check_interval,
        );
        let intake = OutputIntake::new(config.max_log_bytes, Arc::clone(&disk));
        let inner = Arc::new(Inner {
            config,
            store,
            logs,
            providers,
            registrations: WorkerRegistrations::default(),
            active: Mutex::default(),
            workers: Mutex::default(),
            scheduler,
            store_writes: store_writes::StoreWrites::default(),
            admission,
            disk,
            intake,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        });
        let recovered = adoption::recover(&inner).await?;
        sweeper::sweep_orphans(&inner).await;
        for (job, run) in recovered {
            let span = info_span!("job", job.id = %job.id, provider = %job.provider);
            inner.tasks.spawn(run.run().instrument(span));
        }
        let sweep = Arc::clone(&inner);
        inner.tasks.spawn(async move { sweeper::run(sweep).await });
        inner.tasks.spawn(store_writes::retry(Arc::clone(&inner)));
        inner.tasks.spawn(retention::run(Arc::clone(&inner)));
        inner
            .tasks
            .spawn(Arc::clone(&inner.disk).run(inner.shutdown.clone()));
        Ok(Self { inner })
    }

    /// Validates a spec, picks its provider, stores the job and starts it. The job has no
    /// owner: only callers who may read every job see it.
    pub async fn submit(&self, spec: JobSpec) -> Result<Job, SubmitError> {
        self.submit_as("", spec).await
    }

    /// Like [`submit`](Self::submit), for the identity named `owner`.
    pub async fn submit_as(&self, owner: &str, spec: JobSpec) -> Result<Job, SubmitError> {
        let submitted = self.try_submit(owner, spec).await;
        if let Some(reason) = submitted.as_ref().err().and_then(SubmitError::full_reason) {
            info!(owner, %reason, "submit refused: the server is full");
            crate::observe::job_refused(reason);
        }
        submitted
    }

    async fn try_submit(&self, owner: &str, spec: JobSpec) -> Result<Job, SubmitError> {
        if self.is_shutting_down() {
            return Err(SubmitError::ShuttingDown);
        }
        spec.validate()?;
        if let Some(below) = self.inner.disk.below_floor() {
            return Err(SubmitError::DiskBelowFloor {
                free_bytes: below.free_bytes,
                dir: self.inner.disk.dir().to_owned(),
                floor: self.inner.disk.floor(),
            });
        }
        // Held from here: every early return below gives the place back.
        let ticket = self.inner.admission.admit(owner)?;
        let provider = self.inner.providers.select(&spec).await?;
        provider
            .check_spec(&spec)
            .map_err(|refusal| SubmitError::Refused {
                provider: provider.name().to_owned(),
                refusal,
            })?;
        let job = Job {
            owner: owner.to_owned(),
            ..Job::new(spec, provider.name())
        };
        self.inner.logs.create(job.id).map_err(SubmitError::Log)?;
        if let Err(error) = self.inner.store.insert(&job).await {
            self.inner.logs.discard(job.id);
            return Err(error.into());
        }
        let (status, _) = watch::channel(job.clone());
        let cancel = CancellationToken::new();
        self.inner.lock_active().insert(
            job.id,
            ActiveJob {
                status: status.clone(),
                cancel: cancel.clone(),
            },
        );
        crate::observe::job_submitted();
        let span = info_span!("job", job.id = %job.id, provider = %provider.name());
        info!(parent: &span, command = %job.spec.command, "job accepted");
        let run = job_run::JobRun::new(
            Arc::clone(&self.inner),
            job.clone(),
            provider,
            status,
            cancel,
            job_run::Start::Queued(ticket),
        );
        self.inner.tasks.spawn(run.run().instrument(span));
        Ok(job)
    }

    /// The job as it is now: from memory while active, else from the store.
    pub async fn get(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        if let Some(job) = self
            .inner
            .lock_active()
            .get(&id)
            .map(|a| a.status.borrow().clone())
        {
            return Ok(Some(job));
        }
        self.inner.store.get(id).await
    }

    /// One page of the jobs `filter` selects, newest first (see [`JobStore::list`]), with
    /// active jobs in their current state. A job whose state moved on since it was stored
    /// and no longer matches is left out.
    pub async fn list(
        &self,
        filter: &JobFilter,
        page: &PageRequest,
    ) -> Result<JobPage, StoreError> {
        let mut page = self.current(self.inner.store.list(filter, page).await?);
        page.retain(|job| filter.matches(job));
        Ok(page)
    }

    /// `page` with the active jobs in their current state.
    fn current(&self, mut page: JobPage) -> JobPage {
        let active = self.inner.lock_active();
        for job in &mut page.jobs {
            if let Some(a) = active.get(&job.id) {
                *job = a.status.borrow().clone();
            }
        }
        page
    }

    /// Asks a job to stop. Returns `None` for an unknown job.
    pub async fn cancel(&self, id: JobId) -> Result<Option<CancelOutcome>, StoreError> {
        let active = self
            .inner
            .lock_active()
            .get(&id)
            .map(|a| (a.cancel.clone(), a.status.borrow().clone()));
        if let Some((cancel, job)) = active {
            // An ended job whose final state is not stored yet is only reported.
            let requested = !job.state.is_terminal();
            if requested {
                info!(job.id = %id, "cancel requested");
                cancel.cancel();
            }
            return Ok(Some(CancelOutcome { job, requested }));
        }
        Ok(self.inner.store.get(id).await?.map(|job| CancelOutcome {
            job,
            requested: false,
        }))
    }

    /// Follows whether the store takes every job state write: false from the first
    /// failed write until every state kept in memory meanwhile is stored.
    #[must_use]
    pub fn store_healthy(&self) -> watch::Receiver<bool> {
        self.inner.store_writes.healthy()
    }

    /// Follows a job's state while it is active; `None` once it has ended.
    #[must_use]
    pub fn watch(&self, id: JobId) -> Option<watch::Receiver<Job>> {
        self.inner
            .lock_active()
            .get(&id)
            .map(|a| a.status.subscribe())
    }

    /// Free disk space against the floor, as last measured; it changes with each sample.
    #[must_use]
    pub fn disk(&self) -> watch::Receiver<DiskCondition> {
        self.inner.disk.subscribe()
    }

    /// Number of jobs queued now: accepted and not yet given a worker slot.
    #[must_use]
    pub fn queued_jobs(&self) -> usize {
        self.inner.admission.queued()
    }

    pub(crate) fn intake(&self) -> &OutputIntake {
        &self.inner.intake
    }

    /// The job logs.
    #[must_use]
    pub fn logs(&self) -> &Arc<LogHub> {
        &self.inner.logs
    }

    /// The provider registry.
    #[must_use]
    pub fn providers(&self) -> &ProviderRegistry {
        &self.inner.providers
    }

    pub(crate) fn registrations(&self) -> &WorkerRegistrations {
        &self.inner.registrations
    }

    /// Re-attaches `worker_id` to its running job if `credential` is its current resume
    /// credential, renewing it (stored first, so a restarted server accepts the next one).
    pub(crate) async fn resume_worker(
        &self,
        worker_id: WorkerId,
        credential: &ResumeCredential,
    ) -> Result<resume::Resumed, ResumeError> {
        self.inner
            .registrations
            .resumes()
            .resume(worker_id, credential, self.inner.store.as_ref())
            .await
    }

    /// True once [`JobController::shutdown`] has started: new jobs are refused.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Number of jobs the server holds in memory: those not yet in a terminal state, and
    /// ended ones whose final state the store has not taken yet.
    #[must_use]
    pub fn active_jobs(&self) -> usize {
        self.inner.lock_active().len()
    }

    /// Refuses new jobs and, as [`ControllerConfig::on_shutdown`] says, either stops
    /// every active job (they end `Failed: ServerRestarted`) and removes their workers, or
    /// leaves running jobs to their workers for the next server process; waits up to
    /// `deadline` for that to finish.
    pub async fn shutdown(&self, deadline: Duration) {
        self.inner.shutdown.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(deadline, self.inner.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                active = self.active_jobs(),
                "shutdown deadline passed with jobs still stopping"
            );
        }
    }
}

impl Inner {
    fn lock_active(&self) -> MutexGuard<'_, HashMap<JobId, ActiveJob>> {
        self.active.lock()
    }

    fn lock_workers(&self) -> MutexGuard<'_, HashSet<WorkerId>> {
        self.workers.lock()
    }
}
