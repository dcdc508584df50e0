//! The API permissions each command needs or can use, checked once per command with SelfSubjectAccessReviews.

use futures::future::join_all;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;

use super::retry::with_retry;
use super::{K8sError, Kube};
use crate::protocol::CommandName;

/// One API permission: `verb` on `resource[/subresource]` in API group `group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub verb: &'static str,
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        if self.subresource.is_empty() {
            write!(f, "{} {}{g}", self.verb, self.resource)
        } else {
            write!(f, "{} {}/{}{g}", self.verb, self.resource, self.subresource)
        }
    }
}

const fn p(
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verb: &'static str,
) -> Permission {
    Permission {
        group,
        resource,
        subresource,
        verb,
    }
}

/// An optional permission and what arc-hook does better with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// Watch pods instead of polling them.
    WatchPods,
    /// Read events to explain why a pod does not start.
    ListEvents,
    /// Run container steps as ephemeral containers in the job pod.
    EphemeralContainers,
    /// Record start-up times as an annotation on the workflow pod.
    AnnotatePods,
}

impl Extra {
    pub const ALL: [Extra; 4] = [
        Extra::WatchPods,
        Extra::ListEvents,
        Extra::EphemeralContainers,
        Extra::AnnotatePods,
    ];

    pub fn permissions(self) -> &'static [Permission] {
        const WATCH_PODS: &[Permission] = &[p("", "pods", "", "watch")];
        const LIST_EVENTS: &[Permission] = &[p("", "events", "", "list")];
        const EPHEMERAL: &[Permission] = &[p("", "pods", "ephemeralcontainers", "patch")];
        const ANNOTATE: &[Permission] = &[p("", "pods", "", "patch")];
        match self {
            Extra::WatchPods => WATCH_PODS,
            Extra::ListEvents => LIST_EVENTS,
            Extra::EphemeralContainers => EPHEMERAL,
            Extra::AnnotatePods => ANNOTATE,
        }
    }
}

/// What each command cannot do without. All of it is in the Role ARC's chart creates by default.
pub fn required(command: CommandName) -> &'static [Permission] {
    const PREPARE: &[Permission] = &[
        p("", "pods", "", "get"),
        p("", "pods", "", "list"),
        p("", "pods", "", "create"),
        p("", "pods", "", "delete"),
        p("", "pods", "exec", "get"),
        p("", "pods", "exec", "create"),
        p("", "secrets", "", "get"),
        p("", "secrets", "", "list"),
        p("", "secrets", "", "create"),
        p("", "secrets", "", "delete"),
    ];
    const SCRIPT: &[Permission] = &[
        p("", "pods", "", "get"),
        p("", "pods", "exec", "get"),
        p("", "pods", "exec", "create"),
    ];
    const CONTAINER: &[Permission] = &[
        p("", "pods", "", "get"),
        p("", "pods", "", "list"),
        p("", "pods", "log", "get"),
        p("", "pods", "exec", "create"),
        p("", "secrets", "", "get"),
        p("", "secrets", "", "create"),
        p("", "secrets", "", "delete"),
    ];
    const CLEANUP: &[Permission] = &[
        p("", "pods", "", "list"),
        p("", "pods", "", "delete"),
        p("", "secrets", "", "list"),
        p("", "secrets", "", "delete"),
    ];
    match command {
        CommandName::PrepareJob => PREPARE,
        CommandName::RunScriptStep => SCRIPT,
        CommandName::RunContainerStep => CONTAINER,
        CommandName::CleanupJob => CLEANUP,
    }
}

/// Optional extras each command can use.
pub fn extras(command: CommandName) -> &'static [Extra] {
    match command {
        CommandName::PrepareJob => &[Extra::WatchPods, Extra::ListEvents, Extra::AnnotatePods],
        CommandName::RunScriptStep => &[],
        CommandName::RunContainerStep => &[
            Extra::WatchPods,
            Extra::ListEvents,
            Extra::EphemeralContainers,
        ],
        CommandName::CleanupJob => &[Extra::WatchPods],
    }
}

/// Batch Jobs, needed only where container steps run as Jobs (and cleaned up where granted).
pub const JOB_PERMISSIONS: &[Permission] = &[
    p("batch", "jobs", "", "get"),
    p("batch", "jobs", "", "list"),
    p("batch", "jobs", "", "create"),
    p("batch", "jobs", "", "delete"),
];

/// Every permission arc-hook ever uses; deploy/rbac's Role must grant exactly these.
pub fn all_permissions() -> Vec<Permission> {
    let mut all: Vec<Permission> = [
        CommandName::PrepareJob,
        CommandName::RunScriptStep,
        CommandName::RunContainerStep,
        CommandName::CleanupJob,
    ]
    .into_iter()
    .flat_map(|c| required(c).iter().copied())
    .chain(
        Extra::ALL
            .iter()
            .flat_map(|e| e.permissions().iter().copied()),
    )
    .chain(JOB_PERMISSIONS.iter().copied())
    .collect();
    all.sort();
    all.dedup();
    all
}

