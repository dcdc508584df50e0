//! What every command of one job shares on the runner's side: where `_temp` is, which pod is the
//! job's, where the hook keeps its start scripts, and what happens around every step — the
//! job's copy of the file commands before it, and after it the check of the runner's paths and
//! the delivery of what it wrote (claim mode), for script and container steps alike.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::HookResult;
use super::shared_work::check_runner_paths;
use crate::config::Config;
use crate::objects::names;
use crate::protocol::Envelope;

/// Directory under the runner's `_temp` (`/__w/_temp` in the pod) holding step start scripts.
pub(crate) const SCRIPT_DIR: &str = "_arc_hook";

/// The runner's `_temp`, which the job container sees at `/__w/_temp`.
pub(crate) fn runner_temp(config: &Config) -> anyhow::Result<PathBuf> {
    config
        .runner_temp
        .clone()
        .or_else(|| config.runner_work_dir().map(|w| w.join("_temp")))
        .context("RUNNER_TEMP is not set: the hook must run from the runner, which sets it")
}

/// The workflow pod named in the state, else the one this runner's prepare_job creates.
pub(crate) fn job_pod(envelope: &Envelope, runner: &str) -> String {
    envelope
        .state
        .as_ref()
        .map(|s| s.job_pod.clone())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| names::job_pod_name(runner))
}

/// Before a step. Claim mode: the step sees the job's own copy of the runner's file commands.
pub(crate) fn before_step(temp: &Path, claim: bool) {
    if claim {
        super::file_commands::prepare_for_step(temp);
    }
}

/// After a step (also a failed one): the runner's paths are checked first — a container step
/// in the job pod could reach them while it ran, and its processes are gone now — then, in
/// claim mode, what the step wrote is delivered into the runner's file commands.
pub(crate) fn after_step(temp: &Path, claim: bool, code: i32) -> HookResult {
    let code = runner_paths_intact(temp, code)?;
    Ok(if claim {
        super::file_commands::deliver(temp, code)
    } else {
        code
    })
}

/// Fails the step when it left links (or pipes, devices) where the runner reads file commands
/// or keeps its directories: the runner reads those next, with its own rights. Keeps the step's
/// own failure code when it had one.
pub(crate) fn runner_paths_intact(temp: &Path, code: i32) -> HookResult {
    match check_runner_paths(temp) {
        Ok(()) => Ok(code),
        Err(planted) => {
            for p in &planted {
                crate::joblog::refused(p);
            }
            crate::joblog::problem(format_args!(
                "the step replaced runner-owned paths under _temp (above); failing it so the runner never reads through them{}",
                if code != 0 {
                    format!(" (the step itself exited {code})")
                } else {
                    String::new()
                }
            ));
            Ok(if code != 0 { code } else { 1 })
        }
    }
}
