//! A real pod turned into the local simulator's pod: the same containers, with its claims resolved
//! to their volumes' directories and the cluster's service-account token volume left out.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use serde_json::{Value, json};

use super::NodeError;
use crate::sim::NODE_NAME;

/// Annotation on a local pod naming the uid of the real pod it mirrors.
pub const MIRROR_OF: &str = "arc-hook.dev/mirror-of";

/// The secrets and configMaps a pod's volumes and environment name.
#[derive(Debug, Default)]
pub struct Refs {
    pub secrets: BTreeSet<String>,
    pub config_maps: BTreeSet<String>,
}

fn translate_err(pod: &Value, message: impl Into<String>) -> NodeError {
    NodeError::Translate {
        pod: format!(
            "{}/{}",
            pod.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
            pod.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
        ),
        message: message.into(),
    }
}

/// The local pod for `real`, with the secrets and configMaps it needs copied, and each claim
/// replaced by a hostPath on its bound PersistentVolume's directory.
pub async fn local_pod(real_client: &kube::Client, real: &Pod) -> Result<(Value, Refs), NodeError> {
    let pod = serde_json::to_value(real).expect("a Pod serializes");
    let ns = real.metadata.namespace.clone().unwrap_or_default();
    let mut spec = pod.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["nodeName"] = json!(NODE_NAME);
    if let Some(obj) = spec.as_object_mut() {
        for field in [
            "serviceAccountName",
            "serviceAccount",
            "automountServiceAccountToken",
        ] {
            obj.remove(field);
        }
    }
    let mut dropped = BTreeSet::new();
    let mut refs = Refs::default();
    let mut volumes = Vec::new();
    for mut volume in spec["volumes"].as_array().cloned().unwrap_or_default() {
        let name = volume["name"].as_str().unwrap_or_default().to_string();
        if volume.get("projected").is_some() {
            // The cluster's kube-api-access token: pods here do not talk to the API.
            dropped.insert(name);
            continue;
        }
        if let Some(claim) = volume
            .pointer("/persistentVolumeClaim/claimName")
            .and_then(Value::as_str)
        {
            let path = claim_dir(real_client, &ns, claim)
                .await
                .map_err(|m| translate_err(&pod, m))?;
            volume = json!({"name": name, "hostPath": {"path": path}});
        }
        if let Some(s) = volume.pointer("/secret/secretName").and_then(Value::as_str) {
            refs.secrets.insert(s.to_string());
        }
        if let Some(c) = volume.pointer("/configMap/name").and_then(Value::as_str) {
            refs.config_maps.insert(c.to_string());
        }
        volumes.push(volume);
    }
    spec["volumes"] = json!(volumes);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                strip_mounts(c, &dropped);
                collect_env_refs(c, &mut refs);
            }
        }
    }
    let mut annotations = pod
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or_else(|| json!({}));
    annotations[MIRROR_OF] = json!(real.metadata.uid.clone().unwrap_or_default());
    let local = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": real.metadata.name, "namespace": ns,
                     "labels": pod.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
                     "annotations": annotations},
        "spec": spec,
    });
    Ok((local, refs))
}

fn strip_mounts(container: &mut Value, dropped: &BTreeSet<String>) {
    if let Some(mounts) = container
        .get_mut("volumeMounts")
        .and_then(Value::as_array_mut)
    {
        mounts.retain(|m| !m["name"].as_str().is_some_and(|n| dropped.contains(n)));
    }
}

fn collect_env_refs(container: &Value, refs: &mut Refs) {
    for env in container["env"].as_array().into_iter().flatten() {
        if let Some(s) = env
            .pointer("/valueFrom/secretKeyRef/name")
            .and_then(Value::as_str)
        {
            refs.secrets.insert(s.to_string());
        }
        if let Some(c) = env
            .pointer("/valueFrom/configMapKeyRef/name")
            .and_then(Value::as_str)
        {
            refs.config_maps.insert(c.to_string());
        }
    }
    for from in container["envFrom"].as_array().into_iter().flatten() {
        if let Some(s) = from.pointer("/secretRef/name").and_then(Value::as_str) {
            refs.secrets.insert(s.to_string());
        }
        if let Some(c) = from.pointer("/configMapRef/name").and_then(Value::as_str) {
            refs.config_maps.insert(c.to_string());
        }
    }
}

/// The directory behind a claim: its bound PersistentVolume's `hostPath` or `local` path.
async fn claim_dir(client: &kube::Client, ns: &str, claim: &str) -> Result<String, String> {
    let claims: kube::Api<PersistentVolumeClaim> = kube::Api::namespaced(client.clone(), ns);
    let pvc = claims
        .get(claim)
        .await
        .map_err(|e| format!("claim {claim}: {e}"))?;
    let Some(volume) = pvc
        .spec
        .and_then(|s| s.volume_name)
        .filter(|v| !v.is_empty())
    else {
        return Err(format!("claim {claim} is not bound to a volume yet"));
    };
    let pvs: kube::Api<PersistentVolume> = kube::Api::all(client.clone());
    let pv = pvs
        .get(&volume)
        .await
        .map_err(|e| format!("volume {volume} of claim {claim}: {e}"))?;
    let spec = pv.spec.unwrap_or_default();
    spec.host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| format!("volume {volume} of claim {claim} has no hostPath or local path"))
}
