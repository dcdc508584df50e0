//! Authorization: the configured RBAC rules decide each request and SelfSubjectAccessReviews.

use serde_json::{Value, json};

use super::PolicyRule;
use super::status::ApiError;

/// What a request asks to do, in RBAC terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Whether `rules` (`None` = no RBAC) allow the request.
pub fn allowed(rules: Option<&[PolicyRule]>, a: &Attributes) -> bool {
    let Some(rules) = rules else { return true };
    // The built-in `system:basic-user` ClusterRole lets every authenticated user review its own access.
    if a.group == "authorization.k8s.io"
        && a.verb == "create"
        && matches!(
            a.resource,
            "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        )
    {
        return true;
    }
    let resource = match a.subresource {
        Some(s) => format!("{}/{s}", a.resource),
        None => a.resource.to_string(),
    };
    rules.iter().any(|r| r.allows(a.group, &resource, a.verb))
}

/// Checks a request, answering with kube-apiserver's Forbidden text when denied.
pub fn authorize(rules: Option<&[PolicyRule]>, user: &str, a: &Attributes) -> Result<(), ApiError> {
    if allowed(rules, a) {
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

/// Answers a SelfSubjectAccessReview: fills `status` from the same rules.
pub fn review(rules: Option<&[PolicyRule]>, mut review: Value) -> Value {
    let ra = review.pointer("/spec/resourceAttributes").cloned();
    let allowed = match &ra {
        None => true, // non-resource URLs: discovery is open to every authenticated user
        Some(ra) => {
            let s = |k: &str| ra.get(k).and_then(Value::as_str).unwrap_or("");
            let sub = s("subresource");
            let ns = s("namespace");
            let name = s("name");
            allowed(
                rules,
                &Attributes {
                    verb: s("verb"),
                    group: s("group"),
                    resource: s("resource"),
                    subresource: (!sub.is_empty()).then_some(sub),
                    namespace: (!ns.is_empty()).then_some(ns),
                    name: (!name.is_empty()).then_some(name),
                },
            )
        }
    };
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed by RoleBinding \"arc-runner\""})
    } else {
        json!({"allowed": false})
    };
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
            &attrs("create", "pods", Some("exec"), None)
        ));
        assert!(allowed(
            Some(&role),
            &attrs("get", "pods", Some("log"), None)
        ));
        assert!(!allowed(
            Some(&role),
            &attrs("create", "configmaps", None, None)
        ));
        assert!(allowed(None, &attrs("create", "configmaps", None, None)));
    }

    #[test]
    fn review_answers_from_the_rules() {
        let role = arc_chart_default_role();
        let r = review(
            Some(&role),
            json!({"spec": {"resourceAttributes": {"verb": "watch", "resource": "pods", "namespace": "default"}}}),
        );
        assert_eq!(r["status"]["allowed"], false);
        let r = review(
            Some(&role),
            json!({"spec": {"resourceAttributes": {"verb": "list", "resource": "pods", "namespace": "default"}}}),
        );
        assert_eq!(r["status"]["allowed"], true);
    }
}
