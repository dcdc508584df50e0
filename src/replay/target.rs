//! The simulated cluster a replay runs against: the work claim backed by the replayed runner's `_work`, and a runner pod like ARC's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;

use super::SimSettings;
use crate::sim::{SimConfig, Simulator};

/// A running simulator and the kubeconfig the hook uses to reach it.
pub struct SimTarget {
    pub sim: Simulator,
    pub url: String,
    pub kubeconfig: PathBuf,
}

impl SimTarget {
    pub async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

/// Starts the simulator for a replay: `claim` is backed by `work`, and a runner pod named
/// `runner` runs on the simulated node (prepare_job pins the workflow pod beside it).
pub async fn start_simulator(
    runner: &str,
    claim: &str,
    work: &Path,
    settings: &SimSettings,
    home: &Path,
) -> anyhow::Result<SimTarget> {
    let mut cfg = SimConfig {
        node_allocatable: crate::sim::default_allocatable(),
        pvc_dirs: HashMap::from([(claim.to_string(), work.to_path_buf())]),
        state_dir: Some(home.join("sim")),
        start_delay: Duration::from_millis(100),
        ..Default::default()
    };
    settings
        .apply(&mut cfg)
        .map_err(|e| anyhow::anyhow!("sim.json: {e}"))?;
    let sim = Simulator::start(cfg)
        .await
        .context("starting the embedded Kubernetes simulator")?;
    let kubeconfig = home.join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig)
        .context("writing the simulator's kubeconfig")?;
    let client = sim.client().await;
    let pods: kube::Api<Pod> = kube::Api::default_namespaced(client);
    let runner_pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": runner, "labels": {"app.kubernetes.io/component": "runner"}},
        "spec": {
            "containers": [{"name": "runner", "image": "arc-hook-runner:replay", "command": ["sleep", "infinity"]}],
            "restartPolicy": "Never"
        }
    }))?;
    pods.create(&PostParams::default(), &runner_pod)
        .await
        .context("creating the runner pod in the simulator")?;
    let url = sim.url();
    Ok(SimTarget {
        sim,
        url,
        kubeconfig,
    })
}
