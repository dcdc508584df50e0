//! `arc-hook check`: what prepare_job does before it creates anything, plus a server-side dry run
//! of the workflow pod (and pull secret) a representative job would get; one line per check.
//!
//! It reads the same configuration and reaches the same cluster as the hook (the pod's service
//! account when `KUBERNETES_SERVICE_HOST` is set, else `KUBECONFIG` or `~/.kube/config`), and
//! never creates anything: the only writes are reviews and `dryRun=All` creates.

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;

use crate::config::{Config, WorkVolumeMode};
use crate::hooks::{prepare_job, session};
use crate::k8s::rbac::{self, Extra, Permission};
use crate::k8s::retry::with_retry;
use crate::k8s::{K8sError, Kube};
use crate::objects::{BuildContext, names};
use crate::plan::plan_prepare_job;
use crate::protocol::{CommandName, PrepareJobArgs};
use crate::template::Template;

/// The runner pod's name in the dry run when `ACTIONS_RUNNER_POD_NAME` is not set.
const PLACEHOLDER_RUNNER: &str = "arc-runner-check";

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok(String),
    /// What is wrong, and what to change.
    Fail {
        problem: String,
        fix: String,
    },
    /// Not checked, and why (an earlier failure, or not needed in this configuration).
    Skip(String),
}

/// One check's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub(crate) outcome: Outcome,
}

impl Finding {
    fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            outcome: Outcome::Ok(detail.into()),
        }
    }

    fn fail(check: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            outcome: Outcome::Fail {
                problem: problem.into(),
                fix: fix.into(),
            },
        }
    }

    fn skip(check: &'static str, why: impl Into<String>) -> Self {
        Self {
            check,
            outcome: Outcome::Skip(why.into()),
        }
    }

    pub(crate) fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail { .. })
    }

    /// The printed line: `ok   template: ...`, `FAIL permissions: ...; fix: ...`.
    pub fn line(&self) -> String {
        match &self.outcome {
            Outcome::Ok(d) => format!("ok   {}: {d}", self.check),
            Outcome::Fail { problem, fix } => format!("FAIL {}: {problem}; fix: {fix}", self.check),
            Outcome::Skip(why) => format!("skip {}: {why}", self.check),
        }
    }
}

/// Runs every check in prepare_job's order, telling `report` each finding as it is made.
/// Returns whether all passed (skips pass).
pub async fn run(report: &mut dyn FnMut(&Finding)) -> bool {
    let mut failed = false;
    let mut say = |f: Finding| {
        failed |= f.failed();
        report(&f);
    };
    let config = match Config::from_env() {
        Ok(c) => {
            say(Finding::ok("configuration", summary(&c)));
            c
        }
        Err(e) => {
            say(Finding::fail(
                "configuration",
                e.to_string(),
                "set the variable as the message says (README: Configuration); nothing else can be checked without it",
            ));
            return false;
        }
    };
    let runner = match config.require_runner_pod_name() {
        Ok(r) => {
            say(Finding::ok(
                "runner pod name",
                format!("ACTIONS_RUNNER_POD_NAME={r}"),
            ));
            Some(r.to_string())
        }
        Err(e) => {
            say(Finding::fail(
                "runner pod name",
                e.to_string(),
                format!(
                    "in a runner pod ARC sets it; by hand, export ACTIONS_RUNNER_POD_NAME=<the runner pod's name> (the dry run below uses {PLACEHOLDER_RUNNER})"
                ),
            ));
            None
        }
    };
    let template = check_template(&config);
    let template_ok = template.is_ok();
    let template = match template {
        Ok(t) => {
            say(Finding::ok(
                "template",
                template_detail(&config, t.as_ref()),
            ));
            t
        }
        Err(f) => {
            say(f);
            None
        }
    };

    let kube = match connected(&config).await {
        Ok((kube, version)) => {
            say(Finding::ok(
                "cluster",
                format!(
                    "{} (Kubernetes {version}), namespace {}, {}",
                    kube.server,
                    kube.namespace,
                    cluster_source()
                ),
            ));
            kube
        }
        Err(f) => {
            say(f);
            for c in [
                "permissions",
                "exec protocol",
                "node",
                "workflow pod (dry run)",
            ] {
                say(Finding::skip(c, "needs the cluster"));
            }
            return !failed;
        }
    };
    let uses_slot = template.as_ref().is_some_and(|t| t.uses_cache_slot());
    say(check_permissions(&kube, &config, uses_slot).await);
    say(check_exec_protocol(&kube, &config).await);
    let (found, node) = check_node(&kube, &config, runner.as_deref()).await;
    say(found);
    if !template_ok {
        say(Finding::skip(
            "workflow pod (dry run)",
            "the template must load first",
        ));
        return !failed;
    }
    let runner = runner.unwrap_or_else(|| PLACEHOLDER_RUNNER.to_string());
    for f in dry_run(&kube, &config, &runner, template.as_ref(), node).await {
        say(f);
    }
    !failed
}

