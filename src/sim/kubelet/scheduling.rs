//! The scheduler's decision for the one sim node: node selectors, affinity, resources, claims.

use serde_json::{Map, Value};

use crate::sim::quantity;

const NOT_HELPFUL: &str =
    "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";

/// What the sim node offers: cpu 64, memory 256Gi, 110 pods, no extended resources (no GPU).
fn allocatable(resource: &str) -> Option<f64> {
    match resource {
        "cpu" => Some(64.0),
        "memory" => quantity::parse("256Gi"),
        "pods" => Some(110.0),
        "ephemeral-storage" => quantity::parse("1Ti"),
        _ => None,
    }
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

/// The pod's effective requests: the larger of the sum over containers and each init container.
fn requests(spec: &Value) -> Vec<(String, f64)> {
    let mut total: Vec<(String, f64)> = Vec::new();
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
    for c in spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(&mut total, c, false);
    }
    for c in spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(&mut total, c, true);
    }
    total
}

/// `Ok` when the pod fits the node; otherwise the FailedScheduling message.
pub fn fit(
    pod: &Value,
    node_labels: &Map<String, Value>,
    missing_claim: Option<&str>,
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
    let mut short: Vec<String> = requests(&spec)
        .into_iter()
        .filter(|(r, q)| *q > 0.0 && allocatable(r).is_none_or(|a| *q > a))
        .map(|(r, _)| format!("1 Insufficient {r}"))
        .collect();
    if !short.is_empty() {
        short.sort();
        return Err(format!(
            "0/1 nodes are available: {}. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
            short.join(", ")
        ));
    }
    Ok(())
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

    #[test]
    fn gpu_requests_do_not_fit() {
        let pod =
            json!({"spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}});
        let e = fit(&pod, &labels(), None).expect_err("no gpu");
        assert!(
            e.starts_with("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
            "{e}"
        );
    }

    #[test]
    fn selectors_must_match_the_node() {
        let ok = json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "sim-node-1"}, "containers": []}});
        assert!(fit(&ok, &labels(), None).is_ok());
        let bad = json!({"spec": {"nodeSelector": {"pool": "gpu"}, "containers": []}});
        assert!(
            fit(&bad, &labels(), None)
                .expect_err("mismatch")
                .contains("didn't match Pod's node affinity/selector")
        );
        let big = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "65"}}}]}});
        assert!(
            fit(&big, &labels(), None)
                .expect_err("too big")
                .contains("Insufficient cpu")
        );
    }
}
