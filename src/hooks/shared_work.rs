//! Files the hook writes under the runner's `_work`, which the job shares: every directory is opened relative to its parent's descriptor, never through a link the job could have planted.
//!
//! In claim mode the job pod mounts the runner's `_work` read-write, and a step may leave
//! background processes behind, so any name under `_work` can change into a symbolic link at any
//! moment, also between a check and a use. Paths are therefore never re-resolved: a directory is
//! opened once with `O_NOFOLLOW | O_DIRECTORY`, and everything inside it is created, opened,
//! changed and removed through that descriptor (`*at` calls with `O_NOFOLLOW` /
//! `AT_SYMLINK_NOFOLLOW`).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

/// Why the hook refused or failed to touch something under `_work`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SharedWorkError {
    #[error(
        "{path} is a symbolic link, where the runner keeps a real directory or file (planted by a step?); arc-hook does not follow it"
    )]
    PlantedLink { path: PathBuf },
    #[error("{path} is not a {expected}")]
    WrongKind {
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0:?} is not a single file name")]
    NotAName(String),
}

/// A directory under `_work`, held open: names inside it are resolved relative to it.
#[derive(Debug)]
pub(crate) struct SharedDir {
    fd: OwnedFd,
    path: PathBuf,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> SharedWorkError {
    let path = path.to_path_buf();
    move |e| SharedWorkError::Io {
        what,
        path,
        source: e.into(),
    }
}

/// A name with no `/`, not `.` or `..`.
fn single_name(name: &str) -> Result<&str, SharedWorkError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(SharedWorkError::NotAName(name.to_string()));
    }
    Ok(name)
}

const DIR_FLAGS: OFlags = OFlags::DIRECTORY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::RDONLY);

impl SharedDir {
    /// Opens `path`, refusing it if its last component is a link. (The components above it are
    /// the runner's own: `_work` is the runner's volume mount, which a job cannot replace.)
    pub(crate) fn open(path: &Path) -> Result<Self, SharedWorkError> {
        let fd = rustix::fs::openat(CWD, path, DIR_FLAGS, Mode::empty())
            .map_err(|e| classify(e, path, "directory"))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `name` inside this one, creating it if missing; a link or a
    /// non-directory there is refused.
    pub(crate) fn child_dir(&self, name: &str) -> Result<SharedDir, SharedWorkError> {
        let name = single_name(name)?;
        let path = self.path.join(name);
        match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(io("creating", &path)(e)),
        }
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| classify(e, &path, "directory"))?;
        Ok(SharedDir { fd, path })
    }

    /// Sets this directory's mode through its descriptor (never through a path).
    pub(crate) fn set_mode(&self, mode: u32) -> Result<(), SharedWorkError> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode)).map_err(io("chmod", &self.path))
    }

    /// Creates the new file `name` (never an existing one, never through a link) with `data`.
    pub(crate) fn create_file(
        &self,
        name: &str,
        mode: u32,
        data: &[u8],
    ) -> Result<(), SharedWorkError> {
        let name = single_name(name)?;
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(io("creating", &path))?;
        let mut file = std::fs::File::from(fd);
        std::io::Write::write_all(&mut file, data).map_err(|source| SharedWorkError::Io {
            what: "writing",
            path: path.clone(),
            source,
        })
    }

    /// Removes the entry `name` if it is not a directory (a link is removed, never followed).
    pub(crate) fn remove_file(&self, name: &str) -> Result<(), SharedWorkError> {
        let name = single_name(name)?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io("removing", &self.path.join(name))(e)),
        }
    }

    /// What `name` is, without following a link; `None` when it does not exist.
    pub(crate) fn kind(&self, name: &str) -> Result<Option<FileType>, SharedWorkError> {
        let name = single_name(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(io("reading", &self.path.join(name))(e)),
        }
    }

    /// The names in this directory (without `.` and `..`).
    pub(crate) fn names(&self) -> Result<Vec<String>, SharedWorkError> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd).map_err(io("listing", &self.path))?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(io("listing", &self.path))?;
            let name = entry.file_name().to_string_lossy().to_string();
            if name != "." && name != ".." {
                out.push(name);
            }
        }
        Ok(out)
    }
}