/// The settings that shape the workflow pod, in one line.
fn summary(c: &Config) -> String {
    let volume = match c.work_volume {
        WorkVolumeMode::Claim => "claim (the runner's work volume is shared)",
        WorkVolumeMode::Copy => "copy (no-volume mode)",
    };
    let placement = if session::pins_to_runner_node(c) {
        "job pods pinned to the runner's node"
    } else {
        "job pods placed by the scheduler"
    };
    format!("ARC_HOOK_WORK_VOLUME={volume}; {placement}")
}

fn check_template(config: &Config) -> Result<Option<Template>, Finding> {
    let Some(path) = config.template_path.as_deref() else {
        return Ok(None);
    };
    Template::load(path).map(Some).map_err(|e| {
        Finding::fail(
            "template",
            e.to_string(),
            format!(
                "correct {} (ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE) where the message says; `arc-hook render --template {} <runner input>` shows the result",
                path.display(),
                path.display()
            ),
        )
    })
}

fn template_detail(config: &Config, template: Option<&Template>) -> String {
    match (config.template_path.as_deref(), template) {
        (Some(path), Some(t)) if t.uses_cache_slot() => {
            format!("{} loaded (uses ${{CACHE_SLOT}})", path.display())
        }
        (Some(path), _) => format!("{} loaded", path.display()),
        (None, _) => {
            "none (ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE unset): arc-hook's own pod".to_string()
        }
    }
}

/// Which configuration the hook reads, as [`Kube::connect`] chooses it.
fn cluster_source() -> &'static str {
    match crate::config::ClusterSource::from_env() {
        crate::config::ClusterSource::InCluster => "in-cluster service account",
        _ => "kubeconfig",
    }
}

/// Connects as the hook does and asks the server its version: the first request, so an
/// unreachable server or a refused credential is said here, once.
async fn connected(config: &Config) -> Result<(Kube, String), Finding> {
    let kube = session::connect(config).await.map_err(|e| {
        Finding::fail(
            "cluster",
            format!("{e:#}"),
            "run it in a runner pod (its service account), or point KUBECONFIG at the cluster",
        )
    })?;
    match with_retry("reading the API server's version", || {
        kube.client.apiserver_version()
    })
    .await
    {
        Ok(v) => Ok((kube, v.git_version)),
        Err(e) => Err(Finding::fail("cluster", e.chain(), cluster_fix(&e, &kube))),
    }
}

fn cluster_fix(e: &K8sError, kube: &Kube) -> String {
    match e.code() {
        Some(401) => "the credential is refused: renew the kubeconfig's token, or check the pod's service account token".into(),
        Some(403) => "the credential may not read /version: use the runner's service account".into(),
        _ if e.is_unreachable() => format!(
            "check that {} is the API server's address and reachable from here (network policy, proxy, firewall)",
            kube.server
        ),
        _ => "see the message; the API server answered but not as expected".into(),
    }
}

