//! The workflow pod: the job container, one container per service, the work volume and pull secret.

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, LocalObjectReference, PersistentVolumeClaimVolumeSource, Pod,
    PodSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::ports::{PortMapping, container_ports, parse_port_mappings};
use super::{
    BuildContext, BuildError, JOB_CONTAINER_NAME, WORK_VOLUME_NAME, container_env, names,
    runner_labels,
};
use crate::config::WorkVolumeMode;
use crate::protocol::{ContainerDefinition, Mount, PrepareJobArgs};

/// The job container's keep-alive command when the runner gives no entry point (as upstream).
pub const KEEP_ALIVE: [&str; 3] = ["tail", "-f", "/dev/null"];

/// The workflow pod and what the response and template merge need to know about it.
#[derive(Debug, Clone)]
pub struct JobPod {
    pub pod: Pod,
    /// Port mappings of the job container (empty without one).
    pub job_ports: Vec<PortMapping>,
    /// Per service, in the runner's order: container name, image-derived name, context name, ports.
    pub services: Vec<ServiceContainer>,
    /// Things the user should know (volumes not mounted...), one line each.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServiceContainer {
    pub container_name: String,
    pub image: String,
    pub image_name: String,
    pub context_name: Option<String>,
    pub ports: Vec<PortMapping>,
}

/// The work volume: the runner's claim, or an emptyDir the hook fills (no-volume mode).
pub fn work_volume(ctx: &BuildContext) -> Volume {
    match ctx.work_volume {
        WorkVolumeMode::Claim => Volume {
            name: WORK_VOLUME_NAME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: ctx.claim_name.clone(),
                read_only: None,
            }),
            ..Default::default()
        },
        WorkVolumeMode::Copy => Volume {
            name: WORK_VOLUME_NAME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    }
}