/// `ELOOP`/`ENOTDIR` from an `O_NOFOLLOW | O_DIRECTORY` open: a planted link or a wrong kind.
fn classify(e: rustix::io::Errno, path: &Path, expected: &'static str) -> SharedWorkError {
    match e {
        rustix::io::Errno::LOOP => SharedWorkError::PlantedLink {
            path: path.to_path_buf(),
        },
        rustix::io::Errno::NOTDIR => {
            // O_NOFOLLOW on a link to a file also answers ENOTDIR: tell the two apart.
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => SharedWorkError::PlantedLink {
                    path: path.to_path_buf(),
                },
                _ => SharedWorkError::WrongKind {
                    path: path.to_path_buf(),
                    expected,
                },
            }
        }
        other => io("opening", path)(other),
    }
}

/// The runner's own directories under `_temp` that a step must leave as the runner made them.
pub(crate) const RUNNER_DIRS: [&str; 4] = [
    "_runner_file_commands",
    "_github_home",
    "_github_workflow",
    super::job_state::SCRIPT_DIR,
];

/// After a step: checks that the runner-owned paths under `_temp` are still real directories
/// and that the file-command directory holds only regular files, so the runner — which reads
/// those files next, with its own rights — never follows a link a step planted (e.g. its
/// `GITHUB_OUTPUT` pointed at the runner's credentials). What is planted is removed and named.
pub(crate) fn check_runner_paths(temp: &Path) -> Result<(), Vec<String>> {
    let temp = match SharedDir::open(temp) {
        Ok(t) => t,
        Err(e) => return Err(vec![e.to_string()]),
    };
    let mut planted = Vec::new();
    for name in RUNNER_DIRS {
        match temp.kind(name) {
            Ok(Some(FileType::Directory) | None) => {}
            Ok(Some(kind)) => {
                let path = temp.path().join(name);
                // A link or file in a directory's place: remove it so the runner recreates the
                // directory instead of writing through the link.
                let removed = temp.remove_file(name).is_ok();
                planted.push(format!(
                    "{} is a {} where the runner keeps a directory{}",
                    path.display(),
                    kind_name(kind),
                    if removed { " (removed)" } else { "" }
                ));
            }
            Err(e) => planted.push(e.to_string()),
        }
    }
    if let Ok(commands) = temp.child_dir_existing("_runner_file_commands") {
        match commands.names() {
            Ok(names) => {
                for name in names {
                    match commands.kind(&name) {
                        Ok(Some(FileType::RegularFile) | None) => {}
                        Ok(Some(kind)) => {
                            let removed =
                                kind != FileType::Directory && commands.remove_file(&name).is_ok();
                            planted.push(format!(
                                "{} is a {} where the runner reads a file command{}",
                                commands.path().join(&name).display(),
                                kind_name(kind),
                                if removed { " (removed)" } else { "" }
                            ));
                        }
                        Err(e) => planted.push(e.to_string()),
                    }
                }
            }
            Err(e) => planted.push(e.to_string()),
        }
    }
    if planted.is_empty() {
        Ok(())
    } else {
        Err(planted)
    }
}

impl SharedDir {
    /// Opens an existing directory `name` inside this one (no creation), refusing a link.
    pub(crate) fn child_dir_existing(&self, name: &str) -> Result<SharedDir, SharedWorkError> {
        let name = single_name(name)?;
        let path = self.path.join(name);
        let fd = rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| classify(e, &path, "directory"))?;
        Ok(SharedDir { fd, path })
    }
}

/// Why [`SharedDir::read_regular`] did not read a file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadRefusal {
    #[error("it is a {kind}, not a regular file")]
    NotRegular { kind: &'static str },
    #[error("it is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Io(SharedWorkError),
}

/// A regular file's content and permission bits.
#[derive(Debug)]
pub(crate) struct RegularFile {
    pub data: Vec<u8>,
    pub mode: u32,
}

