//! The REST API: URL routing, verbs, RBAC, admission and the store behind them.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};

use super::resources::{self, Resource};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, json_response};
use super::store::{Key, StoreError};
use super::{
    NODE_NAME, SimState, admission, events, exec, faults, kubelet, logs, meta, patch, rbac, table,
    watch,
};

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}/exec",
            any(exec::handler),
        )
        .fallback(dispatch)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults::middleware,
        ))
        .with_state(state)
}

/// Objects every cluster has: namespaces, their default service accounts, the node.
pub fn seed(sim: &SimState) {
    let mut namespaces = vec!["default", "kube-system", "kube-public", "kube-node-lease"];
    if !namespaces.contains(&sim.cfg.namespace.as_str()) {
        namespaces.push(&sim.cfg.namespace);
    }
    for ns in namespaces {
        let _ = create_namespace(sim, ns);
    }
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "arc-runner", "namespace": sim.cfg.namespace}});
    let _ = sim.store.create(
        Key::new("serviceaccounts", &sim.cfg.namespace, "arc-runner"),
        sa,
    );
    let _ = sim
        .store
        .create(Key::new("nodes", "", NODE_NAME), node_object());
}

fn create_namespace(sim: &SimState, name: &str) -> Result<Value, ApiError> {
    let res = resources::by_id("namespaces");
    let mut obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    admission::admit_create(res, &mut obj)?;
    let created = sim
        .store
        .create(Key::new("namespaces", "", name), obj)
        .map_err(|_| ApiError::already_exists("namespaces", "", name))?;
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
    let _ = sim
        .store
        .create(Key::new("serviceaccounts", name, "default"), sa);
    Ok(created)
}

fn node_object() -> Value {
    let capacity = json!({"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti", "hugepages-2Mi": "0"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE_NAME, "labels": node_labels()},
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                            "lastHeartbeatTime": meta::now(), "lastTransitionTime": meta::now()}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE_NAME}],
            "nodeInfo": {"kubeletVersion": super::GIT_VERSION, "kubeProxyVersion": super::GIT_VERSION, "operatingSystem": "linux",
                         "architecture": "amd64", "containerRuntimeVersion": "arc-hook-sim://1", "osImage": "arc-hook simulator",
                         "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": ""},
        },
    })
}

/// The sim node's labels.
pub fn node_labels() -> Value {
    json!({
        "kubernetes.io/hostname": NODE_NAME,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    })
}

/// A request aimed at a resource.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static Resource,
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

enum Route {
    Doc(Value),
    Target(Target),
}

fn route(path: &str, server: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Doc(resources::version())),
        ["healthz" | "livez" | "readyz"] => return Some(Route::Doc(json!("ok"))),
        ["api"] => return Some(Route::Doc(resources::api_versions(server))),
        ["api", v] => return resources::resource_list("", v).map(Route::Doc),
        ["apis"] => return Some(Route::Doc(resources::api_group_list())),
        ["apis", g] => return resources::api_group(g).map(Route::Doc),
        ["apis", g, v] => return resources::resource_list(g, v).map(Route::Doc),
        ["openapi", "v3"] => return Some(Route::Doc(resources::openapi_v3_root())),
        ["openapi", "v3", "api", v] => return resources::openapi_v3_doc("", v).map(Route::Doc),
        ["openapi", "v3", "apis", g, v] => return resources::openapi_v3_doc(g, v).map(Route::Doc),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let owned = |s: &&str| Some(s.to_string());
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            let res = resources::find(group, version, plural)?;
            match tail {
                [] => Target {
                    res,
                    ns: owned(ns),
                    name: None,
                    sub: None,
                },
                [name] => Target {
                    res,
                    ns: owned(ns),
                    name: owned(name),
                    sub: None,
                },
                [name, sub] => Target {
                    res,
                    ns: owned(ns),
                    name: owned(name),
                    sub: owned(sub),
                },
                _ => return None,
            }
        }
        [plural, tail @ ..] => {
            let res = resources::find(group, version, plural)?;
            let t = match tail {
                [] => Target {
                    res,
                    ns: None,
                    name: None,
                    sub: None,
                },
                [name] if !res.namespaced => Target {
                    res,
                    ns: None,
                    name: owned(name),
                    sub: None,
                },
                [name, sub] if !res.namespaced => Target {
                    res,
                    ns: None,
                    name: owned(name),
                    sub: owned(sub),
                },
                _ => return None,
            };
            return Some(Route::Target(t));
        }
        _ => return None,
    };
    Some(Route::Target(t))
}

