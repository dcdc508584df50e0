//! The kubelet: one worker task per pod, and the handles the API uses to reach it.

mod container;
pub(crate) mod ephemeral;
mod image_ref;
mod memory_volumes;
mod probes;
mod process;
mod scheduling;
mod volumes;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use super::logs::LogBuffer;
use super::store::Key;
use super::{SimState, meta};

pub(crate) use container::exit_code;
pub(crate) use process::{
    Isolation, ProcessSpec, namespaces_available, signal_group, spawn as process_spawn,
};
pub(crate) use scheduling::default_allocatable;

/// How long shutdown waits for pod workers to clean up.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

/// Orders a pod worker receives.
pub(crate) enum Command {
    Delete {
        grace: i64,
    },
    Evict(oneshot::Sender<()>),
    EphemeralChanged,
    OomKill {
        container: String,
        done: oneshot::Sender<bool>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// What exec needs to know about a running container.
#[derive(Debug, Clone)]
pub(crate) struct ContainerRt {
    /// Main process id while running.
    pub pid: Option<i32>,
    /// The main process; exec'd processes get its env, working directory and user.
    pub process: ProcessSpec,
    pub logs: Arc<LogBuffer>,
    /// The log of the previous run, after a restart.
    pub previous_logs: Option<Arc<LogBuffer>>,
}

#[derive(Default)]
pub(crate) struct Runtime {
    pub containers: HashMap<String, ContainerRt>,
    /// Process groups of exec'd processes, killed with the pod.
    pub exec_pgids: HashSet<i32>,
    /// The pause process holding the pod's network namespace.
    pub pause_pid: Option<i32>,
}

pub(crate) struct PodHandle {
    pub uid: String,
    tx: mpsc::UnboundedSender<Command>,
    pub rt: Mutex<Runtime>,
}

impl PodHandle {
    pub(crate) fn rt(&self) -> MutexGuard<'_, Runtime> {
        self.rt.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) struct Kubelet {
    state_dir: PathBuf,
    namespaces: bool,
    /// Set when the simulator stops: workers start nothing new.
    stopped: std::sync::atomic::AtomicBool,
    pods: Mutex<HashMap<Key, Arc<PodHandle>>>,
    /// The node's allocatable resources.
    allocatable: scheduling::Resources,
    /// What each pod on the node requests, by pod uid, until it ends.
    bound: Mutex<HashMap<String, scheduling::Resources>>,
    /// Bumped whenever a pod on the node ends or the node changes (taints, labels): Pending
    /// pods try again.
    freed: tokio::sync::watch::Sender<u64>,
}

/// A scheduling decision: bound to the node, or why not.
pub(crate) enum Placement {
    Bound,
    Unschedulable(String),
    /// The kubelet rejected a pod bound with `spec.nodeName` (reason, message), e.g. `OutOfcpu`.
    Rejected(String, String),
}

impl Kubelet {
    pub(crate) fn new(
        state_dir: PathBuf,
        want_namespaces: bool,
        allocatable: &std::collections::BTreeMap<String, String>,
    ) -> Kubelet {
        let namespaces = want_namespaces && process::namespaces_available();
        if want_namespaces && !namespaces {
            tracing::warn!(
                "the simulator runs without mount and network namespaces (needs root): pods see host paths, \
                 not their volumes at their mount paths, and share the host network"
            );
        }
        Kubelet {
            state_dir,
            namespaces,
            stopped: Default::default(),
            pods: Mutex::new(HashMap::new()),
            allocatable: scheduling::parse_allocatable(allocatable),
            bound: Mutex::new(HashMap::new()),
            freed: tokio::sync::watch::channel(0).0,
        }
    }

    /// Decides, atomically with every other pod's decision, whether the pod goes on the node;
    /// `preset` pods (`spec.nodeName`) skip the scheduler and face only the kubelet's admission.
    pub(crate) fn place(
        &self,
        pod: &Value,
        node_labels: &serde_json::Map<String, Value>,
        taints: &[Value],
        missing_claim: Option<&str>,
        preset: bool,
    ) -> Placement {
        let mut bound = self.bound.lock().unwrap_or_else(|p| p.into_inner());
        let uid = meta::uid(pod);
        let mut used = scheduling::Resources::new();
        for (_, r) in bound.iter().filter(|(u, _)| u.as_str() != uid) {
            for (k, v) in r {
                *used.entry(k.clone()).or_default() += v;
            }
        }
        let requested = scheduling::requests(pod);
        let decision = if preset {
            scheduling::admit_bound(&requested, &self.allocatable, &used)
                .map_err(|(reason, message)| Placement::Rejected(reason, message))
        } else {
            scheduling::fit(
                pod,
                node_labels,
                taints,
                missing_claim,
                &self.allocatable,
                &used,
            )
            .map_err(Placement::Unschedulable)
        };
        match decision {
            Ok(()) => {
                bound.insert(uid.to_string(), requested);
                Placement::Bound
            }
            Err(p) => p,
        }
    }

    /// Gives back what an ended pod held, so Pending pods try again.
    pub(crate) fn release(&self, uid: &str) {
        let removed = self
            .bound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid)
            .is_some();
        if removed {
            self.freed.send_modify(|n| *n += 1);
        }
    }

    /// The node object was written (a taint removed, a label added): Pending pods try again,
    /// as kube-scheduler requeues them on node updates.
    pub(crate) fn node_changed(&self) {
        self.freed.send_modify(|n| *n += 1);
    }

    /// Changes whenever a pod on the node ends or the node changes.
    pub(crate) fn freed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.freed.subscribe()
    }

