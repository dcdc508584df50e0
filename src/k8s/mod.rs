//! Talking to the Kubernetes API: client set-up, retries, permission checks, waits, exec and file copies.

pub mod client;
pub mod copy;
pub mod ephemeral;
pub mod exec;
pub mod logs;
pub mod rbac;
pub mod retry;
pub mod wait;

use std::time::Duration;

pub use client::Kube;

/// A failure talking to the cluster, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("no Kubernetes cluster configured: {0}")]
    NoCluster(String),
    #[error("{action}: {message}")]
    Api {
        action: String,
        message: String,
        code: Option<u16>,
    },
    #[error("timed out after {}s waiting for {what}", after.as_secs())]
    Timeout { what: String, after: Duration },
    #[error("{0}")]
    Failed(String),
}

impl K8sError {
    /// The API's HTTP status code, when the failure is an API answer.
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Api { code, .. } => *code,
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// Wraps a kube error with what was being done.
    pub fn api(action: impl Into<String>, e: kube::Error) -> Self {
        let code = match &e {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        };
        let message = match &e {
            kube::Error::Api(s) => s.message.clone(),
            other => other.to_string(),
        };
        Self::Api {
            action: action.into(),
            message,
            code,
        }
    }
}
