//! Unpacking a tar stream a job pod wrote: every entry is untrusted, so none may land outside the target (`..`, absolute names, writes below a link, links judged by where the kernel would resolve them), and depth and size are bounded.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::{ArchiveError, Manifest, Stamp, Stats, io_err};

/// The checked, relative path of an archive entry (`.` components dropped), or why it is refused.
pub(crate) fn entry_path(raw: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => return Err("it climbs out of the target with `..`".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("it is an absolute path".into());
            }
        }
    }
    Ok(out)
}

/// The deepest entry a pull takes, in path components. Real `_temp` trees are a few dozen deep;
/// a path this deep is already near Linux's 4096-byte `PATH_MAX`.
pub(crate) const MAX_DEPTH: usize = 256;

/// Links followed while resolving one pulled link before it counts as a loop (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Refuses to write below a symlink: every existing ancestor of `rel` under `root` must be a
/// real directory, so a link planted by an earlier entry (or already there) is never followed.
/// `known` holds the directories this unpack already found or made real (they stay so: no
/// entry may replace a directory), so a deep tree costs O(1) checks per entry, not O(depth).
fn check_ancestors(
    root: &Path,
    rel: &Path,
    entry: &str,
    known: &mut HashSet<PathBuf>,
) -> Result<(), ArchiveError> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    if parent.as_os_str().is_empty() || known.contains(parent) {
        return Ok(());
    }
    let mut rel_at = PathBuf::new();
    for c in parent.components() {
        rel_at.push(c);
        if known.contains(&rel_at) {
            continue;
        }
        let at = root.join(&rel_at);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ArchiveError::refused(
                    entry.to_string(),
                    format!(
                        "{} is a symlink; writing through it could leave the target directory",
                        rel_at.display()
                    ),
                ));
            }
            Ok(m) if !m.is_dir() => {
                return Err(ArchiveError::refused(
                    entry.to_string(),
                    format!("{} is not a directory", rel_at.display()),
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&at).map_err(io_err(format!("creating {}", at.display())))?;
            }
            Err(e) => return Err(io_err(format!("reading {}", at.display()))(e)),
        }
        known.insert(rel_at.clone());
    }
    Ok(())
}

/// Whether the link at `rel` resolves inside `root` as the kernel would resolve it now:
/// component by component, following every link on the way (the ones this pull wrote and the
/// ones already there), `..` after a link going up from where the link led. A path that does
/// not exist yet is taken as written. `Err` says why not.
fn link_really_resolves_inside(root: &Path, rel: &Path) -> Result<(), String> {
    let mut pending: Vec<std::ffi::OsString> = rel
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut at: Vec<std::ffi::OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == "." {
            continue;
        }
        if c == ".." {
            if at.pop().is_none() {
                return Err(
                    "followed through the links on its way, it leads out of the copied directory"
                        .into(),
                );
            }
            continue;
        }
        let here: PathBuf = at.iter().chain(std::iter::once(&c)).collect();
        let path = root.join(&here);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(format!(
                        "more than {MAX_LINK_HOPS} links on its way (a loop)"
                    ));
                }
                let target =
                    fs::read_link(&path).map_err(|e| format!("reading {}: {e}", here.display()))?;
                if target.is_absolute() {
                    return Err(format!(
                        "followed through the links on its way, {} leads to the absolute path {}",
                        here.display(),
                        target.display()
                    ));
                }
                pending.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
            }
            _ => at.push(c),
        }
    }
    Ok(())
}

