//! cleanup_job: remove every pod, Job, secret and cache-slot lease this runner created, and wait until they are gone.

use std::time::Duration;

use anyhow::Context;
use kube::api::{DeleteParams, ListParams, PropagationPolicy};

use super::HookResult;
use super::session::Session;
use crate::config::Config;
use crate::k8s::owned;
use crate::k8s::rbac::{Extra, Granted};
use crate::k8s::retry::with_retry;
use crate::k8s::wait::wait_gone;
use crate::k8s::{K8sError, Kube};
use crate::objects::slot_lock::SLOT_LOCK_ROLE;
use crate::objects::{ROLE_LABEL, runner_selector};
use crate::protocol::CommandName;

/// Seconds a deleted pod gets to stop: enough for a clean exit, short enough for the next job.
const POD_GRACE_SECONDS: u32 = 1;

/// What was removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub pods: usize,
    pub jobs: usize,
    pub secrets: usize,
    pub leases: usize,
}

async fn names<K>(api: &kube::Api<K>, selector: &str, what: &str) -> Result<Vec<String>, K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let lp = ListParams::default().labels(selector);
    let list = with_retry(&format!("listing {what} with {selector}"), || api.list(&lp)).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect())
}

async fn delete_all<K>(
    api: &kube::Api<K>,
    names: &[String],
    dp: &DeleteParams,
    what: &str,
) -> Result<(), K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for n in names {
        owned::delete(api, what, n, dp).await?;
    }
    Ok(())
}

/// Deletes this runner's objects (by the `runner-pod` label, so never another runner's) and
/// waits up to `timeout` until none is left. Batch Jobs are touched, and pods watched, only where
/// `granted` says so.
pub async fn remove_runner_objects(
    kube: &Kube,
    runner: &str,
    granted: &Granted,
    timeout: Duration,
) -> Result<Removed, K8sError> {
    let jobs = granted.has(Extra::BatchJobs);
    let selector = runner_selector(runner);
    let mut removed = Removed::default();
    if jobs {
        let api = kube.jobs();
        let found = names(&api, &selector, "jobs").await?;
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        delete_all(&api, &found, &dp, "job").await?;
        removed.jobs = found.len();
    }
    let pods = kube.pods();
    let found = names(&pods, &selector, "pods").await?;
    delete_all(
        &pods,
        &found,
        &DeleteParams::default().grace_period(POD_GRACE_SECONDS),
        "pod",
    )
    .await?;
    removed.pods = found.len();

    // Cache-slot locks go last, once the pods are gone: a slot is free only when no container
    // of its job can still write to the cache.
    let secrets = kube.secrets();
    let not_locks = format!("{selector},{ROLE_LABEL}!={SLOT_LOCK_ROLE}");
    let found = names(&secrets, &not_locks, "secrets").await?;
    delete_all(&secrets, &found, &DeleteParams::default(), "secret").await?;
    removed.secrets = found.len();

    let lp = ListParams::default().labels(&selector);
    if removed.pods > 0 {
        let what = format!("pods of runner {runner}");
        wait_gone(&pods, &what, &lp, timeout, granted.has(Extra::WatchPods)).await?;
    }
    if jobs && removed.jobs > 0 {
        // Jobs are never watched: the Role grants no watch on them.
        let what = format!("jobs of runner {runner}");
        wait_gone(&kube.jobs(), &what, &lp, timeout, false).await?;
    }

    let locks = format!("{selector},{ROLE_LABEL}={SLOT_LOCK_ROLE}");
    let found = names(&secrets, &locks, "secrets").await?;
    delete_all(&secrets, &found, &DeleteParams::default(), "secret").await?;
    removed.secrets += found.len();
    // Leases go with their owner pod anyway (garbage collector); deleting them here frees the
    // slot at once, and also one whose pod was never created.
    if granted.has(Extra::SlotLeases) {
        removed.leases = super::cache_slot::remove_runner_leases(kube, runner).await?;
    }
    Ok(removed)
}

pub async fn cleanup_job(config: &Config) -> HookResult {
    let session = Session::open(config, CommandName::CleanupJob).await?;
    let removed = remove_runner_objects(
        &session.kube,
        &session.runner,
        &session.granted,
        config.cleanup_timeout,
    )
    .await
    .context("cleaning up the job's objects")?;
    tracing::info!(?removed, "cleanup done");
    if let Some(dir) = config
        .runner_temp
        .as_ref()
        .map(|t| t.join(super::run_script_step::SCRIPT_DIR))
    {
        let _ = std::fs::remove_dir_all(dir);
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
