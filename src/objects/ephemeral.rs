//! A container step as an ephemeral container of the job pod: only the fields the API allows, the work volume mounted whole, `/github/*` reached through links at the volume's root.
//!
//! The API forbids `subPath` on ephemeral containers, so the docker-style mounts a container
//! action expects (`/github/workspace`, `/github/file_commands`, `/github/home`,
//! `/github/workflow`) cannot be sub-path mounts as in the step Job. Instead the work volume is
//! mounted whole at `/github` too, and relative symlinks at its root (`workspace ->
//! <repo>/<repo>`, `file_commands -> _temp/_runner_file_commands`...) make those paths resolve.

use k8s_openapi::api::core::v1::EphemeralContainer;

use super::BuildError;
use super::job::{StepMount, step_process};
use super::pod::{user_mounts, work_mount};
use crate::protocol::RunContainerStepArgs;

/// Where the work volume is mounted whole, besides `/__w`.
pub(crate) const GITHUB_MOUNT: &str = "/github";
/// Fields an ephemeral container may carry (the API server's allow-list), as in the JSON.
pub(crate) const ALLOWED_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "env",
    "envFrom",
    "volumeMounts",
    "volumeDevices",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "imagePullPolicy",
    "securityContext",
    "stdin",
    "stdinOnce",
    "tty",
    "targetContainerName",
];

/// Why a step cannot be an ephemeral container (it then runs as a Job).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct NotEphemeral(pub String);

/// The names `/github/<name>` may take as a link at the work volume's root: the runner's own
/// mounts for container actions. cleanup_job removes exactly these.
pub(crate) const GITHUB_LINK_NAMES: [&str; 5] = [
    "workspace",
    "file_commands",
    "home",
    "workflow",
    "runner_temp",
];

/// The links at the work volume's root that make the step's `/github/*` mounts resolve:
/// `(name, relative target)`. A mount elsewhere, or a read-only one, cannot be a link.
pub(crate) fn github_links(mounts: &[StepMount]) -> Result<Vec<(String, String)>, NotEphemeral> {
    mounts
        .iter()
        .map(|m| {
            let name = m
                .target
                .strip_prefix(GITHUB_MOUNT)
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|n| GITHUB_LINK_NAMES.contains(n))
                .ok_or_else(|| {
                    NotEphemeral(format!(
                        "the step mounts {} (only /github/{{{}}} can be reached without a sub-path)",
                        m.target,
                        GITHUB_LINK_NAMES.join(",")
                    ))
                })?;
            if m.read_only {
                return Err(NotEphemeral(format!(
                    "the step mounts {} read-only (a link cannot be read-only)",
                    m.target
                )));
            }
            let target = if m.sub_path.is_empty() {
                ".".to_string()
            } else {
                m.sub_path.clone()
            };
            Ok((name.to_string(), target))
        })
        .collect()
}

