//! Node cache slots: which `${CACHE_SLOT}` a job takes, so consecutive jobs on a node reuse warm caches and concurrent ones never share one.
//!
//! A slot is held by a live workflow pod (the `arc-hook.dev/cache-slot` label) pinned to the
//! same node. prepare_job takes the lowest free slot, creates its pod, then looks again: when two
//! runners raced for one slot, the pod created first (then the lower name) keeps it and the other
//! deletes its pod and tries the next free slot. No job step runs before prepare_job returns, so
//! the loser never used the cache (only its init container, which fixes permissions idempotently).

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use crate::build::pod::{CACHE_SLOT_LABEL, pinned_node};
use crate::k8s::retry::with_retry;
use crate::k8s::{K8sError, Kube};

/// How many times prepare_job retries after losing a slot race before giving up.
pub const MAX_ATTEMPTS: usize = 8;

/// A live workflow pod holding a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pod: String,
    pub slot: u32,
    /// Creation time (RFC 3339, seconds), then the name: the order that settles a race.
    pub created: String,
}

/// The slot holders among `pods` on `node` (`None`: the scheduler places pods anywhere, so every
/// pod counts). Pods that are finished or being deleted have given their slot back.
pub fn holders(pods: &[Pod], node: Option<&str>) -> Vec<Holder> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter(|p| node.is_none_or(|n| pinned_node(p).as_deref() == Some(n)))
        .filter_map(|p| {
            let slot = p
                .metadata
                .labels
                .as_ref()?
                .get(CACHE_SLOT_LABEL)?
                .parse()
                .ok()?;
            Some(Holder {
                pod: p.metadata.name.clone()?,
                slot,
                created: p
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The lowest slot nobody in `held` holds and `skip` does not exclude.
pub fn lowest_free(held: &[Holder], me: &str, skip: &[u32]) -> u32 {
    (0..)
        .find(|s| !skip.contains(s) && !held.iter().any(|h| h.slot == *s && h.pod != me))
        .unwrap_or(0)
}

/// Whether pod `me`, holding `slot`, lost a race: another holder of the slot was created first
/// (or at the same second with a lower name).
pub fn lost_race(held: &[Holder], me: &str, slot: u32) -> bool {
    let Some(mine) = held.iter().find(|h| h.pod == me) else {
        return false;
    };
    held.iter()
        .any(|h| h.slot == slot && h.pod != me && (&h.created, &h.pod) < (&mine.created, &mine.pod))
}

/// The namespace's workflow pods that hold a slot.
pub async fn list_holders(kube: &Kube, node: Option<&str>) -> Result<Vec<Holder>, K8sError> {
    let api = kube.pods();
    let params = ListParams::default().labels(CACHE_SLOT_LABEL);
    let list = with_retry("listing workflow pods for a cache slot", || {
        api.list(&params)
    })
    .await?;
    Ok(holders(&list.items, node))
}

/// The slot workflow pod `pod` holds (`None` when it holds none or cannot be read).
pub async fn held_by(kube: &Kube, pod: &str) -> Option<u32> {
    let api = kube.pods();
    let found = with_retry(&format!("reading pod {pod}"), || api.get_opt(pod))
        .await
        .ok()??;
    found.metadata.labels?.get(CACHE_SLOT_LABEL)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, slot: &str, node: &str, created: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {CACHE_SLOT_LABEL: slot}, "creationTimestamp": created},
            "spec": {"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}},
            "status": {"phase": phase}
        }))
        .expect("pod")
    }

    #[test]
    fn the_lowest_slot_free_on_this_node_is_taken() {
        let pods = [
            pod("a", "0", "n1", "2025-01-01T00:00:00Z", "Running"),
            pod("b", "1", "n1", "2025-01-01T00:00:00Z", "Pending"),
            pod("c", "2", "n2", "2025-01-01T00:00:00Z", "Running"),
            pod("d", "3", "n1", "2025-01-01T00:00:00Z", "Succeeded"),
        ];
        let held = holders(&pods, Some("n1"));
        assert_eq!(held.len(), 2);
        assert_eq!(lowest_free(&held, "me", &[]), 2);
        assert_eq!(lowest_free(&held, "me", &[2]), 3);
        assert_eq!(lowest_free(&holders(&pods, Some("n3")), "me", &[]), 0);
        // Without pinning every pod counts.
        assert_eq!(lowest_free(&holders(&pods, None), "me", &[]), 3);
    }

    #[test]
    fn a_race_is_won_by_the_pod_created_first_then_the_lower_name() {
        let pods = [
            pod(
                "runner-b-workflow",
                "0",
                "n1",
                "2025-01-01T00:00:01Z",
                "Pending",
            ),
            pod(
                "runner-a-workflow",
                "0",
                "n1",
                "2025-01-01T00:00:01Z",
                "Pending",
            ),
            pod(
                "runner-c-workflow",
                "0",
                "n1",
                "2025-01-01T00:00:02Z",
                "Pending",
            ),
        ];
        let held = holders(&pods, Some("n1"));
        assert!(!lost_race(&held, "runner-a-workflow", 0));
        assert!(lost_race(&held, "runner-b-workflow", 0));
        assert!(lost_race(&held, "runner-c-workflow", 0));
    }
}
