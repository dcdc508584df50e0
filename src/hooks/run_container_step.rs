//! run_container_step: run a container action's image (or one built from its Dockerfile) as an ephemeral container in the job pod, else as its own Job.

use anyhow::{Context, bail};

use super::run_script_step::job_pod;
use super::shared_work::SharedDir;
use super::step_ephemeral::{Outcome, run_in_job_pod};
use super::workspace::{self, RunnerDirs};
use super::{HookResult, build_context, log_line, runner_node};
use crate::config::{Config, ContainerStepMode};
use crate::k8s::rbac::{self, Extra};
use crate::objects::names;
use crate::plan::{plan_container_step, plan_ephemeral_step, workspace_subpath};
use crate::protocol::{CommandName, Envelope, RunContainerStepArgs};
use crate::template::Template;

/// Marker under `_temp/_arc_hook/`: the fallback to Jobs was explained once this job.
const FALLBACK_NOTED: &str = "container-steps-as-jobs";

pub async fn run_container_step(
    envelope: &Envelope,
    args: &RunContainerStepArgs,
    config: &Config,
) -> HookResult {
    let runner = config.require_runner_pod_name()?.to_string();
    if args.image.as_deref().is_none_or(str::is_empty) {
        match &args.dockerfile {
            Some(_) if config.build.is_none() => bail!(crate::config::BUILD_NOT_CONFIGURED),
            Some(_) => {}
            None => bail!("invalid hook input: args.image: missing (and no args.dockerfile)"),
        }
    }
    let template = config
        .template_path
        .as_deref()
        .map(Template::load)
        .transpose()?;
    let kube = super::connect(config).await?;
    let granted = rbac::check(&kube, CommandName::RunContainerStep, true).await;
    if !granted.missing_required.is_empty() {
        bail!(rbac::missing_message(
            &granted.missing_required,
            &kube.namespace
        ));
    }
    let pod = job_pod(envelope, &runner);
    let copy = workspace::copy_mode(envelope, config);
    let node = runner_node(&kube, config, &runner).await?;
    let mut ctx = build_context(config, &kube, &runner, node);
    // A step Job shares its job's caches: the slot of the workflow pod.
    ctx.cache_slot = super::cache_slot::held_by(&kube, &pod).await;
    let ws = workspace_subpath(config.github_workspace.as_deref());
    let suffix = names::random_suffix();

    let image = match args.image.clone().filter(|i| !i.is_empty()) {
        Some(i) => i,
        None => {
            let dockerfile = args.dockerfile.as_deref().unwrap_or_default();
            let build = config
                .build
                .as_ref()
                .context(crate::config::BUILD_NOT_CONFIGURED)?;
            let job = super::build_image::BuildJob {
                ctx: &ctx,
                copy,
                dockerfile,
            };
            super::build_image::build(&kube, config, build, &job, &granted).await?
        }
    };

    // A job with neither container nor services has no workflow pod: the runner sent no
    // prepare_job (state null) and will send no cleanup_job, so the step is a Job that removes
    // itself.
    let prepared = envelope
        .state
        .as_ref()
        .is_some_and(|s| !s.job_pod.is_empty());
    let refused = match (
        config.container_steps,
        granted.has(Extra::EphemeralContainers),
    ) {
        _ if !prepared => "the job has no workflow pod (no container or services)".to_string(),
        (ContainerStepMode::Job, _) => "ARC_HOOK_CONTAINER_STEPS=job".to_string(),
        (ContainerStepMode::Auto, false) => {
            "the runner's Role does not grant patch on pods/ephemeralcontainers".to_string()
        }
        (ContainerStepMode::Auto, true) => {
            match plan_ephemeral_step(&ctx, args, &image, &ws, template.as_ref(), &suffix)? {
                Err(why) => why.0,
                Ok(plan) => {
                    for w in &plan.warnings {
                        log_line(&format!("arc-hook: warning: {w}"));
                    }
                    let dirs = if copy {
                        Some(RunnerDirs::from_config(config)?)
                    } else {
                        None
                    };
                    let work = config.runner_work_dir().context(
                        "RUNNER_WORKSPACE or RUNNER_TEMP must be set (the runner sets them)",
                    )?;
                    let can_watch = granted.has(Extra::WatchPods);
                    match run_in_job_pod(
                        &kube,
                        config,
                        &pod,
                        &plan,
                        &work,
                        dirs.as_ref(),
                        can_watch,
                    )
                    .await
                    {
                        Outcome::Ran(result) => return result,
                        Outcome::Refused(why) => why,
                    }
                }
            }
        }
    };
    if copy && !prepared {
        bail!(
            "no-volume mode: this container step belongs to a job without `container:` or services, so no pod holds the job's files for it; add `container:` to the job (any image with sh and tar) or use ARC_HOOK_WORK_VOLUME=claim"
        );
    }
    if copy {
        bail!(
            "no-volume mode: this container step cannot run in the job pod ({refused}), and a separate pod would not see the job's files; grant patch on pods/ephemeralcontainers in the runner's Role (deploy/rbac/role.yaml) or use ARC_HOOK_WORK_VOLUME=claim"
        );
    }
    note_fallback_once(config, &refused);
    let plan = plan_container_step(&ctx, args, &image, &ws, template.as_ref(), &suffix)?;
    for w in &plan.warnings {
        log_line(&format!("arc-hook: warning: {w}"));
    }
    super::step_job::run_as_job(&kube, config, &plan, &granted).await
}

/// Says once per job (not once per step) why container steps run as Jobs.
fn note_fallback_once(config: &Config, why: &str) {
    // The marker lives in the job-shared `_temp/_arc_hook`: opened without following links.
    let dir = config.runner_temp.as_deref().and_then(|t| {
        SharedDir::open(t)
            .and_then(|t| t.child_dir(super::run_script_step::SCRIPT_DIR))
            .ok()
    });
    if let Some(d) = &dir
        && d.kind(FALLBACK_NOTED).ok().flatten().is_some()
    {
        tracing::debug!(%why, "container step as a Job");
        return;
    }
    log_line(&format!(
        "arc-hook: container steps run as separate Jobs on this runner: {why}"
    ));
    if let Some(d) = dir {
        let _ = d.create_file(FALLBACK_NOTED, 0o644, why.as_bytes());
    }
}
