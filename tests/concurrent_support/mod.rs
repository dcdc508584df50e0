//! Concurrent copies of one recorded job, each with its own runner, replayed at the same moment
//! against one simulator (or a cluster): failures, wall time, prepare_job's times, leftovers, and
//! whether two live workflow pods on a node ever held the same cache slot. Shared by
//! `tests/concurrent_jobs.rs` and `benches/concurrent_jobs.rs`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_hook::sim::{PolicyRule, SimConfig, Simulator, arc_chart_default_role};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

/// The recorded job every runner replays (`ARC_HOOK_CONCURRENT_JOB` names another).
pub const JOB: &str = "fixtures/jobs/build-and-test";

fn job_dir() -> PathBuf {
    let job = std::env::var("ARC_HOOK_CONCURRENT_JOB").unwrap_or_else(|_| JOB.to_string());
    Path::new(env!("CARGO_MANIFEST_DIR")).join(job)
}
/// The label on every workflow pod holding a cache slot.
const SLOT_LABEL: &str = "arc-hook.dev/cache-slot";
/// What every object arc-hook creates carries.
const MANAGED: &str = "app.kubernetes.io/managed-by=arc-hook";
/// Upper bound for one replay: far above what 100 jobs on two cores need.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the garbage collector and cleanup get to remove everything after the last job.
const LEFTOVER_WAIT: Duration = Duration::from_secs(30);

/// One run's shape.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub jobs: usize,
    /// No-volume mode (`ARC_HOOK_WORK_VOLUME=copy`), else a work claim per runner.
    pub no_volume: bool,
    /// A worker-podspec template naming `${CACHE_SLOT}` (else no template: no slot is taken).
    pub slot_template: bool,
    /// The Role lacks leases (ARC's default Role plus pods watch): slots are Secret locks.
    pub without_leases: bool,
}

impl Scenario {
    pub fn label(&self) -> String {
        format!(
            "{}, {}{}",
            if self.no_volume { "no-volume" } else { "claim" },
            if self.slot_template {
                "${CACHE_SLOT} template"
            } else {
                "no template"
            },
            if self.without_leases {
                ", Role without leases"
            } else {
                ""
            }
        )
    }
}

/// One replay's result.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub runner: String,
    pub code: i32,
    pub prepare: Option<Duration>,
    /// The first lines saying what went wrong (failed runs only).
    pub error: String,
    /// The replay's whole output (failed runs only).
    pub output: String,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub single_prepare: Option<Duration>,
    pub wall: Duration,
    pub results: Vec<JobResult>,
    /// Objects of arc-hook still there after the run (`kind/name`).
    pub leftovers: Vec<String>,
    /// Two live workflow pods holding one slot on one node: `slot N on node: a and b`.
    pub shared_slots: Vec<String>,
    /// The highest slot number seen, plus one.
    pub slots_used: u32,
    /// Whether the simulator's pods had network namespaces of their own (`None`: a cluster).
    pub pod_namespaces: Option<bool>,
}

impl Outcome {
    pub fn failures(&self) -> Vec<&JobResult> {
        self.results.iter().filter(|r| r.code != 0).collect()
    }

    fn prepares(&self) -> Vec<Duration> {
        let mut p: Vec<Duration> = self.results.iter().filter_map(|r| r.prepare).collect();
        p.sort();
        p
    }

    pub fn prepare_median(&self) -> Option<Duration> {
        let p = self.prepares();
        p.get(p.len() / 2).copied()
    }

    pub fn prepare_worst(&self) -> Option<Duration> {
        self.prepares().last().copied()
    }

