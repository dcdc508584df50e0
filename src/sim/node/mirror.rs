//! Keeps the local simulator's pods in step with the real pods bound to the node, and the real
//! pods' status and kubelet events in step with the local ones.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::NodeError;
use super::translate::{self, MIRROR_OF};

type Key = (String, String);

/// The mirror's state: both clients, the status last written to each real pod, and the count
/// of each local event last written to the cluster.
pub(crate) struct Mirror {
    real: kube::Client,
    local: kube::Client,
    node: String,
    selector: String,
    pushed: HashMap<Key, Value>,
    events_pushed: HashMap<Key, i32>,
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Api { what, source }
}

fn key(pod: &Pod) -> Key {
    key_of(&pod.metadata)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Mirror {
    pub(crate) fn new(real: kube::Client, local: kube::Client, node: &str) -> Mirror {
        Mirror {
            real,
            local,
            node: node.to_string(),
            selector: format!("spec.nodeName={node}"),
            pushed: HashMap::new(),
            events_pushed: HashMap::new(),
        }
    }

    /// One pass over both sides. A pod's failure is logged and retried on the next pass.
    pub(crate) async fn reconcile(&mut self) -> Result<(), NodeError> {
        let real_api: kube::Api<Pod> = kube::Api::all(self.real.clone());
        let local_api: kube::Api<Pod> = kube::Api::all(self.local.clone());
        let real: BTreeMap<Key, Pod> = real_api
            .list(&ListParams::default().fields(&self.selector))
            .await
            .map_err(api_err("list the node's pods"))?
            .items
            .into_iter()
            .map(|p| (key(&p), p))
            .collect();
        let local: BTreeMap<Key, Pod> = local_api
            .list(&ListParams::default())
            .await
            .map_err(api_err("list the local pods"))?
            .items
            .into_iter()
            .filter(|p| {
                p.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(MIRROR_OF))
            })
            .map(|p| (key(&p), p))
            .collect();
        for (k, pod) in &real {
            let mirrored = local.get(k).filter(|l| mirror_uid(l) == pod.metadata.uid);
            if let Err(e) = self.pod(pod, mirrored, local.get(k)).await {
                tracing::warn!(pod = %format!("{}/{}", k.0, k.1), error = %e, "cannot mirror the pod yet");
            }
        }
        // The local kubelet's events about a mirrored pod, told about the real pod (the hook
        // lists them to explain a container that cannot start).
        let real_uid: HashMap<String, (String, String)> = local
            .iter()
            .filter_map(|(k, l)| {
                let real_pod = real.get(k)?;
                (mirror_uid(l) == real_pod.metadata.uid).then(|| {
                    (
                        l.metadata.uid.clone().unwrap_or_default(),
                        (
                            real_pod.metadata.uid.clone().unwrap_or_default(),
                            real_pod
                                .metadata
                                .resource_version
                                .clone()
                                .unwrap_or_default(),
                        ),
                    )
                })
            })
            .collect();
        if let Err(e) = self.events(&real_uid).await {
            tracing::warn!(error = %e, "cannot mirror the local events yet");
        }
        for (k, pod) in &local {
            if !real.contains_key(k) {
                tracing::info!(pod = %format!("{}/{}", k.0, k.1), "pod gone from the cluster; removing it locally");
                self.delete_local(pod, Some(0)).await?;
                self.pushed.remove(k);
            }
        }
        Ok(())
    }

    async fn pod(
        &mut self,
        real: &Pod,
        mirrored: Option<&Pod>,
        stale: Option<&Pod>,
    ) -> Result<(), NodeError> {
        let k = key(real);
        let deleting = real.metadata.deletion_timestamp.is_some();
        let Some(local) = mirrored else {
            if let Some(old) = stale {
                // Same name, another pod: the old mirror goes first.
                return self.delete_local(old, Some(0)).await;
            }
            if deleting {
                // Nothing runs here any more: finish the deletion as the kubelet does.
                tracing::info!(pod = %format!("{}/{}", k.0, k.1), "pod stopped; deleting it from the cluster");
                let api: kube::Api<Pod> = kube::Api::namespaced(self.real.clone(), &k.0);
                let params =
                    DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: real.metadata.uid.clone().map(|uid| {
                            kube::api::Preconditions {
                                uid: Some(uid),
                                resource_version: None,
                            }
                        }),
                        ..DeleteParams::default()
                    };
                return match api.delete(&k.1, &params).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_not_found(&e) => Ok(()),
                    Err(e) => Err(api_err("delete the stopped pod")(e)),
                };
            }
            let phase = real.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                return Ok(());
            }
            return self.create_local(real).await;
        };
        if deleting && local.metadata.deletion_timestamp.is_none() {
            let grace = real
                .metadata
                .deletion_grace_period_seconds
                .map(|g| g as u32);
            self.delete_local(local, grace).await?;
        }
        self.ephemeral(real, local).await?;
        self.status(real, local).await
    }

    async fn create_local(&mut self, real: &Pod) -> Result<(), NodeError> {
        let (ns, name) = key(real);
        let (pod, refs) = translate::local_pod(&self.real, real).await?;
        self.ensure_namespace(&ns).await?;
        for s in &refs.secrets {
            self.copy::<Secret>(&ns, s).await?;
        }
        for c in &refs.config_maps {
            self.copy::<ConfigMap>(&ns, c).await?;
        }
        let pod: Pod = serde_json::from_value(pod).map_err(|e| NodeError::Translate {
            pod: format!("{ns}/{name}"),
            message: e.to_string(),
        })?;
        let api: kube::Api<Pod> = kube::Api::namespaced(self.local.clone(), &ns);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), "pod started locally");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(api_err(format!("create local pod {ns}/{name}"))(e)),
        }
    }

    async fn ensure_namespace(&self, ns: &str) -> Result<(), NodeError> {
        let api: kube::Api<Namespace> = kube::Api::all(self.local.clone());
        let object: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("a Namespace");
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(api_err(format!("create local namespace {ns}"))(e)),
        }
    }

    /// Copies a secret or configMap from the cluster (current content wins).
    async fn copy<K>(&self, ns: &str, name: &str) -> Result<(), NodeError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let real: kube::Api<K> = kube::Api::namespaced(self.real.clone(), ns);
        let local: kube::Api<K> = kube::Api::namespaced(self.local.clone(), ns);
        let Some(object) = real
            .get_opt(name)
            .await
            .map_err(api_err(format!("get {name} from the cluster")))?
        else {
            // An optional reference; the local kubelet reports a missing required one.
            return Ok(());
        };
        let mut value = serde_json::to_value(&object).expect("an object serializes");
        value["metadata"] = json!({"name": name, "namespace": ns});
        let object: K = serde_json::from_value(value).expect("the same object without metadata");
        match local.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => local
                .replace(name, &PostParams::default(), &object)
                .await
                .map(|_| ())
                .map_err(api_err(format!("replace local {name}"))),
            Err(e) => Err(api_err(format!("copy {name}"))(e)),
        }
    }

    async fn delete_local(&self, pod: &Pod, grace: Option<u32>) -> Result<(), NodeError> {
        let (ns, name) = key(pod);
        let api: kube::Api<Pod> = kube::Api::namespaced(self.local.clone(), &ns);
        let params = DeleteParams {
            grace_period_seconds: grace,
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_err(format!("delete local pod {ns}/{name}"))(e)),
        }
    }

    /// Ephemeral containers added to the real pod are added to the local one.
    async fn ephemeral(&self, real: &Pod, local: &Pod) -> Result<(), NodeError> {
        let want = real
            .spec
            .as_ref()
            .and_then(|s| s.ephemeral_containers.clone())
            .unwrap_or_default();
        let have = local
            .spec
            .as_ref()
            .and_then(|s| s.ephemeral_containers.as_ref())
            .map_or(0, Vec::len);
        if want.len() <= have {
            return Ok(());
        }
        let (ns, name) = key(real);
        let (translated, _) = translate::local_pod(&self.real, real).await?;
        let patch =
            json!({"spec": {"ephemeralContainers": translated["spec"]["ephemeralContainers"]}});
        let api: kube::Api<Pod> = kube::Api::namespaced(self.local.clone(), &ns);
        api.patch_ephemeral_containers(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map(|_| tracing::info!(pod = %format!("{ns}/{name}"), "ephemeral container added locally"))
            .map_err(api_err(format!("add ephemeral containers to local pod {ns}/{name}")))
    }

    /// Writes the local pod's status to the real pod when it changed.
    async fn status(&mut self, real: &Pod, local: &Pod) -> Result<(), NodeError> {
        let k = key(real);
        let status = serde_json::to_value(&local.status).expect("a status serializes");
        if status.is_null() || self.pushed.get(&k) == Some(&status) {
            return Ok(());
        }
        let api: kube::Api<Pod> = kube::Api::namespaced(self.real.clone(), &k.0);
        let patch = json!({"status": status});
        api.patch_status(&k.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_err(format!("write the status of {}/{}", k.0, k.1)))?;
        self.pushed.insert(k, status);
        Ok(())
    }
}

