//! A container step as a bare pod of its own (where neither the job pod nor a Job may take it): the step Job's pod, and in no-volume mode the two helper containers that carry the step's files in and out.
//!
//! No-volume mode: the pod's work volume is an emptyDir. An init container from the job
//! container's image (which has sh and tar: no-volume mode needs them there already) waits
//! until the hook has streamed the step's files into it, so the step container starts on a
//! filled volume with the image's own entrypoint and arguments, and needs no shell or tar
//! itself. A second, ordinary container from the same image stays up beside the step, so that
//! after the step ends the hook can stream back what it changed; the hook deletes the pod
//! then. An ordinary container, not a native sidecar: it works on every Kubernetes version and
//! nothing stops it while the hook still copies.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Affinity, Container, HostAlias, LocalObjectReference, NodeAffinity, NodeSelectorRequirement,
    NodeSelectorTerm, Pod, PodSecurityContext, PodSpec, PreferredSchedulingTerm, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::JOB_CONTAINER_NAME;
use super::pod::work_mount;

/// The init container that receives the step's files.
pub(crate) const FILES_IN_CONTAINER: &str = "arc-hook-files-in";
/// The container that stays up to give back what the step changed.
pub(crate) const FILES_OUT_CONTAINER: &str = "arc-hook-files-out";
/// The step pod's private directory at the work volume's root: the ready flag and the mark the
/// way back compares with (never sent back).
pub(crate) const STEP_MARK_DIR: &str = ".arc-hook-step";
/// Where the helpers (and the step, as in the job pod) have the work volume.
pub(crate) const WORK_MOUNT: &str = "/__w";
/// The flag, in [`STEP_MARK_DIR`], that lets the init container end.
pub(crate) const READY_FLAG: &str = "ready";

/// The init container's program (`sh -c WAIT_FOR_FILES arc-hook-files-in FLAG SECONDS`): waits
/// for the flag the hook writes after the files are in, for at most SECONDS (a hook that died
/// must not leave the pod waiting forever; cleanup_job removes it).
const WAIT_FOR_FILES: &str = r#"flag=$1; n=$2
case "$n" in ''|*[!0-9]*) echo "arc-hook: invalid timeout" >&2; exit 2;; esac
end=$(( $(date +%s) + n ))
while [ ! -e "$flag" ]; do
  if [ "$(date +%s)" -ge "$end" ]; then echo "arc-hook: the step's files did not arrive within ${n}s" >&2; exit 1; fi
  sleep 0.1 2>/dev/null || sleep 1
done
"#;

/// The returning container's program: stays up until the hook deletes the pod (PID 1 of its
/// container, it ignores TERM; the hook deletes with no grace).
const STAY_UP: &str = "while :; do sleep 3600; done";

/// What the helper containers take from the job pod: its job container's image, the user it
/// runs as and the pod's pull secrets, so the files land with the owner and modes they have
/// in the job pod.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FilesHelper {
    pub image: String,
    pub security_context: Option<SecurityContext>,
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// How long the init container waits for the files.
    pub wait_seconds: u64,
    /// The job pod's node, which the step pod prefers: the images are there, and the copies
    /// stay on one node.
    pub node: Option<String>,
}

impl FilesHelper {
    /// From the job pod (`None` when it has no job container: nothing to copy the image of).
    pub(crate) fn from_job_pod(pod: &Pod, wait_seconds: u64) -> Option<FilesHelper> {
        let spec = pod.spec.as_ref()?;
        let job = spec
            .containers
            .iter()
            .find(|c| c.name == JOB_CONTAINER_NAME)?;
        Some(FilesHelper {
            image: job.image.clone()?,
            security_context: effective_user(
                job.security_context.as_ref(),
                spec.security_context.as_ref(),
            ),
            image_pull_secrets: spec.image_pull_secrets.clone().unwrap_or_default(),
            wait_seconds,
            node: spec.node_name.clone().filter(|n| !n.is_empty()),
        })
    }

