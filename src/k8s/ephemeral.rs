//! Ephemeral containers in a running pod: adding one, waiting for it to start, following its log, and reading its exit code from `ephemeralContainerStatuses`.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerState, EphemeralContainer, Pod};
use kube::api::{Patch, PatchParams};
use tokio::io::AsyncWrite;

use super::pod_watch::{Deadline, Decision, Followed, follow_pod};
use super::progress::Progress;
use super::retry::with_retry;
use super::wait::{FATAL_WAITING, PullWait};
use super::{K8sError, Kube};

/// Why an ephemeral container did not give an exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EphemeralError {
    /// The cluster does not let us add ephemeral containers here (the caller falls back).
    #[error("the API server refused the ephemeral container ({code}: {message})")]
    NotAllowed { code: u16, message: String },
    #[error(transparent)]
    Api(#[from] K8sError),
    #[error("the step's container {name} did not start: {reason}")]
    Start { name: String, reason: String },
    #[error("the job pod {pod} is gone: {why}")]
    PodGone { pod: String, why: String },
    #[error(transparent)]
    Log(#[from] super::logs::LogError),
    #[error("the log of {name} ended but it reported no exit code within {}s; its result is unknown", after.as_secs())]
    NoExitCode { name: String, after: Duration },
}

/// Where one ephemeral container stands (pure reading of the pod's status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EphemeralState {
    /// Not in the status yet, or waiting for a reason that may resolve (pulling...).
    Waiting(String),
    Running,
    Terminated {
        exit_code: i32,
        reason: Option<String>,
    },
    /// Will never start.
    Failed(String),
    /// The pod itself stopped or is being deleted.
    PodGone(String),
}