    /// One table row: scenario, jobs, failed, wall, prepare_job median / worst / single, slots,
    /// leftovers, shared slots.
    pub fn row(&self) -> String {
        let s = |d: Option<Duration>| {
            d.map(|d| format!("{:.2}s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        };
        format!(
            "| {} | {} | {} | {:.1}s | {} | {} | {} | {} | {} | {} |",
            self.scenario.label(),
            self.scenario.jobs,
            self.failures().len(),
            self.wall.as_secs_f64(),
            s(self.prepare_median()),
            s(self.prepare_worst()),
            s(self.single_prepare),
            if self.scenario.slot_template {
                self.slots_used.to_string()
            } else {
                "-".into()
            },
            self.leftovers.len(),
            self.shared_slots.len(),
        )
    }
}

/// The table's header, for [`Outcome::row`].
pub const HEADER: &str = "| scenario | jobs | failed | wall | prepare_job median | worst | single job | slots | left behind | shared slots |\n|---|---|---|---|---|---|---|---|---|---|";

/// Where the replays run.
pub enum Target {
    /// A simulator in this process, the server `arc-hook sim serve` runs.
    Sim(Simulator),
    /// A cluster named by a kubeconfig (no-volume mode only: a work claim needs runner pods
    /// that share it).
    Cluster(PathBuf),
}

/// Everything one run needs on disk.
struct Run {
    root: PathBuf,
    kubeconfig: PathBuf,
    template: Option<PathBuf>,
    client: kube::Client,
    namespace: String,
}

fn runner_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

/// The template: `${CACHE_SLOT}` in an annotation, in the job's env and in a per-slot cache
/// directory, as the shipped templates use it.
fn write_template(root: &Path) -> PathBuf {
    let path = root.join("slot-template.yaml");
    let yaml = "metadata:\n  annotations:\n    bench.arc-hook.dev/slot: \"${CACHE_SLOT}\"\n\
                spec:\n  containers:\n    - name: $job\n      env:\n        - {name: CACHE_SLOT, value: \"${CACHE_SLOT}\"}\n";
    std::fs::write(&path, yaml).expect("template written");
    path
}

/// Starts the simulator for `runners` (claim mode: one claim and runner pod each).
async fn start_sim(root: &Path, scenario: &Scenario, runners: &[String]) -> Simulator {
    let settings = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(JOB)
            .join("sim.json"),
    )
    .expect("the job's sim.json");
    let settings = arc_hook::sim::settings::SimSettings::from_json(&settings).expect("sim.json");
    let mut cfg = SimConfig {
        state_dir: Some(root.join("sim")),
        start_delay: Duration::from_millis(100),
        ..Default::default()
    };
    settings.apply(&mut cfg).expect("sim.json applies");
    // Room for every runner and workflow pod: the node's capacity is not what is measured.
    cfg.node_allocatable
        .insert("pods".into(), (runners.len() * 2 + 10).to_string());
    if !scenario.no_volume {
        for r in runners {
            cfg.pvc_dirs
                .insert(format!("{r}-work"), root.join(r).join("_work"));
        }
    }
    if scenario.without_leases {
        let mut rules = arc_chart_default_role();
        rules.push(PolicyRule::new(&[""], &["pods"], &["watch"]));
        cfg.rbac = Some(rules);
    }
    let sim = Simulator::start(cfg).await.expect("simulator starts");
    if !scenario.no_volume {
        let pods: kube::Api<Pod> = kube::Api::default_namespaced(sim.client().await);
        for r in runners {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": r, "labels": {"app.kubernetes.io/component": "runner"}},
                "spec": {"containers": [{"name": "runner", "image": "arc-hook-runner:bench", "command": ["sleep", "infinity"]}], "restartPolicy": "Never"}
            }))
            .expect("runner pod");
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("runner pod created");
        }
    }
    sim
}

async fn client_for(kubeconfig: &Path) -> (kube::Client, String) {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig readable");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kubeconfig usable");
    let ns = cfg.default_namespace.clone();
    (kube::Client::try_from(cfg).expect("client"), ns)
}

