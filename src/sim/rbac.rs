//! Authorization: the configured RBAC rules decide each request, SelfSubjectAccessReviews and
//! SelfSubjectRulesReviews (one decision, so `kubectl auth can-i` answers what requests meet).

use serde_json::{Value, json};

use super::PolicyRule;
use super::status::{ApiError, Cause};

/// What a request asks to do, in RBAC terms.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The paths outside resources every authenticated user may GET (the built-in
/// `system:discovery` and `system:public-info-viewer` ClusterRoles): the documents the
/// simulator serves there.
const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
];

/// What the built-in `system:basic-user` ClusterRole grants every authenticated user: asking
/// what it may do, and who it is.
fn basic_user_rules() -> [PolicyRule; 2] {
    [
        PolicyRule::new(
            &["authentication.k8s.io"],
            &["selfsubjectreviews"],
            &["create"],
        ),
        PolicyRule::new(
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            &["create"],
        ),
    ]
}

/// The non-resource rules every authenticated user holds, as a rules review lists them: the
/// `system:service-account-issuer-discovery`, `system:discovery` and
/// `system:public-info-viewer` ClusterRoles.
const NON_RESOURCE_RULES: [&[&str]; 3] = [
    &[
        "/.well-known/openid-configuration",
        "/.well-known/openid-configuration/",
        "/openid/v1/jwks",
        "/openid/v1/jwks/",
    ],
    DISCOVERY_URLS,
    &["/healthz", "/livez", "/readyz", "/version", "/version/"],
];

/// Whether `rules` (`None` = no RBAC), a Role bound in namespace `scope`, allow the request:
/// only inside `scope` (a Role grants nothing in other namespaces or at the cluster scope);
/// the built-in rules apply everywhere.
pub(crate) fn allowed(rules: Option<&[PolicyRule]>, scope: &str, a: &Attributes) -> bool {
    let Some(rules) = rules else { return true };
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let in_scope = a.namespace == Some(scope);
    basic_user_rules()
        .iter()
        .chain(rules.iter().filter(|r| in_scope || r.cluster_wide))
        .any(|r| r.allows(a.group, &resource, a.verb))
}

/// Whether `rules` (`None` = no RBAC) allow `verb` on a path outside resources (discovery,
/// health, version, OpenAPI).
pub(crate) fn non_resource_allowed(rules: Option<&[PolicyRule]>, verb: &str, path: &str) -> bool {
    if rules.is_none() {
        return true;
    }
    verb == "get"
        && NON_RESOURCE_RULES
            .iter()
            .flat_map(|urls| urls.iter())
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == *pattern,
            })
}

/// Checks a request, answering with kube-apiserver's Forbidden text when denied.
pub(crate) fn authorize(
    rules: Option<&[PolicyRule]>,
    scope: &str,
    user: &str,
    a: &Attributes,
) -> Result<(), ApiError> {
    if allowed(rules, scope, a) {
        return Ok(());
    }
    let qualified = if a.group.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let shown_resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    let subject = match a.name {
        Some(n) if !n.is_empty() => format!("{qualified} \"{n}\""),
        _ => qualified,
    };
    let scope = match a.namespace {
        Some(ns) if !ns.is_empty() => format!("in the namespace \"{ns}\""),
        _ => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{shown_resource}\" in API group \"{group}\" {scope}",
        verb = a.verb,
        group = a.group
    );
    Err(ApiError::forbidden(
        a.resource,
        a.group,
        a.name.filter(|n| !n.is_empty()),
        message,
    ))
}

/// Checks a GET of a path outside resources, answering with kube-apiserver's Forbidden text.
pub(crate) fn authorize_non_resource(
    rules: Option<&[PolicyRule]>,
    user: &str,
    verb: &str,
    path: &str,
) -> Result<(), ApiError> {
    if non_resource_allowed(rules, verb, path) {
        return Ok(());
    }
    Err(ApiError::forbidden_path(format!(
        "forbidden: User \"{user}\" cannot {verb} path \"{path}\""
    )))
}

/// Why a review found its request allowed, in the words kube-apiserver's RBAC authorizer uses.
fn allowed_reason(rules: Option<&[PolicyRule]>) -> &'static str {
    if rules.is_some() {
        "RBAC: allowed by RoleBinding \"arc-runner\""
    } else {
        "the arc-hook simulator enforces no RBAC (sim serve --default-role enforces the runner Role)"
    }
}