/// The step as an ephemeral container named `name`: the image's own entrypoint unless the step
/// names one, the runner's environment as container env (never through a shell).
pub fn ephemeral_step_container(
    args: &RunContainerStepArgs,
    image: &str,
    name: &str,
) -> Result<Result<(EphemeralContainer, Vec<String>), NotEphemeral>, BuildError> {
    let mut warnings = Vec::new();
    let mut mounts = vec![
        work_mount("/__w", None, false),
        work_mount(GITHUB_MOUNT, None, false),
    ];
    let user = user_mounts(&args.user_mount_volumes, "args.userMountVolumes")?;
    if let Some(v) = user.volumes.first() {
        let path = user
            .mounts
            .iter()
            .find(|m| m.name == v.name)
            .map(|m| m.mount_path.as_str())
            .unwrap_or_default();
        return Ok(Err(NotEphemeral(format!(
            "the step asks for an anonymous volume at {path} (a new pod volume, which a running pod cannot take)"
        ))));
    }
    for m in user.mounts {
        if m.sub_path.is_some() {
            return Ok(Err(NotEphemeral(format!(
                "the step mounts a directory of _work at {} (a sub-path, which ephemeral containers cannot have)",
                m.mount_path
            ))));
        }
        mounts.push(m);
    }
    if !args.port_mappings.is_empty() {
        warnings.push(
            "container step: ports are not published for a step in the job pod (it shares the pod's network)".into(),
        );
    }
    let process = step_process(args)?;
    Ok(Ok((
        EphemeralContainer {
            name: name.to_string(),
            image: Some(image.to_string()),
            command: process.command,
            args: process.args,
            working_dir: process.working_dir,
            env: Some(process.env),
            volume_mounts: Some(mounts),
            ..Default::default()
        },
        warnings,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Mount;
    use std::collections::BTreeMap;

    #[test]
    fn shape_without_sub_paths() {
        let args = RunContainerStepArgs {
            image: Some("alpine:3.19".into()),
            entry_point_args: vec!["echo".into(), "a b".into()],
            working_directory: Some("/github/workspace".into()),
            environment_variables: BTreeMap::from([("V".into(), "x'$y\"\n".into())]),
            port_mappings: vec!["80".into()],
            ..Default::default()
        };
        let (c, warnings) = ephemeral_step_container(&args, "alpine:3.19", "step-abcdefgh")
            .expect("valid")
            .expect("ephemeral");
        assert_eq!(c.name, "step-abcdefgh");
        assert_eq!(c.command, None, "the image's own entrypoint");
        assert_eq!(
            c.args.as_deref(),
            Some(&["echo".to_string(), "a b".to_string()][..])
        );
        assert_eq!(c.working_dir.as_deref(), Some("/github/workspace"));
        let env = c.env.as_ref().expect("env");
        assert_eq!(
            env[0].value.as_deref(),
            Some("x'$$y\"\n"),
            "written for the kubelet, which gives back x'$y\"\\n"
        );
        let mounts = c.volume_mounts.as_ref().expect("mounts");
        assert!(mounts.iter().all(|m| m.sub_path.is_none()));
        assert_eq!(
            mounts
                .iter()
                .map(|m| m.mount_path.as_str())
                .collect::<Vec<_>>(),
            ["/__w", "/github"]
        );
        assert!(c.ports.is_none() && c.resources.is_none());
        assert_eq!(warnings.len(), 1);
        let v = serde_json::to_value(&c).expect("json");
        for k in v.as_object().expect("object").keys() {
            assert!(ALLOWED_FIELDS.contains(&k.as_str()), "{k} is not allowed");
        }
    }

    #[test]
    fn sub_path_mounts_need_a_job() {
        let args = RunContainerStepArgs {
            user_mount_volumes: vec![Mount {
                source_volume_path: Some("/home/runner/_work/cache".into()),
                target_volume_path: "/cache".into(),
                read_only: false,
            }],
            ..Default::default()
        };
        let e = ephemeral_step_container(&args, "i", "step-x")
            .expect("valid")
            .expect_err("not ephemeral");
        assert!(e.0.contains("/cache"));
    }

    #[test]
    fn links_resolve_docker_paths() {
        let mounts = crate::objects::job::step_system_mounts(&[], "repo/repo").expect("mounts");
        let links = github_links(&mounts).expect("links");
        assert!(links.contains(&("workspace".to_string(), "repo/repo".to_string())));
        assert!(links.contains(&("runner_temp".to_string(), "_temp".to_string())));
        assert!(links.contains(&(
            "file_commands".to_string(),
            "_temp/_runner_file_commands".to_string()
        )));
        let root = crate::objects::job::step_system_mounts(&[], "").expect("mounts");
        assert!(
            github_links(&root)
                .expect("links")
                .contains(&("workspace".to_string(), ".".to_string()))
        );
    }

    #[test]
    fn mounts_elsewhere_need_a_job() {
        let mounts = [StepMount {
            target: "/github/../etc".into(),
            sub_path: "_temp".into(),
            read_only: false,
        }];
        assert!(github_links(&mounts).is_err());
    }
}
