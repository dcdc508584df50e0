//! prepare_job: create the workflow pod (and pull secret), wait until it runs, and tell the runner about it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::api::{DeleteParams, ListParams};

use super::readiness::{self, Readiness};
use super::session::Session;
use super::steps::workspace::{self, RunnerDirs};
use super::{HookResult, cache_slot, startup};
use crate::config::{Config, WorkVolumeMode};
use crate::k8s::Kube;
use crate::k8s::exec::{ExecTarget, exec_capture};
use crate::k8s::owned::{self, create_once, create_secret_once};
use crate::k8s::rbac::{self, Extra};
use crate::k8s::wait::{Milestones, wait_running_observed};
use crate::objects::{JOB_CONTAINER_NAME, names};
use crate::plan::{PreparePlan, plan_prepare_job};
use crate::protocol::{CommandName, Envelope, JobState, PrepareJobArgs, PrepareJobResponse};

/// The message for a job without `container:` on a runner that requires one.
pub(crate) const REQUIRE_CONTAINER_MESSAGE: &str = "this runner runs jobs only in containers (ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER=true): add `container: <image>` to the job in your workflow, e.g. `container: ubuntu:24.04`";

/// Objects created so far, removed again if prepare_job fails.
#[derive(Default)]
struct Created {
    pod: Option<String>,
    secret: Option<String>,
    slot: Option<cache_slot::Taken>,
}

/// How long a failed prepare_job waits for what it created to disappear.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

impl Created {
    /// Deletes what was created and waits (bounded) until the pod is really gone, so a failed
    /// prepare_job leaves nothing running behind it.
    async fn remove(&self, kube: &Kube, can_watch: bool) {
        if let Some(p) = &self.pod {
            let api = kube.pods();
            let dp = DeleteParams::default().grace_period(0);
            if crate::hooks::delete_or_warn(&api, "pod", p, &dp).await {
                let gone = crate::k8s::wait::wait_gone(
                    &api,
                    &format!("pod {p}"),
                    &ListParams::default().fields(&format!("metadata.name={p}")),
                    REMOVE_TIMEOUT,
                    can_watch,
                )
                .await;
                if let Err(e) = gone {
                    crate::joblog::warning(format_args!(
                        "pod {p} is still being removed: {}",
                        e.chain()
                    ));
                }
            }
        }
        if let Some(s) = &self.secret {
            crate::hooks::delete_or_warn(&kube.secrets(), "secret", s, &DeleteParams::default())
                .await;
        }
        if let Some(t) = &self.slot {
            cache_slot::release(kube, t).await;
        }
    }
}

pub(crate) async fn prepare_job(
    envelope: &Envelope,
    args: &PrepareJobArgs,
    config: &Config,
) -> HookResult {
    if args.container.is_none() && config.require_job_container {
        bail!(REQUIRE_CONTAINER_MESSAGE);
    }
    if args.container.is_none() && args.services.is_empty() {
        bail!(
            "args: the job has neither a container nor services; there is nothing to run in Kubernetes"
        );
    }
    let response_file = envelope.response_file.clone().context(
        "invalid hook input: responseFile: missing (prepare_job must write its response there)",
    )?;
    let session = Session::open(config, CommandName::PrepareJob).await?;
    let (kube, runner, granted) = (&session.kube, &session.runner, &session.granted);
    if config.work_volume == WorkVolumeMode::Copy {
        require_exec_v5(kube).await?;
    }
    let node = session.node(config).await?;

    super::runner_objects::remove_runner_objects(
        kube,
        runner,
        granted,
        &[],
        config.cleanup_timeout,
    )
    .await
    .context("removing the previous job's leftovers")?;

    if config.work_volume == WorkVolumeMode::Claim {
        provide_externals(config);
        // The job's own file-command directory, which its containers see in place of the
        // runner's (made here, so it is the runner's user's and not the kubelet's root's).
        let temp = super::job_state::runner_temp(config)?;
        super::file_commands::create_job_dir(&temp)
            .context("preparing the job's file-command directory under _temp")?;
        if let Some(work) = config.runner_work_dir() {
            let repo = config
                .runner_workspace
                .as_deref()
                .and_then(|w| w.file_name())
                .and_then(|n| n.to_str());
            super::file_commands::open_for_job_users(&work, repo).context(
                "making _temp, HOME, the workspace and _tool writable for the job's user",
            )?;
        }
    }

    if let Some(n) = node.as_deref() {
        wait_for_start_up_taints(kube, config, granted, n).await?;
    }

    // One rollback: whatever fails from here removes everything this command created.
    let mut created = Created::default();
    let result = create_and_start(&session, config, args, node, &response_file, &mut created).await;
    if result.is_err() {
        created.remove(kube, granted.has(Extra::WatchPods)).await;
    }
    result
}

