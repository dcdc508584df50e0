//! The simulator kept honest by the real thing: the requests the hook sends (its own objects,
//! ephemeral-container patches, invalid objects, conflicts, deletions, watches, reviews, denials)
//! go to the simulator and to the conformance cluster's kube-apiserver, and their answers —
//! status code, reason, message, warnings and the returned object — must be equal after the
//! normalisation below, or differ exactly as `KNOWN` says (so a difference that appears or
//! disappears fails the test). `src/sim/README.md` lists the known ones and why they stay.
//!
//! Both targets get the same script, in the same order, as the same user: the simulator's
//! `system:serviceaccount:arc-runners:arc-runner` is on the cluster a ServiceAccount of that
//! name bound to deploy/rbac's Role, which the simulator enforces too.
//!
//! Normalisation (both sides; each hides what legitimately differs between two servers):
//! - `metadata.uid` values, wherever they recur (a Job's selector and pod labels, an owner
//!   reference, a delete answer's details): `<uid>` — random per server;
//! - `metadata.resourceVersion` and the numbers in "too old resource version: N (M)": `<rv>` —
//!   each server counts its own writes;
//! - `creationTimestamp`, `deletionTimestamp`: `<time>` — wall clock;
//! - a name made from `generateName` (a Job's pods): the prefix and `<random>` — random suffix;
//! - `metadata.managedFields`: removed — the simulator does no server-side-apply field
//!   management (a documented fidelity limit; the hook never reads them);
//! - the ServiceAccount admission plugin's projected token volume (`kube-api-access-<random>`)
//!   and its mounts: removed — the simulator mounts no token (documented) and the name is random;
//! - a pod's `status` after its create answer: removed — the scheduler writes it
//!   asynchronously (the cluster has no node; the simulator's one node does not match the
//!   hook's node affinity), so its timing is not the API server's behaviour;
//! - SelfSubjectRulesReview rule lists: sorted — their order carries no meaning.
//!
//! Needs the conformance binary (see tests/conformance.rs); under CI=true a missing one fails.

mod common;

use std::time::Duration;

use arc_hook::objects::BuildContext;
use arc_hook::objects::ephemeral::ephemeral_step_container;
use arc_hook::objects::slot_lock::{pod_owner, slot_lease};
use arc_hook::protocol::RunContainerStepArgs;
use arc_hook::sim::{PolicyRule, SimConfig, Simulator};
use common::cluster::{Cluster, prerequisites_met, repo};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

const NS: &str = "arc-runners";
/// The simulator's client identity (`system:serviceaccount:<namespace>:arc-runner`), made a
/// ServiceAccount on the cluster.
const RUNNER_SA: &str = "arc-runner";
/// Bound on every request and on waiting for each watch event.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// One server's answer to one request, normalised.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    code: u16,
    warnings: Vec<String>,
    body: Value,
}

impl Answer {
    fn as_json(&self) -> Value {
        json!({"code": self.code, "warnings": self.warnings, "body": self.body})
    }
}

/// A server under test.
struct Target {
    client: kube::Client,
}

impl Target {
    fn request(
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> http::Request<Body> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "application/json");
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", content_type);
                serde_json::to_vec(b).expect("a JSON body")
            }
            None => Vec::new(),
        };
        req.body(Body::from(bytes)).expect("a well-formed request")
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        content_type: &str,
    ) -> Answer {
        let req = Self::request(method, path, body, content_type);
        let resp = tokio::time::timeout(REQUEST_LIMIT, self.client.send(req))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer within {REQUEST_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let code = resp.status().as_u16();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
            .collect();
        let bytes = tokio::time::timeout(REQUEST_LIMIT, resp.into_body().collect_bytes())
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: body not read within {REQUEST_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).to_string()));
        Answer {
            code,
            warnings,
            body,
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call("POST", path, Some(body), "application/json")
            .await
    }

    /// Opens a watch; its events are read with [`Watch::next`].
    async fn watch(&self, path: &str) -> Watch {
        let req = Self::request("GET", path, None, "");
        let resp = tokio::time::timeout(REQUEST_LIMIT, self.client.send(req))
            .await
            .unwrap_or_else(|_| panic!("watch {path}: no answer within {REQUEST_LIMIT:?}"))
            .unwrap_or_else(|e| panic!("watch {path}: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "watch {path}");
        Watch {
            body: resp.into_body(),
            buffer: Vec::new(),
        }
    }
}

/// An open watch: newline-delimited JSON events.
struct Watch {
    body: Body,
    buffer: Vec<u8>,
}

impl Watch {
    /// The next event, or `None` when the stream ends or none comes within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).expect("a JSON watch event"));
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame())
                .await
                .ok()??;
            let frame = frame.expect("the watch stream reads");
            if let Ok(data) = frame.into_data() {
                self.buffer.extend_from_slice(&data);
            }
        }
    }

    /// Events until `count` arrived or none came for `quiet` (so an extra one shows too).
    async fn events(&mut self, count: usize, quiet: Duration) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(e) = self
            .next(if events.len() < count {
                REQUEST_LIMIT
            } else {
                quiet
            })
            .await
        {
            events.push(e);
        }
        events
    }
}

