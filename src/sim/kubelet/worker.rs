//! One pod's life from scheduling to teardown: pulls, sandbox, containers, restarts, status, eviction.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::container::{Container, Exit, Kind, hex64, monitor};
use super::probes::{self, ProbeKind, ProbeResult, ProbeTarget, Verdict};
use super::process::{self, Identity, Isolation, ProcessSpec};
use super::{Command, ContainerRt, Placement, PodHandle, volumes};
use crate::sim::events::{self, Source};
use crate::sim::logs::LogBuffer;
use crate::sim::store::Key;
use crate::sim::{NODE_NAME, SimState, admission, cluster, meta, resources};

/// After SIGKILL, how long to wait for processes to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// The message of an eviction, as the kubelet words it.
pub(crate) const EVICTION_MESSAGE: &str = "The node was low on resource: memory.";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Unschedulable,
    Delaying,
    PullFailed,
    /// A volume source is missing: containers stay ContainerCreating (FailedMount events).
    MountFailed,
    Starting,
    Running,
    Done,
}

struct Worker {
    sim: Arc<SimState>,
    key: Key,
    uid: String,
    pod: Value,
    handle: Arc<PodHandle>,
    containers: Vec<Container>,
    conditions: HashMap<&'static str, (bool, String, String, String)>,
    phase: &'static str,
    reason: Option<(String, String)>,
    stage: Stage,
    timer: Option<Instant>,
    exits: mpsc::UnboundedSender<Exit>,
    probes: mpsc::UnboundedSender<ProbeResult>,
    pause: Option<tokio::process::Child>,
    sandbox: PathBuf,
    volumes: HashMap<String, PathBuf>,
    start_time: Option<String>,
    pod_ip: Option<String>,
    terminating: bool,
    /// The pause before the next pull retry after a failed pull (the kubelet's image back-off,
    /// shortened: 1 s doubling to 10 s rather than 10 s to 300 s).
    pull_backoff: Duration,
}

/// The first and the longest pause between two pulls of an image that failed.
const PULL_BACKOFF: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(10));

