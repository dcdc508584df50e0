//! An embedded Kubernetes API server and kubelet for one machine, the hook's test double (see `src/sim/README.md`).

mod admission;
mod api;
pub mod cli;
mod cluster;
mod events;
mod exec;
mod faults;
mod gc;
mod jobs;
mod kubelet;
mod listener;
mod logs;
mod meta;
pub mod node;
mod patch;
mod protobuf;

mod rbac;
pub mod registry;
mod resources;
mod selectors;
pub mod settings;
mod status;
mod store;
mod table;
pub(crate) mod validation;
mod watch;
mod write;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

pub use faults::{FaultHandle, Faults, Injected};
pub(crate) use kubelet::{default_allocatable, namespaces_available};

/// Name of the simulator's only node.
pub const NODE_NAME: &str = "sim-node-1";
/// Kubernetes version the simulator reports on `/version`.
pub(crate) const GIT_VERSION: &str = "v1.32.4";
/// Name used for the kubeconfig's context, cluster and user.
pub(crate) const KUBECONFIG_NAME: &str = "arc-hook-sim";

/// Everything that shapes a simulator run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Default namespace (created at start, written into the kubeconfig).
    pub namespace: String,
    /// Time from scheduling to Running for each pod.
    pub start_delay: Duration,
    /// Exact image references that fail to pull (ErrImagePull, then ImagePullBackOff).
    pub unpullable_images: Vec<String>,
    /// `None` allows everything; `Some(rules)` allows only what the rules grant.
    pub rbac: Option<Vec<PolicyRule>>,
    /// PVC claim name -> host directory backing it. Claims listed here need not exist as objects.
    pub pvc_dirs: HashMap<String, PathBuf>,
    /// `true`: hostPath volumes are the host's own directories, as a real kubelet mounts them (the
    /// node agent, whose pods an admitted real cluster sent); `false`: they live under the state
    /// directory, so a simulated job cannot reach the host's tree.
    pub host_paths_on_host: bool,
    /// Image -> command run when a container has no `command` (stands in for ENTRYPOINT/CMD).
    pub image_commands: HashMap<String, Vec<String>>,
    /// Program name -> host command standing in for it when a container's `command` names a
    /// program only images have (`buildctl-daemonless.sh`); the container's other words follow.
    pub programs: HashMap<String, Vec<String>>,
    /// Image -> files that shadow the host's inside that image's containers.
    pub image_files: HashMap<String, Vec<(PathBuf, Vec<u8>)>>,
    /// Where sandboxes live; `None` = a temporary directory removed on shutdown.
    pub state_dir: Option<PathBuf>,
    /// Initial fault knobs (change them at runtime with [`Simulator::faults`]).
    pub faults: Faults,
    /// Run pods in private mount/network namespaces when possible (root). `false` forces the
    /// no-namespace fallback: host paths, host network.
    pub use_namespaces: bool,
    /// The node's capacity (= allocatable) by resource: quantities such as `cpu: "8"`,
    /// `memory: "32Gi"`, `nvidia.com/gpu: "1"`. Pods whose requests do not fit what is left stay
    /// Pending (`Insufficient cpu`) until a pod on the node ends.
    pub node_allocatable: std::collections::BTreeMap<String, String>,
    /// Image (exact reference or repository) -> the (uid, gid) its config names (`USER`), used
    /// when neither the container nor the pod sets `runAsUser`/`runAsGroup`.
    pub image_users: HashMap<String, (u32, u32)>,
    /// Offer only `v4.channel.k8s.io` for exec, as API servers before 1.30 (or with the
    /// `TranslateStreamCloseWebsocketRequests` gate off) do: no stdin close signal.
    pub exec_v4_only: bool,
    /// Rules reviews answer `incomplete: true` with no rules, as when a webhook authorizer
    /// follows RBAC: clients must then ask access reviews one by one.
    pub rules_review_incomplete: bool,
    /// Addresses as in an IPv6-only cluster: pods get `fd00:10:244::/64` IPs, the node `::1`.
    pub ipv6_only: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            namespace: "default".to_string(),
            start_delay: Duration::from_millis(200),
            unpullable_images: Vec::new(),
            rbac: None,
            pvc_dirs: HashMap::new(),
            host_paths_on_host: false,
            image_commands: HashMap::new(),
            programs: HashMap::new(),
            image_files: HashMap::new(),
            state_dir: None,
            faults: Faults::default(),
            use_namespaces: true,
            node_allocatable: kubelet::default_allocatable(),
            image_users: HashMap::new(),
            exec_v4_only: false,
            rules_review_incomplete: false,
            ipv6_only: false,
        }
    }
}

