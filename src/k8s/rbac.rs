//! The API permissions each command needs or can use, reviewed once per command: one
//! SelfSubjectRulesReview where the cluster's authorizers can list their rules (RBAC), else one
//! SelfSubjectAccessReview per permission.

use futures::future::join_all;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, ResourceRule, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    SelfSubjectRulesReview, SelfSubjectRulesReviewSpec,
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

impl Permission {
    /// Whether the resource lives outside namespaces (nodes): only a ClusterRole, bound by a
    /// ClusterRoleBinding, grants it, and its access review names no namespace.
    pub(crate) fn cluster_scoped(&self) -> bool {
        self.resource == "nodes"
    }
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
pub(crate) enum Extra {
    /// Watch pods instead of polling them.
    WatchPods,
    /// Read events to explain why a pod does not start.
    ListEvents,
    /// Run container steps as ephemeral containers in the job pod.
    EphemeralContainers,
    /// Record start-up times as an annotation on the workflow pod.
    AnnotatePods,
    /// Run container steps as batch Jobs (and remove a previous job's leftover Jobs).
    BatchJobs,
    /// Take cache slots with Leases the workflow pod owns (else with Secrets cleanup_job removes).
    SlotLeases,
    /// Read the runner's node, to wait for its start-up taints (asked only where
    /// `ARC_HOOK_WAIT_FOR_NODE_TAINTS` is set; a ClusterRole's, so not in [`Extra::ALL`]).
    ReadNodes,
    /// Watch the runner's node rather than read it again and again (as [`Extra::ReadNodes`]).
    WatchNodes,
    /// List secrets, to sweep this runner's secrets by label (ARC's chart's Role grants it;
    /// deploy/rbac's does not): without it the hook deletes the secrets it knows by name and the
    /// garbage collector removes the rest with their owner pod.
    ListSecrets,
    /// Get and list secrets, to take cache slots with Secret locks where leases are not granted.
    SlotSecrets,
}

impl Extra {
    /// Every extra the namespace's Role (deploy/rbac/role.yaml) grants; the node extras need a
    /// ClusterRole and are asked only when configured, and the secret-reading extras are what
    /// deploy/rbac leaves out on purpose (a runner reads no secret of its namespace).
    pub(crate) const ALL: [Extra; 6] = [
        Extra::WatchPods,
        Extra::ListEvents,
        Extra::EphemeralContainers,
        Extra::AnnotatePods,
        Extra::BatchJobs,
        Extra::SlotLeases,
    ];

    /// What the extra is, and what arc-hook does without it, for `arc-hook check`.
    pub(crate) fn without(self) -> &'static str {
        match self {
            Extra::WatchPods => "watch pods (without: polling)",
            Extra::ListEvents => {
                "list events (without: no reason when a pod does not start, no pull times)"
            }
            Extra::EphemeralContainers => {
                "patch pods/ephemeralcontainers (without: container steps run as Jobs or pods)"
            }
            Extra::AnnotatePods => "patch pods (without: no start-up times on the workflow pod)",
            Extra::BatchJobs => "jobs.batch (without: container steps cannot run as Jobs)",
            Extra::SlotLeases => "leases (without: cache slots are taken with Secrets)",
            Extra::ReadNodes => {
                "get nodes (ARC_HOOK_WAIT_FOR_NODE_TAINTS: without it prepare_job cannot wait)"
            }
            Extra::WatchNodes => "watch nodes (without: the node is read every 2 s)",
            Extra::ListSecrets => {
                "list secrets (without: the hook's secrets are deleted by name, and by the garbage collector with their owner pod)"
            }
            Extra::SlotSecrets => {
                "get and list secrets (without, and without leases: a template using ${CACHE_SLOT} cannot take a slot)"
            }
        }
    }