/// Answers a SelfSubjectAccessReview: fills `status` from the same decision that requests meet,
/// and echoes the spec as kube-apiserver does (empty attributes dropped, empty metadata).
pub(crate) fn review(
    rules: Option<&[PolicyRule]>,
    scope: &str,
    mut review: Value,
) -> Result<Value, ApiError> {
    let attr = |ra: &Value, k: &str| -> String {
        ra.get(k).and_then(Value::as_str).unwrap_or("").to_string()
    };
    let resource = review.pointer("/spec/resourceAttributes").cloned();
    let non_resource = review.pointer("/spec/nonResourceAttributes").cloned();
    let decision = match (&resource, &non_resource) {
        (Some(ra), None) => {
            let (sub, ns, name) = (
                attr(ra, "subresource"),
                attr(ra, "namespace"),
                attr(ra, "name"),
            );
            allowed(
                rules,
                scope,
                &Attributes {
                    verb: &attr(ra, "verb"),
                    group: &attr(ra, "group"),
                    resource: &attr(ra, "resource"),
                    subresource: (!sub.is_empty()).then_some(sub.as_str()),
                    namespace: (!ns.is_empty()).then_some(ns.as_str()),
                    name: (!name.is_empty()).then_some(name.as_str()),
                },
            )
        }
        (None, Some(nra)) => non_resource_allowed(rules, &attr(nra, "verb"), &attr(nra, "path")),
        _ => {
            return Err(ApiError::invalid(
                "SelfSubjectAccessReview",
                "authorization.k8s.io",
                "",
                vec![Cause::invalid(
                    "spec.resourceAttributes",
                    "null",
                    "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                )],
            ));
        }
    };
    review["status"] = if decision {
        json!({"allowed": true, "reason": allowed_reason(rules)})
    } else {
        json!({"allowed": false})
    };
    for attributes in ["resourceAttributes", "nonResourceAttributes"] {
        if let Some(m) = review
            .pointer_mut(&format!("/spec/{attributes}"))
            .and_then(Value::as_object_mut)
        {
            m.retain(|_, v| v != "");
        }
    }
    review["metadata"] = json!({});
    Ok(review)
}

/// Answers a SelfSubjectRulesReview: the rules the simulator enforces in the review's namespace
/// (everything, `*`, without RBAC), with the built-in ones every authenticated user holds. As
/// kube-apiserver's, the answer carries only the status (an empty spec).
pub(crate) fn rules_review(rules: Option<&[PolicyRule]>, scope: &str, review: Value) -> Value {
    let resource_rule = |r: &PolicyRule| json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
    let in_scope = review.pointer("/spec/namespace").and_then(Value::as_str) == Some(scope);
    let status = match rules {
        None => json!({
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": false,
        }),
        Some(rules) => {
            let resource_rules: Vec<Value> = rules
                .iter()
                .filter(|_| in_scope)
                .chain(basic_user_rules().iter())
                .map(resource_rule)
                .collect();
            let non_resource_rules: Vec<Value> = NON_RESOURCE_RULES
                .iter()
                .map(|urls| json!({"verbs": ["get"], "nonResourceURLs": urls}))
                .collect();
            json!({
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": false,
            })
        }
    };
    json!({
        "kind": review["kind"],
        "apiVersion": review["apiVersion"],
        "metadata": {},
        "spec": {},
        "status": status,
    })
}

/// A rules review as a cluster with an authorizer that cannot list its rules answers it.
pub(crate) fn incomplete_rules_review(mut review: Value) -> Value {
    review["status"] = json!({
        "resourceRules": [],
        "nonResourceRules": [],
        "incomplete": true,
        "evaluationError": "webhook authorizer: rules cannot be listed",
    });
    review
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::arc_chart_default_role;

    fn attrs<'a>(
        verb: &'a str,
        resource: &'a str,
        sub: Option<&'a str>,
        name: Option<&'a str>,
    ) -> Attributes<'a> {
        Attributes {
            verb,
            group: "",
            resource,
            subresource: sub,
            namespace: Some("default"),
            name,
        }
    }

    #[test]
    fn denial_text_matches_kube_apiserver() {
        let role = arc_chart_default_role();
        let e = authorize(
            Some(&role),
            "default",
            "system:serviceaccount:default:arc-runner",
            &attrs("watch", "pods", None, Some("x")),
        )
        .expect_err("denied");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods \"x\" is forbidden: User \"system:serviceaccount:default:arc-runner\" cannot watch resource \"pods\" in API group \"\" in the namespace \"default\""
        );
    }

    #[test]
    fn chart_role_grants_exec_and_logs() {
        let role = arc_chart_default_role();
        assert!(allowed(
            Some(&role),
            "default",
            &attrs("create", "pods", Some("exec"), None)
        ));
        assert!(allowed(
            Some(&role),
            "default",
            &attrs("get", "pods", Some("log"), None)
        ));
        assert!(!allowed(
            Some(&role),
            "default",
            &attrs("create", "configmaps", None, None)
        ));
        assert!(allowed(
            None,
            "default",
            &attrs("create", "configmaps", None, None)
        ));
    }

    #[test]
    fn review_answers_from_the_rules() {
        let role = arc_chart_default_role();
        let ask = |rules: Option<&[PolicyRule]>, spec: Value| {
            review(rules, "default", json!({"spec": spec})).expect("a valid review")["status"]["allowed"]
                .clone()
        };
        let watch = json!({"resourceAttributes": {"verb": "watch", "resource": "pods", "namespace": "default"}});
        assert_eq!(ask(Some(&role), watch.clone()), false);
        assert_eq!(ask(None, watch), true);
        let list = json!({"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "default"}});
        assert_eq!(ask(Some(&role), list), true);
        let exec = json!({"resourceAttributes": {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": "default"}});
        assert_eq!(ask(Some(&role), exec), true);
        // A Role grants nothing at the cluster scope.
        let anywhere = json!({"resourceAttributes": {"verb": "create", "resource": "pods", "subresource": "exec"}});
        assert_eq!(ask(Some(&role), anywhere), false);
        let nodes = json!({"resourceAttributes": {"verb": "create", "resource": "nodes"}});
        assert_eq!(ask(Some(&role), nodes), false);
        let own_access = json!({"resourceAttributes": {"verb": "create", "group": "authorization.k8s.io", "resource": "selfsubjectrulesreviews"}});
        assert_eq!(ask(Some(&role), own_access), true);
        let discovery = json!({"nonResourceAttributes": {"verb": "get", "path": "/apis/batch/v1"}});
        assert_eq!(ask(Some(&role), discovery), true);
        let metrics = json!({"nonResourceAttributes": {"verb": "get", "path": "/metrics"}});
        assert_eq!(ask(Some(&role), metrics.clone()), false);
        assert_eq!(ask(None, metrics), true);
    }

    #[test]
    fn review_without_attributes_is_invalid() {
        let e = review(None, "default", json!({"spec": {}})).expect_err("invalid");
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("exactly one of nonResourceAttributes or resourceAttributes")
        );
    }

    #[test]
    fn rules_review_lists_what_is_enforced() {
        let role = arc_chart_default_role();
        let r = rules_review(
            Some(&role),
            "default",
            json!({"spec": {"namespace": "default"}}),
        );
        let rules = r["status"]["resourceRules"].as_array().expect("rules");
        assert_eq!(
            rules.len(),
            role.len() + 2,
            "the role and system:basic-user's two rules"
        );
        assert!(
            rules.iter().any(|r| r["resources"] == json!(["pods/exec"])
                && r["verbs"] == json!(["get", "create"]))
        );
        assert_eq!(r["status"]["nonResourceRules"][0]["verbs"], json!(["get"]));
        // The Role is bound in its namespace only.
        let elsewhere = rules_review(
            Some(&role),
            "default",
            json!({"spec": {"namespace": "kube-system"}}),
        );
        assert_eq!(
            elsewhere["status"]["resourceRules"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert!(!allowed(
            Some(&role),
            "default",
            &Attributes {
                namespace: Some("kube-system"),
                ..attrs("get", "pods", None, None)
            }
        ));
        let everything = rules_review(None, "default", json!({"spec": {"namespace": "default"}}));
        assert_eq!(
            everything["status"]["resourceRules"],
            json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}])
        );
    }

    #[test]
    fn discovery_paths_are_open_and_others_denied_under_a_role() {
        let role = arc_chart_default_role();
        for path in [
            "/api",
            "/api/v1",
            "/apis/batch/v1",
            "/version",
            "/openapi/v3",
        ] {
            assert!(non_resource_allowed(Some(&role), "get", path), "{path}");
        }
        assert!(!non_resource_allowed(Some(&role), "post", "/api"));
        let e = authorize_non_resource(Some(&role), "u", "get", "/metrics").expect_err("denied");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "forbidden: User \"u\" cannot get path \"/metrics\""
        );
    }
}
