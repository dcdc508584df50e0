//! One hook command as the runner runs it: the input read, a fresh response file and the step's empty file-command files, the wrapper invoked with the JSON on stdin, the response and file commands read back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::Context;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::HookOutput;
use super::home::{RunnerHome, file_command_path};
use super::job::take_replay_only;
use super::report::{Event, Played};
use super::runner::{RunnerState, is_step};

/// The file commands the runner gives every step, in the order they are read back.
const FILE_COMMANDS: [&str; 5] = [
    "GITHUB_ENV",
    "GITHUB_OUTPUT",
    "GITHUB_PATH",
    "GITHUB_STATE",
    "GITHUB_STEP_SUMMARY",
];

/// What every command of one replay runs with.
pub(crate) struct CommandContext<'a> {
    pub home: &'a RunnerHome,
    /// The hook's environment.
    pub env: &'a BTreeMap<String, String>,
    pub hook_output: HookOutput,
    /// Where the job pod is read (who its job container runs as).
    pub job_pods: &'a kube::Api<k8s_openapi::api::core::v1::Pod>,
}

/// Plays the `index`th runner input `file` (or skips it after a failure), carrying `runner`'s
/// state; `events` is told what happens as it happens.
pub(crate) async fn play_command(
    index: usize,
    file: &Path,
    ctx: &CommandContext<'_>,
    runner: &mut RunnerState,
    events: &mut dyn FnMut(Event),
) -> anyhow::Result<Played> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {name}"))?;
    let mut input: Value =
        serde_json::from_str(&text).with_context(|| format!("{name}: not JSON"))?;
    let only = take_replay_only(&mut input).with_context(|| name.clone())?;
    let command = input["command"].as_str().unwrap_or_default().to_string();
    if !runner.runs(&command, only.always) {
        events(Event::Skipped {
            file: name.clone(),
            command: command.clone(),
        });
        return Ok(Played {
            file: name,
            command,
            exit_code: 0,
            seconds: 0.0,
            skipped: true,
        });
    }
    let work = &ctx.home.work;
    let response = work.join(format!("_temp/_runner_hook_responses/{index:02}.json"));
    std::fs::create_dir_all(response.parent().unwrap_or(work))
        .context("creating the hook's response directory")?;
    std::fs::write(&response, b"").context("creating the hook's response file")?;
    let mut input = runner.input_for(input, &response);
    relocate_dockerfile(&mut input, work);
    let file_commands = if is_step(&command) {
        create_file_commands(&input, work)?
    } else {
        Vec::new()
    };

    events(Event::Started {
        file: name.clone(),
        command: command.clone(),
    });
    let started = Instant::now();
    let mut signalled = |signal, seconds| {
        events(Event::Signalled {
            file: name.clone(),
            signal,
            seconds,
        })
    };
    let exit_code = invoke(
        &ctx.home.wrapper,
        ctx.env,
        &input,
        ctx.hook_output,
        only.cancel_after,
        &mut signalled,
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    events(Event::Finished {
        file: name.clone(),
        command: command.clone(),
        exit_code,
        seconds,
    });

    let response_text = match (exit_code, command.as_str()) {
        (0, "prepare_job") => {
            Some(std::fs::read_to_string(&response).context("reading prepare_job's response")?)
        }
        // A later command's response is optional (an empty file has no state).
        (0, _) => Some(std::fs::read_to_string(&response).unwrap_or_default()),
        _ => None,
    };
    if let Some(prepared) = runner.finish(&command, exit_code, response_text.as_deref())? {
        let job_user = super::target::job_user(ctx.job_pods, &prepared.state.job_pod).await?;
        events(Event::JobPod {
            name: prepared.state.job_pod,
            is_alpine: prepared.is_alpine,
        });
        if let Some((uid, gid)) = job_user
            && ctx.home.give_workspace_to(uid, gid)?
        {
            events(Event::WorkspaceOwner { uid, gid });
        }
    }
    for (kind, path) in &file_commands {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for note in runner.take_file_command(kind, &text) {
            events(Event::FileCommand(note));
        }
    }
    Ok(Played {
        file: name,
        command,
        exit_code,
        seconds,
        skipped: false,
    })
}

/// A Docker action's `args.dockerfile` is a path on the runner that recorded the job (its
/// `_work/_actions/...`): the hook reads the build context there, so it is moved to the same place
/// under this replay's `_work`, as that runner's home would be here.
fn relocate_dockerfile(input: &mut Value, work: &Path) {
    let Some(recorded) = input["args"]["dockerfile"].as_str() else {
        return;
    };
    if let Some(rel) = crate::objects::pod::work_subpath(recorded)
        && recorded.starts_with('/')
    {
        input["args"]["dockerfile"] = Value::String(work.join(rel).to_string_lossy().to_string());
    }
}

