//! A client of the job API: submit, inspect, cancel and follow jobs.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt, future::BoxFuture};
use hodei_proto::v1::{self as pb, job_service_client::JobServiceClient};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

mod list;

pub use list::{JobList, ListRequest};

use crate::{
    controller::CancelOutcome,
    job::{Job, JobId, JobSpec, JobState, ValidationError},
    logs::OutputChunk,
    server::JOB_API_MAX_MESSAGE_BYTES,
};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server address is invalid or unreachable.
    #[error("cannot connect to {url}: {}", crate::server::error_chain(source))]
    Connect {
        /// The address.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error.
    #[error("{}", .0.message())]
    Status(Box<tonic::Status>),
    /// The server's answer could not be understood.
    #[error("invalid response from the server: {0}")]
    InvalidResponse(#[from] ValidationError),
    /// The bearer token cannot be sent in a header (it is empty or has characters other
    /// than visible ASCII). The token itself is not shown.
    #[error("the token is not usable as a bearer token: it must be non-empty visible ASCII")]
    InvalidToken,
}

/// Adds `authorization: Bearer <token>` to every call, when a token is set.
#[derive(Clone, Default)]
pub(crate) struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    fn new(token: Option<&str>) -> Result<Self, ClientError> {
        let Some(token) = token else {
            return Ok(Self(None));
        };
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidToken);
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| ClientError::InvalidToken)?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(<redacted>)"
        } else {
            "BearerToken(None)"
        })
    }
}

impl Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type JobClient = JobServiceClient<InterceptedService<Channel, BearerToken>>;

impl ClientError {
    /// The gRPC code, when the server answered with an error.
    #[must_use]
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    /// Whether the server refused the call's credentials (UNAUTHENTICATED).
    #[must_use]
    pub fn is_unauthenticated(&self) -> bool {
        self.code() == Some(tonic::Code::Unauthenticated)
    }
}

/// The TLS side of a connection to the server: used with `https://` URLs only.
#[derive(Clone, Default)]
pub(crate) struct ClientTls {
    /// CA bundle (PEM) the server's certificate must chain to; the system's roots when absent.
    pub ca: Option<Vec<u8>>,
    /// Certificate and key (PEM) to present.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// An endpoint for `url`, with TLS when its scheme is `https`.
pub(crate) fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        config = match &tls.ca {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(config)?;
    }
    Ok(endpoint)
}

/// The request for `spec`, refused here with `OUT_OF_RANGE` when it is larger than the
/// job API accepts (the transport would otherwise only reset the stream).
fn submit_request(spec: &JobSpec) -> Result<pb::SubmitJobRequest, ClientError> {
    let request = pb::SubmitJobRequest {
        spec: Some(spec.into()),
    };
    let size = prost::Message::encoded_len(&request);
    if size > JOB_API_MAX_MESSAGE_BYTES {
        return Err(ClientError::Status(Box::new(tonic::Status::out_of_range(
            format!(
                "the job spec is {size} bytes encoded; the job API accepts at most \
                 {JOB_API_MAX_MESSAGE_BYTES}"
            ),
        ))));
    }
    Ok(request)
}

fn status(status: tonic::Status) -> ClientError {
    // The worker API's port answers job API calls with a bare UNIMPLEMENTED.
    let status = if status.code() == tonic::Code::Unimplemented && status.message().is_empty() {
        tonic::Status::unimplemented(
            "this address does not serve the job API; is it the worker API's port? Clients use the job API's port (50051 by default)",
        )
    } else {
        status
    };
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
    inner: JobClient,
}

