//! Small accessors for object metadata held as JSON, timestamps and generated identifiers.

use rand::Rng;
use serde_json::{Map, Value, json};

pub(crate) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

pub(crate) fn name(v: &Value) -> &str {
    str_at(v, &["metadata", "name"]).unwrap_or("")
}

pub(crate) fn namespace(v: &Value) -> &str {
    str_at(v, &["metadata", "namespace"]).unwrap_or("")
}

pub(crate) fn uid(v: &Value) -> &str {
    str_at(v, &["metadata", "uid"]).unwrap_or("")
}

/// `metadata` as a mutable map, created when absent or not an object.
pub(crate) fn metadata_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Label map (empty when absent).
/// Resources whose `metadata.generation` the API server keeps (1 on create, +1 per spec change).
pub(crate) fn has_generation(resource_id: &str) -> bool {
    matches!(resource_id, "pods" | "jobs.batch")
}

/// Adds one to `metadata.generation` (from 1 when absent).
pub(crate) fn bump_generation(m: &mut Map<String, Value>) {
    let next = m.get("generation").and_then(Value::as_i64).unwrap_or(0) + 1;
    m.insert("generation".into(), json!(next));
}

pub(crate) fn labels(v: &Value) -> Map<String, Value> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Whether the object's `status.conditions` has `kind` with status `True`.
pub(crate) fn condition_true(v: &Value, kind: &str) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

/// The object's age since `metadata.creationTimestamp`, as kubectl's AGE column prints it.
pub(crate) fn age(v: &Value) -> String {
    human_age(str_at(v, &["metadata", "creationTimestamp"]).unwrap_or(""))
}

/// RFC 3339 timestamp with second precision (metav1.Time).
pub(crate) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// RFC 3339 timestamp `secs` seconds from now.
pub(crate) fn in_seconds(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A random UUID v4 string.
pub(crate) fn new_uid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The 5-character suffix kube-apiserver appends to `generateName`.
pub(crate) fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Human age as kubectl prints it: `5s`, `3m12s`, `15m`, `2h5m`, `4d`.
pub(crate) fn human_age(since: &str) -> String {
    human_duration(since, None)
}

/// The time from `start` to `end` (now when `None`), printed like [`human_age`].
pub(crate) fn human_duration(start: &str, end: Option<&str>) -> String {
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let Some(t) = parse(start) else {
        return "<unknown>".to_string();
    };
    let until = end.and_then(parse).unwrap_or_else(chrono::Utc::now);
    let secs = (until - t).num_seconds().max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if d < 2 {
        format!("{h}h")
    } else {
        format!("{d}d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn suffixes_use_the_api_server_alphabet() {
        let s = random_suffix(5);
        assert_eq!(s.len(), 5);
        assert!(s.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
