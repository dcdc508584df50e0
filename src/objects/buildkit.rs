//! The BuildKit builder pod: rootless, daemonless `buildctl-daemonless.sh` (or `buildctl` against the platform's `BUILDKIT_HOST`), pushing the content-hash tag.
//!
//! Rootless BuildKit needs exactly this beyond a default container (BuildKit's
//! `examples/kubernetes/*.rootless.yaml`): seccomp and AppArmor `Unconfined` (it creates user
//! and mount namespaces, which the runtime's default profiles forbid), `runAsUser/runAsGroup`
//! 1000 (the image's `user`), and `--oci-worker-no-process-sandbox` (no PID namespace of its own,
//! so no `procMount: Unmasked` is needed). No `privileged`, no capabilities, no host mounts; a
//! remote `BUILDKIT_HOST` needs none of it.

use k8s_openapi::api::core::v1::{
    AppArmorProfile, Container, EmptyDirVolumeSource, EnvVar, Pod, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};

use super::BuildContext;
use super::builder::{
    BUILDER_CONTAINER, BuildRequest, BuildSource, CONTEXT_ARCHIVE_KEY, CONTEXT_ARCHIVE_MOUNT,
    CONTEXT_MOUNT, builder_pod_shell,
};
use crate::config::BuildConfig;

/// The rootless image's user.
pub(crate) const BUILDKIT_UID: i64 = 1000;
/// Where the rootless image's buildkitd keeps its state (an emptyDir: nothing outlives the pod).
pub(crate) const BUILDKIT_STATE: &str = "/home/user/.local/share/buildkit";
/// Where buildctl reads push credentials (`$DOCKER_CONFIG/config.json`).
pub(crate) const BUILDKIT_DOCKER_CONFIG: &str = "/home/user/.docker";
/// The daemonless entry point shipped in `moby/buildkit` images.
pub(crate) const DAEMONLESS: &str = "buildctl-daemonless.sh";

/// `buildctl build` arguments: the Dockerfile frontend, the context directory, the pushed image
/// and its metadata (with the digest) written to the termination message.
pub(crate) fn buildctl_args(req: &BuildRequest) -> Vec<String> {
    [
        "build",
        "--frontend",
        "dockerfile.v0",
        "--local",
        &format!("context={CONTEXT_MOUNT}"),
        "--local",
        &format!("dockerfile={CONTEXT_MOUNT}"),
        "--opt",
        &format!("filename={}", req.dockerfile),
        "--output",
        &format!("type=image,name={},push=true", req.destination),
        "--metadata-file",
        "/dev/termination-log",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The BuildKit builder pod for `req`.
pub(crate) fn buildkit_pod(ctx: &BuildContext, build: &BuildConfig, req: &BuildRequest) -> Pod {
    let remote = build.buildkit_host.as_deref();
    let (command, mut env) = match remote {
        Some(host) => (
            vec!["buildctl".to_string(), "--addr".into(), host.into()],
            vec![],
        ),
        None => (
            vec![DAEMONLESS.to_string()],
            vec![EnvVar {
                name: "BUILDKITD_FLAGS".into(),
                value: Some("--oci-worker-no-process-sandbox".into()),
                value_from: None,
            }],
        ),
    };
    env.push(EnvVar {
        name: "DOCKER_CONFIG".into(),
        value: Some(BUILDKIT_DOCKER_CONFIG.into()),
        value_from: None,
    });
    let container = Container {
        name: BUILDER_CONTAINER.into(),
        image: Some(build.builder_image.clone()),
        command: Some(command),
        args: Some(buildctl_args(req)),
        env: Some(env),
        termination_message_policy: Some("File".into()),
        security_context: remote.is_none().then(rootless_security_context),
        ..Default::default()
    };
    let mut pod = builder_pod_shell(ctx, build, req, container, BUILDKIT_DOCKER_CONFIG);
    let Some(spec) = pod.spec.as_mut() else {
        return pod;
    };
    if remote.is_none() {
        add_empty_dir(spec, "buildkit-state", BUILDKIT_STATE, 0);
    }
    if let BuildSource::Archive { .. } = req.source {
        // buildctl reads a directory: an init container unpacks the archive into an emptyDir.
        add_empty_dir(spec, "workspace", CONTEXT_MOUNT, 0);
        let mounts = spec.containers[0].volume_mounts.clone().unwrap_or_default();
        spec.init_containers = Some(vec![Container {
            name: "context".into(),
            image: Some(build.builder_image.clone()),
            command: Some(vec![
                "tar".into(),
                "-xzf".into(),
                format!("{CONTEXT_ARCHIVE_MOUNT}/{CONTEXT_ARCHIVE_KEY}"),
                "-C".into(),
                CONTEXT_MOUNT.into(),
            ]),
            volume_mounts: Some(
                mounts
                    .into_iter()
                    .filter(|m| {
                        m.mount_path == CONTEXT_MOUNT || m.mount_path == CONTEXT_ARCHIVE_MOUNT
                    })
                    .collect(),
            ),
            security_context: Some(SecurityContext {
                run_as_user: Some(BUILDKIT_UID),
                run_as_group: Some(BUILDKIT_UID),
                ..Default::default()
            }),
            ..Default::default()
        }]);
    }
    pod
}

fn rootless_security_context() -> SecurityContext {
    SecurityContext {
        seccomp_profile: Some(SeccompProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        }),
        app_armor_profile: Some(AppArmorProfile {
            type_: "Unconfined".into(),
            localhost_profile: None,
        }),
        run_as_user: Some(BUILDKIT_UID),
        run_as_group: Some(BUILDKIT_UID),
        ..Default::default()
    }
}

/// Adds an emptyDir volume mounted at `path` in the builder container (index `container`).
fn add_empty_dir(
    spec: &mut k8s_openapi::api::core::v1::PodSpec,
    name: &str,
    path: &str,
    container: usize,
) {
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    if let Some(c) = spec.containers.get_mut(container) {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: name.into(),
                mount_path: path.into(),
                ..Default::default()
            });
    }
}