/// One RBAC rule: the listed verbs on the listed resources of the listed API groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// API groups (`""` is core, `"*"` any).
    pub api_groups: Vec<String>,
    /// Resources, with subresources written `pods/exec` (`"*"` any).
    pub resources: Vec<String>,
    /// Verbs (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, `"*"`).
    pub verbs: Vec<String>,
    /// A ClusterRole's rule bound by a ClusterRoleBinding: it applies in every namespace and to
    /// cluster-scoped resources (nodes). Otherwise a Role's, in the simulator's namespace only.
    pub cluster_wide: bool,
}

impl PolicyRule {
    /// Builds a rule from string slices: `PolicyRule::new(&[""], &["pods"], &["get", "list"])`.
    pub fn new(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        PolicyRule {
            api_groups: owned(api_groups),
            resources: owned(resources),
            verbs: owned(verbs),
            cluster_wide: false,
        }
    }

    /// [`PolicyRule::new`] as a ClusterRole's rule bound cluster-wide (see
    /// [`PolicyRule::cluster_wide`]): what `get nodes` needs.
    pub fn cluster_wide(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            cluster_wide: true,
            ..PolicyRule::new(api_groups, resources, verbs)
        }
    }

    /// A Role's rule as the simulator enforces it, or why it cannot be: a rule limited by
    /// `resourceNames` would grant the simulator more than the real authorizer does.
    pub fn from_role_rule(
        rule: &k8s_openapi::api::rbac::v1::PolicyRule,
    ) -> Result<PolicyRule, String> {
        if rule.resource_names.as_ref().is_some_and(|n| !n.is_empty()) {
            return Err(format!(
                "the simulator cannot limit a rule by resourceNames ({:?} on {:?})",
                rule.verbs, rule.resources
            ));
        }
        Ok(PolicyRule {
            api_groups: rule.api_groups.clone().unwrap_or_default(),
            resources: rule.resources.clone().unwrap_or_default(),
            verbs: rule.verbs.clone(),
            cluster_wide: false,
        })
    }

    /// Whether this rule grants `verb` on `resource` (with `/subresource`) in `api_group`.
    pub(crate) fn allows(&self, api_group: &str, resource: &str, verb: &str) -> bool {
        let any = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        any(&self.api_groups, api_group) && any(&self.resources, resource) && any(&self.verbs, verb)
    }
}

/// The Role the actions-runner-controller chart gives a runner in Kubernetes mode.
pub fn arc_chart_default_role() -> Vec<PolicyRule> {
    vec![
        PolicyRule::new(
            &[""],
            &["pods"],
            &["get", "list", "create", "delete", "update", "patch"],
        ),
        PolicyRule::new(&[""], &["pods/exec"], &["get", "create"]),
        PolicyRule::new(&[""], &["pods/log"], &["get", "list", "watch"]),
        PolicyRule::new(&[""], &["secrets"], &["get", "list", "create", "delete"]),
        PolicyRule::new(&["batch"], &["jobs"], &["get", "list", "create", "delete"]),
    ]
}

/// The Role the chart gives a runner in `kubernetes-novolume` mode: the same without Jobs
/// (`charts/gha-runner-scale-set/templates/kube_mode_role.yaml`).
pub fn arc_chart_novolume_role() -> Vec<PolicyRule> {
    arc_chart_default_role()
        .into_iter()
        .filter(|r| !r.allows("batch", "jobs", "create"))
        .collect()
}

/// Failures of the simulator's own operations (API errors go to clients as `Status` objects).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot bind the simulator's listener on 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    #[error("cannot prepare the simulator's state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {namespace}/{name} not found")]
    PodNotFound { namespace: String, name: String },
    #[error("cannot build a Kubernetes client for the simulator: {0}")]
    Client(String),
}

/// Shared state of a running simulator: configuration, object store, kubelet and controllers.
pub(crate) struct SimState {
    pub cfg: SimConfig,
    pub store: store::Store,
    pub faults: FaultHandle,
    pub kubelet: kubelet::Kubelet,
    pub user: String,
    pub addr: SocketAddr,
    /// Image -> the pull error the runtime answers for it, and until when (`None`: until the
    /// test pushes it; see [`Simulator::hide_image`]).
    pub pull_errors: Mutex<HashMap<String, (String, Option<std::time::Instant>)>>,
    /// One line per API request served (`get nodes sim-node-1`), for tests that count them.
    pub requests: Mutex<Vec<String>>,
}

impl SimState {
    /// The pull error for `image` now, if any: `unpullable_images` are never found; others as
    /// the test set them.
    pub(crate) fn pull_error(&self, image: &str) -> Option<String> {
        if self.cfg.unpullable_images.iter().any(|i| i == image) {
            return Some(not_found_cause(image));
        }
        let mut errors = self.pull_errors.lock().unwrap_or_else(|p| p.into_inner());
        match errors.get(image) {
            Some((_, Some(until))) if std::time::Instant::now() >= *until => {
                errors.remove(image);
                None
            }
            other => other.map(|(cause, _)| cause.clone()),
        }
    }