fn golden(name: &str) -> Vec<Value> {
    let path = repo().join("tests/golden").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let v: serde_yaml_ng::Value =
                serde::Deserialize::deserialize(doc).expect("a YAML document");
            serde_json::to_value(v).expect("YAML as JSON")
        })
        .collect()
}

/// The hook's objects as its builders make them (`arc-hook render`, kept by tests/render_golden.rs).
struct HookObjects {
    redacted_secret: Value,
    secret: Value,
    pod: Value,
    job: Value,
    ephemeral: Value,
    lease: Value,
    runner_pod: String,
}

fn hook_objects() -> HookObjects {
    let prepared = golden("prepare_job__none.yaml");
    let kind = |docs: &[Value], kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} in the golden file"))
    };
    let redacted_secret = kind(&prepared, "Secret");
    let mut secret = redacted_secret.clone();
    let config = json!({"auths": {"registry.example.internal": {"auth": "dXNlcjpwYXNz"}}});
    secret["data"][".dockerconfigjson"] = json!(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        config.to_string()
    ));
    let pod = kind(&prepared, "Pod");
    let job = kind(&golden("run_container_step__none.yaml"), "Job");
    let runner_pod = pod["metadata"]["annotations"]["arc-hook.dev/runner-pod"]
        .as_str()
        .expect("the runner-pod annotation")
        .to_string();
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("fixtures/run_container_step.json"))
            .expect("the fixture"),
    )
    .expect("fixture JSON");
    let args: RunContainerStepArgs =
        serde_json::from_value(fixture["args"].clone()).expect("step args");
    let (container, _warnings) = ephemeral_step_container(&args, "alpine:3.20", "step-1")
        .expect("the step builds")
        .expect("the step runs as an ephemeral container");
    let ctx = BuildContext {
        runner_pod: runner_pod.clone(),
        namespace: NS.to_string(),
        node_name: Some("runner-node".to_string()),
        use_kube_scheduler: false,
        work_volume: arc_hook::config::WorkVolumeMode::Claim,
        claim_name: format!("{runner_pod}-work"),
        default_registry: "docker.io".to_string(),
        cache_slot: Some(0),
        cache_trust: arc_hook::config::CacheTrust::Untrusted,
    };
    let holder = pod["metadata"]["name"].as_str().expect("a pod name");
    HookObjects {
        redacted_secret,
        secret,
        pod: pod.clone(),
        job,
        ephemeral: serde_json::to_value(container).expect("container JSON"),
        lease: serde_json::to_value(slot_lease(&ctx, "runner-node", 0, holder))
            .expect("lease JSON"),
        runner_pod,
    }
}

fn core(path: &str) -> String {
    format!("/api/v1/namespaces/{NS}/{path}")
}

fn batch(path: &str) -> String {
    format!("/apis/batch/v1/namespaces/{NS}/{path}")
}

fn leases(path: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases{path}")
}

fn access_review(verb: &str, resource: &str, sub: &str, group: &str, ns: &str) -> Value {
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "subresource": sub,
            "group": group, "namespace": ns}}})
}

/// A copy of `pod` named `name` with `change` applied to its first container.
fn pod_variant(pod: &Value, name: &str, change: impl FnOnce(&mut Value)) -> Value {
    let mut p = pod.clone();
    p["metadata"]["name"] = json!(name);
    change(&mut p["spec"]["containers"][0]);
    p
}

