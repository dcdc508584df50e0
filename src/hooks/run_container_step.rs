//! run_container_step: run a container action's image (or one built from its Dockerfile) as an ephemeral container in the job pod, else as its own Job, else (no-volume mode, or no Jobs granted) as a pod of its own.

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::HostAlias;

use super::HookResult;
use super::job_state::job_pod;
use super::session::Session;
use super::shared_work::SharedDir;
use super::steps::cancel::Cancel;
use super::steps::ephemeral::{Outcome, run_in_job_pod};
use super::steps::step_pod::{StepFiles, mounted_roots, run_as_pod};
use super::steps::workspace::{self, RunnerDirs};
use crate::config::{Config, ContainerStepMode};
use crate::k8s::rbac::Extra;
use crate::objects::BuildContext;
use crate::objects::names;
use crate::objects::step_pod::{FilesHelper, service_aliases};
use crate::plan::{
    EphemeralPlanning, plan_container_step, plan_ephemeral_step, plan_step_pod, workspace_subpath,
};
use crate::protocol::{CommandName, Envelope, RunContainerStepArgs};

/// Marker under `_temp/_arc_hook/`: where container steps run outside the job pod (a Job or a pod
/// of their own) was explained once this job (the file keeps its first name).
const FALLBACK_NOTED: &str = "container-steps-as-jobs";

pub(crate) async fn run_container_step(
    envelope: &Envelope,
    args: &RunContainerStepArgs,
    config: &Config,
) -> HookResult {
    // Claim mode: the step writes the job's file-command directory; the hook delivers.
    let claim = !super::steps::workspace::copy_mode(envelope, config);
    let temp = super::job_state::runner_temp(config).ok();
    if let Some(t) = &temp {
        super::job_state::before_step(t, claim);
    }
    let code = run_step(envelope, args, config).await?;
    match temp {
        Some(t) => super::job_state::after_step(&t, claim, code),
        None => Ok(code),
    }
}

async fn run_step(envelope: &Envelope, args: &RunContainerStepArgs, config: &Config) -> HookResult {
    check_image_source(args, config)?;
    // From here on a cancel stops the step (or its image build) instead of ending the hook.
    let cancel = Cancel::listen().context("cannot listen for the runner's cancel signals")?;
    let session = Session::open(config, CommandName::RunContainerStep).await?;
    let (kube, granted) = (&session.kube, &session.granted);
    let pod = job_pod(envelope, &session.runner);
    let copy = workspace::copy_mode(envelope, config);
    let node = session.node(config).await?;
    let mut ctx = session.build_context(config, node);
    // A step Job shares its job's caches: the slot of the workflow pod.
    ctx.cache_slot = super::cache_slot::held_by(kube, &pod).await;
    let ws = workspace_subpath(config.github_workspace.as_deref());
    let suffix = names::random_suffix();
    let template = session.template.as_ref();

    // A job with neither container nor services has no workflow pod: the runner sent no
    // prepare_job (state null) and will send no cleanup_job, so the step is a Job that removes
    // itself.
    let prepared = envelope
        .state
        .as_ref()
        .is_some_and(|s| !s.job_pod.is_empty());
    // The step's secrets go with the workflow pod (cleanup_job deletes it, the garbage
    // collector them), or with the runner pod where the job has none.
    let owner_pod = if prepared { &pod } else { &session.runner };
    let image = step_image(&session, config, args, &ctx, copy, owner_pod, &cancel).await?;
    let can_jobs = granted.has(Extra::BatchJobs);
    let mut place = placement(
        prepared,
        config.container_steps,
        granted.has(Extra::EphemeralContainers),
        copy,
        can_jobs,
    );
    if place == Placement::JobPod {
        let refused = match plan_ephemeral_step(&ctx, args, &image, &ws, template, &suffix)? {
            EphemeralPlanning::NotEphemeral(why) => why.0,
            EphemeralPlanning::Planned(plan) => {
                warn_all(&plan.warnings);
                let dirs = copy.then(|| RunnerDirs::from_config(config)).transpose()?;
                let work = config.runner_work_dir().context(
                    "RUNNER_WORKSPACE or RUNNER_TEMP must be set (the runner sets them)",
                )?;
                let can_watch = granted.has(Extra::WatchPods);
                let run = run_in_job_pod(
                    kube,
                    config,
                    &pod,
                    &plan,
                    &work,
                    dirs.as_ref(),
                    can_watch,
                    &cancel,
                );
                match run.await {
                    Outcome::Ran(result) => return result,
                    Outcome::Refused(why) => why,
                }
            }
        };
        place = fallback(refused, prepared, copy, can_jobs);
    }
    match place {
        Placement::Refused(why) => bail!(why),
        // `fallback` never answers JobPod.
        Placement::JobPod => bail!("internal error: the container step was placed nowhere"),
        Placement::Job(why) => {
            note_fallback_once(config, "as separate Jobs", &why);
            let mut plan = plan_container_step(&ctx, args, &image, &ws, template, &suffix)?;
            warn_all(&plan.warnings);
            own_secret(kube, plan.secret.as_mut(), owner_pod).await;
            super::steps::job::run_as_job(kube, config, &plan, granted, &cancel).await
        }
        Placement::Pod(why) => {
            note_fallback_once(config, "in pods of their own", &why);
            let (helper, aliases) =
                from_job_pod(kube, config, prepared.then_some(&pod), copy).await?;
            let mut plan = plan_step_pod(
                &ctx,
                args,
                &image,
                &ws,
                template,
                &suffix,
                helper.as_ref(),
                aliases,
            )?;
            warn_all(&plan.warnings);
            own_secret(kube, plan.secret.as_mut(), owner_pod).await;
            let dirs = copy.then(|| RunnerDirs::from_config(config)).transpose()?;
            let files = match &dirs {
                Some(dirs) => Some(StepFiles {
                    job_pod: &pod,
                    dirs,
                    roots: step_roots(args, &ws)?,
                }),
                None => None,
            };
            run_as_pod(kube, config, &plan, files.as_ref(), granted, &cancel).await
        }
    }
}

