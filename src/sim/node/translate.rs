//! A real pod turned into the local simulator's pod: the same containers, with its claims resolved
//! to their volumes' directories and the cluster's service-account token volume left out.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use serde_json::{Value, json};

use super::NodeError;
use crate::sim::NODE_NAME;

/// Annotation on a local pod naming the uid of the real pod it mirrors.
pub(crate) const MIRROR_OF: &str = "arc-hook.dev/mirror-of";

/// The secrets and configMaps a pod's volumes and environment name.
#[derive(Debug, Default)]
pub(crate) struct Refs {
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
pub(crate) async fn local_pod(
    real_client: &kube::Client,
    real: &Pod,
) -> Result<(Value, Refs), NodeError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that is never called: pods without claims need no API lookup.
    fn unused_client() -> kube::Client {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("a URL"));
        kube::Client::try_from(config).expect("a client for an unused URL")
    }

    fn real_pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "job", "namespace": "arc-runners", "uid": "u-1",
                         "labels": {"app": "x"}, "annotations": {"keep": "me"}},
            "spec": {
                "nodeName": "arc-node", "serviceAccountName": "default",
                "automountServiceAccountToken": true,
                "containers": [{"name": "job", "image": "python:3.12-slim",
                    "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                    "envFrom": [{"configMapRef": {"name": "env-cm"}}],
                    "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
                                     {"name": "data", "mountPath": "/data"}]}],
                "volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}},
                            {"name": "data", "secret": {"secretName": "vol-secret"}},
                            {"name": "cfg", "configMap": {"name": "vol-cm"}}]
            }
        }))
        .expect("a Pod")
    }

    #[tokio::test]
    async fn local_pod_runs_on_the_local_node_without_the_clusters_token_and_names_its_refs() {
        let (local, refs) = local_pod(&unused_client(), &real_pod())
            .await
            .expect("a pod without claims translates");
        assert_eq!(local["spec"]["nodeName"], NODE_NAME);
        assert!(local["spec"].get("serviceAccountName").is_none());
        assert!(local["spec"].get("automountServiceAccountToken").is_none());
        let volumes: Vec<&str> = local["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(
            volumes,
            ["data", "cfg"],
            "the projected token volume is dropped"
        );
        let mounts = &local["spec"]["containers"][0]["volumeMounts"];
        assert_eq!(mounts, &json!([{"name": "data", "mountPath": "/data"}]));
        assert_eq!(local["metadata"]["annotations"][MIRROR_OF], "u-1");
        assert_eq!(local["metadata"]["annotations"]["keep"], "me");
        assert_eq!(local["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(
            refs.secrets.iter().collect::<Vec<_>>(),
            ["env-secret", "vol-secret"]
        );
        assert_eq!(
            refs.config_maps.iter().collect::<Vec<_>>(),
            ["env-cm", "vol-cm"]
        );
    }

    #[tokio::test]
    async fn a_claim_that_cannot_be_resolved_names_the_pod_and_the_claim() {
        let mut pod = real_pod();
        let mut value = serde_json::to_value(&pod).expect("a Pod serializes");
        value["spec"]["volumes"] =
            json!([{"name": "work", "persistentVolumeClaim": {"claimName": "arc-runner-work"}}]);
        pod = serde_json::from_value(value).expect("a Pod");
        let e = local_pod(&unused_client(), &pod)
            .await
            .expect_err("nothing answers at the client's URL");
        let text = e.to_string();
        assert!(
            text.starts_with("pod arc-runners/job: claim arc-runner-work"),
            "{text}"
        );
    }
}
