//! Node cache slots: which `${CACHE_SLOT}` a job takes, so consecutive jobs on a node reuse warm caches and concurrent ones never share one.
//!
//! A slot is held by a live workflow pod (the `arc-hook.dev/cache-slot` label) pinned to the
//! same node. prepare_job takes the lowest free slot, creates its pod, then looks again: a pod
//! that finds another holder of its slot created before it, or in the same second (creation
//! timestamps have one-second resolution, so neither can tell which came first), yields: it
//! deletes its pod and, after a short random pause, tries again with the lowest free slot. At most one pod
//! keeps a slot: of two holders, the later-or-equal one always sees the other when it looks
//! again, since it looks after its own creation. No job step runs before prepare_job returns, so
//! the loser never used the cache (only its init container, which fixes permissions idempotently).

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use crate::k8s::retry::with_retry;
use crate::k8s::{K8sError, Kube};
use crate::objects::pod::{CACHE_SLOT_LABEL, pinned_node};

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

/// The lowest slot no other pod in `held` holds.
pub fn lowest_free(held: &[Holder], me: &str) -> u32 {
    (0..)
        .find(|s| !held.iter().any(|h| h.slot == *s && h.pod != me))
        .unwrap_or(0)
}

/// Whether pod `me`, holding `slot`, must yield it: another holder of the slot was created
/// before it or in the same second.
pub fn lost_race(held: &[Holder], me: &str, slot: u32) -> bool {
    let Some(mine) = held.iter().find(|h| h.pod == me) else {
        return false;
    };
    held.iter()
        .any(|h| h.slot == slot && h.pod != me && h.created <= mine.created)
}

/// A pause of 0–1 s before retrying after yielding a slot, so two runners that yielded to each
/// other do not meet again on the next slot.
pub fn retry_pause() -> std::time::Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::time::Duration::from_millis(u64::from(nanos % 1000))
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
        assert_eq!(lowest_free(&held, "me"), 2);
        // A pod's own slot does not count against it.
        assert_eq!(lowest_free(&held, "a"), 0);
        assert_eq!(lowest_free(&holders(&pods, Some("n3")), "me"), 0);
        // Without pinning every pod counts.
        assert_eq!(lowest_free(&holders(&pods, None), "me"), 3);
    }

    #[test]
    fn a_race_is_won_only_by_a_pod_created_strictly_first() {
        let pods = [
            pod(
                "runner-a-workflow",
                "0",
                "n1",
                "2025-01-01T00:00:01Z",
                "Pending",
            ),
            pod(
                "runner-b-workflow",
                "0",
                "n1",
                "2025-01-01T00:00:02Z",
                "Pending",
            ),
            pod(
                "runner-c-workflow",
                "1",
                "n1",
                "2025-01-01T00:00:02Z",
                "Pending",
            ),
            pod(
                "runner-d-workflow",
                "1",
                "n1",
                "2025-01-01T00:00:02Z",
                "Pending",
            ),
        ];
        let held = holders(&pods, Some("n1"));
        assert!(!lost_race(&held, "runner-a-workflow", 0));
        assert!(lost_race(&held, "runner-b-workflow", 0));
        // Created in the same second: neither can know it was first, so both yield.
        assert!(lost_race(&held, "runner-c-workflow", 1));
        assert!(lost_race(&held, "runner-d-workflow", 1));
        // Alone, a pod keeps its slot.
        assert!(!lost_race(&held[..1], "runner-a-workflow", 0));
    }
}
