//! The recorded job a replay plays: its runner inputs in order, the hook's `env` file and the simulator's `sim.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::Value;

use super::SimSettings;

/// A job directory, read.
#[derive(Debug, Clone)]
pub(crate) struct RecordedJob {
    /// The runner inputs, in the order the runner sent them.
    pub commands: Vec<PathBuf>,
    /// `env`: `KEY=VALUE` lines for the hook, `${JOB_DIR}` expanded.
    pub env: Vec<(String, String)>,
    /// `sim.json`, or the defaults.
    pub sim_settings: SimSettings,
}

impl RecordedJob {
    /// Reads the job directory `dir`.
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read job directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()));
        let commands = command_files(entries);
        if commands.is_empty() {
            bail!("{}: no runner inputs (*.json) found", dir.display());
        }
        let env = read_env_file(dir)?;
        let sim_settings = match std::fs::read_to_string(dir.join("sim.json")) {
            Ok(t) => SimSettings::from_json(&t).context("sim.json")?,
            Err(_) => SimSettings::default(),
        };
        Ok(RecordedJob {
            commands,
            env,
            sim_settings,
        })
    }
}

/// The runner inputs among a job directory's files, in the order they run: every `*.json` but
/// `sim.json`, sorted by name (`01-prepare_job.json`, `02-...`).
pub(crate) fn command_files(paths: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = paths
        .into_iter()
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n != "sim.json")
        })
        .collect();
    files.sort();
    files
}

fn read_env_file(job_dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let path = job_dir.join("env");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let dir = std::fs::canonicalize(job_dir)
        .with_context(|| format!("cannot resolve job directory {}", job_dir.display()))?;
    parse_env_file(&text, &dir.to_string_lossy()).with_context(|| path.display().to_string())
}

/// A line of the `env` file that is not `KEY=VALUE`.
#[derive(Debug, thiserror::Error)]
#[error("expected KEY=VALUE, got {line:?}")]
pub(crate) struct EnvLineError {
    pub line: String,
}

/// Parses the `env` file: `KEY=VALUE` lines (blank lines and `#` comments skipped), both sides
/// trimmed, `${JOB_DIR}` replaced by `job_dir`.
pub(crate) fn parse_env_file(
    text: &str,
    job_dir: &str,
) -> Result<Vec<(String, String)>, EnvLineError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').ok_or_else(|| EnvLineError {
                line: l.to_string(),
            })?;
            Ok((
                k.trim().to_string(),
                v.trim().replace("${JOB_DIR}", job_dir),
            ))
        })
        .collect()
}

/// What a command file may say beyond the runner's input, for the replay only (taken out of the
/// input before the hook sees it).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ReplayOnly {
    /// `"cancelAfterSeconds": N`: the runner cancels the command N seconds after it started,
    /// with the runner's signal sequence (SIGINT, SIGTERM 7.5 s later, SIGKILL 2.5 s after).
    pub cancel_after: Option<std::time::Duration>,
    /// `"always": true`: the command runs even after a failure or a cancel, as the runner's
    /// post steps and `if: always()` steps do.
    pub always: bool,
}

/// A replay-only field with a value of the wrong kind.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReplayFieldError {
    #[error("cancelAfterSeconds: expected a number of seconds from 0 to 3600, got {0}")]
    CancelAfter(Value),
    #[error("always: expected true or false, got {0}")]
    Always(Value),
}

/// Takes the replay-only fields out of a command file's `input`.
pub(crate) fn take_replay_only(input: &mut Value) -> Result<ReplayOnly, ReplayFieldError> {
    let Some(fields) = input.as_object_mut() else {
        return Ok(ReplayOnly::default());
    };
    let cancel_after = match fields.remove("cancelAfterSeconds") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64() {
            Some(n) if (0.0..=3600.0).contains(&n) => Some(std::time::Duration::from_secs_f64(n)),
            _ => return Err(ReplayFieldError::CancelAfter(v)),
        },
    };
    let always = match fields.remove("always") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(v) => return Err(ReplayFieldError::Always(v)),
    };
    Ok(ReplayOnly {
        cancel_after,
        always,
    })
}

