//! The client-facing gRPC `JobService`: every call authenticated, every job visible only
//! to those who may read it.

use hodei_proto::v1::{self as pb, job_service_server::JobService};
use tonic::{Request, Response, Status};
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    JOB_API_MAX_MESSAGE_BYTES,
    follow::follow,
    follow_stream::{EventStream, event_stream},
    followers::{FollowLimits, Followers},
    list_budget,
};
use crate::{
    auth::{
        Action, AuthError, Authenticator, CertificateIdentity, Identity, PresentedCredentials,
        REDACTED_ENV_VALUE,
    },
    controller::{JobController, SubmitError},
    job::{Job, JobId, JobSpec, ValidationError},
    observe,
    provider::SelectionError,
    store::{JobFilter, PageRequest},
    wire::ListQuery,
};

/// `tracing` target of the audit lines: one per submit, cancel and refused call, with the
/// fields `identity`, `method`, `job.id` (when the call names a job) and `outcome`.
pub const AUDIT_TARGET: &str = "hodei::audit";

/// Serves `hodei.v1.JobService` from a [`JobController`], for callers an
/// [`Authenticator`] lets in.
#[derive(Debug, Clone)]
pub struct JobApi {
    controller: JobController,
    auth: Authenticator,
    followers: Followers,
    max_message_bytes: usize,
}

/// Identity field of audit lines for calls that were not authenticated.
const UNAUTHENTICATED: &str = "<unauthenticated>";

fn audit(identity: &str, method: &str, job: Option<JobId>, outcome: &str) {
    match job {
        Some(id) => {
            info!(target: AUDIT_TARGET, identity, method, job.id = %id, outcome, "job API call")
        }
        None => info!(target: AUDIT_TARGET, identity, method, outcome, "job API call"),
    }
}

/// The credentials of a call: its bearer token, and the client certificate the TLS layer
/// verified and put into the request's extensions as a [`CertificateIdentity`].
fn presented<T>(request: &Request<T>) -> Result<PresentedCredentials, AuthError> {
    let mut credentials = PresentedCredentials::from_metadata(request.metadata())?;
    credentials.certificate = request.extensions().get::<CertificateIdentity>().cloned();
    Ok(credentials)
}

fn unavailable(error: &AuthError) -> Status {
    warn!(%error, "cannot authorize a call");
    Status::unavailable(error.to_string())
}

fn not_found(id: JobId) -> Status {
    Status::not_found(format!("job {id} not found"))
}

impl JobApi {
    /// A service backed by `controller`; `auth` decides who may call it. It follows jobs
    /// within the default [`FollowLimits`] and sizes `ListJobs` answers for a message
    /// limit of [`JOB_API_MAX_MESSAGE_BYTES`].
    #[must_use]
    pub fn new(controller: JobController, auth: Authenticator) -> Self {
        Self {
            controller,
            auth,
            followers: Followers::new(FollowLimits::default()),
            max_message_bytes: JOB_API_MAX_MESSAGE_BYTES,
        }
    }

    /// Follows jobs within `limits`.
    #[must_use]
    pub fn with_follow_limits(mut self, limits: FollowLimits) -> Self {
        self.followers = Followers::new(limits);
        self
    }

    /// Sizes `ListJobs` answers for the largest message the transport sends.
    #[must_use]
    pub fn with_max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// Who makes `request`; refusals are audited and counted.
    async fn caller<T>(&self, method: &str, request: &Request<T>) -> Result<Identity, Status> {
        let result = match presented(request) {
            Ok(credentials) => self.auth.authenticate(&credentials).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(identity) => Ok(identity),
            Err(AuthError::Unauthenticated(message)) => {
                audit(UNAUTHENTICATED, method, None, "unauthenticated");
                observe::job_api_refusal("unauthenticated");
                Err(Status::unauthenticated(message))
            }
            Err(error @ AuthError::Unavailable(_)) => Err(unavailable(&error)),
        }
    }

    fn denied(who: &Identity, method: &str, job: Option<JobId>, what: &str) -> Status {
        audit(who.name(), method, job, "permission_denied");
        observe::job_api_refusal("permission_denied");
        Status::permission_denied(format!("{} may not {what}", who.name()))
    }

    /// The job, if `who` may see it. Another identity's job that `who` may not read is
    /// NOT_FOUND with the same message as an unknown one, so ids cannot be probed.
    async fn visible_job(&self, who: &Identity, method: &str, id: JobId) -> Result<Job, Status> {
        let read_all = may(who, Action::Get).await?;
        if !read_all && !may(who, Action::Submit).await? {
            return Err(Self::denied(who, method, Some(id), "read jobs"));
        }
        let job = self.existing(id).await?;
        if read_all || owns(who, &job) {
            return Ok(job);
        }
        Err(hidden(who, method, id))
    }

