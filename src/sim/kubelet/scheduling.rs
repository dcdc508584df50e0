//! The scheduler's decision for the one sim node: node selectors, affinity, taints, resources
//! (what the node's other pods already hold included), claims; and the kubelet's admission of
//! bound pods.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::quantity;

const NOT_HELPFUL: &str =
    "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

const NO_VICTIMS: &str =
    "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";

/// Resource name -> amount in base units (cores, bytes, pods).
pub(crate) type Resources = BTreeMap<String, f64>;

/// The default sim node: cpu 64, memory 256Gi, 110 pods, 1Ti ephemeral storage, no GPU.
pub(crate) fn default_allocatable() -> BTreeMap<String, String> {
    [
        ("cpu", "64"),
        ("memory", "256Gi"),
        ("pods", "110"),
        ("ephemeral-storage", "1Ti"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Parses the node's allocatable quantities (malformed ones count as zero).
pub(crate) fn parse_allocatable(quantities: &BTreeMap<String, String>) -> Resources {
    quantities
        .iter()
        .map(|(k, v)| (k.clone(), quantity::parse(v).unwrap_or(0.0)))
        .collect()
}

fn term_matches(term: &Value, labels: &Map<String, Value>) -> bool {
    let exprs = term
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    exprs.iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let have = labels.get(key).and_then(Value::as_str);
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            "Gt" | "Lt" => false,
            _ => false,
        }
    })
}

/// The pod's effective requests (the larger of the sum over containers and each init container),
/// plus one `pods`.
pub(crate) fn requests(pod: &Value) -> Resources {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let mut total: Vec<(String, f64)> = vec![("pods".to_string(), 1.0)];
    let add = |acc: &mut Vec<(String, f64)>, c: &Value, max: bool| {
        let res = c
            .pointer("/resources/requests")
            .or(c.pointer("/resources/limits"))
            .and_then(Value::as_object);
        for (k, v) in res.into_iter().flatten() {
            let q = quantity::parse(v.as_str().unwrap_or(&v.to_string())).unwrap_or(0.0);
            match acc.iter_mut().find(|(n, _)| n == k) {
                Some((_, x)) if max => *x = x.max(q),
                Some((_, x)) => *x += q,
                None => acc.push((k.clone(), q)),
            }
        }
    };
    // Containers run side by side and add up; init containers run one at a time, so the
    // largest counts.
    for (list, max) in [("containers", false), ("initContainers", true)] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(&mut total, c, max);
        }
    }
    total.into_iter().collect()
}

/// Resources the pod asks for beyond what the node has left: (name, requested, used, capacity),
/// in base units; `used` is what the node's other pods hold.
fn shortfalls(
    requested: &Resources,
    node: &Resources,
    used: &Resources,
) -> Vec<(String, f64, f64, f64)> {
    requested
        .iter()
        .filter(|(_, q)| **q > 0.0)
        .filter_map(|(r, q)| {
            let cap = node.get(r).copied().unwrap_or(0.0);
            let held = used.get(r).copied().unwrap_or(0.0);
            (q + held > cap).then(|| (r.clone(), *q, held, cap))
        })
        .collect()
}

/// The kubelet's admission of a pod bound with `spec.nodeName` (the scheduler never saw it):
/// `Err((reason, message))` as a real kubelet rejects it, e.g. `OutOfcpu`.
pub(crate) fn admit_bound(
    requested: &Resources,
    node: &Resources,
    used: &Resources,
) -> Result<(), (String, String)> {
    let Some((r, q, held, cap)) = shortfalls(requested, node, used).into_iter().next() else {
        return Ok(());
    };
    // The kubelet prints cpu in millicores and everything else in base units.
    let scale = if r == "cpu" { 1000.0 } else { 1.0 };
    let reason = format!("OutOf{r}");
    let message = format!(
        "Pod was rejected: Node didn't have enough resource: {r}, requested: {}, used: {}, capacity: {}",
        (q * scale).round() as i64,
        (held * scale).round() as i64,
        (cap * scale).round() as i64
    );
    Err((reason, message))
}

