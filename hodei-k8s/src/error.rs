//! The crate's error type and the mapping from Kubernetes API failures to it.

use kube::core::Status;

/// Everything that can go wrong while talking to the Kubernetes API about worker pods.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A `ResourceQuota` in the namespace refused the pod (HTTP 403 "exceeded quota").
    ///
    /// Not a property of the job: keep it queued and retry once capacity frees up.
    #[error("resource quota exceeded: {message}")]
    QuotaExceeded {
        /// The API server's message, naming the quota and the exhausted resource.
        message: String,
        /// The underlying client error.
        #[source]
        source: Box<kube::Error>,
    },

    /// An object with that name already exists (HTTP 409 `AlreadyExists`).
    #[error("{name} already exists")]
    AlreadyExists {
        /// The name of the object that already exists.
        name: String,
        /// The underlying client error.
        #[source]
        source: Box<kube::Error>,
    },

    /// The API server refused the request for lack of permission or by admission policy
    /// (HTTP 403 other than a quota refusal).
    #[error("forbidden: {message}")]
    Forbidden {
        /// The API server's message, e.g. the RBAC rule or the Pod Security violation.
        message: String,
        /// The underlying client error.
        #[source]
        source: Box<kube::Error>,
    },

    /// The API server answered with any other failure status.
    #[error("kubernetes API error {code} {reason}: {message}")]
    Api {
        /// The HTTP status code (e.g. 422, 500).
        code: u16,
        /// The machine-readable reason (e.g. `Invalid`), possibly empty.
        reason: String,
        /// The human-readable message.
        message: String,
        /// The underlying client error.
        #[source]
        source: Box<kube::Error>,
    },

    /// The request never got a status answer: connection, TLS, timeout or decoding failure.
    #[error("kubernetes client error")]
    Client(#[source] Box<kube::Error>),

    /// The worker pod spec cannot be turned into a valid pod.
    #[error("invalid worker pod spec: {0}")]
    InvalidSpec(String),
}

/// Result with this crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when retrying the same request later may succeed: quota refusals, transport
    /// failures, write conflicts (409 `Conflict`), throttling (429) and server errors (5xx).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::QuotaExceeded { .. } | Self::Client(_) => true,
            Self::Api { code, .. } => *code == 429 || *code >= 500 || self.is_conflict(),
            Self::AlreadyExists { .. } | Self::Forbidden { .. } | Self::InvalidSpec(_) => false,
        }
    }

    /// True for a 409 `Conflict`: another writer changed an object the request depends on,
    /// typically the namespace's `ResourceQuota` while many pods are created at once. The
    /// request had no effect and can be sent again at once.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { code: 409, reason, .. } if reason == "Conflict")
    }

    /// Classifies a client error for a request about the object called `name`.
    pub(crate) fn from_kube(name: &str, err: kube::Error) -> Self {
        let Some(status) = api_status(&err) else {
            return Self::Client(Box::new(err));
        };
        if is_quota_refusal(status) {
            return Self::QuotaExceeded {
                message: status.message.clone(),
                source: Box::new(err),
            };
        }
        if status.reason == "AlreadyExists" || (status.code == 409 && status.reason.is_empty()) {
            return Self::AlreadyExists {
                name: name.to_owned(),
                source: Box::new(err),
            };
        }
        if status.code == 403 || status.reason == "Forbidden" {
            return Self::Forbidden {
                message: status.message.clone(),
                source: Box::new(err),
            };
        }
        Self::Api {
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
            source: Box::new(err),
        }
    }
}

/// The API server's status answer inside a client error, if there was one.
pub(crate) fn api_status(err: &kube::Error) -> Option<&Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

/// True for "not found" answers; a bare 404 counts even without a reason.
pub(crate) fn is_not_found(err: &kube::Error) -> bool {
    api_status(err).is_some_and(|s| s.code == 404 || s.reason == "NotFound")
}

/// The quota admission plugin answers 403 with "exceeded quota" in the message.
fn is_quota_refusal(status: &Status) -> bool {
    status.code == 403 && status.message.contains("exceeded quota")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_err(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    #[test]
    fn quota_refusal_is_its_own_transient_variant() {
        let err = Error::from_kube(
            "p",
            api_err(
                403,
                "Forbidden",
                "pods \"p\" is forbidden: exceeded quota: compute, requested: pods=1, used: pods=5, limited: pods=5",
            ),
        );
        assert!(
            matches!(err, Error::QuotaExceeded { ref message, .. } if message.contains("limited: pods=5"))
        );
        assert!(err.is_transient());
    }

    #[test]
    fn other_403_is_forbidden_and_not_transient() {
        let err = Error::from_kube(
            "p",
            api_err(
                403,
                "Forbidden",
                "pods \"p\" is forbidden: violates PodSecurity \"restricted:latest\"",
            ),
        );
        assert!(matches!(err, Error::Forbidden { .. }));
        assert!(!err.is_transient());
    }

    #[test]
    fn conflict_on_create_is_already_exists() {
        let err = Error::from_kube(
            "p",
            api_err(409, "AlreadyExists", "pods \"p\" already exists"),
        );
        assert!(matches!(err, Error::AlreadyExists { ref name, .. } if name == "p"));
    }

    #[test]
    fn a_quota_update_conflict_is_a_transient_conflict_not_already_exists() {
        let err = Error::from_kube(
            "p",
            api_err(
                409,
                "Conflict",
                "Operation cannot be fulfilled on resourcequotas \"workers\": the object has been modified; please apply your changes to the latest version and try again",
            ),
        );
        assert!(matches!(err, Error::Api { code: 409, .. }), "{err:?}");
        assert!(err.is_conflict());
        assert!(err.is_transient());
        let exists = Error::from_kube("p", api_err(409, "AlreadyExists", "exists"));
        assert!(!exists.is_conflict());
        assert!(!exists.is_transient());
    }

    #[test]
    fn server_errors_are_transient_and_keep_their_code() {
        let err = Error::from_kube("p", api_err(503, "ServiceUnavailable", "etcd down"));
        assert!(matches!(err, Error::Api { code: 503, .. }));
        assert!(err.is_transient());
        let err = Error::from_kube(
            "p",
            api_err(422, "Invalid", "spec.containers[0].image: Required value"),
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn source_is_kept() {
        let err = Error::from_kube("p", api_err(500, "InternalError", "boom"));
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(source.is_some_and(|s| s.contains("boom")));
    }
}