    fn container(&self, name: &str, script: &str, args: &[&str]) -> Container {
        let mut command = vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            name.to_string(),
        ];
        command.extend(args.iter().map(|a| a.to_string()));
        Container {
            name: name.into(),
            image: Some(self.image.clone()),
            // On the node already: the job pod runs it there.
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(command),
            security_context: self.security_context.clone(),
            volume_mounts: Some(vec![work_mount(WORK_MOUNT, None, false)]),
            ..Default::default()
        }
    }
}

/// The job container's security context with the pod's user settings filled in where it sets
/// none: what its processes (and so the files they wrote) run as.
fn effective_user(
    container: Option<&SecurityContext>,
    pod: Option<&PodSecurityContext>,
) -> Option<SecurityContext> {
    let mut sc = container.cloned().unwrap_or_default();
    if let Some(p) = pod {
        sc.run_as_user = sc.run_as_user.or(p.run_as_user);
        sc.run_as_group = sc.run_as_group.or(p.run_as_group);
        sc.run_as_non_root = sc.run_as_non_root.or(p.run_as_non_root);
    }
    (sc != SecurityContext::default()).then_some(sc)
}

/// The job pod's services by container name at the job pod's IP, so the step reaches them by
/// name as it would on Docker's job network (`None` without services or an IP yet).
pub(crate) fn service_aliases(job_pod: &Pod) -> Option<HostAlias> {
    let ip = job_pod
        .status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())?;
    let names: Vec<String> = job_pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .filter(|c| c.name != JOB_CONTAINER_NAME)
        .map(|c| c.name.clone())
        .collect();
    (!names.is_empty()).then_some(HostAlias {
        ip,
        hostnames: Some(names),
    })
}

/// Adds a preference (never a requirement: a full node must not keep the step waiting) for
/// `node` to the pod's node affinity, beside a template's own terms.
fn prefer_node(spec: &mut PodSpec, node: &str) {
    let preferred = spec
        .affinity
        .get_or_insert_with(Affinity::default)
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .preferred_during_scheduling_ignored_during_execution
        .get_or_insert_with(Vec::new);
    preferred.push(PreferredSchedulingTerm {
        weight: 100,
        preference: NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: super::pod::HOSTNAME_LABEL.into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            ..Default::default()
        },
    });
}

