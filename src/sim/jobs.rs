//! The Job controller: pods from the template, backoffLimit, status, conditions, cascade and TTL.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::events::{self, Source};
use super::store::{ChangeKind, Key};
use super::{SimState, kubelet, meta, resources, write};

pub(crate) fn spawn_controller(sim: Arc<SimState>) {
    let Ok((_, mut changes)) = sim.store.watch(None) else {
        return;
    };
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            let job_key = match change.key.resource {
                "jobs.batch" if change.kind == ChangeKind::Added => Some(change.key.clone()),
                "pods" => owner_job(&change.object)
                    .map(|name| Key::new("jobs.batch", &change.key.namespace, &name)),
                _ => None,
            };
            if let Some(k) = job_key {
                sync(&sim, &k).await;
            }
        }
    });
}

/// The name of the Job controlling a pod, from its controller ownerReference.
fn owner_job(pod: &Value) -> Option<String> {
    pod.pointer("/metadata/ownerReferences")?
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "Job" && r["controller"] == true)
        .and_then(|r| r["name"].as_str().map(str::to_string))
}

fn job_pods(sim: &SimState, job: &Value) -> Vec<Value> {
    let uid = meta::uid(job);
    let (pods, _) = sim.store.list("pods", Some(meta::namespace(job)));
    pods.into_iter()
        .filter(|p| {
            meta::labels(p)
                .get("controller-uid")
                .and_then(Value::as_str)
                == Some(uid)
        })
        .collect()
}

fn involved(job: &Value) -> Value {
    let mut j = job.clone();
    j["kind"] = json!("Job");
    j["apiVersion"] = json!("batch/v1");
    j
}

/// What a Job's spec asks of the controller.
#[derive(Debug, Clone, Copy, PartialEq)]
struct JobSpec {
    /// Succeeded pods that complete the Job (`spec.completions`, default 1).
    completions: usize,
    /// Failed pods tolerated before the Job fails (`spec.backoffLimit`, default 6).
    backoff_limit: usize,
}

fn job_spec(job: &Value) -> JobSpec {
    let count = |path: &str, default: u64| {
        let n = job.pointer(path).and_then(Value::as_u64).unwrap_or(default);
        usize::try_from(n).unwrap_or(usize::MAX)
    };
    JobSpec {
        completions: count("/spec/completions", 1),
        backoff_limit: count("/spec/backoffLimit", 6),
    }
}

/// How a Job's pods stand, as its `status` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PodCounts {
    /// Neither finished nor being deleted.
    active: usize,
    succeeded: usize,
    failed: usize,
    ready: usize,
}

fn pod_phase(pod: &Value) -> &str {
    pod.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
}

fn pod_finished(pod: &Value) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

fn count_pods(pods: &[Value]) -> PodCounts {
    let count = |keep: fn(&Value) -> bool| pods.iter().filter(|p| keep(p)).count();
    PodCounts {
        active: count(|p| !pod_finished(p) && p.pointer("/metadata/deletionTimestamp").is_none()),
        succeeded: count(|p| pod_phase(p) == "Succeeded"),
        failed: count(|p| pod_phase(p) == "Failed"),
        ready: count(|p| meta::condition_true(p, "Ready")),
    }
}

/// Where a Job goes from here.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// Enough pods succeeded.
    Complete,
    /// More pods failed than `backoffLimit` tolerates.
    BackoffLimitExceeded,
    /// Still running; start this many pods (the simulator runs a Job's pods one at a time,
    /// parallelism 1: a new one starts only when none is active).
    Running { start: usize },
}

fn decide(spec: JobSpec, counts: PodCounts) -> Outcome {
    if counts.succeeded >= spec.completions {
        Outcome::Complete
    } else if counts.failed > spec.backoff_limit {
        Outcome::BackoffLimitExceeded
    } else {
        Outcome::Running {
            start: usize::from(counts.active == 0),
        }
    }
}

/// How the Job controller marks a finished Job: two conditions and an event.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Finish {
    /// The interim and the final condition types (`SuccessCriteriaMet`, `Complete`).
    conditions: [&'static str; 2],
    reason: &'static str,
    message: &'static str,
    event_reason: &'static str,
    event_message: &'static str,
    warning: bool,
}

impl Outcome {
    fn finish(self) -> Option<Finish> {
        const LIMIT: &str = "Job has reached the specified backoff limit";
        match self {
            Outcome::Complete => Some(Finish {
                conditions: ["SuccessCriteriaMet", "Complete"],
                reason: "CompletionsReached",
                message: "Reached expected number of succeeded pods",
                event_reason: "Completed",
                event_message: "Job completed",
                warning: false,
            }),
            Outcome::BackoffLimitExceeded => Some(Finish {
                conditions: ["FailureTarget", "Failed"],
                reason: "BackoffLimitExceeded",
                message: LIMIT,
                event_reason: "BackoffLimitExceeded",
                event_message: LIMIT,
                warning: true,
            }),
            Outcome::Running { .. } => None,
        }
    }
}

