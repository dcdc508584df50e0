//! The builder pod (BuildKit or Kaniko) that builds a Dockerfile action's image in-cluster and pushes it, and the content-addressed tag it pushes to.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Container, EnvVar, KeyToPath, LocalObjectReference, PersistentVolumeClaimVolumeSource, Pod,
    PodSpec, Secret, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::pod::pin_to_node;
use super::{BuildContext, runner_annotations, runner_labels};
use crate::config::{BuildConfig, BuilderKind};

/// The builder pod's only container.
pub(crate) const BUILDER_CONTAINER: &str = "build";
/// Where the build context is mounted (claim mode) or unpacked from (no-volume mode).
pub(crate) const CONTEXT_MOUNT: &str = "/workspace";
/// Where the context archive secret is mounted in no-volume mode.
pub(crate) const CONTEXT_ARCHIVE_MOUNT: &str = "/context";
/// The context archive's key in its secret.
pub(crate) const CONTEXT_ARCHIVE_KEY: &str = "context.tar.gz";
/// Where Kaniko reads registry credentials (`config.json`).
pub(crate) const PUSH_CONFIG_MOUNT: &str = "/kaniko/.docker";
/// Largest context that fits a secret (the API's limit is 1 MiB, less its own overhead).
pub(crate) const MAX_CONTEXT_ARCHIVE: usize = 900 * 1024;

/// Where the build context comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BuildSource {
    /// A directory of the work claim (claim mode), as a sub-path.
    Claim { claim: String, sub_path: String },
    /// A gzip'd tar in a secret (no-volume mode: the job's files live only in the job pod).
    Archive { secret: String },
}

/// One build: the pod name, the context, the Dockerfile's name inside it, where to push.
#[derive(Debug, Clone)]
pub(crate) struct BuildRequest {
    pub pod_name: String,
    pub source: BuildSource,
    pub dockerfile: String,
    pub destination: String,
}

/// The builder pod of the configured builder (BuildKit by default, or Kaniko).
pub(crate) fn builder_pod(ctx: &BuildContext, build: &BuildConfig, req: &BuildRequest) -> Pod {
    match build.kind {
        BuilderKind::BuildKit => super::buildkit::buildkit_pod(ctx, build, req),
        BuilderKind::Kaniko => kaniko_pod(ctx, build, req),
    }
}

/// The Kaniko pod: Kaniko's own entrypoint with the build's flags; no privileges, no host
/// mounts; the digest written to the termination message so the step runs exactly what was built.
pub(crate) fn kaniko_pod(ctx: &BuildContext, build: &BuildConfig, req: &BuildRequest) -> Pod {
    let (context_arg, dockerfile_arg) = match &req.source {
        BuildSource::Claim { .. } => (
            format!("--context=dir://{CONTEXT_MOUNT}"),
            format!("--dockerfile={CONTEXT_MOUNT}/{}", req.dockerfile),
        ),
        BuildSource::Archive { .. } => (
            format!("--context=tar://{CONTEXT_ARCHIVE_MOUNT}/{CONTEXT_ARCHIVE_KEY}"),
            format!("--dockerfile={}", req.dockerfile),
        ),
    };
    let container = Container {
        name: BUILDER_CONTAINER.into(),
        image: Some(build.builder_image.clone()),
        args: Some(vec![
            context_arg,
            dockerfile_arg,
            format!("--destination={}", req.destination),
            "--digest-file=/dev/termination-log".into(),
            "--push-retry=3".into(),
        ]),
        env: Some(vec![EnvVar {
            name: "DOCKER_CONFIG".into(),
            value: Some(PUSH_CONFIG_MOUNT.into()),
            value_from: None,
        }]),
        termination_message_policy: Some("File".into()),
        ..Default::default()
    };
    builder_pod_shell(ctx, build, req, container, PUSH_CONFIG_MOUNT)
}

