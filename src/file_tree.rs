//! Mirroring a directory tree, unchanged files skipped: the runner's externals into the work volume (prepare_job, where the job container sees them at `/__e`) and a job directory's `work/` (replay).

use std::fs;
use std::io;
use std::path::Path;

/// What a copy did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyStats {
    pub copied: u64,
    pub unchanged: u64,
    pub bytes: u64,
}

fn same_file(src: &fs::Metadata, dst: &Path) -> bool {
    let Ok(d) = fs::symlink_metadata(dst) else {
        return false;
    };
    d.is_file()
        && d.len() == src.len()
        && d.modified().ok() == src.modified().ok()
        && d.permissions() == src.permissions()
}

/// Copies `src` into `dst` recursively, preserving modes, mtimes and symlinks, and skipping
/// files whose size, mode and mtime already match (externals are hundreds of MB and rarely change).
pub(crate) fn sync_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    let mut stats = CopyStats::default();
    sync_into(src, dst, &mut stats)?;
    Ok(stats)
}

fn sync_into(src: &Path, dst: &Path, stats: &mut CopyStats) -> io::Result<()> {
    let meta = fs::symlink_metadata(src)?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(src)?;
        if fs::read_link(dst).ok().as_deref() != Some(target.as_path()) {
            let _ = fs::remove_file(dst);
            std::os::unix::fs::symlink(&target, dst)?;
            stats.copied += 1;
        } else {
            stats.unchanged += 1;
        }
    } else if meta.is_dir() {
        if !fs::symlink_metadata(dst).is_ok_and(|m| m.is_dir()) {
            let _ = fs::remove_file(dst);
            fs::create_dir_all(dst)?;
        }
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            sync_into(&entry.path(), &dst.join(entry.file_name()), stats)?;
        }
        fs::set_permissions(dst, meta.permissions())?;
    } else if meta.is_file() {
        if same_file(&meta, dst) {
            stats.unchanged += 1;
        } else {
            if fs::symlink_metadata(dst).is_ok_and(|m| !m.is_file()) {
                let _ = fs::remove_dir_all(dst);
                let _ = fs::remove_file(dst);
            }
            // Write beside and rename, so a concurrent reader never sees half a file.
            let tmp = dst.with_file_name(format!(
                ".{}.arc-hook-tmp",
                dst.file_name().and_then(|n| n.to_str()).unwrap_or("f")
            ));
            fs::copy(src, &tmp)?;
            fs::set_permissions(&tmp, meta.permissions())?;
            let f = fs::File::options().write(true).open(&tmp)?;
            if let Ok(m) = meta.modified() {
                f.set_modified(m)?;
            }
            drop(f);
            fs::rename(&tmp, dst)?;
            stats.copied += 1;
            stats.bytes += meta.len();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn copies_then_skips_unchanged() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(src.path().join("node20/bin")).expect("mkdir");
        fs::write(
            src.path().join("node20/bin/node"),
            b"#!/bin/sh\necho node\n",
        )
        .expect("write");
        fs::set_permissions(
            src.path().join("node20/bin/node"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("node", src.path().join("node20/bin/nodejs")).expect("symlink");
        fs::create_dir_all(src.path().join("empty")).expect("mkdir");

        let out = dst.path().join("externals");
        let first = sync_tree(src.path(), &out).expect("copy");
        assert_eq!(first.copied, 2);
        let mode = fs::metadata(out.join("node20/bin/node"))
            .expect("copied")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            fs::read_link(out.join("node20/bin/nodejs")).expect("link"),
            Path::new("node")
        );
        assert!(out.join("empty").is_dir());

        let second = sync_tree(src.path(), &out).expect("copy");
        assert_eq!(second.copied, 0);
        assert_eq!(second.unchanged, 2);

        fs::write(
            src.path().join("node20/bin/node"),
            b"#!/bin/sh\necho node v2, longer\n",
        )
        .expect("write");
        let third = sync_tree(src.path(), &out).expect("copy");
        assert_eq!(third.copied, 1);
        assert_eq!(
            fs::read(out.join("node20/bin/node")).expect("read"),
            b"#!/bin/sh\necho node v2, longer\n"
        );
    }
}
