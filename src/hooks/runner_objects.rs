//! The objects a runner's job leaves in the cluster (pods, Jobs, secrets, cache-slot locks and leases), and their removal: what cleanup_job does at the end of a job and prepare_job before one, for the previous job's leftovers.

use std::time::Duration;

use kube::api::{DeleteParams, ListParams, PropagationPolicy};

use crate::k8s::owned;
use crate::k8s::rbac::{Extra, Granted};
use crate::k8s::retry::with_retry;
use crate::k8s::wait::wait_gone;
use crate::k8s::{K8sError, Kube};
use crate::objects::slot_lock::SLOT_LOCK_ROLE;
use crate::objects::{ROLE_LABEL, runner_selector};

/// Seconds a deleted pod gets to stop: enough for a clean exit, short enough for the next job.
const POD_GRACE_SECONDS: u32 = 1;

/// What was removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Removed {
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

/// This runner's secrets with `selector`; none when the list is forbidden after all (a caller
/// that could not review its permissions tries it).
async fn secret_names(
    api: &kube::Api<k8s_openapi::api::core::v1::Secret>,
    selector: &str,
) -> Result<Vec<String>, K8sError> {
    match names(api, selector, "secrets").await {
        Err(e) if e.code() == Some(403) => {
            tracing::debug!(error = %e.chain(), "may not list secrets: leaving them to their owners");
            Ok(Vec::new())
        }
        other => other,
    }
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

/// The secrets of this runner's that cleanup_job knows by name (`state.registrySecret`): only a
/// name of this runner's own form (`<runner pod>-secret-<suffix>`), so a state naming another
/// object deletes nothing.
pub(crate) fn known_secrets(
    runner: &str,
    state: Option<&crate::protocol::JobState>,
) -> Vec<String> {
    // The name with a suffix as long as a random one (a long runner name is fitted to it).
    let sample = crate::objects::names::runner_object_name(runner, "secret", "00000000");
    let prefix = &sample[..sample.len() - 8];
    state
        .and_then(|s| s.registry_secret.clone())
        .filter(|n| {
            n.len() == sample.len()
                && n.strip_prefix(prefix).is_some_and(|suffix| {
                    suffix
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                })
        })
        .into_iter()
        .collect()
}

/// Deletes this runner's objects (by the `runner-pod` label, so never another runner's) and
/// waits up to `timeout` until none is left. Batch Jobs are touched, and pods watched, only where
/// `granted` says so. Secrets are swept by label only where the Role grants `list` on them
/// ([`Extra::ListSecrets`]); else the `known` secrets are deleted by name, and the garbage
/// collector removes the rest with their owner (the workflow pod owns the steps' secrets, the
/// runner pod the job's pull secret).
pub(crate) async fn remove_runner_objects(
    kube: &Kube,
    runner: &str,
    granted: &Granted,
    known: &[String],
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
    let list_secrets = granted.has(Extra::ListSecrets);
    let not_locks = format!("{selector},{ROLE_LABEL}!={SLOT_LOCK_ROLE}");
    let mut found = if list_secrets {
        secret_names(&secrets, &not_locks).await?
    } else {
        Vec::new()
    };
    for k in known {
        if !found.contains(k) {
            found.push(k.clone());
        }
    }
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

    // Secret locks exist only where the Role grants get and list on secrets (SlotSecrets).
    if list_secrets {
        let locks = format!("{selector},{ROLE_LABEL}={SLOT_LOCK_ROLE}");
        let found = secret_names(&secrets, &locks).await?;
        delete_all(&secrets, &found, &DeleteParams::default(), "secret").await?;
        removed.secrets += found.len();
    }
    // Leases go with their owner pod anyway (garbage collector); deleting them here frees the
    // slot at once, and also one whose pod was never created.
    if granted.has(Extra::SlotLeases) {
        removed.leases = super::cache_slot::remove_runner_leases(kube, runner).await?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobState;

    fn state(secret: &str) -> JobState {
        JobState {
            job_pod: "arc-runner-workflow".into(),
            registry_secret: Some(secret.into()),
            ..Default::default()
        }
    }

    #[test]
    fn only_this_runners_secret_names_are_deleted_by_name() {
        let mine = crate::objects::names::runner_object_name("arc-runner", "secret", "abcdefgh");
        assert_eq!(known_secrets("arc-runner", Some(&state(&mine))), [mine]);
        for other in [
            "arc-github-app",
            "arc-runner-2-secret-abcdefgh",
            "arc-runner-secret-",
            "arc-runner-secret-abc-efgh",
        ] {
            assert!(
                known_secrets("arc-runner", Some(&state(other))).is_empty(),
                "{other}"
            );
        }
        assert!(known_secrets("arc-runner", None).is_empty());
    }
}