    async fn existing(&self, id: JobId) -> Result<Job, Status> {
        self.controller
            .get(id)
            .await
            .map_err(internal)?
            .ok_or_else(|| not_found(id))
    }

    /// Decides whether `who` may cancel job `id`.
    async fn check_cancel(&self, who: &Identity, id: JobId) -> Result<(), Status> {
        const METHOD: &str = "CancelJob";
        if may(who, Action::CancelAny).await? {
            return Ok(());
        }
        let read_all = may(who, Action::Get).await?;
        let submit = may(who, Action::Submit).await?;
        if !read_all && !submit {
            return Err(Self::denied(who, METHOD, Some(id), "cancel jobs"));
        }
        let job = self.existing(id).await.inspect_err(|status| {
            let outcome = if status.code() == tonic::Code::NotFound {
                "not_found"
            } else {
                "failed"
            };
            audit(who.name(), METHOD, Some(id), outcome);
        })?;
        if submit && owns(who, &job) {
            Ok(())
        } else if read_all {
            Err(Self::denied(
                who,
                METHOD,
                Some(id),
                "cancel other identities' jobs",
            ))
        } else {
            Err(hidden(who, METHOD, id))
        }
    }
}

/// Narrows `filter` to the jobs of `owner`; false when it asked for another owner's, so
/// nothing can match.
fn only_owned_by(filter: &mut JobFilter, owner: &str) -> bool {
    match &filter.owner {
        Some(asked) if asked != owner => false,
        _ => {
            filter.owner = Some(owner.to_owned());
            true
        }
    }
}

/// Whether `who` submitted `job`.
fn owns(who: &Identity, job: &Job) -> bool {
    !job.owner.is_empty() && job.owner == who.name()
}

async fn may(who: &Identity, action: Action) -> Result<bool, Status> {
    who.may(action).await.map_err(|e| unavailable(&e))
}

/// Answers for a job that exists but that `who` may not see.
fn hidden(who: &Identity, method: &str, id: JobId) -> Status {
    audit(who.name(), method, Some(id), "not_found_hidden");
    observe::job_api_refusal("not_found_hidden");
    not_found(id)
}

/// Shows env values only to the job's owner and to identities that may see every env.
struct EnvView<'a> {
    who: &'a Identity,
    see_env: Option<bool>,
}

impl<'a> EnvView<'a> {
    fn new(who: &'a Identity) -> Self {
        Self { who, see_env: None }
    }

    async fn show(&mut self, job: &Job) -> Result<pb::Job, Status> {
        let mut shown = pb::Job::from(job);
        if owns(self.who, job) || job.spec.env.is_empty() {
            return Ok(shown);
        }
        let see_env = match self.see_env {
            Some(see_env) => see_env,
            None => *self.see_env.insert(may(self.who, Action::SeeEnv).await?),
        };
        if !see_env && let Some(spec) = &mut shown.spec {
            for value in spec.env.values_mut() {
                REDACTED_ENV_VALUE.clone_into(value);
            }
        }
        Ok(shown)
    }
}

