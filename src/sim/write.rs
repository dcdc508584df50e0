//! The write verbs: create, update, patch, delete and deletecollection, with each resource's semantics.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::api::{Query, Target, key_of, list, not_found, with_type};
use super::resources::{self, Resource};
use super::status::{ApiError, json_response};
use super::store::{Key, StoreError};
use super::{SimState, admission, cluster, kubelet, meta, patch as patching, rbac};

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice::<Value>(body)
        .or_else(|_| serde_yaml_ng::from_slice::<Value>(body))
        .map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })
        .and_then(|v| {
            if v.is_object() {
                Ok(v)
            } else {
                Err(ApiError::bad_request(
                    "the body of the request must be an object",
                ))
            }
        })
}

fn check_namespace(sim: &SimState, t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    if !t.res.namespaced {
        meta::metadata_mut(obj).remove("namespace");
        return Ok(());
    }
    let ns = t.ns.clone().unwrap_or_default();
    let body_ns = meta::namespace(obj).to_string();
    if !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    meta::metadata_mut(obj).insert("namespace".into(), json!(ns));
    if sim.store.get(&Key::new("namespaces", "", &ns)).is_none() {
        return Err(ApiError::not_found("namespaces", "", &ns));
    }
    Ok(())
}

/// A created object and the warnings its create answer carries (unknown fields dropped).
pub(crate) struct Created {
    pub obj: Value,
    pub warnings: Vec<String>,
}

pub(crate) async fn create(
    sim: &Arc<SimState>,
    t: &Target,
    q: &Query,
    body: &[u8],
) -> Result<Created, ApiError> {
    if t.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let mut obj = with_type(t.res, parse_body(body)?);
    // fieldValidation: unset means Warn, as in kube-apiserver 1.27+.
    let unknown = admission::drop_unknown_fields(t.res, &mut obj);
    let warnings = match q.get("fieldValidation") {
        Some("Strict") if !unknown.is_empty() => {
            let listed: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
                listed.join(", "),
                kind = t.res.kind,
                v = t.res.version
            )));
        }
        Some("Ignore") => Vec::new(),
        _ => unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect(),
    };
    let obj = create_object(sim, t, q, obj).await?;
    Ok(Created { obj, warnings })
}

async fn create_object(
    sim: &Arc<SimState>,
    t: &Target,
    q: &Query,
    obj: Value,
) -> Result<Value, ApiError> {
    match t.res.id {
        "selfsubjectaccessreviews.authorization.k8s.io" => {
            return rbac::review(sim.cfg.rbac.as_deref(), &sim.cfg.namespace, obj);
        }
        "selfsubjectrulesreviews.authorization.k8s.io" => {
            if sim.cfg.rules_review_incomplete {
                return Ok(rbac::incomplete_rules_review(obj));
            }
            return Ok(rbac::rules_review(
                sim.cfg.rbac.as_deref(),
                &sim.cfg.namespace,
                obj,
            ));
        }
        _ => {}
    }
    if t.res.id == "namespaces" {
        return cluster::create_namespace(sim, meta::name(&obj));
    }
    if t.res.id == "nodes" || t.res.id == "events.events.k8s.io" {
        return Err(ApiError::method_not_allowed());
    }
    create_checked(sim, t, obj, q.get("dryRun") == Some("All")).await
}

/// Creates an object on behalf of a controller, through the same admission as API clients.
pub(crate) async fn create_value(
    sim: &Arc<SimState>,
    res: &'static Resource,
    ns: &str,
    obj: Value,
) -> Result<Value, ApiError> {
    let t = Target {
        res,
        ns: Some(ns.to_string()),
        name: None,
        sub: None,
    };
    create_checked(sim, &t, with_type(res, obj), false).await
}

async fn create_checked(
    sim: &Arc<SimState>,
    t: &Target,
    mut obj: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    check_namespace(sim, t, &mut obj)?;
    if meta::name(&obj).is_empty()
        && let Some(prefix) = meta::str_at(&obj, &["metadata", "generateName"]).map(str::to_string)
    {
        meta::metadata_mut(&mut obj).insert(
            "name".into(),
            json!(format!("{prefix}{}", meta::random_suffix(5))),
        );
    }
    for f in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        meta::metadata_mut(&mut obj).remove(f);
    }
    meta::metadata_mut(&mut obj).remove("generation");
    if meta::has_generation(t.res.id) {
        meta::bump_generation(meta::metadata_mut(&mut obj));
    }
    admission::admit_create(t.res, &mut obj)?;
    if t.res.id == "pods" {
        check_service_account(sim, &obj)?;
    }
    if dry_run {
        return Ok(obj);
    }
    let name = meta::name(&obj).to_string();
    let key = Key::new(t.res.id, t.ns.as_deref().unwrap_or(""), &name);
    let created = sim
        .store
        .create(key, obj)
        .map_err(|_| ApiError::already_exists(t.res.plural, t.res.group, &name))?;
    if t.res.id == "pods" {
        kubelet::pod_created(sim.clone(), &created);
    }
    Ok(created)
}

