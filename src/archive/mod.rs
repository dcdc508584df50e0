//! Tar archives of runner-side trees: what was sent (stamps, the manifest), writing a tree without following its links, and ([`unpack`]) unpacking what a job pod sent, the untrusted half.
//!
//! With `crate::file_tree` and `crate::hooks::shared_work` this is the hook's no-follow
//! filesystem layer: plain files and tar streams, no Kubernetes; `crate::k8s::copy` carries the
//! streams over exec.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod unpack;

pub use unpack::unpack;
pub(crate) use unpack::{MAX_DEPTH, unpack_bounded};

/// An archive that could not be written or was refused while unpacking.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
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
}

impl ArchiveError {
    /// An archive entry refused, and why (the name as the archive gives it).
    fn refused(entry: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unsafe {
            entry: entry.into(),
            reason: reason.into(),
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Io { what, source }
}

/// A local file or directory to send, and its name in the archive (relative to the pod's destination).
#[derive(Debug, Clone)]
pub struct Source {
    pub local: PathBuf,
    pub name: String,
}

/// What an entry looked like when it was last sent or received, to skip it when unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stamp {
    pub size: u64,
    pub mtime_ns: i128,
    pub mode: u32,
}

impl Stamp {
    pub(crate) fn of(meta: &fs::Metadata) -> Self {
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
    pub(crate) entries: BTreeMap<String, Stamp>,
}

impl Manifest {
    /// Reads a manifest; a missing or unreadable one is empty (everything is sent again).
    pub(crate) fn load(path: &Path) -> Self {
        fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub(crate) fn save(&self, path: &Path) -> Result<(), ArchiveError> {
        let json = serde_json::to_vec(self).map_err(|e| ArchiveError::Io {
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
) -> Result<Stats, ArchiveError> {
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
) -> Result<(), ArchiveError> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, UNIX_EPOCH};

    /// A small tree with modes, an empty directory, a relative and an absolute link.
    pub(crate) fn tree() -> tempfile::TempDir {
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

    /// `sources` as [`write_archive`] writes them, with its stats and record.
    pub(crate) fn archive(sources: &[Source], opts: &PushOptions) -> (Vec<u8>, Stats, Manifest) {
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
}
