//! `arc-hook sim node`: a node agent that runs a real cluster's pods on this machine with the simulator's kubelet.
//!
//! The agent registers a Node in the real API server, keeps it alive (status heartbeat and a Lease),
//! and mirrors every pod bound to it into an embedded [`Simulator`](super::Simulator): the local
//! simulator's kubelet runs the containers, its API (on `--backend-listen`) serves exec and logs to
//! the kubelet front that the real API server proxies to, and the local pod's status is written back
//! to the real pod's status subresource.

mod mirror;
mod register;
mod translate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};

use super::{SimConfig, Simulator};

/// Options of `arc-hook sim node`.
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Kubeconfig of the real cluster, with rights to register nodes and write pod status (admin).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// Name of the Node to register.
    #[arg(long, default_value = "arc-node")]
    pub node_name: String,
    /// Port the kubelet front (which the API server calls for exec and logs) listens on; published
    /// in the Node's `status.daemonEndpoints.kubeletEndpoint.port`.
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Address on loopback where the local simulator serves exec and logs for the kubelet front.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub backend_listen: SocketAddr,
    /// A sim.json (image commands, node capacity), as `sim serve --settings`; its Role and faults
    /// do not apply here.
    #[arg(long, value_name = "SIM_JSON")]
    pub settings: Option<PathBuf>,
    /// Written (with the backend's URL) once the Node is registered and pods are watched.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Keep pod sandboxes here instead of a temporary directory removed on exit.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

/// Failures of the node agent's own steps (the edges add context with anyhow).
#[derive(Debug, thiserror::Error)]
pub(crate) enum NodeError {
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("pod {pod}: {message}")]
    Translate { pod: String, message: String },
}

/// The local simulator the node agent runs pods in: `sim.json`'s image settings and capacity,
/// hostPath volumes on the host (as a kubelet mounts them), no RBAC (the real API server already authorized every request), no faults.
pub(crate) fn local_config(args: &NodeArgs) -> anyhow::Result<SimConfig> {
    let mut cfg = SimConfig {
        state_dir: args.state_dir.clone(),
        start_delay: Duration::from_millis(50),
        ..SimConfig::default()
    };
    if let Some(path) = &args.settings {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --settings {}", path.display()))?;
        let settings = super::settings::SimSettings::from_json(&text)
            .with_context(|| format!("--settings {}", path.display()))?;
        settings
            .apply(&mut cfg)
            .map_err(|e| anyhow::anyhow!("--settings {}: {e}", path.display()))?;
    }
    cfg.rbac = None;
    // Claims become hostPaths on their PersistentVolume's directory (translate.rs).
    cfg.host_paths_on_host = true;
    cfg.faults = super::Faults::default();
    Ok(cfg)
}

/// Runs the node agent until SIGINT or SIGTERM.
pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("cannot read --kubeconfig {}", args.kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("--kubeconfig {}", args.kubeconfig.display()))?;
    let real = kube::Client::try_from(config).context("cannot build a client for the cluster")?;
    let cfg = local_config(&args)?;
    let allocatable = cfg.node_allocatable.clone();
    let local_sim = Simulator::start_on(cfg, args.backend_listen.port())
        .await
        .context("cannot start the local simulator backend")?;
    let local = local_sim.client().await;
    let node = register::NodeSpec {
        name: args.node_name.clone(),
        kubelet_port: args.kubelet_port,
        allocatable,
    };
    register::register(&real, &node)
        .await
        .context("cannot register the node")?;
    let heartbeat = tokio::spawn(register::heartbeat(real.clone(), node.clone()));
    let mut mirror = mirror::Mirror::new(real.clone(), local.clone(), &args.node_name);
    if let Some(path) = &args.ready_file {
        std::fs::write(path, format!("{}\n", local_sim.url()))
            .with_context(|| format!("cannot write --ready-file {}", path.display()))?;
    }
    eprintln!(
        "arc-hook node agent: node {} registered, backend {}",
        args.node_name,
        local_sim.url()
    );
    let result = watch_loop(&real, &local, &args.node_name, &mut mirror).await;
    heartbeat.abort();
    eprintln!("stopping the node agent");
    local_sim.shutdown().await;
    result
}

/// Reconciles on every pod event of either side (the watchers reconnect with backoff), and at
/// least every few seconds, until a signal arrives.
async fn watch_loop(
    real: &kube::Client,
    local: &kube::Client,
    node: &str,
    mirror: &mut mirror::Mirror,
) -> anyhow::Result<()> {
    let selector = format!("spec.nodeName={node}");
    let real_pods: kube::Api<Pod> = kube::Api::all(real.clone());
    let local_pods: kube::Api<Pod> = kube::Api::all(local.clone());
    let mut real_events = watcher(real_pods, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut local_events = watcher(local_pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r.context("cannot listen for SIGINT")?; return Ok(()); }
            _ = term.recv() => return Ok(()),
            ev = real_events.next() => log_watch_error("cluster", ev),
            ev = local_events.next() => log_watch_error("local", ev),
            _ = tick.tick() => {}
        }
        if let Err(e) = mirror.reconcile().await {
            tracing::warn!(error = %e, "node agent reconcile failed; retrying on the next event");
        }
    }
}

fn log_watch_error(side: &str, ev: Option<Result<watcher::Event<Pod>, watcher::Error>>) {
    if let Some(Err(e)) = ev {
        tracing::warn!(side, error = %e, "pod watch failed; reconnecting with backoff");
    }
}
