//! The replayed runner's home: `_work` laid out from the job's `work/`, `externals/`, the hook wrapper, and where container paths land in it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::WRAPPER;
use super::job::{RecordedJob, first_workspace};
use crate::file_tree::sync_tree;

/// The workspace (`<repo>/<repo>` under `_work`) when no input names one.
const DEFAULT_WORKSPACE: &str = "repo/repo";

/// The runner's home, laid out; a temporary one is removed when this is dropped.
pub(crate) struct RunnerHome {
    scratch: Scratch,
    /// `_work`: the runner's work directory (the work claim's contents).
    pub work: PathBuf,
    /// `_work/<repo>/<repo>`: the workspace.
    pub workspace: PathBuf,
    /// The wrapper the runner calls (`arc-hook.sh`).
    pub wrapper: PathBuf,
    /// The hook binary the wrapper runs.
    pub hook_binary: PathBuf,
}

enum Scratch {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl RunnerHome {
    /// Lays the home out in `workdir` (kept), or in a temporary directory: `_work` from the job's
    /// `work/`, `_work/_temp/_runner_file_commands`, the workspace, `externals/` and the wrapper.
    /// `hook_binary` defaults to this executable.
    pub(crate) fn lay_out(
        job_dir: &Path,
        job: &RecordedJob,
        workdir: Option<&Path>,
        hook_binary: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let scratch = match workdir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                Scratch::Kept(d.to_path_buf())
            }
            None => Scratch::Temp(
                tempfile::Builder::new()
                    .prefix("arc-hook-replay-")
                    .tempdir()
                    .context("cannot create a temporary directory for the runner's home")?,
            ),
        };
        let home = scratch.path().to_path_buf();
        let work = home.join("_work");
        std::fs::create_dir_all(work.join("_temp/_runner_file_commands"))
            .context("laying out the runner's _work")?;
        if job_dir.join("work").is_dir() {
            // A job directory may share another's work/ through a link (fixtures/jobs/under-faults).
            let source = std::fs::canonicalize(job_dir.join("work"))
                .context("reading the job directory's work/")?;
            sync_tree(&source, &work).context("laying out the runner's _work")?;
        }
        if job_dir.join("externals").is_dir() {
            sync_tree(&job_dir.join("externals"), &home.join("externals"))
                .context("laying out the runner's externals")?;
        } else {
            std::fs::create_dir_all(home.join("externals"))
                .context("laying out the runner's externals")?;
        }
        let wrapper = home.join("arc-hook.sh");
        std::fs::write(&wrapper, WRAPPER).context("writing the hook wrapper")?;
        let hook_binary = match hook_binary {
            Some(b) => {
                std::fs::canonicalize(b).with_context(|| format!("hook binary {}", b.display()))?
            }
            None => std::env::current_exe().context("locating the arc-hook binary")?,
        };
        let workspace = work
            .join(first_workspace(&job.commands).unwrap_or_else(|| DEFAULT_WORKSPACE.to_string()));
        std::fs::create_dir_all(&workspace).context("creating the workspace")?;
        Ok(RunnerHome {
            scratch,
            work,
            workspace,
            wrapper,
            hook_binary,
        })
    }

    /// The home directory (`_work`'s parent).
    pub(crate) fn path(&self) -> &Path {
        self.scratch.path()
    }

    /// Gives the workspace tree to `uid:gid`, as the job's checkout step, running as that user
    /// in the job container, would have left it: the job directory's `work/` stands for what
    /// that step made, and replay lays it out as itself. Links are changed, never followed.
    /// `Ok(false)` when this process cannot (it is not root): the tree is left as it is.
    pub(crate) fn give_workspace_to(&self, uid: u32, gid: u32) -> anyhow::Result<bool> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(false);
        }
        chown_tree(&self.workspace, uid, gid).with_context(|| {
            format!(
                "giving the workspace {} to the job's user {uid}:{gid}",
                self.workspace.display()
            )
        })?;
        Ok(true)
    }
}

/// `lchown` of `dir` and everything below it; a link is changed itself and never entered.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        if std::fs::symlink_metadata(&path)?.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

impl Scratch {
    fn path(&self) -> &Path {
        match self {
            Scratch::Temp(t) => t.path(),
            Scratch::Kept(p) => p,
        }
    }
}

/// Where a step's file-command file (as its input names it) is on the runner: under `/__w` in a
/// job container, or `/github/file_commands` in a container step's own mounts.
pub(crate) fn file_command_path(work: &Path, container_path: &str) -> Option<PathBuf> {
    if let Some(rest) = container_path.strip_prefix("/__w/") {
        return Some(work.join(rest));
    }
    container_path
        .strip_prefix("/github/file_commands/")
        .map(|rest| work.join("_temp/_runner_file_commands").join(rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_workspace_is_given_away_without_following_links() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test changes owners: run it as root"
        );
        let outside = tempfile::NamedTempFile::new().expect("outside file");
        let dir = tempfile::tempdir().expect("dir");
        let ws = dir.path().join("ws");
        std::fs::create_dir_all(ws.join("src/deep")).expect("dirs");
        std::fs::write(ws.join("src/deep/f.py"), b"x").expect("file");
        std::os::unix::fs::symlink(outside.path(), ws.join("src/out")).expect("link");
        chown_tree(&ws, 4321, 4322).expect("chown");
        for p in ["", "src", "src/deep", "src/deep/f.py", "src/out"] {
            let m = std::fs::symlink_metadata(ws.join(p)).expect("stat");
            assert_eq!((m.uid(), m.gid()), (4321, 4322), "{p}");
        }
        let m = std::fs::metadata(outside.path()).expect("stat outside");
        assert_eq!(
            m.uid(),
            nix::unistd::geteuid().as_raw(),
            "the link's target is untouched"
        );
    }

    #[test]
    fn file_commands_map_into_work() {
        let work = Path::new("/home/runner/_work");
        assert_eq!(
            file_command_path(work, "/__w/_temp/_runner_file_commands/set_output_1"),
            Some(work.join("_temp/_runner_file_commands/set_output_1"))
        );
        assert_eq!(
            file_command_path(work, "/github/file_commands/set_env_2"),
            Some(work.join("_temp/_runner_file_commands/set_env_2"))
        );
        assert_eq!(file_command_path(work, "/tmp/elsewhere"), None);
    }
}
