//! Waiting until chosen containers of a running pod are ready (their readiness probes pass), each within its own limit.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::time::Instant;

use super::pod_watch::{Deadline, Decision, Followed, follow_pod};
use super::wait::{PodProgress, classify, last_container_event};
use super::{K8sError, Kube};

/// One container to wait for, and how long it may take to become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadyWait {
    pub container: String,
    pub within: Duration,
}

/// Why the containers did not all become ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadyError {
    /// A container did not become ready within its limit; `last_failure` is the kubelet's
    /// last `Unhealthy` event about it (the probe's output), when events can be read.
    #[error("container {container} was not ready within {}s", within.as_secs())]
    NotReady {
        container: String,
        within: Duration,
        last_failure: Option<String>,
    },
    /// The pod will not run any more (a container crashed, the pod was evicted...).
    #[error("{0}")]
    PodFailed(String),
    #[error("pod {0} was deleted")]
    Gone(String),
    #[error(transparent)]
    Api(#[from] K8sError),
}

/// The containers of `waits` that are ready in this version of the pod.
pub(crate) fn ready_containers(pod: &Pod, waits: &[ReadyWait]) -> BTreeSet<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|s| s.ready && waits.iter().any(|w| w.container == s.name))
        .map(|s| s.name.clone())
        .collect()
}

/// Waits until every container of `waits` is ready, each within its own limit from now; calls
/// `on_ready(container, after)` as each becomes ready. Event-driven: one watch of the pod where
/// `can_watch`, else reads at the poll's pace.
pub(crate) async fn wait_containers_ready(
    kube: &Kube,
    pod: &str,
    waits: &[ReadyWait],
    can_watch: bool,
    can_list_events: bool,
    mut on_ready: impl FnMut(&str, Duration),
) -> Result<(), ReadyError> {
    if waits.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    let last_limit = waits.iter().map(|w| w.within).max().unwrap_or_default();
    let mut reported = BTreeSet::new();
    let not_ready = async |late: &ReadyWait| ReadyError::NotReady {
        container: late.container.clone(),
        within: late.within,
        last_failure: if can_list_events {
            last_container_event(kube, pod, &late.container, "Unhealthy").await
        } else {
            None
        },
    };
    let decide = async |current: &Pod| {
        if let PodProgress::Failed(why) = classify(current) {
            return Decision::Done(Err(ReadyError::PodFailed(format!(
                "pod {pod} cannot run: {why}"
            ))));
        }
        for name in ready_containers(current, waits) {
            if reported.insert(name.clone()) {
                on_ready(&name, start.elapsed());
            }
        }
        let pending: Vec<&ReadyWait> = waits
            .iter()
            .filter(|w| !reported.contains(&w.container))
            .collect();
        let Some(next_limit) = pending.iter().map(|w| start + w.within).min() else {
            return Decision::Done(Ok(()));
        };
        if let Some(late) = pending.iter().find(|w| start + w.within <= Instant::now()) {
            return Decision::Done(Err(not_ready(late).await));
        }
        Decision::LookAgain(
            next_limit
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(10)),
        )
    };
    // Each container's own limit ends the wait above; the deadline is the last of them.
    let deadline = Deadline::after(last_limit);
    match follow_pod(kube, pod, can_watch, deadline, decide).await? {
        Followed::Decided(answer) => answer,
        Followed::Gone => Err(ReadyError::Gone(pod.to_string())),
        Followed::TimedOut(_) => {
            let late = waits
                .iter()
                .filter(|w| !reported.contains(&w.container))
                .min_by_key(|w| w.within)
                .unwrap_or(&waits[0]);
            Err(not_ready(late).await)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_awaited_ready_containers_count() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"phase": "Running", "containerStatuses": [
            {"name": "job", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}},
            {"name": "redis", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}},
            {"name": "postgres", "ready": false, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}
        ]}}))
        .expect("pod");
        let waits = |names: &[&str]| -> Vec<ReadyWait> {
            names
                .iter()
                .map(|n| ReadyWait {
                    container: n.to_string(),
                    within: Duration::from_secs(1),
                })
                .collect()
        };
        assert_eq!(
            ready_containers(&pod, &waits(&["redis", "postgres"])),
            BTreeSet::from(["redis".to_string()])
        );
        assert!(ready_containers(&pod, &waits(&["postgres"])).is_empty());
    }
}
