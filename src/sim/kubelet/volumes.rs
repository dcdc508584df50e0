//! Pod volumes as host directories, container environments, and each container's mount list.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use super::process::Mount;
use crate::sim::store::{Key, Store};
use crate::sim::{SimConfig, meta};

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The host directory backing a PVC: configured in `pvc_dirs`, else managed under the state dir.
pub(crate) fn pvc_dir(cfg: &SimConfig, state_dir: &Path, ns: &str, claim: &str) -> PathBuf {
    cfg.pvc_dirs
        .get(claim)
        .cloned()
        .unwrap_or_else(|| state_dir.join("pvcs").join(ns).join(claim))
}

/// Where a hostPath volume lives: under `<state>/hostpath/`, never in the host's own tree.
pub(crate) fn host_path_dir(state_dir: &Path, path: &str) -> PathBuf {
    state_dir
        .join("hostpath")
        .join(path.trim_start_matches('/'))
}

fn write_items(dir: &Path, data: &[(String, Vec<u8>)], items: &[Value]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if items.is_empty() {
        for (k, v) in data {
            std::fs::write(dir.join(k), v)?;
        }
        return Ok(());
    }
    for item in items {
        let key = item.get("key").and_then(Value::as_str).unwrap_or("");
        let path = item.get("path").and_then(Value::as_str).unwrap_or(key);
        if let Some((_, v)) = data.iter().find(|(k, _)| k == key) {
            let target = dir.join(path.trim_start_matches('/'));
            if let Some(p) = target.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::write(target, v)?;
        }
    }
    Ok(())
}

/// Key/value data of a ConfigMap or Secret (secret values decoded).
fn object_data(
    store: &Store,
    resource: &'static str,
    ns: &str,
    name: &str,
) -> Option<Vec<(String, Vec<u8>)>> {
    let obj = store.get(&Key::new(resource, ns, name))?;
    let mut out = Vec::new();
    let b64 = base64::engine::general_purpose::STANDARD;
    // (field, whether its values are base64): a Secret's `data` is, a ConfigMap's is not.
    let fields = [
        ("data", resource == "secrets"),
        ("binaryData", true),
        ("stringData", false),
    ];
    for (field, base64) in fields {
        for (k, v) in obj
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let s = v.as_str().unwrap_or("");
            let bytes = if base64 {
                b64.decode(s).unwrap_or_default()
            } else {
                s.as_bytes().to_vec()
            };
            out.push((k.clone(), bytes));
        }
    }
    Some(out)
}

/// Creates the directory of every volume of `pod` and returns volume name -> host directory.
/// Missing ConfigMaps/Secrets are reported (name, kind) so the kubelet can emit FailedMount.
pub(crate) fn prepare(
    cfg: &SimConfig,
    store: &Store,
    state_dir: &Path,
    sandbox: &Path,
    pod: &Value,
) -> io::Result<(HashMap<String, PathBuf>, Vec<String>)> {
    let ns = meta::namespace(pod);
    let mut dirs = HashMap::new();
    let mut missing = Vec::new();
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let dir = if let Some(claim) = v
            .pointer("/persistentVolumeClaim/claimName")
            .and_then(Value::as_str)
        {
            pvc_dir(cfg, state_dir, ns, claim)
        } else if let Some(hp) = v.pointer("/hostPath/path").and_then(Value::as_str) {
            let d = if cfg.host_paths_on_host {
                PathBuf::from(hp)
            } else {
                host_path_dir(state_dir, hp)
            };
            if matches!(
                v.pointer("/hostPath/type").and_then(Value::as_str),
                Some("File" | "FileOrCreate")
            ) {
                if let Some(p) = d.parent() {
                    std::fs::create_dir_all(p)?;
                }
                if !d.exists() {
                    std::fs::File::create(&d)?;
                }
                dirs.insert(name, d);
                continue;
            }
            d
        } else {
            let d = sandbox.join("volumes").join(&name);
            for (field, resource, key) in [
                ("configMap", "configmaps", "name"),
                ("secret", "secrets", "secretName"),
            ] {
                if let Some(src) = v.get(field) {
                    let obj_name = src.get(key).and_then(Value::as_str).unwrap_or("");
                    match object_data(store, resource, ns, obj_name) {
                        Some(data) => write_items(&d, &data, arr(src, "items"))?,
                        None => {
                            if src.get("optional") != Some(&Value::Bool(true)) {
                                missing.push(format!(
                                    "for volume \"{name}\" : {} \"{obj_name}\" not found",
                                    if resource == "secrets" {
                                        "secret"
                                    } else {
                                        "configmap"
                                    }
                                ));
                            }
                        }
                    }
                }
            }
            d
        };
        std::fs::create_dir_all(&dir)?;
        if v.get("emptyDir").is_some() {
            // The kubelet makes an emptyDir world-writable: any container user may write there
            // (upstream's fs-init runs as uid 1001 and creates the workspace in one).
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        }
        dirs.insert(name, dir);
    }
    Ok((dirs, missing))
}

