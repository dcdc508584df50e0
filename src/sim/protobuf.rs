//! Decoding the Kubernetes protobuf bodies kubectl's typed clients send, for the few kinds it creates:
//! its generators' (`create secret|configmap|namespace|serviceaccount`) and `auth can-i`'s reviews.

use base64::Engine;
use serde_json::{Map, Value, json};

/// The 4-byte prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

/// One field of a protobuf message: its number and its payload.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Skipped,
}

fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The fields of a message, in order; `None` when the bytes are not a protobuf message.
fn fields(buf: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(buf, &mut pos)?),
            1 => {
                pos = pos.checked_add(8).filter(|p| *p <= buf.len())?;
                Field::Skipped
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).ok()?;
                let end = pos.checked_add(len).filter(|e| *e <= buf.len())?;
                let bytes = &buf[pos..end];
                pos = end;
                Field::Bytes(bytes)
            }
            5 => {
                pos = pos.checked_add(4).filter(|p| *p <= buf.len())?;
                Field::Skipped
            }
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

fn text(b: &[u8]) -> Value {
    json!(String::from_utf8_lossy(b))
}

/// A `map<string, string>` (or, with `base64`, `map<string, bytes>`) entry added to `map`.
fn map_entry(entry: &[u8], map: &mut Map<String, Value>, base64: bool) -> Option<()> {
    let (mut key, mut value) = (String::new(), Vec::new());
    for (n, f) in fields(entry)? {
        match (n, f) {
            (1, Field::Bytes(b)) => key = String::from_utf8_lossy(b).into_owned(),
            (2, Field::Bytes(b)) => value = b.to_vec(),
            _ => {}
        }
    }
    let v = if base64 {
        json!(base64::engine::general_purpose::STANDARD.encode(&value))
    } else {
        text(&value)
    };
    map.insert(key, v);
    Some(())
}

/// A message whose fields of interest are all strings, as JSON: `names` maps field numbers to
/// JSON keys; absent fields stay absent.
fn string_fields(buf: &[u8], names: &[(u64, &str)]) -> Option<Value> {
    let mut m = Map::new();
    for (n, f) in fields(buf)? {
        if let (Some((_, key)), Field::Bytes(b)) = (names.iter().find(|(num, _)| *num == n), f) {
            m.insert((*key).to_string(), text(b));
        }
    }
    Some(Value::Object(m))
}

/// authorization/v1 ResourceAttributes' fields (the selectors, 8 and 9, are not decoded: the
/// simulator's RBAC does not look at them).
const RESOURCE_ATTRIBUTES: &[(u64, &str)] = &[
    (1, "namespace"),
    (2, "verb"),
    (3, "group"),
    (4, "version"),
    (5, "resource"),
    (6, "subresource"),
    (7, "name"),
];

/// authorization/v1 NonResourceAttributes' fields.
const NON_RESOURCE_ATTRIBUTES: &[(u64, &str)] = &[(1, "path"), (2, "verb")];

/// SelfSubjectAccessReviewSpec: resourceAttributes (1) or nonResourceAttributes (2).
fn access_review_spec(buf: &[u8]) -> Option<Value> {
    let mut spec = Map::new();
    for (n, f) in fields(buf)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                spec.insert(
                    "resourceAttributes".into(),
                    string_fields(b, RESOURCE_ATTRIBUTES)?,
                );
            }
            (2, Field::Bytes(b)) => {
                spec.insert(
                    "nonResourceAttributes".into(),
                    string_fields(b, NON_RESOURCE_ATTRIBUTES)?,
                );
            }
            _ => {}
        }
    }
    Some(Value::Object(spec))
}