/// Creates the step's file-command files empty, as the runner does before each step, and
/// returns them with their kind.
fn create_file_commands(input: &Value, work: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let env = &input["args"]["environmentVariables"];
    let mut files = Vec::new();
    for kind in FILE_COMMANDS {
        let Some(path) = env[kind].as_str().and_then(|p| file_command_path(work, p)) else {
            continue;
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {kind}'s directory"))?;
        }
        std::fs::write(&path, b"").with_context(|| format!("creating {kind}'s file"))?;
        files.push((kind.to_string(), path));
    }
    Ok(files)
}

/// The runner's cancel, as `CancelAndKillProcessTree` (actions/runner
/// `src/Runner.Sdk/ProcessInvoker.cs`) does it: SIGINT, SIGTERM after 7.5 s, SIGKILL after 2.5 s
/// more, each only while the hook is still running.
const RUNNER_CANCEL: [(nix::sys::signal::Signal, std::time::Duration); 3] = [
    (
        nix::sys::signal::Signal::SIGINT,
        std::time::Duration::from_millis(7500),
    ),
    (
        nix::sys::signal::Signal::SIGTERM,
        std::time::Duration::from_millis(2500),
    ),
    (nix::sys::signal::Signal::SIGKILL, std::time::Duration::ZERO),
];

/// Runs the wrapper with the JSON on stdin, as the runner does; the hook's own output goes
/// where `output` says. With `cancel_after`, the runner's cancel starts that long after the
/// start; `signalled` is told of each signal sent.
async fn invoke(
    wrapper: &Path,
    env: &BTreeMap<String, String>,
    input: &Value,
    output: HookOutput,
    cancel_after: Option<std::time::Duration>,
    signalled: &mut dyn FnMut(&'static str, f64),
) -> anyhow::Result<i32> {
    let stdio = || match output {
        HookOutput::Inherit => Stdio::inherit(),
        HookOutput::Discard => Stdio::null(),
    };
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(wrapper)
        .stdin(Stdio::piped())
        .stdout(stdio())
        .stderr(stdio());
    // A kubeconfig (the simulator's, or the job's) wins over a service account this process has.
    if env.contains_key("KUBECONFIG") {
        cmd.env_remove("KUBERNETES_SERVICE_HOST");
    }
    cmd.envs(env);
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting the hook")?;
    if let Some(mut stdin) = child.stdin.take() {
        let json = serde_json::to_vec(input).context("encoding the hook's input")?;
        stdin
            .write_all(&json)
            .await
            .context("writing the hook's input")?;
        stdin.shutdown().await.context("writing the hook's input")?;
    }
    let status = match cancel_after {
        None => child.wait().await.context("waiting for the hook")?,
        Some(after) => {
            let mut wait = after;
            let mut sequence = RUNNER_CANCEL.iter();
            loop {
                if let Ok(status) = tokio::time::timeout(wait, child.wait()).await {
                    break status.context("waiting for the hook")?;
                }
                let Some((signal, next)) = sequence.next() else {
                    break child.wait().await.context("waiting for the hook")?;
                };
                // The wrapper execs the hook, so the child is the hook itself.
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), *signal);
                    signalled(signal.as_str(), started.elapsed().as_secs_f64());
                }
                wait = *next;
            }
        }
    };
    Ok(status.code().unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_dockerfile_path_moves_under_this_replays_work() {
        let work = Path::new("/tmp/replay-home/_work");
        let mut input = serde_json::json!({"args": {
            "dockerfile": "/home/runner/_work/_actions/o/a/v1/Dockerfile"}});
        relocate_dockerfile(&mut input, work);
        assert_eq!(
            input["args"]["dockerfile"],
            "/tmp/replay-home/_work/_actions/o/a/v1/Dockerfile"
        );
        let mut none = serde_json::json!({"args": {"dockerfile": null}});
        relocate_dockerfile(&mut none, work);
        assert!(none["args"]["dockerfile"].is_null());
        let mut climbing = serde_json::json!({"args": {"dockerfile": "/h/_work/../x/Dockerfile"}});
        relocate_dockerfile(&mut climbing, work);
        assert_eq!(climbing["args"]["dockerfile"], "/h/_work/../x/Dockerfile");
    }
}