/// Creates the job's objects (recording each in `created` as it goes), starts the workflow pod
/// and writes the response; on any error the caller removes what `created` holds.
async fn create_and_start(
    session: &Session,
    config: &Config,
    args: &PrepareJobArgs,
    node: Option<String>,
    response_file: &std::path::Path,
    created: &mut Created,
) -> HookResult {
    let (kube, granted) = (&session.kube, &session.granted);
    let (plan, readiness, created_at, uid) =
        create_with_slot(session, config, args, node, created).await?;
    for w in &plan.warnings {
        crate::joblog::warning(w);
    }
    let is_alpine = start(kube, config, &plan, readiness, granted, created_at, uid).await?;
    let response = PrepareJobResponse {
        state: JobState {
            job_pod: plan.pod_name().to_string(),
            namespace: Some(kube.namespace.clone()),
            no_volume: config.work_volume == WorkVolumeMode::Copy,
            registry_secret: created.secret.clone(),
        },
        context: plan.response_context(),
        is_alpine,
    };
    let json = serde_json::to_vec(&response).context("serialising the response")?;
    std::fs::write(response_file, json)
        .with_context(|| format!("cannot write the response file {}", response_file.display()))?;
    Ok(0)
}

/// In claim mode, where the workflow pod is pinned to the runner's node: waits until that node
/// no longer carries the start-up taints `ARC_HOOK_WAIT_FOR_NODE_TAINTS` names (the runner pod
/// tolerates them, the workflow pod would sit Unschedulable). Nothing, and no request, when unset.
async fn wait_for_start_up_taints(
    kube: &Kube,
    config: &Config,
    granted: &rbac::Granted,
    node: &str,
) -> anyhow::Result<()> {
    if config.wait_for_node_taints.is_empty() {
        return Ok(());
    }
    let waited = crate::k8s::node_wait::wait_untainted(
        kube,
        node,
        &config.wait_for_node_taints,
        config.node_taints_timeout,
        granted.has(Extra::WatchNodes),
        super::wait_progress,
    )
    .await?;
    tracing::debug!(
        node,
        waited_ms = waited.as_millis() as u64,
        "node free of start-up taints"
    );
    Ok(())
}

/// Creates the workflow pod (and its secret); where the template names `${CACHE_SLOT}`, first
/// takes the lowest free cache slot on the node (see [`cache_slot`]) and makes the pod own it.
/// Returns the plan, the template's readiness check, when the pod was created, and its UID.
async fn create_with_slot(
    session: &Session,
    config: &Config,
    args: &PrepareJobArgs,
    node: Option<String>,
    created: &mut Created,
) -> anyhow::Result<(PreparePlan, Option<Readiness>, Instant, String)> {
    let kube = &session.kube;
    let pod_name = names::job_pod_name(&session.runner);
    let mut ctx = session.build_context(config, node.clone());
    if session
        .template
        .as_ref()
        .is_some_and(|t| t.uses_cache_slot())
    {
        let kind = if session.granted.has(Extra::SlotLeases) {
            cache_slot::LockKind::Lease
        } else if session.granted.has(Extra::SlotSecrets) {
            tracing::debug!(
                "the Role grants no coordination.k8s.io leases: taking the cache slot with a Secret lock"
            );
            cache_slot::LockKind::Secret
        } else {
            bail!(cache_slot::NO_LOCKS_MESSAGE);
        };
        let taken = cache_slot::take(kube, &ctx, node.as_deref(), &pod_name, kind)
            .await
            .context("taking a cache slot")?;
        ctx.cache_slot = Some(taken.slot);
        created.slot = Some(taken);
    }
    let plan = plan_prepare_job(
        &ctx,
        args,
        session.template.as_ref(),
        &config.job_options,
        &names::random_suffix(),
    )?;
    // Checked before anything is created: a broken annotation leaves nothing behind.
    let readiness = readiness::from_pod(&plan.pod)?;
    let created_at = Instant::now();
    let uid = create_objects(kube, &session.runner, &plan, created).await?;
    if let Some(taken) = &created.slot
        && let Err(e) = cache_slot::set_owner(kube, taken, &pod_name, &uid).await
    {
        // The slot stays held; cleanup_job removes the lease by its runner label.
        tracing::warn!(error = %e.chain(), "cannot make the workflow pod own its cache-slot lease");
    }
    Ok((plan, readiness, created_at, uid))
}