/// Makes pod `owner` the owner of the step's pull secret (if any), so the garbage collector
/// removes it with that pod if the hook is killed before the step deletes it.
async fn own_secret(
    kube: &crate::k8s::Kube,
    secret: Option<&mut k8s_openapi::api::core::v1::Secret>,
    owner: &str,
) {
    if let Some(s) = secret {
        s.metadata.owner_references = crate::k8s::owned::pod_owner(kube, owner)
            .await
            .map(|o| vec![o]);
    }
}

/// What a step's own pod takes from the job pod (`None`: the job has none): in no-volume mode
/// the helpers' image and user, and the services' names.
async fn from_job_pod(
    kube: &crate::k8s::Kube,
    config: &Config,
    job_pod: Option<&String>,
    copy: bool,
) -> anyhow::Result<(Option<FilesHelper>, Option<HostAlias>)> {
    let Some(name) = job_pod else {
        return Ok((None, None));
    };
    let pods = kube.pods();
    let pod = crate::k8s::retry::with_retry(&format!("reading job pod {name}"), || pods.get(name))
        .await
        .with_context(|| format!("cannot read the job pod {name}"))?;
    let helper = match copy {
        true => Some(
            FilesHelper::from_job_pod(&pod, config.prepare_timeout.as_secs()).context(
                "no-volume mode: the job pod has no job container to copy the step's files with",
            )?,
        ),
        false => None,
    };
    Ok((helper, service_aliases(&pod)))
}

/// The top-level entries of the work volume a step's mounts lie in (what its pod is sent).
fn step_roots(args: &RunContainerStepArgs, ws: &str) -> anyhow::Result<Vec<String>> {
    let mounts = crate::objects::job::step_system_mounts(&args.system_mount_volumes, ws)?;
    let user = args
        .user_mount_volumes
        .iter()
        .filter_map(|m| m.source_volume_path.as_deref())
        .filter_map(crate::objects::pod::work_subpath)
        .collect::<Vec<_>>();
    let subs = mounts
        .iter()
        .map(|m| m.sub_path.as_str())
        .chain(user.iter().map(String::as_str));
    Ok(mounted_roots(subs))
}

/// The step names an image, or a Dockerfile and the runner can build images.
fn check_image_source(args: &RunContainerStepArgs, config: &Config) -> anyhow::Result<()> {
    if args.image.as_deref().is_some_and(|i| !i.is_empty()) {
        return Ok(());
    }
    match &args.dockerfile {
        Some(_) if config.build.is_none() => bail!(crate::config::BUILD_NOT_CONFIGURED),
        Some(_) => Ok(()),
        None => bail!("invalid hook input: args.image: missing (and no args.dockerfile)"),
    }
}

/// The image to run: the step's, or the one built from its Dockerfile.
async fn step_image(
    session: &Session,
    config: &Config,
    args: &RunContainerStepArgs,
    ctx: &BuildContext,
    copy: bool,
    owner_pod: &str,
    cancel: &Cancel,
) -> anyhow::Result<String> {
    if let Some(image) = args.image.clone().filter(|i| !i.is_empty()) {
        return Ok(image);
    }
    let build = config
        .build
        .as_ref()
        .context(crate::config::BUILD_NOT_CONFIGURED)?;
    let job = super::steps::build_image::BuildJob {
        ctx,
        copy,
        dockerfile: args.dockerfile.as_deref().unwrap_or_default(),
        owner_pod,
    };
    super::steps::build_image::build(&session.kube, config, build, &job, &session.granted, cancel)
        .await
}

fn warn_all(warnings: &[String]) {
    for w in warnings {
        crate::joblog::warning(w);
    }
}

/// Where a container step runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// As an ephemeral container of the job pod (which may still refuse it).
    JobPod,
    /// As its own batch Job, and why not in the job pod.
    Job(String),
    /// As a bare pod of its own (its files relayed in no-volume mode), and why.
    Pod(String),
    /// Nowhere: the message for the job log.
    Refused(String),
}