#[bon::bon]
impl HodeiClient {
    /// Connects to `url`, e.g. `http://localhost:50051` or `https://hodei.example:50051`.
    #[builder(finish_fn = connect)]
    pub async fn new(
        /// Server URL; `https://` for TLS.
        #[builder(start_fn, into)]
        url: String,
        /// CA bundle (PEM) that signed the server's certificate; the system's roots when
        /// absent. Used with `https://` only.
        #[builder(into)]
        ca_certificate: Option<Vec<u8>>,
        /// Client certificate and its key (PEM), for servers that authenticate callers by
        /// certificate. Used with `https://` only.
        #[builder(with = |cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>| (cert.into(), key.into()))]
        client_identity: Option<(Vec<u8>, Vec<u8>)>,
        /// Longest wait for the connection.
        #[builder(default = Duration::from_secs(5))]
        connect_timeout: Duration,
        /// Bearer token sent on every call (`authorization: Bearer <token>`).
        #[builder(into)]
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let token = BearerToken::new(token.as_deref())?;
        let tls = ClientTls {
            ca: ca_certificate,
            identity: client_identity,
        };
        let endpoint = endpoint(&url, &tls)
            .map_err(|source| ClientError::Connect {
                url: url.clone(),
                source,
            })?
            .connect_timeout(connect_timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| ClientError::Connect { url, source })?;
        Ok(Self {
            inner: JobServiceClient::with_interceptor(channel, token)
                .max_decoding_message_size(JOB_API_MAX_MESSAGE_BYTES)
                .max_encoding_message_size(JOB_API_MAX_MESSAGE_BYTES),
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
            .submit_job(submit_request(spec)?)
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
        let job = self
            .inner
            .clone()
            .get_job(pb::GetJobRequest {
                job_id: id.to_string(),
            })
            .await
            .map_err(status)?;
        Ok(job.into_inner().try_into()?)
    }

    /// Lists jobs, newest first, one page per call: every job the caller may read, or
    /// those the request's conditions select.
    ///
    /// ```no_run
    /// # async fn run(client: hodei_core::HodeiClient) -> Result<(), hodei_core::ClientError> {
    /// use hodei_core::job::JobPhase;
    ///
    /// let mut page = client.list().state(JobPhase::Running).label_selector("team=a").page_size(50).send().await?;
    /// while let Some(token) = page.next_page_token.take() {
    ///     page = client.list().state(JobPhase::Running).label_selector("team=a").page_size(50).page_token(token).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn list(&self) -> ListRequest {
        ListRequest::new(self.inner.clone())
    }

    /// Asks a job to stop; `requested` is false when it had already ended.
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, ClientError> {
        let response = self
            .inner
            .clone()
            .cancel_job(pb::CancelJobRequest {
                job_id: id.to_string(),
            })
            .await
            .map_err(status)?
            .into_inner();
        let job = response
            .job
            .ok_or_else(|| ValidationError::new("job", "is missing"))?;
        Ok(CancelOutcome {
            job: job.try_into()?,
            requested: response.cancel_requested,
        })
    }

    /// Follows a job's output and state: history first, then, with
    /// [`live`](FollowRequest::live), everything new until the job ends.
    ///
    /// ```no_run
    /// # async fn run(client: hodei_core::HodeiClient, id: hodei_core::JobId) -> Result<(), hodei_core::ClientError> {
    /// use futures::StreamExt;
    ///
    /// let mut events = client.follow(id).from_seq(10).live().await?;
    /// while let Some(event) = events.next().await {
    ///     println!("{:?}", event?);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn follow(&self, id: JobId) -> FollowRequest {
        FollowRequest {
            inner: self.inner.clone(),
            id,
            from_seq: 0,
            include_output: true,
            live: false,
        }
    }
}

/// A follow of one job, made by [`HodeiClient::follow`]; `.await` it (or [`send`](Self::send))
/// for the [`JobEvents`].
#[derive(Debug, Clone)]
#[must_use = "a follow request does nothing until it is awaited"]
pub struct FollowRequest {
    inner: JobClient,
    id: JobId,
    from_seq: u64,
    include_output: bool,
    live: bool,
}

impl FollowRequest {
    /// Starts at output chunk `seq`, e.g. one past the last chunk already printed
    /// (default: from the first chunk).
    pub fn from_seq(mut self, seq: u64) -> Self {
        self.from_seq = seq;
        self
    }

    /// Keeps following until the job ends; the terminal state is the last event. Without
    /// it, the stream ends after the output stored so far and the current state.
    pub fn live(mut self) -> Self {
        self.live = true;
        self
    }

    /// Only state changes, no output.
    pub fn states_only(mut self) -> Self {
        self.include_output = false;
        self
    }

    /// Opens the stream.
    pub async fn send(self) -> Result<JobEvents, ClientError> {
        let Self {
            mut inner,
            id,
            from_seq,
            include_output,
            live,
        } = self;
        let stream = inner
            .follow_job(pb::FollowJobRequest {
                job_id: id.to_string(),
                from_seq,
                include_output,
                follow: live,
            })
            .await
            .map_err(status)?
            .into_inner();
        Ok(JobEvents { stream })
    }
}

impl IntoFuture for FollowRequest {
    type Output = Result<JobEvents, ClientError>;
    type IntoFuture = BoxFuture<'static, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// The events of a followed job, in order.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct JobEvents {
    stream: tonic::Streaming<pb::JobEvent>,
}

impl Stream for JobEvents {
    type Item = Result<JobEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream
            .poll_next_unpin(cx)
            .map(|event| event.map(|event| Ok(JobEvent::try_from(event.map_err(status)?)?)))
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    #[test]
    fn the_token_goes_into_every_call_and_never_into_debug_output() {
        let mut token = BearerToken::new(Some("s3cr3t-value")).unwrap();
        let request = token.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cr3t-value"
        );
        assert!(!format!("{token:?}").contains("s3cr3t"));
        let mut none = BearerToken::new(None).unwrap();
        assert!(
            none.call(tonic::Request::new(()))
                .unwrap()
                .metadata()
                .get("authorization")
                .is_none()
        );
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused_without_showing_it() {
        for bad in ["", "has space", "new\nline", "é"] {
            let error = BearerToken::new(Some(bad)).unwrap_err();
            assert!(matches!(error, ClientError::InvalidToken));
            if !bad.is_empty() {
                assert!(!error.to_string().contains(bad));
            }
        }
    }
}