/// The step Job's pod (template-merged and pinned already) as a bare pod of the Job's name; with
/// `files`, the helper containers; with `aliases`, the services' names.
pub(crate) fn step_pod(job: Job, files: Option<&FilesHelper>, aliases: Option<HostAlias>) -> Pod {
    let template = job.spec.map(|s| s.template).unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = job.metadata.labels.unwrap_or_default();
    labels.extend(tmeta.labels.unwrap_or_default());
    let mut annotations = job.metadata.annotations.unwrap_or_default();
    annotations.extend(tmeta.annotations.unwrap_or_default());
    let mut spec = template.spec.unwrap_or_default();
    spec.restart_policy = Some("Never".into());
    if let Some(alias) = aliases {
        spec.host_aliases.get_or_insert_with(Vec::new).push(alias);
    }
    if let Some(h) = files {
        let flag = format!("{WORK_MOUNT}/{STEP_MARK_DIR}/{READY_FLAG}");
        let wait = h.wait_seconds.to_string();
        spec.init_containers.get_or_insert_with(Vec::new).insert(
            0,
            h.container(FILES_IN_CONTAINER, WAIT_FOR_FILES, &[&flag, &wait]),
        );
        spec.containers
            .push(h.container(FILES_OUT_CONTAINER, STAY_UP, &[]));
        let secrets = spec.image_pull_secrets.get_or_insert_with(Vec::new);
        for s in &h.image_pull_secrets {
            if !secrets.contains(s) {
                secrets.push(s.clone());
            }
        }
        if let Some(node) = &h.node {
            prefer_node(&mut spec, node);
        }
    }
    Pod {
        metadata: ObjectMeta {
            name: job.metadata.name,
            namespace: job.metadata.namespace,
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;

    fn job_pod() -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "job".into(),
                        image: Some("node:22".into()),
                        security_context: Some(SecurityContext {
                            run_as_group: Some(7),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    Container {
                        name: "redis".into(),
                        image: Some("redis:7".into()),
                        ..Default::default()
                    },
                ],
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(1001),
                    run_as_group: Some(9),
                    ..Default::default()
                }),
                image_pull_secrets: Some(vec![LocalObjectReference {
                    name: "creds".into(),
                }]),
                node_name: Some("node-7".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.1.2.3".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn step_job() -> Job {
        let ctx = crate::objects::test_context();
        let args = crate::protocol::RunContainerStepArgs {
            image: Some("action:1".into()),
            entry_point_args: vec!["--who".into(), "me".into()],
            ..Default::default()
        };
        let (c, v) =
            crate::objects::job::step_container(&args, "action:1", "repo/repo").expect("valid");
        crate::objects::job::container_step_job(&ctx, "r-step-abcdefgh", c, v, None)
    }

    #[test]
    fn helpers_run_the_job_image_as_the_job_user_around_the_untouched_step() {
        let helper = FilesHelper::from_job_pod(&job_pod(), 600).expect("a job container");
        assert_eq!(helper.image, "node:22");
        let sc = helper.security_context.clone().expect("a user");
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1001), Some(7)));
        let pod = step_pod(step_job(), Some(&helper), service_aliases(&job_pod()));
        assert_eq!(pod.metadata.name.as_deref(), Some("r-step-abcdefgh"));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let init = spec.init_containers.as_deref().expect("init");
        assert_eq!(init[0].name, FILES_IN_CONTAINER);
        let cmd = init[0].command.as_deref().expect("command");
        assert_eq!(&cmd[..2], ["sh", "-c"]);
        assert_eq!(&cmd[4..], ["/__w/.arc-hook-step/ready", "600"]);
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["step", FILES_OUT_CONTAINER]);
        let step = &spec.containers[0];
        assert_eq!(step.command, None, "the image's own entrypoint");
        assert_eq!(step.image.as_deref(), Some("action:1"));
        assert_eq!(
            step.security_context, None,
            "the step runs as its image says"
        );
        assert_eq!(spec.image_pull_secrets.expect("secrets")[0].name, "creds");
        let alias = &spec.host_aliases.expect("aliases")[0];
        assert_eq!(alias.ip, "10.1.2.3");
        assert_eq!(alias.hostnames.as_deref(), Some(&["redis".to_string()][..]));
        let preferred = spec
            .affinity
            .and_then(|a| a.node_affinity)
            .and_then(|n| n.preferred_during_scheduling_ignored_during_execution)
            .expect("a preference");
        assert!(
            format!("{preferred:?}").contains("node-7"),
            "the job pod's node"
        );
        assert!(
            pod.metadata
                .labels
                .expect("labels")
                .contains_key(crate::objects::ROLE_LABEL)
        );
    }

    #[test]
    fn the_init_wait_is_bounded_and_ends_on_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("ready");
        let run = |secs: &str| {
            std::process::Command::new("sh")
                .args(["-c", WAIT_FOR_FILES, "in", &flag.to_string_lossy(), secs])
                .output()
                .expect("sh runs")
        };
        let out = run("0");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("did not arrive within 0s"));
        std::fs::write(&flag, b"").expect("flag");
        assert_eq!(run("5").status.code(), Some(0));
        assert_eq!(run("x").status.code(), Some(2));
    }

    #[test]
    fn claim_mode_pods_have_no_helpers_and_no_services_no_alias() {
        let mut lone = job_pod();
        if let Some(s) = lone.spec.as_mut() {
            s.containers.truncate(1);
        }
        assert_eq!(service_aliases(&lone), None);
        let pod = step_pod(step_job(), None, None);
        let spec = pod.spec.expect("spec");
        assert!(spec.init_containers.is_none());
        assert_eq!(spec.containers.len(), 1);
        assert!(spec.host_aliases.is_none());
    }
}