/// The pushed digest in a builder's termination message: Kaniko's digest file (`sha256:...`)
/// or BuildKit's metadata JSON (`containerimage.digest`).
pub(crate) fn pushed_digest(message: &str) -> Option<String> {
    let m = message.trim();
    if m.starts_with("sha256:") {
        return Some(m.to_string());
    }
    let v: serde_json::Value = serde_json::from_str(m).ok()?;
    v.get("containerimage.digest")
        .and_then(|d| d.as_str())
        .filter(|d| d.starts_with("sha256:"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BuilderKind;
    use crate::objects::test_context;
    use std::time::Duration;

    fn build(remote: Option<&str>) -> BuildConfig {
        BuildConfig {
            kind: BuilderKind::BuildKit,
            builder_image: "mirror.internal/moby/buildkit:v0.23.2-rootless".into(),
            registry: "harbor.internal/ci-actions".into(),
            push_secret: Some("harbor-push".into()),
            timeout: Duration::from_secs(900),
            buildkit_host: remote.map(str::to_string),
        }
    }

    fn req(source: BuildSource) -> BuildRequest {
        BuildRequest {
            pod_name: "arc-runner-build-abc".into(),
            source,
            dockerfile: "Dockerfile".into(),
            destination: "harbor.internal/ci-actions/org-action:0123456789abcdef".into(),
        }
    }

    fn claim() -> BuildSource {
        BuildSource::Claim {
            claim: "arc-runner-work".into(),
            sub_path: "_actions/org/action/v1".into(),
        }
    }

    #[test]
    fn daemonless_rootless_pod() {
        let pod = buildkit_pod(&test_context(), &build(None), &req(claim()));
        let spec = pod.spec.expect("spec");
        let c = &spec.containers[0];
        assert_eq!(
            c.command.as_deref(),
            Some(&["buildctl-daemonless.sh".to_string()][..])
        );
        let args = c.args.clone().expect("args").join(" ");
        assert_eq!(
            args,
            "build --frontend dockerfile.v0 --local context=/workspace --local dockerfile=/workspace --opt filename=Dockerfile --output type=image,name=harbor.internal/ci-actions/org-action:0123456789abcdef,push=true --metadata-file /dev/termination-log"
        );
        let sc = c
            .security_context
            .clone()
            .expect("rootless needs a security context");
        assert_eq!(sc.privileged, None);
        assert_eq!(sc.capabilities, None);
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("Unconfined")
        );
        assert_eq!(
            sc.app_armor_profile.map(|p| p.type_).as_deref(),
            Some("Unconfined")
        );
        assert_eq!(sc.run_as_user, Some(1000));
        let env: Vec<_> = c
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or("")))
            .collect();
        assert!(env.contains(&("BUILDKITD_FLAGS", "--oci-worker-no-process-sandbox")));
        assert!(env.contains(&("DOCKER_CONFIG", "/home/user/.docker")));
        let mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/workspace", "/home/user/.docker", BUILDKIT_STATE]);
        assert!(
            spec.volumes.iter().flatten().all(|v| v.host_path.is_none()),
            "no host mounts"
        );
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.active_deadline_seconds, Some(900));
    }

    #[test]
    fn remote_buildkit_needs_no_security_context() {
        let pod = buildkit_pod(
            &test_context(),
            &build(Some("tcp://buildkitd.buildkit:1234")),
            &req(claim()),
        );
        let c = &pod.spec.expect("spec").containers[0];
        assert_eq!(
            c.command.clone().expect("command"),
            ["buildctl", "--addr", "tcp://buildkitd.buildkit:1234"]
        );
        assert!(c.security_context.is_none());
        assert!(c.env.iter().flatten().all(|e| e.name != "BUILDKITD_FLAGS"));
    }

    #[test]
    fn archives_are_unpacked_by_an_init_container() {
        let pod = buildkit_pod(
            &test_context(),
            &build(None),
            &req(BuildSource::Archive {
                secret: "ctx".into(),
            }),
        );
        let spec = pod.spec.expect("spec");
        let init = &spec.init_containers.as_ref().expect("init")[0];
        assert_eq!(
            init.command.clone().expect("command").join(" "),
            "tar -xzf /context/context.tar.gz -C /workspace"
        );
        let mounts: Vec<_> = init
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/context", "/workspace"]);
    }

    #[test]
    fn digests_from_either_builder() {
        assert_eq!(pushed_digest("sha256:abc\n").as_deref(), Some("sha256:abc"));
        assert_eq!(
            pushed_digest(r#"{"containerimage.digest": "sha256:def", "image.name": "x"}"#)
                .as_deref(),
            Some("sha256:def")
        );
        assert_eq!(pushed_digest("done"), None);
        assert_eq!(pushed_digest(r#"{"image.name": "x"}"#), None);
    }
}
