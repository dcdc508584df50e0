//! `arc-hook replay`: plays the runner's part for a recorded job, invoking the hook exactly as the runner does, against the embedded simulator unless a cluster is configured.
//!
//! A job directory holds the runner's inputs in order (`NN-<anything>.json`, sorted by name:
//! prepare_job, the steps, cleanup_job), `work/` (the runner's `_work` as it was: step scripts
//! under `work/_temp`, sources under `work/<repo>/<repo>`), optionally `externals/`, `env`
//! (`KEY=VALUE` lines for the hook, `${JOB_DIR}` expanded) and `sim.json` (simulator settings:
//! `imageCommands`, `unpullableImages`, `arcDefaultRole`, `nodeAllocatable`, `faults`).

pub mod filecommands;
pub mod target;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::file_tree::sync_tree;
use crate::protocol::PrepareJobResponse;

/// The wrapper the runner calls (the shipped `scripts/arc-hook.sh`).
pub const WRAPPER: &str = include_str!("../../scripts/arc-hook.sh");
/// The runner pod's name when `ACTIONS_RUNNER_POD_NAME` is unset.
pub const DEFAULT_RUNNER_POD: &str = "arc-runner";

/// Options of one replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub job_dir: PathBuf,
    /// Where the runner's home is laid out (default: a temporary directory).
    pub workdir: Option<PathBuf>,
    /// The hook binary (default: this executable).
    pub hook_binary: Option<PathBuf>,
}

pub use crate::sim::settings::SimSettings;

/// One command's outcome.
#[derive(Debug, Clone)]
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
}

fn command_files(job_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(job_dir)
        .with_context(|| format!("cannot read job directory {}", job_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n != "sim.json")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no runner inputs (*.json) found", job_dir.display());
    }
    Ok(files)
}

fn read_env_file(job_dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let path = job_dir.join("env");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let dir = std::fs::canonicalize(job_dir)?
        .to_string_lossy()
        .to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .with_context(|| format!("{}: expected KEY=VALUE, got {l:?}", path.display()))?;
            Ok((k.trim().to_string(), v.trim().replace("${JOB_DIR}", &dir)))
        })
        .collect()
}

/// Maps a container path under `/__w` to the runner's `_work`.
fn runner_path(work: &Path, container_path: &str) -> Option<PathBuf> {
    container_path
        .strip_prefix("/__w/")
        .map(|rest| work.join(rest))
}

/// Whether a real cluster is configured (then replay uses it instead of the simulator).
pub fn cluster_configured() -> bool {
    crate::config::ClusterSource::from_env() != crate::config::ClusterSource::None
}

