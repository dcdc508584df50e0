//! What a replay runs against: the configured cluster, or the embedded simulator with the work claim backed by the replayed runner's `_work` and a runner pod like ARC's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;

use super::SimSettings;
use super::home::RunnerHome;
use super::report::Event;
use super::runner::RunnerNames;
use crate::config::ClusterSource;
use crate::sim::{Injected, SimConfig, Simulator};

/// The cluster the hook talks to during a replay.
pub(crate) enum Target {
    /// The cluster the environment configures (a service account or a kubeconfig), asked for
    /// with `--cluster`.
    Cluster(ClusterInfo),
    /// The embedded simulator, started for this replay.
    Simulator(SimTarget),
}

/// Where a `--cluster` replay's hook will create objects, shown before anything is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The kubeconfig context, or `in-cluster` for a service account.
    pub context: String,
    pub server: String,
    pub namespace: String,
}

impl ClusterInfo {
    /// Reads the configuration the hook will use (as kubectl would), without contacting the server.
    /// `namespace` overrides the configuration's (`ACTIONS_RUNNER_KUBERNETES_NAMESPACE`).
    #[cfg(test)] // only the unit tests use it
    pub(crate) async fn read(
        source: ClusterSource,
        namespace: Option<&str>,
    ) -> anyhow::Result<Self> {
        Ok(Self::read_with_config(source, namespace).await?.0)
    }

    /// [`ClusterInfo::read`], with the client configuration it was read from.
    pub(crate) async fn read_with_config(
        source: ClusterSource,
        namespace: Option<&str>,
    ) -> anyhow::Result<(Self, kube::Config)> {
        let (context, config) = match source {
            ClusterSource::None => anyhow::bail!(
                "--cluster: no cluster is configured: set KUBECONFIG (e.g. from `scripts/real-cluster.sh up DIR`), \
                 or leave --cluster out to use the embedded simulator"
            ),
            ClusterSource::InCluster => (
                "in-cluster".to_string(),
                kube::Config::incluster().context("--cluster: the in-cluster configuration")?,
            ),
            ClusterSource::Kubeconfig => {
                let kubeconfig = kube::config::Kubeconfig::read()
                    .context("--cluster: reading the kubeconfig (KUBECONFIG or ~/.kube/config)")?;
                let context = kubeconfig.current_context.clone().unwrap_or_default();
                let config = kube::Config::from_custom_kubeconfig(
                    kubeconfig,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .context("--cluster: the kubeconfig's current context")?;
                (context, config)
            }
        };
        let info = Self {
            context,
            server: config.cluster_url.to_string(),
            namespace: namespace
                .map(str::to_string)
                .unwrap_or_else(|| config.default_namespace.clone()),
        };
        Ok((info, config))
    }
}

/// The annotation a runner pod may carry to say where the runner's home is on this machine: its
/// work claim's directory seen from here (`scripts/real-cluster.sh` sets it on the conformance
/// cluster's runner pod, whose claim is a local PV), so `replay --cluster` lays the job out there.
pub(crate) const RUNNER_HOME_ANNOTATION: &str = "arc-hook.dev/runner-home";

/// Where `replay --cluster` lays out the runner's home when `--workdir` is not given: the runner
/// pod's [`RUNNER_HOME_ANNOTATION`] when it names a directory here. `None` (a temporary home) when
/// the pod has none; an error when the pod cannot be read or names a missing directory.
pub(crate) async fn annotated_runner_home(
    config: kube::Config,
    namespace: &str,
    runner_pod: &str,
) -> anyhow::Result<Option<PathBuf>> {
    let client = kube::Client::try_from(config).context("--cluster: a client for the cluster")?;
    let pods: kube::Api<Pod> = kube::Api::namespaced(client, namespace);
    let pod = tokio::time::timeout(Duration::from_secs(30), pods.get_opt(runner_pod))
        .await
        .with_context(|| format!("--cluster: reading runner pod {runner_pod}: no answer in 30s"))?
        .with_context(|| format!("--cluster: reading runner pod {runner_pod}"))?;
    let Some(home) = pod
        .and_then(|p| p.metadata.annotations)
        .and_then(|a| a.get(RUNNER_HOME_ANNOTATION).cloned())
    else {
        return Ok(None);
    };
    let home = PathBuf::from(home);
    anyhow::ensure!(
        home.join("_work").is_dir(),
        "--cluster: runner pod {runner_pod}'s {RUNNER_HOME_ANNOTATION} names {}, which has no _work here: \
         give --workdir the runner's home as this machine sees it",
        home.display()
    );
    Ok(Some(home))
}

impl Target {
    /// With `cluster` (from `--cluster`), the configured cluster; otherwise, always, a simulator
    /// for the runner `names` whose work claim is `home`'s `_work`.
    pub(crate) async fn choose(
        cluster: Option<ClusterInfo>,
        names: &RunnerNames,
        home: &RunnerHome,
        settings: &SimSettings,
    ) -> anyhow::Result<Self> {
        if let Some(info) = cluster {
            return Ok(Target::Cluster(info));
        }
        let sim =
            start_simulator(&names.pod, &names.claim, &home.work, settings, home.path()).await?;
        Ok(Target::Simulator(sim))
    }