/// Plays one copy of the job as `runner`.
async fn replay(run: &Run, hook: &Path, scenario: &Scenario, runner: &str) -> JobResult {
    let mut cmd = tokio::process::Command::new(hook);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["replay", "--cluster", "--workdir"])
        .arg(run.root.join(runner))
        .arg(job_dir())
        .env("KUBECONFIG", &run.kubeconfig)
        .env("ACTIONS_RUNNER_POD_NAME", runner)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE")
        .env_remove("ARC_HOOK_WORK_VOLUME")
        .kill_on_drop(true);
    if scenario.no_volume {
        cmd.env("ARC_HOOK_WORK_VOLUME", "copy");
    }
    if let Some(t) = &run.template {
        cmd.env("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", t);
    }
    let out = tokio::time::timeout(REPLAY_TIMEOUT, cmd.output()).await;
    let (code, stdout, stderr) = match out {
        Ok(Ok(o)) => (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        ),
        Ok(Err(e)) => (
            -1,
            String::new(),
            format!("cannot run {}: {e}", hook.display()),
        ),
        Err(_) => (
            -1,
            String::new(),
            format!("no end after {REPLAY_TIMEOUT:?}"),
        ),
    };
    JobResult {
        runner: runner.to_string(),
        code,
        prepare: prepare_seconds(&stdout),
        error: if code == 0 {
            String::new()
        } else {
            first_errors(&stdout, &stderr)
        },
        output: if code == 0 {
            String::new()
        } else {
            format!("{stdout}\n--- stderr\n{stderr}")
        },
    }
}

/// prepare_job's time from replay's `── 01-prepare_job.json: prepare_job exited 0 (0.16s)`.
pub fn prepare_seconds(stdout: &str) -> Option<Duration> {
    stdout
        .lines()
        .find(|l| l.contains(": prepare_job exited "))
        .and_then(|l| {
            l.rsplit_once('(')?
                .1
                .strip_suffix("s)")?
                .parse::<f64>()
                .ok()
        })
        .map(Duration::from_secs_f64)
}

fn first_errors(stdout: &str, stderr: &str) -> String {
    let lines: Vec<&str> = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("fail") || l.contains("did not")
        })
        .take(3)
        .collect();
    if lines.is_empty() {
        stdout.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    } else {
        lines.join(" | ")
    }
}

/// Watches the workflow pods holding slots; records every time a pod appears on a node with a
/// slot another live pod there holds.
struct SlotWatch {
    shared: Arc<Mutex<Vec<String>>>,
    highest: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl SlotWatch {
    async fn start(client: kube::Client, ns: &str) -> SlotWatch {
        let api: kube::Api<Pod> = kube::Api::namespaced(client, ns);
        let shared = Arc::new(Mutex::new(Vec::new()));
        let highest = Arc::new(Mutex::new(0));
        let (s, h) = (shared.clone(), highest.clone());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let cfg = watcher::Config::default().labels(SLOT_LABEL);
            let mut events = watcher::watcher(api, cfg).boxed();
            let mut ready = Some(ready_tx);
            // (node, slot) -> live pod (uid, name); uid -> its key.
            let mut live: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
            let mut keys: BTreeMap<String, (String, String)> = BTreeMap::new();
            while let Some(ev) = events.next().await {
                let pod = match ev {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => (p, false),
                    Ok(watcher::Event::Delete(p)) => (p, true),
                    Ok(watcher::Event::Init) | Err(_) => continue,
                };
                let (pod, deleted) = pod;
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if deleted {
                    if let Some(k) = keys.remove(&uid)
                        && live.get(&k).is_some_and(|(u, _)| *u == uid)
                    {
                        live.remove(&k);
                    }
                    continue;
                }
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                let slot = pod
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SLOT_LABEL))
                    .cloned();
                let (Some(node), Some(slot), false) = (node, slot, keys.contains_key(&uid)) else {
                    continue;
                };
                if let Ok(n) = slot.parse::<u32>()
                    && let Ok(mut hi) = h.lock()
                {
                    *hi = (*hi).max(n + 1);
                }
                let name = pod.metadata.name.clone().unwrap_or_default();
                let key = (node.clone(), slot.clone());
                if let Some((_, other)) = live.get(&key)
                    && let Ok(mut s) = s.lock()
                {
                    s.push(format!("slot {slot} on {node}: {other} and {name}"));
                }
                live.insert(key.clone(), (uid.clone(), name));
                keys.insert(uid, key);
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), ready_rx).await;
        SlotWatch {
            shared,
            highest,
            task,
        }
    }

    fn finish(self) -> (Vec<String>, u32) {
        self.task.abort();
        let shared = self.shared.lock().map(|s| s.clone()).unwrap_or_default();
        let highest = self.highest.lock().map(|h| *h).unwrap_or_default();
        (shared, highest)
    }
}