pub fn work_mount(mount_path: &str, sub_path: Option<&str>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: WORK_VOLUME_NAME.into(),
        mount_path: mount_path.into(),
        sub_path: sub_path.map(str::to_string),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The job container's mounts, as upstream: `/__w`, externals at `/__e`, `/github/home` and
/// `/github/workflow` from `_temp`, then the user's volumes under `_work`.
pub fn job_mounts(user: &[Mount], field: &str) -> Result<Vec<VolumeMount>, BuildError> {
    let mut m = vec![
        work_mount("/__w", None, false),
        work_mount("/__e", Some("externals"), false),
        work_mount("/github/home", Some("_temp/_github_home"), false),
        work_mount("/github/workflow", Some("_temp/_github_workflow"), false),
    ];
    m.extend(user_mounts(user, field)?);
    Ok(m)
}

/// The user's `volumes:` as sub-paths of the work volume. Kubernetes cannot mount the runner's
/// host paths into another pod, so only paths under `_work` are accepted.
pub fn user_mounts(user: &[Mount], field: &str) -> Result<Vec<VolumeMount>, BuildError> {
    user.iter()
        .enumerate()
        .map(|(i, m)| {
            let sub = work_subpath(&m.source_volume_path).ok_or_else(|| {
                BuildError::MountOutsideWork {
                    field: format!("{field}[{i}].sourceVolumePath"),
                    path: m.source_volume_path.clone(),
                }
            })?;
            Ok(work_mount(
                &m.target_volume_path,
                (!sub.is_empty()).then_some(sub.as_str()),
                m.read_only,
            ))
        })
        .collect()
}

/// `/home/runner/_work/repo/x` -> `repo/x`; relative paths are taken relative to `_work`.
pub fn work_subpath(source: &str) -> Option<String> {
    let source = source.trim_end_matches('/');
    if !source.starts_with('/') {
        return (!source.split('/').any(|c| c == "..")).then(|| source.to_string());
    }
    if source.ends_with("/_work") {
        return Some(String::new());
    }
    let idx = source.rfind("/_work/")?;
    let rel = &source[idx + "/_work/".len()..];
    (!rel.split('/').any(|c| c == "..")).then(|| rel.to_string())
}

fn base_container(
    def: &ContainerDefinition,
    name: &str,
    field: &str,
) -> Result<(Container, Vec<PortMapping>), BuildError> {
    let ports = parse_port_mappings(&def.port_mappings, &format!("{field}.portMappings"))?;
    let c = Container {
        name: name.to_string(),
        image: Some(def.image.clone()),
        working_dir: def.working_directory.clone().filter(|w| !w.is_empty()),
        env: Some(container_env(&def.environment_variables, field)?),
        ports: container_ports(&ports),
        ..Default::default()
    };
    Ok((c, ports))
}

/// Builds the workflow pod for prepare_job (before template merge).
pub fn job_pod(
    ctx: &BuildContext,
    args: &PrepareJobArgs,
    pull_secret: Option<&str>,
) -> Result<JobPod, BuildError> {
    let mut containers = Vec::new();
    let mut warnings = Vec::new();
    let mut job_ports = Vec::new();

    if let Some(def) = &args.container {
        let field = "args.container";
        let (mut c, ports) = base_container(def, JOB_CONTAINER_NAME, field)?;
        match def.entry_point.as_deref().filter(|e| !e.is_empty()) {
            Some(ep) => {
                c.command = Some(vec![ep.to_string()]);
                c.args = (!def.entry_point_args.is_empty()).then(|| def.entry_point_args.clone());
            }
            None => c.command = Some(KEEP_ALIVE.iter().map(|s| s.to_string()).collect()),
        }
        c.volume_mounts = Some(job_mounts(
            &def.user_mount_volumes,
            &format!("{field}.userMountVolumes"),
        )?);
        job_ports = ports;
        containers.push(c);
    }

    let service_names = names::service_container_names(
        args.services
            .iter()
            .map(|s| (s.context_name.as_deref(), s.image.as_str())),
    );
    let mut services = Vec::new();
    for (i, (def, name)) in args.services.iter().zip(service_names).enumerate() {
        let field = format!("args.services[{i}]");
        let (mut c, ports) = base_container(def, &name, &field)?;
        if let Some(ep) = def.entry_point.as_deref().filter(|e| !e.is_empty()) {
            c.command = Some(vec![ep.to_string()]);
        }
        if !def.entry_point_args.is_empty() {
            c.args = Some(def.entry_point_args.clone());
        }
        let mut mounts = vec![work_mount("/__w", None, false)];
        // Upstream ignores a service's volumes; honour those under _work and say which are skipped,
        // so workflows written for docker (e.g. mounting the docker socket) keep working.
        for (j, m) in def.user_mount_volumes.iter().enumerate() {
            match user_mounts(std::slice::from_ref(m), &format!("{field}.userMountVolumes[{j}]")) {
                Ok(mut one) => mounts.append(&mut one),
                Err(_) => warnings.push(format!(
                    "service {name}: volume {:?} is outside the runner's _work directory and is not mounted on Kubernetes",
                    m.source_volume_path
                )),
            }
        }
        c.volume_mounts = Some(mounts);
        services.push(ServiceContainer {
            container_name: name,
            image: def.image.clone(),
            image_name: names::image_derived_name(&def.image),
            context_name: def.context_name.clone(),
            ports,
        });
        containers.push(c);
    }

    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(names::job_pod_name(&ctx.runner_pod)),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(runner_labels(ctx, "workflow")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            restart_policy: Some("Never".into()),
            node_name: placement_node(ctx),
            volumes: Some(vec![work_volume(ctx)]),
            image_pull_secrets: pull_secret.map(|n| {
                vec![LocalObjectReference {
                    name: n.to_string(),
                }]
            }),
            ..Default::default()
        }),
        status: None,
    };
    Ok(JobPod {
        pod,
        job_ports,
        services,
        warnings,
    })
}