/// Where the step goes first (pure): the job pod where it exists, the mode allows it and the
/// Role grants ephemeral containers; else [`fallback`].
pub(crate) fn placement(
    prepared: bool,
    mode: ContainerStepMode,
    can_ephemeral: bool,
    copy: bool,
    can_jobs: bool,
) -> Placement {
    let why = match (prepared, mode, can_ephemeral) {
        (false, _, _) => "the job has no workflow pod (no container or services)",
        (true, ContainerStepMode::Job, _) => "ARC_HOOK_CONTAINER_STEPS=job",
        (true, ContainerStepMode::Auto, false) => {
            "the runner's Role does not grant patch on pods/ephemeralcontainers"
        }
        (true, ContainerStepMode::Auto, true) => return Placement::JobPod,
    };
    fallback(why.to_string(), prepared, copy, can_jobs)
}

/// Where the step goes when the job pod is not an option (`why`): its own Job where the Role
/// grants Jobs, else a pod of its own; in no-volume mode always a pod of its own, which the
/// job's files are relayed into from the job pod (so a job without one is refused).
pub(crate) fn fallback(why: String, prepared: bool, copy: bool, can_jobs: bool) -> Placement {
    match (copy, prepared, can_jobs) {
        (false, _, true) => Placement::Job(why),
        (false, _, false) => Placement::Pod(format!("{why}, nor create on batch jobs")),
        (true, false, _) => Placement::Refused(
            "no-volume mode: this container step belongs to a job without `container:` or services, so no pod holds the job's files for it; add `container:` to the job (any image with sh and tar) or use ARC_HOOK_WORK_VOLUME=claim".into(),
        ),
        (true, true, _) => Placement::Pod(why),
    }
}

/// Says once per job (not once per step) where container steps run (`how`) and why.
fn note_fallback_once(config: &Config, how: &str, why: &str) {
    // The marker lives in the job-shared `_temp/_arc_hook`: opened without following links.
    let dir = config.runner_temp.as_deref().and_then(|t| {
        SharedDir::open(t)
            .and_then(|t| t.child_dir(super::job_state::SCRIPT_DIR))
            .ok()
    });
    if let Some(d) = &dir
        && d.kind(FALLBACK_NOTED).ok().flatten().is_some()
    {
        tracing::debug!(%why, how, "container step outside the job pod");
        return;
    }
    crate::joblog::notice(format_args!(
        "container steps run {how} on this runner: {why}"
    ));
    if let Some(d) = dir {
        let _ = d.create_file(FALLBACK_NOTED, 0o644, why.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerStepMode::{Auto, Job};

    #[test]
    fn the_job_pod_first_where_it_exists_is_allowed_and_granted() {
        for copy in [false, true] {
            for jobs in [false, true] {
                assert_eq!(placement(true, Auto, true, copy, jobs), Placement::JobPod);
            }
        }
    }

    #[test]
    fn otherwise_a_job_saying_why_in_claim_mode() {
        let job = |p: Placement| match p {
            Placement::Job(why) => why,
            other => panic!("expected a Job, got {other:?}"),
        };
        assert!(job(placement(false, Auto, true, false, true)).contains("no workflow pod"));
        assert_eq!(
            job(placement(true, Job, true, false, true)),
            "ARC_HOOK_CONTAINER_STEPS=job"
        );
        assert!(
            job(placement(true, Auto, false, false, true)).contains("pods/ephemeralcontainers")
        );
        assert_eq!(
            job(fallback("too big".into(), true, false, true)),
            "too big"
        );
    }

    #[test]
    fn a_pod_of_its_own_where_no_jobs_are_granted_or_in_no_volume_mode() {
        let pod = |p: Placement| match p {
            Placement::Pod(why) => why,
            other => panic!("expected a pod, got {other:?}"),
        };
        assert_eq!(
            pod(placement(true, Auto, false, false, false)),
            "the runner's Role does not grant patch on pods/ephemeralcontainers, nor create on batch jobs"
        );
        assert!(pod(placement(false, Auto, true, false, false)).contains("no workflow pod"));
        for jobs in [false, true] {
            assert!(
                pod(placement(true, Auto, false, true, jobs)).contains("pods/ephemeralcontainers")
            );
            assert_eq!(
                pod(placement(true, Job, true, true, jobs)),
                "ARC_HOOK_CONTAINER_STEPS=job"
            );
            assert_eq!(
                pod(fallback("the API said 422".into(), true, true, jobs)),
                "the API said 422"
            );
        }
    }

    #[test]
    fn no_volume_mode_without_a_job_pod_refuses() {
        for jobs in [false, true] {
            let Placement::Refused(msg) = placement(false, Auto, true, true, jobs) else {
                panic!("no pod holds the job's files");
            };
            assert!(msg.starts_with("no-volume mode: "), "{msg}");
        }
    }
}
