//! The objects every cluster has: namespaces with their default service accounts, and the node.

use serde_json::{Value, json};

use super::resources;
use super::status::ApiError;
use super::store::Key;
use super::{NODE_NAME, SimState, admission, meta};

/// Objects every cluster has: namespaces, their default service accounts, the node.
pub(crate) fn seed(sim: &SimState) {
    let mut namespaces = vec!["default", "kube-system", "kube-public", "kube-node-lease"];
    if !namespaces.contains(&sim.cfg.namespace.as_str()) {
        namespaces.push(&sim.cfg.namespace);
    }
    for ns in namespaces {
        let _ = create_namespace(sim, ns);
    }
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "arc-runner", "namespace": sim.cfg.namespace}});
    let _ = sim.store.create(
        Key::new("serviceaccounts", &sim.cfg.namespace, "arc-runner"),
        sa,
    );
    let _ = sim.store.create(
        Key::new("nodes", "", NODE_NAME),
        node_object(&sim.cfg.node_allocatable, sim.cfg.ipv6_only),
    );
}

pub(crate) fn create_namespace(sim: &SimState, name: &str) -> Result<Value, ApiError> {
    let res = resources::by_id("namespaces");
    let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    admission::admit_create(res, &mut obj)?;
    let created = sim
        .store
        .create(Key::new("namespaces", "", name), obj)
        .map_err(|_| ApiError::already_exists("namespaces", "", name))?;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
    let _ = sim
        .store
        .create(Key::new("serviceaccounts", name, "default"), sa);
    Ok(created)
}

/// The node's address: loopback of the simulator's family (`127.0.0.1`, or `::1` IPv6-only).
pub(crate) fn node_ip(ipv6_only: bool) -> &'static str {
    if ipv6_only { "::1" } else { "127.0.0.1" }
}

fn node_object(allocatable: &std::collections::BTreeMap<String, String>, ipv6_only: bool) -> Value {
    let capacity = json!(allocatable);
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": node_labels()},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": meta::now(), "lastTransitionTime": meta::now()}],
            "addresses": [{"type": "InternalIP", "address": node_ip(ipv6_only)}, {"type": "Hostname", "address": NODE_NAME}],
            "nodeInfo": {"kubeletVersion": super::GIT_VERSION, "kubeProxyVersion": super::GIT_VERSION, "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "arc-hook-sim://1", "osImage": "arc-hook simulator",
                         "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        },
    })
}

/// The sim node's labels.
pub(crate) fn node_labels() -> Value {
    json!({
        "kubernetes.io/hostname": NODE_NAME,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    })
}
