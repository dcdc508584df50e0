//! kube-rs against the simulator: exec, watch, logs, jobs, faults, RBAC, mounts and networking.

mod common;
mod sim_support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arc_hook::sim::{Faults, SimConfig, arc_chart_default_role};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{
    AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchParams,
};
use kube::runtime::{conditions, watcher};
use kube::{Api, Client};
use serde_json::json;
use sim_support::{WAIT, is_root, phase_is, pod, start, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn read_all(r: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        r.read_to_string(&mut s).await.expect("stream reads");
    }
    s
}

async fn running_pod(client: &Client, name: &str, image: &str, command: &[&str]) -> Api<Pod> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod(name, image, command))
        .await
        .expect("pod created");
    wait_for(&pods, name, "Running", conditions::is_pod_running()).await;
    pods
}

/// Creates the object `object` describes (JSON as the API takes it) and returns what the API stored.
async fn create<K>(api: &Api<K>, object: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let what = object.to_string();
    let object: K = serde_json::from_value(object).expect("a valid object");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {what}: {e}"))
}

/// The log of one container of a pod, as it stands.
async fn container_log(pods: &Api<Pod>, pod: &str, container: &str) -> String {
    let params = LogParams {
        container: Some(container.into()),
        ..LogParams::default()
    };
    pods.logs(pod, &params)
        .await
        .unwrap_or_else(|e| panic!("logs of {pod}/{container}: {e}"))
}

/// The first line a followed log of the pod (its one container, or `container`) gives.
async fn first_followed_line(pods: &Api<Pod>, pod: &str, container: Option<&str>) -> String {
    let params = LogParams {
        container: container.map(Into::into),
        follow: true,
        ..LogParams::default()
    };
    let mut lines = pods
        .log_stream(pod, &params)
        .await
        .unwrap_or_else(|e| panic!("logs of {pod}: {e}"))
        .lines();
    tokio::time::timeout(WAIT, lines.next())
        .await
        .expect("a line in time")
        .expect("a line")
        .expect("readable")
}

/// The pod's ephemeral container `name` exited 0.
fn ephemeral_succeeded(name: &'static str) -> impl kube::runtime::wait::Condition<Pod> {
    move |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.ephemeral_container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == name))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    }
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message),
        other => panic!("expected an API error, got {other}"),
    }
}

