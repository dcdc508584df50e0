//! Events as the scheduler, kubelet and job controller record them, in core/v1 and events.k8s.io/v1 shapes.

use serde_json::{Value, json};

use super::store::{Key, Store};
use super::{NODE_NAME, meta};

/// Who records an event.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    Scheduler,
    Kubelet,
    JobController,
}

impl Source {
    fn component(self) -> &'static str {
        match self {
            Source::Scheduler => "default-scheduler",
            Source::Kubelet => "kubelet",
            Source::JobController => "job-controller",
        }
    }
}

/// Records (or, when the same one exists, counts again) an event about `involved`.
pub(crate) fn record(
    store: &Store,
    involved: &Value,
    source: Source,
    warning: bool,
    reason: &str,
    message: &str,
    field_path: Option<&str>,
) {
    let ns = meta::namespace(involved).to_string();
    let same = |e: &Value| {
        e.pointer("/involvedObject/uid").and_then(Value::as_str) == Some(meta::uid(involved))
            && e["reason"] == reason
            && e["message"] == message
            && e.pointer("/involvedObject/fieldPath")
                .and_then(Value::as_str)
                == field_path
    };
    let now = meta::now();
    let (existing, _) = store.list("events", Some(&ns));
    if let Some(e) = existing.iter().find(|e| same(e)) {
        let _ = store.update::<()>(&Key::new("events", &ns, meta::name(e)), None, |e| {
            e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
            e["lastTimestamp"] = json!(now);
            Ok(())
        });
        return;
    }
    // Real event names end in the hex creation time, which keeps a pod's events in order.
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let name = format!("{}.{nanos:x}", meta::name(involved));
    let key = Key::new("events", &ns, &name);
    let mut obj_ref = json!({
        "kind": involved.get("kind").cloned().unwrap_or(json!("Pod")),
        "namespace": ns,
        "name": meta::name(involved),
        "uid": meta::uid(involved),
        "apiVersion": involved.get("apiVersion").cloned().unwrap_or(json!("v1")),
        "resourceVersion": meta::str_at(involved, &["metadata", "resourceVersion"]).unwrap_or(""),
    });
    if let Some(fp) = field_path {
        obj_ref["fieldPath"] = json!(fp);
    }
    let host = matches!(source, Source::Kubelet).then_some(NODE_NAME);
    let mut src = json!({"component": source.component()});
    if let Some(h) = host {
        src["host"] = json!(h);
    }
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": obj_ref,
        "reason": reason,
        "message": message,
        "source": src,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "type": if warning { "Warning" } else { "Normal" },
        "eventTime": null,
        "reportingComponent": source.component(),
        "reportingInstance": host.unwrap_or(""),
    });
    if let Err(e) = store.create(key, event) {
        tracing::debug!(error = %e, "event not recorded");
    }
}

/// The events.k8s.io/v1 view of a core/v1 Event.
pub(crate) fn to_events_v1(e: &Value) -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": e.get("metadata").cloned().unwrap_or(json!({})),
        "eventTime": e.get("eventTime").filter(|t| !t.is_null()).cloned().unwrap_or_else(|| json!(e.get("firstTimestamp").and_then(Value::as_str).map(|t| t.replace('Z', ".000000Z")))),
        "reportingController": e.get("reportingComponent").cloned().unwrap_or(json!("")),
        "reportingInstance": e.get("reportingInstance").cloned().unwrap_or(json!("")),
        "action": e.get("reason").cloned().unwrap_or(json!("")),
        "reason": e.get("reason").cloned().unwrap_or(json!("")),
        "regarding": e.get("involvedObject").cloned().unwrap_or(json!({})),
        "note": e.get("message").cloned().unwrap_or(json!("")),
        "type": e.get("type").cloned().unwrap_or(json!("Normal")),
        "deprecatedSource": e.get("source").cloned().unwrap_or(json!({})),
        "deprecatedFirstTimestamp": e.get("firstTimestamp").cloned().unwrap_or(Value::Null),
        "deprecatedLastTimestamp": e.get("lastTimestamp").cloned().unwrap_or(Value::Null),
        "deprecatedCount": e.get("count").cloned().unwrap_or(json!(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_events_are_counted() {
        let store = Store::new();
        let pod =
            json!({"kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u"}});
        for _ in 0..2 {
            record(
                &store,
                &pod,
                Source::Kubelet,
                true,
                "BackOff",
                "Back-off pulling image \"x\"",
                None,
            );
        }
        let (events, _) = store.list("events", Some("default"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["count"], 2);
        assert_eq!(
            to_events_v1(&events[0])["note"],
            "Back-off pulling image \"x\""
        );
    }
}