    /// Notes one request, as an audit log would (bounded: the oldest half goes past 100 000).
    pub(crate) fn record_request(&self, line: String) {
        let mut log = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= 100_000 {
            log.drain(..50_000);
        }
        log.push(line);
    }
}

/// containerd's answer for a reference the registry does not have (as the kubelet reports it in
/// the container's `ErrImagePull` message).
pub(crate) fn not_found_cause(image: &str) -> String {
    format!(
        "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"
    )
}

/// The bearer token of the simulator's admin ([`Simulator::admin_client`]): its requests are not
/// checked against `SimConfig::rbac` (every other request is the runner's).
pub(crate) const ADMIN_TOKEN: &str = "arc-hook-sim-admin";
/// [`ADMIN_TOKEN`] as the `Authorization` header carries it.
pub(crate) const ADMIN_BEARER: &str = "Bearer arc-hook-sim-admin";

/// A running simulator. Dropping it without [`Simulator::shutdown`] leaves pod processes behind.
pub struct Simulator {
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    restart: listener::RestartHandle,
    /// A temporary state directory to remove on shutdown.
    temp_dir: Option<PathBuf>,
}

impl Simulator {
    /// Starts the API server on `127.0.0.1` on an ephemeral port.
    pub async fn start(cfg: SimConfig) -> Result<Simulator, SimError> {
        Self::start_on(cfg, 0).await
    }

