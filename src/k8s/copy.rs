//! Streaming tar copies between the runner and a pod (or between two pods) over exec: no temporary archive, no per-file round trips, and an unpacker that refuses entries escaping its target.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::io::SyncIoBridge;

use super::Kube;
use super::exec::{ExecError, ExecTarget, exec};

/// Buffer between the archive thread and the exec stream: bounds memory whatever the tree size.
const PIPE_BUF: usize = 1024 * 1024;

/// A copy that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("refusing archive entry {entry:?}: {reason}")]
    Unsafe { entry: String, reason: String },
    #[error(
        "refusing the copy: it holds more than {max} bytes (ARC_HOOK_PULL_MAX_BYTES); largest entries: {largest}"
    )]
    TooLarge { max: u64, largest: String },
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error("tar in pod {pod} exited with code {code}: {stderr}")]
    Tar {
        pod: String,
        code: i32,
        stderr: String,
    },
}

impl CopyError {
    /// An archive entry refused, and why (the name as the archive gives it).
    fn refused(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unsafe {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> CopyError {
    let what = what.into();
    move |source| CopyError::Io { what, source }
}

/// A local file or directory to send, and its name in the archive (relative to the pod's destination).
#[derive(Debug, Clone)]
pub struct Source {
    pub local: PathBuf,
    pub name: String,
}

/// What an entry looked like when it was last sent or received, to skip it when unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub mode: u32,
}

impl Stamp {
    pub fn of(meta: &fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            mode: meta.mode(),
        }
    }
}

/// Archive name -> stamp of every entry the pod is known to hold (runner-side `_temp/_arc_hook/pushed.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub entries: BTreeMap<String, Stamp>,
}

impl Manifest {
    /// Reads a manifest; a missing or unreadable one is empty (everything is sent again).
    pub fn load(path: &Path) -> Self {
        fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> Result<(), CopyError> {
        let json = serde_json::to_vec(self).map_err(|e| CopyError::Io {
            what: format!("serialising {}", path.display()),
            source: io::Error::other(e),
        })?;
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, json).map_err(io_err(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, path).map_err(io_err(format!("writing {}", path.display())))
    }

    fn unchanged(&self, name: &str, meta: &fs::Metadata) -> bool {
        self.entries.get(name) == Some(&Stamp::of(meta))
    }
}

/// What an archive held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub skipped: u64,
    pub bytes: u64,
}

/// Which entries to send.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Skip entries whose stamp matches this manifest (incremental push); `None` sends everything.
    pub since: Option<Manifest>,
    /// Archive names never sent (and their subtrees).
    pub exclude: Vec<String>,
    /// Record stamps only under these names (`None`: everything). Memory stays flat for a large
    /// first push when only a few roots are compared later.
    pub record_under: Option<Vec<String>>,
}

impl PushOptions {
    fn records(&self, name: &str) -> bool {
        self.record_under.as_ref().is_none_or(|roots| {
            roots.iter().any(|r| {
                name == r
                    || name
                        .strip_prefix(r.as_str())
                        .is_some_and(|t| t.starts_with('/'))
            })
        })
    }
}

/// Writes a tar of `sources` to `out`, recording every entry's stamp in `record`.
/// Symlinks are archived as links, never followed; directories are always sent when new or
/// changed, so empty ones survive.
pub fn write_archive<W: Write>(
    out: W,
    sources: &[Source],
    opts: &PushOptions,
    record: &mut Manifest,
) -> Result<Stats, CopyError> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut stats = Stats::default();
    for s in sources {
        let meta = match fs::symlink_metadata(&s.local) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(format!("reading {}", s.local.display()))(e)),
        };
        add_tree(
            &mut builder,
            &s.local,
            &s.name,
            &meta,
            opts,
            record,
            &mut stats,
        )?;
    }
    builder
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("finishing the archive"))?;
    Ok(stats)
}