/// The uid an answer's object got.
fn uid_of(a: &Answer) -> String {
    a.body["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Runs the hook's requests against `t`, in order; each answer under its label.
async fn script(t: &Target, o: &HookObjects) -> Vec<(String, Answer)> {
    let mut log: Vec<(String, Answer)> = Vec::new();
    let mut note = |label: &str, a: Answer| log.push((label.to_string(), a));
    let pod_name = o.pod["metadata"]["name"]
        .as_str()
        .expect("a pod name")
        .to_string();
    let secret_name = o.secret["metadata"]["name"]
        .as_str()
        .expect("a secret name")
        .to_string();
    let job_name = o.job["metadata"]["name"]
        .as_str()
        .expect("a job name")
        .to_string();
    let lease_name = o.lease["metadata"]["name"]
        .as_str()
        .expect("a lease name")
        .to_string();

    // prepare_job: registry credentials, the workflow pod. The golden Secret's data is redacted
    // (render hides credentials), which the API refuses; the hook sends a config's JSON.
    note(
        "create registry secret with redacted data",
        t.post(&core("secrets"), &o.redacted_secret).await,
    );
    note(
        "create registry secret",
        t.post(&core("secrets"), &o.secret).await,
    );
    note(
        "create registry secret again",
        t.post(&core("secrets"), &o.secret).await,
    );
    let created = t.post(&core("pods"), &o.pod).await;
    let pod_uid = uid_of(&created);
    note("create workflow pod", created);
    note(
        "create workflow pod again",
        t.post(&core("pods"), &o.pod).await,
    );
    note(
        "get missing pod",
        t.call("GET", &core("pods/no-such-pod"), None, "").await,
    );
    note(
        "delete missing secret",
        t.call("DELETE", &core("secrets/no-such-secret"), None, "")
            .await,
    );

    // Invalid objects.
    let invalid: [(&str, Value); 5] = [
        (
            "pod with a bad name",
            pod_variant(&o.pod, "Bad_Name", |_| {}),
        ),
        (
            "pod with a bad env var name",
            pod_variant(&o.pod, "bad-env", |c| {
                c["env"][0]["name"] = json!("NODE=ENV");
            }),
        ),
        ("pod with a container name clash", {
            let mut p = pod_variant(&o.pod, "clash", |_| {});
            p["spec"]["containers"][1]["name"] = json!("job");
            p
        }),
        ("pod with a too-long label value", {
            let mut p = pod_variant(&o.pod, "long-label", |_| {});
            p["metadata"]["labels"]["runner-pod"] = json!("x".repeat(64));
            p
        }),
        (
            "pod with an unknown field",
            pod_variant(&o.pod, "unknown-field", |c| {
                c["bogus"] = json!(true);
            }),
        ),
    ];
    for (label, body) in &invalid {
        note(label, t.post(&core("pods"), body).await);
    }
    let strict = pod_variant(&o.pod, "unknown-field-strict", |c| c["bogus"] = json!(true));
    note(
        "pod with an unknown field, strict validation",
        t.post(&format!("{}?fieldValidation=Strict", core("pods")), &strict)
            .await,
    );
    note(
        "delete the accepted unknown-field pod",
        t.call(
            "DELETE",
            &core("pods/unknown-field"),
            Some(&json!({"gracePeriodSeconds": 0})),
            "application/json",
        )
        .await,
    );

    // run_container_step as an ephemeral container: valid, then with what the API forbids.
    let ephemeral = format!("pods/{pod_name}/ephemeralcontainers");
    let add = |c: &Value| json!({"spec": {"ephemeralContainers": [c]}});
    let smp = "application/strategic-merge-patch+json";
    note(
        "add ephemeral step container",
        t.call("PATCH", &core(&ephemeral), Some(&add(&o.ephemeral)), smp)
            .await,
    );
    note(
        "add the same ephemeral container again",
        t.call("PATCH", &core(&ephemeral), Some(&add(&o.ephemeral)), smp)
            .await,
    );
    let forbidden: [(&str, &str, Value); 5] = [
        (
            "ephemeral container with resources",
            "resources",
            json!({"limits": {"cpu": "1"}}),
        ),
        (
            "ephemeral container with ports",
            "ports",
            json!([{"containerPort": 80}]),
        ),
        (
            "ephemeral container with a probe",
            "readinessProbe",
            json!({"exec": {"command": ["true"]}}),
        ),
        (
            "ephemeral container with a subPath mount",
            "volumeMounts",
            json!([{"name": "work", "mountPath": "/w", "subPath": "x"}]),
        ),
        (
            "ephemeral container named as a container",
            "name",
            json!("job"),
        ),
    ];
    for (i, (label, field, value)) in forbidden.into_iter().enumerate() {
        let mut c = o.ephemeral.clone();
        if field != "name" {
            c["name"] = json!(format!("step-bad-{i}"));
        }
        c[field] = value;
        note(
            label,
            t.call("PATCH", &core(&ephemeral), Some(&add(&c)), smp)
                .await,
        );
    }
    note(
        "ephemeral containers of a missing pod",
        t.call(
            "PATCH",
            &core("pods/no-such-pod/ephemeralcontainers"),
            Some(&add(&o.ephemeral)),
            smp,
        )
        .await,
    );

    // run_container_step as a Job; the cache-slot Lease owned by the workflow pod.
    note("create step job", t.post(&batch("jobs"), &o.job).await);
    note("create slot lease", t.post(&leases(""), &o.lease).await);
    note(
        "create slot lease again",
        t.post(&leases(""), &o.lease).await,
    );
    let owner = json!({"metadata": {"ownerReferences": [pod_owner(&pod_name, &pod_uid)]}});
    note(
        "lease owned by the workflow pod",
        t.call(
            "PATCH",
            &leases(&format!("/{lease_name}")),
            Some(&owner),
            "application/merge-patch+json",
        )
        .await,
    );
    // How a job finds its node's slot locks: by label.
    note(
        "list slot leases by node",
        t.call(
            "GET",
            &format!(
                "{}?labelSelector=arc-hook.dev%2Fcache-slot-node%3Drunner-node",
                leases("")
            ),
            None,
            "",
        )
        .await,
    );
    let stale = json!({"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}});
    note(
        "delete lease with a stale uid precondition",
        t.call(
            "DELETE",
            &leases(&format!("/{lease_name}")),
            Some(&stale),
            "application/json",
        )
        .await,
    );
    let lease_uid = {
        let got = t
            .call("GET", &leases(&format!("/{lease_name}")), None, "")
            .await;
        uid_of(&got)
    };
    let current = json!({"preconditions": {"uid": lease_uid}});
    note(
        "delete lease with its uid precondition",
        t.call(
            "DELETE",
            &leases(&format!("/{lease_name}")),
            Some(&current),
            "application/json",
        )
        .await,
    );

    // What the hook lists.
    let selector = format!("runner-pod%3D{}", o.runner_pod);
    note(
        "list pods by runner label",
        t.call(
            "GET",
            &format!("{}?labelSelector={selector}", core("pods")),
            None,
            "",
        )
        .await,
    );
    // cleanup_job's sweep of secrets where the Role grants list (ARC's chart's): the runner's,
    // slot locks apart (a set-based selector), asked of leases, since deploy/rbac's Role lets the
    // runner list no secret; that refusal is compared too.
    note(
        "list leases of the runner but its slot locks",
        t.call(
            "GET",
            &format!(
                "{}?labelSelector={selector},arc-hook.dev%2Frole!%3Dcache-slot",
                leases("")
            ),
            None,
            "",
        )
        .await,
    );
    note(
        "list secrets (refused)",
        t.call("GET", &core("secrets"), None, "").await,
    );
    note(
        "get missing job",
        t.call("GET", &batch("jobs/no-such-job"), None, "").await,
    );
    note(
        "delete missing lease",
        t.call("DELETE", &leases("/no-such-lease"), None, "").await,
    );
    note(
        "list events of a pod",
        t.call(
            "GET",
            &format!(
                "{}?fieldSelector=involvedObject.name%3Dno-such-pod,involvedObject.kind%3DPod",
                core("events")
            ),
            None,
            "",
        )
        .await,
    );

    // Reviews under the runner's Role.
    let reviews = [
        (
            "may create pods/exec",
            access_review("create", "pods", "exec", "", NS),
        ),
        (
            "may get pods/exec",
            access_review("get", "pods", "exec", "", NS),
        ),
        (
            "may patch pods/ephemeralcontainers",
            access_review("patch", "pods", "ephemeralcontainers", "", NS),
        ),
        ("may watch pods", access_review("watch", "pods", "", "", NS)),
        (
            "may create leases",
            access_review("create", "leases", "", "coordination.k8s.io", NS),
        ),
        (
            "may patch secrets (no)",
            access_review("patch", "secrets", "", "", NS),
        ),
        (
            "may list pods in default (no)",
            access_review("list", "pods", "", "", "default"),
        ),
        (
            "may create nodes (no)",
            access_review("create", "nodes", "", "", ""),
        ),
    ];
    for (label, review) in &reviews {
        note(
            label,
            t.post(
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                review,
            )
            .await,
        );
    }
    let rules = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": NS}});
    note(
        "rules review",
        t.post(
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
            &rules,
        )
        .await,
    );

    // Denied requests.
    note(
        "patch a secret (denied)",
        t.call(
            "PATCH",
            &core(&format!("secrets/{secret_name}")),
            Some(&json!({"metadata": {"labels": {"x": "y"}}})),
            "application/merge-patch+json",
        )
        .await,
    );
    note(
        "list configmaps (denied)",
        t.call("GET", &core("configmaps"), None, "").await,
    );
    note(
        "list pods in kube-system (denied)",
        t.call("GET", "/api/v1/namespaces/kube-system/pods", None, "")
            .await,
    );
    note(
        "watch jobs (denied)",
        t.call("GET", &format!("{}?watch=1", batch("jobs")), None, "")
            .await,
    );

    // Watches: create, update, delete of a pod no scheduler or kubelet touches; a too-old start.
    let list = t
        .call(
            "GET",
            &format!("{}?labelSelector=watched%3Dyes", core("pods")),
            None,
            "",
        )
        .await;
    let from = list.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("a list resourceVersion")
        .to_string();
    let mut watch = t
        .watch(&format!(
            "{}?watch=1&labelSelector=watched%3Dyes&resourceVersion={from}",
            core("pods")
        ))
        .await;
    let watched = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "watched", "labels": {"watched": "yes"}},
        "spec": {"nodeName": "no-such-node", "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "60"]}]}});
    note("create watched pod", t.post(&core("pods"), &watched).await);
    note(
        "annotate watched pod",
        t.call(
            "PATCH",
            &core("pods/watched"),
            Some(&json!({"metadata": {"annotations": {"step": "1"}}})),
            "application/merge-patch+json",
        )
        .await,
    );
    note(
        "delete watched pod",
        t.call(
            "DELETE",
            &core("pods/watched"),
            Some(&json!({"gracePeriodSeconds": 0})),
            "application/json",
        )
        .await,
    );
    let events = watch.events(3, Duration::from_secs(2)).await;
    note(
        "watch events of create, update, delete",
        Answer {
            code: 200,
            warnings: Vec::new(),
            body: Value::Array(events),
        },
    );
    let mut old = t
        .watch(&format!("{}?watch=1&resourceVersion=1", core("pods")))
        .await;
    let events = old.events(1, Duration::from_secs(2)).await;
    note(
        "watch from a too-old resourceVersion",
        Answer {
            code: 200,
            warnings: Vec::new(),
            body: Value::Array(events),
        },
    );

    // cleanup_job: the Job with its pods, the pod, the secret.
    note(
        "delete step job in the background",
        t.call(
            "DELETE",
            &batch(&format!("jobs/{job_name}")),
            Some(&json!({"propagationPolicy": "Background"})),
            "application/json",
        )
        .await,
    );
    note(
        "delete workflow pod",
        t.call(
            "DELETE",
            &core(&format!("pods/{pod_name}")),
            Some(&json!({"gracePeriodSeconds": 30})),
            "application/json",
        )
        .await,
    );
    note(
        "delete registry secret",
        t.call("DELETE", &core(&format!("secrets/{secret_name}")), None, "")
            .await,
    );
    log
}

/// The normalisation the module comment lists, in place; `uids` are every uid the server gave.
fn normalise(label: &str, v: &mut Value, uids: &[String]) {
    normalise_value(v, uids);
    if label == "rules review" {
        for list in ["resourceRules", "nonResourceRules"] {
            if let Some(Value::Array(rules)) = v.pointer_mut(&format!("/body/status/{list}")) {
                rules.sort_by_key(|r| r.to_string());
            }
        }
    }
    let create_answer = label.starts_with("create ") || label.starts_with("pod with");
    strip_pod_status(v, !create_answer);
}

fn collect_uids(v: &Value, uids: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(uid)) = map.get("metadata").and_then(|m| m.get("uid")) {
                uids.push(uid.clone());
            }
            map.values().for_each(|x| collect_uids(x, uids));
        }
        Value::Array(items) => items.iter().for_each(|x| collect_uids(x, uids)),
        _ => {}
    }
}

fn normalise_value(v: &mut Value, uids: &[String]) {
    match v {
        Value::Object(map) => {
            map.remove("managedFields");
            // A generated name: the server's random suffix after generateName.
            if let (Some(Value::String(prefix)), Some(Value::String(name))) =
                (map.get("generateName").cloned(), map.get_mut("name"))
                && name.starts_with(prefix.as_str())
            {
                *name = format!("{prefix}<random>");
            }
            for (key, x) in map.iter_mut() {
                match (key.as_str(), &x) {
                    ("resourceVersion", Value::String(s)) if !s.is_empty() => *x = json!("<rv>"),
                    ("creationTimestamp" | "deletionTimestamp", Value::String(_)) => {
                        *x = json!("<time>")
                    }
                    _ => normalise_value(x, uids),
                }
            }
            let token = |x: &Value| {
                x["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("kube-api-access-"))
            };
            for key in ["volumes", "volumeMounts"] {
                if let Some(Value::Array(list)) = map.get_mut(key) {
                    list.retain(|x| !token(x));
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| normalise_value(x, uids)),
        Value::String(s) => {
            for uid in uids {
                if s.contains(uid.as_str()) {
                    *s = s.replace(uid.as_str(), "<uid>");
                }
            }
            if s.starts_with("too old resource version: ") {
                *s = "too old resource version: <rv> (<rv>)".to_string();
            }
        }
        _ => {}
    }
}

/// Removes `status` from pods (objects whose spec has containers) when `all`, else only from
/// the pods inside lists and watch events: a create answer's status is the API server's own.
fn strip_pod_status(v: &mut Value, all: bool) {
    match v {
        Value::Object(map) => {
            let is_pod = map
                .get("spec")
                .is_some_and(|s| s.get("containers").is_some());
            if all && is_pod {
                map.remove("status");
            }
            let nested = all || map.contains_key("items") || map.contains_key("object");
            map.values_mut().for_each(|x| strip_pod_status(x, nested));
        }
        Value::Array(items) => items.iter_mut().for_each(|x| strip_pod_status(x, all)),
        _ => {}
    }
}

/// Where two values differ: (JSON pointer, simulator's value, real value); `None` = absent.
type Difference = (String, Option<Value>, Option<Value>);

fn differences(path: &str, sim: Option<&Value>, real: Option<&Value>, out: &mut Vec<Difference>) {
    match (sim, real) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                differences(&p, a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                differences(&format!("{path}/{i}"), a.get(i), b.get(i), out);
            }
        }
        (a, b) if a != b => out.push((path.to_string(), a.cloned(), b.cloned())),
        _ => {}
    }
}

/// A difference the simulator keeps, as (pointer, simulator's value, real value).
enum Known {
    /// These and no others.
    Exactly(Vec<Difference>),
    /// At least these (the answers differ wholesale, e.g. an object against a Status; the
    /// pointers named are the ones that say how).
    Including(Vec<Difference>),
}

impl Known {
    fn holds(&self, found: &[Difference]) -> bool {
        match self {
            Known::Exactly(want) => found == want.as_slice(),
            Known::Including(want) => want.iter().all(|w| found.contains(w)),
        }
    }
}

/// The differences the simulator keeps, per request label. Each is listed in src/sim/README.md
/// ("Differences from the real API server (differential check)") with why it stays.
fn known() -> Vec<(&'static str, Known)> {
    vec![
        (
            "list pods by runner label",
            Known::Exactly(vec![(
                "/body/items/0/metadata/finalizers".into(),
                None,
                Some(json!(["batch.kubernetes.io/job-tracking"])),
            )]),
        ),
        (
            "may create pods/exec",
            Known::Exactly(vec![(
                "/body/status/reason".into(),
                Some(json!("RBAC: allowed by RoleBinding \"arc-runner\"")),
                Some(json!(
                    "RBAC: allowed by RoleBinding \"arc-runner/arc-runners\" of Role \"arc-hook-runner\" to ServiceAccount \"arc-runner/arc-runners\""
                )),
            )]),
        ),
        (
            "may get pods/exec",
            Known::Exactly(vec![(
                "/body/status/reason".into(),
                Some(json!("RBAC: allowed by RoleBinding \"arc-runner\"")),
                Some(json!(
                    "RBAC: allowed by RoleBinding \"arc-runner/arc-runners\" of Role \"arc-hook-runner\" to ServiceAccount \"arc-runner/arc-runners\""
                )),
            )]),
        ),
        (
            "may patch pods/ephemeralcontainers",
            Known::Exactly(vec![(
                "/body/status/reason".into(),
                Some(json!("RBAC: allowed by RoleBinding \"arc-runner\"")),
                Some(json!(
                    "RBAC: allowed by RoleBinding \"arc-runner/arc-runners\" of Role \"arc-hook-runner\" to ServiceAccount \"arc-runner/arc-runners\""
                )),
            )]),
        ),
        (
            "may watch pods",
            Known::Exactly(vec![(
                "/body/status/reason".into(),
                Some(json!("RBAC: allowed by RoleBinding \"arc-runner\"")),
                Some(json!(
                    "RBAC: allowed by RoleBinding \"arc-runner/arc-runners\" of Role \"arc-hook-runner\" to ServiceAccount \"arc-runner/arc-runners\""
                )),
            )]),
        ),
        (
            "may create leases",
            Known::Exactly(vec![(
                "/body/status/reason".into(),
                Some(json!("RBAC: allowed by RoleBinding \"arc-runner\"")),
                Some(json!(
                    "RBAC: allowed by RoleBinding \"arc-runner/arc-runners\" of Role \"arc-hook-runner\" to ServiceAccount \"arc-runner/arc-runners\""
                )),
            )]),
        ),
        (
            "watch from a too-old resourceVersion",
            Known::Including(vec![
                (
                    "/body/0/object/message".into(),
                    Some(json!("too old resource version: <rv> (<rv>)")),
                    None,
                ),
                (
                    "/body/0/type".into(),
                    Some(json!("ERROR")),
                    Some(json!("ADDED")),
                ),
            ]),
        ),
    ]
}

fn deploy_role() -> Vec<PolicyRule> {
    common::deploy_role().1
}

async fn real_client(kubeconfig: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("a client config");
    kube::Client::try_from(config).expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_answers_the_hooks_requests_as_the_real_api_server_does() {
    if !prerequisites_met() {
        return;
    }
    let objects = hook_objects();
    let cluster = tokio::task::spawn_blocking(Cluster::control_plane)
        .await
        .expect("the cluster starts");
    let kubeconfig = {
        let c = &cluster;
        tokio::task::block_in_place(|| c.service_account_kubeconfig(RUNNER_SA, "arc-hook-runner"))
    };
    let real = Target {
        client: real_client(&kubeconfig).await,
    };
    let sim = Simulator::start(SimConfig {
        namespace: NS.to_string(),
        rbac: Some(deploy_role()),
        ..SimConfig::default()
    })
    .await
    .expect("the simulator starts");
    let simulated = Target {
        client: sim.client().await,
    };

    let on_sim = script(&simulated, &objects).await;
    let on_real = script(&real, &objects).await;
    sim.shutdown().await;

    let uids = |log: &[(String, Answer)]| {
        let mut uids = Vec::new();
        log.iter()
            .for_each(|(_, a)| collect_uids(&a.body, &mut uids));
        uids
    };
    let (sim_uids, real_uids) = (uids(&on_sim), uids(&on_real));
    let known = known();
    let mut report = Vec::new();
    for ((label, s), (label_real, r)) in on_sim.iter().zip(&on_real) {
        assert_eq!(label, label_real, "both scripts run the same requests");
        let (mut s, mut r) = (s.as_json(), r.as_json());
        normalise(label, &mut s, &sim_uids);
        normalise(label, &mut r, &real_uids);
        let mut found = Vec::new();
        differences("", Some(&s), Some(&r), &mut found);
        let expected = known.iter().find(|(l, _)| l == label).map(|(_, k)| k);
        let holds = match expected {
            Some(k) => k.holds(&found),
            None => found.is_empty(),
        };
        if !holds {
            report.push(format!(
                "{label}: differences {}\n  simulator: {s}\n  real: {r}",
                serde_json::to_string_pretty(&found).unwrap_or_default(),
            ));
        }
    }
    for (label, _) in &known {
        assert!(
            on_sim.iter().any(|(l, _)| l == label),
            "KNOWN names no request {label:?}"
        );
    }
    assert!(
        report.is_empty(),
        "{} requests answered unlike KNOWN:\n{}",
        report.len(),
        report.join("\n\n")
    );
}