impl SharedDir {
    /// Reads the regular file `name` (at most `limit` bytes), never through a link and without
    /// blocking on a pipe; `None` when it does not exist.
    pub(crate) fn read_regular(
        &self,
        name: &str,
        limit: u64,
    ) -> Result<Option<RegularFile>, ReadRefusal> {
        let name = single_name(name).map_err(ReadRefusal::Io)?;
        let path = self.path.join(name);
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => {
                return Err(ReadRefusal::NotRegular {
                    kind: "symbolic link",
                });
            }
            Err(e) => return Err(ReadRefusal::Io(io("opening", &path)(e))),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| ReadRefusal::Io(io("reading", &path)(e)))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(ReadRefusal::NotRegular {
                kind: kind_name(kind),
            });
        }
        if st.st_size as u64 > limit {
            return Err(ReadRefusal::TooLarge { limit });
        }
        let mut data = Vec::with_capacity(st.st_size as usize);
        let file = std::fs::File::from(fd);
        // The size may grow while it is read: never more than the limit.
        std::io::Read::read_to_end(&mut std::io::Read::take(file, limit + 1), &mut data).map_err(
            |source| {
                ReadRefusal::Io(SharedWorkError::Io {
                    what: "reading",
                    path: path.clone(),
                    source,
                })
            },
        )?;
        if data.len() as u64 > limit {
            return Err(ReadRefusal::TooLarge { limit });
        }
        Ok(Some(RegularFile {
            data,
            mode: st.st_mode & 0o7777,
        }))
    }

    /// Replaces `name` with a new regular file holding `data`: written under a fresh name, then
    /// renamed over it, so whatever was at `name` (a link too) is replaced, never followed.
    pub(crate) fn replace_file(
        &self,
        name: &str,
        mode: u32,
        data: &[u8],
    ) -> Result<(), SharedWorkError> {
        let name = single_name(name)?;
        let tmp = format!(".{name}.arc-hook-{}", std::process::id());
        let _ = self.remove_file(&tmp);
        self.create_file(&tmp, mode, data)?;
        // The mode asked for, whatever the umask made of it.
        if let Ok(fd) = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode));
        }
        rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(|e| {
            let _ = self.remove_file(&tmp);
            io("replacing", &self.path.join(name))(e)
        })
    }
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Directory => "directory",
        FileType::RegularFile => "file",
        FileType::Unknown => "special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn a_planted_link_is_never_followed() {
        let temp = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("outside");
        symlink(outside.path(), temp.path().join("_arc_hook")).expect("plant");
        let t = SharedDir::open(temp.path()).expect("open");
        let e = t.child_dir("_arc_hook").expect_err("refused");
        assert!(matches!(e, SharedWorkError::PlantedLink { .. }), "{e}");
        assert!(
            e.to_string().contains("_arc_hook is a symbolic link"),
            "{e}"
        );
        // Nothing was written or chmod-ed outside.
        assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
        let mode = std::fs::metadata(outside.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_ne!(mode & 0o7777, 0o1777);
    }

    #[test]
    fn files_are_created_fresh_and_removed_without_following() {
        let temp = tempfile::tempdir().expect("tempdir");
        let t = SharedDir::open(temp.path()).expect("open");
        let d = t.child_dir("_arc_hook").expect("created");
        d.set_mode(0o1777).expect("chmod");
        d.create_file("step.sh", 0o644, b"echo hi\n")
            .expect("written");
        assert!(
            d.create_file("step.sh", 0o644, b"x").is_err(),
            "never overwritten"
        );
        let victim = temp.path().join("victim");
        std::fs::write(&victim, b"runner's").expect("victim");
        symlink(&victim, temp.path().join("_arc_hook/link.sh")).expect("plant");
        assert!(
            d.create_file("link.sh", 0o644, b"evil").is_err(),
            "never written through a link"
        );
        d.remove_file("link.sh").expect("link removed");
        assert_eq!(std::fs::read(&victim).expect("victim"), b"runner's");
        assert!(single_name("../x").is_err() && single_name("a/b").is_err());
    }

    #[test]
    fn runner_paths_with_planted_links_are_named_and_removed() {
        let temp = tempfile::tempdir().expect("tempdir");
        let secret = temp.path().join("credentials");
        std::fs::write(&secret, b"token").expect("secret");
        std::fs::create_dir(temp.path().join("_runner_file_commands")).expect("dir");
        std::fs::write(temp.path().join("_runner_file_commands/set_env_1"), b"").expect("file");
        symlink(
            &secret,
            temp.path().join("_runner_file_commands/set_output_1"),
        )
        .expect("plant");
        symlink("/etc", temp.path().join("_github_workflow")).expect("plant");
        assert_eq!(
            check_runner_paths(temp.path()),
            Err(vec![
                format!(
                    "{} is a symbolic link where the runner keeps a directory (removed)",
                    temp.path().join("_github_workflow").display()
                ),
                format!(
                    "{} is a symbolic link where the runner reads a file command (removed)",
                    temp.path()
                        .join("_runner_file_commands/set_output_1")
                        .display()
                ),
            ])
        );
        assert!(!temp.path().join("_github_workflow").exists());
        assert!(
            temp.path()
                .join("_runner_file_commands/set_env_1")
                .is_file()
        );
        assert_eq!(std::fs::read(&secret).expect("kept"), b"token");
        assert_eq!(check_runner_paths(temp.path()), Ok(()), "clean afterwards");
    }
}