/// arc-hook's objects still in the namespace (runner pods are the bench's, not arc-hook's).
async fn leftovers(client: &kube::Client, ns: &str) -> Vec<String> {
    let lp = ListParams::default().labels(MANAGED);
    let mut left = Vec::new();
    let names = |kind: &str, items: Vec<Option<String>>| {
        items
            .into_iter()
            .map(|n| format!("{kind}/{}", n.unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    if let Ok(l) = kube::Api::<Pod>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        left.extend(names(
            "pod",
            l.items.into_iter().map(|o| o.metadata.name).collect(),
        ));
    }
    if let Ok(l) = kube::Api::<Secret>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        left.extend(names(
            "secret",
            l.items.into_iter().map(|o| o.metadata.name).collect(),
        ));
    }
    if let Ok(l) = kube::Api::<Lease>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        left.extend(names(
            "lease",
            l.items.into_iter().map(|o| o.metadata.name).collect(),
        ));
    }
    if let Ok(l) = kube::Api::<Job>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        left.extend(names(
            "job",
            l.items.into_iter().map(|o| o.metadata.name).collect(),
        ));
    }
    left
}

/// Runs `scenario` with the hook binary `hook`: one job alone, then `scenario.jobs` at once.
/// `cluster`: a kubeconfig to play against instead of a simulator of this process.
pub async fn run(hook: &Path, scenario: Scenario, cluster: Option<&Path>) -> Outcome {
    let dir = tempfile::Builder::new()
        .prefix("arc-hook-concurrent-")
        .tempdir()
        .expect("temporary directory");
    let root = dir.path().to_path_buf();
    let prefix = format!("bench-{}", std::process::id() % 10000);
    let mut runners: Vec<String> = (0..scenario.jobs)
        .map(|i| runner_name(&prefix, i))
        .collect();
    let solo = format!("{prefix}-solo");
    runners.push(solo.clone());
    let target = match cluster {
        Some(k) => Target::Cluster(k.to_path_buf()),
        None => Target::Sim(start_sim(&root, &scenario, &runners).await),
    };
    let kubeconfig = match &target {
        Target::Sim(sim) => {
            let k = root.join("kubeconfig");
            sim.write_kubeconfig(&k).expect("kubeconfig written");
            k
        }
        Target::Cluster(k) => k.clone(),
    };
    let (client, namespace) = client_for(&kubeconfig).await;
    let run = Run {
        template: scenario.slot_template.then(|| write_template(&root)),
        root,
        kubeconfig,
        client,
        namespace,
    };
    runners.pop();

    let watch = SlotWatch::start(run.client.clone(), &run.namespace).await;
    let single = replay(&run, hook, &scenario, &solo).await;
    let started = Instant::now();
    let results =
        futures::future::join_all(runners.iter().map(|r| replay(&run, hook, &scenario, r))).await;
    let wall = started.elapsed();

    let deadline = Instant::now() + LEFTOVER_WAIT;
    let mut left = leftovers(&run.client, &run.namespace).await;
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        left = leftovers(&run.client, &run.namespace).await;
    }
    let (shared_slots, slots_used) = watch.finish();
    let mut all = vec![single.clone()];
    all.extend(results.iter().cloned());
    let pod_namespaces = match target {
        Target::Sim(sim) => {
            let own = sim.uses_namespaces();
            sim.shutdown().await;
            Some(own)
        }
        Target::Cluster(_) => None,
    };
    Outcome {
        scenario,
        single_prepare: single.prepare,
        wall,
        results: all,
        leftovers: left,
        shared_slots,
        slots_used,
        pod_namespaces,
    }
}
