//! The runner's part between hook commands, as decisions: the runner pod's names, the hook's environment, which commands run after a failure, the state carried from response to input, and what file commands hand to later steps.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::DEFAULT_RUNNER_POD;
use super::filecommands;
use super::report::FileCommandNote;
use crate::protocol::PrepareJobResponse;

/// The runner pod and its work claim, as the replayed runner has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunnerNames {
    pub pod: String,
    pub claim: String,
}

impl RunnerNames {
    /// The pod: the job's `env` file's `ACTIONS_RUNNER_POD_NAME`, else this process's
    /// (`process_pod`), else [`DEFAULT_RUNNER_POD`]. The claim: the `env` file's
    /// `ACTIONS_RUNNER_CLAIM_NAME`, else `<pod>-work` as ARC names it.
    pub(crate) fn choose(job_env: &[(String, String)], process_pod: Option<&str>) -> Self {
        let job = |name: &str| {
            job_env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let pod = job("ACTIONS_RUNNER_POD_NAME")
            .or_else(|| process_pod.map(str::to_string))
            .unwrap_or_else(|| DEFAULT_RUNNER_POD.to_string());
        let claim = job("ACTIONS_RUNNER_CLAIM_NAME").unwrap_or_else(|| format!("{pod}-work"));
        RunnerNames { pod, claim }
    }
}

/// Where the runner's directories are, for the hook's environment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunnerPaths<'a> {
    pub work: &'a Path,
    pub workspace: &'a Path,
    pub hook_binary: &'a Path,
    /// The simulator's kubeconfig; `None` against a configured cluster.
    pub kubeconfig: Option<&'a Path>,
}

/// The environment the runner gives the hook: the runner pod's name, `RUNNER_WORKSPACE`,
/// `GITHUB_WORKSPACE`, `RUNNER_TEMP`, the hook binary for the wrapper, the simulator's
/// kubeconfig; the job's `env` file last, so it wins.
pub(crate) fn hook_env(
    runner_pod: &str,
    paths: RunnerPaths<'_>,
    job_env: &[(String, String)],
) -> BTreeMap<String, String> {
    let text = |p: &Path| p.to_string_lossy().to_string();
    let mut env = BTreeMap::new();
    if let Some(kubeconfig) = paths.kubeconfig {
        env.insert("KUBECONFIG".into(), text(kubeconfig));
    }
    env.insert("ACTIONS_RUNNER_POD_NAME".into(), runner_pod.to_string());
    env.insert(
        "RUNNER_WORKSPACE".into(),
        text(paths.workspace.parent().unwrap_or(paths.work)),
    );
    env.insert("GITHUB_WORKSPACE".into(), text(paths.workspace));
    env.insert("RUNNER_TEMP".into(), text(&paths.work.join("_temp")));
    env.insert("ARC_HOOK_BIN".into(), text(paths.hook_binary));
    for (k, v) in job_env {
        env.insert(k.clone(), v.clone());
    }
    env
}

/// Whether a command runs a step (and so gets file commands and what earlier steps set).
pub(crate) fn is_step(command: &str) -> bool {
    command == "run_script_step" || command == "run_container_step"
}

/// What the runner carries from one command to the next.
#[derive(Debug, Default)]
pub(crate) struct RunnerState {
    /// The state of the last response that had one (none before any).
    state: Option<Value>,
    /// Whether a command failed.
    failed: bool,
    /// What earlier steps set through GITHUB_ENV.
    step_env: BTreeMap<String, String>,
    /// What earlier steps added through GITHUB_PATH, the latest first.
    step_path: Vec<String>,
}

impl RunnerState {
    /// Whether `command` runs: after a failure or a cancel only cleanup_job and the commands
    /// marked `always` (the runner's post steps, `if: always()`) do, as in the runner (also after
    /// a failed prepare_job, with the state it had: none).
    pub(crate) fn runs(&self, command: &str, always: bool) -> bool {
        !self.failed || always || command == "cleanup_job"
    }

    /// The input as the runner sends it: `responseFile` (a fresh, empty file), the state of the
    /// last response that had one (null before any), and for a step what earlier steps set
    /// through GITHUB_ENV and GITHUB_PATH.
    pub(crate) fn input_for(&self, mut input: Value, response_file: &Path) -> Value {
        input["responseFile"] = Value::String(response_file.to_string_lossy().to_string());
        input["state"] = self.state.clone().unwrap_or(Value::Null);
        if is_step(input["command"].as_str().unwrap_or_default()) {
            self.add_step_context(&mut input);
        }
        input
    }