/// What the service account may do, as far as this command cares.
#[derive(Debug, Clone, Default)]
pub struct Granted {
    pub missing_required: Vec<Permission>,
    pub extras: Vec<Extra>,
    pub jobs: bool,
}

impl Granted {
    pub fn has(&self, e: Extra) -> bool {
        self.extras.contains(&e)
    }
}

async fn allowed(kube: &Kube, perm: Permission) -> Result<bool, K8sError> {
    let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(kube.client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(kube.namespace.clone()),
                group: Some(perm.group.to_string()),
                resource: Some(perm.resource.to_string()),
                subresource: (!perm.subresource.is_empty()).then(|| perm.subresource.to_string()),
                verb: Some(perm.verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let pp = PostParams::default();
    let r = with_retry(&format!("checking permission {perm}"), || {
        api.create(&pp, &review)
    })
    .await?;
    Ok(r.status.is_some_and(|s| s.allowed))
}

/// Asks, in parallel, for every permission `command` needs or can use.
/// If the reviews themselves cannot be made, the extras are assumed absent and the required
/// permissions are left for the API to enforce.
pub async fn check(kube: &Kube, command: CommandName, with_jobs: bool) -> Granted {
    let req = required(command);
    let extra_perms: Vec<(Extra, Permission)> = extras(command)
        .iter()
        .flat_map(|e| e.permissions().iter().map(move |p| (*e, *p)))
        .collect();
    let job_perms: &[Permission] = if with_jobs { JOB_PERMISSIONS } else { &[] };
    let all: Vec<Permission> = req
        .iter()
        .copied()
        .chain(extra_perms.iter().map(|(_, p)| *p))
        .chain(job_perms.iter().copied())
        .collect();
    let answers = join_all(all.iter().map(|p| allowed(kube, *p))).await;
    if let Some(Err(e)) = answers.iter().find(|a| a.is_err()) {
        tracing::warn!(
            "cannot review permissions ({}); using only what ARC's default Role grants",
            e.chain()
        );
        return Granted::default();
    }
    let ok = |perm: &Permission| {
        all.iter()
            .zip(&answers)
            .any(|(p, a)| p == perm && matches!(a, Ok(true)))
    };
    let missing_required = req.iter().copied().filter(|p| !ok(p)).collect();
    let mut extras = Vec::new();
    for e in extras_of(command) {
        if e.permissions().iter().all(ok) {
            extras.push(e);
        }
    }
    let jobs = with_jobs && JOB_PERMISSIONS.iter().all(ok);
    Granted {
        missing_required,
        extras,
        jobs,
    }
}

fn extras_of(command: CommandName) -> impl Iterator<Item = Extra> {
    extras(command).iter().copied()
}

/// One line naming what is missing, for the job log.
pub fn missing_message(missing: &[Permission], namespace: &str) -> String {
    let list: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
    format!(
        "the runner's service account may not {} in namespace {namespace}; grant them in the runner's Role (deploy/rbac/role.yaml has the full list)",
        list.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        assert_eq!(
            p("", "pods", "exec", "create").to_string(),
            "create pods/exec"
        );
        assert_eq!(
            p("batch", "jobs", "", "list").to_string(),
            "list jobs.batch"
        );
    }

    #[test]
    fn required_fits_arc_default_role() {
        // ARC's default Role for kubernetes mode.
        let arc: Vec<Permission> = [
            (
                "pods",
                "",
                &["get", "list", "create", "delete", "update", "patch"][..],
            ),
            ("pods", "exec", &["get", "create"][..]),
            ("pods", "log", &["get", "list", "watch"][..]),
            ("secrets", "", &["get", "list", "create", "delete"][..]),
        ]
        .iter()
        .flat_map(|(r, s, verbs)| verbs.iter().map(move |v| p("", r, s, v)))
        .collect();
        for c in [
            CommandName::PrepareJob,
            CommandName::RunScriptStep,
            CommandName::RunContainerStep,
            CommandName::CleanupJob,
        ] {
            for perm in required(c) {
                assert!(
                    arc.contains(perm),
                    "{} needs {perm}, which ARC's default Role lacks",
                    c.as_str()
                );
            }
        }
    }

    #[test]
    fn all_is_sorted_and_unique() {
        let all = all_permissions();
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(all, sorted);
        assert!(all.contains(&p("", "pods", "", "watch")));
        assert!(all.contains(&p("batch", "jobs", "", "create")));
    }

    #[test]
    fn missing_is_one_line() {
        let m = missing_message(
            &[
                p("", "pods", "exec", "create"),
                p("", "secrets", "", "delete"),
            ],
            "ci",
        );
        assert_eq!(
            m,
            "the runner's service account may not create pods/exec, delete secrets in namespace ci; grant them in the runner's Role (deploy/rbac/role.yaml has the full list)"
        );
    }
}