/// Writes the pod counts into a Job's `status` and, once it has finished, its conditions and
/// (on success) its completion time; `now` stamps them.
fn write_status(status: &mut Value, counts: PodCounts, outcome: Outcome, now: &str) {
    if !status.is_object() {
        *status = json!({});
    }
    if status.get("startTime").is_none() {
        status["startTime"] = json!(now);
    }
    status["active"] = json!(match outcome {
        Outcome::Running { start } => counts.active + start,
        Outcome::Complete | Outcome::BackoffLimitExceeded => 0,
    });
    status["succeeded"] = json!(counts.succeeded);
    status["failed"] = json!(counts.failed);
    status["ready"] = json!(counts.ready);
    status["terminating"] = json!(0);
    status["uncountedTerminatedPods"] = json!({});
    if let Some(f) = outcome.finish() {
        let conditions: Vec<Value> = f
            .conditions
            .iter()
            .map(|kind| json!({"type": kind, "status": "True", "reason": f.reason, "message": f.message, "lastProbeTime": now, "lastTransitionTime": now}))
            .collect();
        status["conditions"] = json!(conditions);
        if outcome == Outcome::Complete {
            status["completionTime"] = json!(now);
        }
    }
}

/// Brings a Job's status, pods and lifetime in line with its pods: the controller's one pass.
async fn sync(sim: &Arc<SimState>, key: &Key) {
    let Some(job) = sim.store.get(key) else {
        return;
    };
    if meta::condition_true(&job, "Complete") || meta::condition_true(&job, "Failed") {
        return;
    }
    let pods = job_pods(sim, &job);
    let counts = count_pods(&pods);
    let outcome = decide(job_spec(&job), counts);
    if let Some(f) = outcome.finish() {
        events::record(
            &sim.store,
            &involved(&job),
            Source::JobController,
            f.warning,
            f.event_reason,
            f.event_message,
            None,
        );
    }
    if outcome == Outcome::BackoffLimitExceeded {
        stop_unfinished_pods(sim, &pods).await;
    }
    let now = meta::now();
    let _ = sim.store.update::<()>(key, None, |j| {
        write_status(&mut j["status"], counts, outcome, &now);
        Ok(())
    });
    match outcome {
        Outcome::Running { start } => {
            for _ in 0..start {
                create_pod(sim, &job).await;
            }
        }
        Outcome::Complete | Outcome::BackoffLimitExceeded => schedule_ttl_deletion(sim, &job),
    }
}

/// A failed Job's pods that still run are deleted, as the controller does past the backoff limit.
async fn stop_unfinished_pods(sim: &Arc<SimState>, pods: &[Value]) {
    for p in pods.iter().filter(|p| !pod_finished(p)) {
        kubelet::delete_pod(
            sim,
            &Key::new("pods", meta::namespace(p), meta::name(p)),
            None,
        )
        .await;
    }
}

/// Deletes a finished Job and its pods `spec.ttlSecondsAfterFinished` from now, unless it was
/// replaced (another uid) meanwhile.
fn schedule_ttl_deletion(sim: &Arc<SimState>, job: &Value) {
    let Some(ttl) = job
        .pointer("/spec/ttlSecondsAfterFinished")
        .and_then(Value::as_u64)
    else {
        return;
    };
    let sim = sim.clone();
    let key = Key::new("jobs.batch", meta::namespace(job), meta::name(job));
    let uid = meta::uid(job).to_string();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(ttl)).await;
        if let Some(job) = sim.store.get(&key).filter(|j| meta::uid(j) == uid) {
            sim.store.delete(&key);
            cascade(&sim, &job, "Background").await;
        }
    });
}

async fn create_pod(sim: &Arc<SimState>, job: &Value) {
    let name = meta::name(job);
    let tmpl = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut md = json!({
        "generateName": format!("{name}-"),
        "namespace": meta::namespace(job),
        "labels": tmpl.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": meta::uid(job), "controller": true, "blockOwnerDeletion": true}],
    });
    if let Some(a) = tmpl.pointer("/metadata/annotations") {
        md["annotations"] = a.clone();
    }
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": tmpl.get("spec").cloned().unwrap_or(json!({}))});
    match write::create_value(sim, resources::by_id("pods"), meta::namespace(job), pod).await {
        Ok(p) => events::record(
            &sim.store,
            &involved(job),
            Source::JobController,
            false,
            "SuccessfulCreate",
            &format!("Created pod: {}", meta::name(&p)),
            None,
        ),
        Err(e) => events::record(
            &sim.store,
            &involved(job),
            Source::JobController,
            true,
            "FailedCreate",
            &format!("Error creating: {}", e.message),
            None,
        ),
    }
}