    fn add_step_context(&self, input: &mut Value) {
        let args = &mut input["args"];
        if !args["environmentVariables"].is_object() {
            args["environmentVariables"] = Value::Object(Default::default());
        }
        for (k, v) in &self.step_env {
            args["environmentVariables"][k] = Value::String(v.clone());
        }
        if !self.step_path.is_empty() {
            let mut p: Vec<Value> = self
                .step_path
                .iter()
                .map(|s| Value::String(s.clone()))
                .collect();
            if let Some(existing) = args["prependPath"].as_array() {
                p.extend(existing.iter().cloned());
            }
            args["prependPath"] = Value::Array(p);
        }
    }

    /// Takes a command's exit code and, when it passed, its response file's text. prepare_job's
    /// response must be valid (its state is the job pod), and is returned; any later response
    /// with a state replaces the stored one, as in the runner.
    pub(crate) fn finish(
        &mut self,
        command: &str,
        exit_code: i32,
        response: Option<&str>,
    ) -> anyhow::Result<Option<PrepareJobResponse>> {
        if exit_code != 0 {
            self.failed = true;
            return Ok(None);
        }
        let text = response.unwrap_or_default();
        if command == "prepare_job" {
            let r: PrepareJobResponse = serde_json::from_str(text)
                .with_context(|| format!("prepare_job's response is not valid: {text}"))?;
            self.state =
                Some(serde_json::to_value(&r.state).context("prepare_job's state as JSON")?);
            return Ok(Some(r));
        }
        if let Ok(v) = serde_json::from_str::<Value>(text)
            && let Some(s) = v.get("state").filter(|s| !s.is_null())
        {
            self.state = Some(s.clone());
        }
        Ok(None)
    }