/// Query parameters, keeping repeats.
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(uri: &Uri) -> Query {
        Query(
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | "True"))
    }
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if t.name.is_none() => {
            if q.flag("watch") {
                "watch"
            } else {
                "list"
            }
        }
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    }
}

async fn dispatch(
    State(sim): State<Arc<SimState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let server = sim.addr.to_string();
    let Some(route) = route(uri.path(), &server) else {
        return ApiError::not_found_path().into_response();
    };
    let t = match route {
        Route::Doc(doc) => {
            return if method == Method::GET {
                json_response(StatusCode::OK, &doc)
            } else {
                ApiError::method_not_allowed().into_response()
            };
        }
        Route::Target(t) => t,
    };
    let q = Query::parse(&uri);
    let verb = verb_of(&method, &t, &q);
    if verb.is_empty() || !(t.res.verbs.contains(&verb) || t.sub.is_some()) {
        return ApiError::method_not_allowed().into_response();
    }
    let attrs = rbac::Attributes {
        verb,
        group: t.res.group,
        resource: t.res.plural,
        subresource: t.sub.as_deref(),
        namespace: t.ns.as_deref(),
        name: t.name.as_deref(),
    };
    if let Err(e) = rbac::authorize(sim.cfg.rbac.as_deref(), &sim.user, &attrs) {
        return e.into_response();
    }
    let accept = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let result = match verb {
        "get" if t.sub.as_deref() == Some("log") => return logs::handler(&sim, &t, &q).await,
        "get" => get(&sim, &t).map(|o| render_one(o, &accept, t.res)),
        "list" => list(&sim, &t, &q).map(|l| render_list(l, &accept, t.res)),
        "watch" => return watch::serve(sim.clone(), t, &q),
        "create" => create(&sim, &t, &q, &body)
            .await
            .map(|o| json_response(StatusCode::CREATED, &o)),
        "update" => update(&sim, &t, &body)
            .await
            .map(|o| json_response(StatusCode::OK, &o)),
        "patch" => patch(&sim, &t, &content_type, &body).await,
        "delete" => delete(&sim, &t, &q, &body)
            .await
            .map(|o| json_response(StatusCode::OK, &o)),
        "deletecollection" => delete_collection(&sim, &t, &q)
            .await
            .map(|o| json_response(StatusCode::OK, &o)),
        _ => Err(ApiError::method_not_allowed()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn render_one(obj: Value, accept: &str, res: &Resource) -> Response {
    if wants_table(accept) {
        json_response(StatusCode::OK, &table::table(res, &[obj], None))
    } else {
        json_response(StatusCode::OK, &obj)
    }
}

fn render_list(list: Value, accept: &str, res: &Resource) -> Response {
    if wants_table(accept) {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        json_response(StatusCode::OK, &table::table(res, &items, rv))
    } else {
        json_response(StatusCode::OK, &list)
    }
}

pub fn key_of(t: &Target) -> Key {
    Key::new(
        t.res.id,
        t.ns.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    )
}

fn not_found(t: &Target) -> ApiError {
    ApiError::not_found(t.res.plural, t.res.group, t.name.as_deref().unwrap_or(""))
}

/// Sets `apiVersion` and `kind`, as the API server does on every object it returns.
pub fn with_type(res: &Resource, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(res.api_version()));
        m.insert("kind".into(), json!(res.kind));
    }
    obj
}

fn get(sim: &SimState, t: &Target) -> Result<Value, ApiError> {
    if t.res.id == "events.events.k8s.io" {
        let core = sim.store.get(&Key::new(
            "events",
            t.ns.as_deref().unwrap_or(""),
            t.name.as_deref().unwrap_or(""),
        ));
        return core
            .map(|e| events::to_events_v1(&e))
            .ok_or_else(|| not_found(t));
    }
    sim.store.get(&key_of(t)).ok_or_else(|| not_found(t))
}

/// Parsed label and field selectors of a list or watch.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn from_query(q: &Query) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        Ok(Filter { labels, fields })
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&meta::labels(obj)) && self.fields.matches(obj)
    }
}

