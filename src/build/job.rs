//! The batch/v1 Job that runs a container step where it cannot run in the job pod.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, LocalObjectReference, PodSpec, PodTemplateSpec, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::pod::{pin_to_node, user_mounts, work_mount, work_volume};
use super::ports::{container_ports, parse_port_mappings};
use super::{BuildContext, BuildError, container_env, runner_labels};
use crate::protocol::RunContainerStepArgs;

/// The step container's name (and `$step` in templates).
pub const STEP_CONTAINER_NAME: &str = "step";
/// Seconds a finished step Job is kept before Kubernetes removes it (cleanup_job removes it sooner).
pub const STEP_JOB_TTL_SECONDS: i32 = 300;

/// The mounts a container action sees, as the runner maps them for docker: the workspace at
/// `/github/workspace`, file commands, home and workflow directories, plus `/__w`.
pub fn container_step_mounts(workspace_subpath: &str) -> Vec<VolumeMount> {
    vec![
        work_mount("/__w", None, false),
        work_mount(
            "/github/workspace",
            (!workspace_subpath.is_empty()).then_some(workspace_subpath),
            false,
        ),
        work_mount(
            "/github/file_commands",
            Some("_temp/_runner_file_commands"),
            false,
        ),
        work_mount("/github/home", Some("_temp/_github_home"), false),
        work_mount("/github/workflow", Some("_temp/_github_workflow"), false),
    ]
}

/// The step container: the image's own entrypoint unless the step names one (docker semantics:
/// `entryPointArgs` replace the image's CMD).
pub fn step_container(
    args: &RunContainerStepArgs,
    image: &str,
    workspace_subpath: &str,
) -> Result<Container, BuildError> {
    let ports = parse_port_mappings(&args.port_mappings, "args.portMappings")?;
    let mut mounts = container_step_mounts(workspace_subpath);
    mounts.extend(user_mounts(
        &args.user_mount_volumes,
        "args.userMountVolumes",
    )?);
    Ok(Container {
        name: STEP_CONTAINER_NAME.into(),
        image: Some(image.to_string()),
        command: args
            .entry_point
            .as_deref()
            .filter(|e| !e.is_empty())
            .map(|e| vec![e.to_string()]),
        args: (!args.entry_point_args.is_empty()).then(|| args.entry_point_args.clone()),
        working_dir: args.working_directory.clone().filter(|w| !w.is_empty()),
        env: Some(container_env(&args.environment_variables, "args")?),
        ports: container_ports(&ports),
        volume_mounts: Some(mounts),
        ..Default::default()
    })
}

/// Builds the step Job (before template merge).
pub fn container_step_job(
    ctx: &BuildContext,
    name: &str,
    container: Container,
    pull_secret: Option<&str>,
) -> Job {
    let labels = runner_labels(ctx, "step");
    let mut job = Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(labels.clone()),
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
                    volumes: Some(vec![work_volume(ctx)]),
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
        crate::build::test_context()
    }

    #[test]
    fn job_shape() {
        let args = RunContainerStepArgs {
            image: Some("alpine:3.19".into()),
            entry_point_args: vec!["echo".into(), "hi there".into()],
            working_directory: Some("/github/workspace".into()),
            ..Default::default()
        };
        let c = step_container(&args, "alpine:3.19", "repo/repo").expect("valid");
        assert_eq!(c.command, None, "the image's own entrypoint is kept");
        assert_eq!(
            c.args.as_deref(),
            Some(&["echo".to_string(), "hi there".to_string()][..])
        );
        let job = container_step_job(&ctx(), "arc-runner-step-abcdefgh", c, None);
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
