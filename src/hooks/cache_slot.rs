//! Node cache slots: which `${CACHE_SLOT}` a job takes, so consecutive jobs on a node reuse warm caches and concurrent ones never share one.
//!
//! A slot is a lock object named after the node and the slot number
//! ([`crate::objects::slot_lock`]): a Lease where the Role grants leases, else an empty Secret.
//! prepare_job lists the node's locks once, then creates the lowest slot's lock that is free;
//! the API makes a create atomic, so of two jobs creating the same lock exactly one succeeds and
//! the other gets AlreadyExists and tries the next slot at once. No job ever waits or yields:
//! with `n` live holders on the node a job takes a slot in at most `n + 1` creates.
//! The workflow pod then owns its Lease (ownerReference), so the garbage collector removes it
//! with the pod; cleanup_job deletes it as well. A lock whose holder is gone, finished or
//! replaced is stale and reclaimed (deleted with a UID precondition, then created again).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::k8s::retry::with_retry;
use crate::k8s::{K8sError, Kube};
use crate::objects::pod::CACHE_SLOT_LABEL;
use crate::objects::slot_lock::{
    SLOT_HOLDER_ANNOTATION, SLOT_NODE_LABEL, lock_name, node_key, pod_owner, slot_lease,
    slot_secret,
};
use crate::objects::{BuildContext, owned_by, runner_selector};

/// The highest number of slots a node can have: more concurrent jobs than this on one node
/// means something else is wrong.
pub(crate) const MAX_SLOTS: u32 = 512;

/// How long a lock without an owner is presumed to be its holder's, whose pod may not exist
/// yet (prepare_job creates the lock, then the pod). Past it, a lock whose holder pod does not
/// exist is stale: its prepare_job died in between.
pub(crate) const UNOWNED_GRACE: Duration = Duration::from_secs(120);

/// Why a template using `${CACHE_SLOT}` cannot take a slot under this Role.
pub(crate) const NO_LOCKS_MESSAGE: &str = "the template uses ${CACHE_SLOT}, but the runner's service account may neither use coordination.k8s.io leases nor get and list secrets, so it cannot take a cache slot: grant leases get, list, create, patch, delete (deploy/rbac/role.yaml does), or remove ${CACHE_SLOT} from the template";

/// Which kind of object locks a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockKind {
    /// A coordination.k8s.io Lease, owned by the workflow pod.
    Lease,
    /// An empty Secret (the Role grants no leases), removed by cleanup_job.
    Secret,
}

impl LockKind {
    fn what(self) -> &'static str {
        match self {
            LockKind::Lease => "lease",
            LockKind::Secret => "secret",
        }
    }
}

/// Why no slot could be taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SlotError {
    #[error(transparent)]
    Api(#[from] K8sError),
    #[error(
        "all {MAX_SLOTS} cache slots of node {node} are held by live workflow pods; remove the stale ones (label {SLOT_NODE_LABEL}={node}) or run fewer jobs on the node at once"
    )]
    Exhausted { node: String },
}

/// A lock as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lock {
    pub slot: u32,
    pub uid: String,
    /// The workflow pod holding the slot (its annotation).
    pub holder: String,
    /// The owner pod's UID, once the lock has one.
    pub owner_uid: Option<String>,
    /// Time since the lock was created.
    pub age: Duration,
}

/// A workflow pod as the slot decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HolderPod {
    pub name: String,
    pub uid: String,
    pub slot: Option<u32>,
    /// Succeeded or Failed: its containers no longer use the cache.
    pub finished: bool,
}

/// Whether `lock` no longer protects a running job: its holder pod is gone, was replaced by
/// another pod of that name, holds another slot or has finished. A lock without owner whose
/// holder pod does not exist is stale only after [`UNOWNED_GRACE`] (its pod may be on its way).
pub(crate) fn stale(lock: &Lock, pods: &[HolderPod]) -> bool {
    let holder = pods.iter().find(|p| p.name == lock.holder);
    match (holder, &lock.owner_uid) {
        (None, Some(_)) => true,
        (None, None) => lock.age >= UNOWNED_GRACE,
        (Some(p), Some(uid)) if p.uid != *uid => true,
        (Some(p), _) => p.finished || p.slot != Some(lock.slot),
    }
}