/// Where the runner keeps the workspace, `<repo>/<repo>` under `_work`: from the first input
/// whose working directory is `/__w/<repo>/<repo>` (reading stops at the first unreadable input).
pub(crate) fn first_workspace(commands: &[PathBuf]) -> Option<String> {
    commands
        .iter()
        .map_while(|f| {
            let text = std::fs::read_to_string(f).ok()?;
            serde_json::from_str::<Value>(&text).ok()
        })
        .find_map(|input| workspace_of(&input))
}

/// The workspace (`<repo>/<repo>`) one runner input names in its (container's) working directory.
pub(crate) fn workspace_of(input: &Value) -> Option<String> {
    let wd = input["args"]["container"]["workingDirectory"]
        .as_str()
        .or(input["args"]["workingDirectory"].as_str())?;
    let rest = wd.strip_prefix("/__w/")?;
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    (parts.len() >= 2 && !parts[0].starts_with('_')).then(|| format!("{}/{}", parts[0], parts[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inputs_run_in_name_order_without_sim_json() {
        let found = [
            "03-cleanup_job.json",
            "env",
            "sim.json",
            "01-prepare_job.json",
            "02-build.json",
            "work",
            "notes.md",
        ]
        .map(|n| PathBuf::from("/job").join(n));
        assert_eq!(
            command_files(found),
            [
                "01-prepare_job.json",
                "02-build.json",
                "03-cleanup_job.json"
            ]
            .map(|n| PathBuf::from("/job").join(n))
        );
    }

    #[test]
    fn env_file_lines() {
        let env = parse_env_file(
            "# comment\n\n A = 1 \nTEMPLATE=${JOB_DIR}/template.yaml\nEMPTY=\n",
            "/jobs/x",
        )
        .expect("valid");
        assert_eq!(
            env,
            [
                ("A", "1"),
                ("TEMPLATE", "/jobs/x/template.yaml"),
                ("EMPTY", ""),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let e = parse_env_file("A=1\nnot a pair\n", "/j").expect_err("refused");
        assert_eq!(e.to_string(), "expected KEY=VALUE, got \"not a pair\"");
    }

    #[test]
    fn replay_only_fields_are_taken_out_of_the_input() {
        let mut input = json!({"command": "run_script_step", "cancelAfterSeconds": 2.5, "always": true, "args": {}});
        let only = take_replay_only(&mut input).expect("valid");
        assert_eq!(
            only,
            ReplayOnly {
                cancel_after: Some(std::time::Duration::from_millis(2500)),
                always: true
            }
        );
        assert_eq!(input, json!({"command": "run_script_step", "args": {}}));
        let mut plain = json!({"command": "cleanup_job"});
        assert_eq!(
            take_replay_only(&mut plain).expect("valid"),
            ReplayOnly::default()
        );
        for bad in [
            json!({"cancelAfterSeconds": "3"}),
            json!({"cancelAfterSeconds": -1}),
            json!({"always": "yes"}),
        ] {
            let mut bad = bad;
            assert!(take_replay_only(&mut bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_workspace_comes_from_a_working_directory_under_work() {
        let job = json!({"args": {"container": {"workingDirectory": "/__w/arc-demo/arc-demo"}}});
        assert_eq!(workspace_of(&job).as_deref(), Some("arc-demo/arc-demo"));
        let step = json!({"args": {"workingDirectory": "/__w/r/r/sub/dir"}});
        assert_eq!(workspace_of(&step).as_deref(), Some("r/r"));
        for wd in ["/__w/_temp/x", "/__w/only", "/home/runner/r/r"] {
            assert_eq!(
                workspace_of(&json!({"args": {"workingDirectory": wd}})),
                None,
                "{wd}"
            );
        }
        assert_eq!(workspace_of(&json!({"command": "cleanup_job"})), None);
    }
}