/// ObjectMeta: name, generateName, namespace, labels, annotations.
fn object_meta(buf: &[u8]) -> Option<Value> {
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for (n, f) in fields(buf)? {
        match (n, f) {
            (1, Field::Bytes(b)) => {
                m.insert("name".into(), text(b));
            }
            (2, Field::Bytes(b)) => {
                m.insert("generateName".into(), text(b));
            }
            (3, Field::Bytes(b)) => {
                m.insert("namespace".into(), text(b));
            }
            (11, Field::Bytes(b)) => map_entry(b, &mut labels, false)?,
            (12, Field::Bytes(b)) => map_entry(b, &mut annotations, false)?,
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    Some(Value::Object(m))
}

/// Decodes a protobuf body of one of the kinds kubectl creates with its typed clients (Secret,
/// ConfigMap, Namespace, ServiceAccount, SelfSubjectAccessReview, SelfSubjectRulesReview) into
/// its JSON form; `None` for anything else.
pub(crate) fn decode(body: &[u8]) -> Option<Value> {
    let envelope = fields(body.strip_prefix(MAGIC)?)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in envelope {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    match (tn, tf) {
                        (1, Field::Bytes(b)) => {
                            api_version = String::from_utf8_lossy(b).into_owned()
                        }
                        (2, Field::Bytes(b)) => kind = String::from_utf8_lossy(b).into_owned(),
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    let (mut data, mut binary, mut strings) = (Map::new(), Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(b)) => obj["metadata"] = object_meta(b)?,
            ("Secret", 2, Field::Bytes(b)) => map_entry(b, &mut data, true)?,
            ("Secret", 3, Field::Bytes(b)) => obj["type"] = text(b),
            ("Secret", 4, Field::Bytes(b)) => map_entry(b, &mut strings, false)?,
            ("Secret", 5, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
            ("ConfigMap", 2, Field::Bytes(b)) => map_entry(b, &mut data, false)?,
            ("ConfigMap", 3, Field::Bytes(b)) => map_entry(b, &mut binary, true)?,
            ("ConfigMap", 4, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
            ("SelfSubjectAccessReview", 2, Field::Bytes(b)) => obj["spec"] = access_review_spec(b)?,
            ("SelfSubjectRulesReview", 2, Field::Bytes(b)) => {
                obj["spec"] = string_fields(b, &[(1, "namespace")])?
            }
            _ => {}
        }
    }
    if !matches!(
        kind.as_str(),
        "Secret"
            | "ConfigMap"
            | "Namespace"
            | "ServiceAccount"
            | "SelfSubjectAccessReview"
            | "SelfSubjectRulesReview"
    ) {
        return None;
    }
    for (field, map) in [
        ("data", data),
        ("binaryData", binary),
        ("stringData", strings),
    ] {
        if !map.is_empty() {
            obj[field] = Value::Object(map);
        }
    }
    Some(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_field(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        [bytes_field(1, k.as_bytes()), bytes_field(2, v)].concat()
    }

    #[test]
    fn decodes_a_secret_like_kubectl_create_secret_sends() {
        let meta = [
            bytes_field(1, b"creds"),
            bytes_field(3, b"default"),
            bytes_field(11, &entry("app", b"x")),
        ]
        .concat();
        let raw = [
            bytes_field(1, &meta),
            bytes_field(2, &entry("token", b"s3cret")),
            bytes_field(3, b"Opaque"),
        ]
        .concat();
        let obj = decode(&envelope(b"v1", b"Secret", &raw)).expect("decodes");
        assert_eq!(obj["kind"], "Secret");
        assert_eq!(obj["metadata"]["name"], "creds");
        assert_eq!(obj["metadata"]["labels"]["app"], "x");
        assert_eq!(obj["data"]["token"], "czNjcmV0");
        assert_eq!(obj["type"], "Opaque");
    }

    /// The envelope kubectl wraps a message in: magic, TypeMeta, raw bytes.
    fn envelope(api_version: &[u8], kind: &[u8], raw: &[u8]) -> Vec<u8> {
        let type_meta = [bytes_field(1, api_version), bytes_field(2, kind)].concat();
        [
            MAGIC.to_vec(),
            bytes_field(1, &type_meta),
            bytes_field(2, raw),
        ]
        .concat()
    }

    #[test]
    fn decodes_the_access_review_kubectl_auth_can_i_sends() {
        let attrs = [
            bytes_field(1, b"default"),
            bytes_field(2, b"create"),
            bytes_field(5, b"pods"),
            bytes_field(6, b"exec"),
        ]
        .concat();
        let spec = bytes_field(1, &attrs);
        let body = envelope(
            b"authorization.k8s.io/v1",
            b"SelfSubjectAccessReview",
            &[bytes_field(1, &[]), bytes_field(2, &spec)].concat(),
        );
        let obj = decode(&body).expect("decodes");
        assert_eq!(
            obj["spec"],
            json!({"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods", "subresource": "exec"}})
        );
        let non_resource = bytes_field(
            2,
            &[bytes_field(1, b"/api"), bytes_field(2, b"get")].concat(),
        );
        let body = envelope(
            b"authorization.k8s.io/v1",
            b"SelfSubjectAccessReview",
            &bytes_field(2, &non_resource),
        );
        assert_eq!(
            decode(&body).expect("decodes")["spec"],
            json!({"nonResourceAttributes": {"path": "/api", "verb": "get"}})
        );
    }

    #[test]
    fn decodes_the_rules_review_kubectl_auth_can_i_list_sends() {
        let body = envelope(
            b"authorization.k8s.io/v1",
            b"SelfSubjectRulesReview",
            &bytes_field(2, &bytes_field(1, b"ci")),
        );
        let obj = decode(&body).expect("decodes");
        assert_eq!(obj["kind"], "SelfSubjectRulesReview");
        assert_eq!(obj["spec"], json!({"namespace": "ci"}));
    }

    #[test]
    fn other_kinds_and_garbage_are_not_decoded() {
        assert!(decode(&envelope(b"batch/v1", b"Job", &[])).is_none());
        assert!(decode(b"k8s\0\xff\xff\xff").is_none());
        assert!(decode(b"{}").is_none());
    }
}