/// Whether `toleration` tolerates `taint`: kube-scheduler's `Toleration.ToleratesTaint`
/// (k8s.io/api core/v1 `toleration.go`): an empty effect matches every effect, `Exists` with an
/// empty key every key, `Equal` (the default operator) needs key and value to match.
fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let effect = s(toleration, "effect");
    if !effect.is_empty() && effect != s(taint, "effect") {
        return false;
    }
    let key = s(toleration, "key");
    if !key.is_empty() && key != s(taint, "key") {
        return false;
    }
    match s(toleration, "operator").as_str() {
        "Exists" => true,
        "" | "Equal" => s(toleration, "value") == s(taint, "value"),
        _ => false,
    }
}

/// The first NoSchedule or NoExecute taint of the node the pod does not tolerate, as the
/// TaintToleration filter picks it (PreferNoSchedule only scores).
fn untolerated_taint<'a>(pod: &Value, taints: &'a [Value]) -> Option<&'a Value> {
    let tolerations: Vec<Value> = pod
        .pointer("/spec/tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    taints.iter().find(|t| {
        matches!(
            t.get("effect").and_then(Value::as_str),
            Some("NoSchedule" | "NoExecute")
        ) && !tolerations.iter().any(|tol| tolerates(tol, t))
    })
}

/// `Ok` when the pod fits the node; otherwise the FailedScheduling message.
/// `node` is the node's allocatable, `used` what its running pods request, `taints` the node's
/// `spec.taints`.
pub(crate) fn fit(
    pod: &Value,
    node_labels: &Map<String, Value>,
    taints: &[Value],
    missing_claim: Option<&str>,
    node: &Resources,
    used: &Resources,
) -> Result<(), String> {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    if let Some(claim) = missing_claim {
        return Err(format!(
            "0/1 nodes are available: persistentvolumeclaim \"{claim}\" not found. {NOT_HELPFUL}"
        ));
    }
    let selector_ok = spec
        .get("nodeSelector")
        .and_then(Value::as_object)
        .is_none_or(|sel| sel.iter().all(|(k, v)| node_labels.get(k) == Some(v)));
    let affinity_ok = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array)
        .is_none_or(|terms| terms.is_empty() || terms.iter().any(|t| term_matches(t, node_labels)));
    if !selector_ok || !affinity_ok {
        return Err(format!(
            "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. {NOT_HELPFUL}"
        ));
    }
    // kube-scheduler's TaintToleration filter (pkg/scheduler/framework/plugins/tainttoleration):
    // `node(s) had untolerated taint {key: value}`, UnschedulableAndUnresolvable, so preemption
    // is "not helpful".
    if let Some(t) = untolerated_taint(pod, taints) {
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("");
        return Err(format!(
            "0/1 nodes are available: 1 node(s) had untolerated taint {{{}: {}}}. {NOT_HELPFUL}",
            s("key"),
            s("value")
        ));
    }
    let short = shortfalls(&requests(pod), node, used);
    if short.is_empty() {
        return Ok(());
    }
    // As kube-scheduler's NodeResourcesFit: a request above the node's allocatable is
    // unresolvable (preemption cannot help); one that only lacks what other pods hold is not.
    let unresolvable = short.iter().any(|(_, q, _, cap)| q > cap);
    let mut reasons: Vec<String> = short
        .iter()
        .map(|(r, ..)| {
            if r == "pods" {
                "1 Too many pods".to_string()
            } else {
                format!("1 Insufficient {r}")
            }
        })
        .collect();
    reasons.sort();
    Err(format!(
        "0/1 nodes are available: {}. {}",
        reasons.join(", "),
        if unresolvable {
            NOT_HELPFUL
        } else {
            NO_VICTIMS
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels() -> Map<String, Value> {
        json!({"kubernetes.io/hostname": "sim-node-1", "kubernetes.io/os": "linux"})
            .as_object()
            .cloned()
            .expect("object")
    }

    fn node() -> Resources {
        parse_allocatable(&default_allocatable())
    }

    fn cpu_pod(cpu: &str) -> Value {
        json!({"spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}]}})
    }

    #[test]
    fn a_busy_node_is_resolvable_and_an_oversized_pod_is_not() {
        let used = Resources::from([("cpu".to_string(), 62.0), ("pods".to_string(), 3.0)]);
        let e = fit(&cpu_pod("4"), &labels(), &[], None, &node(), &used).expect_err("busy");
        assert_eq!(
            e,
            format!("0/1 nodes are available: 1 Insufficient cpu. {NO_VICTIMS}")
        );
        assert!(fit(&cpu_pod("2"), &labels(), &[], None, &node(), &used).is_ok());
        let e = fit(
            &cpu_pod("65"),
            &labels(),
            &[],
            None,
            &node(),
            &Resources::new(),
        )
        .expect_err("big");
        assert!(e.ends_with(NOT_HELPFUL), "{e}");
    }

    #[test]
    fn the_kubelet_rejects_bound_pods_that_do_not_fit() {
        let used = Resources::from([("cpu".to_string(), 62.0)]);
        let (reason, message) =
            admit_bound(&requests(&cpu_pod("4")), &node(), &used).expect_err("out of cpu");
        assert_eq!(reason, "OutOfcpu");
        assert_eq!(
            message,
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 4000, used: 62000, capacity: 64000"
        );
        assert!(admit_bound(&requests(&cpu_pod("2")), &node(), &used).is_ok());
    }

    #[test]
    fn gpu_requests_do_not_fit() {
        let pod =
            json!({"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}});
        let e = fit(&pod, &labels(), &[], None, &node(), &Resources::new()).expect_err("no gpu");
        assert!(
            e.starts_with("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
            "{e}"
        );
    }

    #[test]
    fn untolerated_no_schedule_and_no_execute_taints_keep_a_pod_off_the_node() {
        let taints = [
            json!({"key": "karpenter.sh/disruption", "value": "x", "effect": "PreferNoSchedule"}),
            json!({"key": "cache-not-ready", "value": "true", "effect": "NoSchedule"}),
        ];
        let pod =
            |tolerations: Value| json!({"spec": {"containers": [], "tolerations": tolerations}});
        let e = fit(
            &pod(json!([])),
            &labels(),
            &taints,
            None,
            &node(),
            &Resources::new(),
        )
        .expect_err("tainted");
        assert_eq!(
            e,
            format!(
                "0/1 nodes are available: 1 node(s) had untolerated taint {{cache-not-ready: true}}. {NOT_HELPFUL}"
            )
        );
        for tolerated in [
            json!([{"key": "cache-not-ready", "operator": "Exists"}]),
            json!([{"key": "cache-not-ready", "value": "true", "effect": "NoSchedule"}]),
            json!([{"operator": "Exists"}]),
        ] {
            assert!(
                fit(
                    &pod(tolerated.clone()),
                    &labels(),
                    &taints,
                    None,
                    &node(),
                    &Resources::new()
                )
                .is_ok(),
                "{tolerated}"
            );
        }
        for not_tolerated in [
            json!([{"key": "cache-not-ready", "value": "false"}]),
            json!([{"key": "cache-not-ready", "operator": "Exists", "effect": "NoExecute"}]),
            json!([{"key": "other", "operator": "Exists"}]),
        ] {
            assert!(
                fit(
                    &pod(not_tolerated.clone()),
                    &labels(),
                    &taints,
                    None,
                    &node(),
                    &Resources::new()
                )
                .is_err(),
                "{not_tolerated}"
            );
        }
        let no_execute = [json!({"key": "karpenter.sh/unregistered", "effect": "NoExecute"})];
        let e = fit(
            &pod(json!([])),
            &labels(),
            &no_execute,
            None,
            &node(),
            &Resources::new(),
        )
        .expect_err("NoExecute");
        assert!(
            e.contains("untolerated taint {karpenter.sh/unregistered: }"),
            "{e}"
        );
    }

    #[test]
    fn selectors_must_match_the_node() {
        let ok = json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "sim-node-1"}, "containers": []}});
        assert!(fit(&ok, &labels(), &[], None, &node(), &Resources::new()).is_ok());
        let bad = json!({"spec": {"nodeSelector": {"pool": "gpu"}, "containers": []}});
        assert!(
            fit(&bad, &labels(), &[], None, &node(), &Resources::new())
                .expect_err("mismatch")
                .contains("didn't match Pod's node affinity/selector")
        );
        let big = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "65"}}}]}});
        assert!(
            fit(&big, &labels(), &[], None, &node(), &Resources::new())
                .expect_err("too big")
                .contains("Insufficient cpu")
        );
    }
}