fn add_tree<W: Write>(
    b: &mut tar::Builder<W>,
    local: &Path,
    name: &str,
    meta: &fs::Metadata,
    opts: &PushOptions,
    record: &mut Manifest,
    stats: &mut Stats,
) -> Result<(), CopyError> {
    if opts.exclude.iter().any(|x| x == name) {
        return Ok(());
    }
    let unchanged = opts.since.as_ref().is_some_and(|m| m.unchanged(name, meta));
    if opts.records(name) {
        record.entries.insert(name.to_string(), Stamp::of(meta));
    }
    if unchanged {
        stats.skipped += 1;
    } else {
        b.append_path_with_name(local, name)
            .map_err(io_err(format!("archiving {}", local.display())))?;
        stats.entries += 1;
        if meta.is_file() {
            stats.bytes += meta.len();
        }
    }
    if meta.is_dir() {
        let mut children: Vec<_> = fs::read_dir(local)
            .map_err(io_err(format!("listing {}", local.display())))?
            .collect::<Result<_, _>>()
            .map_err(io_err(format!("listing {}", local.display())))?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            let child = c.path();
            let Some(file_name) = c.file_name().to_str().map(str::to_string) else {
                tracing::warn!(path = %child.display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            let child_meta = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                // Vanished while we walked (a runner temp file): nothing to send.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(format!("reading {}", child.display()))(e)),
            };
            let child_name = if name.is_empty() || name == "." {
                file_name
            } else {
                format!("{name}/{file_name}")
            };
            add_tree(b, &child, &child_name, &child_meta, opts, record, stats)?;
        }
    }
    Ok(())
}