/// Removes whatever is at `path` unless it is a directory we are about to reuse.
fn clear_for(path: &Path, want_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() && !m.file_type().is_symlink() => {
            if want_dir {
                Ok(())
            } else {
                fs::remove_dir_all(path)
            }
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_mtime(path: &Path, mtime: u64) {
    let t = UNIX_EPOCH + Duration::from_secs(mtime);
    if let Ok(f) = fs::File::options().write(true).open(path) {
        let _ = f.set_modified(t);
    }
}

/// Unpacks a tar stream into `root`, refusing entries that would land outside it: `..`,
/// absolute names, writes below a symlink (whether the archive created it or it was there),
/// hard links to outside. Modes (without setuid/setgid), mtimes, symlinks and empty
/// directories are kept; devices and fifos are skipped. Each written entry's stamp goes to
/// `record` (when given) under `prefix/<entry>`.
pub fn unpack<R: Read>(
    input: R,
    root: &Path,
    prefix: &str,
    record: Option<&mut Manifest>,
) -> Result<Stats, ArchiveError> {
    unpack_bounded(input, root, prefix, record, u64::MAX, &[])
}

/// Records what `root/rel` now is under `prefix/rel`.
fn stamp(record: Option<&mut Manifest>, root: &Path, prefix: &str, rel: &Path) {
    if let Some(record) = record
        && let Ok(m) = fs::symlink_metadata(root.join(rel))
    {
        let name = if prefix.is_empty() {
            rel.to_string_lossy().to_string()
        } else {
            format!("{prefix}/{}", rel.to_string_lossy())
        };
        record.entries.insert(name, Stamp::of(&m));
    }
}

/// The largest regular-file entries seen so far, for the message of a refused copy.
#[derive(Default)]
struct Largest(Vec<(u64, String)>);

impl Largest {
    fn note(&mut self, size: u64, name: &str) {
        self.0.push((size, name.to_string()));
        self.0.sort_by_key(|e| std::cmp::Reverse(e.0));
        self.0.truncate(3);
    }

    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(size, name)| format!("{name} ({size} bytes)"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where a symlink at `rel` pointing at `target` resolves, relative to the root; `None` when
/// it leaves the root (absolute, or `..` past it).
fn link_resolves_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: Vec<std::ffi::OsString> = rel
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str().to_owned()).collect())
        .unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(p) => depth.push(p.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A long entry name cut for a message (a 10 000-level path is 20 KB).
fn shorten(name: &str) -> String {
    match name.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &name[..i]),
        None => name.to_string(),
    }
}

/// [`unpack`], refusing the stream once its files add up to more than `max_bytes` (checked
/// against each entry's declared size before any of its data is written, so a huge sparse
/// file is refused before it fills the disk). `known_links` are links an earlier copy left
/// under `root` (relative to it): a link this archive writes can change where they lead, so
/// they are judged again at the end with the new ones. A refused copy leaves no link of its own.
pub(crate) fn unpack_bounded<R: Read>(
    input: R,
    root: &Path,
    prefix: &str,
    record: Option<&mut Manifest>,
    max_bytes: u64,
    known_links: &[PathBuf],
) -> Result<Stats, ArchiveError> {
    let mut links = Vec::new();
    let unpacked = unpack_entries(input, root, prefix, record, max_bytes, &mut links);
    if unpacked.is_err() {
        // A refused copy is not accepted: the next one sends its entries again, and the links it
        // wrote would be unknown to later checks (the caller records only accepted copies).
        for rel in links.drain(..) {
            let dest = root.join(rel);
            if fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&dest).map_err(io_err(format!("removing {}", dest.display())))?;
            }
        }
    }
    let judged = rejudge_links(root, known_links, &links);
    let stats = unpacked?;
    judged?;
    Ok(stats)
}

/// Judges again every link written by this copy (`links`) or an earlier one (`known_links`),
/// removing each one that leads out of `root`; the error names the first.
fn rejudge_links(
    root: &Path,
    known_links: &[PathBuf],
    links: &[PathBuf],
) -> Result<(), ArchiveError> {
    // A later link can redirect an earlier one (`esc -> z/secret` before `z -> ..`): judge
    // every link again now that all are written, and remove every one that leads out (removing
    // one can change where others lead, so until none does).
    let mut first: Option<ArchiveError> = None;
    loop {
        let mut removed = false;
        for rel in known_links.iter().chain(links) {
            let dest = root.join(rel);
            if !fs::symlink_metadata(&dest).is_ok_and(|m| m.file_type().is_symlink()) {
                continue;
            }
            if let Err(why) = link_really_resolves_inside(root, rel) {
                let target = fs::read_link(&dest).unwrap_or_default();
                fs::remove_file(&dest).map_err(io_err(format!("removing {}", dest.display())))?;
                removed = true;
                first.get_or_insert_with(|| {
                    ArchiveError::refused(
                        rel.to_string_lossy(),
                        format!(
                            "a symbolic link to {}: once later entries are written, {why}",
                            target.display()
                        ),
                    )
                });
            }
        }
        if !removed {
            break;
        }
    }
    first.map_or(Ok(()), Err)
}