fn invalid(error: &ValidationError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The job id field of a request.
fn job_id(id: &str) -> Result<JobId, Status> {
    id.parse().map_err(|e| invalid(&e))
}

pub(super) fn internal(error: impl std::error::Error) -> Status {
    warn!(%error, "request failed");
    Status::internal(error.to_string())
}

fn submit_status(error: SubmitError) -> Status {
    match error {
        SubmitError::Invalid(e) => invalid(&e),
        SubmitError::NoProvider(e @ SelectionError::UnknownProvider { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        SubmitError::NoProvider(e @ SelectionError::Unhealthy { .. }) => {
            Status::unavailable(e.to_string())
        }
        SubmitError::NoProvider(e) => Status::failed_precondition(e.to_string()),
        e @ SubmitError::Refused { .. } => Status::invalid_argument(e.to_string()),
        e @ SubmitError::ShuttingDown => Status::unavailable(e.to_string()),
        e @ (SubmitError::QueueFull { .. }
        | SubmitError::OwnerQueueFull { .. }
        | SubmitError::DiskBelowFloor { .. }) => Status::resource_exhausted(e.to_string()),
        e @ (SubmitError::Store(_) | SubmitError::Log(_)) => internal(e),
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        const METHOD: &str = "SubmitJob";
        let who = self.caller(METHOD, &request).await?;
        if !may(&who, Action::Submit).await? {
            return Err(Self::denied(&who, METHOD, None, "submit jobs"));
        }
        let submitted = async {
            let spec = request
                .into_inner()
                .spec
                .ok_or_else(|| Status::invalid_argument("invalid spec: is missing"))?;
            let spec = JobSpec::try_from(spec).map_err(|e| invalid(&e))?;
            self.controller
                .submit_as(who.name(), spec)
                .await
                .map_err(submit_status)
        }
        .await;
        match submitted {
            Ok(job) => {
                audit(who.name(), METHOD, Some(job.id), "accepted");
                Ok(Response::new(pb::SubmitJobResponse {
                    job: Some((&job).into()),
                }))
            }
            Err(status) => {
                audit(
                    who.name(),
                    METHOD,
                    None,
                    &format!("rejected: {:?}", status.code()),
                );
                Err(status)
            }
        }
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        const METHOD: &str = "GetJob";
        let who = self.caller(METHOD, &request).await?;
        let id = job_id(&request.into_inner().job_id)?;
        let job = self.visible_job(&who, METHOD, id).await?;
        Ok(Response::new(EnvView::new(&who).show(&job).await?))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        const METHOD: &str = "ListJobs";
        let who = self.caller(METHOD, &request).await?;
        let query = ListQuery::try_from(request.into_inner()).map_err(|e| invalid(&e))?;
        let read_all = may(&who, Action::List).await?;
        if !read_all && !may(&who, Action::Submit).await? {
            return Err(Self::denied(&who, METHOD, None, "list jobs"));
        }
        let mut filter = query.filter;
        // A caller who may read only its own jobs lists only those, whatever it asked.
        if (query.owned_by_caller || !read_all) && !only_owned_by(&mut filter, who.name()) {
            return Ok(Response::new(pb::ListJobsResponse::default()));
        }
        // Stored records are read only up to the size of one answer.
        let page = PageRequest::first(query.page_size)
            .after(query.page_token)
            .max_bytes(self.max_message_bytes);
        let page = self
            .controller
            .list(&filter, &page)
            .await
            .map_err(internal)?;
        let mut view = EnvView::new(&who);
        let mut shown = Vec::with_capacity(page.jobs.len());
        for job in &page.jobs {
            shown.push(view.show(job).await?);
        }
        let mut answer = list_budget::fit(shown, self.max_message_bytes);
        answer.next_page_token = page
            .next_after(answer.jobs.len())
            .map(|token| token.to_string())
            .unwrap_or_default();
        answer.truncated |= page.truncated;
        if answer.truncated {
            debug!(
                shown = answer.jobs.len(),
                asked = query.page_size,
                "a job list was cut to fit one answer"
            );
        }
        Ok(Response::new(answer))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        const METHOD: &str = "CancelJob";
        let who = self.caller(METHOD, &request).await?;
        let id = job_id(&request.into_inner().job_id)?;
        self.check_cancel(&who, id).await?;
        let Some(outcome) = self.controller.cancel(id).await.map_err(internal)? else {
            audit(who.name(), METHOD, Some(id), "not_found");
            return Err(not_found(id));
        };
        let result = if outcome.requested {
            "cancel_requested"
        } else {
            "already_ended"
        };
        audit(who.name(), METHOD, Some(id), result);
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(EnvView::new(&who).show(&outcome.job).await?),
            cancel_requested: outcome.requested,
        }))
    }

    type FollowJobStream = EventStream;

    async fn follow_job(
        &self,
        request: Request<pb::FollowJobRequest>,
    ) -> Result<Response<Self::FollowJobStream>, Status> {
        const METHOD: &str = "FollowJob";
        let who = self.caller(METHOD, &request).await?;
        let connection = request.remote_addr();
        let request = request.into_inner();
        let id = job_id(&request.job_id)?;
        let visible = self.visible_job(&who, METHOD, id).await?;
        let slot = self.followers.admit(connection).inspect_err(|_| {
            audit(who.name(), METHOD, Some(id), "resource_exhausted");
        })?;
        let watch = if request.follow {
            self.controller.watch(id)
        } else {
            None
        };
        let job = match &watch {
            Some(rx) => rx.borrow().clone(),
            None => visible,
        };
        // A snapshot reads what is on disk now and ends; a follow tracks the live log.
        let logs = self.controller.logs();
        let follower = if request.include_output {
            let follower = if request.follow {
                logs.follow(id, request.from_seq)
            } else {
                logs.snapshot(id, request.from_seq)
            };
            Some(follower.map_err(internal)?)
        } else {
            None
        };
        let (mut sink, stream) = event_stream(self.followers.stall_timeout(), request.from_seq);
        let controller = self.controller.clone();
        tokio::spawn(
            async move {
                // Held until the follow ends, whichever way, the client's leaving included.
                let _slot = slot;
                let client_gone = sink.client_gone();
                let followed = tokio::select! {
                    followed = follow(&controller, job, watch, follower, &mut sink) => followed,
                    () = client_gone => Err("client went away"),
                };
                if let Err(closed) = followed {
                    debug!(reason = closed, "follower stopped");
                }
            }
            .instrument(info_span!("follow", job.id = %id)),
        );
        Ok(Response::new(stream))
    }
}