/// The store resource backing a served resource (events.k8s.io events are core events).
pub fn store_id(res: &Resource) -> &'static str {
    if res.id == "events.events.k8s.io" {
        "events"
    } else {
        res.id
    }
}

/// Converts a stored object to the served resource's shape.
pub fn present(res: &Resource, obj: &Value) -> Value {
    if res.id == "events.events.k8s.io" {
        events::to_events_v1(obj)
    } else {
        obj.clone()
    }
}

fn list(sim: &SimState, t: &Target, q: &Query) -> Result<Value, ApiError> {
    let filter = Filter::from_query(q)?;
    let (items, rv) = sim.store.list(store_id(t.res), t.ns.as_deref());
    let items: Vec<Value> = items
        .iter()
        .map(|o| present(t.res, o))
        .filter(|o| filter.matches(o))
        .collect();
    Ok(json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
        "items": items,
    }))
}

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

async fn create(
    sim: &Arc<SimState>,
    t: &Target,
    q: &Query,
    body: &[u8],
) -> Result<Value, ApiError> {
    if t.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let obj = with_type(t.res, parse_body(body)?);
    if t.res.id == "selfsubjectaccessreviews.authorization.k8s.io" {
        return Ok(rbac::review(sim.cfg.rbac.as_deref(), obj));
    }
    if t.res.id == "namespaces" {
        return create_namespace(sim, meta::name(&obj));
    }
    if t.res.id == "nodes" || t.res.id == "events.events.k8s.io" {
        return Err(ApiError::method_not_allowed());
    }
    create_checked(sim, t, obj, q.get("dryRun") == Some("All")).await
}

/// Creates an object on behalf of a controller, through the same admission as API clients.
pub async fn create_value(
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

/// Replaces the parts of `old` a write to `sub` may change with those of `new`.
fn apply_write(t: &Target, old: &Value, mut new: Value) -> Result<Value, ApiError> {
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

async fn update(sim: &Arc<SimState>, t: &Target, body: &[u8]) -> Result<Value, ApiError> {
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
    Ok(obj)
}

async fn patch(
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
        let obj = create(sim, &create_t, &Query(Vec::new()), body).await?;
        return Ok(json_response(StatusCode::CREATED, &obj));
    }
    let obj = write(sim, t, None, |old| {
        let mut next = old.clone();
        patch::apply(&mut next, content_type, body)?;
        apply_write(t, old, next)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &obj))
}

/// DeleteOptions from the query and the body.
pub struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
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
    DeleteOptions { grace, propagation }
}

async fn delete(
    sim: &Arc<SimState>,
    t: &Target,
    q: &Query,
    body: &[u8],
) -> Result<Value, ApiError> {
    let opts = delete_options(q, body);
    delete_object(
        sim,
        t.res,
        t.ns.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
        &opts,
    )
    .await
}

/// Deletes one object with the resource's semantics (graceful pods, cascading jobs and namespaces).
pub async fn delete_object(
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
            .delete(&key)
            .ok_or_else(|| ApiError::not_found(res.plural, res.group, name)),
    }
}

async fn delete_collection(sim: &Arc<SimState>, t: &Target, q: &Query) -> Result<Value, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(path, "x") {
            Some(Route::Target(t)) => t,
            _ => panic!("{path} is not a resource path"),
        }
    }

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        let t = target("/api/v1/namespaces/default/pods/p/log");
        assert_eq!(
            (
                t.res.id,
                t.ns.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("default"), Some("p"), Some("log"))
        );
        let t = target("/api/v1/namespaces/default");
        assert_eq!(
            (t.res.id, t.name.as_deref()),
            ("namespaces", Some("default"))
        );
        let t = target("/api/v1/pods");
        assert_eq!((t.res.id, t.ns.as_deref()), ("pods", None));
        let t = target("/apis/batch/v1/namespaces/ns/jobs/j");
        assert_eq!((t.res.id, t.name.as_deref()), ("jobs.batch", Some("j")));
        assert!(route("/apis/apps/v1/deployments", "x").is_none());
    }
}