/// The slots to try, in order: every slot no listed lock holds or whose lock is stale, lowest
/// first, with the stale lock to remove first.
pub(crate) fn candidates<'a>(
    locks: &'a [Lock],
    pods: &[HolderPod],
) -> Vec<(u32, Option<&'a Lock>)> {
    let by_slot: BTreeMap<u32, &Lock> = locks.iter().map(|l| (l.slot, l)).collect();
    (0..MAX_SLOTS)
        .filter_map(|s| match by_slot.get(&s) {
            None => Some((s, None)),
            Some(l) if stale(l, pods) => Some((s, Some(*l))),
            Some(_) => None,
        })
        .collect()
}

/// The lock this job took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taken {
    pub slot: u32,
    pub kind: LockKind,
    pub name: String,
}

fn lock_from(meta: &ObjectMeta, now: k8s_openapi::jiff::Timestamp) -> Option<Lock> {
    let slot = meta.labels.as_ref()?.get(CACHE_SLOT_LABEL)?.parse().ok()?;
    let age = meta
        .creation_timestamp
        .as_ref()
        .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok())
        .unwrap_or_default();
    Some(Lock {
        slot,
        uid: meta.uid.clone()?,
        holder: meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(SLOT_HOLDER_ANNOTATION))
            .cloned()
            .unwrap_or_default(),
        owner_uid: meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Pod")
            .map(|o| o.uid.clone()),
        age,
    })
}

fn holder_from(pod: &Pod) -> Option<HolderPod> {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    Some(HolderPod {
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        slot: pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CACHE_SLOT_LABEL))
            .and_then(|s| s.parse().ok()),
        finished: matches!(phase, Some("Succeeded" | "Failed")),
    })
}

/// The node's locks of `kind`.
async fn list_locks(kube: &Kube, kind: LockKind, key: &str) -> Result<Vec<Lock>, K8sError> {
    let params = ListParams::default().labels(&format!("{SLOT_NODE_LABEL}={key}"));
    let now = k8s_openapi::jiff::Timestamp::now();
    let action = format!("listing the cache-slot {}s of node {key}", kind.what());
    let metas: Vec<ObjectMeta> = match kind {
        LockKind::Lease => {
            let api = kube.leases();
            let list = with_retry(&action, || api.list(&params)).await?;
            list.items.into_iter().map(|l| l.metadata).collect()
        }
        LockKind::Secret => {
            let api = kube.secrets();
            let list = with_retry(&action, || api.list(&params)).await?;
            list.items.into_iter().map(|s| s.metadata).collect()
        }
    };
    Ok(metas.iter().filter_map(|m| lock_from(m, now)).collect())
}

/// The workflow pods holding a slot (any node: the holder is found by name).
async fn list_holder_pods(kube: &Kube) -> Result<Vec<HolderPod>, K8sError> {
    let api = kube.pods();
    let params = ListParams::default().labels(CACHE_SLOT_LABEL);
    let list = with_retry("listing the workflow pods holding cache slots", || {
        api.list(&params)
    })
    .await?;
    Ok(list.items.iter().filter_map(holder_from).collect())
}

