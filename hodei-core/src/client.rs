//! A client of the job API: submit, inspect, cancel and follow jobs.

use std::time::Duration;

use futures::{Stream, StreamExt};
use hodei_proto::v1::{self as pb, job_service_client::JobServiceClient};
use tonic::transport::{Channel, Endpoint};

use crate::{
    job::{Job, JobId, JobSpec, JobState, ValidationError},
    logs::OutputChunk,
};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is invalid or unreachable.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The address.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error.
    #[error("{}", .0.message())]
    Status(#[from] Box<tonic::Status>),
    /// The server's answer could not be understood.
    #[error("invalid response from the server: {0}")]
    InvalidResponse(#[from] ValidationError),
}

impl ClientError {
    /// The gRPC code, when the server answered with an error.
    #[must_use]
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

fn status(status: tonic::Status) -> ClientError {
    ClientError::Status(Box::new(status))
}

/// Something that happened to a followed job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// Output, in order, each chunk once.
    Output(OutputChunk),
    /// The job's state changed (or its progress note did).
    State {
        /// The new state; a terminal one is the last event.
        state: JobState,
        /// Progress note, e.g. "pulling image".
        detail: Option<String>,
    },
}

/// A connection to a Hodei Jobs server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HodeiClient {
    inner: JobServiceClient<Channel>,
}

#[bon::bon]
impl HodeiClient {
    /// Connects to `url`, e.g. `http://localhost:50051`.
    #[builder(finish_fn = connect)]
    pub async fn new(
        /// Server URL.
        #[builder(start_fn, into)]
        url: String,
        /// Longest wait for the connection.
        #[builder(default = Duration::from_secs(5))]
        connect_timeout: Duration,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|source| ClientError::Connect {
                url: url.clone(),
                source,
            })?
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        Ok(Self {
            inner: JobServiceClient::new(channel).max_decoding_message_size(16 << 20),
        })
    }

    /// Connects with default settings.
    pub async fn connect(url: impl Into<String>) -> Result<Self, ClientError> {
        Self::builder(url).connect().await
    }

    /// Submits a job; the server validates it and picks a provider.
    pub async fn submit(&self, spec: &JobSpec) -> Result<Job, ClientError> {
        let response = self
            .inner
            .clone()
            .submit_job(pb::SubmitJobRequest {
                spec: Some(spec.into()),
            })
            .await
            .map_err(status)?;
        let job = response
            .into_inner()
            .job
            .ok_or_else(|| ValidationError::new("job", "is missing"))?;
        Ok(job.try_into()?)
    }

    /// One job.
    pub async fn get(&self, id: JobId) -> Result<Job, ClientError> {
        self.get_raw(&id.to_string()).await
    }

    /// One job by id text; the server checks the id, so bad input gets its answer.
    pub async fn get_raw(&self, id: &str) -> Result<Job, ClientError> {
        let job = self
            .inner
            .clone()
            .get_job(pb::GetJobRequest {
                job_id: id.to_owned(),
            })
            .await
            .map_err(status)?;
        Ok(job.into_inner().try_into()?)
    }

    /// Up to `limit` jobs, newest first (0 means the server default).
    pub async fn list(&self, limit: u32) -> Result<Vec<Job>, ClientError> {
        let response = self
            .inner
            .clone()
            .list_jobs(pb::ListJobsRequest { limit })
            .await
            .map_err(status)?;
        Ok(response
            .into_inner()
            .jobs
            .into_iter()
            .map(Job::try_from)
            .collect::<Result<_, _>>()?)
    }

    /// Asks a job to stop. Returns the job and whether it was still active.
    pub async fn cancel(&self, id: &str) -> Result<(Job, bool), ClientError> {
        let response = self
            .inner
            .clone()
            .cancel_job(pb::CancelJobRequest {
                job_id: id.to_owned(),
            })
            .await
            .map_err(status)?
            .into_inner();
        let job = response
            .job
            .ok_or_else(|| ValidationError::new("job", "is missing"))?;
        Ok((job.try_into()?, response.cancel_requested))
    }

    /// Follows a job from output chunk `from_seq` (0 or 1: from the start). With `follow`
    /// the stream ends after the terminal state; without, after the output stored so far
    /// and the current state.
    pub async fn follow(
        &self,
        id: &str,
        from_seq: u64,
        include_output: bool,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<JobEvent, ClientError>> + Send + 'static, ClientError>
    {
        let stream = self
            .inner
            .clone()
            .follow_job(pb::FollowJobRequest {
                job_id: id.to_owned(),
                from_seq,
                include_output,
                follow,
            })
            .await
            .map_err(status)?
            .into_inner();
        Ok(stream.map(|event| Ok(JobEvent::try_from(event.map_err(status)?)?)))
    }
}
