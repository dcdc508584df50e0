//! `emptyDir` volumes with `medium: Memory`: a tmpfs sized by `sizeLimit`, as the kubelet mounts them (root only).

use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use serde_json::Value;

/// Mounts a tmpfs (mode 1777, `size=` the volume's `sizeLimit`) on each memory-backed emptyDir's
/// directory under `sandbox/volumes`, before the containers bind-mount it. Without mount
/// namespaces (not root) the directory stays a plain directory.
pub(crate) fn mount_memory_volumes(pod: &Value, sandbox: &Path) -> io::Result<()> {
    if !super::process::namespaces_available() {
        return Ok(());
    }
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if v.pointer("/emptyDir/medium").and_then(Value::as_str) != Some("Memory") {
            continue;
        }
        let Some(name) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        let dir = sandbox.join("volumes").join(name);
        std::fs::create_dir_all(&dir)?;
        let mut data = String::from("mode=1777");
        if let Some(bytes) = v
            .pointer("/emptyDir/sizeLimit")
            .and_then(Value::as_str)
            .and_then(quantity_bytes)
        {
            data.push_str(&format!(",size={bytes}"));
        }
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data.as_str()),
        )
        .map_err(|e| io::Error::other(format!("tmpfs on {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Detaches every mount under `sandbox/volumes` (before the sandbox is removed).
pub(crate) fn unmount_memory_volumes(sandbox: &Path) {
    let Ok(entries) = std::fs::read_dir(sandbox.join("volumes")) else {
        return;
    };
    for e in entries.flatten() {
        // EINVAL: not a mount point (a plain emptyDir); nothing to do.
        if let Err(err) = umount2(&e.path(), MntFlags::MNT_DETACH)
            && err != nix::errno::Errno::EINVAL
        {
            tracing::warn!(error = %err, dir = %e.path().display(), "cannot unmount a memory volume");
        }
    }
}

/// A Kubernetes quantity in bytes (`2Gi`, `128Mi`, `1G`, `1048576`).
fn quantity_bytes(q: &str) -> Option<u64> {
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u64 = n.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_in_bytes() {
        assert_eq!(quantity_bytes("2Gi"), Some(2 << 30));
        assert_eq!(quantity_bytes("128Mi"), Some(128 << 20));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("4096"), Some(4096));
        assert_eq!(quantity_bytes("1.5Gi"), None);
    }
}
