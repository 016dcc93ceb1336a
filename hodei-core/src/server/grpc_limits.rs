//! Transport limits of both gRPC listeners: message sizes, HTTP/2 streams, keepalive,
//! headers and the deadline of a call.

use std::time::Duration;

use crate::job::limits::MAX_SPEC_BYTES;

/// Largest message on the job API, either way: room for the largest legal spec (a
/// `SubmitJob` request, a `GetJob` answer) many times over, and for a `ListJobs` answer of
/// ordinary jobs.
pub const JOB_API_MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Largest message on the worker API, either way: room for an assignment carrying the
/// largest legal spec, and for an output batch (at most a few hundred KiB).
pub const WORKER_API_MAX_MESSAGE_BYTES: usize = 4 << 20;
/// The smallest message limit either API accepts: a legal spec with its protobuf framing
/// (a few bytes per argument, variable and label) fits twice over.
pub const MIN_MESSAGE_BYTES: usize = 2 * MAX_SPEC_BYTES;

const _: () = assert!(JOB_API_MAX_MESSAGE_BYTES >= MIN_MESSAGE_BYTES);
const _: () = assert!(WORKER_API_MAX_MESSAGE_BYTES >= MIN_MESSAGE_BYTES);

/// How a worker waits for its registration answer; a call deadline shorter than this
/// would cut a slow but legal registration.
pub(super) const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Transport limits of the gRPC listeners. Every field has a finite default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcLimits {
    /// Largest message on the job API, either way (default
    /// [`JOB_API_MAX_MESSAGE_BYTES`]). A larger one is refused with `OUT_OF_RANGE`.
    pub job_api_max_message_bytes: usize,
    /// Largest message on the worker API, either way (default
    /// [`WORKER_API_MAX_MESSAGE_BYTES`]).
    pub worker_api_max_message_bytes: usize,
    /// Most concurrent calls (HTTP/2 streams) on one connection (default 128).
    pub max_concurrent_streams: u32,
    /// How often the server pings an HTTP/2 connection to check the peer is there
    /// (default 30 s).
    pub keepalive_interval: Duration,
    /// How long the server waits for a ping's answer before it closes the connection
    /// (default 20 s).
    pub keepalive_timeout: Duration,
    /// Largest header list (all metadata of a call) the server accepts (default 16 KiB).
    pub max_header_list_bytes: u32,
    /// Longest time a call may take to produce its answer (default 60 s). A unary call
    /// over it ends with `CANCELLED`; a streaming call (`FollowJob`, the worker's
    /// `Attach`) is bounded only until its stream starts, never while it streams.
    pub request_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            job_api_max_message_bytes: JOB_API_MAX_MESSAGE_BYTES,
            worker_api_max_message_bytes: WORKER_API_MAX_MESSAGE_BYTES,
            max_concurrent_streams: 128,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_header_list_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// A setting of [`GrpcLimits`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid gRPC limit {setting}: {message}")]
pub struct GrpcLimitError {
    /// The offending field of [`GrpcLimits`].
    pub setting: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl GrpcLimits {
    /// Refuses limits that would break legal traffic: message limits below
    /// [`MIN_MESSAGE_BYTES`], zero streams, headers or keepalive, or a call deadline below
    /// 15 s (a worker's registration may take that long).
    pub fn validate(&self) -> Result<(), GrpcLimitError> {
        let refuse = |setting, message: String| Err(GrpcLimitError { setting, message });
        for (setting, value) in [
            ("job_api_max_message_bytes", self.job_api_max_message_bytes),
            (
                "worker_api_max_message_bytes",
                self.worker_api_max_message_bytes,
            ),
        ] {
            if value < MIN_MESSAGE_BYTES {
                return refuse(
                    setting,
                    format!(
                        "{value} is below {MIN_MESSAGE_BYTES} bytes, too small for the largest \
                         legal job spec"
                    ),
                );
            }
        }
        if self.max_concurrent_streams == 0 {
            return refuse("max_concurrent_streams", "must be at least 1".into());
        }
        if self.max_header_list_bytes == 0 {
            return refuse("max_header_list_bytes", "must be at least 1".into());
        }
        if self.keepalive_interval.is_zero() {
            return refuse("keepalive_interval", "must be greater than zero".into());
        }
        if self.keepalive_timeout.is_zero() {
            return refuse("keepalive_timeout", "must be greater than zero".into());
        }
        if self.request_timeout < MIN_REQUEST_TIMEOUT {
            return refuse(
                "request_timeout",
                format!(
                    "{} is below the minimum of {}",
                    humantime::format_duration(self.request_timeout),
                    humantime::format_duration(MIN_REQUEST_TIMEOUT)
                ),
            );
        }
        Ok(())
    }

    /// A transport server with these HTTP/2 limits and call deadline.
    pub(super) fn server(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .max_concurrent_streams(self.max_concurrent_streams)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
            .http2_max_header_list_size(self.max_header_list_bytes)
            .timeout(self.request_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The call deadline bounds the start of a stream, never the stream itself: tonic's
    /// timeout wraps the future of the response head, not its body.
    #[tokio::test]
    async fn a_stream_outlives_the_call_deadline() {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

        let limits = GrpcLimits {
            request_timeout: Duration::from_millis(100),
            ..GrpcLimits::default()
        };
        let (reporter, health) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(
            limits
                .server()
                .add_service(health)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        let mut stream = client
            .watch(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        tokio::time::sleep(limits.request_timeout * 4).await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let second = stream.message().await.unwrap().unwrap();
        assert_ne!(first.status, second.status);
        server.abort();
    }

    #[test]
    fn the_defaults_are_valid() {
        GrpcLimits::default().validate().unwrap();
    }

    #[test]
    fn limits_that_would_break_legal_traffic_are_refused_naming_the_setting() {
        let cases: [(GrpcLimits, &str); 7] = [
            (
                GrpcLimits {
                    job_api_max_message_bytes: MIN_MESSAGE_BYTES - 1,
                    ..GrpcLimits::default()
                },
                "job_api_max_message_bytes",
            ),
            (
                GrpcLimits {
                    worker_api_max_message_bytes: 4096,
                    ..GrpcLimits::default()
                },
                "worker_api_max_message_bytes",
            ),
            (
                GrpcLimits {
                    max_concurrent_streams: 0,
                    ..GrpcLimits::default()
                },
                "max_concurrent_streams",
            ),
            (
                GrpcLimits {
                    max_header_list_bytes: 0,
                    ..GrpcLimits::default()
                },
                "max_header_list_bytes",
            ),
            (
                GrpcLimits {
                    keepalive_interval: Duration::ZERO,
                    ..GrpcLimits::default()
                },
                "keepalive_interval",
            ),
            (
                GrpcLimits {
                    keepalive_timeout: Duration::ZERO,
                    ..GrpcLimits::default()
                },
                "keepalive_timeout",
            ),
            (
                GrpcLimits {
                    request_timeout: Duration::from_secs(5),
                    ..GrpcLimits::default()
                },
                "request_timeout",
            ),
        ];
        for (limits, setting) in cases {
            let error = limits.validate().unwrap_err();
            assert_eq!(error.setting, setting);
            assert!(error.to_string().contains(setting), "{error}");
        }
    }
}
