//! The crate's error type.

/// Everything that can stop the test node.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file given with `--kubeconfig` could not be loaded.
    #[error("cannot load kubeconfig {path}")]
    Kubeconfig {
        /// The file that was read.
        path: String,
        /// Why it failed.
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    /// No kubeconfig was given and none could be inferred from the environment.
    #[error("cannot infer a Kubernetes client configuration")]
    InferConfig(#[source] Box<kube::config::InferConfigError>),
    /// A Kubernetes client could not be built from the configuration.
    #[error("cannot build a Kubernetes client")]
    Client(#[source] Box<kube::Error>),
    /// A request to the apiserver failed.
    #[error("{action} failed")]
    Api {
        /// What was being done, e.g. "registering node".
        action: &'static str,
        /// The client's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// An `--image-map` entry is not of the form `IMAGE=PATH`.
    #[error("invalid --image-map entry {0:?}: expected IMAGE=PATH")]
    ImageMap(String),
    /// A local file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn api(action: &'static str, source: kube::Error) -> Self {
        Self::Api {
            action,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// Formats an error with its causes, for log lines.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
