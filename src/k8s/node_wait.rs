//! Waiting for the runner's node to lose its start-up taints (`ARC_HOOK_WAIT_FOR_NODE_TAINTS`): one watch on that Node where allowed, else reads; bounded, with a job-log line every 30 s.

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Node;

use super::pod_watch::{Deadline, Decision, Followed, ObjectWatch};
use super::progress::{Progress, WaitNotice};
use super::{K8sError, Kube};

/// How often the job log hears that the node still carries its start-up taints.
pub(crate) const TAINT_NOTICE: Duration = Duration::from_secs(30);

/// The longest pause between two reads of the node when it cannot be watched (a node changes
/// rarely; its taints are removed once).
const POLL_CAP: Duration = Duration::from_secs(2);

/// Why the node never became ready for the workflow pod.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeWaitError {
    #[error(
        "node {node} still has start-up taint(s) {} after {}s, so the workflow pod cannot be scheduled there: raise ARC_HOOK_NODE_TAINTS_TIMEOUT_SECONDS if whatever removes them is slow, or drop the key from ARC_HOOK_WAIT_FOR_NODE_TAINTS if nothing does",
        taints.join(", "),
        after.as_secs()
    )]
    Timeout {
        node: String,
        taints: Vec<String>,
        after: Duration,
    },
    #[error("node {0} (the runner pod's) does not exist (any more)")]
    Gone(String),
    #[error("waiting for node {node}'s start-up taints to go")]
    Api {
        node: String,
        #[source]
        source: K8sError,
    },
}

/// The node's taints whose key is one of `keys`, as `kubectl describe node` shows them
/// (`key=value:Effect`, `key:Effect` without a value). Pure.
pub(crate) fn present_taints(node: &Node, keys: &[String]) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| keys.contains(&t.key))
        .map(|t| match t.value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => format!("{}={v}:{}", t.key, t.effect),
            None => format!("{}:{}", t.key, t.effect),
        })
        .collect()
}

/// Waits until node `name` carries none of the taint `keys`, at most `timeout`; returns how long
/// it waited (zero when none was there: one read, no watch). Says so in the job log at once and
/// every [`TAINT_NOTICE`], and once more when the taints are gone.
pub(crate) async fn wait_untainted(
    kube: &Kube,
    name: &str,
    keys: &[String],
    timeout: Duration,
    can_watch: bool,
    progress: Progress,
) -> Result<Duration, NodeWaitError> {
    let api_error = |source: K8sError| {
        if source.is_not_found() {
            NodeWaitError::Gone(name.to_string())
        } else {
            NodeWaitError::Api {
                node: name.to_string(),
                source,
            }
        }
    };
    let started = Instant::now();
    let deadline = Deadline::after(timeout);
    let (watch, first) = ObjectWatch::node(kube, name, can_watch, POLL_CAP)
        .await
        .map_err(api_error)?;
    let mut next_notice = started;
    let decide = async |node: &Node| {
        let present = present_taints(node, keys);
        if present.is_empty() {
            return Decision::Done(started.elapsed());
        }
        let now = Instant::now();
        // At the deadline the timeout speaks, not one more notice.
        if now >= next_notice && !deadline.expired() {
            progress(&WaitNotice::StartupTaints {
                node: name,
                taints: &present.join(", "),
                so_far: started.elapsed(),
                limit: timeout,
            });
            next_notice = now + TAINT_NOTICE;
        }
        Decision::LookAgain(next_notice.saturating_duration_since(now))
    };
    match watch
        .follow(first, deadline, decide)
        .await
        .map_err(api_error)?
    {
        Followed::Decided(waited) => {
            if !waited.is_zero() && next_notice > started {
                progress(&WaitNotice::TaintsGone {
                    node: name,
                    after: waited,
                });
            }
            Ok(waited)
        }
        Followed::TimedOut(node) => Err(NodeWaitError::Timeout {
            node: name.to_string(),
            taints: present_taints(&node, keys),
            after: timeout,
        }),
        Followed::Gone => Err(NodeWaitError::Gone(name.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_named_keys_count() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [
                {"key": "karpenter.sh/unregistered", "effect": "NoExecute"},
                {"key": "cache-not-ready", "value": "true", "effect": "NoSchedule"},
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
            ]}
        }))
        .expect("node");
        let keys = |k: &[&str]| k.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            present_taints(
                &node,
                &keys(&["cache-not-ready", "karpenter.sh/unregistered"])
            ),
            [
                "karpenter.sh/unregistered:NoExecute",
                "cache-not-ready=true:NoSchedule"
            ]
        );
        assert!(present_taints(&node, &keys(&["other"])).is_empty());
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).expect("node");
        assert!(present_taints(&bare, &keys(&["cache-not-ready"])).is_empty());
    }
}