    /// Reads what a step wrote to a file command of `kind`: GITHUB_ENV reaches later steps'
    /// environment, GITHUB_PATH their path (the latest first). Returns what to show.
    pub(crate) fn take_file_command(&mut self, kind: &str, text: &str) -> Vec<FileCommandNote> {
        if text.is_empty() {
            return Vec::new();
        }
        match kind {
            "GITHUB_OUTPUT" | "GITHUB_ENV" | "GITHUB_STATE" => match filecommands::parse(text) {
                Ok(pairs) => pairs
                    .into_iter()
                    .map(|(name, value)| {
                        if kind == "GITHUB_ENV" {
                            self.step_env.insert(name.clone(), value.clone());
                        }
                        FileCommandNote::Entry {
                            kind: kind.to_string(),
                            name,
                            value,
                        }
                    })
                    .collect(),
                Err(error) => vec![FileCommandNote::Unreadable {
                    kind: kind.to_string(),
                    error,
                }],
            },
            "GITHUB_PATH" => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    self.step_path.insert(0, l.trim().to_string());
                    FileCommandNote::PathEntry(l.to_string())
                })
                .collect(),
            _ => vec![FileCommandNote::Size {
                kind: kind.to_string(),
                bytes: text.len(),
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn runner_names_prefer_the_job_then_the_process_then_the_default() {
        let none = RunnerNames::choose(&[], None);
        assert_eq!(
            none,
            RunnerNames {
                pod: "arc-runner".into(),
                claim: "arc-runner-work".into()
            }
        );
        let process = RunnerNames::choose(&[], Some("runner-7"));
        assert_eq!(process.pod, "runner-7");
        assert_eq!(process.claim, "runner-7-work");
        let job = RunnerNames::choose(
            &pairs(&[("ACTIONS_RUNNER_POD_NAME", "from-job")]),
            Some("runner-7"),
        );
        assert_eq!(job.pod, "from-job");
        assert_eq!(job.claim, "from-job-work");
        let claim = RunnerNames::choose(
            &pairs(&[("ACTIONS_RUNNER_CLAIM_NAME", "shared-work")]),
            None,
        );
        assert_eq!(claim.pod, "arc-runner");
        assert_eq!(claim.claim, "shared-work");
    }

    #[test]
    fn the_hook_env_lets_the_job_env_win() {
        let work = PathBuf::from("/h/_work");
        let workspace = work.join("r/r");
        let paths = RunnerPaths {
            work: &work,
            workspace: &workspace,
            hook_binary: Path::new("/bin/arc-hook"),
            kubeconfig: Some(Path::new("/h/kubeconfig")),
        };
        let env = hook_env(
            "arc-runner",
            paths,
            &pairs(&[("RUNNER_TEMP", "/elsewhere"), ("EXTRA", "1")]),
        );
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("KUBECONFIG"), Some("/h/kubeconfig"));
        assert_eq!(get("ACTIONS_RUNNER_POD_NAME"), Some("arc-runner"));
        assert_eq!(get("RUNNER_WORKSPACE"), Some("/h/_work/r"));
        assert_eq!(get("GITHUB_WORKSPACE"), Some("/h/_work/r/r"));
        assert_eq!(get("RUNNER_TEMP"), Some("/elsewhere"));
        assert_eq!(get("ARC_HOOK_BIN"), Some("/bin/arc-hook"));
        assert_eq!(get("EXTRA"), Some("1"));
        let cluster = hook_env(
            "r",
            RunnerPaths {
                kubeconfig: None,
                ..paths
            },
            &[],
        );
        assert!(!cluster.contains_key("KUBECONFIG"));
    }

    fn prepare_response() -> String {
        json!({"state": {"jobPod": "arc-runner-workflow"}, "context": {}, "isAlpine": false})
            .to_string()
    }

    #[test]
    fn after_a_failed_prepare_job_only_cleanup_runs_with_no_state() {
        let mut runner = RunnerState::default();
        assert!(runner.runs("prepare_job", false));
        assert_eq!(
            runner.finish("prepare_job", 1, None).expect("a failure"),
            None
        );
        assert!(!runner.runs("run_script_step", false));
        assert!(!runner.runs("run_container_step", false));
        assert!(runner.runs("cleanup_job", false));
        assert!(
            runner.runs("run_script_step", true),
            "an always step still runs"
        );
        let input = runner.input_for(json!({"command": "cleanup_job"}), Path::new("/r/05.json"));
        assert_eq!(input["state"], Value::Null);
        assert_eq!(input["responseFile"], "/r/05.json");
    }

    #[test]
    fn state_flows_from_responses_to_later_inputs() {
        let mut runner = RunnerState::default();
        let prepared = runner
            .finish("prepare_job", 0, Some(&prepare_response()))
            .expect("valid response")
            .expect("prepare_job's response is returned");
        assert_eq!(prepared.state.job_pod, "arc-runner-workflow");
        let cleanup = runner.input_for(json!({"command": "cleanup_job"}), Path::new("/r"));
        assert_eq!(cleanup["state"]["jobPod"], "arc-runner-workflow");
        // A step's response without a state keeps the stored one; one with a state replaces it.
        runner
            .finish("run_script_step", 0, Some(""))
            .expect("an empty response is fine");
        let input = runner.input_for(json!({"command": "cleanup_job"}), Path::new("/r"));
        assert_eq!(input["state"]["jobPod"], "arc-runner-workflow");
        runner
            .finish(
                "run_script_step",
                0,
                Some(r#"{"state": {"jobPod": "other"}}"#),
            )
            .expect("valid");
        let input = runner.input_for(json!({"command": "cleanup_job"}), Path::new("/r"));
        assert_eq!(input["state"]["jobPod"], "other");
        assert!(runner.runs("run_script_step", false));
    }

    #[test]
    fn an_invalid_prepare_job_response_is_an_error() {
        let mut runner = RunnerState::default();
        let e = runner
            .finish("prepare_job", 0, Some("{}"))
            .expect_err("refused");
        assert!(
            format!("{e:#}").starts_with("prepare_job's response is not valid: {}"),
            "{e:#}"
        );
    }

    #[test]
    fn file_commands_reach_later_steps() {
        let mut runner = RunnerState::default();
        assert_eq!(
            runner.take_file_command("GITHUB_ENV", "NOTES<<EOF\nline one\nline two\nEOF\n"),
            vec![FileCommandNote::Entry {
                kind: "GITHUB_ENV".into(),
                name: "NOTES".into(),
                value: "line one\nline two".into(),
            }]
        );
        assert_eq!(
            runner.take_file_command("GITHUB_PATH", "/opt/a\n\n /opt/b\n"),
            vec![
                FileCommandNote::PathEntry("/opt/a".into()),
                FileCommandNote::PathEntry(" /opt/b".into()),
            ]
        );
        let output = runner.take_file_command("GITHUB_OUTPUT", "version=1.2.3\n");
        assert_eq!(output.len(), 1);
        assert_eq!(
            runner.take_file_command("GITHUB_STATE", "broken\n"),
            vec![FileCommandNote::Unreadable {
                kind: "GITHUB_STATE".into(),
                error: "invalid file command line \"broken\"".into(),
            }]
        );
        assert_eq!(
            runner.take_file_command("GITHUB_STEP_SUMMARY", "# Done\n"),
            vec![FileCommandNote::Size {
                kind: "GITHUB_STEP_SUMMARY".into(),
                bytes: 7,
            }]
        );
        assert!(runner.take_file_command("GITHUB_ENV", "").is_empty());

        let step = json!({
            "command": "run_script_step",
            "args": {"environmentVariables": {"OWN": "x"}, "prependPath": ["/own"]},
        });
        let input = runner.input_for(step, Path::new("/r"));
        assert_eq!(
            input["args"]["environmentVariables"]["NOTES"],
            "line one\nline two"
        );
        assert_eq!(input["args"]["environmentVariables"]["OWN"], "x");
        assert_eq!(
            input["args"]["prependPath"],
            json!(["/opt/b", "/opt/a", "/own"])
        );
        // Only steps get them.
        let cleanup = runner.input_for(json!({"command": "cleanup_job"}), Path::new("/r"));
        assert!(cleanup.get("args").is_none());
    }
}
