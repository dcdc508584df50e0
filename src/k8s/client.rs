//! The API client: in-cluster config, else kubeconfig; the namespace; per-call timeouts.

use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::K8sError;
use crate::config::ClusterSource;

/// Upper bound for one non-streaming API call (retries are counted apart).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected client and the namespace the hook works in.
#[derive(Clone)]
pub struct Kube {
    pub client: kube::Client,
    pub namespace: String,
}

impl Kube {
    /// Connects: in-cluster service account first (inside a runner pod), else `KUBECONFIG` or
    /// `~/.kube/config`. `namespace` overrides the one the configuration names.
    pub async fn connect(namespace: Option<&str>) -> Result<Self, K8sError> {
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
        let client = kube::Client::try_from(config)
            .map_err(|e| K8sError::NoCluster(format!("client: {e}")))?;
        Ok(Self { client, namespace })
    }

    pub fn pods(&self) -> kube::Api<k8s_openapi::api::core::v1::Pod> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn secrets(&self) -> kube::Api<k8s_openapi::api::core::v1::Secret> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn jobs(&self) -> kube::Api<k8s_openapi::api::batch::v1::Job> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn leases(&self) -> kube::Api<k8s_openapi::api::coordination::v1::Lease> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }

    pub fn events(&self) -> kube::Api<k8s_openapi::api::core::v1::Event> {
        kube::Api::namespaced(self.client.clone(), &self.namespace)
    }
}