    /// Starts the API server on `127.0.0.1:port` (`0` picks a free port).
    pub(crate) async fn start_on(cfg: SimConfig, port: u16) -> Result<Simulator, SimError> {
        let (state_dir, temp) = match &cfg.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| SimError::StateDir {
                    path: dir.clone(),
                    source,
                })?;
                (dir.clone(), None)
            }
            None => {
                remove_stale_state_dirs();
                let dir = std::env::temp_dir().join(format!(
                    "{TEMP_PREFIX}{}-{}",
                    std::process::id(),
                    meta::random_suffix(8)
                ));
                std::fs::create_dir_all(&dir).map_err(|source| SimError::StateDir {
                    path: dir.clone(),
                    source,
                })?;
                (dir.clone(), Some(dir))
            }
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(SimError::Bind)?;
        let addr = listener.local_addr().map_err(SimError::Bind)?;
        let user = format!("system:serviceaccount:{}:arc-runner", cfg.namespace);
        let faults = FaultHandle::new(cfg.faults.clone());
        let kubelet = kubelet::Kubelet::new(state_dir, cfg.use_namespaces, &cfg.node_allocatable);
        let state = Arc::new(SimState {
            cfg,
            store: store::Store::new(),
            faults,
            kubelet,
            user,
            addr,
            pull_errors: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
        });
        cluster::seed(&state);
        jobs::spawn_controller(state.clone());
        gc::spawn_collector(state.clone());
        let app = api::router(state.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (listener, restart) = listener::RestartableListener::new(listener, addr);
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stop_rx.await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "simulator server stopped");
            }
        });
        tracing::info!(%addr, "kubernetes simulator listening");
        Ok(Simulator {
            state,
            stop: Some(stop_tx),
            server: Some(server),
            restart,
            temp_dir: temp,
        })
    }

    /// Base URL of the API server, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.state.addr)
    }

    /// Directory holding pod sandboxes, mapped hostPath volumes and sim-managed PVCs.
    pub fn state_dir(&self) -> &Path {
        self.state.kubelet.state_dir()
    }

    /// Writes a kubeconfig whose current context points at this simulator.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), SimError> {
        let text = kubeconfig_yaml(&self.url(), &self.state.cfg.namespace);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SimError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            })?;
        }
        std::fs::write(path, text).map_err(|source| SimError::Kubeconfig {
            path: path.to_path_buf(),
            source,
        })
    }

    /// A kube-rs client for this simulator, defaulting to the configured namespace.
    /// A client as the cluster's admin (`system:masters`), whom no Role limits: for tests that
    /// play the operator (tainting a node, say) beside a hook bound to a Role.
    pub async fn admin_client(&self) -> kube::Client {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster: {{server: \"{}\"}}\nusers:\n- name: admin\n  user: {{token: {}}}\ncontexts:\n- name: sim\n  context: {{cluster: sim, user: admin, namespace: {}}}\ncurrent-context: sim\n",
            self.url(),
            ADMIN_TOKEN,
            self.state.cfg.namespace
        );
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&yaml).expect("the admin kubeconfig parses");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("the admin kubeconfig builds a client config");
        kube::Client::try_from(config).expect("a plain-HTTP kube config always builds a client")
    }

    pub async fn client(&self) -> kube::Client {
        let uri: http::Uri = self
            .url()
            .parse()
            .expect("the simulator URL is a valid URI");
        let mut config = kube::Config::new(uri);
        config.default_namespace = self.state.cfg.namespace.clone();
        kube::Client::try_from(config).expect("a plain-HTTP kube config always builds a client")
    }

    /// Whether pods run in private mount and network namespaces (root) or on the host's.
    pub fn uses_namespaces(&self) -> bool {
        self.state.kubelet.namespaces()
    }

    /// Restarts the API server as an upgrade would: every open connection (watches, exec
    /// streams) is cut, new ones are refused for `down`, then it serves on the same address.
    /// Pods keep running throughout.
    pub fn restart_api(&self, down: Duration) {
        if !self.restart.restart(down) {
            tracing::warn!("the API server is not running; nothing to restart");
        }
    }

    /// The registry does not have `image` (yet): pulls fail with containerd's `not found` and the
    /// kubelet backs off and retries (1 s, doubling to 10 s), for as long as the simulator runs.
    pub fn hide_image(&self, image: &str) {
        self.fail_pulls(image, &not_found_cause(image));
    }

    /// As [`Simulator::hide_image`] for `pushed_after` from now, as if a parallel job pushed it
    /// then: the next pull retry after that succeeds.
    pub fn hide_image_for(&self, image: &str, pushed_after: Duration) {
        self.state
            .pull_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                image.to_string(),
                (
                    not_found_cause(image),
                    Some(std::time::Instant::now() + pushed_after),
                ),
            );
    }

    /// Pulls of `image` fail with `cause` (the runtime's message, e.g. a 401 or a TLS error).
    pub fn fail_pulls(&self, image: &str, cause: &str) {
        self.state
            .pull_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.to_string(), (cause.to_string(), None));
    }

    /// The API requests served so far, one line each: `verb resource[/sub] [name]`, and for access
    /// reviews what was asked (`create selfsubjectaccessreviews.authorization.k8s.io (get nodes)`).
    pub fn requests(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Handle to change the fault knobs while the simulator runs.
    pub fn faults(&self) -> FaultHandle {
        self.state.faults.clone()
    }

    /// Evicts a pod as the kubelet does under memory pressure: kills its processes and marks it
    /// Failed with reason Evicted.
    pub async fn evict_pod(&self, ns: &str, name: &str) -> Result<(), SimError> {
        if kubelet::evict(&self.state, ns, name).await {
            Ok(())
        } else {
            Err(SimError::PodNotFound {
                namespace: ns.to_string(),
                name: name.to_string(),
            })
        }
    }

    /// Kills a running container the way the kernel's OOM killer does: it terminates with exit code
    /// 137 and reason OOMKilled, and the pod follows its restart policy.
    pub async fn oom_kill(&self, ns: &str, pod: &str, container: &str) -> Result<(), SimError> {
        if kubelet::oom_kill(&self.state, ns, pod, container).await {
            Ok(())
        } else {
            Err(SimError::PodNotFound {
                namespace: ns.to_string(),
                name: format!("{pod} (container {container} not running)"),
            })
        }
    }

    /// Stops serving, kills every pod process and removes temporary sandboxes.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.state.kubelet.shutdown().await;
        if let Some(server) = self.server.take() {
            // Open watches keep the graceful shutdown waiting; they are not worth waiting for.
            server.abort();
            let _ = server.await;
        }
        if let Some(dir) = self.temp_dir.take()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot remove the simulator's state directory");
        }
    }
}

impl Drop for Simulator {
    /// Without [`Simulator::shutdown`] (a panicking test), still kill pod processes and remove temp state.
    fn drop(&mut self) {
        if self.server.is_none() {
            return;
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.state.kubelet.kill_everything();
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Temporary state directories are named `<prefix><pid>-<random>`.
const TEMP_PREFIX: &str = "arc-hook-sim-";

/// Removes temporary state directories of simulators whose process is gone (killed, or exited
/// without `shutdown`), so test runs do not pile them up.
fn remove_stale_state_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(dir = %entry.path().display(), "removing a dead simulator's state directory");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The kubeconfig text for a simulator at `url`. `insecure-skip-tls-verify` is what lets
/// `@kubernetes/client-node` (the upstream hook's client) talk plain HTTP; kubectl and kube ignore it.
pub fn kubeconfig_yaml(url: &str, namespace: &str) -> String {
    let n = KUBECONFIG_NAME;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\n\
         contexts:\n- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\n    namespace: {namespace}\n\
         current-context: {n}\nusers:\n- name: {n}\n  user:\n    token: arc-hook-sim-token\npreferences: {{}}\n"
    )
}
