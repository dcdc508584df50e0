//! Server-side printing: the `meta.k8s.io/v1` Table `kubectl get` asks for.

use serde_json::{Value, json};

use super::meta;
use super::resources::Resource;

/// A column definition; every cell the simulator prints is a string.
fn col(name: &str, priority: i32) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": "string", "format": format, "description": "", "priority": priority})
}

/// The list at `pointer` (empty when absent).
fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The STATUS kubectl shows for a pod.
pub(crate) fn pod_status_reason(pod: &Value) -> String {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut reason = pod
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .or(pod.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_string();
    let n_init = items(pod, "/spec/initContainers").len();
    for (i, s) in items(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
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
    for s in items(pod, "/status/containerStatuses") {
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
    let statuses = items(p, "/status/containerStatuses");
    let total = items(p, "/spec/containers").len();
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
        json!(meta::age(p)),
        json!(meta::str_at(p, &["status", "podIP"]).unwrap_or("<none>")),
        json!(meta::str_at(p, &["spec", "nodeName"]).unwrap_or("<none>")),
        json!("<none>"),
        json!("<none>"),
    ]
}

fn job_row(j: &Value) -> Vec<Value> {
    let status = if meta::condition_true(j, "Complete") {
        "Complete"
    } else if meta::condition_true(j, "Failed") {
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
        json!(meta::age(j)),
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
    let version = meta::str_at(n, &["status", "nodeInfo", "kubeletVersion"]).unwrap_or("");
    vec![
        json!(meta::name(n)),
        json!("Ready"),
        json!("<none>"),
        json!(meta::age(n)),
        json!(version),
    ]
}

fn namespace_row(n: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(n)),
        json!(meta::str_at(n, &["status", "phase"]).unwrap_or("Active")),
        json!(meta::age(n)),
    ]
}

fn default_row(o: &Value) -> Vec<Value> {
    vec![json!(meta::name(o)), json!(meta::age(o))]
}

/// How `kubectl get` prints a resource: its columns (name, priority: 1 shows with `-o wide`)
/// and the cells of one object's row.
struct Printer {
    columns: &'static [Column],
    row: RowFn,
}

/// A column's name and priority.
type Column = (&'static str, i32);
/// The cells of one object's row.
type RowFn = fn(&Value) -> Vec<Value>;

fn printer(res: &Resource) -> Printer {
    let (columns, row): (&[Column], RowFn) = match res.id {
        "pods" => (
            &[
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1),
            ],
            pod_row,
        ),
        "jobs.batch" => (
            &[
                ("Name", 0),
                ("Status", 0),
                ("Completions", 0),
                ("Duration", 0),
                ("Age", 0),
            ],
            job_row,
        ),
        "events" => (
            &[
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Message", 0),
            ],
            event_row,
        ),
        "nodes" => (
            &[
                ("Name", 0),
                ("Status", 0),
                ("Roles", 0),
                ("Age", 0),
                ("Version", 0),
            ],
            node_row,
        ),
        "namespaces" => (&[("Name", 0), ("Status", 0), ("Age", 0)], namespace_row),
        _ => (&[("Name", 0), ("Age", 0)], default_row),
    };
    Printer { columns, row }
}

/// A Table of `items` (full objects ride along in each row, as `includeObject=Object` would).
pub(crate) fn table(res: &Resource, items: &[Value], rv: Option<String>) -> Value {
    let printer = printer(res);
    let columns: Vec<Value> = printer
        .columns
        .iter()
        .map(|(name, priority)| col(name, *priority))
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut obj = o.clone();
            obj["apiVersion"] = json!(res.api_version());
            obj["kind"] = json!(res.kind);
            json!({"cells": (printer.row)(o), "object": obj})
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
