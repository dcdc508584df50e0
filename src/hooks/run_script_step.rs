//! run_script_step: run the step in the job container with its exact environment, stream its output, return its exit code.

use std::path::Path;

use anyhow::Context;

use super::HookResult;
use super::job_state::{SCRIPT_DIR, after_step, before_step, job_pod, runner_temp};
use super::shared_work::SharedDir;
use super::step_end::Infrastructure;
use super::steps::cancel::{Cancel, Cancelled, STOP_DEADLINE, StopSignal, TERM_GRACE};
use super::steps::detached::{self, DetachedStep};
use super::steps::workspace::{self, RunnerDirs};
use crate::config::Config;
use crate::k8s::exec::{ExecError, ExecTarget};
use crate::objects::{JOB_CONTAINER_NAME, names};
use crate::protocol::{Envelope, RunScriptStepArgs};
use crate::script::{StepCommand, step_script};

/// Removes the start script on every path out, also when the step fails or the hook errors.
struct ScriptFile {
    dir: SharedDir,
    name: String,
}

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = self.dir.remove_file(&self.name);
    }
}

/// Writes the start script into `_temp/_arc_hook`, opened without following links (the job
/// shares `_work` and may have planted one there to make the hook write or chmod elsewhere).
fn write_start_script(temp: &Path, script: &str) -> anyhow::Result<ScriptFile> {
    let dir = SharedDir::open(temp)
        .and_then(|t| t.child_dir(SCRIPT_DIR))
        .context("preparing the step's start script")?;
    // World-writable + sticky like /tmp: the container's user may differ from the runner's
    // and must be able to delete its own start script.
    dir.set_mode(0o1777)
        .context("preparing the step's start script")?;
    let name = format!("step-{}.sh", names::random_suffix());
    dir.create_file(&name, 0o644, script.as_bytes())
        .context("writing the step's start script")?;
    Ok(ScriptFile { dir, name })
}

pub(crate) async fn run_script_step(
    envelope: &Envelope,
    args: &RunScriptStepArgs,
    config: &Config,
) -> HookResult {
    // From here on a cancel stops the step in the pod instead of ending the hook at once.
    let cancel = Cancel::listen().context("cannot listen for the runner's cancel signals")?;
    let runner = config.require_runner_pod_name()?;
    let pod = job_pod(envelope, runner);
    let script = step_script(&StepCommand {
        entry_point: &args.entry_point,
        entry_point_args: &args.entry_point_args,
        environment: &args.environment_variables,
        prepend_path: &args.prepend_path,
        working_directory: args.working_directory.as_deref(),
    })?;

    let temp = runner_temp(config)?;
    let local = write_start_script(&temp, &script)?;
    let in_pod = format!("/__w/_temp/{SCRIPT_DIR}/{}", local.name);

    let kube = super::session::connect(config).await?;
    let copy = super::steps::workspace::copy_mode(envelope, config);
    let dirs = if copy {
        Some(RunnerDirs::from_config(config)?)
    } else {
        None
    };
    before_step(&temp, dirs.is_none());
    // Exec round trips per step: push (copy mode), run, pull (copy mode).
    if let Some(d) = &dirs {
        let push = workspace::push_step(&kube, &pod, d, Vec::new());
        let stats = tokio::select! {
            pushed = push => pushed.context(
                "no-volume mode: copying _temp and new actions into the job pod before the step",
            )?,
            signal = cancel.cancelled() => return Err(Cancelled {
                signal,
                stopped: "the step had not started and will not".into(),
            }
            .into()),
        };
        tracing::debug!(
            entries = stats.entries,
            skipped = stats.skipped,
            bytes = stats.bytes,
            "pushed before the step"
        );
    }
    let target = ExecTarget {
        pod: &pod,
        container: JOB_CONTAINER_NAME,
        what: "the step",
    };
    let step_id = local
        .name
        .strip_prefix("step-")
        .and_then(|n| n.strip_suffix(".sh"))
        .unwrap_or(&local.name)
        .to_string();
    let step = DetachedStep::new(&step_id, in_pod);
    let result = tokio::select! {
        result = detached::run(&kube, target, &step, tokio::io::stdout()) => result,
        // Also while reattaching: the stop is a fresh exec, retried until its deadline.
        signal = cancel.cancelled() => {
            let stopped = stop_step(&kube, target, &step, signal).await;
            drop(local);
            return Err(stopped.into());
        }
    };
    drop(local);
    // What the hook could not do (reach the pod, start the step, keep it alive) is told apart
    // from the step's own failure; the file commands come back either way.
    let mut infra = None;
    let result = match result {
        // The pod could not be reached for the whole reattach window.
        Err(e @ ExecError::Lost { .. }) => {
            infra = Some(Infrastructure {
                code: detached::EXIT_RESULT_UNKNOWN,
                cause: e.to_string(),
            });
            Ok(detached::EXIT_RESULT_UNKNOWN)
        }
        Ok(detached::EXIT_NOT_STARTED) => {
            infra = Some(Infrastructure {
                code: detached::EXIT_NOT_STARTED,
                cause: "the step never started in the job pod".into(),
            });
            Ok(detached::EXIT_NOT_STARTED)
        }
        // A step that could not start or whose stream broke: say what happened to the pod.
        Err(e) => Err(match crate::k8s::wait::pod_problem(&kube, &pod).await {
            Some(cause) => e.with_cause(&cause),
            None => e,
        }),
        Ok(code) if code > 128 => {
            // Killed by a signal: the pod's story (eviction, OOM kill), which the kubelet
            // reports a moment after the fact, makes it the infrastructure's doing.
            for _ in 0..4 {
                if let Some(cause) = crate::k8s::wait::pod_problem(&kube, &pod).await {
                    infra = Some(Infrastructure {
                        code,
                        cause: format!("the step was killed (exit code {code}): {cause}"),
                    });
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Ok(code)
        }
        ok => ok,
    };
    let pulled = match &dirs {
        // Also after a failed or broken step: its file commands must reach the runner.
        Some(d) => Some(workspace::pull_step(&kube, &pod, d).await),
        None => None,
    };
    let code = workspace::step_outcome(result, pulled)?;
    if let Some(infra) = infra {
        return Err(infra.into());
    }
    after_step(&temp, dirs.is_none(), code)
}

/// Stops the cancelled step in the pod within [`STOP_DEADLINE`] and says what became of it.
/// In no-volume mode `_temp` is not copied back: the runner reads no file commands of a
/// cancelled step, and the time is the runner's grace.
async fn stop_step(
    kube: &crate::k8s::Kube,
    target: ExecTarget<'_>,
    step: &DetachedStep,
    signal: StopSignal,
) -> Cancelled {
    let stopped = tokio::time::timeout(
        STOP_DEADLINE,
        detached::stop(kube, target, step, TERM_GRACE),
    )
    .await;
    let stopped = match stopped {
        Ok(Ok(s)) => format!("{} in pod {}", s.describe(), target.pod),
        Ok(Err(e)) => format!(
            "could not stop the step in pod {} ({e}); cleanup_job deletes the pod, which stops it",
            target.pod
        ),
        Err(_) => format!(
            "could not stop the step in pod {} within {}s; cleanup_job deletes the pod, which stops it",
            target.pod,
            STOP_DEADLINE.as_secs()
        ),
    };
    Cancelled { signal, stopped }
}
