//! The REST API's routing, discovery, RBAC and reads (writes live in `write`, watches in `watch`).

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
use super::store::Key;
use super::{SimState, events, exec, faults, logs, meta, protobuf, rbac, table, watch, write};

pub(crate) fn router(state: Arc<SimState>) -> Router {
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

/// A request aimed at a resource.
#[derive(Debug, Clone)]
pub(crate) struct Target {
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
pub(crate) struct Query(pub Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(uri: &Uri) -> Query {
        Query(
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub(crate) fn flag(&self, k: &str) -> bool {
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
        Route::Doc(mut doc) => {
            if sim.cfg.exec_v4_only && uri.path().trim_matches('/') == "version" {
                // A server that speaks exec v4 only is one before 1.30.
                doc["minor"] = json!("29");
                doc["gitVersion"] = json!("v1.29.14");
                doc["emulationMinor"] = json!("29");
                doc["minCompatibilityMinor"] = json!("28");
            }
            if method != Method::GET {
                return ApiError::method_not_allowed().into_response();
            }
            let rules = sim.cfg.rbac.as_deref();
            return match rbac::authorize_non_resource(rules, &sim.user, "get", uri.path()) {
                Ok(()) => json_response(StatusCode::OK, &doc),
                Err(e) => e.into_response(),
            };
        }
        Route::Target(t) => t,
    };
    let q = Query::parse(&uri);
    let verb = verb_of(&method, &t, &q);
    if verb.is_empty() || !(t.res.verbs.contains(&verb) || t.sub.is_some()) {
        return ApiError::method_not_allowed().into_response();
    }
    sim.record_request(request_line(verb, &t, &body));
    let attrs = rbac::Attributes {
        verb,
        group: t.res.group,
        resource: t.res.plural,
        subresource: t.sub.as_deref(),
        namespace: t.ns.as_deref(),
        name: t.name.as_deref(),
    };
    let admin = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(super::ADMIN_BEARER);
    if !admin
        && let Err(e) = rbac::authorize(
            sim.cfg.rbac.as_deref(),
            &sim.cfg.namespace,
            &sim.user,
            &attrs,
        )
    {
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
    let body_verb = matches!(verb, "create" | "update");
    let body = if body_verb && content_type.contains("protobuf") {
        // kubectl's generators (`create secret|configmap|namespace|serviceaccount`) send protobuf.
        match protobuf::decode(&body) {
            Some(obj) => Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()),
            None => return ApiError::unsupported_media(&content_type).into_response(),
        }
    } else if body_verb && content_type.contains("cbor") {
        return ApiError::unsupported_media(&content_type).into_response();
    } else {
        body
    };
    let ok = |o: Value| json_response(StatusCode::OK, &o);
    let result = match verb {
        "get" if t.sub.as_deref() == Some("log") => return logs::handler(&sim, &t, &q).await,
        "get" => get(&sim, &t).map(|o| render_one(o, &accept, t.res)),
        "list" => list(&sim, &t, &q).map(|l| render_list(l, &accept, t.res)),
        "watch" => return watch::serve(sim.clone(), t, &q, wants_table(&accept)),
        "create" => write::create(&sim, &t, &q, &body)
            .await
            .map(|c| write::with_warnings(json_response(StatusCode::CREATED, &c.obj), &c.warnings)),
        "update" => write::update(&sim, &t, &body).await.map(ok),
        "patch" => write::patch(&sim, &t, &content_type, &body).await,
        "delete" => write::delete(&sim, &t, &q, &body).await.map(ok),
        "deletecollection" => write::delete_collection(&sim, &t, &q).await.map(ok),
        _ => Err(ApiError::method_not_allowed()),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The request log's line: `verb resource[/sub] [name]`; an access review adds what it asks.
fn request_line(verb: &str, t: &Target, body: &[u8]) -> String {
    let mut line = format!("{verb} {}", t.res.id);
    if let Some(sub) = &t.sub {
        line.push('/');
        line.push_str(sub);
    }
    if let Some(name) = &t.name {
        line.push(' ');
        line.push_str(name);
    }
    if t.res.id == "selfsubjectaccessreviews.authorization.k8s.io"
        && let Ok(review) = serde_json::from_slice::<Value>(body)
        && let Some(a) = review.pointer("/spec/resourceAttributes")
    {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("");
        let sub = if s("subresource").is_empty() {
            String::new()
        } else {
            format!("/{}", s("subresource"))
        };
        line.push_str(&format!(" ({} {}{sub})", s("verb"), s("resource")));
    }
    line
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
        // A list's items carry no kind or apiVersion (the list's own say them), as
        // kube-apiserver encodes built-in lists.
        let mut list = list;
        if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
            for item in items.iter_mut().filter_map(Value::as_object_mut) {
                item.remove("kind");
                item.remove("apiVersion");
            }
        }
        json_response(StatusCode::OK, &list)
    }
}

pub(crate) fn key_of(t: &Target) -> Key {
    Key::new(
        t.res.id,
        t.ns.as_deref().unwrap_or(""),
        t.name.as_deref().unwrap_or(""),
    )
}

pub(crate) fn not_found(t: &Target) -> ApiError {
    ApiError::not_found(t.res.plural, t.res.group, t.name.as_deref().unwrap_or(""))
}

/// Sets `apiVersion` and `kind`, as the API server does on every object it returns.
pub(crate) fn with_type(res: &Resource, mut obj: Value) -> Value {
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
pub(crate) struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub(crate) fn from_query(q: &Query) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        Ok(Filter { labels, fields })
    }
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(&meta::labels(obj)) && self.fields.matches(obj)
    }
}

/// The store resource backing a served resource (events.k8s.io events are core events).
pub(crate) fn store_id(res: &Resource) -> &'static str {
    if res.id == "events.events.k8s.io" {
        "events"
    } else {
        res.id
    }
}

/// Converts a stored object to the served resource's shape.
pub(crate) fn present(res: &Resource, obj: &Value) -> Value {
    if res.id == "events.events.k8s.io" {
        events::to_events_v1(obj)
    } else {
        obj.clone()
    }
}

pub(crate) fn list(sim: &SimState, t: &Target, q: &Query) -> Result<Value, ApiError> {
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