/// Expands `$(VAR)` references from `env` (unknown references stay as written; `$$` escapes).
pub(crate) fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let var = &body[..end];
            match env.iter().rev().find(|(k, _)| k == var) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&format!("$({var})")),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value a `fieldRef` names.
fn field_ref(pod: &Value, path: &str) -> String {
    if let Some(label) = path
        .strip_prefix("metadata.labels['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return meta::labels(pod)
            .get(label)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    if let Some(a) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|s| s.strip_suffix("']"))
    {
        return pod
            .pointer(&format!("/metadata/annotations/{a}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    }
    let mut cur = Some(pod);
    for seg in path.split('.') {
        cur = cur.and_then(|c| c.get(seg));
    }
    cur.and_then(Value::as_str).unwrap_or("").to_string()
}

/// A referenced key of a ConfigMap or Secret, or the kubelet's `CreateContainerConfigError`
/// message (`pkg/kubelet/kubelet_pods.go`, makeEnvironmentVariables) when it or its object is
/// missing and the reference is not optional. `Ok(None)`: optional and missing.
fn key_ref(
    store: &Store,
    ns: &str,
    r: &Value,
    resource: &'static str,
) -> Result<Option<String>, String> {
    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
    let key = r.get("key").and_then(Value::as_str).unwrap_or("");
    let optional = r.get("optional") == Some(&Value::Bool(true));
    let (singular, kind) = if resource == "secrets" {
        ("secret", "Secret")
    } else {
        ("configmap", "ConfigMap")
    };
    let Some(data) = object_data(store, resource, ns, name) else {
        return if optional {
            Ok(None)
        } else {
            Err(format!("{singular} \"{name}\" not found"))
        };
    };
    match data.iter().find(|(k, _)| k == key) {
        Some((_, v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional => Ok(None),
        None => Err(format!("couldn't find key {key} in {kind} {ns}/{name}")),
    }
}

/// The environment a container's processes get: a base PATH/HOSTNAME/HOME, envFrom, then env.
/// `Err` is the kubelet's `CreateContainerConfigError` message (a missing, non-optional
/// ConfigMap, Secret or key).
pub(crate) fn container_env(
    store: &Store,
    pod: &Value,
    container: &Value,
) -> Result<Vec<(String, String)>, String> {
    let ns = meta::namespace(pod);
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOSTNAME".into(), meta::name(pod).into()),
        ("HOME".into(), "/root".into()),
    ];
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(x, _)| *x != k);
        env.push((k, v));
    };
    for from in arr(container, "envFrom") {
        let prefix = from.get("prefix").and_then(Value::as_str).unwrap_or("");
        for (field, resource) in [("configMapRef", "configmaps"), ("secretRef", "secrets")] {
            if let Some(name) = from
                .pointer(&format!("/{field}/name"))
                .and_then(Value::as_str)
            {
                let data = match object_data(store, resource, ns, name) {
                    Some(d) => d,
                    None if from.pointer(&format!("/{field}/optional"))
                        == Some(&Value::Bool(true)) =>
                    {
                        Vec::new()
                    }
                    None => {
                        let singular = if resource == "secrets" {
                            "secret"
                        } else {
                            "configmap"
                        };
                        return Err(format!("{singular} \"{name}\" not found"));
                    }
                };
                for (k, v) in data {
                    set(
                        &mut env,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
        }
    }
    for e in arr(container, "env") {
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let value = if let Some(v) = e.get("value").and_then(Value::as_str) {
            expand(v, &env)
        } else if let Some(path) = e
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            field_ref(pod, path)
        } else if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
            match key_ref(store, ns, r, "secrets")? {
                Some(v) => v,
                None => continue,
            }
        } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
            match key_ref(store, ns, r, "configmaps")? {
                Some(v) => v,
                None => continue,
            }
        } else {
            String::new()
        };
        set(&mut env, name, value);
    }
    Ok(env)
}

/// Files an image "has" that shadow the host's: configured by exact reference or by name without
/// tag; any image whose repository's last component is `alpine` looks like Alpine by default.
pub(crate) fn image_files(cfg: &SimConfig, image: &str) -> Vec<(PathBuf, Vec<u8>)> {
    if let Some(f) = for_image(&cfg.image_files, image) {
        return f.clone();
    }
    if image_repository(image).rsplit('/').next() == Some("alpine") {
        let os_release = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\nHOME_URL=\"https://alpinelinux.org/\"\nBUG_REPORT_URL=\"https://gitlab.alpinelinux.org/alpine/aports/-/issues\"\n";
        return vec![(
            PathBuf::from("/etc/os-release"),
            os_release.as_bytes().to_vec(),
        )];
    }
    Vec::new()
}

/// `registry:5000/team/app:1.2@sha256:..` -> `registry:5000/team/app`.
pub(crate) fn image_repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// An image's entry in a per-image setting (`image_commands`, `image_users`, `image_files`): by
/// exact reference, else by repository (every tag and digest).
pub(crate) fn for_image<'a, T>(settings: &'a HashMap<String, T>, image: &str) -> Option<&'a T> {
    settings
        .get(image)
        .or_else(|| settings.get(image_repository(image)))
}

