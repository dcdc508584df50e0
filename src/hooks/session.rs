//! How a command that creates objects starts, in one order: the runner's name and the template
//! (read before touching the cluster: a broken template must leave nothing behind), the
//! connection, the permission review; then, where pods are placed, the runner's node.

use anyhow::bail;

use crate::config::{Config, WorkVolumeMode};
use crate::k8s::Kube;
use crate::k8s::rbac::{self, Extra, Granted};
use crate::k8s::retry::with_retry;
use crate::objects::BuildContext;
use crate::protocol::CommandName;
use crate::template::Template;

/// A command's runner, template, connection and reviewed permissions.
pub(crate) struct Session {
    pub runner: String,
    pub template: Option<Template>,
    pub kube: Kube,
    pub granted: Granted,
}

impl Session {
    /// Starts `command`: fails, naming what is wrong, before anything is created.
    pub(crate) async fn open(config: &Config, command: CommandName) -> anyhow::Result<Self> {
        let runner = config.require_runner_pod_name()?.to_string();
        let template = match command {
            CommandName::PrepareJob | CommandName::RunContainerStep => config
                .template_path
                .as_deref()
                .map(Template::load)
                .transpose()?,
            CommandName::RunScriptStep | CommandName::CleanupJob => None,
        };
        let kube = connect(config).await?;
        let also = node_extras(config, command);
        let granted = rbac::check(&kube, command, also).await?;
        if !granted.missing_required.is_empty() {
            bail!(rbac::missing_message(
                &granted.missing_required,
                &kube.namespace
            ));
        }
        if also.contains(&Extra::ReadNodes) && !granted.has(Extra::ReadNodes) {
            bail!(NODES_NOT_GRANTED);
        }
        Ok(Self {
            runner,
            template,
            kube,
            granted,
        })
    }

    /// The node the job's pods are pinned to: the runner pod's, where they share its work
    /// volume (claim mode) and the scheduler is not asked to place them. In no-volume mode
    /// nothing ties a job to the runner's node, and the runner pod is not read at all.
    pub(crate) async fn node(&self, config: &Config) -> anyhow::Result<Option<String>> {
        if !pins_to_runner_node(config) {
            return Ok(None);
        }
        runner_node(&self.kube, &self.runner).await
    }

    /// What the object builders need to know about this runner; `node` from [`Self::node`].
    pub(crate) fn build_context(&self, config: &Config, node: Option<String>) -> BuildContext {
        BuildContext {
            runner_pod: self.runner.clone(),
            namespace: self.kube.namespace.clone(),
            node_name: node,
            use_kube_scheduler: config.use_kube_scheduler,
            work_volume: config.work_volume,
            claim_name: config.claim_name_for(&self.runner),
            default_registry: config.default_registry.clone(),
            cache_slot: None,
            cache_trust: config.cache_trust,
        }
    }
}

/// Why prepare_job cannot wait for start-up taints.
pub(crate) const NODES_NOT_GRANTED: &str = "ARC_HOOK_WAIT_FOR_NODE_TAINTS is set, but the runner's service account may not get nodes: bind it a ClusterRole with get and watch on nodes (README, \"Start-up taints\"), or unset ARC_HOOK_WAIT_FOR_NODE_TAINTS";

/// The node permissions `command` asks about: only prepare_job's wait for start-up taints needs
/// them, so with `ARC_HOOK_WAIT_FOR_NODE_TAINTS` unset (or pods not pinned to the runner's node)
/// nodes are neither reviewed nor read.
pub(crate) fn node_extras(config: &Config, command: CommandName) -> &'static [Extra] {
    if command == CommandName::PrepareJob
        && !config.wait_for_node_taints.is_empty()
        && pins_to_runner_node(config)
    {
        &[Extra::ReadNodes, Extra::WatchNodes]
    } else {
        &[]
    }
}

/// Whether the job's pods go to the runner's node (pure: the configuration decides).
pub(crate) fn pins_to_runner_node(config: &Config) -> bool {
    !config.use_kube_scheduler && config.work_volume == WorkVolumeMode::Claim
}

/// The node runner pod `runner` runs on (`None` while it is not scheduled).
pub(crate) async fn runner_node(kube: &Kube, runner: &str) -> anyhow::Result<Option<String>> {
    let api = kube.pods();
    let pod = with_retry(&format!("reading runner pod {runner}"), || api.get(runner))
        .await
        .map_err(|e| {
            if e.is_not_found() {
                anyhow::anyhow!(
                    "runner pod {runner} not found in namespace {}: ACTIONS_RUNNER_POD_NAME must name this runner's pod, or set ACTIONS_RUNNER_USE_KUBE_SCHEDULER=true",
                    kube.namespace
                )
            } else {
                anyhow::Error::from(e)
            }
        })?;
    Ok(pod.spec.and_then(|s| s.node_name))
}

/// Connects to the cluster named by the configuration.
pub(crate) async fn connect(config: &Config) -> anyhow::Result<Kube> {
    Ok(Kube::connect(config.namespace.as_deref()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        Config::from_lookup(|k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .expect("valid configuration")
    }

    #[test]
    fn only_a_shared_work_volume_pins_pods_to_the_runner_node() {
        assert!(pins_to_runner_node(&config(&[])));
        assert!(!pins_to_runner_node(&config(&[(
            "ACTIONS_RUNNER_USE_KUBE_SCHEDULER",
            "true"
        )])));
        assert!(!pins_to_runner_node(&config(&[(
            "ARC_HOOK_WORK_VOLUME",
            "copy"
        )])));
    }

    #[test]
    fn nodes_are_asked_about_only_for_a_taint_wait_on_the_runner_node() {
        let taints = ("ARC_HOOK_WAIT_FOR_NODE_TAINTS", "startup");
        let prepare = CommandName::PrepareJob;
        assert!(node_extras(&config(&[]), prepare).is_empty());
        assert_eq!(
            node_extras(&config(&[taints]), prepare),
            [Extra::ReadNodes, Extra::WatchNodes]
        );
        assert!(node_extras(&config(&[taints]), CommandName::RunContainerStep).is_empty());
        // No-volume mode and the scheduler's own placement: the scheduler checks taints itself.
        assert!(
            node_extras(
                &config(&[taints, ("ARC_HOOK_WORK_VOLUME", "copy")]),
                prepare
            )
            .is_empty()
        );
        assert!(
            node_extras(
                &config(&[taints, ("ACTIONS_RUNNER_USE_KUBE_SCHEDULER", "true")]),
                prepare
            )
            .is_empty()
        );
    }
}