    pub(crate) fn permissions(self) -> &'static [Permission] {
        const WATCH_PODS: &[Permission] = &[p("", "pods", "", "watch")];
        const LIST_EVENTS: &[Permission] = &[p("", "events", "", "list")];
        const EPHEMERAL: &[Permission] = &[p("", "pods", "ephemeralcontainers", "patch")];
        const ANNOTATE: &[Permission] = &[p("", "pods", "", "patch")];
        const READ_NODES: &[Permission] = &[p("", "nodes", "", "get")];
        const WATCH_NODES: &[Permission] = &[p("", "nodes", "", "watch")];
        const LIST_SECRETS: &[Permission] = &[p("", "secrets", "", "list")];
        const SLOT_SECRETS: &[Permission] =
            &[p("", "secrets", "", "get"), p("", "secrets", "", "list")];
        match self {
            Extra::WatchPods => WATCH_PODS,
            Extra::ListEvents => LIST_EVENTS,
            Extra::EphemeralContainers => EPHEMERAL,
            Extra::AnnotatePods => ANNOTATE,
            Extra::BatchJobs => JOB_PERMISSIONS,
            Extra::SlotLeases => LEASE_PERMISSIONS,
            Extra::ReadNodes => READ_NODES,
            Extra::WatchNodes => WATCH_NODES,
            Extra::ListSecrets => LIST_SECRETS,
            Extra::SlotSecrets => SLOT_SECRETS,
        }
    }
}

/// What each command cannot do without. All of it is in the Role ARC's chart creates by default.
/// Secrets are only created and deleted: the hook never reads one of the namespace's secrets
/// (its own are written once and removed by name; the build push secret is read by name only,
/// [`push_secret_read`]), so a Role can leave out `get` and `list` on secrets, which would
/// let a runner read the GitHub App key and the other runners' JIT configurations.
pub(crate) fn required(command: CommandName) -> &'static [Permission] {
    const PREPARE: &[Permission] = &[
        p("", "pods", "", "get"),
        p("", "pods", "", "list"),
        p("", "pods", "", "create"),
        p("", "pods", "", "delete"),
        p("", "pods", "exec", "get"),
        p("", "pods", "exec", "create"),
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
        p("", "secrets", "", "create"),
        p("", "secrets", "", "delete"),
    ];
    const CLEANUP: &[Permission] = &[
        p("", "pods", "", "list"),
        p("", "pods", "", "delete"),
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
pub(crate) fn extras(command: CommandName) -> &'static [Extra] {
    match command {
        CommandName::PrepareJob => &[
            Extra::WatchPods,
            Extra::ListEvents,
            Extra::AnnotatePods,
            Extra::BatchJobs,
            Extra::SlotLeases,
            Extra::ListSecrets,
            Extra::SlotSecrets,
        ],
        CommandName::RunScriptStep => &[],
        CommandName::RunContainerStep => &[
            Extra::WatchPods,
            Extra::ListEvents,
            Extra::EphemeralContainers,
            Extra::BatchJobs,
        ],
        CommandName::CleanupJob => &[
            Extra::WatchPods,
            Extra::BatchJobs,
            Extra::SlotLeases,
            Extra::ListSecrets,
        ],
    }
}

/// Batch Jobs ([`Extra::BatchJobs`]), needed only where container steps run as Jobs.
pub(crate) const JOB_PERMISSIONS: &[Permission] = &[
    p("batch", "jobs", "", "get"),
    p("batch", "jobs", "", "list"),
    p("batch", "jobs", "", "create"),
    p("batch", "jobs", "", "delete"),
];

/// Cache-slot Leases ([`Extra::SlotLeases`]): taken by create, given an owner by patch, listed
/// to find a node's slots, deleted by cleanup_job or when stale.
pub(crate) const LEASE_PERMISSIONS: &[Permission] = &[
    p("coordination.k8s.io", "leases", "", "get"),
    p("coordination.k8s.io", "leases", "", "list"),
    p("coordination.k8s.io", "leases", "", "create"),
    p("coordination.k8s.io", "leases", "", "patch"),
    p("coordination.k8s.io", "leases", "", "delete"),
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
    .collect();
    all.sort();
    all.dedup();
    all
}

/// What the service account may do, as far as this command cares.
#[derive(Debug, Clone, Default)]
pub(crate) struct Granted {
    pub missing_required: Vec<Permission>,
    pub extras: Vec<Extra>,
}

impl Granted {
    pub(crate) fn has(&self, e: Extra) -> bool {
        self.extras.contains(&e)
    }
}

/// The one secret the hook reads: the build push secret (`ARC_HOOK_BUILD_PUSH_SECRET`), by its
/// name, to ask the registry whether an image is already pushed. A Role grants it with
/// `resourceNames: [<that name>]`, which grants no other secret.
pub(crate) const PUSH_SECRET_READ: Permission = p("", "secrets", "", "get");

