//! prepare_job: create the workflow pod (and pull secret), wait until it runs, and tell the runner about it.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::api::{DeleteParams, ListParams};

use super::session::Session;
use super::steps::workspace::{self, RunnerDirs};
use super::{HookResult, cache_slot, log_line, startup};
use crate::config::{Config, WorkVolumeMode};
use crate::k8s::Kube;
use crate::k8s::exec::{ExecTarget, exec_capture};
use crate::k8s::owned::{self, create_once};
use crate::k8s::rbac::{self, Extra};
use crate::k8s::wait::{Milestones, wait_running_observed};
use crate::objects::{JOB_CONTAINER_NAME, names};
use crate::plan::{PreparePlan, plan_prepare_job};
use crate::protocol::{CommandName, Envelope, JobState, PrepareJobArgs, PrepareJobResponse};

/// The message for a job without `container:` on a runner that requires one.
pub const REQUIRE_CONTAINER_MESSAGE: &str = "this runner runs jobs only in containers (ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER=true): add `container: <image>` to the job in your workflow, e.g. `container: ubuntu:24.04`";

/// Objects created so far, removed again if prepare_job fails.
#[derive(Default)]
struct Created {
    pod: Option<String>,
    secret: Option<String>,
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
            if owned::delete_or_warn(&api, "pod", p, &dp).await {
                let gone = crate::k8s::wait::wait_gone(
                    &api,
                    &format!("pod {p}"),
                    &ListParams::default().fields(&format!("metadata.name={p}")),
                    REMOVE_TIMEOUT,
                    can_watch,
                )
                .await;
                if let Err(e) = gone {
                    println!(
                        "arc-hook: warning: pod {p} is still being removed: {}",
                        e.chain()
                    );
                }
            }
        }
        if let Some(s) = &self.secret {
            owned::delete_or_warn(&kube.secrets(), "secret", s, &DeleteParams::default()).await;
        }
    }
}

pub async fn prepare_job(
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

    super::cleanup_job::remove_runner_objects(kube, runner, granted, config.cleanup_timeout)
        .await
        .context("removing the previous job's leftovers")?;

    if config.work_volume == WorkVolumeMode::Claim {
        provide_externals(config);
    }

    let mut created = Created::default();
    let placed = create_with_slot(&session, config, args, node, &mut created).await;
    let (plan, created_at) = match placed {
        Ok(p) => p,
        Err(e) => {
            created.remove(kube, granted.has(Extra::WatchPods)).await;
            return Err(e);
        }
    };
    for w in &plan.warnings {
        log_line(&format!("arc-hook: warning: {w}"));
    }
    let result = start(kube, config, &plan, granted, created_at).await;
    let is_alpine = match result {
        Ok(a) => a,
        Err(e) => {
            created.remove(kube, granted.has(Extra::WatchPods)).await;
            return Err(e);
        }
    };
    let response = PrepareJobResponse {
        state: JobState {
            job_pod: plan.pod_name().to_string(),
            namespace: Some(kube.namespace.clone()),
            no_volume: config.work_volume == WorkVolumeMode::Copy,
        },
        context: plan.response_context(),
        is_alpine,
    };
    let json = serde_json::to_vec(&response).context("serialising the response")?;
    if let Err(e) = std::fs::write(&response_file, json) {
        created.remove(kube, granted.has(Extra::WatchPods)).await;
        bail!(
            "cannot write the response file {}: {e}",
            response_file.display()
        );
    }
    Ok(0)
}