#[tokio::test]
async fn sim_exec_pipes_stdin_and_reports_the_exit_code() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods = running_pod(&client, "exec", "busybox:1.36", &[]).await;
    let ap = AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(true);
    let mut proc = pods
        .exec("exec", ["sh", "-c", "cat; echo err >&2; exit 3"], &ap)
        .await
        .expect("exec starts");
    let mut stdin = proc.stdin().expect("stdin");
    stdin
        .write_all(b"hello through stdin\n")
        .await
        .expect("stdin written");
    // Shutting the writer down is what ends kube's stdin stream (and sends v5's close signal).
    stdin.shutdown().await.expect("stdin closed");
    let (out, err) = (proc.stdout(), proc.stderr());
    let status = proc.take_status().expect("status channel");
    let (out, err) = tokio::join!(read_all(out), read_all(err));
    let status = tokio::time::timeout(WAIT, status)
        .await
        .expect("status in time")
        .expect("a status");
    assert_eq!(out, "hello through stdin\n");
    assert_eq!(err, "err\n");
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let cause = &status.details.expect("details").causes.expect("causes")[0];
    assert_eq!(
        (cause.reason.as_deref(), cause.message.as_deref()),
        (Some("ExitCode"), Some("3"))
    );

    let mut ok = pods
        .exec("exec", ["true"], &AttachParams::default().stderr(false))
        .await
        .expect("exec");
    let status = ok.take_status().expect("status").await.expect("a status");
    assert_eq!(status.status.as_deref(), Some("Success"));

    let mut missing = pods
        .exec("exec", ["no-such-tool"], &AttachParams::default())
        .await
        .expect("exec");
    let status = missing
        .take_status()
        .expect("status")
        .await
        .expect("a status");
    // As containerd answers: an internal error, no exit code (so no exit code 127).
    assert_eq!(
        status.reason.as_deref(),
        Some("InternalError"),
        "{status:?}"
    );
    assert_eq!(status.code, Some(500));
    assert!(
        status
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .is_none_or(|c| c.iter().all(|c| c.reason.as_deref() != Some("ExitCode"))),
        "{status:?}"
    );
    let message = status.message.unwrap_or_default();
    assert!(
        message.starts_with("Internal error occurred: error executing command in container: failed to exec in container: failed to start exec \"")
            && message.ends_with(": OCI runtime exec failed: exec failed: unable to start container process: exec: \"no-such-tool\": executable file not found in $PATH: unknown"),
        "{message}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_exec_into_a_pending_pod_is_refused() {
    let sim = start(SimConfig {
        unpullable_images: vec!["ghcr.io/x/missing:1".into()],
        ..SimConfig::default()
    })
    .await;
    let client = sim.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(
        &PostParams::default(),
        &pod("pending", "ghcr.io/x/missing:1", &[]),
    )
    .await
    .expect("created");
    let waiting = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs[0].state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            == Some("ImagePullBackOff")
    };
    wait_for(&pods, "pending", "ImagePullBackOff", waiting).await;
    let err = pods
        .exec("pending", ["true"], &AttachParams::default())
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("400") || err.to_string().contains("container not found"),
        "{err}"
    );
    let events: Api<Event> = Api::default_namespaced(client);
    let messages: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Failed to pull image \"ghcr.io/x/missing:1\"")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "Back-off pulling image \"ghcr.io/x/missing:1\""),
        "{messages:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_watcher_sees_create_update_delete() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    // The initial list ends before anything is created.
    loop {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("watch event in time")
            .expect("watch ok")
        {
            Some(watcher::Event::InitDone) => break,
            Some(_) => continue,
            None => panic!("watch ended"),
        }
    }
    create(&cms, json!({"metadata": {"name": "w"}, "data": {"k": "1"}})).await;
    cms.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .expect("patched");
    cms.delete("w", &DeleteParams::default())
        .await
        .expect("deleted");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("watch event in time")
            .expect("watch ok")
            .expect("open");
        match ev {
            watcher::Event::Apply(c) => {
                seen.push(format!("apply k={}", c.data.unwrap_or_default()["k"]))
            }
            watcher::Event::Delete(c) => {
                seen.push(format!("delete {}", c.metadata.name.unwrap_or_default()))
            }
            _ => {}
        }
    }
    assert_eq!(seen, vec!["apply k=1", "apply k=2", "delete w"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_log_stream_follows_a_running_job_pod() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    create(&jobs, json!({
        "metadata": {"name": "count"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox",
            "command": ["sh", "-c", "for i in 1 2 3; do echo line $i; sleep 0.2; done"]}]}}},
    })).await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    let lp = ListParams::default().labels("job-name=count");
    let pod_name = {
        let mut w = watcher(
            pods.clone(),
            watcher::Config::default().labels("job-name=count"),
        )
        .boxed();
        loop {
            let ev = tokio::time::timeout(WAIT, w.try_next())
                .await
                .expect("job pod in time")
                .expect("watch ok")
                .expect("open");
            if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev {
                let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                if running {
                    break p.metadata.name.expect("name");
                }
            }
        }
    };
    let owner = &pods
        .get(&pod_name)
        .await
        .expect("pod")
        .metadata
        .owner_references
        .expect("owned")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "count"));
    let lines = pods
        .log_stream(
            &pod_name,
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("log stream")
        .lines();
    let lines: Vec<String> = tokio::time::timeout(WAIT, lines.try_collect())
        .await
        .expect("log ends when the container exits")
        .expect("log ok");
    assert_eq!(lines, vec!["line 1", "line 2", "line 3"]);
    let done = wait_for(&jobs, "count", "complete", conditions::is_job_completed()).await;
    assert_eq!(done.status.and_then(|s| s.succeeded), Some(1));
    assert_eq!(pods.list(&lp).await.expect("list").items.len(), 1);
    jobs.delete("count", &DeleteParams::background())
        .await
        .expect("job deleted");
    sim_support::wait_deleted(&pods, &pod_name).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_failing_job_respects_backoff_limit_zero() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    create(&jobs, json!({
        "metadata": {"name": "fail"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "busybox", "command": ["sh", "-c", "exit 7"]}]}}},
    })).await;
    let is_failed = |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
    };
    let failed = wait_for(&jobs, "fail", "failed", is_failed).await;
    let status = failed.status.expect("status");
    assert_eq!(status.failed, Some(1));
    let cond = status
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(cond.reason.as_deref(), Some("BackoffLimitExceeded"));
    let pods: Api<Pod> = Api::default_namespaced(client);
    let p = &pods
        .list(&ListParams::default().labels("job-name=fail"))
        .await
        .expect("pods")
        .items[0];
    let term = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!((term.exit_code, term.reason.as_deref()), (7, Some("Error")));
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_fault_error_rate_answers_500_or_429() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    sim.faults().update(|f| f.error_rate = 1.0);
    let (code, message) = api_code(
        pods.list(&ListParams::default())
            .await
            .expect_err("injected 500"),
    );
    assert_eq!(code, 500);
    assert!(message.contains("injected fault"), "{message}");
    // Discovery stays up so clients can still find the API.
    assert!(client.apiserver_version().await.is_ok());
    sim.faults().update(|f| f.error_rate = 0.5);
    let mut failures = 0;
    for _ in 0..40 {
        if pods.list(&ListParams::default()).await.is_err() {
            failures += 1;
        }
    }
    assert!(
        (5..=35).contains(&failures),
        "about half of 40 calls fail, got {failures}"
    );

    // 429 comes with Retry-After: 1; a client without retries sees it...
    sim.faults().set(Faults {
        error_rate: 1.0,
        error_status: 429,
        ..Faults::default()
    });
    let mut config = kube::Config::new(sim.url().parse().expect("url"));
    config.default_retry = false;
    let no_retry = Client::try_from(config).expect("client");
    let req = http::Request::get(format!("{}/api/v1/namespaces/default/pods", sim.url()))
        .body(Vec::new())
        .expect("request");
    let resp = no_retry
        .send(req.map(Into::into))
        .await
        .expect("a response");
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // ...while kube's default client waits and retries through occasional throttling.
    sim.faults().set(Faults {
        error_rate: 0.3,
        error_status: 429,
        ..Faults::default()
    });
    for _ in 0..3 {
        pods.list(&ListParams::default())
            .await
            .expect("retried past 429");
    }
    sim.faults().clear();
    assert!(pods.list(&ListParams::default()).await.is_ok());
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_fault_latency_slows_every_call() {
    let sim = start(SimConfig::default()).await;
    let pods: Api<Pod> = Api::default_namespaced(sim.client().await);
    sim.faults()
        .update(|f| f.latency = Duration::from_millis(300));
    let t = Instant::now();
    pods.list(&ListParams::default()).await.expect("list");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_fault_exec_stream_dropped_after_n_bytes() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods = running_pod(&client, "drop", "busybox", &[]).await;
    sim.faults().update(|f| f.exec_drop_after_bytes = Some(10));
    let ap = AttachParams::default().stderr(false);
    let mut proc = pods
        .exec(
            "drop",
            [
                "sh",
                "-c",
                "for i in $(seq 1 200); do echo line $i; done; exit 0",
            ],
            &ap,
        )
        .await
        .expect("exec");
    let mut out = proc.stdout().expect("stdout");
    let status = proc.take_status().expect("status channel");
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // kube leaves stdout open when the connection breaks; stop at the first quiet moment.
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), out.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let status = tokio::time::timeout(WAIT, status)
        .await
        .expect("status future ends");
    assert!(
        status.is_none(),
        "a dropped stream carries no status, got {status:?}"
    );
    let joined = tokio::time::timeout(WAIT, proc.join())
        .await
        .expect("exec task ends");
    assert!(joined.is_err(), "the client sees a broken connection");
    let got = reader.await.expect("reader");
    assert!(
        !got.is_empty() && got.len() < 200 * 8,
        "output was cut short: {} bytes",
        got.len()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_fault_watch_closed_after_n_events() {
    let sim = start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client().await);
    for n in ["a", "b", "c"] {
        create(&cms, json!({"metadata": {"name": n}})).await;
    }
    sim.faults()
        .update(|f| f.watch_close_after_events = Some(2));
    let stream = cms
        .watch(&WatchParams::default(), "0")
        .await
        .expect("watch");
    let events: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the watch ends early");
    assert_eq!(events.len(), 2, "{events:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_evicted_pod_fails_with_reason_evicted() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods = running_pod(&client, "victim", "busybox", &[]).await;
    sim.evict_pod("default", "victim").await.expect("evicted");
    let p = wait_for(&pods, "victim", "Failed", phase_is("Failed")).await;
    let status = p.status.expect("status");
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    // The kubelet's wording (pkg/kubelet/eviction/helpers.go), one sentence per container.
    let message = status.message.unwrap_or_default();
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. Container ")
            && message.ends_with(", request is 0, has larger consumption of memory. "),
        "{message}"
    );
    let err = pods
        .exec("victim", ["true"], &AttachParams::default())
        .await
        .err()
        .expect("no exec into a failed pod");
    // The server has no completed-pod check (that one is kubectl's): the kubelet finds no
    // running container.
    assert!(
        err.to_string().contains("container not found (\"main\")")
            && !err.to_string().contains("completed pod"),
        "{err}"
    );
    let events: Api<Event> = Api::default_namespaced(client);
    let evicted = events
        .list(&ListParams::default().fields("involvedObject.name=victim"))
        .await
        .expect("events")
        .items
        .into_iter()
        .any(|e| e.reason.as_deref() == Some("Evicted"));
    assert!(evicted);
    assert!(sim.evict_pod("default", "nobody").await.is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_rbac_denies_with_the_api_servers_words() {
    let sim = start(SimConfig {
        rbac: Some(arc_chart_default_role()),
        ..SimConfig::default()
    })
    .await;
    let client = sim.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let err = pods
        .watch(&WatchParams::default(), "0")
        .await
        .err()
        .expect("watch denied");
    let (code, message) = api_code(err);
    assert_eq!(code, 403);
    assert_eq!(
        message,
        "pods is forbidden: User \"system:serviceaccount:default:arc-runner\" cannot watch resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let (code, message) = api_code(cms.get("x").await.expect_err("configmaps denied"));
    assert_eq!(code, 403);
    assert!(
        message.starts_with("configmaps \"x\" is forbidden: User"),
        "{message}"
    );
    assert!(pods.list(&ListParams::default()).await.is_ok());
    let ssar: Api<SelfSubjectAccessReview> = Api::all(client);
    let review = |verb: &str, resource: &str, sub: Option<&str>| {
        serde_json::from_value::<SelfSubjectAccessReview>(json!({"spec": {"resourceAttributes": {"namespace": "default", "verb": verb, "resource": resource, "subresource": sub}}})).expect("ssar")
    };
    let allowed = |r: SelfSubjectAccessReview| r.status.expect("status").allowed;
    assert!(!allowed(
        ssar.create(&PostParams::default(), &review("watch", "pods", None))
            .await
            .expect("ssar")
    ));
    assert!(allowed(
        ssar.create(
            &PostParams::default(),
            &review("create", "pods", Some("exec"))
        )
        .await
        .expect("ssar")
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_invalid_and_duplicate_pods_are_refused() {
    let sim = start(SimConfig::default()).await;
    let pods: Api<Pod> = Api::default_namespaced(sim.client().await);
    let (code, message) = api_code(
        pods.create(&PostParams::default(), &pod("Bad_Name", "busybox", &[]))
            .await
            .expect_err("invalid"),
    );
    assert_eq!(code, 422);
    assert!(message.starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{message}");
    pods.create(&PostParams::default(), &pod("twice", "busybox", &[]))
        .await
        .expect("first");
    let (code, message) = api_code(
        pods.create(&PostParams::default(), &pod("twice", "busybox", &[]))
            .await
            .expect_err("duplicate"),
    );
    assert_eq!(
        (code, message.as_str()),
        (409, "pods \"twice\" already exists")
    );
    let (code, _) = api_code(pods.get("nobody").await.expect_err("missing"));
    assert_eq!(code, 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_unschedulable_pods_stay_pending_with_failed_scheduling() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    create(
        &pods,
        json!({"metadata": {"name": "gpu"}, "spec": {"containers": [{"name": "c", "image": "cuda",
        "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}),
    )
    .await;
    let unschedulable = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
    };
    let p = wait_for(&pods, "gpu", "unschedulable", unschedulable).await;
    assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    let events: Api<Event> = Api::default_namespaced(client);
    let msg = events
        .list(&ListParams::default().fields("involvedObject.name=gpu,reason=FailedScheduling"))
        .await
        .expect("events")
        .items[0]
        .message
        .clone()
        .unwrap_or_default();
    assert!(
        msg.starts_with("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
        "{msg}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_pvc_dirs_mount_host_directories_at_their_paths() {
    if !common::require_root("mount namespaces") {
        return;
    }
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("x"), "from the host\n").expect("host file");
    let sim = start(SimConfig {
        pvc_dirs: HashMap::from([("work".to_string(), work.path().to_path_buf())]),
        ..SimConfig::default()
    })
    .await;
    let client = sim.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    create(&pods, json!({"metadata": {"name": "mounts"}, "spec": {"restartPolicy": "Never",
        "volumes": [{"name": "work", "persistentVolumeClaim": {"claimName": "work"}}, {"name": "scratch", "emptyDir": {}}],
        "containers": [{"name": "main", "image": "alpine:3.19", "workingDir": "/__w",
            "env": [{"name": "SUB", "value": "deep"}, {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            "command": ["sh", "-c", "cat x; echo written > /__w/back; echo $POD; grep ^ID= /etc/os-release; touch /__e/f 2>/dev/null || echo read-only; echo ${IP%%.*}"],
            "volumeMounts": [{"name": "work", "mountPath": "/__w"}, {"name": "scratch", "mountPath": "/__e", "subPathExpr": "$(SUB)", "readOnly": true}]}]}})).await;
    wait_for(&pods, "mounts", "Succeeded", phase_is("Succeeded")).await;
    let logs = pods
        .logs("mounts", &LogParams::default())
        .await
        .expect("logs");
    assert_eq!(logs, "from the host\nmounts\nID=alpine\nread-only\n10\n");
    assert_eq!(
        std::fs::read_to_string(work.path().join("back")).expect("written through the mount"),
        "written\n"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_pods_have_their_own_network() {
    if !common::require_root("network namespaces") {
        return;
    }
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let listen = "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',18080))\ns.listen()\nprint('listening',flush=True)\ntime.sleep(3600)";
    for name in ["net-a", "net-b"] {
        running_pod(&client, name, "python:3", &["python3", "-c", listen]).await;
    }
    let pods: Api<Pod> = Api::default_namespaced(client);
    for name in ["net-a", "net-b"] {
        let first = first_followed_line(&pods, name, None).await;
        assert_eq!(first, "listening", "{name} bound the port");
    }
    let connect =
        "import socket\nsocket.create_connection(('127.0.0.1',18080)).close()\nprint('connected')";
    let mut proc = pods
        .exec(
            "net-a",
            ["python3", "-c", connect],
            &AttachParams::default().stderr(false),
        )
        .await
        .expect("exec");
    let out = read_all(proc.stdout()).await;
    assert_eq!(out, "connected\n", "exec shares the pod's network");
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_ephemeral_containers_join_a_running_pod() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    create(&pods, json!({"metadata": {"name": "host"}, "spec": {
        "volumes": [{"name": "data", "emptyDir": {}}],
        "containers": [{"name": "main", "image": "busybox", "volumeMounts": [{"name": "data", "mountPath": "/__arc_hook_sim_data"}]}]}})).await;
    wait_for(&pods, "host", "Running", conditions::is_pod_running()).await;
    let step = json!({"spec": {"ephemeralContainers": [{"name": "step", "image": "alpine:3.19",
        "command": ["sh", "-c", "echo from the step > /__arc_hook_sim_data/x; grep ^ID= /etc/os-release"],
        "volumeMounts": [{"name": "data", "mountPath": "/__arc_hook_sim_data"}]}]}});
    pods.patch_ephemeral_containers("host", &PatchParams::default(), &Patch::Strategic(step))
        .await
        .expect("ephemeral container added");
    wait_for(&pods, "host", "step finished", ephemeral_succeeded("step")).await;
    let logs = container_log(&pods, "host", "step").await;
    // Without root the step runs on the host: its image and the pod's volume are not real.
    if common::require_root("the step's own image and the pod's volume (mount namespaces)") {
        assert_eq!(logs, "ID=alpine\n");
        let mut cat = pods
            .exec(
                "host",
                ["cat", "/__arc_hook_sim_data/x"],
                &AttachParams::default().stderr(false),
            )
            .await
            .expect("exec");
        assert_eq!(
            read_all(cat.stdout()).await,
            "from the step\n",
            "the step wrote into the pod's volume"
        );
    }
    let changed = json!({"spec": {"ephemeralContainers": [{"name": "step", "image": "other"}]}});
    let (code, _) = api_code(
        pods.patch_ephemeral_containers(
            "host",
            &PatchParams::default(),
            &Patch::Strategic(changed),
        )
        .await
        .expect_err("no changes"),
    );
    assert_eq!(code, 422);
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_ephemeral_containers_added_while_pending_start_with_the_pod() {
    // A long start delay: the step is added while the pod is still Pending.
    let sim = arc_hook::sim::Simulator::start(SimConfig {
        start_delay: Duration::from_millis(1500),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let pods: Api<Pod> = Api::default_namespaced(sim.client().await);
    pods.create(&PostParams::default(), &pod("early", "busybox", &[]))
        .await
        .expect("created");
    // `resources: {}` is the zero value, which the API accepts on an ephemeral container.
    let step = json!({"spec": {"ephemeralContainers": [{"name": "step", "image": "alpine:3.19",
        "command": ["sh", "-c", "echo started-early"], "resources": {}}]}});
    let added = pods
        .patch_ephemeral_containers("early", &PatchParams::default(), &Patch::Strategic(step))
        .await
        .expect("ephemeral container added with resources: {}");
    assert_eq!(
        added.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "added before the pod runs"
    );
    wait_for(
        &pods,
        "early",
        "the early step finished",
        ephemeral_succeeded("step"),
    )
    .await;
    let logs = container_log(&pods, "early", "step").await;
    assert_eq!(logs, "started-early\n");
    let limits = json!({"spec": {"ephemeralContainers": [
        {"name": "step", "image": "alpine:3.19", "command": ["sh", "-c", "echo started-early"], "resources": {}},
        {"name": "sized", "image": "alpine:3.19", "resources": {"limits": {}}}]}});
    let (code, message) = api_code(
        pods.patch_ephemeral_containers(
            "early",
            &PatchParams::default(),
            &Patch::Strategic(limits),
        )
        .await
        .expect_err("limits: {} is set"),
    );
    assert_eq!(code, 422);
    assert!(
        message.contains("spec.ephemeralContainers[1].resources: Forbidden: cannot be set for an Ephemeral Container"),
        "{message}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_without_namespaces_runs_pods_on_host_paths() {
    let sim = start(SimConfig {
        use_namespaces: false,
        ..SimConfig::default()
    })
    .await;
    assert!(!sim.uses_namespaces());
    let pods: Api<Pod> = Api::default_namespaced(sim.client().await);
    create(&pods, json!({"metadata": {"name": "flat"}, "spec": {"restartPolicy": "Never",
        "volumes": [{"name": "v", "emptyDir": {}}],
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "test -d /__arc_hook_sim_unmapped || echo unmapped"],
            "volumeMounts": [{"name": "v", "mountPath": "/__arc_hook_sim_unmapped"}]}]}})).await;
    wait_for(&pods, "flat", "Succeeded", phase_is("Succeeded")).await;
    assert_eq!(
        pods.logs("flat", &LogParams::default())
            .await
            .expect("logs"),
        "unmapped\n"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_exec_speaks_the_v4_protocol_too() {
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    running_pod(&client, "v4", "busybox", &[]).await;
    let url = format!(
        "{}/api/v1/namespaces/default/pods/v4/exec?command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%205&stdout=true&stderr=true",
        sim.url().replace("http://", "ws://")
    );
    let mut req = url.into_client_request().expect("request");
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().expect("header"),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgraded");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("v4.channel.k8s.io")
    );
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), None);
    while let Some(msg) = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("frames in time")
    {
        match msg.expect("frame") {
            Message::Binary(b) if !b.is_empty() => match b[0] {
                1 => out.extend_from_slice(&b[1..]),
                2 => err.extend_from_slice(&b[1..]),
                3 => {
                    status = Some(
                        serde_json::from_slice::<serde_json::Value>(&b[1..]).expect("status json"),
                    )
                }
                _ => {}
            },
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(1000));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let status = status.expect("a status on channel 3");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(
        status["details"]["causes"][0],
        json!({"reason": "ExitCode", "message": "5"})
    );
    assert_eq!(
        status["message"],
        "command terminated with non-zero exit code: error executing command [sh -c echo out; echo err >&2; exit 5], exit code 5"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_oom_killed_container_reports_oomkilled() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods = running_pod(&client, "hungry", "busybox", &[]).await;
    sim.oom_kill("default", "hungry", "main")
        .await
        .expect("killed");
    let p = wait_for(&pods, "hungry", "Failed", phase_is("Failed")).await;
    let term = p
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c[0].state.clone())
        .and_then(|s| s.terminated)
        .expect("terminated");
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (137, Some("OOMKilled"))
    );
    assert!(
        sim.oom_kill("default", "hungry", "main").await.is_err(),
        "nothing left to kill"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_exec_streams_large_payloads_both_ways() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods = running_pod(&client, "bulk", "busybox", &[]).await;
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let ap = AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(false);
    let started = Instant::now();
    let mut proc = pods.exec("bulk", ["sh", "-c", "cat > /tmp/arc-hook-sim-bulk; cat /tmp/arc-hook-sim-bulk; rm /tmp/arc-hook-sim-bulk"], &ap).await.expect("exec");
    let mut stdin = proc.stdin().expect("stdin");
    let mut stdout = proc.stdout().expect("stdout");
    let status = proc.take_status().expect("status");
    let data = payload.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&data).await.expect("payload sent");
        stdin.shutdown().await.expect("stdin closed");
    });
    let mut echoed = Vec::new();
    tokio::time::timeout(WAIT, stdout.read_to_end(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo read");
    writer.await.expect("writer");
    let status = status.await.expect("status");
    assert_eq!(status.status.as_deref(), Some("Success"));
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "payload came back intact");
    eprintln!("8 MiB round trip in {:?}", started.elapsed());
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_secrets_and_configmaps_feed_env_and_volumes() {
    use k8s_openapi::api::core::v1::Secret;
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let created = create(
        &secrets,
        json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cr$t \"quoted\""}}),
    )
    .await;
    assert_eq!(created.data.expect("data")["token"].0, b"s3cr$t \"quoted\"");
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    create(
        &cms,
        json!({"metadata": {"name": "settings"}, "data": {"MODE": "fast"}}),
    )
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    create(&pods, json!({"metadata": {"name": "consumer"}, "spec": {"restartPolicy": "Never",
        "volumes": [{"name": "sec", "secret": {"secretName": "creds"}}],
        "containers": [{"name": "main", "image": "busybox",
            "envFrom": [{"configMapRef": {"name": "settings"}}],
            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
            "command": ["sh", "-c", "echo \"$MODE|$TOKEN\"; if [ -d /__arc_hook_sim_sec ]; then cat /__arc_hook_sim_sec/token; echo; fi"],
            "volumeMounts": [{"name": "sec", "mountPath": "/__arc_hook_sim_sec", "readOnly": true}]}]}})).await;
    wait_for(&pods, "consumer", "Succeeded", phase_is("Succeeded")).await;
    let logs = pods
        .logs("consumer", &LogParams::default())
        .await
        .expect("logs");
    let expected = if sim.uses_namespaces() {
        "fast|s3cr$t \"quoted\"\ns3cr$t \"quoted\"\n"
    } else {
        "fast|s3cr$t \"quoted\"\n"
    };
    assert_eq!(logs, expected);
    let deleted = secrets
        .delete("creds", &DeleteParams::default())
        .await
        .expect("deleted");
    assert!(deleted.is_right(), "secrets answer deletion with a Status");
    assert_eq!(
        api_code(secrets.get("creds").await.expect_err("gone")).0,
        404
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_init_containers_run_to_completion_first() {
    let sim = start(SimConfig::default()).await;
    let pods: Api<Pod> = Api::default_namespaced(sim.client().await);
    create(&pods, json!({"metadata": {"name": "staged"}, "spec": {"nodeName": "sim-node-1",
        "volumes": [{"name": "ext", "emptyDir": {}}],
        // As upstream's fs-init: another user than the job's, writing into an emptyDir, which
        // the kubelet makes world-writable.
        "initContainers": [{"name": "fs-init", "image": "busybox", "command": ["sh", "-c", "mkdir /__e/sub && echo staged > /__e/sub/marker; echo init ran"],
            "securityContext": {"runAsUser": 1001, "runAsGroup": 1001},
            "volumeMounts": [{"name": "ext", "mountPath": "/__e"}]}],
        "containers": [{"name": "job", "image": "busybox", "command": ["sh", "-c", "cat /__e/sub/marker; exec sleep 3600"],
            "volumeMounts": [{"name": "ext", "mountPath": "/__e"}]}]}})).await;
    let p = wait_for(&pods, "staged", "Running", conditions::is_pod_running()).await;
    let status = p.status.expect("status");
    let init = &status.init_container_statuses.expect("init statuses")[0];
    let term = init
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("init terminated");
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (0, Some("Completed"))
    );
    let initialized = status
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Initialized")
        .expect("Initialized");
    assert_eq!(initialized.status, "True");
    let init_log = container_log(&pods, "staged", "fs-init").await;
    assert_eq!(init_log, "init ran\n");
    if sim.uses_namespaces() {
        let first = first_followed_line(&pods, "staged", Some("job")).await;
        assert_eq!(
            first, "staged",
            "the init container's file is in the shared volume"
        );
    }
    // With one app container, logs default to it even when there are init containers.
    let default_log = pods
        .logs("staged", &LogParams::default())
        .await
        .expect("default container");
    if sim.uses_namespaces() {
        assert_eq!(default_log, "staged\n");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_watch_from_a_too_old_version_gets_410() {
    use kube::core::WatchEvent;
    let sim = start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client().await);
    let mut stream = cms
        .watch(&WatchParams::default(), "1")
        .await
        .expect("watch")
        .boxed();
    let first = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .expect("event in time")
        .expect("decodes")
        .expect("an event");
    match first {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version: 1"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_deleting_a_pod_terms_its_processes_and_removes_its_sandbox() {
    let out = tempfile::tempdir().expect("tempdir");
    let sim = start(SimConfig {
        pvc_dirs: HashMap::from([("out".to_string(), out.path().to_path_buf())]),
        ..SimConfig::default()
    })
    .await;
    let client = sim.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let dir = if sim.uses_namespaces() {
        "/__arc_hook_sim_out".to_string()
    } else {
        out.path().display().to_string()
    };
    // `$$` in a command is an escaped `$` for Kubernetes, so the shell pid is `$$$$`.
    let script = format!(
        "echo $$$$ > {dir}/pid; trap 'echo terminated > {dir}/term; exit 0' TERM; while true; do sleep 0.05; done"
    );
    let created = create(
        &pods,
        json!({"metadata": {"name": "doomed"}, "spec": {
        "volumes": [{"name": "out", "persistentVolumeClaim": {"claimName": "out"}}],
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script],
            "volumeMounts": [{"name": "out", "mountPath": "/__arc_hook_sim_out"}]}]}}),
    )
    .await;
    wait_for(&pods, "doomed", "Running", conditions::is_pod_running()).await;
    let uid = created.metadata.uid.expect("uid");
    let sandbox = sim
        .state_dir()
        .join("pods")
        .join(format!("default_doomed_{uid}"));
    assert!(sandbox.is_dir(), "a running pod has a sandbox");
    let pid_file = out.path().join("pid");
    // The container writes its pid as it starts; the pod is already Running, so this is quick.
    let read_pid = async {
        loop {
            if let Some(p) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                break p;
            }
            tokio::task::yield_now().await;
        }
    };
    let pid = tokio::time::timeout(WAIT, read_pid)
        .await
        .expect("the container wrote its pid");
    let deleted = pods
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("deleted");
    let marked = deleted.left().expect("pods answer deletion with the pod");
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "graceful deletion marks the pod first"
    );
    sim_support::wait_deleted(&pods, "doomed").await;
    assert_eq!(
        std::fs::read_to_string(out.path().join("term")).expect("the container saw SIGTERM"),
        "terminated\n"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container process is gone"
    );
    assert!(!sandbox.exists(), "the sandbox is removed");
    let events: Api<Event> = Api::default_namespaced(client);
    let killing = events
        .list(&ListParams::default().fields("involvedObject.name=doomed,reason=Killing"))
        .await
        .expect("events")
        .items;
    assert_eq!(
        killing[0].message.as_deref(),
        Some("Stopping container main")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_restarted_containers_keep_their_previous_log() {
    let sim = start(SimConfig::default()).await;
    let pods: Api<Pod> = Api::default_namespaced(sim.client().await);
    // The container's private /tmp survives a restart, as its writable layer would.
    let script = "if [ -f /tmp/ran ]; then echo second run; exec sleep 3600; fi; touch /tmp/ran; echo first run; exit 1";
    create(
        &pods,
        json!({"metadata": {"name": "flaky"}, "spec": {"restartPolicy": "OnFailure",
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}]}}),
    )
    .await;
    let restarted_and_running = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs[0].restart_count == 1
                    && cs[0].state.as_ref().is_some_and(|s| s.running.is_some())
            })
    };
    let p = wait_for(
        &pods,
        "flaky",
        "restarted once and running",
        restarted_and_running,
    )
    .await;
    let last = p
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|cs| cs[0].last_state.clone())
        .and_then(|s| s.terminated)
        .expect("last state");
    assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    let previous = pods
        .logs(
            "flaky",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .expect("previous log");
    if sim.uses_namespaces() {
        assert_eq!(previous, "first run\n");
        let first = first_followed_line(&pods, "flaky", None).await;
        assert_eq!(first, "second run");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_kube_watcher_rides_out_watches_closed_early() {
    let sim = start(SimConfig::default()).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client().await);
    sim.faults()
        .update(|f| f.watch_close_after_events = Some(1));
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    for n in ["one", "two", "three"] {
        create(&cms, json!({"metadata": {"name": n}})).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("events keep coming")
            .expect("watch ok")
            .expect("open");
        if let watcher::Event::Apply(c) | watcher::Event::InitApply(c) = ev {
            seen.insert(c.metadata.name.unwrap_or_default());
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        vec!["one", "three", "two"]
    );
    sim.shutdown().await;
}

/// The kubelet's exec probes: a readiness probe keeps the container (and the pod) unready, with
/// `Unhealthy` events carrying the probe's output, until it passes; a startup probe that keeps
/// failing gets the container killed and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_readiness_and_startup_probes_run_in_the_container() {
    let sim = start(SimConfig::default()).await;
    let client = sim.client().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    // A file both the container and its probe see: in an emptyDir where pods get their own
    // mount namespaces (root), else on the host (each container has a private /tmp).
    let host = tempfile::tempdir().expect("tempdir");
    let flag = if is_root() {
        std::path::PathBuf::from("/data/up")
    } else {
        host.path().join("up")
    };
    create(&pods, json!({
        "metadata": {"name": "probed"},
        "spec": {"restartPolicy": "Always", "volumes": [{"name": "data", "emptyDir": {}}], "containers": [
            {"name": "db", "image": "postgres:16", "volumeMounts": [{"name": "data", "mountPath": "/data"}],
             "command": ["sh", "-c", format!("sleep 2; touch {}; exec sleep infinity", flag.display())],
             "readinessProbe": {"exec": {"command": ["sh", "-c", format!("test -f {} && echo up || {{ echo not yet; exit 1; }}", flag.display())]},
                                "periodSeconds": 1, "failureThreshold": 2}},
            {"name": "stuck", "image": "busybox:1",
             "command": ["sleep", "infinity"],
             "startupProbe": {"exec": {"command": ["sh", "-c", "echo still booting; exit 1"]},
                              "periodSeconds": 1, "failureThreshold": 2}}
        ]}
    })).await;
    wait_for(&pods, "probed", "Running", conditions::is_pod_running()).await;
    let ready = |p: &Pod, name: &str| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == name))
            .map(|c| (c.ready, c.started, c.restart_count))
    };
    let now = pods.get("probed").await.expect("pod");
    assert_eq!(
        ready(&now, "db").map(|r| r.0),
        Some(false),
        "unready until probed"
    );
    let began = Instant::now();
    let db_ready = wait_for(&pods, "probed", "db ready", |p: Option<&Pod>| {
        p.and_then(|p| ready(p, "db")).is_some_and(|r| r.0)
    })
    .await;
    assert!(
        began.elapsed() >= Duration::from_millis(500),
        "{:?}",
        began.elapsed()
    );
    let pod_ready = db_ready
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone());
    assert_eq!(
        pod_ready.as_deref(),
        Some("False"),
        "stuck is never started"
    );
    let restarted = wait_for(&pods, "probed", "stuck restarted", |p: Option<&Pod>| {
        p.and_then(|p| ready(p, "stuck")).is_some_and(|r| r.2 >= 1)
    })
    .await;
    assert_eq!(ready(&restarted, "stuck").map(|r| r.1), Some(Some(false)));
    let events: Api<Event> = Api::default_namespaced(client);
    let list = events.list(&ListParams::default()).await.expect("events");
    let said = |path: &str, reason: &str, text: &str| {
        list.items.iter().any(|e| {
            e.involved_object.field_path.as_deref() == Some(path)
                && e.reason.as_deref() == Some(reason)
                && e.type_.as_deref()
                    == Some(if reason == "Unhealthy" {
                        "Warning"
                    } else {
                        "Normal"
                    })
                && e.message.as_deref().is_some_and(|m| m.starts_with(text))
        })
    };
    assert!(said(
        "spec.containers{db}",
        "Unhealthy",
        "Readiness probe failed: not yet"
    ));
    assert!(said(
        "spec.containers{stuck}",
        "Unhealthy",
        "Startup probe failed: still booting"
    ));
    assert!(said(
        "spec.containers{stuck}",
        "Killing",
        "Container stuck failed startup probe, will be restarted"
    ));
    sim.shutdown().await;
}