/// A sub-path of a volume, made as the kubelet makes it (`subpath.SafeMakeDir`): each missing
/// directory created by root (the kubelet) with the mode of the volume's root (0777 for an
/// emptyDir), whatever the umask.
fn make_sub_path(volume: &Path, sub: &str) -> io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(volume)?.permissions().mode() & 0o7777;
    let mut p = volume.to_path_buf();
    for part in Path::new(sub).components() {
        p.push(part);
        if p.symlink_metadata().is_err() {
            std::fs::create_dir(&p)?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
    }
    Ok(p)
}

/// The bind mounts of one container: its volumeMounts (subPath/subPathExpr resolved and created)
/// and its image's files (only over paths that exist, so the host never gains stray files).
pub(crate) fn container_mounts(
    cfg: &SimConfig,
    sandbox: &Path,
    volumes: &HashMap<String, PathBuf>,
    container: &Value,
    env: &[(String, String)],
) -> io::Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    let name = container.get("name").and_then(Value::as_str).unwrap_or("c");
    // Each container has its own /tmp and /root, as its image's filesystem would give it.
    let targets: Vec<&str> = arr(container, "volumeMounts")
        .iter()
        .filter_map(|m| m.get("mountPath").and_then(Value::as_str))
        .collect();
    for (dir, mode) in [("/tmp", 0o1777), ("/root", 0o700)] {
        if targets.iter().any(|t| t.trim_end_matches('/') == dir) {
            continue;
        }
        let source = sandbox
            .join("rootfs")
            .join(name)
            .join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&source)?;
        std::fs::set_permissions(&source, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        mounts.push(Mount {
            source,
            target: PathBuf::from(dir),
            read_only: false,
        });
    }
    for m in arr(container, "volumeMounts") {
        let vol = m.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(dir) = volumes.get(vol) else {
            continue;
        };
        let sub = match (
            m.get("subPath").and_then(Value::as_str),
            m.get("subPathExpr").and_then(Value::as_str),
        ) {
            (Some(s), _) if !s.is_empty() => Some(s.to_string()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, env)),
            _ => None,
        };
        let source = match sub {
            Some(s) => make_sub_path(dir, s.trim_start_matches('/'))?,
            None => dir.clone(),
        };
        mounts.push(Mount {
            source,
            target: PathBuf::from(m.get("mountPath").and_then(Value::as_str).unwrap_or("/")),
            read_only: m.get("readOnly") == Some(&Value::Bool(true)),
        });
    }
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    for (i, (path, content)) in image_files(cfg, image).into_iter().enumerate() {
        let target = if path.is_absolute() {
            path
        } else {
            Path::new("/").join(path)
        };
        if target.symlink_metadata().is_err() || target.is_dir() {
            continue;
        }
        let source = sandbox.join("image-files").join(name).join(i.to_string());
        if let Some(p) = source.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&source, content)?;
        mounts.push(Mount {
            source,
            target,
            read_only: true,
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references_like_the_kubelet() {
        let env = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)/y", &env), "x/y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
    }

    #[test]
    fn alpine_images_look_like_alpine() {
        let cfg = SimConfig::default();
        assert!(!image_files(&cfg, "alpine:3.19").is_empty());
        assert!(!image_files(&cfg, "docker.io/library/alpine").is_empty());
        assert!(image_files(&cfg, "ubuntu:22.04").is_empty());
        assert_eq!(image_repository("reg:5000/a/b:1@sha256:x"), "reg:5000/a/b");
        assert_eq!(image_repository("reg:5000/a/b"), "reg:5000/a/b");
    }
}
