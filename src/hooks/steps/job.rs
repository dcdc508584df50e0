//! A container step as its own batch Job (where it cannot be an ephemeral container of the job pod): the workspace mounted from the work claim, log streamed, exit code returned, the Job removed.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use kube::api::{DeleteParams, ListParams};

use super::cancel::{Cancel, Cancelled};
use crate::config::Config;
use crate::hooks::HookResult;
use crate::k8s::owned::{self, create_once, create_secret_once};
use crate::k8s::pod_watch::{Backoff, Deadline, Decision, Followed, PodWatch};
use crate::k8s::rbac::{self, Extra};
use crate::k8s::retry::with_retry;
use crate::k8s::wait::{POLL_CAP, wait_running};
use crate::k8s::{K8sError, Kube};
use crate::objects::job::STEP_CONTAINER_NAME;
use crate::plan::ContainerStepPlan;

/// How long a step Job gets to create its pod.
const POD_APPEAR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long, after the log ends, the container gets to report its exit code.
pub(crate) const EXIT_STATUS_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the planned Job to its end and removes it (and its pull secret) whatever happened.
pub(crate) async fn run_as_job(
    kube: &Kube,
    config: &Config,
    plan: &ContainerStepPlan,
    granted: &rbac::Granted,
    cancel: &Cancel,
) -> HookResult {
    if !granted.has(Extra::BatchJobs) {
        bail!(rbac::missing_message(
            crate::k8s::rbac::JOB_PERMISSIONS,
            &kube.namespace
        ));
    }
    let job_name = plan.job.metadata.name.clone().unwrap_or_default();
    let secret_name = plan.secret.as_ref().and_then(|s| s.metadata.name.clone());

    // A cancel ends the wait here; the Job (its pod at once, grace 0) is deleted below, as on
    // every path out.
    let result = tokio::select! {
        result = run_job(kube, config, plan, &job_name, granted) => result,
        signal = cancel.cancelled() => Err(Cancelled {
            signal,
            stopped: format!("deleted the step's Job {job_name}, which stops its pod"),
        }
        .into()),
    };

    crate::hooks::delete_or_warn(&kube.jobs(), "job", &job_name, &owned::job_deletion()).await;
    if let Some(s) = secret_name {
        crate::hooks::delete_or_warn(&kube.secrets(), "secret", &s, &DeleteParams::default()).await;
    }
    result
}

async fn run_job(
    kube: &Kube,
    config: &Config,
    plan: &ContainerStepPlan,
    job_name: &str,
    granted: &rbac::Granted,
) -> HookResult {
    if let Some(secret) = &plan.secret {
        create_secret_once(&kube.secrets(), "secret", secret, None).await?;
    }
    let jobs = kube.jobs();
    create_once(&jobs, "job", &plan.job)
        .await
        .context("cannot create the step's Job")?;

    let pod = step_pod(kube, job_name).await?;
    let opts = crate::hooks::pod_wait(config, granted, true);
    wait_running(kube, &pod, opts)
        .await
        .context("the step's container did not start")?;
    crate::k8s::logs::follow(kube, &pod, STEP_CONTAINER_NAME, tokio::io::stdout()).await?;
    let t = terminated(
        kube,
        &pod,
        STEP_CONTAINER_NAME,
        granted.has(Extra::WatchPods),
    )
    .await?;
    if let Some(infra) = infrastructure(&t) {
        return Err(infra.into());
    }
    Ok(t.exit_code)
}

/// The infrastructure's part in the end of a step container of a pod of its own (a Job's or a
/// bare one), with the kubelet's message.
pub(crate) fn infrastructure(
    t: &ContainerStateTerminated,
) -> Option<crate::hooks::step_end::Infrastructure> {
    let hint = "raise its memory limit in the worker-podspec template, `$step`";
    let mut infra = super::ephemeral::infrastructure(t.exit_code, t.reason.as_deref(), hint)?;
    if let Some(m) = t.message.as_deref().filter(|m| !m.trim().is_empty()) {
        infra.cause = format!("{}: {}", infra.cause, m.trim());
    }
    Some(infra)
}

/// The pod the Job created for the step.
async fn step_pod(kube: &Kube, job_name: &str) -> anyhow::Result<String> {
    let api = kube.pods();
    let lp = ListParams::default().labels(&format!("job-name={job_name}"));
    let deadline = Deadline::after(POD_APPEAR_TIMEOUT);
    let mut backoff = Backoff::new(POLL_CAP);
    loop {
        let list = with_retry(&format!("listing pods of job {job_name}"), || api.list(&lp)).await?;
        if let Some(name) = list.items.into_iter().find_map(|p: Pod| p.metadata.name) {
            return Ok(name);
        }
        if !deadline.pause(&mut backoff, POD_APPEAR_TIMEOUT).await {
            return Err(K8sError::Timeout {
                what: format!("job {job_name} to create its pod"),
                after: POD_APPEAR_TIMEOUT,
            }
            .into());
        }
    }
}

/// `container`'s terminated state (exit code, reason, message), once it has one.
pub(crate) async fn terminated(
    kube: &Kube,
    pod: &str,
    container: &str,
    can_watch: bool,
) -> anyhow::Result<ContainerStateTerminated> {
    let decide = async |current: &Pod| {
        let terminated = current
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.clone());
        if let Some(t) = terminated {
            return Decision::Done(Ok(t));
        }
        match current
            .status
            .as_ref()
            .filter(|s| s.reason.as_deref() == Some("Evicted"))
        {
            Some(status) => Decision::Done(Err(anyhow!(
                "pod {pod} was evicted: {}",
                status.message.as_deref().unwrap_or_default()
            ))),
            None => Decision::LookAgain(EXIT_STATUS_TIMEOUT),
        }
    };
    let deadline = Deadline::after(EXIT_STATUS_TIMEOUT);
    let (watch, first) = PodWatch::start(kube, pod, can_watch, POLL_CAP).await?;
    let first = first.with_context(|| format!("pod {pod} was deleted before its step ended"))?;
    match watch.follow(Some(first), deadline, decide).await? {
        Followed::Decided(t) => t,
        Followed::TimedOut(_) => bail!(
            "the log of {container} in pod {pod} ended but it reported no exit code within {}s; its result is unknown",
            EXIT_STATUS_TIMEOUT.as_secs()
        ),
        Followed::Gone => bail!("pod {pod} was deleted before its step reported an exit code"),
    }
}
