//! Talking to the Kubernetes API: client set-up, retries, permission checks, waits, exec and file copies.

pub(crate) mod client;
pub mod copy;
pub(crate) mod ephemeral;
pub mod exec;
pub(crate) mod logs;
pub(crate) mod node_wait;
pub mod owned;
pub(crate) mod pod_watch;
pub mod progress;
pub mod rbac;
pub(crate) mod ready;
pub(crate) mod retry;
pub mod wait;

use std::time::Duration;

pub use client::Kube;

/// A failure talking to the cluster, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("no Kubernetes cluster configured: {0}")]
    NoCluster(String),
    /// The API (or the way to it) failed; `source` is kube's error, shown by [`ApiCause`].
    #[error("{action}")]
    Api {
        action: String,
        #[source]
        source: ApiCause,
    },
    /// Every attempt of a call failed transiently (no connection, 429, 5xx); `source` is the
    /// last failure.
    #[error("{action} (gave up after {attempts} attempts in {}s)", elapsed.as_secs())]
    GaveUp {
        action: String,
        attempts: u32,
        elapsed: Duration,
        #[source]
        source: ApiCause,
    },
    #[error("timed out after {}s waiting for {what}", after.as_secs())]
    Timeout { what: String, after: Duration },
    /// A refusal of the hook's own, e.g. another runner's object under our name.
    #[error("{0}")]
    Failed(String),
}

impl K8sError {
    /// The API's HTTP status code, when the failure is an API answer.
    pub(crate) fn code(&self) -> Option<u16> {
        match self {
            Self::Api { source, .. } | Self::GaveUp { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Whether the call never reached the API server (see [`client::Unreachable`]).
    pub(crate) fn is_unreachable(&self) -> bool {
        match self {
            Self::Api { source, .. } | Self::GaveUp { source, .. } => {
                source.unreachable().is_some()
            }
            _ => false,
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// The error with its cause on one line (`creating pod x: pods "x" is forbidden: ...`), for
    /// places that print one error rather than hand it up to the `{:#}` at the edge.
    pub(crate) fn chain(&self) -> String {
        let mut line = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            line.push_str(": ");
            line.push_str(&c.to_string());
            cause = c.source();
        }
        line
    }

    /// Wraps a kube error with what was being done.
    pub(crate) fn api(action: impl Into<String>, e: kube::Error) -> Self {
        Self::Api {
            action: action.into(),
            source: ApiCause(e),
        }
    }
}

/// kube's error as the job log shows it: an API answer by its status message (`pods "x" is
/// forbidden: ...`), not by kube's debug dump of the whole Status; anything else as kube says it.
/// The kube error itself stays reachable (`.0`) and so does its own cause chain.
#[derive(Debug)]
pub struct ApiCause(pub kube::Error);

impl ApiCause {
    pub(crate) fn code(&self) -> Option<u16> {
        match &self.0 {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        }
    }

    /// The API's own message (the Status message), else kube's description; a failure of the
    /// connection by its own words (kube's `ServiceError: ` prefix says nothing to a user).
    pub(crate) fn message(&self) -> String {
        match &self.0 {
            kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
            kube::Error::Service(e) => e.to_string(),
            other => other.to_string(),
        }
    }

    /// The connection failure behind this error, if the request never reached the server.
    pub(crate) fn unreachable(&self) -> Option<&client::Unreachable> {
        match &self.0 {
            kube::Error::Service(e) => e.downcast_ref(),
            _ => None,
        }
    }
}

impl std::fmt::Display for ApiCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for ApiCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            // The Status is what `message` already showed.
            kube::Error::Api(_) => None,
            kube::Error::Service(e) => e.source(),
            other => other.source(),
        }
    }
}