/// The checked, relative path of an archive entry (`.` components dropped), or why it is refused.
pub fn entry_path(raw: &Path) -> Result<PathBuf, String> {
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
pub const MAX_DEPTH: usize = 256;

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
) -> Result<(), CopyError> {
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
                return Err(CopyError::refused(
                    entry.to_string(),
                    format!(
                        "{} is a symlink; writing through it could leave the target directory",
                        rel_at.display()
                    ),
                ));
            }
            Ok(m) if !m.is_dir() => {
                return Err(CopyError::refused(
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
) -> Result<Stats, CopyError> {
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
pub fn unpack_bounded<R: Read>(
    input: R,
    root: &Path,
    prefix: &str,
    record: Option<&mut Manifest>,
    max_bytes: u64,
    known_links: &[PathBuf],
) -> Result<Stats, CopyError> {
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
fn rejudge_links(root: &Path, known_links: &[PathBuf], links: &[PathBuf]) -> Result<(), CopyError> {
    // A later link can redirect an earlier one (`esc -> z/secret` before `z -> ..`): judge
    // every link again now that all are written, and remove every one that leads out (removing
    // one can change where others lead, so until none does).
    let mut first: Option<CopyError> = None;
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
                    CopyError::refused(
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
) -> Result<Stats, CopyError> {
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
        let rel = entry_path(&raw).map_err(|reason| CopyError::refused(shown.clone(), reason))?;
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
            return Err(CopyError::refused(
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
                return Err(CopyError::TooLarge {
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
            return Err(CopyError::refused(
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
                    .ok_or_else(|| CopyError::refused(shown.clone(), "a symlink without a target"))?
                    .into_owned();
                if existing
                    .as_ref()
                    .is_some_and(|m| !m.file_type().is_symlink())
                {
                    return Err(CopyError::refused(
                        shown,
                        "it would replace a file on the runner with a symbolic link",
                    ));
                }
                if !link_resolves_inside(&rel, &target) {
                    return Err(CopyError::refused(
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
                    return Err(CopyError::refused(
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
                    CopyError::refused(
                        shown.clone(),
                        format!("hard link to {}: {reason}", target.display()),
                    )
                })?;
                check_ancestors(root, &target_rel, &shown, &mut known_dirs)?;
                let src = root.join(&target_rel);
                if !fs::symlink_metadata(&src).is_ok_and(|m| m.is_file()) {
                    return Err(CopyError::refused(
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

/// The pod-side command that unpacks a pushed stream into `dest` (which must exist).
/// `-o`: files get the container user's ownership, not the runner's uid (GNU and busybox tar).
pub fn extract_command(dest: &str) -> Vec<String> {
    ["tar", "-x", "-o", "-f", "-", "-C", dest]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// An incremental pull: only what changed in the pod since the pull that left mark `since`.
/// The marks are files in `mark_dir` (a directory under the pulled tree that the pull
/// excludes); the runner side keeps the name of the last mark whose pull it accepted, so a
/// failed pull is sent again in full by the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedSince {
    pub mark_dir: String,
    /// The mark of the last accepted pull (`None`: send everything).
    pub since: Option<String>,
    /// The mark this pull leaves, for the next one.
    pub next: String,
}

/// The pod-side command that streams the tree under `src` to stdout, without the top-level
/// entries named in `exclude` (an empty directory gives an empty stream).
///
/// With `changed`, it first leaves the mark `changed.next`, dated 50 ms back (2 s on a
/// filesystem that keeps whole seconds) so that a change in the same clock tick is never
/// missed (what comes back twice is harmless), then, when
/// the mark `changed.since` is there and GNU find and tar are, sends only the entries whose
/// ctime is newer than it: ctime is set by every write, chmod, rename and link, and no
/// process can set it back. Directories go without their contents. Without the mark or the
/// tools it sends everything, as without `changed`.
pub fn archive_command(src: &str, exclude: &[&str], changed: Option<&ChangedSince>) -> Vec<String> {
    let mut skip = String::new();
    let mut prune = String::new();
    for x in exclude {
        let q = crate::script::sh_quote(x);
        skip.push_str(&format!(" [ \"$e\" = {q} ] && continue;"));
        prune.push_str(&format!(" -path ./{q} -prune -o"));
    }
    let full = format!(
        "set --; for e in * .[!.]* ..?*; do {{ [ -e \"$e\" ] || [ -L \"$e\" ]; }} || continue;{skip} set -- \"$@\" \"$e\"; done; [ $# -eq 0 ] && exit 0; exec tar -c -f - -- \"$@\""
    );
    let mut args = vec!["arc-hook-pull".to_string(), src.to_string()];
    let script = match changed {
        None => format!("cd \"$1\" || exit 1; {full}"),
        Some(c) => {
            args.extend([
                c.mark_dir.clone(),
                c.since.clone().unwrap_or_default(),
                c.next.clone(),
            ]);
            format!(
                concat!(
                    "cd \"$1\" || exit 1; m=\"$2\"; since=\"$3\"; next=\"$4\"; ",
                    "mkdir -p \"$m\" 2>/dev/null; ",
                    "t=$(date +%s%N) && case $t in *[!0-9]*|'') false;; esac && t=$((t - 50000000)) && s=${{t%?????????}} ",
                    "&& touch -d \"@$s.${{t#\"$s\"}}\" \"$m/pull-$next\" 2>/dev/null ",
                    "&& case $(stat -c %y \"$m/pull-$next\") in *.000000000*) touch -d \"@$((s - 2))\" \"$m/pull-$next\";; esac ",
                    "|| rm -f \"$m/pull-$next\"; ",
                    "for f in \"$m\"/pull-*; do case \"$f\" in \"$m/pull-$since\"|\"$m/pull-$next\") ;; *) rm -f \"$f\";; esac; done; ",
                    "if [ -n \"$since\" ] && [ -f \"$m/pull-$since\" ] ",
                    "&& find . -maxdepth 0 -cnewer \"$m/pull-$since\" -print0 >/dev/null 2>&1 ",
                    "&& tar --version 2>/dev/null | grep -q 'GNU tar'; then ",
                    "find . -mindepth 1 -maxdepth {deepest}{prune} -cnewer \"$m/pull-$since\" -print0 > \"$m/pull-list\" || exit 3; ",
                    "exec tar -c -f - --null --no-recursion -T \"$m/pull-list\"; fi; {full}"
                ),
                // Deeper entries are refused anyway: one past the bound is enough to say so.
                deepest = MAX_DEPTH + 1,
                prune = prune,
                full = full
            )
        }
    };
    let mut command = vec!["sh".into(), "-c".into(), script];
    command.extend(args);
    command
}

/// Sends `sources` into the pod directory `dest` as one tar stream over one exec.
/// Returns what was sent and the stamps of everything considered (for the next incremental push).
pub async fn push(
    kube: &Kube,
    pod: &str,
    container: &str,
    dest: &str,
    sources: Vec<Source>,
    opts: PushOptions,
) -> Result<(Stats, Manifest), CopyError> {
    let started = SystemTime::now();
    let (writer, reader) = tokio::io::duplex(PIPE_BUF);
    let producer = tokio::task::spawn_blocking(move || {
        let mut record = Manifest::default();
        let out = io::BufWriter::with_capacity(256 * 1024, SyncIoBridge::new(writer));
        let stats = write_archive(out, &sources, &opts, &mut record)?;
        Ok::<_, CopyError>((stats, record))
    });
    let mut stderr = Vec::new();
    let target = ExecTarget {
        pod,
        container,
        what: "tar (copying files into the pod)",
    };
    let code = exec(
        kube,
        target,
        &extract_command(dest),
        Some(reader),
        tokio::io::sink(),
        &mut stderr,
    )
    .await;
    let (stats, record) = settle(producer.await, "archiving", code, pod, &stderr)?;
    tracing::debug!(
        pod,
        dest,
        entries = stats.entries,
        skipped = stats.skipped,
        bytes = stats.bytes,
        elapsed_ms = started.elapsed().map(|d| d.as_millis() as u64).unwrap_or(0),
        "pushed"
    );
    Ok((stats, record))
}

/// Where a pull lands on the runner.
#[derive(Debug, Clone)]
pub struct PullInto {
    /// The local directory.
    pub dest: PathBuf,
    /// With a prefix, entries written are stamped in the returned manifest under `prefix/`.
    pub prefix: Option<String>,
    /// The most the pull may bring back ([`unpack_bounded`]).
    pub max_bytes: u64,
    /// Links already under `dest` (relative to it), judged again with the new ones.
    pub known_links: Vec<PathBuf>,
    /// Only what changed since the last accepted pull ([`archive_command`]).
    pub changed: Option<ChangedSince>,
}

/// Streams the pod directory `src` (minus top-level `exclude`) into the local `dest`,
/// through the checking unpacker. With a `prefix`, entries written are stamped in the returned
/// manifest under `prefix/`.
pub async fn pull(
    kube: &Kube,
    pod: &str,
    container: &str,
    src: &str,
    exclude: &[&str],
    into: PullInto,
) -> Result<(Stats, Manifest), CopyError> {
    let PullInto {
        dest,
        prefix,
        max_bytes,
        known_links,
        changed,
    } = into;
    let (writer, reader) = tokio::io::duplex(PIPE_BUF);
    let consumer = tokio::task::spawn_blocking(move || {
        let mut record = Manifest::default();
        let mut input = io::BufReader::with_capacity(256 * 1024, SyncIoBridge::new(reader));
        let stats = match &prefix {
            Some(p) => unpack_bounded(
                &mut input,
                &dest,
                p,
                Some(&mut record),
                max_bytes,
                &known_links,
            )?,
            None => unpack_bounded(&mut input, &dest, "", None, max_bytes, &known_links)?,
        };
        // tar pads its output past the end-of-archive marker the reader stops at; read it all,
        // or the pod's tar meets a closed pipe and a good copy looks broken.
        io::copy(&mut input, &mut io::sink()).map_err(io_err("reading the end of the archive"))?;
        Ok::<_, CopyError>((stats, record))
    });
    let mut stderr = Vec::new();
    let target = ExecTarget {
        pod,
        container,
        what: "tar (copying files from the pod)",
    };
    let incremental = changed.as_ref().is_some_and(|c| c.since.is_some());
    let command = archive_command(src, exclude, changed.as_ref());
    let mut consumer = consumer;
    let (local, code) = {
        let streaming = exec(
            kube,
            target,
            &command,
            None::<tokio::io::Empty>,
            writer,
            &mut stderr,
        );
        tokio::pin!(streaming);
        tokio::select! {
            code = &mut streaming => (consumer.await, code),
            local = &mut consumer => match local {
                Ok(Ok(v)) => (Ok(Ok(v)), streaming.await),
                // The unpacker refused (a hostile entry, or more than the limit): close the
                // stream at once, so the pod's tar stops on a broken pipe instead of sending
                // the rest (a sparse 1 TiB file would take many minutes of zeros).
                refused => (refused, Ok(0)),
            },
        }
    };
    let (stats, record) = settle(local, "unpacking", code, pod, &stderr)?;
    tracing::debug!(
        pod,
        src,
        entries = stats.entries,
        bytes = stats.bytes,
        incremental = incremental,
        "pulled"
    );
    Ok((stats, record))
}

/// Streams what `archive` writes in one container into `extract` in another, through this
/// process and never its disk: a copy between two of the job's pods, which the runner side
/// never unpacks (what reaches the runner comes through [`pull`] and its checks). An empty
/// stream (nothing to send) starts no extract. Returns the bytes relayed.
pub async fn relay(
    kube: &Kube,
    from: ExecTarget<'_>,
    archive: &[String],
    to: ExecTarget<'_>,
    extract: &[String],
) -> Result<u64, CopyError> {
    use tokio::io::AsyncReadExt;
    let (writer, mut reader) = tokio::io::duplex(PIPE_BUF);
    let mut from_err = Vec::new();
    let mut to_err = Vec::new();
    let source = exec(
        kube,
        from,
        archive,
        None::<tokio::io::Empty>,
        writer,
        &mut from_err,
    );
    let sink = async {
        let mut first = [0u8; 1];
        let n = reader
            .read(&mut first)
            .await
            .map_err(io_err("reading the relayed archive"))?;
        if n == 0 {
            return Ok::<_, CopyError>(None);
        }
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let input = AsyncReadExt::chain(
            std::io::Cursor::new(first[..n].to_vec()),
            Counted {
                inner: reader,
                count: counted.clone(),
            },
        );
        let code = exec(
            kube,
            to,
            extract,
            Some(input),
            tokio::io::sink(),
            &mut to_err,
        )
        .await;
        Ok(Some((
            code,
            counted.load(std::sync::atomic::Ordering::Relaxed),
        )))
    };
    let (sent, received) = tokio::join!(source, sink);
    // The receiving end's failure explains a broken stream better than the sender's.
    let bytes = match received? {
        None => 0,
        Some((code, bytes)) => {
            let code = code?;
            if code != 0 {
                return Err(CopyError::Tar {
                    pod: to.pod.into(),
                    code,
                    stderr: String::from_utf8_lossy(&to_err).trim().to_string(),
                });
            }
            bytes
        }
    };
    let code = sent?;
    if code != 0 {
        return Err(CopyError::Tar {
            pod: from.pod.into(),
            code,
            stderr: String::from_utf8_lossy(&from_err).trim().to_string(),
        });
    }
    tracing::debug!(from = from.pod, to = to.pod, bytes, "relayed");
    Ok(bytes)
}

/// A reader that counts what passes through it.
struct Counted<R> {
    inner: R,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        self.count
            .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        polled
    }
}

/// Combines the local end of a copy with tar's exit in the pod. A local failure explains a
/// broken stream better than the pod's complaint about it, so it wins.
fn settle<T>(
    local: Result<Result<T, CopyError>, tokio::task::JoinError>,
    what: &str,
    code: Result<i32, crate::k8s::exec::ExecError>,
    pod: &str,
    stderr: &[u8],
) -> Result<T, CopyError> {
    let value = local.map_err(|e| CopyError::Io {
        what: what.into(),
        source: io::Error::other(e),
    })??;
    let code = code?;
    if code != 0 {
        return Err(CopyError::Tar {
            pod: pod.into(),
            code,
            stderr: String::from_utf8_lossy(stderr).trim().to_string(),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        fs::create_dir_all(p.join("repo/src")).expect("mkdir");
        fs::create_dir_all(p.join("repo/empty")).expect("mkdir");
        fs::write(p.join("repo/src/main.sh"), b"#!/bin/sh\necho hi\n").expect("write");
        fs::set_permissions(
            p.join("repo/src/main.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        fs::write(p.join("repo/README"), b"readme").expect("write");
        fs::set_permissions(p.join("repo/README"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        symlink("src/main.sh", p.join("repo/run")).expect("symlink");
        symlink("/etc/passwd", p.join("repo/abs-link")).expect("symlink");
        d
    }

    fn archive(sources: &[Source], opts: &PushOptions) -> (Vec<u8>, Stats, Manifest) {
        let mut buf = Vec::new();
        let mut rec = Manifest::default();
        let stats = write_archive(&mut buf, sources, opts, &mut rec).expect("archive");
        (buf, stats, rec)
    }

    #[test]
    fn round_trip_keeps_modes_links_empty_dirs_and_mtimes() {
        let src = tree();
        let mtime = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        fs::File::options()
            .write(true)
            .open(src.path().join("repo/README"))
            .expect("open")
            .set_modified(mtime)
            .expect("mtime");
        // A link out of the tree is sent, but never unpacked on the runner (tested below).
        fs::remove_file(src.path().join("repo/abs-link")).expect("rm");
        let sources = [Source {
            local: src.path().join("repo"),
            name: "repo".into(),
        }];
        let (buf, stats, _) = archive(&sources, &PushOptions::default());
        assert_eq!(stats.entries, 6);
        let out = tempfile::tempdir().expect("tempdir");
        let mut rec = Manifest::default();
        unpack(&buf[..], out.path(), "w", Some(&mut rec)).expect("unpack");
        let o = out.path().join("repo");
        let mode = |p: &str| fs::metadata(o.join(p)).expect("exists").mode() & 0o7777;
        assert_eq!(mode("src/main.sh"), 0o755);
        assert_eq!(mode("README"), 0o600);
        assert_eq!(
            fs::read_link(o.join("run")).expect("link"),
            Path::new("src/main.sh")
        );
        assert!(o.join("empty").is_dir());
        assert_eq!(
            fs::metadata(o.join("README"))
                .expect("exists")
                .modified()
                .expect("mtime"),
            mtime
        );
        assert!(rec.entries.contains_key("w/repo/README"));
    }

    #[test]
    fn incremental_push_sends_only_changes() {
        let src = tree();
        let sources = [Source {
            local: src.path().join("repo"),
            name: "repo".into(),
        }];
        let (_, first, rec) = archive(&sources, &PushOptions::default());
        let opts = PushOptions {
            since: Some(rec.clone()),
            ..Default::default()
        };
        let (_, second, _) = archive(&sources, &opts);
        assert_eq!(second.entries, 0);
        assert_eq!(second.skipped, first.entries);
        fs::write(src.path().join("repo/src/new.txt"), b"new").expect("write");
        fs::write(src.path().join("repo/README"), b"readme, longer").expect("write");
        let (buf, third, _) = archive(&sources, &opts);
        // The new file, the changed one, and src/ (its mtime changed with the new entry).
        assert_eq!(third.entries, 3);
        let names: Vec<String> = tar::Archive::new(&buf[..])
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .to_string()
            })
            .collect();
        assert!(names.contains(&"repo/src/new.txt".to_string()), "{names:?}");
        assert!(names.contains(&"repo/README".to_string()), "{names:?}");
    }

    #[test]
    fn only_named_roots_are_recorded() {
        let src = tree();
        let sources = [Source {
            local: src.path().join("repo"),
            name: "repo".into(),
        }];
        let opts = PushOptions {
            record_under: Some(vec!["repo/src".into()]),
            ..Default::default()
        };
        let (_, stats, rec) = archive(&sources, &opts);
        assert_eq!(stats.entries, 7, "everything is sent");
        let names: Vec<&str> = rec.entries.keys().map(String::as_str).collect();
        assert_eq!(names, ["repo/src", "repo/src/main.sh"]);
    }

    #[test]
    fn excluded_names_are_not_sent() {
        let src = tree();
        let sources = [Source {
            local: src.path().join("repo"),
            name: "repo".into(),
        }];
        let opts = PushOptions {
            exclude: vec!["repo/src".into()],
            ..Default::default()
        };
        let (_, stats, rec) = archive(&sources, &opts);
        assert_eq!(stats.entries, 5);
        assert!(!rec.entries.keys().any(|k| k.starts_with("repo/src")));
    }

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

    #[test]
    fn pull_command_skips_excluded_and_handles_empty_dirs() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(d.path().join("_runner_file_commands")).expect("mkdir");
        fs::write(
            d.path().join("_runner_file_commands/set_output_1"),
            b"x=1\n",
        )
        .expect("write");
        fs::create_dir_all(d.path().join("_github_home/.cache")).expect("mkdir");
        fs::write(d.path().join(".hidden"), b"h").expect("write");
        let cmd = archive_command(&d.path().to_string_lossy(), &["_github_home"], None);
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dest = tempfile::tempdir().expect("tempdir");
        unpack(&out.stdout[..], dest.path(), "_temp", None).expect("unpack");
        assert_eq!(
            fs::read(dest.path().join("_runner_file_commands/set_output_1")).expect("pulled"),
            b"x=1\n"
        );
        assert!(dest.path().join(".hidden").exists());
        assert!(!dest.path().join("_github_home").exists());

        let empty = tempfile::tempdir().expect("tempdir");
        let cmd = archive_command(&empty.path().to_string_lossy(), &[], None);
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("sh");
        assert!(out.status.success());
        assert!(out.stdout.is_empty());
        let stats = unpack(&out.stdout[..], dest.path(), "", None).expect("empty stream");
        assert_eq!(stats.entries, 0);
    }

    /// Runs the pull's pod-side command here (GNU find and tar, as on the test machines).
    fn pod_archive(dir: &Path, since: Option<&str>, next: &str) -> Vec<String> {
        let changed = ChangedSince {
            mark_dir: "_arc_hook".into(),
            since: since.map(str::to_string),
            next: next.into(),
        };
        let cmd = archive_command(
            &dir.to_string_lossy(),
            &["_github_home", "_arc_hook"],
            Some(&changed),
        );
        let out = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut names: Vec<String> = tar::Archive::new(&out.stdout[..])
            .entries()
            .expect("tar")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("name")
                    .display()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_incremental_pull_sends_what_changed_since_the_accepted_mark() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path();
        for dir in ["a", "b", "_arc_hook", "_github_home"] {
            fs::create_dir_all(p.join(dir)).expect("mkdir");
        }
        fs::write(p.join("a/old.txt"), b"1").expect("write");
        fs::write(p.join("b/keep.txt"), b"1").expect("write");
        // Older than the mark's 50 ms of slack (what is younger comes back twice).
        std::thread::sleep(Duration::from_millis(120));
        let full = pod_archive(p, None, "1");
        assert!(full.contains(&"a/old.txt".to_string()), "{full:?}");
        assert!(p.join("_arc_hook/pull-1").is_file(), "the mark is left");
        // A new file, a rename (its mtime kept), a chmod; nothing under the excluded names.
        fs::write(p.join("a/new.txt"), b"2").expect("write");
        fs::rename(p.join("a/old.txt"), p.join("moved.txt")).expect("mv");
        fs::set_permissions(p.join("b/keep.txt"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        fs::write(p.join("_github_home/cache"), b"x").expect("write");
        assert_eq!(
            pod_archive(p, Some("1"), "2"),
            ["./a/", "./a/new.txt", "./b/keep.txt", "./moved.txt"]
        );
        // Not accepted (the runner kept mark 1): the same again, and mark 1 is kept for it.
        std::thread::sleep(Duration::from_millis(120));
        assert!(pod_archive(p, Some("1"), "3").contains(&"./a/new.txt".to_string()));
        assert!(p.join("_arc_hook/pull-1").is_file());
        assert!(
            !p.join("_arc_hook/pull-2").exists(),
            "marks no pull can use are removed"
        );
        // Accepted: nothing changed since.
        assert_eq!(pod_archive(p, Some("3"), "4"), Vec::<String>::new());
        // An unknown mark (the step removed it, or a new pod): everything.
        assert!(pod_archive(p, Some("9"), "5").contains(&"b/keep.txt".to_string()));
    }

    #[test]
    fn pushed_archive_extracts_with_system_tar() {
        let src = tree();
        let sources = [Source {
            local: src.path().join("repo"),
            name: "repo".into(),
        }];
        let (buf, _, _) = archive(&sources, &PushOptions::default());
        let dest = tempfile::tempdir().expect("tempdir");
        let cmd = extract_command(&dest.path().to_string_lossy());
        let mut child = std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("tar");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&buf)
            .expect("feed");
        assert!(child.wait().expect("tar").success());
        assert_eq!(
            fs::metadata(dest.path().join("repo/src/main.sh"))
                .expect("x")
                .mode()
                & 0o777,
            0o755
        );
        assert!(dest.path().join("repo/empty").is_dir());
    }
}