    pub(crate) fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Whether pods get private mount and network namespaces.
    pub(crate) fn namespaces(&self) -> bool {
        self.namespaces
    }

    fn pods(&self) -> MutexGuard<'_, HashMap<Key, Arc<PodHandle>>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn handle(&self, key: &Key) -> Option<Arc<PodHandle>> {
        self.pods().get(key).cloned()
    }

    fn forget(&self, key: &Key, uid: &str) {
        self.release(uid);
        let mut pods = self.pods();
        if pods.get(key).is_some_and(|h| h.uid == uid) {
            pods.remove(key);
        }
    }

    /// The log of a container that has started at least once.
    pub(crate) fn log_buffer(
        &self,
        key: &Key,
        container: &str,
        previous: bool,
    ) -> Option<Arc<LogBuffer>> {
        let handle = self.handle(key)?;
        let rt = handle.rt();
        let c = rt.containers.get(container)?;
        if previous {
            c.previous_logs.clone()
        } else {
            Some(c.logs.clone())
        }
    }

    /// Whether the simulator is stopping (no new sandboxes or processes).
    pub(crate) fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Kills every known pod process right away (for a simulator dropped without `shutdown`).
    pub(crate) fn kill_everything(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for h in self.pods().values() {
            let rt = h.rt();
            let pids = rt
                .containers
                .values()
                .filter_map(|c| c.pid)
                .chain(rt.exec_pgids.iter().copied())
                .chain(rt.pause_pid);
            for pid in pids {
                signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// Stops every pod worker: processes killed, sandboxes removed.
    pub(crate) async fn shutdown(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let handles: Vec<Arc<PodHandle>> = self.pods().values().cloned().collect();
        let mut acks = Vec::new();
        for h in handles {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(Command::Shutdown(tx)).is_ok() {
                acks.push(rx);
            }
        }
        let all = futures::future::join_all(acks);
        if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
            tracing::warn!("some pod workers did not stop within {SHUTDOWN_WAIT:?}");
        }
    }
}

/// Starts the worker of a newly created pod.
pub(crate) fn pod_created(sim: Arc<SimState>, pod: &Value) {
    let key = Key::new("pods", meta::namespace(pod), meta::name(pod));
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = Arc::new(PodHandle {
        uid: meta::uid(pod).to_string(),
        tx,
        rt: Mutex::new(Runtime::default()),
    });
    sim.kubelet.pods().insert(key, handle.clone());
    tokio::spawn(worker::run(sim, pod.clone(), handle, rx));
}

/// Deletes a pod gracefully: marks it, then its worker kills processes and removes it.
/// Returns the pod as the DELETE response shows it.
pub(crate) async fn delete_pod(
    sim: &Arc<SimState>,
    key: &Key,
    grace: Option<i64>,
) -> Option<Value> {
    let pod = sim.store.get(key)?;
    // As the pod strategy's CheckGracefulDeleteAndGetGracePeriod: a pod never bound to a node,
    // or one that has ended, goes at once whatever grace was asked for.
    let unscheduled = meta::str_at(&pod, &["spec", "nodeName"]).is_none_or(str::is_empty);
    let ended = matches!(
        meta::str_at(&pod, &["status", "phase"]),
        Some("Succeeded" | "Failed")
    );
    let grace = grace
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0);
    let grace = if unscheduled || ended { 0 } else { grace };
    let handle = sim.kubelet.handle(key).filter(|h| h.uid == meta::uid(&pod));
    let Some(handle) = handle else {
        return sim.store.delete(key);
    };
    let marked = sim.store.update::<()>(key, None, |p| {
        let m = meta::metadata_mut(p);
        if !m.contains_key("deletionTimestamp") {
            m.insert("deletionTimestamp".into(), json!(meta::in_seconds(grace)));
            // Setting deletionTimestamp is a change of the object's intent: a new generation.
            meta::bump_generation(m);
        }
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        Ok(())
    });
    if handle.tx.send(Command::Delete { grace }).is_err() {
        return sim.store.delete(key);
    }
    match marked {
        Ok(Ok(p)) => Some(p),
        _ => Some(pod),
    }
}