/// Every permission the four hook commands need, and which optional ones are granted; fails
/// where the template takes cache slots and neither leases nor reading secrets is granted. Says
/// where the Role lets the runner read the namespace's secrets, and whether the build push
/// secret (only it) is readable.
async fn check_permissions(kube: &Kube, config: &Config, uses_slot: bool) -> Finding {
    const CHECK: &str = "permissions";
    let commands = [
        CommandName::PrepareJob,
        CommandName::RunScriptStep,
        CommandName::RunContainerStep,
        CommandName::CleanupJob,
    ];
    let mut missing: Vec<Permission> = Vec::new();
    let mut granted: Vec<Extra> = Vec::new();
    for command in commands {
        let also = crate::hooks::session::node_extras(config, command);
        match rbac::check(kube, command, also).await {
            Ok(g) => {
                missing.extend(g.missing_required);
                granted.extend(g.extras);
            }
            Err(e) => return Finding::fail(CHECK, e.chain(), cluster_fix(&e, kube)),
        }
    }
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Finding::fail(
            CHECK,
            rbac::missing_problem(&missing, &kube.namespace),
            rbac::MISSING_FIX,
        );
    }
    if uses_slot && !granted.contains(&Extra::SlotLeases) && !granted.contains(&Extra::SlotSecrets)
    {
        return Finding::fail(
            CHECK,
            crate::hooks::cache_slot::NO_LOCKS_MESSAGE,
            rbac::MISSING_FIX,
        );
    }
    let absent: Vec<&str> = Extra::ALL
        .iter()
        .filter(|e| !granted.contains(e))
        .map(|e| e.without())
        .collect();
    let required = rbac::all_permissions().len() - optional_only().len();
    let mut detail = if absent.is_empty() {
        format!("all {required} permissions the hook needs, and every optional one")
    } else {
        format!(
            "all {required} permissions the hook needs; optional, not granted: {}",
            absent.join("; ")
        )
    };
    if granted.contains(&Extra::ListSecrets) || granted.contains(&Extra::SlotSecrets) {
        detail.push_str(&format!(
            "; note: the Role lets the runner read the secrets of namespace {} (ARC keeps its GitHub credentials and the runners' JIT configurations there); the hook needs no get or list on secrets (deploy/rbac/role.yaml)",
            kube.namespace
        ));
    } else {
        detail.push_str("; secrets: create and delete only (the runner reads none)");
    }
    if let Some(name) = config.build.as_ref().and_then(|b| b.push_secret.as_deref()) {
        match rbac::allowed_on(kube, rbac::PUSH_SECRET_READ, name).await {
            Ok(true) => detail.push_str(&format!("; reads the build push secret {name}")),
            Ok(false) => detail.push_str(&format!(
                "; may not get the build push secret {name}: Dockerfile actions are built every time (grant get on it by resourceNames, deploy/rbac/role.yaml shows how)"
            )),
            Err(e) => return Finding::fail(CHECK, e.chain(), cluster_fix(&e, kube)),
        }
    }
    Finding::ok(CHECK, detail)
}

/// Permissions only extras use (none of the commands requires them).
fn optional_only() -> Vec<Permission> {
    let required: Vec<Permission> = [
        CommandName::PrepareJob,
        CommandName::RunScriptStep,
        CommandName::RunContainerStep,
        CommandName::CleanupJob,
    ]
    .into_iter()
    .flat_map(|c| rbac::required(c).iter().copied())
    .collect();
    rbac::all_permissions()
        .into_iter()
        .filter(|p| !required.contains(p))
        .collect()
}

async fn check_exec_protocol(kube: &Kube, config: &Config) -> Finding {
    const CHECK: &str = "exec protocol";
    if config.work_volume != WorkVolumeMode::Copy {
        return Finding::skip(
            CHECK,
            "only no-volume mode (ARC_HOOK_WORK_VOLUME=copy) needs Kubernetes 1.30+",
        );
    }
    match prepare_job::require_exec_v5(kube).await {
        Ok(()) => Finding::ok(CHECK, "v5 (Kubernetes 1.30+), as no-volume mode needs"),
        Err(e) => Finding::fail(
            CHECK,
            format!("{e:#}"),
            "use ARC_HOOK_WORK_VOLUME=claim, or upgrade the cluster",
        ),
    }
}

