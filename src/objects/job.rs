//! The batch/v1 Job that runs a container step where it cannot run in the job pod.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, LocalObjectReference, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::pod::{pin_to_node, user_mounts, work_mount, work_subpath, work_volume};
use super::ports::{container_ports, parse_port_mappings};
use super::{
    BuildContext, BuildError, EnvFor, container_env, kubelet_literal, kubelet_literals,
    runner_labels,
};
use crate::protocol::{Mount, RunContainerStepArgs};

/// The step container's name (and `$step` in templates).
pub(crate) const STEP_CONTAINER_NAME: &str = "step";
/// Seconds a finished step Job is kept before Kubernetes removes it (cleanup_job removes it sooner).
pub(crate) const STEP_JOB_TTL_SECONDS: i32 = 300;

/// One of a container step's `/github/*` mounts, on the work volume.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepMount {
    /// Where the step sees it, e.g. `/github/workspace`.
    pub target: String,
    /// The directory of the work volume (`""` for its root), e.g. `repo/repo`.
    pub sub_path: String,
    pub read_only: bool,
}

/// The runner's mounts for container actions (actions/runner `ContainerActionHandler.cs`), used
/// when a runner sends none: `(target, directory under _work)`.
const RUNNER_STEP_MOUNTS: [(&str, &str); 4] = [
    ("/github/runner_temp", "_temp"),
    ("/github/home", "_temp/_github_home"),
    ("/github/workflow", "_temp/_github_workflow"),
    ("/github/file_commands", "_temp/_runner_file_commands"),
];

/// A container step's mounts from the runner's `systemMountVolumes`, each mapped onto the work
/// volume. The docker socket has no meaning on Kubernetes and is skipped.
pub(crate) fn step_system_mounts(
    system: &[Mount],
    workspace_subpath: &str,
) -> Result<Vec<StepMount>, BuildError> {
    if system.is_empty() {
        let mut mounts: Vec<StepMount> = RUNNER_STEP_MOUNTS
            .iter()
            .map(|(target, sub)| StepMount {
                target: target.to_string(),
                sub_path: sub.to_string(),
                read_only: false,
            })
            .collect();
        mounts.push(StepMount {
            target: "/github/workspace".into(),
            sub_path: workspace_subpath.to_string(),
            read_only: false,
        });
        return Ok(mounts);
    }
    let mut mounts = Vec::new();
    for (i, m) in system.iter().enumerate() {
        if m.target_volume_path == DOCKER_SOCKET {
            tracing::debug!(
                "container step: skipping the docker socket mount (no docker daemon on Kubernetes)"
            );
            continue;
        }
        let field = format!("args.systemMountVolumes[{i}].sourceVolumePath");
        let source = m.source_volume_path.as_deref().unwrap_or_default();
        let sub_path = work_subpath(source).ok_or_else(|| BuildError::MountOutsideWork {
            field,
            path: source.to_string(),
        })?;
        mounts.push(StepMount {
            target: m.target_volume_path.clone(),
            sub_path,
            read_only: m.read_only,
        });
    }
    Ok(mounts)
}

/// The docker socket the runner mounts into container actions.
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The mounts a container action sees in its own pod: `/__w`, then the runner's `/github/*`
/// mounts as sub-paths of the work volume.
pub(crate) fn container_step_mounts(system: &[StepMount]) -> Vec<VolumeMount> {
    let mut mounts = vec![work_mount("/__w", None, false)];
    mounts.extend(system.iter().map(|m| {
        work_mount(
            &m.target,
            (!m.sub_path.is_empty()).then_some(m.sub_path.as_str()),
            m.read_only,
        )
    }));
    mounts
}

/// What a container step runs, as Docker mode would: the entrypoint and arguments taken
/// literally (no `$(VAR)` expansion), the working directory and the environment; the same for a
/// Job's container and an ephemeral one.
pub(crate) struct StepProcess {
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub env: Vec<k8s_openapi::api::core::v1::EnvVar>,
}

pub(crate) fn step_process(args: &RunContainerStepArgs) -> Result<StepProcess, BuildError> {
    Ok(StepProcess {
        command: args
            .entry_point
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(|e| vec![kubelet_literal(e)]),
        args: (!args.entry_point_args.is_empty()).then(|| kubelet_literals(&args.entry_point_args)),
        working_dir: args.working_directory.clone().filter(|w| !w.is_empty()),
        env: container_env(&args.environment_variables, "args", EnvFor::Step)?,
    })
}

/// The step container: the image's own entrypoint unless the step names one (docker semantics:
/// `entryPointArgs` replace the image's CMD).
pub(crate) fn step_container(
    args: &RunContainerStepArgs,
    image: &str,
    workspace_subpath: &str,
) -> Result<(Container, Vec<Volume>), BuildError> {
    let ports = parse_port_mappings(&args.port_mappings, "args.portMappings")?;
    let system = step_system_mounts(&args.system_mount_volumes, workspace_subpath)?;
    let mut mounts = container_step_mounts(&system);
    let user = user_mounts(&args.user_mount_volumes, "args.userMountVolumes")?;
    mounts.extend(user.mounts);
    let process = step_process(args)?;
    let container = Container {
        name: STEP_CONTAINER_NAME.into(),
        image: Some(image.to_string()),
        command: process.command,
        args: process.args,
        working_dir: process.working_dir,
        env: Some(process.env),
        ports: container_ports(&ports),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Ok((container, user.volumes))
}

/// Builds the step Job (before template merge).
pub(crate) fn container_step_job(
    ctx: &BuildContext,
    name: &str,
    container: Container,
    extra_volumes: Vec<Volume>,
    pull_secret: Option<&str>,
) -> Job {
    let mut volumes = vec![work_volume(ctx)];
    volumes.extend(extra_volumes);
    let labels = runner_labels(ctx, "step");
    let mut job = Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(super::runner_annotations(ctx)),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            ttl_seconds_after_finished: Some(STEP_JOB_TTL_SECONDS),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    volumes: Some(volumes),
                    image_pull_secrets: pull_secret.map(|n| {
                        vec![LocalObjectReference {
                            name: n.to_string(),
                        }]
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pin_to_node(pod, ctx);
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> BuildContext {
        crate::objects::test_context()
    }

    #[test]
    fn job_shape() {
        let args = RunContainerStepArgs {
            image: Some("alpine:3.19".into()),
            entry_point_args: vec!["echo".into(), "hi there".into()],
            working_directory: Some("/github/workspace".into()),
            ..Default::default()
        };
        let (c, _) = step_container(&args, "alpine:3.19", "repo/repo").expect("valid");
        assert_eq!(c.command, None, "the image's own entrypoint is kept");
        assert_eq!(
            c.args.as_deref(),
            Some(&["echo".to_string(), "hi there".to_string()][..])
        );
        let job = container_step_job(&ctx(), "arc-runner-step-abcdefgh", c, Vec::new(), None);
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.expect("pod spec");
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.node_name, None);
        assert!(format!("{:?}", pod.affinity).contains("node-1"));
        let ws = pod.containers[0]
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.mount_path == "/github/workspace")
            .expect("workspace mount");
        assert_eq!(ws.sub_path.as_deref(), Some("repo/repo"));
    }
}
