//! The `pods/ephemeralcontainers` subresource: validating additions to a pod's ephemeral containers.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::sim::admission;
use crate::sim::meta;
use crate::sim::status::{ApiError, Cause};

/// Fields an ephemeral container may set (the API server's allow-list); sub-paths are refused too.
const ALLOWED: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "env",
    "envFrom",
    "volumeMounts",
    "volumeDevices",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
    "targetContainerName",
];

/// Forbidden fields whose Go type is a struct (not a pointer): set only when a member is.
/// `ResourceRequirements`' members are maps and a slice, set when not null.
const STRUCT_FIELDS: &[&str] = &["resources"];

/// Whether a forbidden field is "set" in the API server's sense: its decoded Go value differs
/// from the zero value (`validateFieldAllowList`, `pkg/apis/core/validation/validation.go`).
/// `null` decodes to the zero value; `[]` and `{}` decode to non-nil slices, maps and pointers,
/// which are set, except for a struct-typed field, whose `{}` is its zero value.
fn is_set(key: &str, value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Object(members) if STRUCT_FIELDS.contains(&key) => {
            members.values().any(|v| !v.is_null())
        }
        // Non-pointer scalars (none are forbidden today; a future field would follow Go's zeros).
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty() || POINTER_SCALARS.contains(&key),
        _ => true,
    }
}

/// Forbidden scalar fields that are pointers in the Go type, so even `""` is set.
const POINTER_SCALARS: &[&str] = &["restartPolicy"];

/// Causes for fields an ephemeral container may not have, as the API server words them.
fn forbidden_fields(c: &Value, i: usize, causes: &mut Vec<Cause>) {
    let Some(obj) = c.as_object() else { return };
    for (key, _) in obj
        .iter()
        .filter(|(k, v)| !ALLOWED.contains(&k.as_str()) && is_set(k, v))
    {
        causes.push(Cause::forbidden(
            format!("spec.ephemeralContainers[{i}].{key}"),
            "cannot be set for an Ephemeral Container",
        ));
    }
    for (j, m) in list_of(c, "volumeMounts").iter().enumerate() {
        for f in ["subPath", "subPathExpr"] {
            if m.get(f)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
            {
                causes.push(Cause::forbidden(
                    format!("spec.ephemeralContainers[{i}].volumeMounts[{j}].{f}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
    }
}

fn list_of(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn list(pod: &Value, key: &str) -> Vec<Value> {
    pod.pointer(&format!("/spec/{key}"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The pod `old` with the ephemeral containers of `new`, if the change only adds containers.
pub(crate) fn admit(old: &Value, new: &Value) -> Result<Value, ApiError> {
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
        if !before.iter().any(|b| b.get("name") == a.get("name")) {
            forbidden_fields(a, i, &mut causes);
        }
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

    #[test]
    fn forbidden_fields_follow_the_zero_value_rule() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let with = |extra: Value| {
            let mut c = json!({"name": "step", "image": "alpine"});
            if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            admit(&old, &json!({"spec": {"ephemeralContainers": [c]}}))
        };
        // The API's zero values: accepted.
        for zero in [
            json!({"resources": {}}),
            json!({"resources": null}),
            json!({"resources": {"limits": null, "requests": null}}),
            json!({"ports": null}),
            json!({"lifecycle": null}),
            json!({"livenessProbe": null, "readinessProbe": null, "startupProbe": null}),
        ] {
            assert!(with(zero.clone()).is_ok(), "{zero} is the zero value");
        }
        // Anything else is set, even empty: refused, naming the field.
        for (set, field) in [
            (json!({"resources": {"limits": {}}}), "resources"),
            (json!({"resources": {"claims": []}}), "resources"),
            (json!({"ports": []}), "ports"),
            (json!({"lifecycle": {}}), "lifecycle"),
            (json!({"startupProbe": {}}), "startupProbe"),
            (json!({"restartPolicy": ""}), "restartPolicy"),
            (json!({"resizePolicy": []}), "resizePolicy"),
        ] {
            let e = with(set.clone()).expect_err("set");
            assert!(
                format!("{e:?}").contains(&format!("spec.ephemeralContainers[0].{field}")),
                "{set}: {e:?}"
            );
        }
    }

    #[test]
    fn fields_outside_the_allow_list_and_sub_paths_are_forbidden() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "w", "emptyDir": {}}]}});
        let new = json!({"spec": {"ephemeralContainers": [{"name": "step", "image": "alpine",
            "resources": {"limits": {"memory": "1Gi"}},
            "volumeMounts": [{"name": "w", "mountPath": "/w", "subPath": "x"}]}]}});
        let e = admit(&old, &new).expect_err("refused");
        let text = format!("{e:?}");
        assert!(
            text.contains("spec.ephemeralContainers[0].resources"),
            "{text}"
        );
        assert!(
            text.contains("spec.ephemeralContainers[0].volumeMounts[0].subPath"),
            "{text}"
        );
        assert!(
            text.contains("cannot be set for an Ephemeral Container"),
            "{text}"
        );
    }
}
