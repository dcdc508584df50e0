//! The cache-slot locks: one object per node and slot whose name makes taking the slot one atomic create — a coordination.k8s.io Lease, or an empty Secret where the Role grants no leases.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::names::stable_suffix;
use super::pod::CACHE_SLOT_LABEL;
use super::{BuildContext, runner_annotations, runner_labels};
use crate::validate::{to_dns1123_label, truncate_label};

/// Label on every lock: the node it is for ([`node_key`]), so one list finds a node's locks.
pub(crate) const SLOT_NODE_LABEL: &str = "arc-hook.dev/cache-slot-node";
/// Annotation on every lock: the workflow pod holding the slot.
pub(crate) const SLOT_HOLDER_ANNOTATION: &str = "arc-hook.dev/cache-slot-holder";
/// The node key of pods the scheduler places: their node is unknown when the slot is taken,
/// so their slots are distinct across the namespace (which keeps them distinct on every node).
pub(crate) const ANY_NODE: &str = "any-node";
/// The role label (`arc-hook.dev/role`) of the locks.
pub(crate) const SLOT_LOCK_ROLE: &str = "cache-slot";
/// Room for the node in a lock's name (`arc-hook-slot-<node>-<slot>`), well inside 63 characters.
const NODE_ROOM: usize = 40;

/// The node's part of lock names and the [`SLOT_NODE_LABEL`] value: the node name where it is a
/// short DNS label, else a readable head and a hash of the whole (so two nodes never share one).
pub(crate) fn node_key(node: Option<&str>) -> String {
    let Some(node) = node else {
        return ANY_NODE.to_string();
    };
    let clean = to_dns1123_label(node, NODE_ROOM, "node");
    if clean == node && node != ANY_NODE {
        return clean;
    }
    let head = truncate_label(&clean, NODE_ROOM - 9);
    format!("{head}-{}", stable_suffix(node))
}

/// `arc-hook-slot-<node key>-<slot>`: the one name every job on the node races to create.
pub(crate) fn lock_name(node_key: &str, slot: u32) -> String {
    format!("arc-hook-slot-{node_key}-{slot}")
}

fn lock_meta(ctx: &BuildContext, node_key: &str, slot: u32, holder: &str) -> ObjectMeta {
    let mut labels = runner_labels(ctx, SLOT_LOCK_ROLE);
    labels.insert(SLOT_NODE_LABEL.to_string(), node_key.to_string());
    labels.insert(CACHE_SLOT_LABEL.to_string(), slot.to_string());
    let mut annotations = runner_annotations(ctx);
    annotations.insert(SLOT_HOLDER_ANNOTATION.to_string(), holder.to_string());
    ObjectMeta {
        name: Some(lock_name(node_key, slot)),
        namespace: Some(ctx.namespace.clone()),
        labels: Some(labels),
        annotations: Some(annotations),
        ..Default::default()
    }
}

/// The Lease taking `slot` on the node for workflow pod `holder`. It has no duration: it is
/// held while its owner pod lives (the ownerReference is added once the pod exists).
pub fn slot_lease(ctx: &BuildContext, node_key: &str, slot: u32, holder: &str) -> Lease {
    Lease {
        metadata: lock_meta(ctx, node_key, slot, holder),
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.to_string()),
            ..Default::default()
        }),
    }
}

/// The fallback lock: an empty Secret of the same name (ARC's default Role may create and
/// delete secrets, not leases). It cannot be given an owner (no patch on secrets), so
/// cleanup_job removes it by its runner label, and a stale one is reclaimed by its holder's state.
pub(crate) fn slot_secret(ctx: &BuildContext, node_key: &str, slot: u32, holder: &str) -> Secret {
    Secret {
        metadata: lock_meta(ctx, node_key, slot, holder),
        type_: Some("Opaque".to_string()),
        data: Some(BTreeMap::new()),
        ..Default::default()
    }
}

/// The ownerReference making workflow pod `pod` (uid `uid`) the lock's owner, so the garbage
/// collector removes the lock with the pod.
pub fn pod_owner(pod: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_string(),
        kind: "Pod".to_string(),
        name: pod.to_string(),
        uid: uid.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{dns1123_subdomain, label_value};

    #[test]
    fn lock_names_are_valid_and_distinct_per_node() {
        assert_eq!(node_key(Some("node-1")), "node-1");
        assert_eq!(node_key(None), ANY_NODE);
        assert_eq!(lock_name("node-1", 3), "arc-hook-slot-node-1-3");
        let long = "ip-10-0-12-34.eu-west-1.compute.internal.example.com";
        let keys = [
            node_key(Some(long)),
            node_key(Some("a.b")),
            node_key(Some("a-b")),
            node_key(Some(ANY_NODE)),
            node_key(Some(&"n".repeat(200))),
        ];
        for k in &keys {
            assert!(label_value(k).is_empty(), "{k}");
            assert!(dns1123_subdomain(&lock_name(k, 999)).is_empty(), "{k}");
            assert!(lock_name(k, 999).len() <= 63, "{k}");
        }
        assert_ne!(keys[1], keys[2]);
        assert_ne!(keys[3], ANY_NODE);
    }

    #[test]
    fn a_lock_names_its_holder_node_and_slot() {
        let ctx = crate::objects::test_context();
        let lease = slot_lease(&ctx, "node-1", 2, "r-workflow");
        let labels = lease.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels[SLOT_NODE_LABEL], "node-1");
        assert_eq!(labels[CACHE_SLOT_LABEL], "2");
        assert!(crate::objects::owned_by(Some(labels), &ctx.runner_pod));
        assert_eq!(
            lease.spec.and_then(|s| s.holder_identity).as_deref(),
            Some("r-workflow")
        );
        let secret = slot_secret(&ctx, "node-1", 2, "r-workflow");
        assert_eq!(secret.metadata.name, lease.metadata.name);
        assert_eq!(
            secret.metadata.annotations.expect("annotations")[SLOT_HOLDER_ANNOTATION],
            "r-workflow"
        );
    }
}
