//! Admission: validation with kube-apiserver's field errors, and the defaults it fills in.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use super::meta;
use super::resources::Resource;
use super::status::{ApiError, Cause};
use super::validation;
use crate::quantity;

/// Validates and defaults a new object. `uid` is the identity the store will give it.
pub(crate) fn admit_create(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    decode_check(res, obj)?;
    let mut causes = Vec::new();
    validate_metadata(res, obj, &mut causes);
    match res.id {
        "pods" => {
            if let Some(spec) = obj.get("spec") {
                validate_pod_spec(spec, "spec", &mut causes);
            } else {
                causes.push(Cause::required("spec.containers"));
            }
        }
        "jobs.batch" => validate_job(obj, &mut causes),
        "secrets" | "configmaps" => validate_data(res, obj, &mut causes),
        _ => {}
    }
    if res.id == "secrets" {
        validate_secret_type(obj, &mut causes);
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            res.kind,
            res.group,
            meta::name(obj),
            causes,
        ));
    }
    match res.id {
        "pods" => default_pod(obj),
        "jobs.batch" => default_job(obj),
        "secrets" => {
            if obj.get("type").is_none_or(|t| t.is_null() || t == "") {
                obj["type"] = json!("Opaque");
            }
            fold_string_data(obj);
        }
        "persistentvolumeclaims" => {
            obj["status"] = json!({"phase": "Bound", "accessModes": obj.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])), "capacity": obj.pointer("/spec/resources/requests").cloned().unwrap_or(json!({}))});
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.entry("volumeName")
                    .or_insert_with(|| json!(format!("pvc-{}", meta::new_uid())));
                spec.entry("volumeMode").or_insert(json!("Filesystem"));
            }
        }
        "namespaces" => {
            obj["status"] = json!({"phase": "Active"});
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            let name = meta::name(obj).to_string();
            let labels = meta::metadata_mut(obj).entry("labels").or_insert(json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Moves a Secret's `stringData` into `data` (base64), as the API server does on every write.
fn fold_string_data(obj: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if !obj.get("data").is_some_and(Value::is_object) {
        obj["data"] = json!({});
    }
    for (k, v) in strings {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or("").as_bytes());
        obj["data"][k] = json!(encoded);
    }
}

/// Validates an update of `old` into `new` (labels and names, and Pod spec immutability).
pub(crate) fn admit_update(res: &Resource, old: &Value, new: &mut Value) -> Result<(), ApiError> {
    decode_check(res, new)?;
    let mut causes = Vec::new();
    validate_labels(new, "metadata", &mut causes);
    if res.id == "pods" {
        let strip = |v: &Value| {
            let mut s = v.get("spec").cloned().unwrap_or(Value::Null);
            for list in ["containers", "initContainers"] {
                if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                    cs.iter_mut().for_each(|c| c["image"] = Value::Null);
                }
            }
            if let Some(m) = s.as_object_mut() {
                // ephemeralContainers change only through their subresource: a plain update
                // that touches them is refused like any other spec change.
                for f in ["activeDeadlineSeconds", "tolerations"] {
                    m.remove(f);
                }
            }
            s
        };
        if strip(old) != strip(new) {
            causes.push(Cause::forbidden(
                "spec",
                "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ));
        }
    }
    if res.id == "secrets" || res.id == "configmaps" {
        validate_data(res, new, &mut causes);
    }
    if res.id == "nodes" {
        validate_taints(new, &mut causes);
    }
    if res.id == "secrets" {
        fold_string_data(new);
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            res.kind,
            res.group,
            meta::name(new),
            causes,
        ))
    }
}