/// Whether the service account may `perm` on object `name` (a rule for the namespace's objects,
/// or one naming it in `resourceNames`): from the rules review where it is complete, else one
/// access review.
pub(crate) async fn allowed_on(
    kube: &Kube,
    perm: Permission,
    name: &str,
) -> Result<bool, K8sError> {
    match rules(kube).await? {
        Some(rules) => Ok(rules_allow_named(&rules, perm, Some(name))),
        None => allowed_named(kube, perm, Some(name)).await,
    }
}

async fn allowed(kube: &Kube, perm: Permission) -> Result<bool, K8sError> {
    allowed_named(kube, perm, None).await
}

async fn allowed_named(
    kube: &Kube,
    perm: Permission,
    name: Option<&str>,
) -> Result<bool, K8sError> {
    let api: kube::Api<SelfSubjectAccessReview> = kube::Api::all(kube.client.clone());
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: (!perm.cluster_scoped()).then(|| kube.namespace.clone()),
                group: Some(perm.group.to_string()),
                resource: Some(perm.resource.to_string()),
                subresource: (!perm.subresource.is_empty()).then(|| perm.subresource.to_string()),
                verb: Some(perm.verb.to_string()),
                name: name.map(str::to_string),
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

/// The namespace's rules for this service account, in one request; `None` when the cluster's
/// authorizers cannot list them all (`incomplete`: a webhook or ABAC decides some requests) or the
/// review cannot be made, and every permission must then be asked one by one. Fails only when
/// the API server cannot be reached at all: asking one by one would only fail again.
async fn rules(kube: &Kube) -> Result<Option<Vec<ResourceRule>>, K8sError> {
    let api: kube::Api<SelfSubjectRulesReview> = kube::Api::all(kube.client.clone());
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(kube.namespace.clone()),
        },
        ..Default::default()
    };
    let pp = PostParams::default();
    match with_retry("listing the service account's rules", || {
        api.create(&pp, &review)
    })
    .await
    {
        Ok(r) => Ok(match r.status {
            // An evaluation error (a binding to a missing role...) leaves rules out, too.
            Some(s) if !s.incomplete && s.evaluation_error.as_deref().is_none_or(str::is_empty) => {
                Some(s.resource_rules)
            }
            Some(s) => {
                tracing::debug!(error = ?s.evaluation_error, "the rules review is incomplete; asking permission by permission");
                None
            }
            None => None,
        }),
        Err(e) if e.is_unreachable() => Err(e),
        Err(e) => {
            tracing::debug!(error = %e.chain(), "no rules review; asking permission by permission");
            Ok(None)
        }
    }
}

/// Whether RBAC `rules` grant `perm` on the namespace's objects (not on one object by name):
/// Kubernetes' own matching of verbs, API groups, `resource/subresource`, `*` and `*/sub`.
pub(crate) fn rules_allow(rules: &[ResourceRule], perm: Permission) -> bool {
    rules_allow_named(rules, perm, None)
}

/// [`rules_allow`] for object `name` (`None`: the namespace's objects): a rule whose
/// `resourceNames` list it grants it too.
pub(crate) fn rules_allow_named(
    rules: &[ResourceRule],
    perm: Permission,
    name: Option<&str>,
) -> bool {
    let resource = if perm.subresource.is_empty() {
        perm.resource.to_string()
    } else {
        format!("{}/{}", perm.resource, perm.subresource)
    };
    let star_sub = format!("*/{}", perm.subresource);
    let any_or = |list: &[String], want: &str| list.iter().any(|v| v == "*" || v == want);
    rules.iter().any(|r| {
        let names = r.resource_names.as_deref().unwrap_or_default();
        (names.is_empty() || name.is_some_and(|n| names.iter().any(|v| v == n)))
            && any_or(&r.verbs, perm.verb)
            && any_or(r.api_groups.as_deref().unwrap_or_default(), perm.group)
            && r.resources.as_deref().unwrap_or_default().iter().any(|v| {
                v == "*" || *v == resource || (!perm.subresource.is_empty() && *v == star_sub)
            })
    })
}