pub(super) async fn run(
    sim: Arc<SimState>,
    pod: Value,
    handle: Arc<PodHandle>,
    mut cmds: mpsc::UnboundedReceiver<Command>,
) {
    let (exits_tx, mut exits) = mpsc::unbounded_channel();
    let (probes_tx, mut probe_results) = mpsc::unbounded_channel();
    let key = Key::new("pods", meta::namespace(&pod), meta::name(&pod));
    let uid = meta::uid(&pod).to_string();
    let sandbox = sim
        .kubelet
        .state_dir()
        .join("pods")
        .join(format!("{}_{}_{}", key.namespace, key.name, uid));
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let has_init = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let mut containers = Vec::new();
    for (kind, waiting) in [
        (Kind::Init, "PodInitializing"),
        (
            Kind::App,
            if has_init {
                "PodInitializing"
            } else {
                "ContainerCreating"
            },
        ),
    ] {
        for c in spec
            .get(kind.spec_list())
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            containers.push(Container::new(kind, c, waiting));
        }
    }
    let mut w = Worker {
        sim: sim.clone(),
        key: key.clone(),
        uid: uid.clone(),
        pod,
        handle,
        containers,
        conditions: HashMap::new(),
        phase: "Pending",
        reason: None,
        stage: Stage::Delaying,
        timer: None,
        exits: exits_tx,
        probes: probes_tx,
        pause: None,
        sandbox,
        volumes: HashMap::new(),
        start_time: None,
        pod_ip: None,
        terminating: false,
        pull_backoff: PULL_BACKOFF.0,
    };
    tracing::debug!(ns = %key.namespace, name = %key.name, "pod worker started");
    let mut freed = sim.kubelet.freed();
    w.schedule();
    loop {
        let timer = w.next_timer();
        let unschedulable = w.stage == Stage::Unschedulable;
        tokio::select! {
            // Room on the node may have come free, or the node changed: a Pending pod tries
            // again, as the scheduler retries on pod deletions and node updates.
            Ok(()) = freed.changed(), if unschedulable => w.schedule(),
            cmd = cmds.recv() => match cmd {
                None => { w.teardown(0, &mut exits).await; break; }
                Some(Command::Delete { grace }) => {
                    w.teardown(grace, &mut exits).await;
                    if sim.store.get(&key).is_some_and(|p| meta::uid(&p) == uid) {
                        sim.store.delete(&key);
                    }
                    break;
                }
                Some(Command::Shutdown(ack)) => {
                    w.teardown(0, &mut exits).await;
                    let _ = ack.send(());
                    break;
                }
                Some(Command::Evict(ack)) => {
                    w.evict(&mut exits).await;
                    let _ = ack.send(());
                }
                Some(Command::EphemeralChanged) => w.ephemeral_changed(),
                Some(Command::OomKill { container, done }) => {
                    let _ = done.send(w.oom_kill(&container));
                }
            },
            Some(exit) = exits.recv() => w.on_exit(exit),
            Some(result) = probe_results.recv() => w.on_probe(result),
            _ = sleep_until(timer) => w.on_timer(),
        }
    }
    sim.kubelet.forget(&key, &uid);
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Worker {
    fn next_timer(&self) -> Option<Instant> {
        self.containers
            .iter()
            .filter_map(|c| c.restart_at)
            .chain(self.timer)
            .min()
    }

    fn event(
        &self,
        source: Source,
        warning: bool,
        reason: &str,
        message: &str,
        field_path: Option<&str>,
    ) {
        let mut involved = self
            .sim
            .store
            .get(&self.key)
            .unwrap_or_else(|| self.pod.clone());
        involved["kind"] = json!("Pod");
        involved["apiVersion"] = json!("v1");
        events::record(
            &self.sim.store,
            &involved,
            source,
            warning,
            reason,
            message,
            field_path,
        );
    }

    fn set_condition(&mut self, kind: &'static str, ok: bool, reason: &str, message: &str) {
        let entry = self.conditions.get(kind);
        let time = match entry {
            Some((was, _, _, t)) if *was == ok => t.clone(),
            _ => meta::now(),
        };
        self.conditions
            .insert(kind, (ok, reason.to_string(), message.to_string(), time));
    }

    fn refresh_conditions(&mut self) {
        if !self.conditions.contains_key("PodScheduled") {
            return;
        }
        let sandbox = self.pod_ip.is_some();
        if self.conditions.contains_key("PodReadyToStartContainers") || sandbox {
            let alive = sandbox && !matches!(self.stage, Stage::Done) || self.phase == "Running";
            self.set_condition("PodReadyToStartContainers", alive, "", "");
        }
        let incomplete: Vec<String> = self
            .containers
            .iter()
            .filter(|c| c.kind == Kind::Init && c.terminated() != Some(0))
            .map(|c| c.name.clone())
            .collect();
        if incomplete.is_empty() {
            self.set_condition("Initialized", true, "", "");
        } else {
            self.set_condition(
                "Initialized",
                false,
                "ContainersNotInitialized",
                &format!(
                    "containers with incomplete status: [{}]",
                    incomplete.join(" ")
                ),
            );
        }
        let unready: Vec<String> = self
            .containers
            .iter()
            .filter(|c| c.kind == Kind::App && !c.ready)
            .map(|c| c.name.clone())
            .collect();
        let done = matches!(self.phase, "Succeeded" | "Failed");
        for kind in ["ContainersReady", "Ready"] {
            if unready.is_empty() {
                self.set_condition(kind, true, "", "");
            } else if done {
                self.set_condition(kind, false, "PodCompleted", "");
            } else {
                self.set_condition(
                    kind,
                    false,
                    "ContainersNotReady",
                    &format!("containers with unready status: [{}]", unready.join(" ")),
                );
            }
        }
    }

    fn status_json(&mut self) -> Value {
        self.refresh_conditions();
        let order = [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
            "DisruptionTarget",
        ];
        let conditions: Vec<Value> = order
            .iter()
            .filter_map(|k| self.conditions.get(k).map(|c| (k, c)))
            .map(|(k, (ok, reason, message, time))| {
                let mut c = json!({"type": k, "status": if *ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": time});
                if !reason.is_empty() {
                    c["reason"] = json!(reason);
                }
                if !message.is_empty() {
                    c["message"] = json!(message);
                }
                c
            })
            .collect();
        let qos = self
            .pod
            .pointer("/status/qosClass")
            .cloned()
            .unwrap_or(json!("BestEffort"));
        let mut s = json!({"phase": self.phase, "conditions": conditions, "qosClass": qos});
        if self.conditions.get("PodScheduled").is_some_and(|c| c.0) {
            let host_ip = crate::sim::cluster::node_ip(self.sim.cfg.ipv6_only);
            s["hostIP"] = json!(host_ip);
            s["hostIPs"] = json!([{ "ip": host_ip }]);
            s["startTime"] = json!(self.start_time);
            let list = |kind: Kind| -> Vec<Value> {
                self.containers
                    .iter()
                    .filter(|c| c.kind == kind)
                    .map(Container::status_json)
                    .collect()
            };
            let app = list(Kind::App);
            let init = list(Kind::Init);
            let eph = list(Kind::Ephemeral);
            s["containerStatuses"] = json!(app);
            if !init.is_empty() {
                s["initContainerStatuses"] = json!(init);
            }
            if !eph.is_empty() {
                s["ephemeralContainerStatuses"] = json!(eph);
            }
        }
        if let Some(ip) = &self.pod_ip {
            s["podIP"] = json!(ip);
            s["podIPs"] = json!([{"ip": ip}]);
        }
        if let Some((reason, message)) = &self.reason {
            s["reason"] = json!(reason);
            s["message"] = json!(message);
        }
        s
    }

    fn publish(&mut self) {
        let status = self.status_json();
        let uid = self.uid.clone();
        let _ = self.sim.store.update::<()>(&self.key, None, |p| {
            if meta::uid(p) == uid {
                p["status"] = status;
            }
            Ok(())
        });
    }

    fn ensure_claims(&self) -> Option<String> {
        let ns = self.key.namespace.clone();
        let claims: Vec<String> = self
            .pod
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| {
                v.pointer("/persistentVolumeClaim/claimName")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        for claim in claims {
            let key = Key::new("persistentvolumeclaims", &ns, &claim);
            if self.sim.store.get(&key).is_some() {
                continue;
            }
            let Some(dir) = self.sim.cfg.pvc_dirs.get(&claim) else {
                return Some(claim);
            };
            let mut pvc = json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": claim, "namespace": ns, "annotations": {"arc-hook.sim/host-dir": dir.display().to_string()}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "sim"},
            });
            if admission::admit_create(resources::by_id("persistentvolumeclaims"), &mut pvc).is_ok()
            {
                let _ = self.sim.store.create(key, pvc);
            }
        }
        None
    }

    fn schedule(&mut self) {
        let missing = self.ensure_claims();
        // The node as the API has it now: `kubectl taint` / `kubectl label` change it.
        let node = self.sim.store.get(&Key::new("nodes", "", NODE_NAME));
        let labels = node
            .as_ref()
            .and_then(|n| n.pointer("/metadata/labels"))
            .unwrap_or(&cluster::node_labels())
            .as_object()
            .cloned()
            .unwrap_or_default();
        let taints: Vec<Value> = node
            .as_ref()
            .and_then(|n| n.pointer("/spec/taints"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let preset = self
            .pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        if let Some(node) = preset.as_deref().filter(|n| *n != NODE_NAME) {
            // Bound to a node that does not exist: stays Pending, as on a real cluster.
            tracing::warn!(node, pod = %self.key.name, "pod bound to a node the simulator does not have ({NODE_NAME}); it stays Pending");
            self.stage = Stage::Unschedulable;
            return;
        }
        let placement = self.sim.kubelet.place(
            &self.pod,
            &labels,
            &taints,
            missing.as_deref(),
            preset.is_some(),
        );
        match placement {
            Placement::Unschedulable(message) => {
                self.stage = Stage::Unschedulable;
                self.set_condition("PodScheduled", false, "Unschedulable", &message);
                self.publish();
                self.event(Source::Scheduler, true, "FailedScheduling", &message, None);
            }
            Placement::Rejected(reason, message) => {
                // The kubelet's admission: the pod fails before any container is created.
                self.set_condition("PodScheduled", true, "", "");
                self.event(Source::Kubelet, true, &reason, &message, None);
                self.reason = Some((reason, message));
                self.finish("Failed");
                self.publish();
            }
            Placement::Bound => {
                let _ = self.sim.store.update::<()>(&self.key, None, |p| {
                    p["spec"]["nodeName"] = json!(NODE_NAME);
                    Ok(())
                });
                self.pod["spec"]["nodeName"] = json!(NODE_NAME);
                self.set_condition("PodScheduled", true, "", "");
                self.start_time = Some(meta::now());
                self.stage = Stage::Delaying;
                self.timer = Some(Instant::now() + self.sim.cfg.start_delay);
                self.publish();
                // Pods created with spec.nodeName bypass the scheduler and get no Scheduled event.
                if preset.is_none() {
                    let msg = format!(
                        "Successfully assigned {}/{} to {NODE_NAME}",
                        self.key.namespace, self.key.name
                    );
                    self.event(Source::Scheduler, false, "Scheduled", &msg, None);
                }
            }
        }
    }

    fn on_timer(&mut self) {
        if self.sim.kubelet.stopped() {
            self.timer = None;
            self.containers.iter_mut().for_each(|c| c.restart_at = None);
            return;
        }
        let now = Instant::now();
        if self.timer.is_some_and(|t| t <= now) {
            self.timer = None;
            match self.stage {
                Stage::Delaying => {
                    let mounted = self.make_sandbox();
                    // The pod IP is in the API before any container reads it through a fieldRef.
                    self.publish();
                    if mounted {
                        self.stage = Stage::Starting;
                        self.start_pending_ephemeral();
                        self.start_next();
                    } else {
                        self.stage = Stage::MountFailed;
                    }
                }
                Stage::PullFailed => self.pull_back_off_or_retry(),
                _ => {}
            }
        }
        let due: Vec<usize> = (0..self.containers.len())
            .filter(|i| self.containers[*i].restart_at.is_some_and(|t| t <= now))
            .collect();
        for i in due {
            self.containers[i].restart_at = None;
            if !self.terminating {
                self.start_container(i);
            }
        }
        self.publish();
    }

    /// Sets up the sandbox and volumes; `false` when a volume source is missing, which keeps
    /// the containers from starting, as the kubelet's volume manager does.
    fn make_sandbox(&mut self) -> bool {
        if self.sim.kubelet.stopped() {
            return false;
        }
        let mut mounted = true;
        if let Err(e) = std::fs::create_dir_all(&self.sandbox) {
            tracing::warn!(error = %e, dir = %self.sandbox.display(), "cannot create pod sandbox");
        }
        match volumes::prepare(
            &self.sim.cfg,
            &self.sim.store,
            self.sim.kubelet.state_dir(),
            &self.sandbox,
            &self.pod,
        ) {
            Ok((dirs, missing)) => {
                self.volumes = dirs;
                if let Err(e) =
                    super::memory_volumes::mount_memory_volumes(&self.pod, &self.sandbox)
                {
                    tracing::warn!(error = %e, "memory-backed emptyDir stays a plain directory");
                }
                for m in missing {
                    mounted = false;
                    self.event(
                        Source::Kubelet,
                        true,
                        "FailedMount",
                        &format!("MountVolume.SetUp failed {m}"),
                        None,
                    );
                }
            }
            Err(e) => {
                mounted = false;
                self.event(
                    Source::Kubelet,
                    true,
                    "FailedMount",
                    &format!("MountVolume.SetUp failed: {e}"),
                    None,
                )
            }
        }
        let host_network = self.pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true));
        if self.sim.kubelet.namespaces() && !host_network {
            match process::spawn_pause() {
                Ok(child) => {
                    self.handle.rt().pause_pid = child.id().map(|p| p as i32);
                    self.pause = Some(child);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the pod network namespace; the pod shares the host network");
                }
            }
        }
        let mut h = DefaultHasher::new();
        self.uid.hash(&mut h);
        let n = h.finish();
        self.pod_ip = Some(if self.sim.cfg.ipv6_only {
            format!("fd00:10:244::{:x}", n % 0xfffe + 2)
        } else {
            format!("10.244.{}.{}", (n >> 8) % 250, n % 250 + 2)
        });
        mounted
    }

    /// Starts the next init container, or all app containers once init is done.
    fn start_next(&mut self) {
        if self.terminating || self.stage == Stage::PullFailed {
            return;
        }
        let next_init = self
            .containers
            .iter()
            .position(|c| c.kind == Kind::Init && c.terminated() != Some(0));
        match next_init {
            Some(i)
                if self.containers[i].pid.is_none() && self.containers[i].restart_at.is_none() =>
            {
                self.start_container(i)
            }
            Some(_) => {}
            None => {
                // After a pull retry some app containers may be running already.
                let not_started = |c: &Container| {
                    c.kind == Kind::App && c.pid.is_none() && c.terminated().is_none()
                };
                for c in self.containers.iter_mut().filter(|c| not_started(c)) {
                    c.state = json!({"waiting": {"reason": "ContainerCreating"}});
                }
                let apps: Vec<usize> = (0..self.containers.len())
                    .filter(|i| not_started(&self.containers[*i]))
                    .collect();
                for i in apps {
                    if self.stage == Stage::PullFailed {
                        break;
                    }
                    self.start_container(i);
                }
                if self.stage != Stage::PullFailed && self.stage != Stage::Done {
                    self.stage = Stage::Running;
                    if self
                        .containers
                        .iter()
                        .any(|c| c.kind == Kind::App && c.pid.is_some())
                    {
                        self.phase = "Running";
                    }
                }
            }
        }
        self.publish();
    }

    fn pull(&mut self, i: usize) -> bool {
        let image = self.containers[i].image().to_string();
        let policy = self.containers[i]
            .spec
            .get("imagePullPolicy")
            .and_then(Value::as_str)
            .unwrap_or("IfNotPresent")
            .to_string();
        if let Some(message) = super::image_ref::invalid_image_message(&image) {
            self.container_event(i, true, "InspectFailed", &message);
            self.image_unavailable(i, "InvalidImageName", message);
            self.stage = Stage::PullFailed;
            return false;
        }
        if let Some(cause) = self.sim.pull_error(&image) {
            self.container_event(i, false, "Pulling", &format!("Pulling image \"{image}\""));
            self.container_event(
                i,
                true,
                "Failed",
                &format!("Failed to pull image \"{image}\": {cause}"),
            );
            self.image_unavailable(i, "ErrImagePull", cause);
            self.stage = Stage::PullFailed;
            self.timer =
                Some(Instant::now() + self.sim.cfg.start_delay.max(Duration::from_millis(500)));
            return false;
        }
        if !self.containers[i].pulled {
            // A retry after a failed pull really pulls, whatever the policy.
            let retried = self.containers[i]
                .state
                .pointer("/waiting/reason")
                .and_then(Value::as_str)
                == Some("ImagePullBackOff");
            if policy == "Always" || retried {
                self.container_event(i, false, "Pulling", &format!("Pulling image \"{image}\""));
                self.container_event(i, false, "Pulled", &format!("Successfully pulled image \"{image}\" in 12ms (12ms including waiting). Image size: 3623807 bytes."));
            } else {
                self.container_event(
                    i,
                    false,
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                );
            }
            self.containers[i].pulled = true;
        }
        true
    }

    /// After a failed pull: the containers go to `ImagePullBackOff` and a retry is timed; when
    /// that comes, the pulls are tried again (and fail again, or the containers start).
    fn pull_back_off_or_retry(&mut self) {
        let failed: Vec<usize> = (0..self.containers.len())
            .filter(|i| {
                self.containers[*i]
                    .state
                    .pointer("/waiting/reason")
                    .and_then(Value::as_str)
                    == Some("ErrImagePull")
            })
            .collect();
        if failed.is_empty() {
            self.stage = Stage::Starting;
            // Ephemeral containers are retried as the others are (each SyncPod tries them again).
            let backed_off: Vec<usize> = (0..self.containers.len())
                .filter(|i| {
                    let c = &self.containers[*i];
                    c.kind == Kind::Ephemeral
                        && c.state.pointer("/waiting/reason").and_then(Value::as_str)
                            == Some("ImagePullBackOff")
                })
                .collect();
            for i in backed_off {
                self.start_container(i);
            }
            self.start_pending_ephemeral();
            self.start_next();
            return;
        }
        for i in failed {
            let image = self.containers[i].image().to_string();
            let cause = self.containers[i]
                .state
                .pointer("/waiting/message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let event = format!("Back-off pulling image \"{image}\"");
            self.container_event(i, false, "BackOff", &event);
            // Since 1.32 the waiting message carries the pull's cause (kubernetes/kubernetes#127918).
            self.image_unavailable(
                i,
                "ImagePullBackOff",
                format!("{event}: ErrImagePull: {cause}"),
            );
        }
        self.timer = Some(Instant::now() + self.pull_backoff);
        self.pull_backoff = (self.pull_backoff * 2).min(PULL_BACKOFF.1);
    }

    /// An event about container `i` from the kubelet, naming the container's field path.
    fn container_event(&self, i: usize, warning: bool, reason: &str, message: &str) {
        let fp = self.containers[i].field_path();
        self.event(Source::Kubelet, warning, reason, message, Some(&fp));
    }

    /// A container whose image cannot be had waits with `reason`, which the kubelet reports
    /// as `Error: <reason>`.
    fn image_unavailable(&mut self, i: usize, reason: &str, message: String) {
        self.container_event(i, true, "Failed", &format!("Error: {reason}"));
        self.containers[i].state = json!({"waiting": {"reason": reason, "message": message}});
    }

    fn argv(&self, spec: &Value, env: &[(String, String)]) -> Vec<String> {
        let strings = |k: &str| -> Vec<String> {
            spec.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|s| volumes::expand(s, env))
                        .collect()
                })
                .unwrap_or_default()
        };
        let (command, args) = (strings("command"), strings("args"));
        if !command.is_empty() {
            let stand_in = self.sim.cfg.programs.get(&command[0]).cloned();
            return match stand_in {
                Some(s) => s
                    .into_iter()
                    .chain(command.into_iter().skip(1))
                    .chain(args)
                    .collect(),
                None => command.into_iter().chain(args).collect(),
            };
        }
        let image = spec.get("image").and_then(Value::as_str).unwrap_or("");
        let configured = volumes::for_image(&self.sim.cfg.image_commands, image);
        // Docker semantics: `args` replace the image's CMD but keep its ENTRYPOINT, which a
        // configured image command stands in for (an image without one has no ENTRYPOINT).
        match configured {
            Some(c) if !c.is_empty() && !args.is_empty() => c.iter().cloned().chain(args).collect(),
            _ if !args.is_empty() => args,
            Some(c) if !c.is_empty() => c.clone(),
            _ => vec!["sleep".into(), "infinity".into()],
        }
    }

    /// Who a container runs as: its `securityContext`, else the pod's, else the image's
    /// configured user (`SimConfig::image_users`), else the simulator's own. Supplementary
    /// groups are the pod's `supplementalGroups` and `fsGroup`, as the kubelet passes them.
    fn identity(&self, spec: &Value) -> Option<Identity> {
        let pod_sc = self.pod.pointer("/spec/securityContext");
        let field = |k: &str| -> Option<u32> {
            spec.pointer(&format!("/securityContext/{k}"))
                .or_else(|| pod_sc.and_then(|s| s.get(k)))
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let image = spec.get("image").and_then(Value::as_str).unwrap_or("");
        let from_image = volumes::for_image(&self.sim.cfg.image_users, image);
        let uid = field("runAsUser").or(from_image.map(|u| u.0));
        let gid = field("runAsGroup").or(from_image.map(|u| u.1));
        let groups: Vec<u32> = pod_sc
            .and_then(|s| s.get("supplementalGroups"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_u64)
            .chain(
                pod_sc
                    .and_then(|s| s.get("fsGroup"))
                    .and_then(Value::as_u64),
            )
            .filter_map(|n| u32::try_from(n).ok())
            .collect();
        if uid.is_none() && gid.is_none() && groups.is_empty() {
            return None;
        }
        Some(Identity {
            uid: uid.unwrap_or(0),
            gid: gid.unwrap_or(0),
            groups,
        })
    }

    fn start_container(&mut self, i: usize) {
        if self.sim.kubelet.stopped() {
            return;
        }
        if !self.pull(i) {
            return;
        }
        let latest = self
            .sim
            .store
            .get(&self.key)
            .unwrap_or_else(|| self.pod.clone());
        let spec = self.containers[i].spec.clone();
        let name = self.containers[i].name.clone();
        let env = match volumes::container_env(&self.sim.store, &latest, &spec) {
            Ok(env) => env,
            Err(message) => {
                self.container_event(i, true, "Failed", &format!("Error: {message}"));
                self.containers[i].state = json!({"waiting": {"reason": "CreateContainerConfigError", "message": message}});
                return;
            }
        };
        let argv = self.argv(&spec, &env);
        let working_dir = spec
            .get("workingDir")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let logs = LogBuffer::new();
        let user = self.identity(&spec);
        let pspec = ProcessSpec {
            argv,
            env: env.clone(),
            working_dir,
            user,
        };
        let spawned =
            volumes::container_mounts(&self.sim.cfg, &self.sandbox, &self.volumes, &spec, &env)
                .and_then(|mounts| {
                    let iso = if self.sim.kubelet.namespaces() {
                        Isolation::Container {
                            pause_pid: self.pause.as_ref().and_then(|p| p.id()).map(|p| p as i32),
                            mounts: &mounts,
                        }
                    } else {
                        Isolation::None
                    };
                    process::spawn(&pspec, iso, Stdio::null(), Stdio::piped(), Stdio::piped())
                });
        let container_id = format!(
            "containerd://{}",
            hex64(&format!(
                "{}/{name}/{}",
                self.uid, self.containers[i].restart_count
            ))
        );
        let now = meta::now();
        self.containers[i].container_id = Some(container_id.clone());
        let runtime = ContainerRt {
            pid: None,
            process: pspec,
            logs: logs.clone(),
            previous_logs: None,
        };
        match spawned {
            Ok(child) => {
                let pid = child.id().map(|p| p as i32).unwrap_or(0);
                self.container_event(i, false, "Created", &format!("Created container: {name}"));
                self.container_event(i, false, "Started", &format!("Started container {name}"));
                let c = &mut self.containers[i];
                c.pid = Some(pid);
                c.begin_run();
                c.state = json!({"running": {"startedAt": now}});
                let probe_specs = [
                    (ProbeKind::Startup, c.startup_probe.clone()),
                    (ProbeKind::Readiness, c.readiness_probe.clone()),
                ];
                let process = runtime.process.clone();
                self.register_runtime(
                    &name,
                    ContainerRt {
                        pid: Some(pid),
                        ..runtime
                    },
                );
                for (kind, spec) in probe_specs {
                    if let Some(spec) = spec {
                        let target = ProbeTarget {
                            handle: self.handle.clone(),
                            container: name.clone(),
                            pid,
                            process: process.clone(),
                            namespaces: self.sim.kubelet.namespaces(),
                        };
                        probes::start(target, kind, spec, self.probes.clone());
                    }
                }
                monitor(child, name, pid, logs, self.exits.clone());
            }
            Err(e) => {
                let program = runtime
                    .process
                    .argv
                    .first()
                    .map(String::as_str)
                    .unwrap_or("");
                let what = match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        format!("exec: \"{program}\": executable file not found in $PATH")
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        format!("exec: \"{program}\": permission denied")
                    }
                    _ => e.to_string(),
                };
                let message = format!(
                    "failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: {what}: unknown"
                );
                self.container_event(i, true, "Failed", &format!("Error: {message}"));
                logs.close();
                self.register_runtime(&name, runtime);
                let c = &mut self.containers[i];
                c.state = json!({"terminated": {"exitCode": 128, "reason": "StartError", "message": message, "startedAt": "1970-01-01T00:00:00Z", "finishedAt": now, "containerID": container_id}});
                c.pid = None;
                c.ready = false;
                let _ = self.exits.send(Exit {
                    name,
                    pid: -1,
                    code: 128,
                });
            }
        }
    }

    /// Records a (re)started container's runtime, what exec and logs read; the previous run's
    /// log stays readable (`previous=true`).
    fn register_runtime(&self, name: &str, mut runtime: ContainerRt) {
        let mut rt = self.handle.rt();
        runtime.previous_logs = rt.containers.get(name).map(|c| c.logs.clone());
        rt.containers.insert(name.to_string(), runtime);
    }

    /// A probe's result: the kubelet's `Unhealthy` event for a failure, readiness and `started`
    /// from the thresholds; a startup probe that fails its threshold kills the container, which
    /// then restarts as its restart policy says.
    fn on_probe(&mut self, r: ProbeResult) {
        let Some(i) = self
            .containers
            .iter()
            .position(|c| c.name == r.container && c.pid == Some(r.pid))
        else {
            return;
        };
        if self.terminating || self.stage == Stage::Done {
            return;
        }
        // Readiness is not probed until the startup probe has passed.
        if r.kind == ProbeKind::Readiness && self.containers[i].startup_pending {
            return;
        }
        if r.kind == ProbeKind::Startup && !self.containers[i].startup_pending {
            return;
        }
        if !r.ok {
            let message = format!("{} probe failed: {}", r.kind.label(), r.output);
            self.container_event(i, true, "Unhealthy", &message);
        }
        let c = &mut self.containers[i];
        let before = (c.ready, c.startup_pending);
        match r.kind {
            ProbeKind::Startup => {
                let Some(spec) = c.startup_probe.clone() else {
                    return;
                };
                match c.startup_state.record(r.ok, &spec) {
                    Verdict::Passed => {
                        c.startup_pending = false;
                        c.ready = c.readiness_probe.is_none();
                    }
                    Verdict::Failed => {
                        let name = c.name.clone();
                        let pid = r.pid;
                        self.container_event(
                            i,
                            false,
                            "Killing",
                            &format!("Container {name} failed startup probe, will be restarted"),
                        );
                        process::signal_group(pid, Signal::SIGKILL);
                        return;
                    }
                    Verdict::Pending => {}
                }
            }
            ProbeKind::Readiness => {
                let Some(spec) = c.readiness_probe.clone() else {
                    return;
                };
                match c.readiness_state.record(r.ok, &spec) {
                    Verdict::Passed => c.ready = true,
                    Verdict::Failed => c.ready = false,
                    Verdict::Pending => {}
                }
            }
        }
        let c = &self.containers[i];
        if (c.ready, c.startup_pending) != before {
            self.publish();
        }
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .pointer("/spec/restartPolicy")
            .and_then(Value::as_str)
            .unwrap_or("Always")
    }

    fn on_exit(&mut self, exit: Exit) {
        let Some(i) = self
            .containers
            .iter()
            .position(|c| c.name == exit.name && (c.pid == Some(exit.pid) || exit.pid == -1))
        else {
            return;
        };
        if exit.pid != -1 {
            let started = self.containers[i]
                .state
                .pointer("/running/startedAt")
                .cloned()
                .unwrap_or(json!(meta::now()));
            let oom = std::mem::take(&mut self.containers[i].oom_killed);
            let reason = match (oom, exit.code) {
                (true, _) => "OOMKilled",
                (false, 0) => "Completed",
                _ => "Error",
            };
            let cid = self.containers[i].container_id.clone();
            let c = &mut self.containers[i];
            c.state = json!({"terminated": {"exitCode": exit.code, "reason": reason, "startedAt": started, "finishedAt": meta::now(), "containerID": cid}});
            c.pid = None;
            c.ready = false;
            if let Some(rt) = self.handle.rt().containers.get_mut(&exit.name) {
                rt.pid = None;
            }
        }
        if self.terminating || self.stage == Stage::Done {
            self.publish();
            return;
        }
        let kind = self.containers[i].kind;
        let policy = self.restart_policy().to_string();
        let restart = match policy.as_str() {
            "Always" => kind != Kind::Init || exit.code != 0,
            "OnFailure" => exit.code != 0,
            _ => false,
        } && kind != Kind::Ephemeral;
        if restart {
            let c = &mut self.containers[i];
            c.restart_count += 1;
            c.last_state = c.state.clone();
            let backoff = Duration::from_secs(1 << c.restart_count.clamp(0, 5) as u32)
                .min(Duration::from_secs(30));
            let msg = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                backoff.as_secs(),
                c.name,
                self.key.name,
                self.key.namespace,
                self.uid
            );
            c.state = json!({"waiting": {"reason": "CrashLoopBackOff", "message": msg}});
            c.restart_at = Some(Instant::now() + backoff);
            let text = format!(
                "Back-off restarting failed container {} in pod {}_{}({})",
                c.name, self.key.name, self.key.namespace, self.uid
            );
            self.container_event(i, true, "BackOff", &text);
        } else {
            match kind {
                Kind::Init if exit.code == 0 => self.start_next(),
                Kind::Init => self.finish("Failed"),
                Kind::App => {
                    let apps: Vec<&Container> = self
                        .containers
                        .iter()
                        .filter(|c| c.kind == Kind::App)
                        .collect();
                    if apps
                        .iter()
                        .all(|c| c.terminated().is_some() && c.restart_at.is_none())
                    {
                        let ok = apps.iter().all(|c| c.terminated() == Some(0));
                        self.finish(if ok { "Succeeded" } else { "Failed" });
                    }
                }
                Kind::Ephemeral => {}
            }
        }
        self.publish();
    }

    fn finish(&mut self, phase: &'static str) {
        self.phase = phase;
        self.stage = Stage::Done;
        self.sim.kubelet.release(&self.uid);
        for c in self
            .containers
            .iter_mut()
            .filter(|c| c.kind == Kind::App && c.terminated().is_none())
        {
            c.ready = false;
        }
        if let Some(mut pause) = self.pause.take() {
            let _ = pause.start_kill();
            tokio::spawn(async move {
                let _ = pause.wait().await;
            });
        }
    }

    /// Signals every process of the pod, waits up to `grace` for the containers, then kills.
    async fn kill_all(
        &mut self,
        grace: i64,
        exits: &mut mpsc::UnboundedReceiver<Exit>,
        announce: bool,
    ) {
        self.terminating = true;
        let running: Vec<(String, i32, String)> = self
            .containers
            .iter()
            .filter_map(|c| c.pid.map(|p| (c.name.clone(), p, c.field_path())))
            .collect();
        let exec_pgids: Vec<i32> = self.handle.rt().exec_pgids.iter().copied().collect();
        let namespaces: Vec<process::MountNamespace> = running
            .iter()
            .filter_map(|(_, pid, _)| process::mount_namespace(*pid))
            .collect();
        for (name, pid, fp) in &running {
            if announce {
                self.event(
                    Source::Kubelet,
                    false,
                    "Killing",
                    &format!("Stopping container {name}"),
                    Some(fp),
                );
            }
            let sig = if grace == 0 {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            process::signal_group(*pid, sig);
        }
        for pg in &exec_pgids {
            process::signal_group(*pg, Signal::SIGTERM);
        }
        for ns in &namespaces {
            process::signal_mount_namespace(ns, Signal::SIGTERM);
        }
        self.wait_exits(Duration::from_secs(grace.max(0) as u64), exits)
            .await;
        let left: Vec<i32> = self
            .containers
            .iter()
            .filter_map(|c| c.pid)
            .chain(exec_pgids)
            .collect();
        for pid in left {
            process::signal_group(pid, Signal::SIGKILL);
        }
        for ns in &namespaces {
            process::signal_mount_namespace(ns, Signal::SIGKILL);
        }
        self.wait_exits(KILL_WAIT, exits).await;
        if let Some(mut pause) = self.pause.take() {
            let _ = pause.start_kill();
            let _ = tokio::time::timeout(KILL_WAIT, pause.wait()).await;
        }
    }

    /// Handles container exits until none runs or `limit` passes.
    async fn wait_exits(&mut self, limit: Duration, exits: &mut mpsc::UnboundedReceiver<Exit>) {
        let deadline = Instant::now() + limit;
        while self.containers.iter().any(|c| c.pid.is_some()) {
            match tokio::time::timeout_at(deadline, exits.recv()).await {
                Ok(Some(exit)) => self.on_exit(exit),
                _ => break,
            }
        }
    }

    async fn teardown(&mut self, grace: i64, exits: &mut mpsc::UnboundedReceiver<Exit>) {
        self.kill_all(grace, exits, true).await;
        super::memory_volumes::unmount_memory_volumes(&self.sandbox);
        if self.sandbox.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.sandbox)
        {
            tracing::warn!(error = %e, dir = %self.sandbox.display(), "cannot remove pod sandbox");
        }
    }

    async fn evict(&mut self, exits: &mut mpsc::UnboundedReceiver<Exit>) {
        let names: Vec<String> = self
            .containers
            .iter()
            .filter(|c| c.kind == Kind::App)
            .map(|c| c.name.clone())
            .collect();
        // The kubelet's wording (pkg/kubelet/eviction/helpers.go: nodeLowMessageFmt,
        // thresholdMetMessageFmt, containerMessageFmt, each with its trailing space), in the
        // event and the pod's status alike.
        let mut message =
            format!("{EVICTION_MESSAGE} Threshold quantity: 100Mi, available: 51200Ki. ");
        for n in &names {
            message.push_str(&format!(
                "Container {n} was using 2Gi, request is 0, has larger consumption of memory. "
            ));
        }
        self.event(Source::Kubelet, true, "Evicted", &message, None);
        self.kill_all(0, exits, true).await;
        self.terminating = false;
        for c in self.containers.iter_mut() {
            if c.terminated().is_none() && c.started {
                let started = c
                    .state
                    .pointer("/running/startedAt")
                    .cloned()
                    .unwrap_or(json!(meta::now()));
                c.state = json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown", "message": "The container could not be located when the pod was terminated", "startedAt": started, "finishedAt": meta::now()}});
            }
            c.ready = false;
            c.restart_at = None;
        }
        self.timer = None;
        self.set_condition("DisruptionTarget", true, "TerminationByKubelet", &message);
        self.reason = Some(("Evicted".to_string(), message));
        self.finish("Failed");
        self.publish();
    }

    fn oom_kill(&mut self, name: &str) -> bool {
        let Some(c) = self
            .containers
            .iter_mut()
            .find(|c| c.name == name && c.pid.is_some())
        else {
            return false;
        };
        c.oom_killed = true;
        let pid = c.pid.unwrap_or(0);
        let ns = process::mount_namespace(pid);
        process::signal_group(pid, Signal::SIGKILL);
        if let Some(ns) = ns {
            process::signal_mount_namespace(&ns, Signal::SIGKILL);
        }
        // The OOM killer takes the container's whole cgroup, processes started by exec
        // included. Exec sessions are tracked per pod here, so all of the pod's die with it.
        let exec_pgids: Vec<i32> = self.handle.rt().exec_pgids.iter().copied().collect();
        for pg in exec_pgids {
            process::signal_group(pg, Signal::SIGKILL);
        }
        true
    }

    fn ephemeral_changed(&mut self) {
        let Some(pod) = self.sim.store.get(&self.key) else {
            return;
        };
        let specs = pod
            .pointer("/spec/ephemeralContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for spec in specs {
            let name = spec.get("name").and_then(Value::as_str).unwrap_or("");
            if self.containers.iter().any(|c| c.name == name) {
                continue;
            }
            self.containers
                .push(Container::new(Kind::Ephemeral, &spec, "ContainerCreating"));
        }
        if matches!(self.stage, Stage::Starting | Stage::Running) {
            self.start_pending_ephemeral();
        }
        self.publish();
    }

    /// Starts the ephemeral containers not started yet. The kubelet starts them as soon as the
    /// sandbox exists, before init containers (`SyncPod` step 5, `kuberuntime_manager.go`), so
    /// one added while the pod was still Pending starts once the sandbox is up.
    fn start_pending_ephemeral(&mut self) {
        if self.terminating {
            return;
        }
        let pending: Vec<usize> = (0..self.containers.len())
            .filter(|i| {
                let c = &self.containers[*i];
                c.kind == Kind::Ephemeral
                    && c.pid.is_none()
                    && c.restart_at.is_none()
                    && c.state.pointer("/waiting/reason").and_then(Value::as_str)
                        == Some("ContainerCreating")
            })
            .collect();
        for i in pending {
            self.start_container(i);
        }
    }
}