/// What every builder pod has: the context (a read-only claim sub-path at `/workspace`, or the
/// archive secret at `/context`), the push credentials as `config.json` in `push_config_mount`,
/// no service account token, a deadline, and the runner's node for claim builds.
pub(crate) fn builder_pod_shell(
    ctx: &BuildContext,
    build: &BuildConfig,
    req: &BuildRequest,
    mut container: Container,
    push_config_mount: &str,
) -> Pod {
    let (mut volumes, mut mounts) = match &req.source {
        BuildSource::Claim { claim, sub_path } => (
            vec![Volume {
                name: "context".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    read_only: Some(true),
                }),
                ..Default::default()
            }],
            vec![VolumeMount {
                name: "context".into(),
                mount_path: CONTEXT_MOUNT.into(),
                sub_path: (!sub_path.is_empty()).then(|| sub_path.clone()),
                read_only: Some(true),
                ..Default::default()
            }],
        ),
        BuildSource::Archive { secret } => (
            vec![Volume {
                name: "context".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            vec![VolumeMount {
                name: "context".into(),
                mount_path: CONTEXT_ARCHIVE_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            }],
        ),
    };
    if let Some(secret) = &build.push_secret {
        volumes.push(Volume {
            name: "push-config".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "config.json".into(),
                    mode: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "push-config".into(),
            mount_path: push_config_mount.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    mounts.extend(container.volume_mounts.take().unwrap_or_default());
    container.volume_mounts = Some(mounts);
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(req.pod_name.clone()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(runner_labels(ctx, "build")),
            annotations: Some(runner_annotations(ctx)),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            active_deadline_seconds: Some(build.timeout.as_secs() as i64),
            automount_service_account_token: Some(false),
            volumes: Some(volumes),
            image_pull_secrets: None::<Vec<LocalObjectReference>>,
            ..Default::default()
        }),
        status: None,
    };
    // The claim is usually ReadWriteOnce: build where the runner is.
    if let (BuildSource::Claim { .. }, Some(spec)) = (&req.source, pod.spec.as_mut()) {
        pin_to_node(spec, ctx);
    }
    pod
}

/// The secret carrying a no-volume build's context archive.
pub(crate) fn context_secret(ctx: &BuildContext, name: &str, archive: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ctx.namespace.clone()),
            labels: Some(runner_labels(ctx, "build-context")),
            annotations: Some(runner_annotations(ctx)),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            CONTEXT_ARCHIVE_KEY.to_string(),
            ByteString(archive),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// A repository name for the action whose Dockerfile is at `dockerfile` (a runner path):
/// `_actions/<owner>/<repo>/<ref>/<dir...>` gives `<owner>-<repo>[-<dir>...]`; others their directory's name.
pub(crate) fn image_name(dockerfile: &str) -> String {
    let dir = Path::new(dockerfile).parent().unwrap_or(Path::new(""));
    let parts: Vec<String> = dir
        .components()
        .filter_map(|c| c.as_os_str().to_str().map(str::to_string))
        .collect();
    let picked: Vec<String> = match parts.iter().position(|p| p == "_actions") {
        Some(i) if parts.len() >= i + 4 => parts[i + 1..i + 3]
            .iter()
            .chain(parts[i + 4..].iter())
            .cloned()
            .collect(),
        _ => parts.last().cloned().into_iter().collect(),
    };
    let mut name: String = picked
        .join("-")
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if name.is_empty() {
        "action".into()
    } else {
        name
    }
}

/// A hash of the context's names, modes, link targets and contents (first 16 hex digits of
/// SHA-256): the same context gives the same tag.
pub(crate) fn context_hash(dir: &Path) -> io::Result<String> {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    hash_into(dir, "", &mut h)?;
    let d = h.finish();
    Ok(d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect())
}

fn hash_into(path: &Path, name: &str, h: &mut ring::digest::Context) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    h.update(name.as_bytes());
    h.update(&[0]);
    h.update(&(meta.mode() & 0o170777).to_le_bytes());
    if meta.file_type().is_symlink() {
        h.update(std::fs::read_link(path)?.as_os_str().as_encoded_bytes());
    } else if meta.is_file() {
        let mut f = std::fs::File::open(path)?;
        let mut w = DigestWriter(h);
        io::copy(&mut f, &mut w)?;
    } else if meta.is_dir() {
        let mut children: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            let child = format!("{name}/{}", c.file_name().to_string_lossy());
            hash_into(&c.path(), &child, h)?;
        }
    }
    h.update(&[0xff]);
    Ok(())
}

