//! The objects a runner creates: created once even when a create is retried, removed with one
//! failure policy, and recognised by their `runner-pod` label (never another runner's).

use kube::api::{DeleteParams, PostParams, PropagationPolicy};

use super::K8sError;
use super::retry::with_retry;
use crate::objects::RUNNER_POD_LABEL;

/// Creates `mine` (`kind` names it in errors: "creating pod x"); a retried create that meets
/// AlreadyExists takes the object there only when it carries `mine`'s `runner-pod` label (the
/// first attempt may have landed before its answer was lost). Another runner's object under the
/// same name is an error, never adopted.
pub async fn create_once<K>(api: &kube::Api<K>, kind: &str, mine: &K) -> Result<K, K8sError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = mine.meta().name.clone().unwrap_or_default();
    let action = format!("creating {kind} {name}");
    let pp = PostParams::default();
    match with_retry(&action, || api.create(&pp, mine)).await {
        Err(e) if e.code() == Some(409) => {
            let found = with_retry(&action, || api.get(&name)).await?;
            let label = |o: &K| {
                o.meta()
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(RUNNER_POD_LABEL))
                    .cloned()
            };
            if label(&found).is_some() && label(&found) == label(mine) {
                Ok(found)
            } else {
                Err(K8sError::Failed(format!(
                    "{action}: an object of that name already exists and belongs to {} (its {RUNNER_POD_LABEL} label), not to this runner; refusing to use it",
                    label(&found).unwrap_or_else(|| "no runner".into())
                )))
            }
        }
        other => other,
    }
}

/// How a Job is deleted: its pods with it, at once.
pub fn job_deletion() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        grace_period_seconds: Some(0),
        ..Default::default()
    }
}

/// Deletes `kind` `name`; one already gone counts as deleted.
pub async fn delete<K>(
    api: &kube::Api<K>,
    kind: &str,
    name: &str,
    params: &DeleteParams,
) -> Result<(), K8sError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match with_retry(&format!("deleting {kind} {name}"), || {
        api.delete(name, params)
    })
    .await
    {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

/// Deletes what a step (or a failing command) created, on its way out. A failure is one warning
/// line in the job log and never changes the step's result: cleanup_job removes whatever is left,
/// by label, at the end of the job. Returns whether the object is gone or going.
pub async fn delete_or_warn<K>(
    api: &kube::Api<K>,
    kind: &str,
    name: &str,
    params: &DeleteParams,
) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match delete(api, kind, name, params).await {
        Ok(()) => true,
        Err(e) => {
            println!(
                "arc-hook: warning: could not remove {kind} {name} ({}); cleanup_job removes it at the end of the job",
                e.chain()
            );
            false
        }
    }
}
