//! Server-side printing: the `meta.k8s.io/v1` Table `kubectl get` asks for.

use serde_json::{Value, json};

use super::meta;
use super::resources::Resource;

fn col(name: &str, ty: &str, priority: i32) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

/// The STATUS kubectl shows for a pod.
pub fn pod_status_reason(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = pod
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .or(pod.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_string();
    let inits = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let n_init = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    for (i, s) in inits.iter().enumerate() {
        if s.pointer("/state/terminated/exitCode")
            .and_then(Value::as_i64)
            == Some(0)
        {
            continue;
        }
        if let Some(r) = s
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| *r != "PodInitializing")
        {
            return format!("Init:{r}");
        }
        if let Some(t) = s.pointer("/state/terminated") {
            return format!(
                "Init:{}",
                t.get("reason").and_then(Value::as_str).unwrap_or("Error")
            );
        }
        return format!("Init:{i}/{n_init}");
    }
    for s in pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        if let Some(r) = s.pointer("/state/waiting/reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(r) = s
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
            && reason != "Running"
        {
            reason = r.to_string();
        }
    }
    reason
}

fn pod_row(p: &Value) -> Vec<Value> {
    let statuses = p
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let total = p
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    let ready = statuses
        .iter()
        .filter(|s| s["ready"] == json!(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s["restartCount"].as_i64())
        .sum();
    vec![
        json!(meta::name(p)),
        json!(format!("{ready}/{total}")),
        json!(pod_status_reason(p)),
        json!(restarts.to_string()),
        json!(meta::human_age(
            meta::str_at(p, &["metadata", "creationTimestamp"]).unwrap_or("")
        )),
        json!(meta::str_at(p, &["status", "podIP"]).unwrap_or("<none>")),
        json!(meta::str_at(p, &["spec", "nodeName"]).unwrap_or("<none>")),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn job_row(j: &Value) -> Vec<Value> {
    let conds = j
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else {
        "Running"
    };
    let succeeded = j
        .pointer("/status/succeeded")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let completions = j
        .pointer("/spec/completions")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let age = meta::human_age(meta::str_at(j, &["metadata", "creationTimestamp"]).unwrap_or(""));
    // DURATION runs from startTime to completionTime, or to now while the job runs.
    let duration = match meta::str_at(j, &["status", "startTime"]) {
        Some(start) => meta::human_duration(start, meta::str_at(j, &["status", "completionTime"])),
        None => String::new(),
    };
    vec![
        json!(meta::name(j)),
        json!(status),
        json!(format!("{succeeded}/{completions}")),
        json!(duration),
        json!(age),
    ]
}

fn event_row(e: &Value) -> Vec<Value> {
    let last = meta::str_at(e, &["lastTimestamp"])
        .or(meta::str_at(e, &["metadata", "creationTimestamp"]))
        .unwrap_or("");
    let kind = meta::str_at(e, &["involvedObject", "kind"])
        .unwrap_or("")
        .to_lowercase();
    let object = format!(
        "{kind}/{}",
        meta::str_at(e, &["involvedObject", "name"]).unwrap_or("")
    );
    vec![
        json!(meta::human_age(last)),
        json!(meta::str_at(e, &["type"]).unwrap_or("")),
        json!(meta::str_at(e, &["reason"]).unwrap_or("")),
        json!(object),
        json!(meta::str_at(e, &["message"]).unwrap_or("")),
    ]
}

fn node_row(n: &Value) -> Vec<Value> {
    let age = meta::human_age(meta::str_at(n, &["metadata", "creationTimestamp"]).unwrap_or(""));
    let version = meta::str_at(n, &["status", "nodeInfo", "kubeletVersion"]).unwrap_or("");
    vec![
        json!(meta::name(n)),
        json!("Ready"),
        json!("<none>"),
        json!(age),
        json!(version),
    ]
}

fn namespace_row(n: &Value) -> Vec<Value> {
    let age = meta::human_age(meta::str_at(n, &["metadata", "creationTimestamp"]).unwrap_or(""));
    vec![
        json!(meta::name(n)),
        json!(meta::str_at(n, &["status", "phase"]).unwrap_or("Active")),
        json!(age),
    ]
}

/// A Table of `items` (full objects ride along in each row, as `includeObject=Object` would).
pub fn table(res: &Resource, items: &[Value], rv: Option<String>) -> Value {
    type RowFn = fn(&Value) -> Vec<Value>;
    let (columns, row_fn): (Vec<Value>, RowFn) = match res.id {
        "pods" => (
            vec![
                col("Name", "string", 0),
                col("Ready", "string", 0),
                col("Status", "string", 0),
                col("Restarts", "string", 0),
                col("Age", "string", 0),
                col("IP", "string", 1),
                col("Node", "string", 1),
                col("Nominated Node", "string", 1),
                col("Readiness Gates", "string", 1),
            ],
            pod_row,
        ),
        "jobs.batch" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Completions", "string", 0),
                col("Duration", "string", 0),
                col("Age", "string", 0),
            ],
            job_row,
        ),
        "events" => (
            vec![
                col("Last Seen", "string", 0),
                col("Type", "string", 0),
                col("Reason", "string", 0),
                col("Object", "string", 0),
                col("Message", "string", 0),
            ],
            event_row,
        ),
        "nodes" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Roles", "string", 0),
                col("Age", "string", 0),
                col("Version", "string", 0),
            ],
            node_row,
        ),
        "namespaces" => (
            vec![
                col("Name", "string", 0),
                col("Status", "string", 0),
                col("Age", "string", 0),
            ],
            namespace_row,
        ),
        _ => (
            vec![col("Name", "string", 0), col("Age", "string", 0)],
            |o| {
                vec![
                    json!(meta::name(o)),
                    json!(meta::human_age(
                        meta::str_at(o, &["metadata", "creationTimestamp"]).unwrap_or("")
                    )),
                ]
            },
        ),
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut obj = o.clone();
            obj["apiVersion"] = json!(res.api_version());
            obj["kind"] = json!(res.kind);
            json!({"cells": row_fn(o), "object": obj})
        })
        .collect();
    let mut md = json!({});
    if let Some(rv) = rv {
        md["resourceVersion"] = json!(rv);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": md, "columnDefinitions": columns, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_status_shows_waiting_reasons() {
        let p = json!({"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}});
        assert_eq!(pod_status_reason(&p), "ImagePullBackOff");
        let p = json!({"status": {"phase": "Succeeded", "containerStatuses": [{"state": {"terminated": {"reason": "Completed"}}}]}});
        assert_eq!(pod_status_reason(&p), "Completed");
        let p = json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status_reason(&p), "Terminating");
    }
}
