//! A container step as an ephemeral container of the job pod: only the fields the API allows, the work volume mounted whole, `/github/*` reached through links at the volume's root.
//!
//! The API forbids `subPath` on ephemeral containers, so the docker-style mounts a container
//! action expects (`/github/workspace`, `/github/file_commands`, `/github/home`,
//! `/github/workflow`) cannot be sub-path mounts as in the step Job. Instead the work volume is
//! mounted whole at `/github` too, and relative symlinks at its root (`workspace ->
//! <repo>/<repo>`, `file_commands -> _temp/_runner_file_commands`...) make those paths resolve.

use k8s_openapi::api::core::v1::EphemeralContainer;

use super::pod::{user_mounts, work_mount};
use super::{BuildError, container_env};
use crate::protocol::RunContainerStepArgs;

/// Where the work volume is mounted whole, besides `/__w`.
pub const GITHUB_MOUNT: &str = "/github";
/// Fields an ephemeral container may carry (the API server's allow-list), as in the JSON.
pub const ALLOWED_FIELDS: &[&str] = &[
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

/// The links at the work volume's root: `(name, relative target)`.
pub fn github_links(workspace_subpath: &str) -> Vec<(&'static str, String)> {
    let ws = if workspace_subpath.is_empty() {
        ".".to_string()
    } else {
        workspace_subpath.to_string()
    };
    vec![
        ("workspace", ws),
        ("file_commands", "_temp/_runner_file_commands".into()),
        ("home", "_temp/_github_home".into()),
        ("workflow", "_temp/_github_workflow".into()),
    ]
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
    for m in user_mounts(&args.user_mount_volumes, "args.userMountVolumes")? {
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
    Ok(Ok((
        EphemeralContainer {
            name: name.to_string(),
            image: Some(image.to_string()),
            command: args
                .entry_point
                .as_deref()
                .filter(|e| !e.is_empty())
                .map(|e| vec![e.to_string()]),
            args: (!args.entry_point_args.is_empty()).then(|| args.entry_point_args.clone()),
            working_dir: args.working_directory.clone().filter(|w| !w.is_empty()),
            env: Some(container_env(&args.environment_variables, "args")?),
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
        assert_eq!(env[0].value.as_deref(), Some("x'$y\"\n"));
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
                source_volume_path: "/home/runner/_work/cache".into(),
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
        let links = github_links("repo/repo");
        assert_eq!(links[0], ("workspace", "repo/repo".to_string()));
        assert_eq!(links[1].1, "_temp/_runner_file_commands");
        assert_eq!(github_links("")[0].1, ".");
    }
}
