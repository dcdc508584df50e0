//! The garbage collector: an object whose every owner (ownerReferences) is gone is deleted; dangling references beside a live owner are dropped.
//!
//! As kube-controller-manager's: an owner counts as present when an object of its kind and name
//! with its UID exists. The Job controller's own cascade (`jobs::cascade`, which also honours
//! `Orphan`) handles a Job's pods; this collector covers every other dependent (the hook's
//! cache-slot Leases owned by workflow pods).

use std::sync::Arc;

use serde_json::Value;

use super::store::{ChangeKind, Key};
use super::write::{DeleteOptions, delete_object};
use super::{SimState, meta, resources};

/// The ownerReferences of an object: (apiVersion, kind, name, uid).
fn owner_refs(obj: &Value) -> Vec<(String, String, String, String)> {
    let s = |r: &Value, f: &str| r[f].as_str().unwrap_or_default().to_string();
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| (s(r, "apiVersion"), s(r, "kind"), s(r, "name"), s(r, "uid")))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the owner a reference names exists (same kind, name and UID) in `ns`.
fn owner_present(sim: &SimState, ns: &str, r: &(String, String, String, String)) -> bool {
    let (api_version, kind, name, uid) = r;
    let Some(res) = resources::RESOURCES
        .iter()
        .find(|x| x.kind == kind && x.api_version() == *api_version)
    else {
        return false;
    };
    let owner_ns = if res.namespaced { ns } else { "" };
    sim.store
        .get(&Key::new(res.id, owner_ns, name))
        .is_some_and(|o| meta::uid(&o) == uid)
}

/// Whether the collector leaves `dependent` to another controller.
fn handled_elsewhere(resource: &str, refs: &[(String, String, String, String)]) -> bool {
    resource == "pods" && refs.iter().any(|(_, kind, _, _)| kind == "Job")
}

/// Collects `dependent` (in resource `res`) if its owners are gone.
async fn collect(sim: &Arc<SimState>, res: &'static resources::Resource, dependent: &Value) {
    let refs = owner_refs(dependent);
    if refs.is_empty() || handled_elsewhere(res.id, &refs) {
        return;
    }
    let ns = meta::namespace(dependent).to_string();
    let name = meta::name(dependent).to_string();
    let live: Vec<&(String, String, String, String)> =
        refs.iter().filter(|r| owner_present(sim, &ns, r)).collect();
    if live.is_empty() {
        tracing::debug!(resource = res.id, %ns, %name, "garbage collecting: every owner is gone");
        let opts = DeleteOptions {
            grace: None,
            propagation: Some("Background".into()),
            preconditions: Default::default(),
        };
        let _ = delete_object(sim, res, &ns, &name, &opts).await;
    } else if live.len() < refs.len() {
        let live_uids: Vec<String> = live.iter().map(|r| r.3.clone()).collect();
        let key = Key::new(res.id, &ns, &name);
        let _ = sim.store.update::<()>(&key, None, |o| {
            if let Some(refs) = o
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| {
                    live_uids
                        .iter()
                        .any(|u| r["uid"].as_str() == Some(u.as_str()))
                });
            }
            Ok(())
        });
    }
}

/// Watches every change: a deleted object's dependents, and an object given owners that are
/// already gone, are collected.
pub(crate) fn spawn_collector(sim: Arc<SimState>) {
    let Ok((_, mut changes)) = sim.store.watch(None) else {
        return;
    };
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            match change.kind {
                ChangeKind::Deleted => {
                    let uid = meta::uid(&change.object).to_string();
                    if uid.is_empty() {
                        continue;
                    }
                    let ns = change.key.namespace.clone();
                    for res in resources::RESOURCES
                        .iter()
                        .filter(|r| r.namespaced && r.id != "events.events.k8s.io")
                    {
                        let (items, _) = sim.store.list(res.id, Some(&ns));
                        for o in items
                            .iter()
                            .filter(|o| owner_refs(o).iter().any(|r| r.3 == uid))
                        {
                            collect(&sim, res, o).await;
                        }
                    }
                }
                ChangeKind::Added | ChangeKind::Modified => {
                    let refs_changed = change
                        .previous
                        .as_ref()
                        .is_none_or(|p| owner_refs(p) != owner_refs(&change.object));
                    if refs_changed
                        && let Some(res) = resources::RESOURCES
                            .iter()
                            .find(|r| r.id == change.key.resource)
                    {
                        collect(&sim, res, &change.object).await;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owner_references_are_read() {
        let o = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "u1"},
            {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u2"}]}});
        let refs = owner_refs(&o);
        assert_eq!(refs.len(), 2);
        assert_eq!(
            refs[0],
            ("v1".into(), "Pod".into(), "p".into(), "u1".into())
        );
        assert!(handled_elsewhere("pods", &refs));
        assert!(!handled_elsewhere("leases.coordination.k8s.io", &refs));
        assert!(owner_refs(&json!({"metadata": {}})).is_empty());
    }
}