/// Reviews every permission `command` needs or can use, and the extras `also` asked for by the
/// configuration (nodes): from the rules review where it is complete, else by one access review
/// each, in parallel. If no review can be made, the extras are assumed absent and the required
/// permissions are left for the API to enforce. Fails when the API server cannot be reached.
pub(crate) async fn check(
    kube: &Kube,
    command: CommandName,
    also: &[Extra],
) -> Result<Granted, K8sError> {
    let req = required(command);
    let wanted: Vec<Extra> =
        extras(command)
            .iter()
            .chain(also)
            .copied()
            .fold(Vec::new(), |mut v, e| {
                if !v.contains(&e) {
                    v.push(e);
                }
                v
            });
    let all: Vec<Permission> = req
        .iter()
        .copied()
        .chain(wanted.iter().flat_map(|e| e.permissions().iter().copied()))
        .collect();
    let answers: Vec<bool> = match rules(kube).await? {
        Some(rules) => all.iter().map(|p| rules_allow(&rules, *p)).collect(),
        None => {
            let mut answers = Vec::with_capacity(all.len());
            for answer in join_all(all.iter().map(|p| allowed(kube, *p))).await {
                match answer {
                    Ok(a) => answers.push(a),
                    Err(e) if e.is_unreachable() => return Err(e),
                    Err(e) => {
                        tracing::warn!(
                            "cannot review permissions ({}); using only what ARC's default Role grants",
                            e.chain()
                        );
                        return Ok(Granted::default());
                    }
                }
            }
            answers
        }
    };
    let ok = |perm: &Permission| all.iter().zip(&answers).any(|(p, a)| p == perm && *a);
    Ok(Granted {
        missing_required: req.iter().copied().filter(|p| !ok(p)).collect(),
        extras: wanted
            .into_iter()
            .filter(|e| e.permissions().iter().all(ok))
            .collect(),
    })
}

/// What to do about missing permissions.
pub(crate) const MISSING_FIX: &str =
    "grant them in the runner's Role (deploy/rbac/role.yaml has the full list)";

/// What is missing, without the fix.
pub(crate) fn missing_problem(missing: &[Permission], namespace: &str) -> String {
    let list: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
    format!(
        "the runner's service account may not {} in namespace {namespace}",
        list.join(", ")
    )
}

/// One line naming what is missing and what to do, for the job log.
pub(crate) fn missing_message(missing: &[Permission], namespace: &str) -> String {
    format!("{}; {MISSING_FIX}", missing_problem(missing, namespace))
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

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> ResourceRule {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ResourceRule {
            api_groups: Some(v(groups)),
            resources: Some(v(resources)),
            verbs: v(verbs),
            resource_names: None,
        }
    }

    #[test]
    fn rules_match_as_rbac_does() {
        let exec = p("", "pods", "exec", "create");
        let get_pods = p("", "pods", "", "get");
        let jobs = p("batch", "jobs", "", "create");
        // Exact resource and subresource.
        let r = [rule(&[""], &["pods", "pods/exec"], &["get", "create"])];
        assert!(rules_allow(&r, exec) && rules_allow(&r, get_pods));
        assert!(!rules_allow(&r, jobs));
        // `pods` does not grant `pods/exec`; `*/exec` does.
        assert!(!rules_allow(&[rule(&[""], &["pods"], &["*"])], exec));
        assert!(rules_allow(&[rule(&[""], &["*/exec"], &["create"])], exec));
        assert!(!rules_allow(
            &[rule(&[""], &["*/exec"], &["create"])],
            get_pods
        ));
        // Wildcards: cluster-admin's rule grants everything.
        assert!(rules_allow(&[rule(&["*"], &["*"], &["*"])], jobs));
        // The API group must match.
        assert!(!rules_allow(&[rule(&[""], &["jobs"], &["create"])], jobs));
        assert!(rules_allow(
            &[rule(&["batch"], &["jobs"], &["create"])],
            jobs
        ));
        // A rule for named objects grants nothing on the collection.
        let mut named = rule(&[""], &["pods"], &["get"]);
        named.resource_names = Some(vec!["runner-0".into()]);
        assert!(!rules_allow(std::slice::from_ref(&named), get_pods));
        // ... and that object only.
        assert!(rules_allow_named(
            std::slice::from_ref(&named),
            get_pods,
            Some("runner-0")
        ));
        assert!(!rules_allow_named(&[named], get_pods, Some("runner-1")));
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