fn check_service_account(sim: &SimState, pod: &Value) -> Result<(), ApiError> {
    let ns = meta::namespace(pod);
    let sa = meta::str_at(pod, &["spec", "serviceAccountName"]).unwrap_or("default");
    if sim
        .store
        .get(&Key::new("serviceaccounts", ns, sa))
        .is_some()
    {
        return Ok(());
    }
    Err(ApiError::forbidden(
        "pods",
        "",
        Some(meta::name(pod)),
        format!(
            "pods \"{}\" is forbidden: error looking up service account {ns}/{sa}: serviceaccount \"{sa}\" not found",
            meta::name(pod)
        ),
    ))
}

/// `response` with one `Warning: 299 - "..."` header per warning, as kube-apiserver sends them.
pub(crate) fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let quoted = format!("299 - {}", serde_json::Value::String(w.clone()));
        if let Ok(v) = http::HeaderValue::from_str(&quoted) {
            response.headers_mut().append(http::header::WARNING, v);
        }
    }
    response
}

/// Replaces the parts of `old` a write to `sub` may change with those of `new`, and keeps
/// `metadata.generation` the server's: one more when the spec changed.
fn apply_write(t: &Target, old: &Value, new: Value) -> Result<Value, ApiError> {
    let mut out = apply_sub_write(t, old, new)?;
    if meta::has_generation(t.res.id) {
        let m = meta::metadata_mut(&mut out);
        match old.pointer("/metadata/generation") {
            Some(g) => m.insert("generation".into(), g.clone()),
            None => m.remove("generation"),
        };
        if old.get("spec") != out.get("spec") {
            meta::bump_generation(meta::metadata_mut(&mut out));
        }
    }
    Ok(out)
}

fn apply_sub_write(t: &Target, old: &Value, mut new: Value) -> Result<Value, ApiError> {
    new = with_type(t.res, new);
    match t.sub.as_deref() {
        None => {
            // The status subresource owns status.
            if t.res.subresources.iter().any(|(s, _, _)| *s == "status") {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            // Deletion state is the server's.
            for f in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
                match old.pointer(&format!("/metadata/{f}")) {
                    Some(v) => {
                        meta::metadata_mut(&mut new).insert(f.into(), v.clone());
                    }
                    None => {
                        meta::metadata_mut(&mut new).remove(f);
                    }
                }
            }
            admission::admit_update(t.res, old, &mut new)?;
            Ok(new)
        }
        Some("status") => {
            let mut out = old.clone();
            out["status"] = new.get("status").cloned().unwrap_or(json!({}));
            Ok(out)
        }
        Some("ephemeralcontainers") if t.res.id == "pods" => kubelet::ephemeral::admit(old, &new),
        Some(_) => Err(ApiError::method_not_allowed()),
    }
}

pub(crate) async fn update(
    sim: &Arc<SimState>,
    t: &Target,
    body: &[u8],
) -> Result<Value, ApiError> {
    let new = parse_body(body)?;
    let url_name = t.name.clone().unwrap_or_default();
    if meta::name(&new) != url_name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({url_name})",
            meta::name(&new)
        )));
    }
    let expected = meta::str_at(&new, &["metadata", "resourceVersion"]).map(str::to_string);
    write(sim, t, expected.as_deref(), |old| {
        apply_write(t, old, new.clone())
    })
    .await
}

/// Read-modify-write of one object through `compute`, then the kubelet hears of ephemeral containers.
async fn write(
    sim: &Arc<SimState>,
    t: &Target,
    expected_rv: Option<&str>,
    compute: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let key = key_of(t);
    let result = sim.store.update(&key, expected_rv, |obj| {
        *obj = compute(obj)?;
        Ok::<(), ApiError>(())
    })?;
    let obj = result.map_err(|e| match e {
        StoreError::Conflict => {
            ApiError::conflict(t.res.plural, t.res.group, t.name.as_deref().unwrap_or(""))
        }
        _ => not_found(t),
    })?;
    if t.res.id == "pods" && t.sub.as_deref() == Some("ephemeralcontainers") {
        kubelet::ephemeral_changed(sim, &obj);
    }
    if t.res.id == "nodes" {
        sim.kubelet.node_changed();
    }
    Ok(obj)
}

pub(crate) async fn patch(
    sim: &Arc<SimState>,
    t: &Target,
    content_type: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let key = key_of(t);
    if content_type.starts_with("application/apply-patch")
        && sim.store.get(&key).is_none()
        && t.sub.is_none()
    {
        let mut create_t = t.clone();
        create_t.name = None;
        let created = create(sim, &create_t, &Query(Vec::new()), body).await?;
        return Ok(with_warnings(
            json_response(StatusCode::CREATED, &created.obj),
            &created.warnings,
        ));
    }
    let obj = write(sim, t, None, |old| {
        let mut next = old.clone();
        patching::apply(&mut next, content_type, body)?;
        apply_write(t, old, next)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &obj))
}

/// DeleteOptions from the query and the body.
pub(crate) struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub preconditions: Preconditions,
}

