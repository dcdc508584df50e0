//! `arc-hook sim serve`: runs the simulator until interrupted, with a kubeconfig for clients.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{SimConfig, Simulator, arc_chart_default_role};

/// Options of `arc-hook sim serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 to serve the Kubernetes API on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Where to write the kubeconfig pointing at the simulator.
    #[arg(long, default_value = "arc-hook-sim.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Delay between a pod's scheduling and its containers starting.
    #[arg(long, default_value_t = 200)]
    pub start_delay_ms: u64,
    /// Image reference that fails to pull (ErrImagePull, then ImagePullBackOff); repeatable.
    #[arg(long = "unpullable", value_name = "IMAGE")]
    pub unpullable: Vec<String>,
    /// Enforce the actions-runner-controller chart's runner Role instead of allowing everything.
    #[arg(long)]
    pub default_role: bool,
    /// Default namespace (written into the kubeconfig).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Keep pod sandboxes here instead of a temporary directory removed on exit.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The node's allocatable amount of a resource, e.g. `cpu=8`, `memory=32Gi`,
    /// `nvidia.com/gpu=1` (repeatable; unnamed resources keep cpu 64, memory 256Gi, pods 110).
    #[arg(long = "node-allocatable", value_name = "RESOURCE=QUANTITY", value_parser = parse_resource)]
    pub node_allocatable: Vec<(String, String)>,
    /// A job directory's sim.json (image commands, unpullable images, ARC's Role, node
    /// capacity, faults): serve a job's simulator standalone, e.g. for kubectl or upstream's hook.
    #[arg(long, value_name = "SIM_JSON")]
    pub settings: Option<PathBuf>,
    /// Faults to inject (on top of --settings).
    #[command(flatten)]
    pub faults: super::settings::FaultSettings,
    /// Serve exec with `v4.channel.k8s.io` only, as an API server before 1.30 does (no stdin
    /// close signal).
    #[arg(long)]
    pub exec_v4_only: bool,
}

/// `cpu=8` -> ("cpu", "8"), with the quantity checked.
fn parse_resource(s: &str) -> Result<(String, String), String> {
    let (name, qty) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected RESOURCE=QUANTITY, e.g. cpu=8"))?;
    if name.is_empty() || super::quantity::parse(qty).is_none() {
        return Err(format!(
            "{s:?}: expected RESOURCE=QUANTITY, e.g. cpu=8 or memory=32Gi"
        ));
    }
    Ok((name.to_string(), qty.to_string()))
}

/// Serves until SIGINT or SIGTERM, then kills pod processes and removes temporary state.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut node_allocatable = super::kubelet::default_allocatable();
    node_allocatable.extend(args.node_allocatable.iter().cloned());
    let mut cfg = SimConfig {
        node_allocatable,
        namespace: args.namespace.clone(),
        start_delay: Duration::from_millis(args.start_delay_ms),
        unpullable_images: args.unpullable.clone(),
        rbac: args.default_role.then(arc_chart_default_role),
        state_dir: args.state_dir.clone(),
        exec_v4_only: args.exec_v4_only,
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
    cfg.faults = args
        .faults
        .apply(cfg.faults.clone())
        .map_err(|e| anyhow::anyhow!("fault flags: {e}"))?;
    let sim = Simulator::start_on(cfg, args.port)
        .await
        .context("cannot start the Kubernetes simulator")?;
    sim.write_kubeconfig(&args.kubeconfig).with_context(|| {
        format!(
            "cannot write the kubeconfig to {}",
            args.kubeconfig.display()
        )
    })?;
    let path = std::fs::canonicalize(&args.kubeconfig).unwrap_or_else(|_| args.kubeconfig.clone());
    println!("export KUBECONFIG={}", path.display());
    eprintln!("arc-hook simulator serving {} (Ctrl-C to stop)", sim.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    eprintln!("stopping the simulator");
    sim.shutdown().await;
    Ok(())
}