/// The node the hook pins its pods to: the runner's, unless the scheduler places them.
pub fn placement_node(ctx: &BuildContext) -> Option<String> {
    if ctx.use_kube_scheduler {
        None
    } else {
        ctx.node_name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Registry;
    use std::collections::BTreeMap;

    pub(crate) fn ctx() -> BuildContext {
        BuildContext {
            runner_pod: "arc-runner-abc".into(),
            namespace: "ci".into(),
            node_name: Some("node-1".into()),
            use_kube_scheduler: false,
            work_volume: WorkVolumeMode::Claim,
            claim_name: "arc-runner-abc-work".into(),
            default_registry: None,
        }
    }

    fn args() -> PrepareJobArgs {
        PrepareJobArgs {
            container: Some(ContainerDefinition {
                image: "node:20".into(),
                working_directory: Some("/__w/repo/repo".into()),
                environment_variables: BTreeMap::from([("NODE_ENV".into(), "test".into())]),
                port_mappings: vec!["8080:80".into()],
                user_mount_volumes: vec![Mount {
                    source_volume_path: "/home/runner/_work/repo/repo/data".into(),
                    target_volume_path: "/data".into(),
                    read_only: true,
                }],
                registry: Some(Registry::default()),
                create_options: Some("--cpus 2".into()),
                ..Default::default()
            }),
            services: vec![ContainerDefinition {
                image: "redis:7".into(),
                context_name: Some("redis".into()),
                port_mappings: vec!["6379".into()],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn job_pod_shape() {
        let jp = job_pod(&ctx(), &args(), Some("arc-runner-abc-secret-x")).expect("valid");
        let spec = jp.pod.spec.as_ref().expect("spec");
        assert_eq!(
            jp.pod.metadata.name.as_deref(),
            Some("arc-runner-abc-workflow")
        );
        assert_eq!(
            jp.pod.metadata.labels.as_ref().expect("labels")["runner-pod"],
            "arc-runner-abc"
        );
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        let job = &spec.containers[0];
        assert_eq!(job.name, "job");
        assert_eq!(
            job.command.as_ref().expect("command"),
            &vec!["tail", "-f", "/dev/null"]
        );
        assert_eq!(job.working_dir.as_deref(), Some("/__w/repo/repo"));
        let mounts: Vec<_> = job
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .map(|m| (m.mount_path.as_str(), m.sub_path.as_deref()))
            .collect();
        assert_eq!(
            mounts,
            vec![
                ("/__w", None),
                ("/__e", Some("externals")),
                ("/github/home", Some("_temp/_github_home")),
                ("/github/workflow", Some("_temp/_github_workflow")),
                ("/data", Some("repo/repo/data")),
            ]
        );
        assert_eq!(spec.containers[1].name, "redis");
        assert_eq!(
            spec.image_pull_secrets.as_ref().expect("secrets")[0].name,
            "arc-runner-abc-secret-x"
        );
        assert_eq!(
            spec.volumes.as_ref().expect("volumes")[0]
                .persistent_volume_claim
                .as_ref()
                .expect("pvc")
                .claim_name,
            "arc-runner-abc-work"
        );
        // createOptions are applied by build::options (after the template), not here.
        assert!(jp.warnings.is_empty());
    }

    #[test]
    fn scheduler_and_copy_mode() {
        let mut c = ctx();
        c.use_kube_scheduler = true;
        c.work_volume = WorkVolumeMode::Copy;
        let jp = job_pod(&c, &args(), None).expect("valid");
        let spec = jp.pod.spec.expect("spec");
        assert_eq!(spec.node_name, None);
        assert!(spec.volumes.expect("volumes")[0].empty_dir.is_some());
        assert!(spec.image_pull_secrets.is_none());
    }

    #[test]
    fn mounts_outside_work_are_refused() {
        let mut a = args();
        a.container.as_mut().expect("container").user_mount_volumes[0].source_volume_path =
            "/var/run/docker.sock".into();
        let e = job_pod(&ctx(), &a, None).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "args.container.userMountVolumes[0].sourceVolumePath: \"/var/run/docker.sock\" is outside the runner's _work directory; on Kubernetes only paths under _work can be mounted"
        );
        assert_eq!(work_subpath("/home/runner/_work/../etc"), None);
        assert_eq!(work_subpath("/home/runner/_work"), Some(String::new()));
    }

    #[test]
    fn entry_point_overrides_keep_alive() {
        let mut a = args();
        let c = a.container.as_mut().expect("container");
        c.entry_point = Some("sleep".into());
        c.entry_point_args = vec!["infinity".into()];
        let jp = job_pod(&ctx(), &a, None).expect("valid");
        let job = &jp.pod.spec.expect("spec").containers[0];
        assert_eq!(job.command.as_deref(), Some(&["sleep".to_string()][..]));
        assert_eq!(job.args.as_deref(), Some(&["infinity".to_string()][..]));
    }
}
