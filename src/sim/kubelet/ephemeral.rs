//! The `pods/ephemeralcontainers` subresource: validating additions to a pod's ephemeral containers.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::sim::admission;
use crate::sim::meta;
use crate::sim::status::{ApiError, Cause};

fn list(pod: &Value, key: &str) -> Vec<Value> {
    pod.pointer(&format!("/spec/{key}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The pod `old` with the ephemeral containers of `new`, if the change only adds containers.
pub fn admit(old: &Value, new: &Value) -> Result<Value, ApiError> {
    let before = list(old, "ephemeralContainers");
    let after = list(new, "ephemeralContainers");
    let mut causes = Vec::new();
    for b in &before {
        let name = b.get("name").and_then(Value::as_str).unwrap_or("");
        if !after.iter().any(|a| a == b) {
            causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                &format!("existing ephemeral containers \"{name}\" may not be removed or changed"),
            ));
        }
    }
    let mut names: HashSet<String> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| list(old, k))
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let mut spec = old.get("spec").cloned().unwrap_or(json!({}));
    spec["ephemeralContainers"] = json!(after);
    spec["containers"] = json!([]);
    spec["initContainers"] = json!([]);
    let mut scratch = Vec::new();
    admission::validate_pod_spec(&spec, "spec", &mut scratch);
    causes.extend(
        scratch
            .into_iter()
            .filter(|c| c.field.starts_with("spec.ephemeralContainers")),
    );
    for (i, a) in after.iter().enumerate() {
        let name = a.get("name").and_then(Value::as_str).unwrap_or("");
        if !before.iter().any(|b| b.get("name") == a.get("name")) && !names.insert(name.to_string())
        {
            causes.push(Cause::duplicate(
                format!("spec.ephemeralContainers[{i}].name"),
                name,
            ));
        }
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid("Pod", "", meta::name(old), causes));
    }
    let mut out = old.clone();
    let defaulted: Vec<Value> = after
        .into_iter()
        .map(|mut c| {
            if let Some(m) = c.as_object_mut() {
                m.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                m.entry("terminationMessagePolicy").or_insert(json!("File"));
                m.entry("imagePullPolicy").or_insert(json!("IfNotPresent"));
                m.entry("resources").or_insert(json!({}));
            }
            c
        })
        .collect();
    out["spec"]["ephemeralContainers"] = json!(defaulted);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_but_never_changes() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let new = json!({"spec": {"ephemeralContainers": [{"name": "step", "image": "alpine"}]}});
        let added = admit(&old, &new).expect("added");
        assert_eq!(added["spec"]["ephemeralContainers"][0]["name"], "step");
        let changed =
            json!({"spec": {"ephemeralContainers": [{"name": "step", "image": "other"}]}});
        assert_eq!(admit(&added, &changed).expect_err("changed").code, 422);
        let clash = json!({"spec": {"ephemeralContainers": [{"name": "c", "image": "alpine"}]}});
        assert!(
            admit(&old, &clash)
                .expect_err("dup")
                .message
                .contains("Duplicate value")
        );
    }
}