/// A node's `spec.taints`: qualified-name keys, label-value values, one of the three effects, and
/// no key and effect twice (pkg/apis/core/validation `validateNodeTaints`).
fn validate_taints(node: &Value, causes: &mut Vec<Cause>) {
    let taints = node
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen: Vec<(String, String)> = Vec::new();
    for (i, t) in taints.iter().enumerate() {
        let at = |f: &str| format!("spec.taints[{i}].{f}");
        let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (key, value, effect) = (s("key"), s("value"), s("effect"));
        for problem in validation::qualified_name(&key) {
            causes.push(Cause::invalid(at("key"), &key, &problem));
        }
        for problem in validation::label_value(&value) {
            causes.push(Cause::invalid(at("value"), &value, &problem));
        }
        const EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];
        if effect.is_empty() {
            causes.push(Cause::required(at("effect")));
        } else if !EFFECTS.contains(&effect.as_str()) {
            causes.push(Cause::unsupported(at("effect"), &effect, EFFECTS));
        }
        if seen.contains(&(key.clone(), effect.clone())) {
            causes.push(Cause::duplicate(format!("spec.taints[{i}]"), &key));
        }
        seen.push((key, effect));
    }
}

/// Rejects bodies that do not decode as the kind, with the API server's decode message.
fn decode_check(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    use k8s_openapi::api::{batch::v1::Job, coordination::v1::Lease, core::v1};
    let err = match res.id {
        "pods" => serde_json::from_value::<v1::Pod>(obj.clone()).err(),
        "jobs.batch" => serde_json::from_value::<Job>(obj.clone()).err(),
        "secrets" => serde_json::from_value::<v1::Secret>(obj.clone()).err(),
        "leases.coordination.k8s.io" => serde_json::from_value::<Lease>(obj.clone()).err(),
        "configmaps" => serde_json::from_value::<v1::ConfigMap>(obj.clone()).err(),
        "persistentvolumeclaims" => {
            serde_json::from_value::<v1::PersistentVolumeClaim>(obj.clone()).err()
        }
        _ => None,
    };
    match err {
        None => Ok(()),
        Some(e) => Err(ApiError::bad_request(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {e}",
            kind = res.kind,
            v = res.version
        ))),
    }
}

/// Removes from `obj` the fields its kind does not declare (as the API server's decoder drops
/// them) and returns their paths (`spec.containers[0].bogus`), for a warning or, under
/// `fieldValidation=Strict`, a refusal. Kinds without a typed schema here keep everything.
pub(crate) fn drop_unknown_fields(res: &Resource, obj: &mut Value) -> Vec<String> {
    use k8s_openapi::api::{batch::v1::Job, coordination::v1::Lease, core::v1};
    fn known<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Option<Value> {
        serde_json::from_value::<T>(obj.clone())
            .ok()
            .and_then(|t| serde_json::to_value(t).ok())
    }
    let declared = match res.id {
        "pods" => known::<v1::Pod>(obj),
        "jobs.batch" => known::<Job>(obj),
        "secrets" => known::<v1::Secret>(obj),
        "leases.coordination.k8s.io" => known::<Lease>(obj),
        "configmaps" => known::<v1::ConfigMap>(obj),
        "persistentvolumeclaims" => known::<v1::PersistentVolumeClaim>(obj),
        _ => None,
    };
    let mut unknown = Vec::new();
    if let Some(declared) = declared {
        drop_undeclared(obj, &declared, "", &mut unknown);
    }
    unknown
}

