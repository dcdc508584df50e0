//! PATCH bodies: JSON patch, JSON merge patch, and strategic merge patch as far as our kinds need it.

use serde_json::{Map, Value};

use super::status::ApiError;

/// Applies a PATCH body of the given content type to `target`.
pub(crate) fn apply(target: &mut Value, content_type: &str, body: &[u8]) -> Result<(), ApiError> {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let parse = |b: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice(b)
            .or_else(|_| serde_yaml_ng::from_slice::<Value>(b))
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
    };
    match ct {
        "application/json-patch+json" => {
            let p: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            json_patch::patch(target, &p).map_err(|e| {
                ApiError::internal(
                    500,
                    &format!("the server rejected our request due to an error in our request: {e}"),
                )
            })
        }
        "application/merge-patch+json" => {
            merge(target, &parse(body)?);
            Ok(())
        }
        // Server-side apply is served as a strategic merge of the applied configuration.
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            strategic(target, &parse(body)?);
            Ok(())
        }
        other => Err(ApiError::unsupported_media(other)),
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    let t = object_mut(target);
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of list items for the fields the hook's objects use.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "conditions" => Some("type"),
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        "ports" => Some("containerPort"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Strategic merge patch, as far as Pod/Job/Secret objects need it.
pub(crate) fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = without_directives(patch);
        return;
    }
    let t = object_mut(target);
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (merge_key(k), v, t.get_mut(k)) {
            (Some(key), Value::Array(items), Some(Value::Array(existing))) => {
                merge_list(existing, items, key)
            }
            (_, Value::Object(_), Some(slot)) => strategic(slot, v),
            _ => {
                t.insert(k.clone(), without_directives(v));
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    let deletes = |i: &&Value| i.get("$patch").and_then(Value::as_str) == Some("delete");
    let deleted: Vec<&Value> = items
        .iter()
        .filter(deletes)
        .filter_map(|i| i.get(key))
        .collect();
    // The server's list after deletions, before additions: the order server-only items keep.
    let server_order: Vec<Value> = existing
        .iter()
        .filter_map(|e| e.get(key))
        .filter(|k| !deleted.contains(k))
        .cloned()
        .collect();
    let patched: Vec<&Value> = items
        .iter()
        .filter(|i| !deletes(i))
        .filter_map(|i| i.get(key))
        .collect();
    merge_items(existing, items, key);
    order_like_the_api_server(existing, &patched, &server_order, key);
}

/// Orders a merged list as apimachinery's strategic merge does (`normalizeElementOrder`): the
/// patch's items in the patch's order, the server's other items interleaved before the first
/// patch item that the server list has after them (a new item goes before them all).
fn order_like_the_api_server(
    merged: &mut Vec<Value>,
    patched: &[&Value],
    server_order: &[Value],
    key: &str,
) {
    let patch_index = |v: &Value| {
        v.get(key)
            .and_then(|k| patched.iter().position(|p| *p == k))
    };
    let server_index = |v: &Value| {
        v.get(key)
            .and_then(|k| server_order.iter().position(|s| s == k))
    };
    let (mut from_patch, server_only): (Vec<Value>, Vec<Value>) =
        merged.drain(..).partition(|v| patch_index(v).is_some());
    from_patch.sort_by_key(|v| patch_index(v));
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        from_patch.into_iter().peekable(),
    );
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (server_index(l), server_index(r)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        merged.extend(next);
    }
}

/// Deletes, merges and appends `items` by `key`, in the patch's order.
fn merge_items(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key).cloned();
        let pos = id
            .as_ref()
            .and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut existing[i], item),
            (None, false) => existing.push(without_directives(item)),
        }
    }
}

/// `target` as an object to merge into; a patch object replaces anything else.
fn object_mut(target: &mut Value) -> &mut Map<String, Value> {
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    target
        .as_object_mut()
        .expect("target was just made an object")
}

/// A copy of a patch value without its `$patch`/`$setElementOrder` directives.
fn without_directives(v: &Value) -> Value {
    let mut clean = v.clone();
    strip_directives(&mut clean);
    clean
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        apply(
            &mut t,
            "application/merge-patch+json",
            br#"{"metadata":{"labels":{"a":null,"c":"3"}}}"#,
        )
        .expect("patch");
        assert_eq!(t, json!({"metadata": {"labels": {"b": "2", "c": "3"}}}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let p = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}], "$setElementOrder/containers": []}});
        strategic(&mut t, &p);
        assert_eq!(t["spec"]["containers"][1]["image"], "z");
        assert_eq!(t["spec"]["containers"][2]["name"], "c");
        assert_eq!(t["spec"]["containers"][0]["image"], "x");
    }

    #[test]
    fn strategic_merge_orders_lists_as_the_api_server() {
        let names = |v: &Value| -> Vec<String> {
            v["spec"]["ephemeralContainers"]
                .as_array()
                .expect("a list")
                .iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let mut pod = json!({"spec": {"ephemeralContainers": [{"name": "a"}, {"name": "b"}]}});
        // A new item goes first (kube-apiserver answered spec.ephemeralContainers[0] for it).
        apply(
            &mut pod,
            "application/strategic-merge-patch+json",
            br#"{"spec": {"ephemeralContainers": [{"name": "new"}]}}"#,
        )
        .expect("patched");
        assert_eq!(names(&pod), ["new", "a", "b"]);
        // Patched items keep the patch's order; server-only ones stay before later patch items.
        apply(
            &mut pod,
            "application/strategic-merge-patch+json",
            br#"{"spec": {"ephemeralContainers": [{"name": "b"}, {"name": "x"}, {"name": "new", "$patch": "delete"}]}}"#,
        )
        .expect("patched");
        assert_eq!(names(&pod), ["a", "b", "x"]);
    }

    #[test]
    fn json_patch_applies_operations() {
        let mut t = json!({"metadata": {"labels": {"a": "1"}}});
        apply(
            &mut t,
            "application/json-patch+json",
            br#"[{"op":"add","path":"/metadata/labels/b","value":"2"}]"#,
        )
        .expect("patch");
        assert_eq!(t["metadata"]["labels"]["b"], "2");
    }
}
