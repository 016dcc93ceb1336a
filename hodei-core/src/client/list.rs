//! `ListJobs` from the client: a request builder and the page it answers with.

use futures::future::BoxFuture;
use hodei_proto::v1 as pb;
use time::OffsetDateTime;

use super::{ClientError, JobClient, status};
use crate::{
    job::{Job, JobPhase},
    wire::list_time,
};

/// One page of jobs listed by [`HodeiClient::list`](super::HodeiClient::list), newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// More jobs matched than fit in one answer of the server: `jobs` holds the newest
    /// that fit, and [`next_page_token`](Self::next_page_token) continues after them.
    pub truncated: bool,
    /// Pass to [`ListRequest::page_token`] for the next page; `None` when no job is left.
    pub next_page_token: Option<String>,
}

/// A list of jobs, made by [`HodeiClient::list`](super::HodeiClient::list); `.await` it
/// (or [`send`](Self::send)) for one [`JobList`] page. Every condition set must hold.
#[derive(Debug, Clone)]
#[must_use = "a list request does nothing until it is awaited"]
pub struct ListRequest {
    inner: JobClient,
    request: pb::ListJobsRequest,
}

impl ListRequest {
    pub(super) fn new(inner: JobClient) -> Self {
        Self {
            inner,
            request: pb::ListJobsRequest::default(),
        }
    }

    /// Lists jobs in `phase`; called again, in any of the phases given (default: every
    /// phase).
    pub fn state(mut self, phase: JobPhase) -> Self {
        self.request.states.push(pb::JobPhase::from(phase).into());
        self
    }

    /// Lists jobs in any of `phases`, added to those already given.
    pub fn states(self, phases: impl IntoIterator<Item = JobPhase>) -> Self {
        phases.into_iter().fold(self, Self::state)
    }

    /// Lists only jobs submitted by the identity named `owner`.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.request.owner = owner.into();
        self
    }

    /// Lists only the caller's own jobs: the server puts in the name it knows the caller by.
    pub fn mine(mut self) -> Self {
        self.request.owned_by_caller = true;
        self
    }

    /// Lists only jobs whose labels match a Kubernetes label selector, e.g.
    /// `team=a,env in (dev,test)`; the server checks it.
    pub fn label_selector(mut self, selector: impl Into<String>) -> Self {
        self.request.label_selector = selector.into();
        self
    }

    /// Lists only jobs created at or after `time` (to the millisecond).
    pub fn created_after(mut self, time: OffsetDateTime) -> Self {
        self.request.created_after_unix_ms = list_time(time);
        self
    }

    /// Lists only jobs created before `time` (to the millisecond).
    pub fn created_before(mut self, time: OffsetDateTime) -> Self {
        self.request.created_before_unix_ms = list_time(time);
        self
    }

    /// Most jobs in the answer (default: the server's, 100; at most 1000).
    pub fn page_size(mut self, size: u32) -> Self {
        self.request.page_size = size;
        self
    }

    /// Continues a list: the [`JobList::next_page_token`] of the previous page, with the
    /// same conditions.
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.request.page_token = token.into();
        self
    }

    /// Asks for the page.
    pub async fn send(self) -> Result<JobList, ClientError> {
        let Self { mut inner, request } = self;
        let response = inner.list_jobs(request).await.map_err(status)?.into_inner();
        Ok(JobList {
            jobs: response
                .jobs
                .into_iter()
                .map(Job::try_from)
                .collect::<Result<_, _>>()?,
            truncated: response.truncated,
            next_page_token: Some(response.next_page_token).filter(|t| !t.is_empty()),
        })
    }
}

impl IntoFuture for ListRequest {
    type Output = Result<JobList, ClientError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