fn drop_undeclared(obj: &mut Value, declared: &Value, path: &str, unknown: &mut Vec<String>) {
    match (obj, declared) {
        (Value::Object(fields), Value::Object(known)) => {
            fields.retain(|k, v| {
                let field = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match known.get(k) {
                    Some(d) => {
                        drop_undeclared(v, d, &field, unknown);
                        true
                    }
                    // A null is an unset field to the decoder, whatever its name.
                    None if v.is_null() => true,
                    None => {
                        unknown.push(field);
                        false
                    }
                }
            });
        }
        (Value::Array(items), Value::Array(known)) => {
            for (i, (item, d)) in items.iter_mut().zip(known).enumerate() {
                drop_undeclared(item, d, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

fn validate_metadata(res: &Resource, obj: &Value, causes: &mut Vec<Cause>) {
    let name = meta::name(obj);
    if name.is_empty() {
        causes.push(Cause {
            field: "metadata.name".into(),
            reason: "FieldValueRequired",
            message: "Required value: name or generateName is required".into(),
        });
    } else {
        let errs = match res.id {
            "namespaces" => validation::dns1123_label(name),
            "services" => validation::dns1035_label(name),
            _ => validation::dns1123_subdomain(name),
        };
        for e in errs {
            causes.push(Cause::invalid("metadata.name", name, &e));
        }
    }
    validate_labels(obj, "metadata", causes);
}

fn validate_label_map(map: &Map<String, Value>, field: &str, causes: &mut Vec<Cause>) {
    for (k, v) in map {
        for e in validation::qualified_name(k) {
            causes.push(Cause::invalid(field, k, &e));
        }
        let val = v.as_str().unwrap_or("");
        for e in validation::label_value(val) {
            causes.push(Cause::invalid(field, val, &e));
        }
    }
}

fn validate_labels(obj: &Value, prefix: &str, causes: &mut Vec<Cause>) {
    if let Some(l) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        validate_label_map(l, &format!("{prefix}.labels"), causes);
    }
}

fn validate_data(res: &Resource, obj: &Value, causes: &mut Vec<Cause>) {
    let mut total = 0usize;
    for field in ["data", "stringData", "binaryData"] {
        if let Some(m) = obj.get(field).and_then(Value::as_object) {
            for (k, v) in m {
                total += v.as_str().map(str::len).unwrap_or(0);
                for e in validation::config_key(k) {
                    causes.push(Cause::invalid(format!("{field}[{k}]"), k, &e));
                }
            }
        }
    }
    let limit = 1024 * 1024;
    if total > limit {
        let field = if res.id == "secrets" { "data" } else { "[]" };
        causes.push(Cause {
            field: field.into(),
            reason: "FieldValueTooLong",
            message: format!("Too long: must have at most {limit} bytes"),
        });
    }
}

/// The contents a Secret's type requires (`ValidateSecret`): a `kubernetes.io/dockerconfigjson`
/// Secret needs `.dockerconfigjson`, a JSON object (Go's `json.Unmarshal` into a map decides).
fn validate_secret_type(obj: &Value, causes: &mut Vec<Cause>) {
    use base64::Engine;
    if obj.get("type").and_then(Value::as_str) != Some("kubernetes.io/dockerconfigjson") {
        return;
    }
    const KEY: &str = ".dockerconfigjson";
    let field = format!("data[{KEY}]");
    let bytes = match (
        obj.pointer(&format!("/data/{KEY}")).and_then(Value::as_str),
        obj.pointer(&format!("/stringData/{KEY}"))
            .and_then(Value::as_str),
    ) {
        (_, Some(plain)) => plain.as_bytes().to_vec(),
        (Some(encoded), None) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default(),
        (None, None) => {
            causes.push(Cause::required(field));
            return;
        }
    };
    if let Some(why) = go_unmarshal_into_map_error(&bytes) {
        causes.push(Cause::invalid(field, "<secret contents redacted>", &why));
    }
}

/// What Go's `json.Unmarshal(b, &map[string]interface{}{})` answers, `None` when it succeeds;
/// the texts are Go's for the common failures, serde_json's for the rest.
fn go_unmarshal_into_map_error(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match start {
        None => return Some("unexpected end of JSON input".into()),
        Some(c)
            if !matches!(
                c,
                b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
            ) =>
        {
            return Some(format!(
                "invalid character '{}' looking for beginning of value",
                char::from(*c)
            ));
        }
        Some(_) => {}
    }
    match serde_json::from_slice::<Value>(bytes) {
        Err(e) if e.is_eof() => Some("unexpected end of JSON input".into()),
        Err(e) => Some(e.to_string()),
        Ok(Value::Object(_) | Value::Null) => None,
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                _ => "bool",
            };
            Some(format!(
                "json: cannot unmarshal {kind} into Go value of type map[string]interface {{}}"
            ))
        }
    }
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Validates a PodSpec at field path `p` (`spec` or `spec.template.spec`).
pub(crate) fn validate_pod_spec(spec: &Value, p: &str, causes: &mut Vec<Cause>) {
    let mut volumes = HashSet::new();
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        check_name(
            v,
            &format!("{p}.volumes[{i}].name"),
            validation::dns1123_label,
            Some(&mut volumes),
            causes,
        );
    }
    if arr(spec, "containers").is_empty() {
        causes.push(Cause::required(format!("{p}.containers")));
    }
    let mut names = HashSet::new();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for (i, c) in arr(spec, list).iter().enumerate() {
            validate_container(c, &format!("{p}.{list}[{i}]"), &volumes, &mut names, causes);
        }
    }
    if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str)
        && !["Always", "OnFailure", "Never"].contains(&rp)
    {
        causes.push(Cause::unsupported(
            format!("{p}.restartPolicy"),
            rp,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(ns) = spec.get("nodeSelector").and_then(Value::as_object) {
        validate_label_map(ns, &format!("{p}.nodeSelector"), causes);
    }
}

/// An item's required `name` at field path `field`: Required when empty, else one Invalid per
/// complaint of `rule` and, with `seen`, Duplicate when an earlier item had it.
fn check_name(
    item: &Value,
    field: &str,
    rule: fn(&str) -> Vec<String>,
    seen: Option<&mut HashSet<String>>,
    causes: &mut Vec<Cause>,
) {
    let name = item.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required(field));
        return;
    }
    for e in rule(name) {
        causes.push(Cause::invalid(field, name, &e));
    }
    if let Some(seen) = seen
        && !seen.insert(name.to_string())
    {
        causes.push(Cause::duplicate(field, name));
    }
}

fn validate_container(
    c: &Value,
    f: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    check_name(
        c,
        &format!("{f}.name"),
        validation::dns1123_label,
        Some(names),
        causes,
    );
    if c.get("image")
        .and_then(Value::as_str)
        .is_none_or(|i| i.trim().is_empty())
    {
        causes.push(Cause::required(format!("{f}.image")));
    }
    for (j, e) in arr(c, "env").iter().enumerate() {
        check_name(
            e,
            &format!("{f}.env[{j}].name"),
            validation::env_var_name_relaxed,
            None,
            causes,
        );
    }
    let mut paths = HashSet::new();
    for (j, m) in arr(c, "volumeMounts").iter().enumerate() {
        let n = m.get("name").and_then(Value::as_str).unwrap_or("");
        if n.is_empty() {
            causes.push(Cause::required(format!("{f}.volumeMounts[{j}].name")));
        } else if !volumes.contains(n) {
            causes.push(Cause::not_found(format!("{f}.volumeMounts[{j}].name"), n));
        }
        let mp = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
        if mp.is_empty() {
            causes.push(Cause::required(format!("{f}.volumeMounts[{j}].mountPath")));
        } else if !paths.insert(mp.to_string()) {
            causes.push(Cause::invalid(
                format!("{f}.volumeMounts[{j}].mountPath"),
                mp,
                "must be unique",
            ));
        }
        if m.get("subPath").is_some() && m.get("subPathExpr").is_some() {
            causes.push(Cause::invalid(
                format!("{f}.volumeMounts[{j}].subPathExpr"),
                m["subPathExpr"].as_str().unwrap_or(""),
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
    }
    let res = c.get("resources").cloned().unwrap_or(Value::Null);
    let mut parsed: [Map<String, Value>; 2] = Default::default();
    for (slot, kind) in ["requests", "limits"].iter().enumerate() {
        if let Some(m) = res.get(*kind).and_then(Value::as_object) {
            for (r, q) in m {
                let qs = match q {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match quantity::parse(&qs) {
                    Some(v) => {
                        parsed[slot].insert(r.clone(), json!(v));
                    }
                    None => causes.push(Cause::invalid(
                        format!("{f}.resources.{kind}[{r}]"),
                        &qs,
                        quantity::QUANTITY_FMT,
                    )),
                }
            }
        }
    }
    for (r, req) in &parsed[0] {
        if let (Some(rv), Some(lv)) = (req.as_f64(), parsed[1].get(r).and_then(Value::as_f64))
            && rv > lv
        {
            let shown = res
                .pointer(&format!("/requests/{r}"))
                .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                .unwrap_or_default();
            let limit = res
                .pointer(&format!("/limits/{r}"))
                .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                .unwrap_or_default();
            causes.push(Cause::invalid(
                format!("{f}.resources.requests"),
                &shown,
                &format!("must be less than or equal to {r} limit of {limit}"),
            ));
        }
    }
}

fn validate_job(obj: &Value, causes: &mut Vec<Cause>) {
    let name = meta::name(obj);
    // The job name becomes a label value on its pods.
    if name.len() > 63 {
        causes.push(Cause::invalid(
            "spec.template.labels",
            name,
            "must be no more than 63 bytes",
        ));
    }
    let Some(spec) = obj.pointer("/spec/template/spec") else {
        causes.push(Cause::required("spec.template.spec.containers"));
        return;
    };
    validate_pod_spec(spec, "spec.template.spec", causes);
    match spec.get("restartPolicy").and_then(Value::as_str) {
        None => causes.push(Cause {
            field: "spec.template.spec.restartPolicy".into(),
            reason: "FieldValueRequired",
            message: "Required value: valid values: \"OnFailure\", \"Never\"".into(),
        }),
        Some(rp) if rp != "OnFailure" && rp != "Never" => causes.push(Cause::unsupported(
            "spec.template.spec.restartPolicy",
            rp,
            &["OnFailure", "Never"],
        )),
        _ => {}
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    m.entry("terminationMessagePath")
        .or_insert(json!("/dev/termination-log"));
    m.entry("terminationMessagePolicy").or_insert(json!("File"));
    let image = m
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    m.entry("imagePullPolicy")
        .or_insert(json!(image_pull_policy(&image)));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = m.get_mut(probe).and_then(Value::as_object_mut) {
            for (k, v) in [
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ] {
                p.entry(k).or_insert(json!(v));
            }
        }
    }
    let res = m.entry("resources").or_insert(json!({}));
    // Limits without requests default the requests.
    if let Some(limits) = res.get("limits").and_then(Value::as_object).cloned()
        && let Some(r) = res.as_object_mut()
        && let Some(reqs) = r.entry("requests").or_insert(json!({})).as_object_mut()
    {
        for (k, v) in limits {
            reqs.entry(k).or_insert(v);
        }
    }
}

/// Fills a PodSpec's defaults (shared by Pods and Job templates).
pub(crate) fn default_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    m.entry("restartPolicy").or_insert(json!("Always"));
    m.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    m.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    m.entry("securityContext").or_insert(json!({}));
    m.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    for list in ["initContainers", "containers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
    if let Some(vs) = m.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vs {
            for (kind, mode) in [("configMap", 420), ("secret", 420)] {
                if let Some(src) = v.get_mut(kind).and_then(Value::as_object_mut) {
                    src.entry("defaultMode").or_insert(json!(mode));
                }
            }
        }
    }
}

/// The QoS class of a (defaulted) PodSpec.
fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for c in arr(spec, "containers")
        .iter()
        .chain(arr(spec, "initContainers"))
    {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|l| l.get(r));
            if l.is_none() || req.and_then(|q| q.get(r)) != l {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        _ => "Burstable",
    }
}

/// What a Pod (never a Job's template) gets beyond the PodSpec defaults: `SetDefaults_Pod`'s
/// enableServiceLinks and the admission plugins' service account (ServiceAccount), priority
/// (Priority) and not-ready/unreachable tolerations (DefaultTolerationSeconds).
fn admit_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    let sa = m
        .get("serviceAccountName")
        .or(m.get("serviceAccount"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    m.insert("serviceAccountName".into(), json!(sa));
    m.insert("serviceAccount".into(), json!(sa));
    m.entry("enableServiceLinks").or_insert(json!(true));
    m.entry("preemptionPolicy")
        .or_insert(json!("PreemptLowerPriority"));
    m.entry("priority").or_insert(json!(0));
    m.entry("tolerations").or_insert(json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ]));
}

fn default_pod(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec") {
        default_pod_spec(spec);
        admit_pod_spec(spec);
    }
    let qos = obj.get("spec").map(qos_class).unwrap_or("BestEffort");
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
}

fn default_job(obj: &mut Value) {
    let uid = meta::new_uid();
    let name = meta::name(obj).to_string();
    meta::metadata_mut(obj).insert("uid".into(), json!(uid));
    let labels = json!({
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": name,
        "controller-uid": uid,
        "job-name": name,
    });
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("backoffLimit").or_insert(json!(6));
    spec.entry("completions").or_insert(json!(1));
    spec.entry("parallelism").or_insert(json!(1));
    spec.entry("completionMode").or_insert(json!("NonIndexed"));
    spec.entry("suspend").or_insert(json!(false));
    spec.entry("manualSelector").or_insert(json!(false));
    spec.entry("podReplacementPolicy")
        .or_insert(json!("TerminatingOrFailed"));
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let tmpl = spec.entry("template").or_insert(json!({}));
    let tm = meta::metadata_mut(tmpl);
    let tl = tm.entry("labels").or_insert(json!({}));
    if let (Some(tl), Some(add)) = (tl.as_object_mut(), labels.as_object()) {
        for (k, v) in add {
            tl.insert(k.clone(), v.clone());
        }
    }
    if let Some(ps) = tmpl.get_mut("spec") {
        default_pod_spec(ps);
    }
    obj["status"] = json!({});
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::resources;

    fn pods() -> &'static Resource {
        resources::by_id("pods")
    }

    #[test]
    fn unknown_fields_are_dropped_and_named_as_the_decoder_names_them() {
        let mut p = json!({"metadata": {"name": "p", "bogus": 1, "labels": {"any": "x"}},
            "spec": {"containers": [{"name": "c", "image": "i", "bogus": true, "resources": {}}],
                "nodeName": null}});
        let unknown = drop_unknown_fields(pods(), &mut p);
        assert_eq!(unknown, ["metadata.bogus", "spec.containers[0].bogus"]);
        assert_eq!(
            p,
            json!({"metadata": {"name": "p", "labels": {"any": "x"}},
                "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}], "nodeName": null}})
        );
    }

    #[test]
    fn docker_config_secrets_need_a_json_object() {
        let secrets = resources::by_id("secrets");
        let secret = |data: Value| json!({"metadata": {"name": "s"}, "type": "kubernetes.io/dockerconfigjson", "data": data});
        // Texts as kube-apiserver 1.35 answered them in tests/sim_differential.rs.
        let mut redacted = secret(json!({".dockerconfigjson": "PHJlZGFjdGVkPg=="}));
        let e = admit_create(secrets, &mut redacted).expect_err("not JSON");
        assert_eq!(
            e.message,
            "Secret \"s\" is invalid: data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\": invalid character '<' looking for beginning of value"
        );
        let e = admit_create(secrets, &mut secret(json!({}))).expect_err("no key");
        assert_eq!(
            e.message,
            "Secret \"s\" is invalid: data[.dockerconfigjson]: Required value"
        );
        let e = admit_create(secrets, &mut secret(json!({".dockerconfigjson": "WzFd"})))
            .expect_err("an array");
        assert!(
            e.message.ends_with(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            ),
            "{}",
            e.message
        );
        let mut good = secret(json!({".dockerconfigjson": "eyJhdXRocyI6e319"}));
        admit_create(secrets, &mut good).expect("{\"auths\":{}} is accepted");
    }

    #[test]
    fn bad_pod_name_is_refused_like_the_api_server() {
        let mut p = json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": [{"name": "c", "image": "alpine"}]}});
        let e = admit_create(pods(), &mut p).expect_err("invalid");
        assert_eq!(e.code, 422);
        assert!(e.message.starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of"), "{}", e.message);
    }

    #[test]
    fn container_errors_name_their_fields() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {
        "containers": [
            {"name": "c", "image": "", "env": [{"name": "A=B", "value": "v"}], "volumeMounts": [{"name": "nope", "mountPath": "/x"}]},
            {"name": "c", "image": "i", "resources": {"requests": {"cpu": "abc"}}}
        ]}});
        let e = admit_create(pods(), &mut p).expect_err("invalid");
        for f in [
            "spec.containers[0].image: Required value",
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
            "spec.containers[0].volumeMounts[0].name: Not found: \"nope\"",
            "spec.containers[1].name: Duplicate value: \"c\"",
            "spec.containers[1].resources.requests[cpu]: Invalid value: \"abc\"",
        ] {
            assert!(e.message.contains(f), "missing {f} in {}", e.message);
        }
    }

    #[test]
    fn env_names_follow_the_relaxed_rule_of_1_32() {
        let pod = |name: &str| json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": name, "value": "v"}]}]}});
        for ok in ["1ABC", "MY VAR", "..", "a:b"] {
            admit_create(pods(), &mut pod(ok)).unwrap_or_else(|e| panic!("{ok:?}: {}", e.message));
        }
        for bad in ["A=B", "Ç"] {
            assert_eq!(
                admit_create(pods(), &mut pod(bad)).expect_err(bad).code,
                422
            );
        }
    }

    #[test]
    fn label_errors_use_the_api_servers_words() {
        let mut p = json!({"metadata": {"name": "p", "labels": {"/x": "v", "a/b/c": "v"}}, "spec": {"containers": [{"name": "c.d", "image": "i"}]}});
        let e = admit_create(pods(), &mut p).expect_err("invalid");
        for f in [
            "metadata.labels: Invalid value: \"/x\": prefix part must be non-empty",
            "metadata.labels: Invalid value: \"a/b/c\": a qualified name must consist of",
            "spec.containers[0].name: Invalid value: \"c.d\": must not contain dots",
        ] {
            assert!(e.message.contains(f), "missing {f} in {}", e.message);
        }
    }

    #[test]
    fn pods_get_defaults_and_pending_status() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "alpine:3.19", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        admit_create(pods(), &mut p).expect("valid");
        assert_eq!(p["spec"]["restartPolicy"], "Always");
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "Guaranteed");
    }

    #[test]
    fn secret_string_data_becomes_data() {
        let mut s = json!({"metadata": {"name": "s"}, "stringData": {"token": "abc"}});
        admit_create(resources::by_id("secrets"), &mut s).expect("valid");
        assert_eq!(s["data"]["token"], "YWJj");
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn job_templates_need_a_run_to_completion_restart_policy() {
        let mut j = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let e = admit_create(resources::by_id("jobs.batch"), &mut j).expect_err("invalid");
        assert!(
            e.message
                .contains("spec.template.spec.restartPolicy: Required value"),
            "{}",
            e.message
        );
    }

    #[test]
    fn pod_spec_changes_are_forbidden_on_update() {
        let old = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let mut new = json!({"metadata": {"name": "p", "labels": {"x": "y"}}, "spec": {"containers": [{"name": "c", "image": "b"}]}});
        admit_update(pods(), &old, &mut new).expect("image change allowed");
        let mut new = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "a"}], "ephemeralContainers": [{"name": "e", "image": "a"}]}});
        let e = admit_update(pods(), &old, &mut new)
            .expect_err("ephemeral containers via a plain update");
        assert_eq!(e.code, 422);
        assert!(e.message.starts_with("Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than"), "{}", e.message);
        let mut new = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "d", "image": "a"}]}});
        assert_eq!(
            admit_update(pods(), &old, &mut new)
                .expect_err("forbidden")
                .code,
            422
        );
    }
}
