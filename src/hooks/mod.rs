//! The hook commands, one file each, and the stdin entry point that dispatches to them.

pub(crate) mod cache_slot;
pub(crate) mod cleanup_job;
pub(crate) mod file_commands;
pub(crate) mod job_state;
pub(crate) mod prepare_job;
pub(crate) mod readiness;
pub(crate) mod run_container_step;
pub(crate) mod run_script_step;
pub(crate) mod runner_objects;
pub(crate) mod service_health;
pub(crate) mod session;
pub(crate) mod shared_work;
pub(crate) mod startup;
pub(crate) mod step_end;
pub(crate) mod steps;

use std::io::Read;

use anyhow::Context;

use crate::config::Config;
use crate::k8s::rbac::{Extra, Granted};
use crate::k8s::wait::WaitOptions;
use crate::protocol::{Command, Envelope, parse_envelope};

/// A command's result: the exit code the runner sees.
pub(crate) type HookResult = anyhow::Result<i32>;

/// Reads the runner's JSON from stdin and runs the command. Returns the step's exit code; an
/// error's context is the line the job log shows. A step command's error is printed here, with
/// the last line of [`step_end`].
pub async fn run_from_stdin() -> HookResult {
    use std::io::IsTerminal;
    if let Some(hint) = terminal_hint(std::io::stdin().is_terminal()) {
        anyhow::bail!(hint);
    }
    // The runner writes the whole object and closes stdin before anything else happens, so a
    // blocking read here holds up nothing.
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("invalid hook input: stdin: cannot read it")?;
    let envelope = parse_envelope(&input)?;
    let config = Config::from_env().context("arc-hook: invalid configuration")?;
    let name = envelope.command.name().as_str();
    let is_step = matches!(
        envelope.command,
        Command::RunScriptStep(_) | Command::RunContainerStep(_)
    );
    let result = run(envelope, config)
        .await
        .with_context(|| format!("arc-hook {name}"));
    if is_step {
        // A step's ending always gets its last line, failures of the hook's own included.
        return Ok(step_end::finish(result));
    }
    result
}

/// What to tell someone who started the hook by hand on a terminal, where it would wait
/// silently for JSON that never comes; `None` on a pipe (the runner's way).
pub(crate) fn terminal_hint(stdin_is_terminal: bool) -> Option<&'static str> {
    stdin_is_terminal.then_some(
        "arc-hook: the hook reads one runner command as JSON on stdin, and stdin is a terminal: the runner starts it with the JSON piped in. By hand: `arc-hook < fixtures/prepare_job.json`, `arc-hook render fixtures/prepare_job.json` (no cluster), `arc-hook check` (is this runner set up?); `arc-hook --help` lists every command",
    )
}

/// Runs one command.
#[tracing::instrument(name = "hook", skip_all, fields(command = envelope.command.name().as_str()))]
pub(crate) async fn run(envelope: Envelope, config: Config) -> HookResult {
    for secret in envelope.command.secrets() {
        crate::joblog::mask(secret);
    }
    match &envelope.command {
        Command::PrepareJob(args) => {
            // A runner that is stopped (SIGTERM, e.g. its pod deleted) mid-prepare must not
            // leave a workflow pod behind: nothing else would remove it.
            tokio::select! {
                result = prepare_job::prepare_job(&envelope, args, &config) => result,
                signal = stop_signal() => {
                    let signal = signal?;
                    crate::joblog::line_err(format_args!(
                        "arc-hook prepare_job: stopped by {signal}; removing what it created"
                    ));
                    prepare_job::remove_after_stop(&config).await;
                    Ok(128 + if signal == "SIGINT" { 2 } else { 15 })
                }
            }
        }
        Command::RunScriptStep(args) => {
            run_script_step::run_script_step(&envelope, args, &config).await
        }
        Command::RunContainerStep(args) => {
            run_container_step::run_container_step(&envelope, args, &config).await
        }
        Command::CleanupJob => cleanup_job::cleanup_job(envelope.state.as_ref(), &config).await,
    }
}

/// Resolves when the process is asked to stop (SIGTERM or SIGINT), naming the signal.
async fn stop_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// How a command waits for a pod it created to run: up to the prepare timeout, by watch and
/// with the pod's events where the Role grants them, telling the job log while it waits for room;
/// `accept_finished` for a pod whose only container may be done before it is seen running.
pub(crate) fn pod_wait(config: &Config, granted: &Granted, accept_finished: bool) -> WaitOptions {
    WaitOptions {
        timeout: config.prepare_timeout,
        can_watch: granted.has(Extra::WatchPods),
        can_list_events: granted.has(Extra::ListEvents),
        unschedulable_grace: config.unschedulable_grace,
        waiting_notice: Some(crate::k8s::wait::WAITING_NOTICE),
        accept_finished,
        image_pull_wait: config.image_pull_wait,
        progress: wait_progress,
    }
}

/// Where the hooks' waits report: one `arc-hook:` line of the job log per notice.
pub(crate) fn wait_progress(notice: &crate::k8s::progress::WaitNotice<'_>) {
    crate::joblog::notice(notice);
}

/// Deletes what a step (or a failing command) created, on its way out. A failure is one warning
/// line in the job log and never changes the step's result: cleanup_job removes whatever is left,
/// by label, at the end of the job. Returns whether the object is gone or going.
pub(crate) async fn delete_or_warn<K>(
    api: &kube::Api<K>,
    kind: &str,
    name: &str,
    params: &kube::api::DeleteParams,
) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match crate::k8s::owned::delete(api, kind, name, params).await {
        Ok(()) => true,
        Err(e) => {
            crate::joblog::warning(format_args!(
                "could not remove {kind} {name} ({}); cleanup_job removes it at the end of the job",
                e.chain()
            ));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::terminal_hint;

    #[test]
    fn only_a_terminal_gets_the_hint() {
        assert_eq!(terminal_hint(false), None);
        let hint = terminal_hint(true).expect("a hint on a terminal");
        assert!(hint.contains("JSON on stdin") && hint.contains("arc-hook --help"));
    }
}