/// Evicts a running pod; returns false when there is no such pod.
pub(crate) async fn evict(sim: &Arc<SimState>, ns: &str, name: &str) -> bool {
    let key = Key::new("pods", ns, name);
    let Some(handle) = sim.kubelet.handle(&key) else {
        return false;
    };
    let (tx, rx) = oneshot::channel();
    if handle.tx.send(Command::Evict(tx)).is_err() {
        return false;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), rx).await;
    true
}

/// Kills a running container as the kernel's OOM killer would; false when it is not running.
pub(crate) async fn oom_kill(sim: &Arc<SimState>, ns: &str, name: &str, container: &str) -> bool {
    let Some(handle) = sim.kubelet.handle(&Key::new("pods", ns, name)) else {
        return false;
    };
    let (tx, rx) = oneshot::channel();
    if handle
        .tx
        .send(Command::OomKill {
            container: container.to_string(),
            done: tx,
        })
        .is_err()
    {
        return false;
    }
    tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false)
}

/// Tells a pod's worker that its ephemeral containers changed.
pub(crate) fn ephemeral_changed(sim: &Arc<SimState>, pod: &Value) {
    let key = Key::new("pods", meta::namespace(pod), meta::name(pod));
    if let Some(h) = sim.kubelet.handle(&key) {
        let _ = h.tx.send(Command::EphemeralChanged);
    }
}

/// Where an exec'd process runs, or why it cannot.
pub(crate) enum ExecTarget {
    Ready { rt: ContainerRt, namespaces: bool },
    NotRunning,
}

pub(crate) fn exec_target(sim: &SimState, key: &Key, container: &str) -> ExecTarget {
    let Some(h) = sim.kubelet.handle(key) else {
        return ExecTarget::NotRunning;
    };
    let rt = h.rt();
    match rt.containers.get(container) {
        Some(c) if c.pid.is_some() => ExecTarget::Ready {
            rt: c.clone(),
            namespaces: sim.kubelet.namespaces,
        },
        _ => ExecTarget::NotRunning,
    }
}

/// Remembers (or forgets) an exec'd process group so deleting the pod kills it.
pub(crate) fn track_exec(sim: &SimState, key: &Key, pgid: i32, running: bool) {
    if let Some(h) = sim.kubelet.handle(key) {
        let mut rt = h.rt();
        if running {
            rt.exec_pgids.insert(pgid);
        } else {
            rt.exec_pgids.remove(&pgid);
        }
    }
}