/// Replays the job; prints each command's output and result.
pub async fn replay(opts: &ReplayOptions) -> anyhow::Result<ReplayReport> {
    let files = command_files(&opts.job_dir)?;
    let job_env = read_env_file(&opts.job_dir)?;
    let sim_settings: SimSettings = match std::fs::read_to_string(opts.job_dir.join("sim.json")) {
        Ok(t) => SimSettings::from_json(&t).context("sim.json")?,
        Err(_) => SimSettings::default(),
    };

    let scratch = match &opts.workdir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            Scratch::Kept(d.clone())
        }
        None => Scratch::Temp(
            tempfile::Builder::new()
                .prefix("arc-hook-replay-")
                .tempdir()?,
        ),
    };
    let home = scratch.path().to_path_buf();
    let work = home.join("_work");
    std::fs::create_dir_all(work.join("_temp/_runner_file_commands"))?;
    if opts.job_dir.join("work").is_dir() {
        // A job directory may share another's work/ through a link (fixtures/jobs/under-faults).
        let source = std::fs::canonicalize(opts.job_dir.join("work"))
            .context("reading the job directory's work/")?;
        sync_tree(&source, &work).context("laying out the runner's _work")?;
    }
    if opts.job_dir.join("externals").is_dir() {
        sync_tree(&opts.job_dir.join("externals"), &home.join("externals"))?;
    } else {
        std::fs::create_dir_all(home.join("externals"))?;
    }
    let wrapper = home.join("arc-hook.sh");
    std::fs::write(&wrapper, WRAPPER)?;
    let hook_binary = match &opts.hook_binary {
        Some(b) => {
            std::fs::canonicalize(b).with_context(|| format!("hook binary {}", b.display()))?
        }
        None => std::env::current_exe().context("locating the arc-hook binary")?,
    };

    let runner = job_env
        .iter()
        .find(|(k, _)| k == "ACTIONS_RUNNER_POD_NAME")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("ACTIONS_RUNNER_POD_NAME").ok())
        .unwrap_or_else(|| DEFAULT_RUNNER_POD.to_string());
    let claim = job_env
        .iter()
        .find(|(k, _)| k == "ACTIONS_RUNNER_CLAIM_NAME")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| format!("{runner}-work"));

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let sim = if cluster_configured() {
        println!("replay: using the configured Kubernetes cluster");
        None
    } else {
        let sim = target::start_simulator(&runner, &claim, &work, &sim_settings, &home).await?;
        env.insert(
            "KUBECONFIG".into(),
            sim.kubeconfig.to_string_lossy().to_string(),
        );
        println!(
            "replay: no cluster configured; using the embedded simulator at {}",
            sim.url
        );
        Some(sim)
    };

    // Where the runner keeps the workspace, from the first workingDirectory `/__w/<repo>/<repo>`.
    let repo_rel = first_workspace(&files).unwrap_or_else(|| "repo/repo".into());
    let workspace = work.join(&repo_rel);
    std::fs::create_dir_all(&workspace)?;
    env.insert("ACTIONS_RUNNER_POD_NAME".into(), runner.clone());
    env.insert(
        "RUNNER_WORKSPACE".into(),
        workspace
            .parent()
            .unwrap_or(&work)
            .to_string_lossy()
            .to_string(),
    );
    env.insert(
        "GITHUB_WORKSPACE".into(),
        workspace.to_string_lossy().to_string(),
    );
    env.insert(
        "RUNNER_TEMP".into(),
        work.join("_temp").to_string_lossy().to_string(),
    );
    env.insert(
        "ARC_HOOK_BIN".into(),
        hook_binary.to_string_lossy().to_string(),
    );
    for (k, v) in &job_env {
        env.insert(k.clone(), v.clone());
    }

    let mut played = Vec::new();
    let mut state: Option<Value> = None;
    let mut extra_env: BTreeMap<String, String> = BTreeMap::new();
    let mut extra_path: Vec<String> = Vec::new();
    let mut first_failure = 0;
    for (i, file) in files.iter().enumerate() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut input: Value = serde_json::from_str(&std::fs::read_to_string(file)?)
            .with_context(|| format!("{name}: not JSON"))?;
        let command = input["command"].as_str().unwrap_or_default().to_string();
        // After a failure only cleanup_job runs, as the runner does (also after a failed
        // prepare_job, with the state it had: none).
        let skip = first_failure != 0 && command != "cleanup_job";
        if skip {
            println!("── {name}: {command} skipped (an earlier command failed)");
            played.push(Played {
                file: name,
                command,
                exit_code: 0,
                seconds: 0.0,
                skipped: true,
            });
            continue;
        }
        // As the runner: a fresh, empty response file for every command, and the state of the
        // last response that had one (null before any).
        let response = work.join(format!("_temp/_runner_hook_responses/{i:02}.json"));
        std::fs::create_dir_all(response.parent().unwrap_or(&work))?;
        std::fs::write(&response, b"")?;
        input["responseFile"] = Value::String(response.to_string_lossy().to_string());
        input["state"] = state.clone().unwrap_or(Value::Null);
        let file_commands = if command == "run_script_step" || command == "run_container_step" {
            inject_step_context(&mut input, &extra_env, &extra_path);
            prepare_file_commands(&input, &work)?
        } else {
            Vec::new()
        };

        println!("── {name}: {command}");
        let started = Instant::now();
        let code = invoke(&wrapper, &env, &input).await?;
        let seconds = started.elapsed().as_secs_f64();
        println!("── {name}: {command} exited {code} ({seconds:.2}s)");

        if command == "prepare_job" && code == 0 {
            let text =
                std::fs::read_to_string(&response).context("reading prepare_job's response")?;
            let r: PrepareJobResponse = serde_json::from_str(&text)
                .with_context(|| format!("prepare_job's response is not valid: {text}"))?;
            println!("   job pod {}, isAlpine {}", r.state.job_pod, r.is_alpine);
            state = Some(serde_json::to_value(&r.state)?);
        } else if code == 0 {
            // Any later response with a state replaces the stored one, as in the runner.
            let text = std::fs::read_to_string(&response).unwrap_or_default();
            if let Ok(v) = serde_json::from_str::<Value>(&text)
                && let Some(s) = v.get("state").filter(|s| !s.is_null())
            {
                state = Some(s.clone());
            }
        }
        for (kind, path) in &file_commands {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.is_empty() {
                continue;
            }
            match kind.as_str() {
                "GITHUB_OUTPUT" | "GITHUB_ENV" | "GITHUB_STATE" => match filecommands::parse(&text)
                {
                    Ok(pairs) => {
                        for (k, v) in &pairs {
                            println!("   {kind}: {k}={}", v.replace('\n', "\\n"));
                            if kind == "GITHUB_ENV" {
                                extra_env.insert(k.clone(), v.clone());
                            }
                        }
                    }
                    Err(e) => println!("   {kind}: unreadable ({e})"),
                },
                "GITHUB_PATH" => {
                    for l in text.lines().filter(|l| !l.trim().is_empty()) {
                        println!("   GITHUB_PATH: {l}");
                        extra_path.insert(0, l.trim().to_string());
                    }
                }
                _ => println!("   {kind}: {} bytes", text.len()),
            }
        }
        played.push(Played {
            file: name,
            command: command.clone(),
            exit_code: code,
            seconds,
            skipped: false,
        });
        if code != 0 && first_failure == 0 {
            first_failure = code;
        }
    }

    println!("── summary");
    for p in &played {
        let result = if p.skipped {
            "skipped".to_string()
        } else {
            format!("exit {}", p.exit_code)
        };
        println!(
            "   {:<32} {:<20} {:>9} {:>7.2}s",
            p.file, p.command, result, p.seconds
        );
    }
    if let Some(sim) = sim {
        let injected = sim.sim.faults().injected();
        if injected != crate::sim::Injected::default() {
            println!(
                "   the simulator injected {} API errors and {} exec stream cuts (sim.json faults)",
                injected.errors, injected.exec_cuts
            );
        }
        sim.shutdown().await;
    }
    drop(scratch);
    Ok(ReplayReport {
        played,
        exit_code: first_failure,
    })
}

