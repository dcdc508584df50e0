//! The resources the simulator serves and the discovery documents describing them.

use serde_json::{Value, json};

use super::GIT_VERSION;

/// One served resource.
#[derive(Debug)]
pub(crate) struct Resource {
    /// Store key: plural, with `.group` for non-core groups (`jobs.batch`).
    pub id: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub verbs: &'static [&'static str],
    pub short_names: &'static [&'static str],
    /// Subresources with the kind and verbs discovery lists for them.
    pub subresources: &'static [(&'static str, &'static str, &'static [&'static str])],
}

impl Resource {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const RW: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) static RESOURCES: &[Resource] = &[
    Resource {
        id: "pods",
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        verbs: RW,
        short_names: &["po"],
        subresources: &[
            ("status", "Pod", &["get", "patch", "update"]),
            ("log", "Pod", &["get"]),
            ("exec", "PodExecOptions", &["create", "get"]),
            ("ephemeralcontainers", "Pod", &["get", "patch", "update"]),
        ],
    },
    Resource {
        id: "namespaces",
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        verbs: &[
            "create", "delete", "get", "list", "patch", "update", "watch",
        ],
        short_names: &["ns"],
        subresources: &[("status", "Namespace", &["get", "patch", "update"])],
    },
    Resource {
        id: "nodes",
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        // patch/update: `kubectl taint` and `kubectl label` (the node's status stays the kubelet's).
        verbs: &["get", "list", "patch", "update", "watch"],
        short_names: &["no"],
        subresources: &[("status", "Node", &["get"])],
    },
    Resource {
        id: "secrets",
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        verbs: RW,
        short_names: &[],
        subresources: &[],
    },
    Resource {
        id: "configmaps",
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        verbs: RW,
        short_names: &["cm"],
        subresources: &[],
    },
    Resource {
        id: "persistentvolumeclaims",
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        verbs: RW,
        short_names: &["pvc"],
        subresources: &[(
            "status",
            "PersistentVolumeClaim",
            &["get", "patch", "update"],
        )],
    },
    Resource {
        id: "serviceaccounts",
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        verbs: RW,
        short_names: &["sa"],
        subresources: &[],
    },
    Resource {
        id: "services",
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        verbs: RW,
        short_names: &["svc"],
        subresources: &[],
    },
    Resource {
        id: "events",
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        verbs: RW,
        short_names: &["ev"],
        subresources: &[],
    },
    Resource {
        id: "events.events.k8s.io",
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        verbs: &["get", "list", "watch"],
        short_names: &["ev"],
        subresources: &[],
    },
    Resource {
        id: "jobs.batch",
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        verbs: RW,
        short_names: &[],
        subresources: &[("status", "Job", &["get", "patch", "update"])],
    },
    Resource {
        id: "leases.coordination.k8s.io",
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        verbs: RW,
        short_names: &[],
        subresources: &[],
    },
    Resource {
        id: "selfsubjectaccessreviews.authorization.k8s.io",
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        verbs: &["create"],
        short_names: &[],
        subresources: &[],
    },
    Resource {
        id: "selfsubjectrulesreviews.authorization.k8s.io",
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        verbs: &["create"],
        short_names: &[],
        subresources: &[],
    },
];

/// API groups beyond core, with their one version.
const GROUPS: &[(&str, &str)] = &[
    ("batch", "v1"),
    ("authorization.k8s.io", "v1"),
    ("events.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
];

/// Finds a resource by group, version and plural.
pub(crate) fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by store id.
pub(crate) fn by_id(id: &str) -> &'static Resource {
    RESOURCES
        .iter()
        .find(|r| r.id == id)
        .expect("store ids come from the resource table")
}

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": GIT_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-22T16:03:51Z",
        "goVersion": "go1.23.8",
        "compiler": "gc",
        "platform": "linux/amd64",
        "emulationMajor": "1",
        "emulationMinor": "32",
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": "31",
    })
}

pub(crate) fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn group_doc(name: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({"name": name, "versions": [gv.clone()], "preferredVersion": gv})
}

pub(crate) fn api_group_list() -> Value {
    let groups: Vec<Value> = GROUPS.iter().map(|(g, v)| group_doc(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn api_group(group: &str) -> Option<Value> {
    GROUPS.iter().find(|(g, _)| *g == group).map(|(g, v)| {
        let mut d = group_doc(g, v);
        d["kind"] = json!("APIGroup");
        d["apiVersion"] = json!("v1");
        d
    })
}

/// The resources of a group version, or `None` when it is not served.
fn served(group: &str, version: &str) -> Option<Vec<&'static Resource>> {
    let served: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    (!served.is_empty()).then_some(served)
}

/// The APIResourceList for a group version, or `None` when not served.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let served = served(group, version)?;
    let mut resources = Vec::new();
    for r in served {
        let mut doc = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            doc["shortNames"] = json!(r.short_names);
        }
        if matches!(r.plural, "pods" | "jobs" | "services") {
            doc["categories"] = json!(["all"]);
        }
        resources.push(doc);
        for (sub, kind, verbs) in r.subresources {
            resources.push(json!({
                "name": format!("{}/{sub}", r.plural),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The OpenAPI v3 discovery root: one document per served group version.
pub(crate) fn openapi_v3_root() -> Value {
    let mut paths = serde_json::Map::new();
    paths.insert(
        "api/v1".into(),
        json!({"serverRelativeURL": "/openapi/v3/api/v1?hash=0000000000000001"}),
    );
    for (g, v) in GROUPS {
        paths.insert(
            format!("apis/{g}/{v}"),
            json!({"serverRelativeURL": format!("/openapi/v3/apis/{g}/{v}?hash=0000000000000001")}),
        );
    }
    json!({"paths": paths})
}

/// A minimal OpenAPI v3 document for a group version: PATCH operations tagged with their kind and
/// the `fieldValidation` parameter, which is what kubectl checks before validating server-side.
pub(crate) fn openapi_v3_doc(group: &str, version: &str) -> Option<Value> {
    let served = served(group, version)?;
    let mut paths = serde_json::Map::new();
    for r in served.iter().filter(|r| r.verbs.contains(&"patch")) {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let params = ["dryRun", "fieldManager", "fieldValidation", "force"]
            .iter()
            .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
            .collect::<Vec<_>>();
        paths.insert(path, json!({"patch": {
            "operationId": format!("patch{}", r.kind),
            "parameters": params,
            "responses": {"200": {"description": "OK"}},
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
        }}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": GIT_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_has_a_resource_list() {
        assert!(resource_list("", "v1").is_some());
        for (g, v) in GROUPS {
            assert!(resource_list(g, v).is_some(), "{g}/{v}");
        }
        assert!(resource_list("apps", "v1").is_none());
    }

    #[test]
    fn subresources_are_listed() {
        let l = resource_list("", "v1").expect("core");
        let names: Vec<&str> = l["resources"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"pods/exec") && names.contains(&"pods/log"));
    }
}