/// Creates the lock; `Ok(false)` when another job holds it (AlreadyExists). A lock that exists
/// with this job as holder is this job's own create whose answer was lost, and is taken.
async fn create_lock(
    kube: &Kube,
    kind: LockKind,
    ctx: &BuildContext,
    key: &str,
    slot: u32,
    holder: &str,
) -> Result<bool, K8sError> {
    let name = lock_name(key, slot);
    let action = format!("creating cache-slot {} {name}", kind.what());
    let pp = PostParams::default();
    let created = match kind {
        LockKind::Lease => {
            let api = kube.leases();
            let lease = slot_lease(ctx, key, slot, holder);
            with_retry(&action, || api.create(&pp, &lease))
                .await
                .map(|_| ())
        }
        LockKind::Secret => {
            let api = kube.secrets();
            let secret = slot_secret(ctx, key, slot, holder);
            with_retry(&action, || api.create(&pp, &secret))
                .await
                .map(|_| ())
        }
    };
    match created {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(409) => {
            let found = match kind {
                LockKind::Lease => {
                    let api = kube.leases();
                    with_retry(&action, || api.get_opt(&name))
                        .await?
                        .map(|l| l.metadata)
                }
                LockKind::Secret => {
                    let api = kube.secrets();
                    with_retry(&action, || api.get_opt(&name))
                        .await?
                        .map(|s| s.metadata)
                }
            };
            Ok(found.is_some_and(|m| {
                owned_by(m.labels.as_ref(), &ctx.runner_pod)
                    && m.annotations
                        .as_ref()
                        .and_then(|a| a.get(SLOT_HOLDER_ANNOTATION))
                        .is_some_and(|h| h == holder)
            }))
        }
        Err(e) => Err(e),
    }
}

