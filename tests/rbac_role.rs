//! deploy/rbac/role.yaml grants exactly the permissions the code can use (`k8s::rbac::all_permissions`):
//! secrets only create and delete, the runner reading none of its namespace's secrets.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::Role;

#[test]
fn role_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac/role.yaml");
    let role: Role = serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("role.yaml"))
        .expect("a Role");
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap_or_default() {
        if rule.resource_names.as_ref().is_some_and(|n| !n.is_empty()) {
            // The one named rule an operator may add: get on the build push secret.
            assert!(
                rule.resources.as_deref() == Some(&["secrets".to_string()][..])
                    && rule.verbs == ["get"],
                "role.yaml's named rule grants more than get on the push secret: {rule:?}"
            );
            continue;
        }
        for g in rule.api_groups.unwrap_or_default() {
            for r in rule.resources.clone().unwrap_or_default() {
                for v in &rule.verbs {
                    granted.insert(format!("{v} {r} ({g})"));
                }
            }
        }
    }
    let used: BTreeSet<String> = arc_hook::k8s::rbac::all_permissions()
        .iter()
        .map(|p| {
            let r = if p.subresource.is_empty() {
                p.resource.to_string()
            } else {
                format!("{}/{}", p.resource, p.subresource)
            };
            format!("{} {r} ({})", p.verb, p.group)
        })
        .collect();
    let extra: Vec<_> = granted.difference(&used).collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "role.yaml grants unused {extra:?} and lacks {missing:?}"
    );
}