/// Creates the secret (if any) and the pod; returns the pod's UID. The pull secret must exist
/// before the pod that pulls with it, so the runner pod owns it (the Role may not patch secrets
/// to hand them to the workflow pod later): the garbage collector removes it with the runner
/// pod if no cleanup_job does, and cleanup_job deletes it by the name the job's state carries.
async fn create_objects(
    kube: &Kube,
    runner: &str,
    plan: &PreparePlan,
    created: &mut Created,
) -> anyhow::Result<String> {
    if let Some(secret) = &plan.secret {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let api = kube.secrets();
        let owner = owned::pod_owner(kube, runner).await;
        create_secret_once(&api, "registry secret", secret, owner).await?;
        created.secret = Some(name);
    }
    let name = plan.pod_name().to_string();
    let api = kube.pods();
    let pod = create_once(&api, "pod", &plan.pod)
        .await
        .context("cannot create the workflow pod")?;
    created.pod = Some(name);
    Ok(pod.metadata.uid.unwrap_or_default())
}

/// How many times a workflow pod replaced under prepare_job's feet is waited for again.
const MAX_REPLACEMENTS: usize = 2;

/// Waits until pod `name` runs and returns its UID: the pod created (`uid`), or one that replaced
/// it under the same name (this runner's, not being deleted), which is then waited for again.
async fn wait_ready(
    kube: &Kube,
    name: &str,
    uid: &str,
    opts: crate::k8s::wait::WaitOptions,
    seen: &mut Milestones,
) -> anyhow::Result<String> {
    let mut want = uid.to_string();
    for _ in 0..=MAX_REPLACEMENTS {
        let pod = wait_running_observed(kube, name, opts, seen).await?;
        let found = pod.metadata.uid.clone().unwrap_or_default();
        if want.is_empty() || found == want {
            return Ok(found);
        }
        if !crate::objects::owned_by(pod.metadata.labels.as_ref(), runner_of(&pod)) {
            bail!("pod {name} was replaced by a pod that is not this runner's (uid {found})");
        }
        tracing::info!(pod = name, was = %want, now = %found, "workflow pod replaced; waiting for the new one");
        want = found;
    }
    bail!(
        "pod {name} was replaced more than {MAX_REPLACEMENTS} times while prepare_job waited for it"
    )
}

/// The runner a pod names in its annotation (empty when it names none).
fn runner_of(pod: &k8s_openapi::api::core::v1::Pod) -> &str {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(crate::objects::RUNNER_POD_ANNOTATION))
        .map(String::as_str)
        .unwrap_or_default()
}