struct DigestWriter<'a>(&'a mut ring::digest::Context);

impl Write for DigestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A tar of `dir`'s contents wrapped in gzip with stored (uncompressed) deflate blocks: what
/// Kaniko's `tar://` context reads, without a compression dependency for a few kilobytes.
pub(crate) fn context_archive(dir: &Path) -> io::Result<Vec<u8>> {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        b.follow_symlinks(false);
        b.append_dir_all(".", dir)?;
        b.finish()?;
    }
    Ok(gzip_stored(&tar_bytes))
}

/// RFC 1952 gzip of `data` using RFC 1951 stored blocks.
pub(crate) fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65535 * 5 + 32);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&crc32(data).to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ctx() -> BuildContext {
        crate::objects::test_context()
    }

    fn build() -> BuildConfig {
        BuildConfig {
            kind: BuilderKind::Kaniko,
            builder_image: "mirror.internal/kaniko/executor:v1".into(),
            buildkit_host: None,
            registry: "harbor.internal/ci-actions".into(),
            push_secret: Some("harbor-push".into()),
            timeout: Duration::from_secs(900),
        }
    }

    #[test]
    fn claim_builds_mount_the_action_directory() {
        let req = BuildRequest {
            pod_name: "arc-runner-build-abcdefgh".into(),
            source: BuildSource::Claim {
                claim: "arc-runner-work".into(),
                sub_path: "_actions/org/act/v1".into(),
            },
            dockerfile: "Dockerfile".into(),
            destination: "harbor.internal/ci-actions/org-act:0123456789abcdef".into(),
        };
        let pod = builder_pod(&ctx(), &build(), &req);
        let spec = pod.spec.expect("spec");
        let c = &spec.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("mirror.internal/kaniko/executor:v1")
        );
        assert_eq!(c.command, None, "Kaniko's own entrypoint");
        assert_eq!(
            c.args.as_deref().expect("args")[..3],
            [
                "--context=dir:///workspace".to_string(),
                "--dockerfile=/workspace/Dockerfile".to_string(),
                "--destination=harbor.internal/ci-actions/org-act:0123456789abcdef".to_string()
            ]
        );
        let m = c.volume_mounts.as_ref().expect("mounts");
        assert_eq!(m[0].sub_path.as_deref(), Some("_actions/org/act/v1"));
        assert_eq!(m[0].read_only, Some(true));
        assert_eq!(m[1].mount_path, "/kaniko/.docker");
        let v = spec.volumes.as_ref().expect("volumes");
        let push = v[1].secret.as_ref().expect("secret");
        assert_eq!(push.secret_name.as_deref(), Some("harbor-push"));
        assert_eq!(push.items.as_ref().expect("items")[0].path, "config.json");
        assert!(format!("{:?}", spec.affinity).contains("node-1"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.active_deadline_seconds, Some(900));
        assert!(c.security_context.is_none(), "no privileged flag");
    }

    #[test]
    fn names_and_hashes() {
        assert_eq!(
            image_name("/home/runner/_work/_actions/Example-Org/hello-action/v1/Dockerfile"),
            "example-org-hello-action"
        );
        assert_eq!(
            image_name("/home/runner/_work/_actions/org/mono/main/tools/lint/Dockerfile"),
            "org-mono-tools-lint"
        );
        assert_eq!(
            image_name("/home/runner/_work/repo/repo/.github/actions/My Act/Dockerfile"),
            "my-act"
        );
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("Dockerfile"), "FROM alpine\n").expect("write");
        let a = context_hash(d.path()).expect("hash");
        assert_eq!(a.len(), 16);
        assert_eq!(a, context_hash(d.path()).expect("hash"));
        std::fs::write(d.path().join("entrypoint.sh"), "echo\n").expect("write");
        assert_ne!(a, context_hash(d.path()).expect("hash"));
    }

    #[test]
    fn stored_gzip_is_readable_by_gzip() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let gz = gzip_stored(&data);
        let mut child = std::process::Command::new("gzip")
            .arg("-dc")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&gz));
        let out = child.wait_with_output().expect("gzip");
        writer.join().expect("thread").expect("write");
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }
}