    /// What a replay shows about its target.
    pub(crate) fn event(&self) -> Event {
        match self {
            Target::Cluster(info) => Event::UsingCluster(info.clone()),
            Target::Simulator(sim) => Event::UsingSimulator {
                url: sim.url.clone(),
            },
        }
    }

    /// The kubeconfig the hook is given: the simulator's (against a cluster, the hook finds its own).
    pub(crate) fn kubeconfig(&self) -> Option<&Path> {
        match self {
            Target::Cluster(_) => None,
            Target::Simulator(sim) => Some(&sim.kubeconfig),
        }
    }

    /// The pods API of the namespace the hook works in, as replay reads the job pod.
    pub(crate) async fn pods(
        &self,
        cluster: Option<&kube::Config>,
    ) -> anyhow::Result<kube::Api<Pod>> {
        match (self, cluster) {
            (Target::Cluster(info), Some(config)) => {
                let client = kube::Client::try_from(config.clone())
                    .context("--cluster: a client for the cluster")?;
                Ok(kube::Api::namespaced(client, &info.namespace))
            }
            (Target::Cluster(_), None) => anyhow::bail!("--cluster: no client configuration"),
            (Target::Simulator(sim), _) => {
                Ok(kube::Api::default_namespaced(sim.sim.client().await))
            }
        }
    }

    /// Stops the simulator, if one was started; returns the faults it injected.
    pub(crate) async fn finish(self) -> Injected {
        match self {
            Target::Cluster(_) => Injected::default(),
            Target::Simulator(sim) => {
                let injected = sim.sim.faults().injected();
                sim.shutdown().await;
                injected
            }
        }
    }
}

/// Who the job pod's job container runs as, when its spec says (`runAsUser`/`runAsGroup` of
/// the container, else of the pod; an unset group is 0, as the kubelet's default); `None` for
/// root or a user the spec leaves to the image.
pub(crate) async fn job_user(
    pods: &kube::Api<Pod>,
    job_pod: &str,
) -> anyhow::Result<Option<(u32, u32)>> {
    let pod = pods
        .get(job_pod)
        .await
        .with_context(|| format!("reading the job pod {job_pod}"))?;
    let spec = pod.spec.unwrap_or_default();
    let pod_sc = spec.security_context.unwrap_or_default();
    let container_sc = spec
        .containers
        .into_iter()
        .find(|c| c.name == crate::objects::JOB_CONTAINER_NAME)
        .and_then(|c| c.security_context)
        .unwrap_or_default();
    let uid = container_sc.run_as_user.or(pod_sc.run_as_user);
    let gid = container_sc
        .run_as_group
        .or(pod_sc.run_as_group)
        .unwrap_or(0);
    Ok(match uid {
        Some(uid) if uid != 0 => {
            let id = |n: i64| u32::try_from(n).context("a user or group id out of range");
            Some((id(uid)?, id(gid)?))
        }
        _ => None,
    })
}

/// A running simulator and the kubeconfig the hook uses to reach it.
pub(crate) struct SimTarget {
    pub sim: Simulator,
    pub url: String,
    pub kubeconfig: PathBuf,
}

impl SimTarget {
    pub(crate) async fn shutdown(self) {
        self.sim.shutdown().await;
    }
}

/// Starts the simulator for a replay: `claim` is backed by `work`, and a runner pod named
/// `runner` runs on the simulated node (prepare_job pins the workflow pod beside it).
pub(crate) async fn start_simulator(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cluster_without_any_configuration_is_refused_naming_the_flag() {
        let e = ClusterInfo::read(ClusterSource::None, None)
            .await
            .expect_err("no cluster configured");
        let text = format!("{e:#}");
        assert!(text.contains("--cluster"), "{text}");
        assert!(text.contains("KUBECONFIG"), "{text}");
    }
}
