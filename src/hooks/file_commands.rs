//! Claim mode: the step's file commands are delivered by the hook into the runner's `_temp/_runner_file_commands`, which no process of the job can reach.
//!
//! The runner reads `set_output_<id>`, `set_env_<id>`, `add_path_<id>`, `save_state_<id>` and
//! `step_summary_<id>` after every step, with its own rights. A step may leave processes running,
//! so a check of those files (however careful) is followed by a window in which such a process
//! swaps a link in. Instead the job never sees the runner's directory: every container the hook
//! creates has the job's own directory mounted where the runner's would be
//! (`objects::pod::guard_runner_reads`). Before a step the hook copies the runner's fresh files
//! into the job's; after it, it reads each back from the job's directory — opened relative to a
//! directory descriptor, `O_NOFOLLOW`, regular files only, bounded — and writes the content into
//! the runner's file by a new file renamed over it. What the runner reads was written by the
//! hook, in a directory the job cannot name.

use std::collections::HashSet;
use std::path::Path;

use super::shared_work::{ReadRefusal, SharedDir, SharedWorkError};

/// The runner's directory under `_temp`.
pub(crate) const RUNNER_DIR: &str = "_runner_file_commands";
/// The job's directory under `_temp` (`objects::pod::JOB_FILE_COMMANDS`).
pub(crate) const JOB_DIR: &str = "_arc_hook_file_commands";
/// The most one step's file commands may hold together; more fails the step, naming the file.
pub(crate) const MAX_BYTES: u64 = 64 << 20;

/// prepare_job (claim mode): the job's directory, before the pod mounts it. World-writable:
/// the job's user may be any user the template or `--user` picks, and only this job's pods
/// mount the volume.
pub(crate) fn create_job_dir(temp: &Path) -> Result<(), SharedWorkError> {
    let dir = SharedDir::open(temp)?.child_dir(JOB_DIR)?;
    dir.set_mode(0o777)
}

/// prepare_job (claim mode): the directories a job writes — `_temp` (sticky, as `/tmp`), its
/// HOME `_temp/_github_home`, the workspace and `_tool` — writable by any user, so a job whose
/// container runs as another user than the runner (`runAsUser` in the template, `--user`)
/// works as a root one does. Missing ones are left to the runner; links are refused, never
/// followed. Only this runner's pods mount the volume.
pub(crate) fn open_for_job_users(
    work: &Path,
    workspace: Option<&str>,
) -> Result<(), SharedWorkError> {
    let work = SharedDir::open(work)?;
    let temp = work.child_dir_existing("_temp")?;
    temp.set_mode(0o1777)?;
    if let Ok(home) = temp.child_dir_existing("_github_home") {
        home.set_mode(0o777)?;
    }
    if let Ok(tool) = work.child_dir_existing("_tool") {
        tool.set_mode(0o777)?;
    }
    if let Some(repo) = workspace {
        // `_work/<repo>/<repo>`: both levels (actions create siblings of the checkout).
        if let Ok(outer) = work.child_dir_existing(repo) {
            outer.set_mode(0o777)?;
            if let Ok(inner) = outer.child_dir_existing(repo) {
                inner.set_mode(0o777)?;
            }
        }
    }
    Ok(())
}

