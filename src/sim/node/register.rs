//! The Node object and its liveness: registration, status heartbeat and the kube-node-lease Lease.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::NodeError;
use crate::sim::{GIT_VERSION, meta};

/// How often the Node's Ready condition and Lease are renewed (the kubelet's defaults are 10 s).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Seconds a Lease stays valid without renewal.
const LEASE_SECONDS: i32 = 40;
/// Bound on each API call of the heartbeat.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the registered Node says about itself.
#[derive(Debug, Clone)]
pub(crate) struct NodeSpec {
    pub name: String,
    pub kubelet_port: u16,
    pub allocatable: BTreeMap<String, String>,
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Api { what, source }
}

/// The Node's status: loopback addresses, the kubelet port, capacity, Ready, nodeInfo.
pub(crate) fn node_status(node: &NodeSpec) -> Value {
    let now = meta::now();
    json!({
        "capacity": node.allocatable,
        "allocatable": node.allocatable,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "arc-hook node agent is posting ready status",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                      {"type": "Hostname", "address": node.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": node.kubelet_port}},
        "nodeInfo": {"kubeletVersion": GIT_VERSION, "kubeProxyVersion": GIT_VERSION,
                     "operatingSystem": "linux", "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
                     "containerRuntimeVersion": "arc-hook-sim://1", "osImage": "arc-hook node agent",
                     "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
    })
}

/// Creates the Node (or takes over an existing one of that name) and writes its status.
pub(crate) async fn register(client: &kube::Client, node: &NodeSpec) -> Result<(), NodeError> {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let arch = std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64");
    let object: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node.name, "labels": {
            "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": arch}},
        "spec": {},
        "status": node_status(node),
    }))
    .expect("the Node literal matches the Node type");
    match nodes.create(&PostParams::default(), &object).await {
        Ok(_) => tracing::info!(node = %node.name, "node registered"),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(node = %node.name, "node exists; taking it over")
        }
        Err(e) => return Err(api_err(format!("create Node {}", node.name))(e)),
    }
    post_status(client, node).await?;
    Ok(())
}

/// Writes the Node's status. A cluster without the `nodes/status` subresource (the simulator
/// standing in for one) keeps the status given at creation.
async fn post_status(client: &kube::Client, node: &NodeSpec) -> Result<(), NodeError> {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let patch = json!({"status": node_status(node)});
    match nodes
        .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 405 || e.code == 404 => {
            tracing::debug!(code = e.code, "the cluster takes no Node status writes");
            Ok(())
        }
        Err(e) => Err(api_err(format!("patch Node {} status", node.name))(e)),
    }
}

/// Creates or renews the Node's Lease in kube-node-lease. A cluster without Leases is fine.
async fn renew_lease(client: &kube::Client, node: &NodeSpec) -> Result<(), NodeError> {
    let leases: kube::Api<Lease> = kube::Api::namespaced(client.clone(), "kube-node-lease");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node.name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now},
    });
    let params = PatchParams::apply("arc-hook-node-agent").force();
    match leases
        .patch(&node.name, &params, &Patch::Apply(&lease))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 415 || e.code == 405 => {
            tracing::debug!(
                code = e.code,
                "the cluster has no Leases; status heartbeat only"
            );
            Ok(())
        }
        Err(e) => Err(api_err(format!("renew Lease {}", node.name))(e)),
    }
}

/// Renews the Node's status and Lease every [`HEARTBEAT`], each call bounded; failures are
/// logged and retried on the next beat (the node controller tolerates 40 s of silence).
pub(crate) async fn heartbeat(client: kube::Client, node: NodeSpec) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        for (what, result) in [
            (
                "status",
                tokio::time::timeout(CALL_TIMEOUT, post_status(&client, &node)).await,
            ),
            (
                "lease",
                tokio::time::timeout(CALL_TIMEOUT, renew_lease(&client, &node)).await,
            ),
        ] {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(what, error = %e, "node heartbeat failed"),
                Err(_) => tracing::warn!(what, "node heartbeat timed out"),
            }
        }
    }
}
