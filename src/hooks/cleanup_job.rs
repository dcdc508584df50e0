//! cleanup_job: remove every pod, Job, secret and cache-slot lease this runner created, and wait until they are gone.

use anyhow::Context;

use super::HookResult;
use super::job_state::SCRIPT_DIR;
use super::runner_objects::{known_secrets, remove_runner_objects};
use super::session::Session;
use crate::config::Config;
use crate::protocol::CommandName;

pub(crate) async fn cleanup_job(
    state: Option<&crate::protocol::JobState>,
    config: &Config,
) -> HookResult {
    let session = Session::open(config, CommandName::CleanupJob).await?;
    let known = known_secrets(&session.runner, state);
    let removed = remove_runner_objects(
        &session.kube,
        &session.runner,
        &session.granted,
        &known,
        config.cleanup_timeout,
    )
    .await
    .context("cleaning up the job's objects")?;
    tracing::info!(?removed, "cleanup done");
    // The hook's start scripts and the job's own file commands (claim mode); the pods that
    // mounted them are gone. (std's remove_dir_all never follows a link.)
    if let Some(temp) = config.runner_temp.as_ref() {
        for dir in [SCRIPT_DIR, super::file_commands::JOB_DIR] {
            let _ = std::fs::remove_dir_all(temp.join(dir));
        }
    }
    // The /github links container steps left at the work volume's root (never a real directory).
    if let Some(work) = config.runner_work_dir() {
        for name in crate::objects::ephemeral::GITHUB_LINK_NAMES {
            let path = work.join(name);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    Ok(0)
}