/// Classifies container `name`'s status in `pod`.
pub(crate) fn ephemeral_state(pod: &Pod, name: &str) -> EphemeralState {
    if pod.metadata.deletion_timestamp.is_some() {
        return EphemeralState::PodGone("the pod is being deleted".into());
    }
    let status = pod.status.as_ref();
    let cs = status
        .and_then(|s| s.ephemeral_container_statuses.as_ref())
        .and_then(|l| l.iter().find(|c| c.name == name));
    match cs.and_then(|c| c.state.as_ref()) {
        Some(ContainerState {
            terminated: Some(t),
            ..
        }) => EphemeralState::Terminated {
            exit_code: t.exit_code,
            reason: t.reason.clone(),
        },
        Some(ContainerState {
            running: Some(_), ..
        }) => EphemeralState::Running,
        other => {
            let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if phase == "Failed" || phase == "Succeeded" {
                return EphemeralState::PodGone(format!(
                    "the pod is {}{}",
                    phase.to_lowercase(),
                    status
                        .and_then(|s| s.reason.as_deref())
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            }
            let waiting = other.and_then(|s| s.waiting.as_ref());
            let reason = waiting
                .and_then(|w| w.reason.clone())
                .unwrap_or_else(|| "not started yet".into());
            if FATAL_WAITING.contains(&reason.as_str()) {
                let msg = waiting
                    .and_then(|w| w.message.as_deref())
                    .unwrap_or_default();
                EphemeralState::Failed(if msg.is_empty() {
                    reason
                } else {
                    format!("{reason}: {msg}")
                })
            } else {
                EphemeralState::Waiting(reason)
            }
        }
    }
}

/// Adds `container` to `pod`'s ephemeral containers (one strategic-merge PATCH of the
/// subresource; repeating it after a lost answer changes nothing).
pub(crate) async fn add(
    kube: &Kube,
    pod: &str,
    container: &EphemeralContainer,
) -> Result<(), EphemeralError> {
    let api = kube.pods();
    let patch = serde_json::json!({"spec": {"ephemeralContainers": [container]}});
    let pp = PatchParams::default();
    let patch = Patch::Strategic(&patch);
    let action = format!("adding ephemeral container {} to pod {pod}", container.name);
    match with_retry(&action, || api.patch_ephemeral_containers(pod, &pp, &patch)).await {
        Ok(_) => Ok(()),
        Err(e) => match refusal(e.code()) {
            Refusal::NotServedOrGone => {
                // Not served (an old cluster), or the pod is gone: only the first falls back.
                match with_retry(&format!("reading pod {pod}"), || api.get(pod)).await {
                    Err(g) if g.is_not_found() => Err(EphemeralError::PodGone {
                        pod: pod.into(),
                        why: "not found".into(),
                    }),
                    _ => Err(not_allowed(404, e)),
                }
            }
            Refusal::NotAllowed(code) => Err(not_allowed(code, e)),
            Refusal::Failure => Err(e.into()),
        },
    }
}

/// What an API answer to the ephemeral-container PATCH means for the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Forbidden (RBAC, admission), method or patch type not supported, or the container
    /// refused as invalid (feature off, policy): run the step elsewhere.
    NotAllowed(u16),
    /// 404: the subresource is not served (old cluster), or the pod is gone.
    NotServedOrGone,
    /// Anything else is a failure of the step.
    Failure,
}

fn refusal(code: Option<u16>) -> Refusal {
    match code {
        Some(404) => Refusal::NotServedOrGone,
        Some(code @ (403 | 405 | 415 | 422)) => Refusal::NotAllowed(code),
        _ => Refusal::Failure,
    }
}

fn not_allowed(code: u16, e: K8sError) -> EphemeralError {
    let message = match e {
        K8sError::Api { source, .. } => source.message(),
        other => other.to_string(),
    };
    EphemeralError::NotAllowed { code, message }
}

/// Waits until container `name` runs or has already finished; fails at once when it cannot
/// start, except while the registry does not have its image yet and `image_pull_wait` (beyond
/// `timeout`) has not passed.
pub(crate) async fn wait_started(
    kube: &Kube,
    pod: &str,
    name: &str,
    timeout: Duration,
    image_pull_wait: Duration,
    can_watch: bool,
    progress: Progress,
) -> Result<EphemeralState, EphemeralError> {
    let mut pulls = PullWait::new(image_pull_wait, progress);
    let watched = follow(
        kube,
        pod,
        timeout + image_pull_wait,
        can_watch,
        |p| match ephemeral_state(p, name) {
            s @ (EphemeralState::Running | EphemeralState::Terminated { .. }) => Some(Ok(s)),
            EphemeralState::Failed(reason) => {
                let own = p
                    .status
                    .as_ref()
                    .and_then(|s| s.ephemeral_container_statuses.as_deref())
                    .unwrap_or_default()
                    .iter()
                    .filter(|c| c.name == name);
                match pulls.missing_images(own) {
                    Some(images) => match pulls.keep_waiting(&images, &reason) {
                        Ok(()) => None,
                        Err(gave_up) => Some(Err(EphemeralError::Start {
                            name: name.into(),
                            reason: gave_up,
                        })),
                    },
                    None => Some(Err(EphemeralError::Start {
                        name: name.into(),
                        reason,
                    })),
                }
            }
            EphemeralState::PodGone(why) => Some(Err(EphemeralError::PodGone {
                pod: pod.into(),
                why,
            })),
            EphemeralState::Waiting(_) => None,
        },
    )
    .await?;
    match watched {
        Watched::Answer(state) => Ok(state),
        Watched::TimeUp { last } => {
            let reason = match ephemeral_state(&last, name) {
                EphemeralState::Waiting(r) => r,
                _ => "waiting".into(),
            };
            Err(EphemeralError::Start {
                name: name.into(),
                reason: format!(
                    "still {reason} after {}s (ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS)",
                    timeout.as_secs()
                ),
            })
        }
    }
}

/// How following the job pod for one of its containers ended, short of a failure.
enum Watched<T> {
    /// `decide`'s answer.
    Answer(T),
    /// The time ran out first; the pod as last seen.
    TimeUp { last: Box<Pod> },
}

/// Follows `pod` (by watch where `can_watch`) until `decide` has an answer, for up to
/// `timeout`; a deleted pod is [`EphemeralError::PodGone`].
async fn follow<T>(
    kube: &Kube,
    pod: &str,
    timeout: Duration,
    can_watch: bool,
    mut decide: impl FnMut(&Pod) -> Option<Result<T, EphemeralError>>,
) -> Result<Watched<T>, EphemeralError> {
    let decide = async |p: &Pod| match decide(p) {
        Some(answer) => Decision::Done(answer),
        None => Decision::LookAgain(Duration::from_secs(10)),
    };
    match follow_pod(kube, pod, can_watch, Deadline::after(timeout), decide).await? {
        Followed::Decided(answer) => answer.map(Watched::Answer),
        Followed::Gone => Err(EphemeralError::PodGone {
            pod: pod.into(),
            why: "deleted".into(),
        }),
        Followed::TimedOut(last) => Ok(Watched::TimeUp { last }),
    }
}

/// Copies container `name`'s log to `out` as it is written, until the container ends
/// (resuming after broken streams: [`super::logs::follow`]).
pub(crate) async fn follow_log<W: AsyncWrite + Unpin>(
    kube: &Kube,
    pod: &str,
    name: &str,
    out: W,
) -> Result<(), EphemeralError> {
    super::logs::follow(kube, pod, name, out)
        .await
        .map_err(EphemeralError::from)
}

/// The exit code of container `name`, once it has terminated (waiting up to `timeout`).
pub(crate) async fn exit_code(
    kube: &Kube,
    pod: &str,
    name: &str,
    timeout: Duration,
    can_watch: bool,
) -> Result<(i32, Option<String>), EphemeralError> {
    let watched = follow(kube, pod, timeout, can_watch, |p| {
        match ephemeral_state(p, name) {
            EphemeralState::Terminated { exit_code, reason } => Some(Ok((exit_code, reason))),
            EphemeralState::PodGone(why) => Some(Err(EphemeralError::PodGone {
                pod: pod.into(),
                why,
            })),
            _ => None,
        }
    })
    .await?;
    match watched {
        Watched::Answer(code) => Ok(code),
        Watched::TimeUp { .. } => Err(EphemeralError::NoExitCode {
            name: name.into(),
            after: timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).expect("pod")
    }

    fn eph(state: serde_json::Value) -> serde_json::Value {
        json!({"phase": "Running", "ephemeralContainerStatuses": [
            {"name": "step-1", "ready": false, "restartCount": 0, "image": "i", "imageID": "", "state": state}
        ]})
    }

    #[test]
    fn refusals_fall_back_and_failures_do_not() {
        assert_eq!(refusal(Some(403)), Refusal::NotAllowed(403));
        assert_eq!(refusal(Some(422)), Refusal::NotAllowed(422));
        assert_eq!(refusal(Some(405)), Refusal::NotAllowed(405));
        assert_eq!(refusal(Some(404)), Refusal::NotServedOrGone);
        assert_eq!(refusal(Some(500)), Refusal::Failure);
        assert_eq!(refusal(None), Refusal::Failure);
    }

    #[test]
    fn states() {
        assert_eq!(
            ephemeral_state(&pod(json!({"phase": "Running"})), "step-1"),
            EphemeralState::Waiting("not started yet".into())
        );
        assert_eq!(
            ephemeral_state(&pod(eph(json!({"running": {}}))), "step-1"),
            EphemeralState::Running
        );
        assert_eq!(
            ephemeral_state(
                &pod(eph(
                    json!({"terminated": {"exitCode": 7, "reason": "Error"}})
                )),
                "step-1"
            ),
            EphemeralState::Terminated {
                exit_code: 7,
                reason: Some("Error".into())
            }
        );
        assert_eq!(
            ephemeral_state(
                &pod(eph(
                    json!({"waiting": {"reason": "ErrImagePull", "message": "not found"}})
                )),
                "step-1"
            ),
            EphemeralState::Failed("ErrImagePull: not found".into())
        );
        assert_eq!(
            ephemeral_state(
                &pod(eph(json!({"waiting": {"reason": "ContainerCreating"}}))),
                "step-1"
            ),
            EphemeralState::Waiting("ContainerCreating".into())
        );
        assert!(matches!(
            ephemeral_state(&pod(json!({"phase": "Failed", "reason": "Evicted"})), "step-1"),
            EphemeralState::PodGone(w) if w == "the pod is failed (Evicted)"
        ));
    }
}