/// Whether pod `name` is no longer the one with `uid` (replaced or gone): an exec that failed
/// then reached another pod, or none, and is worth one more try after waiting again.
async fn replaced(kube: &Kube, name: &str, uid: &str) -> bool {
    let api = kube.pods();
    match crate::k8s::retry::with_retry(&format!("reading pod {name}"), || api.get_opt(name)).await
    {
        Ok(Some(p)) => p.metadata.uid.as_deref() != Some(uid),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Waits for the pod, reports where start-up time went, fills it in no-volume mode, detects
/// alpine, then runs the template's readiness check and waits for the services' health checks.
/// Every exec is checked against the pod whose readiness was seen (its UID): after a failed exec
/// into a pod replaced meanwhile, the new pod is waited for and the exec redone.
async fn start(
    kube: &Kube,
    config: &Config,
    plan: &PreparePlan,
    readiness: Option<Readiness>,
    granted: &rbac::Granted,
    created_at: Instant,
    uid: String,
) -> anyhow::Result<bool> {
    let name = plan.pod_name().to_string();
    let opts = crate::hooks::pod_wait(config, granted, false);
    let mut seen = Milestones::default();
    let mut uid = wait_ready(kube, &name, &uid, opts, &mut seen).await?;
    startup::report(kube, &name, &uid, granted, created_at, seen).await;

    let is_alpine = if plan.job_image.is_none() {
        false
    } else {
        let mut attempt = 0;
        loop {
            let filled = fill_and_detect(kube, config, &name).await;
            match filled {
                Err(e) if attempt < MAX_REPLACEMENTS && replaced(kube, &name, &uid).await => {
                    tracing::info!(error = %format!("{e:#}"), "the workflow pod was replaced during start-up; waiting for the new one");
                    uid = wait_ready(kube, &name, "", opts, &mut seen).await?;
                    attempt += 1;
                }
                other => break other?,
            }
        }
    };
    if plan.job_image.is_some()
        && let Some(check) = &readiness
    {
        readiness::run(kube, &name, check).await?;
    }
    // Last, as the runner does in Docker mode: the services had the work-volume fill to start.
    super::service_health::wait_for_services(kube, &name, &plan.health, granted).await?;
    Ok(is_alpine)
}

/// Fills the pod's work volume in no-volume mode, then detects alpine.
async fn fill_and_detect(kube: &Kube, config: &Config, name: &str) -> anyhow::Result<bool> {
    if config.work_volume == WorkVolumeMode::Copy {
        let dirs = RunnerDirs::from_config(config)?;
        let stats = workspace::push_initial(kube, name, &dirs)
            .await
            .context("no-volume mode: copying the runner's _work and externals into the job pod")?;
        tracing::info!(
            entries = stats.entries,
            bytes = stats.bytes,
            "work volume filled"
        );
    }
    detect_alpine(kube, name).await
}

/// No-volume mode streams archives into the pod over exec and must close the stream's input
/// while waiting for tar's exit status: only exec protocol v5 can (Kubernetes 1.30+; over v4
/// kube-rs closes the whole connection and the result is lost). Refuse older servers up front.
pub(crate) async fn require_exec_v5(kube: &Kube) -> anyhow::Result<()> {
    let info = match kube.client.apiserver_version().await {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the API server's version; assuming 1.30+");
            return Ok(());
        }
    };
    let minor: u32 = info
        .minor
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(u32::MAX);
    if info.major == "1" && minor < 30 {
        bail!(
            "no-volume mode (ARC_HOOK_WORK_VOLUME=copy) needs Kubernetes 1.30 or later, whose exec protocol (v5) can end a copy's input and still report its result; this API server is {}: use ARC_HOOK_WORK_VOLUME=claim (ARC's kubernetes mode with a work volume) or upgrade",
            info.git_version
        );
    }
    Ok(())
}

/// After a stop signal: removes this runner's objects (what the interrupted prepare_job may have
/// created), bounded by the cleanup timeout; failures are only logged, the job is failing anyway.
pub(crate) async fn remove_after_stop(config: &Config) {
    let Ok(runner) = config.require_runner_pod_name() else {
        return;
    };
    let removal = async {
        let kube = super::session::connect(config).await?;
        // Unreviewed: the secret sweep is tried (a Role without `list` on secrets leaves them to
        // the garbage collector: the runner pod owns the pull secret).
        let granted = crate::k8s::rbac::Granted {
            extras: vec![Extra::ListSecrets],
            ..Default::default()
        };
        super::runner_objects::remove_runner_objects(
            &kube,
            runner,
            &granted,
            &[],
            config.cleanup_timeout,
        )
        .await
        .map_err(anyhow::Error::from)
    };
    match tokio::time::timeout(config.cleanup_timeout, removal).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => crate::joblog::line_err(format_args!(
            "arc-hook prepare_job: could not remove its objects: {e:#}"
        )),
        Err(_) => crate::joblog::line_err(format_args!(
            "arc-hook prepare_job: removing its objects took longer than {}s; cleanup_job will retry",
            config.cleanup_timeout.as_secs()
        )),
    }
}

/// Whether the job container runs Alpine (the runner then uses its alpine node build).
async fn detect_alpine(kube: &Kube, pod: &str) -> anyhow::Result<bool> {
    let cmd: Vec<String> = [
        "sh",
        "-c",
        "cat /etc/*release* 2>/dev/null | grep -qi '^ID=\"\\{0,1\\}alpine'",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let target = ExecTarget {
        pod,
        container: JOB_CONTAINER_NAME,
        what: "the alpine check",
    };
    let (code, _, err) = exec_capture(kube, target, &cmd)
        .await
        .context("checking whether the job container is alpine")?;
    if code > 1 {
        tracing::warn!(code, stderr = %String::from_utf8_lossy(&err), "alpine check could not run; assuming not alpine");
    }
    Ok(code == 0)
}

/// Copies the runner's externals into the work volume (`_work/externals`, `/__e` in the pod),
/// as upstream does; unchanged files are skipped.
fn provide_externals(config: &Config) {
    let Some(work) = config.runner_work_dir() else {
        tracing::warn!("RUNNER_WORKSPACE is not set: cannot find the runner's externals for /__e");
        return;
    };
    let Some(src) = work.parent().map(|p| p.join("externals")) else {
        return;
    };
    if !src.is_dir() {
        tracing::warn!(path = %src.display(), "the runner's externals are missing; /__e will be empty");
        return;
    }
    match crate::file_tree::sync_tree(&src, &work.join("externals")) {
        Ok(s) => tracing::debug!(
            copied = s.copied,
            unchanged = s.unchanged,
            bytes = s.bytes,
            "externals in the work volume"
        ),
        Err(e) => crate::joblog::warning(format_args!(
            "copying the runner's externals to /__e failed: {e}"
        )),
    }
}