impl Mirror {
    /// Creates (or recounts) in the cluster each local event whose pod mirrors a real one.
    async fn events(
        &mut self,
        real_uid: &HashMap<String, (String, String)>,
    ) -> Result<(), NodeError> {
        let local_api: kube::Api<Event> = kube::Api::all(self.local.clone());
        let events = local_api
            .list(&ListParams::default())
            .await
            .map_err(api_err("list the local events"))?
            .items;
        // Forget the events the local simulator no longer has (their pods are gone).
        let present: std::collections::HashSet<Key> =
            events.iter().map(|e| key_of(&e.metadata)).collect();
        self.events_pushed.retain(|k, _| present.contains(k));
        for event in events {
            let local_uid = event.involved_object.uid.clone().unwrap_or_default();
            let Some((uid, resource_version)) = real_uid.get(&local_uid) else {
                continue;
            };
            let k = key_of(&event.metadata);
            let count = event.count.unwrap_or(1);
            if self.events_pushed.get(&k) == Some(&count) {
                continue;
            }
            let api: kube::Api<Event> = kube::Api::namespaced(self.real.clone(), &k.0);
            let mut real_event = event.clone();
            real_event.metadata = kube::api::ObjectMeta {
                name: Some(k.1.clone()),
                namespace: Some(k.0.clone()),
                ..Default::default()
            };
            real_event.involved_object.uid = Some(uid.clone());
            real_event.involved_object.resource_version = Some(resource_version.clone());
            if let Some(source) = real_event.source.as_mut() {
                source.host = Some(self.node.clone());
            }
            real_event.reporting_instance = Some(self.node.clone());
            let written = if self.events_pushed.contains_key(&k) {
                let patch = json!({"count": count, "lastTimestamp": event.last_timestamp});
                api.patch(&k.1, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            } else {
                match api.create(&PostParams::default(), &real_event).await {
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                    other => other.map(|_| ()),
                }
            };
            written.map_err(api_err(format!("write event {}/{}", k.0, k.1)))?;
            self.events_pushed.insert(k, count);
        }
        Ok(())
    }
}

fn key_of(meta: &kube::api::ObjectMeta) -> Key {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn mirror_uid(local: &Pod) -> Option<String> {
    local
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(MIRROR_OF).cloned())
}
