//! What a replay tells its caller: the events shown while it runs, each command's outcome, and the summary.

use crate::sim::Injected;

/// Something a replay shows as it happens, in order; the caller decides where it goes
/// (`arc-hook replay` prints it with [`super::print::event`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `--cluster`: the hook runs against the configured cluster.
    UsingCluster(super::target::ClusterInfo),
    /// The hook runs against the embedded simulator at `url` (the default).
    UsingSimulator { url: String },
    /// `--cluster` without `--workdir`: the runner pod names where its home is here
    /// ([`super::target::RUNNER_HOME_ANNOTATION`]); the job is laid out there.
    RunnerHome(std::path::PathBuf),
    /// A command is not run because an earlier one failed.
    Skipped { file: String, command: String },
    /// A command is about to run; the hook's own output follows.
    Started { file: String, command: String },
    /// A command ran.
    Finished {
        file: String,
        command: String,
        exit_code: i32,
        seconds: f64,
    },
    /// The replayed runner cancelled the running command (`cancelAfterSeconds`): it sent the
    /// hook `signal`, `seconds` after the command started.
    Signalled {
        file: String,
        signal: &'static str,
        seconds: f64,
    },
    /// prepare_job's response: the job pod and whether its image is Alpine.
    JobPod { name: String, is_alpine: bool },
    /// The job's container runs as another user: the job's workspace (what its checkout step
    /// made, seeded from the job directory's `work/`) was given to that user.
    WorkspaceOwner { uid: u32, gid: u32 },
    /// What a step wrote to one of its file commands.
    FileCommand(FileCommandNote),
}

/// One thing a step wrote to a file command (`GITHUB_OUTPUT`, `GITHUB_ENV`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCommandNote {
    /// A `name=value` (or `name<<DELIMITER`) entry of GITHUB_OUTPUT, GITHUB_ENV or GITHUB_STATE.
    Entry {
        kind: String,
        name: String,
        value: String,
    },
    /// A file the runner could not parse.
    Unreadable { kind: String, error: String },
    /// A line of GITHUB_PATH, as written.
    PathEntry(String),
    /// A file shown only by its size (GITHUB_STEP_SUMMARY).
    Size { kind: String, bytes: usize },
}

/// One command's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Played {
    pub file: String,
    pub command: String,
    pub exit_code: i32,
    pub seconds: f64,
    pub skipped: bool,
}

/// The result of a replay.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub played: Vec<Played>,
    /// The first failing command's exit code, 0 when all passed.
    pub exit_code: i32,
    /// What the simulator injected (`sim.json` faults); nothing against a cluster.
    pub injected: Injected,
}

impl ReplayReport {
    /// The report of the commands played, in order, and the faults the simulator injected.
    pub(crate) fn summarise(played: Vec<Played>, injected: Injected) -> Self {
        let exit_code = played
            .iter()
            .find(|p| !p.skipped && p.exit_code != 0)
            .map_or(0, |p| p.exit_code);
        ReplayReport {
            played,
            exit_code,
            injected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn played(file: &str, exit_code: i32, skipped: bool) -> Played {
        Played {
            file: file.into(),
            command: "run_script_step".into(),
            exit_code,
            seconds: 0.0,
            skipped,
        }
    }

    #[test]
    fn the_first_failure_is_the_exit_code() {
        let ok = ReplayReport::summarise(
            vec![played("01", 0, false), played("02", 0, false)],
            Injected::default(),
        );
        assert_eq!(ok.exit_code, 0);
        let failed = ReplayReport::summarise(
            vec![
                played("01", 0, false),
                played("02", 3, false),
                played("03", 0, true),
                played("04", 1, false),
            ],
            Injected::default(),
        );
        assert_eq!(failed.exit_code, 3);
        assert_eq!(failed.played.len(), 4);
    }
}