/// Before a step: the job's directory holds exactly the runner's current files (the names the
/// step's `GITHUB_*` variables give), as the runner made them. Entries of earlier steps go.
pub(crate) fn before_step(temp: &Path) -> Result<(), SharedWorkError> {
    let temp = SharedDir::open(temp)?;
    let runner = match temp.child_dir_existing(RUNNER_DIR) {
        Ok(d) => d,
        Err(SharedWorkError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let job = temp.child_dir(JOB_DIR)?;
    let names: HashSet<String> = runner.names()?.into_iter().collect();
    for stale in job.names()?.into_iter().filter(|n| !names.contains(n)) {
        // A directory a step made there is left alone: the runner never reads it.
        let _ = job.remove_file(&stale);
    }
    for name in &names {
        // A runner file that is not regular is the check's to report after the step.
        if let Ok(Some(read)) = runner.read_regular(name, MAX_BYTES) {
            job.replace_file(name, 0o666, &read.data)?;
        }
    }
    Ok(())
}

/// [`before_step`] as part of a step: a failure (the job's own processes may be removing what
/// the hook writes into its directory) is told, and the step still runs: what it writes comes
/// back through [`after_step`]'s checks either way.
pub(crate) fn prepare_for_step(temp: &Path) {
    if let Err(e) = before_step(temp) {
        crate::joblog::warning(format_args!(
            "could not copy the runner's file commands into the job's directory ({e}); the step runs without them"
        ));
    }
}

/// After a step (also a failed one): each of the runner's files gets the content the step left
/// in the job's file of the same name. Returns how many changed, or what was refused (the
/// runner's file then keeps what it had).
pub(crate) fn after_step(temp: &Path) -> Result<usize, Vec<String>> {
    let one = |e: SharedWorkError| vec![e.to_string()];
    let temp = SharedDir::open(temp).map_err(one)?;
    let (runner, job) = match (
        temp.child_dir_existing(RUNNER_DIR),
        temp.child_dir_existing(JOB_DIR),
    ) {
        (Ok(r), Ok(j)) => (r, j),
        // No file commands this step (a runner that made none, or a job prepared before them).
        _ => return Ok(0),
    };
    let mut refused = Vec::new();
    let mut budget = MAX_BYTES;
    let mut delivered = 0;
    let mut names = runner.names().map_err(one)?;
    names.sort();
    for name in names {
        let Ok(Some(current)) = runner.read_regular(&name, MAX_BYTES) else {
            continue;
        };
        match job.read_regular(&name, budget) {
            Ok(None) => {}
            Ok(Some(read)) => {
                budget -= read.data.len() as u64;
                if read.data != current.data {
                    match runner.replace_file(&name, current.mode, &read.data) {
                        Ok(()) => delivered += 1,
                        Err(e) => refused.push(e.to_string()),
                    }
                }
            }
            Err(ReadRefusal::TooLarge { .. }) => refused.push(format!(
                "the step's file command {name} is larger than the {} MiB all of a step's file commands may hold; not delivered",
                MAX_BYTES >> 20
            )),
            Err(ReadRefusal::NotRegular { kind }) => refused.push(format!(
                "the step's file command {name} is a {kind}, not a regular file; not delivered (the runner reads only what the hook writes)"
            )),
            Err(ReadRefusal::Io(e)) => refused.push(e.to_string()),
        }
    }
    if refused.is_empty() {
        Ok(delivered)
    } else {
        Err(refused)
    }
}

/// [`after_step`] as the step's result: refusals are named and fail a step that passed.
pub(crate) fn deliver(temp: &Path, code: i32) -> i32 {
    match after_step(temp) {
        Ok(n) => {
            tracing::debug!(delivered = n, "file commands delivered to the runner");
            code
        }
        Err(refused) => {
            for r in &refused {
                crate::joblog::refused(r);
            }
            if code != 0 { code } else { 1 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn temp_with_runner_files(names: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(t.path().join(RUNNER_DIR)).expect("runner dir");
        for n in names {
            std::fs::write(t.path().join(RUNNER_DIR).join(n), b"").expect("runner file");
        }
        create_job_dir(t.path()).expect("job dir");
        t
    }

    #[test]
    fn the_runners_files_reach_the_job_and_the_steps_content_comes_back() {
        let t = temp_with_runner_files(&["set_output_1", "set_env_1"]);
        std::fs::write(t.path().join(JOB_DIR).join("set_output_0"), b"old").expect("stale");
        before_step(t.path()).expect("before");
        let mut names: Vec<_> = std::fs::read_dir(t.path().join(JOB_DIR))
            .expect("ls")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        names.sort();
        assert_eq!(names, ["set_env_1", "set_output_1"]);
        std::fs::write(t.path().join(JOB_DIR).join("set_output_1"), b"a=1\n").expect("write");
        assert_eq!(after_step(t.path()), Ok(1));
        assert_eq!(
            std::fs::read(t.path().join(RUNNER_DIR).join("set_output_1")).expect("read"),
            b"a=1\n"
        );
        assert_eq!(
            std::fs::read(t.path().join(RUNNER_DIR).join("set_env_1")).expect("read"),
            b""
        );
    }

    #[test]
    fn a_link_in_the_jobs_directory_is_never_followed_nor_copied() {
        let t = temp_with_runner_files(&["set_output_1"]);
        let secret = tempfile::NamedTempFile::new().expect("secret");
        std::fs::write(secret.path(), b"runner-token-123").expect("secret");
        before_step(t.path()).expect("before");
        let job_file = t.path().join(JOB_DIR).join("set_output_1");
        std::fs::remove_file(&job_file).expect("rm");
        symlink(secret.path(), &job_file).expect("plant");
        let refused = after_step(t.path()).expect_err("refused");
        assert!(
            refused[0].contains("set_output_1 is a symbolic link"),
            "{refused:?}"
        );
        let runner_file = t.path().join(RUNNER_DIR).join("set_output_1");
        assert!(
            !runner_file
                .symlink_metadata()
                .expect("stat")
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&runner_file).expect("read"), b"");
        assert_eq!(deliver(t.path(), 0), 1, "a passed step fails");
        assert_eq!(deliver(t.path(), 3), 3, "a failed step keeps its code");
    }

    #[test]
    fn pipes_and_oversized_files_are_refused_without_blocking() {
        let t = temp_with_runner_files(&["set_output_1", "step_summary_1"]);
        before_step(t.path()).expect("before");
        let fifo = t.path().join(JOB_DIR).join("set_output_1");
        std::fs::remove_file(&fifo).expect("rm");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .expect("fifo");
        let big =
            std::fs::File::create(t.path().join(JOB_DIR).join("step_summary_1")).expect("big");
        big.set_len(MAX_BYTES + 1).expect("sparse");
        let refused = after_step(t.path()).expect_err("refused");
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused
                .iter()
                .any(|r| r.contains("set_output_1 is a named pipe"))
        );
        assert!(
            refused
                .iter()
                .any(|r| r.contains("step_summary_1 is larger than"))
        );
    }

    #[test]
    fn nothing_to_deliver_without_the_directories() {
        let t = tempfile::tempdir().expect("tempdir");
        assert_eq!(after_step(t.path()), Ok(0));
        before_step(t.path()).expect("no runner directory: nothing to do");
    }
}