/// Deletes a stale lock unless it changed since it was listed (UID precondition: another job
/// may have reclaimed it and taken the slot in between). Whether it went or not, the create
/// that follows decides who gets the slot.
async fn reclaim(kube: &Kube, kind: LockKind, name: &str, lock: &Lock) -> Result<(), K8sError> {
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(lock.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let action = format!("removing stale cache-slot {} {name}", kind.what());
    let deleted = match kind {
        LockKind::Lease => {
            let api = kube.leases();
            with_retry(&action, || api.delete(name, &dp))
                .await
                .map(|_| ())
        }
        LockKind::Secret => {
            let api = kube.secrets();
            with_retry(&action, || api.delete(name, &dp))
                .await
                .map(|_| ())
        }
    };
    match deleted {
        Err(e) if !matches!(e.code(), Some(404 | 409)) => Err(e),
        _ => {
            tracing::info!(lock = name, holder = %lock.holder, "reclaimed a stale cache slot");
            Ok(())
        }
    }
}

/// Takes the lowest free slot on `node` (`None`: pods the scheduler places, whose slots are
/// distinct across the namespace) for workflow pod `holder`, in bounded time.
pub(crate) async fn take(
    kube: &Kube,
    ctx: &BuildContext,
    node: Option<&str>,
    holder: &str,
    kind: LockKind,
) -> Result<Taken, SlotError> {
    let key = node_key(node);
    let locks = list_locks(kube, kind, &key).await?;
    let pods = if locks.is_empty() {
        Vec::new()
    } else {
        list_holder_pods(kube).await?
    };
    for (slot, stale_lock) in candidates(&locks, &pods) {
        let name = lock_name(&key, slot);
        if let Some(lock) = stale_lock {
            reclaim(kube, kind, &name, lock).await?;
        }
        if create_lock(kube, kind, ctx, &key, slot, holder).await? {
            tracing::debug!(slot, lock = %name, "cache slot taken");
            return Ok(Taken { slot, kind, name });
        }
        tracing::debug!(
            slot,
            "cache slot taken by another job just now; trying the next"
        );
    }
    Err(SlotError::Exhausted { node: key })
}

/// Makes workflow pod `pod` (uid `uid`) the owner of its Lease, so the Lease goes with the pod.
/// A Secret lock gets no owner (the Role may not patch secrets); cleanup_job removes it.
pub(crate) async fn set_owner(
    kube: &Kube,
    taken: &Taken,
    pod: &str,
    uid: &str,
) -> Result<(), K8sError> {
    if taken.kind != LockKind::Lease {
        return Ok(());
    }
    let api = kube.leases();
    let patch = json!({"metadata": {"ownerReferences": [pod_owner(pod, uid)]}});
    let patch = Patch::Merge(&patch);
    let pp = PatchParams::default();
    with_retry(
        &format!("making pod {pod} own lease {}", taken.name),
        || api.patch(&taken.name, &pp, &patch),
    )
    .await
    .map(|_| ())
}

/// Gives the slot back (a failed prepare_job); one already gone counts as given back.
pub(crate) async fn release(kube: &Kube, taken: &Taken) {
    let dp = DeleteParams::default();
    match taken.kind {
        LockKind::Lease => {
            crate::hooks::delete_or_warn(&kube.leases(), "lease", &taken.name, &dp).await
        }
        LockKind::Secret => {
            crate::hooks::delete_or_warn(&kube.secrets(), "secret", &taken.name, &dp).await
        }
    };
}

/// Deletes this runner's slot Leases (by its `runner-pod` label); returns how many. Secret
/// locks go with the runner's other secrets.
pub(crate) async fn remove_runner_leases(kube: &Kube, runner: &str) -> Result<usize, K8sError> {
    let api = kube.leases();
    let selector = runner_selector(runner);
    let params = ListParams::default().labels(&selector);
    let list = with_retry(&format!("listing leases with {selector}"), || {
        api.list(&params)
    })
    .await?;
    let dp = DeleteParams::default();
    let mut removed = 0;
    for lease in list.items {
        let Lease { metadata, .. } = lease;
        if let Some(name) = metadata.name {
            crate::k8s::owned::delete(&api, "lease", &name, &dp).await?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The slot workflow pod `pod` holds (`None` when it holds none or cannot be read).
pub(crate) async fn held_by(kube: &Kube, pod: &str) -> Option<u32> {
    let api = kube.pods();
    let found = with_retry(&format!("reading pod {pod}"), || api.get_opt(pod))
        .await
        .ok()??;
    found.metadata.labels?.get(CACHE_SLOT_LABEL)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(slot: u32, holder: &str, owner: Option<&str>, age_s: u64) -> Lock {
        Lock {
            slot,
            uid: format!("lock-{slot}"),
            holder: holder.into(),
            owner_uid: owner.map(str::to_string),
            age: Duration::from_secs(age_s),
        }
    }

    fn pod(name: &str, uid: &str, slot: u32, finished: bool) -> HolderPod {
        HolderPod {
            name: name.into(),
            uid: uid.into(),
            slot: Some(slot),
            finished,
        }
    }

    #[test]
    fn a_live_holder_keeps_its_slot_and_a_gone_one_gives_it_back() {
        let pods = [pod("a", "ua", 0, false), pod("b", "ub", 1, true)];
        // Owned by a live pod: held.
        assert!(!stale(&lock(0, "a", Some("ua"), 999), &pods));
        // Owner finished, replaced by another pod of the name, or gone: stale.
        assert!(stale(&lock(1, "b", Some("ub"), 1), &pods));
        assert!(stale(&lock(0, "a", Some("old"), 1), &pods));
        assert!(stale(&lock(0, "gone", Some("ug"), 1), &pods));
        // No owner yet: its pod may be on its way, until the grace ends.
        assert!(!stale(&lock(3, "coming", None, 5), &pods));
        assert!(stale(
            &lock(3, "coming", None, UNOWNED_GRACE.as_secs()),
            &pods
        ));
        // A holder that now holds another slot (a later job of the same runner).
        assert!(stale(&lock(5, "a", None, 1), &pods));
        assert!(!stale(&lock(0, "a", None, 1), &pods));
    }

    #[test]
    fn free_and_stale_slots_are_tried_lowest_first() {
        let pods = [pod("a", "ua", 0, false), pod("c", "uc", 2, false)];
        let locks = [
            lock(0, "a", Some("ua"), 9),
            lock(1, "gone", Some("ug"), 9),
            lock(2, "c", Some("uc"), 9),
        ];
        let c = candidates(&locks, &pods);
        assert_eq!(c[0].0, 1);
        assert_eq!(c[0].1.map(|l| l.uid.as_str()), Some("lock-1"));
        assert_eq!((c[1].0, c[1].1), (3, None));
        assert_eq!(c.len(), MAX_SLOTS as usize - 2);
        assert_eq!(candidates(&[], &[])[0], (0, None));
    }
}