/// Creates the workflow pod (and its secret) holding the lowest free cache slot on the node;
/// after losing a race for a slot, removes what it created and takes the next one.
async fn create_with_slot(
    session: &Session,
    config: &Config,
    args: &PrepareJobArgs,
    node: Option<String>,
    created: &mut Created,
) -> anyhow::Result<(PreparePlan, Instant)> {
    let kube = &session.kube;
    let pod_name = names::job_pod_name(&session.runner);
    for _ in 0..cache_slot::MAX_ATTEMPTS {
        let held = cache_slot::list_holders(kube, node.as_deref())
            .await
            .context("choosing a cache slot")?;
        let slot = cache_slot::lowest_free(&held, &pod_name);
        let mut ctx = session.build_context(config, node.clone());
        ctx.cache_slot = Some(slot);
        let plan = plan_prepare_job(
            &ctx,
            args,
            session.template.as_ref(),
            &config.job_options,
            &names::random_suffix(),
        )?;
        let created_at = Instant::now();
        create_objects(kube, &plan, created).await?;
        let held = cache_slot::list_holders(kube, node.as_deref())
            .await
            .context("checking the cache slot")?;
        if !cache_slot::lost_race(&held, &pod_name, slot) {
            tracing::debug!(slot, "cache slot taken");
            return Ok((plan, created_at));
        }
        tracing::info!(
            slot,
            "another job on the node took the same cache slot first; retrying"
        );
        created
            .remove(kube, session.granted.has(Extra::WatchPods))
            .await;
        *created = Created::default();
        tokio::time::sleep(cache_slot::retry_pause()).await;
    }
    bail!(
        "could not get a cache slot on the node after {} attempts: other jobs kept taking the same one; retry the job",
        cache_slot::MAX_ATTEMPTS
    )
}

/// Creates the secret (if any) and the pod.
async fn create_objects(
    kube: &Kube,
    plan: &PreparePlan,
    created: &mut Created,
) -> anyhow::Result<()> {
    if let Some(secret) = &plan.secret {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let api = kube.secrets();
        create_once(&api, "registry secret", secret).await?;
        created.secret = Some(name);
    }
    let name = plan.pod_name().to_string();
    let api = kube.pods();
    create_once(&api, "pod", &plan.pod)
        .await
        .context("cannot create the workflow pod")?;
    created.pod = Some(name);
    Ok(())
}

/// Waits for the pod, reports where start-up time went, fills it in no-volume mode, detects alpine.
async fn start(
    kube: &Kube,
    config: &Config,
    plan: &PreparePlan,
    granted: &rbac::Granted,
    created_at: Instant,
) -> anyhow::Result<bool> {
    let name = plan.pod_name().to_string();
    let opts = crate::hooks::pod_wait(config, granted, false);
    let mut seen = Milestones::default();
    wait_running_observed(kube, &name, opts, &mut seen)
        .await
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    startup::report(kube, &name, granted, created_at, seen).await;

    if plan.job_image.is_none() {
        return Ok(false);
    }
    if config.work_volume == WorkVolumeMode::Copy {
        let dirs = RunnerDirs::from_config(config)?;
        let stats = workspace::push_initial(kube, &name, &dirs)
            .await
            .context("no-volume mode: copying the runner's _work and externals into the job pod")?;
        tracing::info!(
            entries = stats.entries,
            bytes = stats.bytes,
            "work volume filled"
        );
    }
    detect_alpine(kube, &name).await
}

/// No-volume mode streams archives into the pod over exec and must close the stream's input
/// while waiting for tar's exit status: only exec protocol v5 can (Kubernetes 1.30+; over v4
/// kube-rs closes the whole connection and the result is lost). Refuse older servers up front.
async fn require_exec_v5(kube: &Kube) -> anyhow::Result<()> {
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
pub async fn remove_after_stop(config: &Config) {
    let Ok(runner) = config.require_runner_pod_name() else {
        return;
    };
    let removal = async {
        let kube = super::session::connect(config).await?;
        super::cleanup_job::remove_runner_objects(
            &kube,
            runner,
            &crate::k8s::rbac::Granted::default(),
            config.cleanup_timeout,
        )
        .await
        .map_err(anyhow::Error::from)
    };
    match tokio::time::timeout(config.cleanup_timeout, removal).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => eprintln!("arc-hook prepare_job: could not remove its objects: {e:#}"),
        Err(_) => eprintln!(
            "arc-hook prepare_job: removing its objects took longer than {}s; cleanup_job will retry",
            config.cleanup_timeout.as_secs()
        ),
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
        Err(e) => log_line(&format!(
            "arc-hook: warning: copying the runner's externals to /__e failed: {e}"
        )),
    }
}
