//! API errors as the `Status` objects kube-apiserver answers with.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One field error of an Invalid response: field path, `reason` (FieldValueInvalid...) and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cause {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

impl Cause {
    pub(crate) fn invalid(field: impl Into<String>, value: &str, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {detail}", json!(value)),
        }
    }
    pub(crate) fn required(field: impl Into<String>) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueRequired",
            message: "Required value".into(),
        }
    }
    pub(crate) fn duplicate(field: impl Into<String>, value: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: {}", json!(value)),
        }
    }
    pub(crate) fn not_found(field: impl Into<String>, value: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueNotFound",
            message: format!("Not found: {}", json!(value)),
        }
    }
    pub(crate) fn forbidden(field: impl Into<String>, detail: &str) -> Cause {
        Cause {
            field: field.into(),
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {detail}"),
        }
    }
    pub(crate) fn unsupported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| json!(s).to_string()).collect();
        Cause {
            field: field.into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                json!(value),
                list.join(", ")
            ),
        }
    }
    /// The `field: message` text kube-apiserver joins into an Invalid message.
    fn text(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

/// An error answered as a `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> ApiError {
        ApiError {
            code,
            reason,
            message,
            details,
        }
    }

    /// `pods "x" not found`.
    pub(crate) fn not_found(plural: &str, group: &str, name: &str) -> ApiError {
        let what = qualified(plural, group);
        ApiError::new(
            404,
            "NotFound",
            format!("{what} \"{name}\" not found"),
            Some(details(plural, group, Some(name))),
        )
    }

    /// `pods "x" already exists`.
    pub(crate) fn already_exists(plural: &str, group: &str, name: &str) -> ApiError {
        let what = qualified(plural, group);
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{what} \"{name}\" already exists"),
            Some(details(plural, group, Some(name))),
        )
    }

    /// The optimistic-concurrency failure of an update with a stale resourceVersion.
    pub(crate) fn conflict(plural: &str, group: &str, name: &str) -> ApiError {
        let what = qualified(plural, group);
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
            Some(json!({"name": name, "kind": plural})),
        )
    }

    /// A delete whose preconditions (UID, resourceVersion) the object no longer meets.
    /// A failed delete precondition: `details.kind` is the Kind (`Lease`), as the registry's
    /// Conflict names it.
    pub(crate) fn precondition_failed(
        kind: &str,
        group: &str,
        name: &str,
        message: String,
    ) -> ApiError {
        let mut details = json!({"name": name, "kind": kind});
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::new(409, "Conflict", message, Some(details))
    }

    /// `Pod "x" is invalid: ...` with one cause per field error.
    pub(crate) fn invalid(kind: &str, group: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let texts: Vec<String> = causes.iter().map(Cause::text).collect();
        let joined = if texts.len() == 1 {
            texts[0].clone()
        } else {
            format!("[{}]", texts.join(", "))
        };
        let kind_q = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let causes_json: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        let mut d = details(kind, group, Some(name));
        d["causes"] = json!(causes_json);
        ApiError::new(
            422,
            "Invalid",
            format!("{kind_q} \"{name}\" is invalid: {joined}"),
            Some(d),
        )
    }

    /// RBAC denial, worded like kube-apiserver's authorizer.
    pub(crate) fn forbidden(
        plural: &str,
        group: &str,
        name: Option<&str>,
        message: String,
    ) -> ApiError {
        ApiError::new(
            403,
            "Forbidden",
            message,
            Some(details(plural, group, name)),
        )
    }

    /// RBAC denial of a path outside resources.
    pub(crate) fn forbidden_path(message: String) -> ApiError {
        ApiError::new(403, "Forbidden", message, Some(json!({})))
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message.into(), None)
    }

    pub(crate) fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        )
    }

    pub(crate) fn not_found_path() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            Some(json!({})),
        )
    }

    pub(crate) fn gone(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message.into(), None)
    }

    pub(crate) fn unsupported_media(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type}; the arc-hook simulator decodes protobuf only for Secrets, ConfigMaps, Namespaces, ServiceAccounts, SelfSubjectAccessReviews and SelfSubjectRulesReviews: use kubectl apply/create -f with YAML or JSON)"
            ),
            None,
        )
    }

    pub(crate) fn too_many_requests() -> ApiError {
        ApiError::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.".into(),
            Some(json!({"retryAfterSeconds": 1})),
        )
    }

    pub(crate) fn internal(code: u16, message: &str) -> ApiError {
        let reason = if code == 503 {
            "ServiceUnavailable"
        } else {
            "InternalError"
        };
        ApiError::new(
            code,
            reason,
            format!("Internal error occurred: {message}"),
            Some(json!({"causes": [{"message": message}]})),
        )
    }

    /// The `Status` object.
    pub(crate) fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// A Status's `details`: what the error is about (the core group left out).
fn details(kind: &str, group: &str, name: Option<&str>) -> Value {
    let mut d = json!({"kind": kind});
    if let Some(n) = name {
        d["name"] = json!(n);
    }
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

/// `pods` or `jobs.batch`, as kube-apiserver names a resource in messages.
fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = http::StatusCode::from_u16(self.code)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        json_response(code, &self.to_status())
    }
}

/// A JSON response with the given status.
pub(crate) fn json_response(code: http::StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        code,
        [(http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

/// A 200 response whose body is what `rx` receives, as it comes; an `Err` cuts the connection
/// mid-body (a watch or a followed log).
pub(crate) fn streamed_response<E>(
    content_type: &'static str,
    mut rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, E>>,
) -> Response
where
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_else(|_| {
            ApiError::internal(500, "cannot build a streamed response").into_response()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_message_names_fields_like_the_api_server() {
        let e = ApiError::invalid(
            "Pod",
            "",
            "Bad_Name",
            vec![Cause::invalid("metadata.name", "Bad_Name", "bad")],
        );
        assert_eq!(
            e.message,
            "Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": bad"
        );
        let e = ApiError::invalid(
            "Pod",
            "",
            "p",
            vec![Cause::required("a"), Cause::required("b")],
        );
        assert_eq!(
            e.message,
            "Pod \"p\" is invalid: [a: Required value, b: Required value]"
        );
        assert_eq!(e.to_status()["details"]["causes"][1]["field"], "b");
    }

    #[test]
    fn not_found_and_conflict_texts() {
        assert_eq!(
            ApiError::not_found("pods", "", "x").message,
            "pods \"x\" not found"
        );
        assert_eq!(
            ApiError::not_found("jobs", "batch", "j").message,
            "jobs.batch \"j\" not found"
        );
        assert!(
            ApiError::conflict("pods", "", "x")
                .message
                .starts_with("Operation cannot be fulfilled on pods \"x\"")
        );
    }
}
