//! The objects a runner creates: created once even when a create is retried, removed with one
//! failure policy, and recognised by their `runner-pod` label (never another runner's).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};

use super::retry::with_retry;
use super::{K8sError, Kube};
use crate::objects::RUNNER_POD_LABEL;

/// Creates `mine` (`kind` names it in errors: "creating pod x"); a retried create that meets
/// AlreadyExists takes the object there only when it carries `mine`'s `runner-pod` label (the
/// first attempt may have landed before its answer was lost). Another runner's object under the
/// same name is an error, never adopted.
pub(crate) async fn create_once<K>(api: &kube::Api<K>, kind: &str, mine: &K) -> Result<K, K8sError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match create(api, kind, mine).await {
        Err(e) if e.code() == Some(409) => existing(api, kind, mine).await,
        other => other,
    }
}

fn action<K: kube::Resource>(kind: &str, mine: &K) -> String {
    let name = mine.meta().name.as_deref().unwrap_or_default();
    format!("creating {kind} {name}")
}

async fn create<K>(api: &kube::Api<K>, kind: &str, mine: &K) -> Result<K, K8sError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PostParams::default();
    with_retry(&action(kind, mine), || api.create(&pp, mine)).await
}

/// The object of `mine`'s name that a create met: taken when it carries `mine`'s `runner-pod`
/// label, else an error. Fails with the read's own error (403 where the Role may not read it).
async fn existing<K>(api: &kube::Api<K>, kind: &str, mine: &K) -> Result<K, K8sError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = mine.meta().name.clone().unwrap_or_default();
    let action = action(kind, mine);
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

/// Creates one of the hook's own secrets, named `<runner pod>-<kind>-<random suffix>` (the pull
/// and build-context secrets), with `owner` as its ownerReference so the garbage collector
/// removes it with that pod if the hook is killed before it deletes it. As [`create_once`],
/// except where the Role may not `get` secrets (deploy/rbac's may not: a runner must not read
/// its namespace's secrets) and a retried create meets AlreadyExists: the name is then this
/// runner's own. No other runner makes a name beginning with this runner pod's name (pod names
/// are unique in the namespace), the suffix is eight random characters drawn a moment ago,
/// and nothing refers to the name yet (the pod that mounts it is created after it), so only
/// this command's lost first attempt can have made it. It is deleted and created once more
/// rather than taken unseen: the second create is the one whose answer arrived, so the secret
/// is known to hold what this command sent.
pub async fn create_secret_once(
    api: &kube::Api<Secret>,
    kind: &str,
    secret: &Secret,
    owner: Option<OwnerReference>,
) -> Result<Secret, K8sError> {
    let mut mine = secret.clone();
    if let Some(o) = owner {
        mine.metadata.owner_references = Some(vec![o]);
    }
    match create(api, kind, &mine).await {
        Err(e) if e.code() == Some(409) => match existing(api, kind, &mine).await {
            Err(e) if e.code() == Some(403) => {
                let name = mine.metadata.name.clone().unwrap_or_default();
                tracing::debug!(secret = %name, "AlreadyExists on a retried create, and the Role may not read secrets: creating it again");
                delete(api, kind, &name, &DeleteParams::default()).await?;
                create(api, kind, &mine).await
            }
            other => other,
        },
        other => other,
    }
}

/// The ownerReference naming pod `name` (its UID read now), for the secrets the hook makes;
/// `None`, with a debug line, when the pod cannot be read (the secret is then removed by name
/// only, or by cleanup_job's sweep where the Role grants `list`).
pub async fn pod_owner(kube: &Kube, name: &str) -> Option<OwnerReference> {
    let api = kube.pods();
    match with_retry(&format!("reading pod {name}"), || api.get_opt(name)).await {
        Ok(Some(pod)) => pod
            .metadata
            .uid
            .map(|uid| crate::objects::slot_lock::pod_owner(name, &uid)),
        Ok(None) => {
            tracing::debug!(pod = name, "no such pod: the secret gets no owner");
            None
        }
        Err(e) => {
            tracing::debug!(pod = name, error = %e.chain(), "cannot read the pod: the secret gets no owner");
            None
        }
    }
}

/// How a Job is deleted: its pods with it, at once.
pub(crate) fn job_deletion() -> DeleteParams {
    DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        grace_period_seconds: Some(0),
        ..Default::default()
    }
}

/// Deletes `kind` `name`; one already gone counts as deleted.
pub(crate) async fn delete<K>(
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