/// The entries of [`unpack_bounded`], each checked as it is written; the links written go to `links`.
fn unpack_entries<R: Read>(
    input: R,
    root: &Path,
    prefix: &str,
    mut record: Option<&mut Manifest>,
    max_bytes: u64,
    links: &mut Vec<PathBuf>,
) -> Result<Stats, ArchiveError> {
    let mut known_dirs = HashSet::new();
    let mut total: u64 = 0;
    let mut largest = Largest::default();
    fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
    let mut archive = tar::Archive::new(input);
    let mut stats = Stats::default();
    let mut dir_times = Vec::new();
    let entries = archive.entries().map_err(io_err("reading the archive"))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading the archive"))?;
        let raw = entry
            .path()
            .map_err(io_err("reading an entry name"))?
            .into_owned();
        // An incremental pull's names start with `./`: shown as the others are.
        let lossy = raw.to_string_lossy();
        let shown = lossy.strip_prefix("./").unwrap_or(&lossy).to_string();
        let rel =
            entry_path(&raw).map_err(|reason| ArchiveError::refused(shown.clone(), reason))?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o1777;
        let mtime = header.mtime().unwrap_or(0);
        if rel.as_os_str().is_empty() {
            // The root itself (`./`): keep ours, take its mode.
            if kind.is_dir() {
                let _ = fs::set_permissions(root, fs::Permissions::from_mode(mode));
            }
            continue;
        }
        let depth = rel.components().count();
        if depth > MAX_DEPTH {
            return Err(ArchiveError::refused(
                shorten(&shown),
                format!("it is {depth} levels deep; a pull takes at most {MAX_DEPTH}"),
            ));
        }
        check_ancestors(root, &rel, &shown, &mut known_dirs)?;
        let dest = root.join(&rel);
        let existing = fs::symlink_metadata(&dest).ok();
        if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            let size = header.size().unwrap_or(0);
            largest.note(size, &shown);
            total = total.saturating_add(size);
            if total > max_bytes {
                return Err(ArchiveError::TooLarge {
                    max: max_bytes,
                    largest: largest.describe(),
                });
            }
        }
        if !kind.is_dir()
            && existing
                .as_ref()
                .is_some_and(|m| m.is_dir() && !m.file_type().is_symlink())
        {
            return Err(ArchiveError::refused(
                shown,
                "it would replace a directory on the runner with something else",
            ));
        }
        let write = io_err(format!("writing {}", dest.display()));
        match kind {
            tar::EntryType::Directory => {
                clear_for(&dest, true).map_err(io_err(format!("replacing {}", dest.display())))?;
                fs::create_dir_all(&dest).map_err(write)?;
                fs::set_permissions(&dest, fs::Permissions::from_mode(mode | 0o700))
                    .map_err(io_err(format!("chmod {}", dest.display())))?;
                dir_times.push((rel.clone(), mode, mtime));
                known_dirs.insert(rel.clone());
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear_for(&dest, false).map_err(io_err(format!("replacing {}", dest.display())))?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .map_err(io_err(format!("writing {}", dest.display())))?;
                let n = io::copy(&mut entry, &mut f).map_err(write)?;
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err(format!("chmod {}", dest.display())))?;
                let _ = f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime));
                stats.bytes += n;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(io_err("reading a link target"))?
                    .ok_or_else(|| {
                        ArchiveError::refused(shown.clone(), "a symlink without a target")
                    })?
                    .into_owned();
                if existing
                    .as_ref()
                    .is_some_and(|m| !m.file_type().is_symlink())
                {
                    return Err(ArchiveError::refused(
                        shown,
                        "it would replace a file on the runner with a symbolic link",
                    ));
                }
                if !link_resolves_inside(&rel, &target) {
                    return Err(ArchiveError::refused(
                        shown,
                        format!(
                            "a symbolic link to {}, outside the copied directory",
                            target.display()
                        ),
                    ));
                }
                clear_for(&dest, false).map_err(io_err(format!("replacing {}", dest.display())))?;
                std::os::unix::fs::symlink(&target, &dest).map_err(write)?;
                // Read as text it stays inside; followed through the links already here it may not.
                if let Err(why) = link_really_resolves_inside(root, &rel) {
                    let _ = fs::remove_file(&dest);
                    return Err(ArchiveError::refused(
                        shown,
                        format!("a symbolic link to {}: {why}", target.display()),
                    ));
                }
                links.push(rel.clone());
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(io_err("reading a link target"))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let target_rel = entry_path(&target).map_err(|reason| {
                    ArchiveError::refused(
                        shown.clone(),
                        format!("hard link to {}: {reason}", target.display()),
                    )
                })?;
                check_ancestors(root, &target_rel, &shown, &mut known_dirs)?;
                let src = root.join(&target_rel);
                if !fs::symlink_metadata(&src).is_ok_and(|m| m.is_file()) {
                    return Err(ArchiveError::refused(
                        shown,
                        format!(
                            "hard link to {}, which is not a file this archive wrote",
                            target.display()
                        ),
                    ));
                }
                clear_for(&dest, false).map_err(io_err(format!("replacing {}", dest.display())))?;
                fs::hard_link(&src, &dest).map_err(write)?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                tracing::debug!(entry = %shown, kind = ?other, "skipping a special file");
                continue;
            }
        }
        stats.entries += 1;
        // A directory is stamped once its mode and time are final, below.
        if !kind.is_dir() {
            stamp(record.as_deref_mut(), root, prefix, &rel);
        }
    }
    // Directory modes and times last: writing their children changed both. Stamped after,
    // or the next push would send every pulled directory back (and the pull bring it again).
    for (rel, mode, mtime) in dir_times.into_iter().rev() {
        let dir = root.join(&rel);
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(mode));
        set_mtime(&dir, mtime);
        stamp(record.as_deref_mut(), root, prefix, &rel);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A raw archive with names the tar crate's builder would refuse to write.
    fn crafted(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link, data) in entries {
            let mut h = tar::Header::new_old();
            {
                let raw = h.as_old_mut();
                raw.name[..name.len()].copy_from_slice(name.as_bytes());
                raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn unpack_err(buf: &[u8]) -> (String, tempfile::TempDir) {
        let parent = tempfile::tempdir().expect("tempdir");
        let root = parent.path().join("target");
        let e = unpack(buf, &root, "", None).expect_err("refused");
        (e.to_string(), parent)
    }

    #[test]
    fn parent_dir_entries_are_refused() {
        let buf = crafted(&[
            ("ok.txt", tar::EntryType::Regular, "", b"fine"),
            ("../evil.txt", tar::EntryType::Regular, "", b"evil"),
        ]);
        let (e, parent) = unpack_err(&buf);
        assert_eq!(
            e,
            "refusing archive entry \"../evil.txt\": it climbs out of the target with `..`"
        );
        assert!(!parent.path().join("evil.txt").exists());
        let buf = crafted(&[("a/../../evil.txt", tar::EntryType::Regular, "", b"evil")]);
        assert!(unpack_err(&buf).0.contains("a/../../evil.txt"));
    }

    #[test]
    fn absolute_entries_are_refused() {
        let buf = crafted(&[("/tmp/arc-hook-evil", tar::EntryType::Regular, "", b"evil")]);
        assert_eq!(
            unpack_err(&buf).0,
            "refusing archive entry \"/tmp/arc-hook-evil\": it is an absolute path"
        );
    }

    #[test]
    fn writes_through_an_archived_symlink_are_refused() {
        let outside = tempfile::tempdir().expect("tempdir");
        let link = outside.path().to_string_lossy().to_string();
        let buf = crafted(&[
            ("escape", tar::EntryType::Symlink, &link, b""),
            ("escape/owned.txt", tar::EntryType::Regular, "", b"evil"),
        ]);
        let (e, _p) = unpack_err(&buf);
        assert_eq!(
            e,
            format!(
                "refusing archive entry \"escape\": a symbolic link to {link}, outside the copied directory"
            )
        );
        assert!(!outside.path().join("owned.txt").exists());
        // A link inside the tree still never carries a write below it.
        let buf = crafted(&[
            ("inside", tar::EntryType::Symlink, "d", b""),
            ("inside/owned.txt", tar::EntryType::Regular, "", b"evil"),
        ]);
        let (e, _p) = unpack_err(&buf);
        assert_eq!(
            e,
            "refusing archive entry \"inside/owned.txt\": inside is a symlink; writing through it could leave the target directory"
        );
    }

    #[test]
    fn a_file_over_an_archived_symlink_replaces_the_link() {
        let out = tempfile::tempdir().expect("tempdir");
        fs::write(out.path().join("target"), b"original").expect("write");
        let buf = crafted(&[
            ("f", tar::EntryType::Symlink, "target", b""),
            ("f", tar::EntryType::Regular, "", b"new"),
        ]);
        unpack(&buf[..], out.path(), "", None).expect("unpack");
        assert_eq!(
            fs::read(out.path().join("target")).expect("read"),
            b"original"
        );
        assert_eq!(fs::read(out.path().join("f")).expect("read"), b"new");
    }

    #[test]
    fn links_out_of_the_tree_are_refused() {
        for (target, shown) in [
            ("/etc/passwd", "/etc/passwd"),
            ("../../x", "../../x"),
            ("a/../../../x", "a/../../../x"),
        ] {
            let buf = crafted(&[("d/link", tar::EntryType::Symlink, target, b"")]);
            let (e, p) = unpack_err(&buf);
            assert_eq!(
                e,
                format!(
                    "refusing archive entry \"d/link\": a symbolic link to {shown}, outside the copied directory"
                )
            );
            assert!(fs::symlink_metadata(p.path().join("target/d/link")).is_err());
        }
        // Inside is fine.
        let buf = crafted(&[("d/link", tar::EntryType::Symlink, "../d2/f", b"")]);
        let out = tempfile::tempdir().expect("tempdir");
        unpack(&buf[..], out.path(), "", None).expect("inside");
    }

    #[test]
    fn runner_paths_are_never_replaced_by_links_or_files() {
        let out = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(out.path().join("_runner_file_commands")).expect("dir");
        fs::write(out.path().join("_runner_file_commands/set_output_1"), b"").expect("file");
        let buf = crafted(&[("_runner_file_commands", tar::EntryType::Symlink, "x", b"")]);
        let e = unpack(&buf[..], out.path(), "", None)
            .expect_err("refused")
            .to_string();
        assert_eq!(
            e,
            "refusing archive entry \"_runner_file_commands\": it would replace a directory on the runner with something else"
        );
        let buf = crafted(&[(
            "_runner_file_commands/set_output_1",
            tar::EntryType::Symlink,
            "y",
            b"",
        )]);
        let e = unpack(&buf[..], out.path(), "", None)
            .expect_err("refused")
            .to_string();
        assert_eq!(
            e,
            "refusing archive entry \"_runner_file_commands/set_output_1\": it would replace a file on the runner with a symbolic link"
        );
        assert!(
            out.path()
                .join("_runner_file_commands/set_output_1")
                .is_file()
        );
    }

    /// The symlinks under `root` that the kernel resolves to somewhere outside it (a dangling
    /// one by its deepest existing ancestor and the rest of its path).
    fn escaping_links(root: &Path) -> Vec<String> {
        let canon_root = fs::canonicalize(root).expect("root");
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("ls").flatten() {
                let m = fs::symlink_metadata(e.path()).expect("stat");
                if m.file_type().is_symlink() {
                    let mut p = d.join(fs::read_link(e.path()).expect("readlink"));
                    // Dangling: its deepest existing ancestor, then the rest as a directory would take it.
                    let mut rest = Vec::new();
                    let mut real = loop {
                        if let Ok(r) = fs::canonicalize(&p) {
                            break r;
                        }
                        rest.push(
                            p.file_name()
                                .map(|n| n.to_owned())
                                .unwrap_or_else(|| "..".into()),
                        );
                        if !p.pop() {
                            break PathBuf::new();
                        }
                    };
                    for c in rest.iter().rev() {
                        if c == ".." {
                            real.pop();
                        } else {
                            real.push(c);
                        }
                    }
                    if !real.starts_with(&canon_root) {
                        out.push(e.path().display().to_string());
                    }
                } else if m.is_dir() {
                    stack.push(e.path());
                }
            }
        }
        out
    }

    /// A tar with GNU long names, as a pod's tar writes deep paths.
    fn long_named(entries: &[(String, tar::EntryType)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, name, io::empty()).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn chained_relative_links_are_judged_by_where_they_lead() {
        use tar::EntryType::Symlink;
        // In the order a pod's tar sends them: each reads as inside, `y` leads out once `x` is followed.
        let buf = crafted(&[
            ("x", Symlink, ".", b""),
            ("y", Symlink, "x/..", b""),
            ("z", Symlink, "y/..", b""),
            ("esc", Symlink, "z/secret", b""),
        ]);
        let (e, p) = unpack_err(&buf);
        assert_eq!(
            e,
            "refusing archive entry \"y\": a symbolic link to x/..: followed through the links on its way, it leads out of the copied directory"
        );
        assert_eq!(
            escaping_links(&p.path().join("target")),
            Vec::<String>::new()
        );
        for l in ["x", "y", "esc"] {
            assert!(
                fs::symlink_metadata(p.path().join("target").join(l)).is_err(),
                "a refused copy leaves no link: {l}"
            );
        }
        // Reversed, every link is fine when written and `x` redirects the others: caught at the end.
        let buf = crafted(&[
            ("esc", Symlink, "z/secret", b""),
            ("z", Symlink, "y/..", b""),
            ("y", Symlink, "x/..", b""),
            ("x", Symlink, ".", b""),
        ]);
        let (e, p) = unpack_err(&buf);
        assert_eq!(
            e,
            "refusing archive entry \"esc\": a symbolic link to z/secret: once later entries are written, followed through the links on its way, it leads out of the copied directory"
        );
        assert_eq!(
            escaping_links(&p.path().join("target")),
            Vec::<String>::new()
        );
        // A refused entry after them ends the copy early: the links before it are still judged.
        let buf = crafted(&[
            ("esc", Symlink, "z/secret", b""),
            ("z", Symlink, "y/..", b""),
            ("y", Symlink, "x/..", b""),
            ("x", Symlink, ".", b""),
            ("../bad", tar::EntryType::Regular, "", b""),
        ]);
        let (e, p) = unpack_err(&buf);
        assert!(e.contains("climbs out of the target"), "{e}");
        assert_eq!(
            escaping_links(&p.path().join("target")),
            Vec::<String>::new()
        );
        // A link into a subdirectory, then `..` through it: `d/..` is the root only while d is a directory.
        let buf = crafted(&[
            ("sub/deep/f", tar::EntryType::Regular, "", b"f"),
            ("d", Symlink, "sub/deep", b""),
            ("up", Symlink, "d/../../..", b""),
        ]);
        let (e, _p) = unpack_err(&buf);
        assert!(e.starts_with("refusing archive entry \"up\""), "{e}");
        // A loop is refused, links through inside links that stay inside are kept.
        let buf = crafted(&[("a", Symlink, "b", b""), ("b", Symlink, "a", b"")]);
        assert!(unpack_err(&buf).0.contains("a loop"));
        let out = tempfile::tempdir().expect("tempdir");
        let buf = crafted(&[
            ("sub/deep/f", tar::EntryType::Regular, "", b"f"),
            ("d", Symlink, "sub/deep", b""),
            ("ok", Symlink, "d/../deep/f", b""),
            ("ok2", Symlink, "ok", b""),
        ]);
        unpack(&buf[..], out.path(), "", None).expect("inside");
        assert_eq!(fs::read(out.path().join("ok2")).expect("read"), b"f");
    }

    #[test]
    fn links_from_an_earlier_pull_are_judged_again() {
        use tar::EntryType::Symlink;
        let parent = tempfile::tempdir().expect("tempdir");
        let root = parent.path().join("target");
        let first = crafted(&[
            ("esc", Symlink, "z/secret", b""),
            ("z", Symlink, "y/..", b""),
        ]);
        unpack(&first[..], &root, "", None).expect("first pull: all inside");
        let second = crafted(&[("y", Symlink, "..", b"")]);
        // `y -> ..` alone is refused when written; `y -> q`, `q -> .` each look fine.
        assert!(unpack_bounded(&second[..], &root, "", None, u64::MAX, &[]).is_err());
        let second = crafted(&[("y", Symlink, "q", b""), ("q", Symlink, ".", b"")]);
        let e = unpack_bounded(
            &second[..],
            &root,
            "",
            None,
            u64::MAX,
            &[PathBuf::from("esc"), PathBuf::from("z")],
        )
        .expect_err("z now leads out")
        .to_string();
        assert_eq!(
            e,
            "refusing archive entry \"esc\": a symbolic link to z/secret: once later entries are written, followed through the links on its way, it leads out of the copied directory"
        );
        assert_eq!(escaping_links(&root), Vec::<String>::new());
    }

    #[test]
    fn hard_links_to_links_are_refused() {
        let buf = crafted(&[
            ("f", tar::EntryType::Regular, "", b"f"),
            ("l", tar::EntryType::Symlink, "f", b""),
            ("h", tar::EntryType::Link, "l", b""),
        ]);
        assert_eq!(
            unpack_err(&buf).0,
            "refusing archive entry \"h\": hard link to l, which is not a file this archive wrote"
        );
    }

    #[test]
    fn deep_trees_are_refused_at_the_depth_bound() {
        let chain = |n: usize| -> Vec<(String, tar::EntryType)> {
            (1..=n)
                .map(|d| (vec!["a"; d].join("/"), tar::EntryType::Directory))
                .collect()
        };
        let out = tempfile::tempdir().expect("tempdir");
        unpack(&long_named(&chain(MAX_DEPTH))[..], out.path(), "", None).expect("at the bound");
        let e = unpack_err(&long_named(&chain(MAX_DEPTH + 1))).0;
        assert!(e.starts_with("refusing archive entry \"a/a/a/"), "{e}");
        assert!(
            e.ends_with("...\": it is 257 levels deep; a pull takes at most 256"),
            "{e}"
        );
    }

    #[test]
    fn pulls_are_bounded_before_data_is_written() {
        let big = vec![0u8; 4096];
        let buf = crafted(&[
            ("small", tar::EntryType::Regular, "", &big[..100]),
            ("big", tar::EntryType::Regular, "", &big),
            ("bigger", tar::EntryType::Regular, "", &big),
        ]);
        let out = tempfile::tempdir().expect("tempdir");
        let e = unpack_bounded(&buf[..], out.path(), "", None, 5000, &[])
            .expect_err("refused")
            .to_string();
        assert_eq!(
            e,
            "refusing the copy: it holds more than 5000 bytes (ARC_HOOK_PULL_MAX_BYTES); largest entries: big (4096 bytes), bigger (4096 bytes), small (100 bytes)"
        );
        assert!(
            !out.path().join("bigger").exists(),
            "refused before writing it"
        );
    }

    #[test]
    fn hard_links_outside_are_refused() {
        let buf = crafted(&[("h", tar::EntryType::Link, "../../etc/passwd", b"")]);
        assert!(
            unpack_err(&buf)
                .0
                .starts_with("refusing archive entry \"h\": hard link to ../../etc/passwd")
        );
    }
}