/// DeleteOptions' `preconditions`: the object must still have this UID and resourceVersion.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl Preconditions {
    /// kube-apiserver's refusal when `obj` does not meet them (409 Conflict), in the words of
    /// apimachinery's `Preconditions.Check` wrapped in a Conflict on the kind.
    fn check(&self, res: &Resource, obj: &Value) -> Result<(), ApiError> {
        let field = |name: &str, want: &Option<String>, have: &str, then: &str| match want {
            Some(w) if w != have => Some(format!(
                "the {name} in the precondition ({w}) does not match the {name} in record ({have}). {then}"
            )),
            _ => None,
        };
        let rv = meta::str_at(obj, &["metadata", "resourceVersion"]).unwrap_or_default();
        let failed = field(
            "UID",
            &self.uid,
            meta::uid(obj),
            "The object might have been deleted and then recreated",
        )
        .or_else(|| {
            field(
                "ResourceVersion",
                &self.resource_version,
                rv,
                "The object might have been modified",
            )
        });
        match failed {
            None => Ok(()),
            Some(why) => {
                let kind = if res.group.is_empty() {
                    res.kind.to_string()
                } else {
                    format!("{}.{}", res.kind, res.group)
                };
                Err(ApiError::precondition_failed(
                    res.kind,
                    res.group,
                    meta::name(obj),
                    format!(
                        "Operation cannot be fulfilled on {kind} \"{}\": {why}",
                        meta::name(obj)
                    ),
                ))
            }
        }
    }
}

fn delete_options(q: &Query, body: &[u8]) -> DeleteOptions {
    let b: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let grace = q
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| b.get("gracePeriodSeconds").and_then(Value::as_i64));
    let propagation = q.get("propagationPolicy").map(str::to_string).or_else(|| {
        b.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let pre = |f: &str| {
        b.pointer(&format!("/preconditions/{f}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let preconditions = Preconditions {
        uid: pre("uid"),
        resource_version: pre("resourceVersion"),
    };
    DeleteOptions {
        grace,
        propagation,
        preconditions,
    }
}

pub(crate) async fn delete(
    sim: &Arc<SimState>,
    t: &Target,
    q: &Query,
    body: &[u8],
) -> Result<Value, ApiError> {
    let opts = delete_options(q, body);
    let deleted = delete_object(
        sim,
        t.res,
        t.ns.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
        &opts,
    )
    .await?;
    // Resources with graceful deletion or finalizers answer with the object, the rest with a Status.
    if matches!(t.res.id, "pods" | "namespaces" | "persistentvolumeclaims") {
        return Ok(deleted);
    }
    let mut details =
        json!({"name": meta::name(&deleted), "kind": t.res.plural, "uid": meta::uid(&deleted)});
    if !t.res.group.is_empty() {
        details["group"] = json!(t.res.group);
    }
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    )
}

/// Deletes one object with the resource's semantics (graceful pods, cascading jobs and namespaces).
pub(crate) async fn delete_object(
    sim: &Arc<SimState>,
    res: &'static Resource,
    ns: &str,
    name: &str,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let key = Key::new(res.id, ns, name);
    match res.id {
        "pods" => kubelet::delete_pod(sim, &key, opts.grace)
            .await
            .ok_or_else(|| ApiError::not_found("pods", "", name)),
        "jobs.batch" => {
            let job = sim
                .store
                .delete(&key)
                .ok_or_else(|| ApiError::not_found("jobs", "batch", name))?;
            let policy = opts.propagation.as_deref().unwrap_or("Orphan");
            super::jobs::cascade(sim, &job, policy).await;
            Ok(job)
        }
        "namespaces" => {
            let ns_obj = sim
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found("namespaces", "", name))?;
            for r in resources::RESOURCES
                .iter()
                .filter(|r| r.namespaced && r.id != "events.events.k8s.io")
            {
                let (items, _) = sim.store.list(r.id, Some(name));
                for o in items {
                    let opts = DeleteOptions {
                        grace: Some(0),
                        propagation: Some("Background".into()),
                        preconditions: Preconditions::default(),
                    };
                    let _ = Box::pin(delete_object(sim, r, name, meta::name(&o), &opts)).await;
                }
            }
            sim.store.delete(&key);
            Ok(ns_obj)
        }
        "nodes" => Err(ApiError::method_not_allowed()),
        _ => sim
            .store
            .delete_if(&key, |o| opts.preconditions.check(res, o))
            .ok_or_else(|| ApiError::not_found(res.plural, res.group, name))?,
    }
}

pub(crate) async fn delete_collection(
    sim: &Arc<SimState>,
    t: &Target,
    q: &Query,
) -> Result<Value, ApiError> {
    let list = list(sim, t, q)?;
    let opts = delete_options(q, &[]);
    let mut deleted = Vec::new();
    for o in list["items"].as_array().cloned().unwrap_or_default() {
        if let Ok(d) = delete_object(sim, t.res, meta::namespace(&o), meta::name(&o), &opts).await {
            deleted.push(d);
        }
    }
    Ok(
        json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(), "metadata": {}, "items": deleted}),
    )
}