/// The runner pod's node, where job pods are pinned in claim mode.
async fn check_node(
    kube: &Kube,
    config: &Config,
    runner: Option<&str>,
) -> (Finding, Option<String>) {
    const CHECK: &str = "node";
    if !session::pins_to_runner_node(config) {
        return (
            Finding::skip(
                CHECK,
                "the scheduler places job pods (ACTIONS_RUNNER_USE_KUBE_SCHEDULER=true or no-volume mode)",
            ),
            None,
        );
    }
    let Some(runner) = runner else {
        return (Finding::skip(CHECK, "needs ACTIONS_RUNNER_POD_NAME"), None);
    };
    match session::runner_node(kube, runner).await {
        Ok(Some(node)) => (
            Finding::ok(
                CHECK,
                format!("runner pod {runner} runs on {node}; job pods are pinned there"),
            ),
            Some(node),
        ),
        Ok(None) => (
            Finding::fail(
                CHECK,
                format!("runner pod {runner} is not scheduled on a node"),
                "run check from the runner pod once it runs",
            ),
            None,
        ),
        Err(e) => (
            Finding::fail(
                CHECK,
                format!("{e:#}"),
                "run check in the runner pod, or export ACTIONS_RUNNER_POD_NAME=<a running runner pod>",
            ),
            None,
        ),
    }
}

/// A job as the runner describes it: a job container with registry credentials (so the pull
/// secret is made too) and one service, with the runner's usual mounts.
fn representative_job(config: &Config) -> anyhow::Result<PrepareJobArgs> {
    let work = config
        .runner_work_dir()
        .unwrap_or_else(|| std::path::PathBuf::from("/home/runner/_work"));
    let home = work
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("/home/runner"));
    let w = |rel: &str| work.join(rel).to_string_lossy().into_owned();
    let mount = |source: String, target: &str| serde_json::json!({"sourceVolumePath": source, "targetVolumePath": target, "readOnly": false});
    let args = serde_json::json!({
        "container": {
            "image": "ubuntu:24.04",
            "workingDirectory": "/__w/repo/repo",
            "createOptions": null,
            "environmentVariables": {"CI": "true"},
            "entryPoint": null,
            "entryPointArgs": [],
            "userMountVolumes": [],
            "systemMountVolumes": [
                mount(w(""), "/__w"),
                mount(home.join("externals").to_string_lossy().into_owned(), "/__e"),
                mount(w("_temp"), "/__w/_temp"),
                mount(w("_actions"), "/__w/_actions"),
                mount(w("_tool"), "/__w/_tool"),
                mount(w("_temp/_github_home"), "/github/home"),
                mount(w("_temp/_github_workflow"), "/github/workflow"),
            ],
            "registry": {"username": "arc-hook-check", "password": "not-a-password", "serverUrl": "registry.example.com"},
            "portMappings": []
        },
        "services": [{
            "image": "redis:7",
            "createOptions": null,
            "entryPoint": null,
            "entryPointArgs": [],
            "environmentVariables": {},
            "userMountVolumes": [],
            "systemMountVolumes": [],
            "registry": null,
            "portMappings": ["6379"]
        }]
    });
    serde_json::from_value(args).context("the representative job")
}

