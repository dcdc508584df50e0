//! The workflow pod: the job container, one container per service, the work volume and pull secret.

use k8s_openapi::api::core::v1::{
    Affinity, Container, EmptyDirVolumeSource, LocalObjectReference, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PersistentVolumeClaimVolumeSource, Pod, PodSpec,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::ports::{PortMapping, container_ports, parse_port_mappings};
use super::{
    BuildContext, BuildError, EnvFor, JOB_CONTAINER_NAME, WORK_VOLUME_NAME, container_env,
    kubelet_literal, kubelet_literals, names, runner_labels,
};
use crate::config::WorkVolumeMode;
use crate::protocol::{ContainerDefinition, Mount, PrepareJobArgs};

/// The node label the workflow pod's required node affinity names (the runner's node).
pub(crate) const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Label on the workflow pod: the node cache slot (`${CACHE_SLOT}`) its job holds.
pub(crate) const CACHE_SLOT_LABEL: &str = "arc-hook.dev/cache-slot";

/// The job container's keep-alive command when the runner gives no entry point (as upstream).
pub(crate) const KEEP_ALIVE: [&str; 3] = ["tail", "-f", "/dev/null"];

/// The workflow pod and what the response and template merge need to know about it.
#[derive(Debug, Clone)]
pub(crate) struct JobPod {
    pub pod: Pod,
    /// Port mappings of the job container (empty without one).
    pub job_ports: Vec<PortMapping>,
    /// Per service, in the runner's order: container name, image-derived name, ports.
    pub services: Vec<ServiceContainer>,
    /// Things the user should know (volumes not mounted...), one line each.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceContainer {
    pub container_name: String,
    pub image: String,
    pub image_name: String,
    pub ports: Vec<PortMapping>,
}

/// The work volume: the runner's claim, or an emptyDir the hook fills (no-volume mode).
pub(crate) fn work_volume(ctx: &BuildContext) -> Volume {
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

pub(crate) fn work_mount(mount_path: &str, sub_path: Option<&str>, read_only: bool) -> VolumeMount {
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
pub(crate) fn job_mounts(user: &[Mount], field: &str) -> Result<UserMounts, BuildError> {
    let mut m = vec![
        work_mount("/__w", None, false),
        // The runner asks for the externals read-only: no step may change the node or tools of
        // the steps after it.
        work_mount("/__e", Some("externals"), true),
        work_mount("/github/home", Some("_temp/_github_home"), false),
        work_mount("/github/workflow", Some("_temp/_github_workflow"), false),
    ];
    let user = user_mounts(user, field)?;
    m.extend(user.mounts);
    Ok(UserMounts {
        mounts: m,
        volumes: user.volumes,
    })
}

/// The user's `volumes:`: sub-paths of the work volume, and an emptyDir for each volume without a
/// source (`volumes: [/cache]`, Docker's anonymous volume).
#[derive(Debug, Clone, Default)]
pub(crate) struct UserMounts {
    pub mounts: Vec<VolumeMount>,
    /// The emptyDir volumes the anonymous mounts need in the pod.
    pub volumes: Vec<Volume>,
}

/// The user's `volumes:`. Kubernetes cannot mount the runner's host paths into another pod, so
/// only paths under `_work` are accepted.
pub(crate) fn user_mounts(user: &[Mount], field: &str) -> Result<UserMounts, BuildError> {
    let mut out = UserMounts::default();
    for (i, m) in user.iter().enumerate() {
        let Some(source) = m.source_volume_path.as_deref() else {
            let name = format!("anon-{}", names::stable_suffix(&m.target_volume_path));
            out.mounts.push(VolumeMount {
                name: name.clone(),
                mount_path: m.target_volume_path.clone(),
                read_only: m.read_only.then_some(true),
                ..Default::default()
            });
            out.volumes.push(Volume {
                name,
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            });
            continue;
        };
        let sub = work_subpath(source).ok_or_else(|| BuildError::MountOutsideWork {
            field: format!("{field}[{i}].sourceVolumePath"),
            path: source.to_string(),
        })?;
        out.mounts.push(work_mount(
            &m.target_volume_path,
            (!sub.is_empty()).then_some(sub.as_str()),
            m.read_only,
        ));
    }
    Ok(out)
}

/// The runner's file-command directory on the work volume: the runner reads it after every
/// step, with its own rights.
pub(crate) const RUNNER_FILE_COMMANDS: &str = "_temp/_runner_file_commands";
/// Claim mode: the job's own file-command directory on the work volume. Every container the hook
/// creates sees it where the runner's would be; the hook copies the runner's files in before a
/// step and delivers them back after it (`hooks::file_commands`).
pub(crate) const JOB_FILE_COMMANDS: &str = "_temp/_arc_hook_file_commands";

/// A work-volume sub-path with `.` and empty components dropped (`_temp//./x/` -> `_temp/x`).
fn normal_subpath(sub: &str) -> String {
    sub.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Claim mode: a sub-path at or below the runner's file-command directory, moved to the job's own.
pub(crate) fn job_side_subpath(sub: &str) -> String {
    let sub = normal_subpath(sub);
    match sub.strip_prefix(RUNNER_FILE_COMMANDS) {
        Some("") => JOB_FILE_COMMANDS.to_string(),
        Some(rest) if rest.starts_with('/') => format!("{JOB_FILE_COMMANDS}{rest}"),
        _ => sub,
    }
}

/// Claim mode: a container's mounts rewritten so that none of its processes — also one a step
/// leaves running — can reach the runner's `_temp/_runner_file_commands` or rename what leads
/// to it. A mount of the volume's root gets `_temp` mounted over its own `_temp`, and every
/// mount of the root or of `_temp` gets the job's file-command directory over
/// `_runner_file_commands`: the kernel refuses to rename or remove a mount point (`EBUSY`), in
/// whatever path it is reached by, and what a mount covers cannot be reached through it.
/// Mounts at or below the runner's directory are moved to the job's.
pub(crate) fn guard_runner_reads(
    mounts: Vec<VolumeMount>,
    field: &str,
) -> Result<Vec<VolumeMount>, BuildError> {
    let mut out: Vec<VolumeMount> = Vec::with_capacity(mounts.len() + 2);
    for mut m in mounts {
        if m.name != WORK_VOLUME_NAME {
            out.push(m);
            continue;
        }
        let sub = job_side_subpath(m.sub_path.as_deref().unwrap_or(""));
        m.sub_path = (!sub.is_empty()).then(|| sub.clone());
        let target = m.mount_path.trim_end_matches('/').to_string();
        let read_only = m.read_only == Some(true);
        out.push(m);
        match sub.as_str() {
            "" => {
                out.push(work_mount(
                    &format!("{target}/_temp"),
                    Some("_temp"),
                    read_only,
                ));
                out.push(work_mount(
                    &format!("{target}/_temp/_runner_file_commands"),
                    Some(JOB_FILE_COMMANDS),
                    read_only,
                ));
            }
            "_temp" => out.push(work_mount(
                &format!("{target}/_runner_file_commands"),
                Some(JOB_FILE_COMMANDS),
                read_only,
            )),
            _ => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    for m in &out {
        if !seen.insert(m.mount_path.trim_end_matches('/')) {
            return Err(BuildError::MountConflict {
                field: field.to_string(),
                path: m.mount_path.clone(),
            });
        }
    }
    Ok(out)
}

/// `/home/runner/_work/repo/x` -> `repo/x`; relative paths are taken relative to `_work`.
pub(crate) fn work_subpath(source: &str) -> Option<String> {
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
        env: Some(container_env(
            &def.environment_variables,
            field,
            EnvFor::JobOrService,
        )?),
        ports: container_ports(&ports),
        ..Default::default()
    };
    Ok((c, ports))
}

/// Builds the workflow pod for prepare_job (before template merge).
pub(crate) fn job_pod(
    ctx: &BuildContext,
    args: &PrepareJobArgs,
    pull_secret: Option<&str>,
) -> Result<JobPod, BuildError> {
    let mut containers = Vec::new();
    let mut warnings = Vec::new();
    let mut job_ports = Vec::new();
    let mut extra_volumes: Vec<Volume> = Vec::new();

    if let Some(def) = &args.container {
        let field = "args.container";
        let (mut c, ports) = base_container(def, JOB_CONTAINER_NAME, field)?;
        match def.entry_point.as_deref().filter(|e| !e.is_empty()) {
            Some(ep) => {
                c.command = Some(vec![kubelet_literal(ep)]);
                c.args = (!def.entry_point_args.is_empty())
                    .then(|| kubelet_literals(&def.entry_point_args));
            }
            None => c.command = Some(KEEP_ALIVE.iter().map(|s| s.to_string()).collect()),
        }
        let mounts = job_mounts(
            &def.user_mount_volumes,
            &format!("{field}.userMountVolumes"),
        )?;
        c.volume_mounts = Some(guarded(ctx, mounts.mounts, field)?);
        extra_volumes.extend(mounts.volumes);
        job_ports = ports;
        containers.push(c);
    }

    let service_names =
        names::service_container_names(args.services.iter().map(|s| s.image.as_str()));
    let mut services = Vec::new();
    for (i, (def, name)) in args.services.iter().zip(service_names).enumerate() {
        let field = format!("args.services[{i}]");
        let (mut c, ports) = base_container(def, &name, &field)?;
        if let Some(ep) = def.entry_point.as_deref().filter(|e| !e.is_empty()) {
            c.command = Some(vec![kubelet_literal(ep)]);
        }
        if !def.entry_point_args.is_empty() {
            c.args = Some(kubelet_literals(&def.entry_point_args));
        }
        let mut mounts = vec![work_mount("/__w", None, false)];
        // Upstream ignores a service's volumes; honour those under _work and say which are skipped,
        // so workflows written for docker (e.g. mounting the docker socket) keep working.
        for (j, m) in def.user_mount_volumes.iter().enumerate() {
            match user_mounts(std::slice::from_ref(m), &format!("{field}.userMountVolumes[{j}]")) {
                Ok(one) => {
                    mounts.extend(one.mounts);
                    extra_volumes.extend(one.volumes);
                }
                Err(_) => warnings.push(format!(
                    "service {name}: volume {:?} is outside the runner's _work directory and is not mounted on Kubernetes",
                    m.source_volume_path.as_deref().unwrap_or_default()
                )),
            }
        }
        c.volume_mounts = Some(guarded(ctx, mounts, &field)?);
        services.push(ServiceContainer {
            container_name: name,
            image: def.image.clone(),
            image_name: names::image_derived_name(&def.image),
            ports,
        });
        containers.push(c);
    }

    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(names::job_pod_name(&ctx.runner_pod)),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(workflow_labels(ctx)),
            annotations: Some(super::runner_annotations(ctx)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            restart_policy: Some("Never".into()),
            volumes: Some(pod_volumes(ctx, extra_volumes)),
            image_pull_secrets: pull_secret.map(|n| {
                vec![LocalObjectReference {
                    name: n.to_string(),
                }]
            }),
            ..Default::default()
        }),
        status: None,
    };
    let mut pod = pod;
    if let Some(spec) = pod.spec.as_mut() {
        pin_to_node(spec, ctx);
    }
    Ok(JobPod {
        pod,
        job_ports,
        services,
        warnings,
    })
}

/// The init container that, in no-volume mode, makes the directories the kubelet and the runtime
/// would otherwise make as root before the job container starts.
pub(crate) const WORK_DIRS_INIT_NAME: &str = "arc-hook-work-dirs";

/// No-volume mode: the work emptyDir's sub-path mount points (`externals`, `_temp/_github_home`,
/// `_temp/_github_workflow`, the user's volumes) and the job container's working directory, made
/// by an init container of the job's own image, user and resources. The kubelet creates a missing
/// sub-path as root (mode of the volume, 0777 for an emptyDir) and the runtime a missing working
/// directory as root: a job whose container runs as another user could then not set their times
/// or modes, so the first copy into the pod failed (`Cannot utime: Operation not permitted`).
/// Made here, they belong to the job's user. The image already needs `sh` (every step is run by
/// it); nothing else of the image is used. No job container, or nothing to make: no init container.
pub(crate) fn make_work_dirs_first(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let Some(job) = spec
        .containers
        .iter()
        .find(|c| c.name == JOB_CONTAINER_NAME)
    else {
        return;
    };
    let mut dirs: Vec<String> = Vec::new();
    let mut add = |rel: &str| {
        let rel = rel.trim_matches('/');
        if !rel.is_empty() && !rel.split('/').any(|c| c == "..") {
            let dir = format!("/__w/{rel}");
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    };
    for c in &spec.containers {
        for m in c.volume_mounts.iter().flatten() {
            if m.name == WORK_VOLUME_NAME
                && let Some(sub) = m.sub_path.as_deref()
            {
                add(sub);
            }
        }
    }
    if let Some(rel) = job
        .working_dir
        .as_deref()
        .and_then(|w| w.strip_prefix("/__w/"))
    {
        add(rel);
    }
    if dirs.is_empty() {
        return;
    }
    let mut command = vec![
        "sh".to_string(),
        "-c".to_string(),
        r#"mkdir -p -- "$@""#.to_string(),
        WORK_DIRS_INIT_NAME.to_string(),
    ];
    command.extend(dirs);
    let init = Container {
        name: WORK_DIRS_INIT_NAME.into(),
        image: job.image.clone(),
        image_pull_policy: job.image_pull_policy.clone(),
        command: Some(kubelet_literals(&command)),
        security_context: job.security_context.clone(),
        resources: job.resources.clone(),
        volume_mounts: Some(vec![work_mount("/__w", None, false)]),
        ..Default::default()
    };
    spec.init_containers
        .get_or_insert_with(Vec::new)
        .insert(0, init);
}

/// In claim mode, [`guard_runner_reads`]; an emptyDir (no-volume mode) is the job's alone.
pub(crate) fn guarded(
    ctx: &BuildContext,
    mounts: Vec<VolumeMount>,
    field: &str,
) -> Result<Vec<VolumeMount>, BuildError> {
    match ctx.work_volume {
        WorkVolumeMode::Claim => guard_runner_reads(mounts, field),
        WorkVolumeMode::Copy => Ok(mounts),
    }
}

/// The work volume, then the anonymous volumes of the job and its services (one per name: two
/// containers naming the same path share it, as with one Docker volume).
fn pod_volumes(ctx: &BuildContext, extra: Vec<Volume>) -> Vec<Volume> {
    let mut volumes = vec![work_volume(ctx)];
    for v in extra {
        if !volumes.iter().any(|have| have.name == v.name) {
            volumes.push(v);
        }
    }
    volumes
}

/// The workflow pod's labels: the runner's, plus its cache slot when it holds one.
fn workflow_labels(ctx: &BuildContext) -> std::collections::BTreeMap<String, String> {
    let mut labels = runner_labels(ctx, "workflow");
    if let Some(slot) = ctx.cache_slot {
        labels.insert(CACHE_SLOT_LABEL.to_string(), slot.to_string());
    }
    labels
}

/// Keeps the pod on the runner's node through the scheduler, so a busy node makes it wait
/// rather than fail in the kubelet (`OutOfcpu`): `kubernetes.io/hostname In [node]` joins every
/// required node-selector term (terms are ORed, so each must carry it). A template's own terms
/// are kept. Nothing when the scheduler may place the pod anywhere. Idempotent.
pub(crate) fn pin_to_node(spec: &mut PodSpec, ctx: &BuildContext) {
    let Some(node) = ctx.node_name.as_deref().filter(|_| !ctx.use_kube_scheduler) else {
        return;
    };
    spec.node_name = None;
    let pin = NodeSelectorRequirement {
        key: HOSTNAME_LABEL.into(),
        operator: "In".into(),
        values: Some(vec![node.to_string()]),
    };
    let required = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution
        .get_or_insert_with(|| NodeSelector {
            node_selector_terms: Vec::new(),
        });
    if required.node_selector_terms.is_empty() {
        required
            .node_selector_terms
            .push(NodeSelectorTerm::default());
    }
    for term in &mut required.node_selector_terms {
        let exprs = term.match_expressions.get_or_insert_with(Vec::new);
        if !exprs.contains(&pin) {
            exprs.push(pin.clone());
        }
    }
}

/// The node a pod is bound or pinned to: `spec.nodeName`, else the hostname its required node
/// affinity names (as [`pin_to_node`] writes it).
#[cfg(test)] // only the unit tests use it
pub(crate) fn pinned_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == HOSTNAME_LABEL && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
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
            default_registry: crate::config::DOCKER_HUB_CONFIG_KEY.into(),
            cache_slot: None,
            cache_trust: crate::config::CacheTrust::Untrusted,
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
                    source_volume_path: Some("/home/runner/_work/repo/repo/data".into()),
                    target_volume_path: "/data".into(),
                    read_only: true,
                }],
                registry: Some(Registry::default()),
                create_options: Some("--cpus 2".into()),
                ..Default::default()
            }),
            services: vec![ContainerDefinition {
                image: "redis:7".into(),
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
        assert_eq!(spec.node_name, None);
        assert_eq!(pinned_node(&jp.pod).as_deref(), Some("node-1"));
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
                // Claim mode: the runner's file commands stay out of the job's reach.
                ("/__w/_temp", Some("_temp")),
                (
                    "/__w/_temp/_runner_file_commands",
                    Some("_temp/_arc_hook_file_commands")
                ),
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
    fn pinning_joins_every_template_term_once() {
        let mut spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "fpga", "operator": "In", "values": ["true"]}]},
                {"matchExpressions": [{"key": "pool", "operator": "Exists"}]}
            ]}}}
        }))
        .expect("spec");
        pin_to_node(&mut spec, &ctx());
        pin_to_node(&mut spec, &ctx());
        let terms = serde_json::to_value(&spec).expect("json")["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            .clone();
        assert_eq!(
            terms,
            serde_json::json!([
                {"matchExpressions": [{"key": "fpga", "operator": "In", "values": ["true"]},
                                      {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}]},
                {"matchExpressions": [{"key": "pool", "operator": "Exists"},
                                      {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}]}
            ])
        );
    }

    #[test]
    fn no_volume_mode_makes_the_mount_points_first_as_the_jobs_user() {
        let mut c = ctx();
        c.work_volume = WorkVolumeMode::Copy;
        let mut pod = job_pod(&c, &args(), None).expect("valid").pod;
        let job = &mut pod.spec.as_mut().expect("spec").containers[0];
        job.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
            run_as_user: Some(1001),
            ..Default::default()
        });
        make_work_dirs_first(&mut pod);
        let spec = pod.spec.expect("spec");
        let init = &spec.init_containers.expect("init containers")[0];
        assert_eq!(init.name, WORK_DIRS_INIT_NAME);
        assert_eq!(init.image.as_deref(), Some("node:20"));
        assert_eq!(
            init.security_context.as_ref().and_then(|s| s.run_as_user),
            Some(1001)
        );
        assert_eq!(
            init.command.as_deref().expect("command")[4..],
            [
                "/__w/externals",
                "/__w/_temp/_github_home",
                "/__w/_temp/_github_workflow",
                "/__w/repo/repo/data",
                "/__w/repo/repo",
            ]
        );
        assert_eq!(
            paths(init.volume_mounts.as_deref().expect("mounts")),
            [("/__w", None)]
        );
    }

    #[test]
    fn without_a_job_container_nothing_is_made_first() {
        let mut c = ctx();
        c.work_volume = WorkVolumeMode::Copy;
        let mut a = args();
        a.container = None;
        let mut pod = job_pod(&c, &a, None).expect("valid").pod;
        make_work_dirs_first(&mut pod);
        assert!(pod.spec.expect("spec").init_containers.is_none());
    }

    #[test]
    fn scheduler_and_copy_mode() {
        let mut c = ctx();
        c.use_kube_scheduler = true;
        c.work_volume = WorkVolumeMode::Copy;
        let jp = job_pod(&c, &args(), None).expect("valid");
        assert_eq!(pinned_node(&jp.pod), None);
        let spec = jp.pod.spec.expect("spec");
        assert_eq!(spec.node_name, None);
        assert!(spec.volumes.expect("volumes")[0].empty_dir.is_some());
        assert!(spec.image_pull_secrets.is_none());
    }

    #[test]
    fn mounts_outside_work_are_refused() {
        let mut a = args();
        a.container.as_mut().expect("container").user_mount_volumes[0].source_volume_path =
            Some("/var/run/docker.sock".into());
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

    /// Runner 2.336.0 (actions/runner#4276) sends a service container's `entrypoint:` and
    /// `command:` as its `entryPoint`/`entryPointArgs`: they replace the image's ENTRYPOINT and CMD,
    /// `$` kept literal for the kubelet.
    #[test]
    fn a_services_entrypoint_and_command_become_its_command_and_args() {
        let mut a = args();
        a.services[0].entry_point = Some("/bin/redis-server".into());
        a.services[0].entry_point_args = vec!["--port".into(), "$PORT".into()];
        let jp = job_pod(&ctx(), &a, None).expect("valid");
        let spec = jp.pod.spec.expect("spec");
        let service = spec
            .containers
            .iter()
            .find(|c| c.name != JOB_CONTAINER_NAME)
            .expect("service container");
        assert_eq!(
            service.command.as_deref(),
            Some(&["/bin/redis-server".to_string()][..])
        );
        assert_eq!(
            service.args.as_deref(),
            Some(&["--port".to_string(), "$$PORT".to_string()][..])
        );
    }

    fn paths(mounts: &[VolumeMount]) -> Vec<(&str, Option<&str>)> {
        mounts
            .iter()
            .map(|m| (m.mount_path.as_str(), m.sub_path.as_deref()))
            .collect()
    }

    #[test]
    fn every_way_to_the_runners_file_commands_leads_to_the_jobs() {
        let guarded = guard_runner_reads(
            vec![
                work_mount("/x", None, false),
                work_mount("/t/", Some("_temp/"), true),
                work_mount("/fc", Some("_temp/./_runner_file_commands"), false),
                work_mount(
                    "/one",
                    Some("_temp//_runner_file_commands/set_env_1"),
                    false,
                ),
                work_mount("/near", Some("_temp/_runner_file_commands_x"), false),
            ],
            "args.container.userMountVolumes",
        )
        .expect("guarded");
        assert_eq!(
            paths(&guarded),
            vec![
                ("/x", None),
                ("/x/_temp", Some("_temp")),
                ("/x/_temp/_runner_file_commands", Some(JOB_FILE_COMMANDS)),
                ("/t/", Some("_temp")),
                ("/t/_runner_file_commands", Some(JOB_FILE_COMMANDS)),
                ("/fc", Some(JOB_FILE_COMMANDS)),
                ("/one", Some("_temp/_arc_hook_file_commands/set_env_1")),
                ("/near", Some("_temp/_runner_file_commands_x")),
            ]
        );
        assert_eq!(
            guarded[4].read_only,
            Some(true),
            "a read-only mount's guard is too"
        );
    }

    #[test]
    fn a_mount_over_a_guard_is_refused_by_field() {
        let e = guard_runner_reads(
            vec![
                work_mount("/__w", None, false),
                work_mount("/__w/_temp", Some("repo"), false),
            ],
            "args.container.userMountVolumes",
        )
        .expect_err("conflict");
        assert!(
            e.to_string()
                .starts_with("args.container.userMountVolumes: two mounts at /__w/_temp"),
            "{e}"
        );
    }
}
