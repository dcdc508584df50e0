//! The Job controller: pods from the template, backoffLimit, status, conditions, cascade and TTL.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::events::{self, Source};
use super::store::{ChangeKind, Key};
use super::{SimState, kubelet, meta, resources, write};

pub fn spawn_controller(sim: Arc<SimState>) {
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

fn has_condition(job: &Value, kind: &str) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == kind && c["status"] == "True")
        })
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = meta::now();
    json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now})
}

fn involved(job: &Value) -> Value {
    let mut j = job.clone();
    j["kind"] = json!("Job");
    j["apiVersion"] = json!("batch/v1");
    j
}

async fn sync(sim: &Arc<SimState>, key: &Key) {
    let Some(job) = sim.store.get(key) else {
        return;
    };
    if has_condition(&job, "Complete") || has_condition(&job, "Failed") {
        return;
    }
    let pods = job_pods(sim, &job);
    let phase = |p: &Value| {
        p.pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("Pending")
            .to_string()
    };
    let active = pods
        .iter()
        .filter(|p| {
            !matches!(phase(p).as_str(), "Succeeded" | "Failed")
                && p.pointer("/metadata/deletionTimestamp").is_none()
        })
        .count();
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count();
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count();
    let ready = pods
        .iter()
        .filter(|p| {
            p.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .count();
    let completions = job
        .pointer("/spec/completions")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    let backoff_limit = job
        .pointer("/spec/backoffLimit")
        .and_then(Value::as_u64)
        .unwrap_or(6) as usize;
    let mut conditions: Vec<Value> = Vec::new();
    let mut finished = false;
    let mut create = false;
    if succeeded >= completions {
        conditions.push(condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        conditions.push(condition(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ));
        events::record(
            &sim.store,
            &involved(&job),
            Source::JobController,
            false,
            "Completed",
            "Job completed",
            None,
        );
        finished = true;
    } else if failed > backoff_limit {
        conditions.push(condition(
            "FailureTarget",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
        conditions.push(condition(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
        events::record(
            &sim.store,
            &involved(&job),
            Source::JobController,
            true,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            None,
        );
        finished = true;
        for p in pods
            .iter()
            .filter(|p| !matches!(phase(p).as_str(), "Succeeded" | "Failed"))
        {
            kubelet::delete_pod(
                sim,
                &Key::new("pods", meta::namespace(p), meta::name(p)),
                None,
            )
            .await;
        }
    } else if active == 0 {
        create = true;
    }
    let now = meta::now();
    let _ = sim.store.update::<()>(key, None, |j| {
        let st = &mut j["status"];
        if !st.is_object() {
            *st = json!({});
        }
        if st.get("startTime").is_none() {
            st["startTime"] = json!(now);
        }
        st["active"] = json!(if finished {
            0
        } else {
            active + usize::from(create)
        });
        st["succeeded"] = json!(succeeded);
        st["failed"] = json!(failed);
        st["ready"] = json!(ready);
        st["terminating"] = json!(0);
        st["uncountedTerminatedPods"] = json!({});
        if finished {
            st["conditions"] = json!(conditions);
            if succeeded >= completions {
                st["completionTime"] = json!(now);
            }
        }
        Ok(())
    });
    if create {
        create_pod(sim, &job).await;
    }
    if finished
        && let Some(ttl) = job
            .pointer("/spec/ttlSecondsAfterFinished")
            .and_then(Value::as_u64)
    {
        let sim = sim.clone();
        let (ns, name, uid) = (
            key.namespace.clone(),
            key.name.clone(),
            meta::uid(&job).to_string(),
        );
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(ttl)).await;
            let key = Key::new("jobs.batch", &ns, &name);
            if let Some(job) = sim.store.get(&key).filter(|j| meta::uid(j) == uid) {
                sim.store.delete(&key);
                cascade(&sim, &job, "Background").await;
            }
        });
    }
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
pub async fn cascade(sim: &Arc<SimState>, job: &Value, policy: &str) {
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