enum Scratch {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Scratch {
    fn path(&self) -> &Path {
        match self {
            Scratch::Temp(t) => t.path(),
            Scratch::Kept(p) => p,
        }
    }
}

fn first_workspace(files: &[PathBuf]) -> Option<String> {
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(f).ok()?).ok()?;
        let wd = v["args"]["container"]["workingDirectory"]
            .as_str()
            .or(v["args"]["workingDirectory"].as_str());
        if let Some(rest) = wd.and_then(|w| w.strip_prefix("/__w/")) {
            let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
            if parts.len() >= 2 && !parts[0].starts_with('_') {
                return Some(format!("{}/{}", parts[0], parts[1]));
            }
        }
    }
    None
}

/// Adds what earlier steps set through GITHUB_ENV and GITHUB_PATH, as the runner does.
fn inject_step_context(
    input: &mut Value,
    extra_env: &BTreeMap<String, String>,
    extra_path: &[String],
) {
    let args = &mut input["args"];
    if !args["environmentVariables"].is_object() {
        args["environmentVariables"] = Value::Object(Default::default());
    }
    for (k, v) in extra_env {
        args["environmentVariables"][k] = Value::String(v.clone());
    }
    if !extra_path.is_empty() {
        let mut p: Vec<Value> = extra_path
            .iter()
            .map(|s| Value::String(s.clone()))
            .collect();
        if let Some(existing) = args["prependPath"].as_array() {
            p.extend(existing.iter().cloned());
        }
        args["prependPath"] = Value::Array(p);
    }
}

/// Creates the step's file-command files empty, as the runner does before each step, and
/// returns them with their kind.
fn prepare_file_commands(input: &Value, work: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let env = &input["args"]["environmentVariables"];
    for kind in [
        "GITHUB_ENV",
        "GITHUB_OUTPUT",
        "GITHUB_PATH",
        "GITHUB_STATE",
        "GITHUB_STEP_SUMMARY",
    ] {
        let Some(p) = env[kind].as_str() else {
            continue;
        };
        let mapped = runner_path(work, p).or_else(|| {
            p.strip_prefix("/github/file_commands/")
                .map(|r| work.join("_temp/_runner_file_commands").join(r))
        });
        if let Some(path) = mapped {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, b"")?;
            out.push((kind.to_string(), path));
        }
    }
    Ok(out)
}

/// Runs the wrapper with the JSON on stdin, as the runner does; output passes through.
async fn invoke(
    wrapper: &Path,
    env: &BTreeMap<String, String>,
    input: &Value,
) -> anyhow::Result<i32> {
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(wrapper)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if env.contains_key("KUBECONFIG") {
        cmd.env_remove("KUBERNETES_SERVICE_HOST");
    }
    cmd.envs(env);
    let mut child = cmd.spawn().context("starting the hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&serde_json::to_vec(input)?).await?;
        stdin.shutdown().await?;
    }
    let status = child.wait().await?;
    Ok(status.code().unwrap_or(1))
}