/// Plans the representative job's objects as prepare_job would and asks the API server to
/// create each with `dryRun=All`: validation and admission run, nothing is stored.
async fn dry_run(
    kube: &Kube,
    config: &Config,
    runner: &str,
    template: Option<&Template>,
    node: Option<String>,
) -> Vec<Finding> {
    const POD: &str = "workflow pod (dry run)";
    const SECRET: &str = "pull secret (dry run)";
    let ctx = BuildContext {
        runner_pod: runner.to_string(),
        namespace: kube.namespace.clone(),
        node_name: node,
        use_kube_scheduler: config.use_kube_scheduler,
        work_volume: config.work_volume,
        claim_name: config.claim_name_for(runner),
        default_registry: config.default_registry.clone(),
        // A representative slot: the dry run holds none.
        cache_slot: template.filter(|t| t.uses_cache_slot()).map(|_| 0),
        cache_trust: config.cache_trust,
    };
    let plan = representative_job(config).and_then(|args| {
        plan_prepare_job(
            &ctx,
            &args,
            template,
            &config.job_options,
            &names::random_suffix(),
        )
        .map_err(anyhow::Error::from)
    });
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            return vec![Finding::fail(
                POD,
                format!("cannot build it: {e:#}"),
                template_fix(config),
            )];
        }
    };
    let mut found = Vec::new();
    let params = PostParams {
        dry_run: true,
        field_manager: None,
    };
    if let Some(secret) = &plan.secret {
        let api = kube.secrets();
        let name = secret.metadata.name.clone().unwrap_or_default();
        found.push(
            match dry_create(&api, &params, secret, &format!("secret {name}")).await {
                Ok(()) => Finding::ok(SECRET, format!("secret {name} accepted")),
                Err(e) => refused(SECRET, &e, kube, "the pull secret arc-hook makes"),
            },
        );
    }
    let api = kube.pods();
    let name = plan.pod_name().to_string();
    found.push(
        match dry_create::<Pod>(&api, &params, &plan.pod, &format!("pod {name}")).await {
            Ok(()) => {
                let containers = plan
                    .pod
                    .spec
                    .as_ref()
                    .map_or(0, |s| s.containers.len());
                let mut detail = format!(
                    "pod {name} ({containers} containers, for a job container and one service) accepted"
                );
                for w in &plan.warnings {
                    detail.push_str(&format!("; warning: {w}"));
                }
                Finding::ok(POD, detail)
            }
            Err(e) => refused(POD, &e, kube, &template_fix(config)),
        },
    );
    found
}

/// Creates `obj` with `dryRun=All`; a name already taken (a job running now) means validation
/// and admission passed, which is what is asked.
async fn dry_create<K>(
    api: &kube::Api<K>,
    params: &PostParams,
    obj: &K,
    what: &str,
) -> Result<(), K8sError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match with_retry(&format!("creating {what} (dry run)"), || {
        api.create(params, obj)
    })
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A refused dry-run create, with what to change: `fix` for an invalid object; the Role or the
/// namespace's admission for a forbidden one.
fn refused(check: &'static str, e: &K8sError, kube: &Kube, fix: &str) -> Finding {
    let fix = match e.code() {
        Some(400 | 422) => fix.to_string(),
        Some(403) if e.chain().contains("admission") || e.chain().contains("violates") => {
            "the namespace's admission (PodSecurity or a policy webhook) refuses it: adapt the template to the policy the message names, or the policy".into()
        }
        Some(403) => format!(
            "grant the runner's Role create on it in namespace {} (deploy/rbac/role.yaml), or see the admission the message names",
            kube.namespace
        ),
        _ if e.is_unreachable() => cluster_fix(e, kube),
        _ => "see the message".into(),
    };
    Finding::fail(
        check,
        format!("the API server refuses it: {}", e.chain()),
        fix,
    )
}

fn template_fix(config: &Config) -> String {
    match config.template_path.as_deref() {
        Some(p) => format!(
            "correct the template {} at the field the message names (`arc-hook render --template {} <runner input>` shows the pod)",
            p.display(),
            p.display()
        ),
        None => {
            "this is arc-hook's own pod, without a template: please report it with this line".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_say_ok_fail_with_the_fix_or_skip() {
        assert_eq!(
            Finding::ok("template", "none").line(),
            "ok   template: none"
        );
        let f = Finding::fail("permissions", "may not create secrets", "grant them");
        assert!(f.failed());
        assert_eq!(
            f.line(),
            "FAIL permissions: may not create secrets; fix: grant them"
        );
        assert_eq!(
            Finding::skip("node", "needs the cluster").line(),
            "skip node: needs the cluster"
        );
    }

    #[test]
    fn the_representative_job_has_a_pull_secret_and_a_service() {
        let config = Config::from_lookup(|_| None).expect("defaults");
        let args = representative_job(&config).expect("parses");
        assert!(
            args.container
                .as_ref()
                .is_some_and(|c| c.registry.is_some())
        );
        assert_eq!(args.services.len(), 1);
        let plan = plan_prepare_job(
            &crate::objects::test_context(),
            &args,
            None,
            &config.job_options,
            "abcde",
        )
        .expect("plans");
        assert!(plan.secret.is_some(), "the dry run covers the pull secret");
    }
}
