//! The API client: in-cluster config, else kubeconfig; the namespace; per-call timeouts; a
//! connection failure named by the server it could not reach.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::K8sError;
use crate::config::ClusterSource;

/// Upper bound for one non-streaming API call (retries are counted apart).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected client and the namespace the hook works in.
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    pub namespace: String,
    /// The API server's URL, as the configuration names it.
    pub server: String,
}

/// A request that never reached the API server: the connection (TCP, DNS, TLS) failed. Its text
/// names the server and the cause once (hyper's own chain repeats `client error (Connect)`).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the Kubernetes API server at {server}: {cause}")]
pub(crate) struct Unreachable {
    pub server: String,
    pub cause: String,
}

/// `e` as an [`Unreachable`] when it is a connection failure, else unchanged.
fn name_the_server(server: &str, e: tower::BoxError) -> tower::BoxError {
    let connect = std::iter::successors(Some(&*e as &(dyn std::error::Error + 'static)), |c| {
        c.source()
    })
    .any(|c| {
        c.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
    });
    if !connect {
        return e;
    }
    Box::new(Unreachable {
        server: server.to_string(),
        cause: connect_cause(&*e),
    })
}

/// The causes below hyper's `client error (Connect)`, each once: `tcp connect error: Connection
/// refused (os error 111)`, `dns error: failed to lookup address information: ...`.
pub(crate) fn connect_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // A wrapper's text often repeats its source's (io::Error around a rustls error).
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

impl Kube {
    /// Connects: in-cluster service account first (inside a runner pod), else `KUBECONFIG` or
    /// `~/.kube/config`. `namespace` overrides the one the configuration names.
    pub(crate) async fn connect(namespace: Option<&str>) -> Result<Self, K8sError> {
        let mut config = if ClusterSource::from_env() == ClusterSource::InCluster {
            kube::Config::incluster()
                .map_err(|e| K8sError::NoCluster(format!("in-cluster configuration: {e}")))?
        } else {
            let kubeconfig = Kubeconfig::read().map_err(|e| {
                K8sError::NoCluster(format!(
                    "not in a cluster and no kubeconfig ({e}); run inside a runner pod or set KUBECONFIG"
                ))
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| K8sError::NoCluster(format!("kubeconfig: {e}")))?
        };
        config.connect_timeout = Some(Duration::from_secs(10));
        // Streams (exec, logs, watch) are long-lived; non-streaming calls get CALL_TIMEOUT each.
        config.read_timeout = None;
        config.write_timeout = Some(Duration::from_secs(30));
        let namespace = namespace
            .map(str::to_string)
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let named = server.clone();
        let client = kube::client::ClientBuilder::try_from(config)
            .map_err(|e| K8sError::NoCluster(format!("client: {e}")))?
            .with_layer(&tower::util::MapErrLayer::new(move |e| {
                name_the_server(&named, e)
            }))
            .build();
        Ok(Self {
            client,
            namespace,
            server,
        })
    }

    pub fn pods(&self) -> kube::Api<k8s_openapi::api::core::v1::Pod> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> kube::Api<k8s_openapi::api::core::v1::Secret> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn jobs(&self) -> kube::Api<k8s_openapi::api::batch::v1::Job> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn leases(&self) -> kube::Api<k8s_openapi::api::coordination::v1::Lease> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub(crate) fn events(&self) -> kube::Api<k8s_openapi::api::core::v1::Event> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Chain {
        text: &'static str,
        #[source]
        source: Option<Box<Chain>>,
    }

    fn chain(texts: &[&'static str]) -> Chain {
        texts
            .iter()
            .rev()
            .fold(None, |source, text| {
                Some(Chain {
                    text,
                    source: source.map(Box::new),
                })
            })
            .expect("one text at least")
    }

    #[test]
    fn the_cause_is_said_once() {
        // hyper-util's chain: its own wrapper, then the connector's error, then the OS's.
        let e = chain(&[
            "client error (Connect)",
            "tcp connect error",
            "Connection refused (os error 111)",
        ]);
        assert_eq!(
            connect_cause(&e),
            "tcp connect error: Connection refused (os error 111)"
        );
        // An io::Error wrapping a TLS error shows the same text as its source.
        let e = chain(&[
            "client error (Connect)",
            "invalid peer certificate: UnknownIssuer",
            "invalid peer certificate: UnknownIssuer",
        ]);
        assert_eq!(connect_cause(&e), "invalid peer certificate: UnknownIssuer");
        assert_eq!(connect_cause(&chain(&["refused"])), "refused");
    }

    #[test]
    fn only_connection_failures_are_renamed() {
        let other: tower::BoxError = Box::new(chain(&["not a connection failure"]));
        let e = name_the_server("https://api:6443", other);
        assert!(e.downcast_ref::<Unreachable>().is_none());
        assert_eq!(e.to_string(), "not a connection failure");
    }
}