/// Applies a deletion propagation policy to a deleted Job's pods.
pub(crate) async fn cascade(sim: &Arc<SimState>, job: &Value, policy: &str) {
    for p in job_pods(sim, job) {
        let key = Key::new("pods", meta::namespace(&p), meta::name(&p));
        if policy == "Orphan" {
            let uid = meta::uid(job).to_string();
            let _ = sim.store.update::<()>(&key, None, |p| {
                if let Some(refs) = p
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r["uid"] != uid.as_str());
                }
                Ok(())
            });
        } else {
            kubelet::delete_pod(sim, &key, None).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str) -> Value {
        json!({"metadata": {"name": "p"}, "status": {"phase": phase}})
    }

    const ONE_OF_SIX: JobSpec = JobSpec {
        completions: 1,
        backoff_limit: 6,
    };

    #[test]
    fn spec_defaults_are_the_api_servers() {
        assert_eq!(job_spec(&json!({"spec": {}})), ONE_OF_SIX);
        assert_eq!(
            job_spec(&json!({"spec": {"completions": 3, "backoffLimit": 0}})),
            JobSpec {
                completions: 3,
                backoff_limit: 0
            }
        );
    }

    #[test]
    fn counts_pods_by_phase_readiness_and_deletion() {
        let mut ready = pod("Running");
        ready["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        let mut leaving = pod("Running");
        leaving["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        let pending = json!({"metadata": {"name": "p"}});
        let pods = [
            ready,
            leaving,
            pending,
            pod("Succeeded"),
            pod("Failed"),
            pod("Failed"),
        ];
        assert_eq!(
            count_pods(&pods),
            PodCounts {
                active: 2,
                succeeded: 1,
                failed: 2,
                ready: 1
            }
        );
    }

    #[test]
    fn decides_completion_before_failure_and_starts_one_pod_at_a_time() {
        let counts = |active, succeeded, failed| PodCounts {
            active,
            succeeded,
            failed,
            ready: 0,
        };
        let no_retries = JobSpec {
            completions: 2,
            backoff_limit: 0,
        };
        let running = |start| Outcome::Running { start };
        for (spec, (active, succeeded, failed), expected) in [
            (ONE_OF_SIX, (0, 0, 0), running(1)),
            (ONE_OF_SIX, (1, 0, 3), running(0)),
            (ONE_OF_SIX, (0, 0, 6), running(1)),
            (ONE_OF_SIX, (0, 0, 7), Outcome::BackoffLimitExceeded),
            (ONE_OF_SIX, (0, 1, 7), Outcome::Complete),
            (no_retries, (0, 1, 0), running(1)),
            (no_retries, (0, 1, 1), Outcome::BackoffLimitExceeded),
            (no_retries, (0, 2, 1), Outcome::Complete),
        ] {
            assert_eq!(
                decide(spec, counts(active, succeeded, failed)),
                expected,
                "{spec:?}, {active} active, {succeeded} succeeded, {failed} failed"
            );
        }
    }

    #[test]
    fn status_counts_the_pod_about_to_start_and_marks_a_finished_job() {
        let counts = PodCounts {
            active: 0,
            succeeded: 0,
            failed: 1,
            ready: 0,
        };
        let mut status = Value::Null;
        write_status(&mut status, counts, Outcome::Running { start: 1 }, "t0");
        assert_eq!(
            status,
            json!({"startTime": "t0", "active": 1, "succeeded": 0, "failed": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}})
        );
        let done = PodCounts {
            succeeded: 1,
            ..counts
        };
        write_status(&mut status, done, Outcome::Complete, "t1");
        assert_eq!(status["startTime"], "t0", "the start time stays");
        assert_eq!(status["active"], 0);
        assert_eq!(status["completionTime"], "t1");
        let types: Vec<&Value> = status["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .map(|c| &c["type"])
            .collect();
        assert_eq!(types, [&json!("SuccessCriteriaMet"), &json!("Complete")]);
        let mut failed = Value::Null;
        write_status(&mut failed, counts, Outcome::BackoffLimitExceeded, "t2");
        assert_eq!(failed["conditions"][1]["type"], "Failed");
        assert_eq!(failed["conditions"][1]["reason"], "BackoffLimitExceeded");
        assert!(failed.get("completionTime").is_none());
    }
}
