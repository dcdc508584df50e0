//! Pure construction of every Kubernetes object the hook creates; `render`, the hooks and the tests all call it.

pub(crate) mod builder;
pub(crate) mod buildkit;
pub mod ephemeral;
pub(crate) mod job;
pub mod names;
pub(crate) mod options;
pub(crate) mod pod;
pub(crate) mod ports;
pub(crate) mod secret;
pub mod slot_lock;
pub(crate) mod step_pod;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::EnvVar;

use crate::config::WorkVolumeMode;

/// Label upstream puts on every object of a runner; kept so leftovers of either hook are found.
pub(crate) const RUNNER_POD_LABEL: &str = "runner-pod";
/// The runner pod's full name on every object (the label may hold a hashed form of it).
pub(crate) const RUNNER_POD_ANNOTATION: &str = "arc-hook.dev/runner-pod";
/// Label naming what an object is for (`workflow`, `step`, `registry-credentials`).
pub(crate) const ROLE_LABEL: &str = "arc-hook.dev/role";
pub(crate) const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub(crate) const MANAGED_BY: &str = "arc-hook";
/// The job container's name (and `$job` in templates).
pub(crate) const JOB_CONTAINER_NAME: &str = "job";
/// The work volume's name in the workflow pod.
pub(crate) const WORK_VOLUME_NAME: &str = "work";

/// A runner input the hook cannot turn into a valid object.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BuildError {
    #[error(
        "{field}: invalid environment variable name {name:?} (use printable ASCII characters other than '=')"
    )]
    EnvName { field: String, name: String },
    #[error("{field}: invalid port mapping {value:?}: {reason}")]
    Port {
        field: String,
        value: String,
        reason: String,
    },
    #[error(
        "{field}: {path:?} is outside the runner's _work directory; on Kubernetes only paths under _work can be mounted"
    )]
    MountOutsideWork { field: String, path: String },
    #[error(
        "{field}: two mounts at {path} (arc-hook mounts the job's own file commands and `_temp` there in claim mode, so the runner's stay out of the job's reach); mount the volume elsewhere"
    )]
    MountConflict { field: String, path: String },
    #[error(
        "{first} and {second}: two different sets of credentials for registry {server}; a pod has one pull secret entry per registry, so give the job and its services the same credentials for it"
    )]
    ConflictingCredentials {
        server: String,
        first: String,
        second: String,
    },
}

/// What object construction needs to know about where it runs.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub runner_pod: String,
    pub namespace: String,
    /// The runner's node; the workflow pod is pinned to it unless the scheduler places it.
    pub node_name: Option<String>,
    pub use_kube_scheduler: bool,
    pub work_volume: WorkVolumeMode,
    pub claim_name: String,
    pub default_registry: String,
    /// The node cache slot the job holds (`${CACHE_SLOT}` in templates, a label on the workflow pod).
    pub cache_slot: Option<u32>,
    /// Which node caches the job may use (`${CACHE_TRUST}` in templates).
    pub cache_trust: crate::config::CacheTrust,
}

/// The warning for docker `options:` a container asked for, which Kubernetes cannot apply.
pub(crate) fn ignored_options_warning(options: Option<&str>, what: &str) -> Option<String> {
    options.filter(|o| !o.trim().is_empty()).map(|o| {
        format!("{what}: container options {o:?} are docker flags and are ignored on Kubernetes; use the worker-podspec template instead")
    })
}

/// A build context for unit tests: runner `arc-runner`, namespace `ci`, node `node-1`, claim mode.
#[cfg(test)]
pub(crate) fn test_context() -> BuildContext {
    BuildContext {
        runner_pod: "arc-runner".into(),
        namespace: "ci".into(),
        node_name: Some("node-1".into()),
        use_kube_scheduler: false,
        work_volume: crate::config::WorkVolumeMode::Claim,
        claim_name: "arc-runner-work".into(),
        default_registry: crate::config::DOCKER_HUB_CONFIG_KEY.into(),
        cache_slot: Some(0),
        cache_trust: crate::config::CacheTrust::Untrusted,
    }
}

/// The labels every object of this runner carries.
pub(crate) fn runner_labels(ctx: &BuildContext, role: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            RUNNER_POD_LABEL.to_string(),
            names::runner_label_value(&ctx.runner_pod),
        ),
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        (ROLE_LABEL.to_string(), role.to_string()),
    ])
}

/// The label selector matching every object of this runner.
pub(crate) fn runner_selector(runner_pod: &str) -> String {
    format!(
        "{RUNNER_POD_LABEL}={}",
        names::runner_label_value(runner_pod)
    )
}

/// The annotations every object of this runner carries: its full name.
pub(crate) fn runner_annotations(ctx: &BuildContext) -> BTreeMap<String, String> {
    BTreeMap::from([(RUNNER_POD_ANNOTATION.to_string(), ctx.runner_pod.clone())])
}

/// Whether an object found under our name (an AlreadyExists) is this runner's: its
/// `runner-pod` label must be ours. Another runner's object is never adopted.
pub(crate) fn owned_by(labels: Option<&BTreeMap<String, String>>, runner_pod: &str) -> bool {
    labels
        .and_then(|l| l.get(RUNNER_POD_LABEL))
        .is_some_and(|v| *v == names::runner_label_value(runner_pod))
}

/// Which container an environment is for: Docker mode treats them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnvFor {
    /// The job container or a service (`docker create -e KEY` without the value in docker's
    /// environment drops an empty variable; upstream drops `HOME`, the runner's own).
    JobOrService,
    /// A container step (`docker run` with the values in docker's environment: `KEY=` is kept,
    /// and `HOME` is the runner's `/github/home`).
    Step,
}

/// `value` written so the kubelet passes it on unchanged: it expands `$(VAR)` and turns `$$`
/// into `$` in a container's `command`, `args` and `env` values, so every `$` is doubled.
pub(crate) fn kubelet_literal(value: &str) -> String {
    value.replace('$', "$$")
}

/// A command line (entry point or arguments) with every word made a [`kubelet_literal`].
pub(crate) fn kubelet_literals(words: &[String]) -> Vec<String> {
    words.iter().map(|w| kubelet_literal(w)).collect()
}

/// The container's env: the runner's variables byte-exact (see [`kubelet_literal`]), then
/// `GITHUB_ACTIONS=true` and `CI=true` unless set, as Docker mode adds them.
pub(crate) fn container_env(
    vars: &BTreeMap<String, String>,
    field: &str,
    target: EnvFor,
) -> Result<Vec<EnvVar>, BuildError> {
    let mut env = Vec::with_capacity(vars.len() + 2);
    for (k, v) in vars {
        if !crate::validate::env_var_name(k).is_empty() {
            return Err(BuildError::EnvName {
                field: format!("{field}.environmentVariables"),
                name: k.clone(),
            });
        }
        if k == "GITHUB_ACTIONS" {
            continue;
        }
        if target == EnvFor::JobOrService && (k == "HOME" || v.is_empty()) {
            continue;
        }
        env.push(EnvVar {
            name: k.clone(),
            value: Some(kubelet_literal(v)),
            value_from: None,
        });
    }
    env.push(EnvVar {
        name: "GITHUB_ACTIONS".into(),
        value: Some("true".into()),
        value_from: None,
    });
    if !vars.contains_key("CI") {
        env.push(EnvVar {
            name: "CI".into(),
            value: Some("true".into()),
            value_from: None,
        });
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_follows_upstream_rules() {
        let vars = BTreeMap::from([
            ("HOME".to_string(), "/root".to_string()),
            ("EMPTY".to_string(), String::new()),
            ("A".to_string(), "x y $z".to_string()),
        ]);
        let pairs = |target| -> Vec<(String, String)> {
            container_env(&vars, "args", target)
                .expect("valid")
                .into_iter()
                .map(|e| (e.name, e.value.unwrap_or_default()))
                .collect()
        };
        let strs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            pairs(EnvFor::JobOrService),
            strs(&[("A", "x y $$z"), ("GITHUB_ACTIONS", "true"), ("CI", "true")])
        );
        assert_eq!(
            pairs(EnvFor::Step),
            strs(&[
                ("A", "x y $$z"),
                ("EMPTY", ""),
                ("HOME", "/root"),
                ("GITHUB_ACTIONS", "true"),
                ("CI", "true")
            ]),
            "a container step keeps KEY= and HOME, as docker run does"
        );

        let vars = BTreeMap::from([("CI".to_string(), "false".to_string())]);
        let env = container_env(&vars, "f", EnvFor::JobOrService).expect("valid");
        assert_eq!(env.iter().filter(|e| e.name == "CI").count(), 1);
        assert_eq!(env[0].value.as_deref(), Some("false"));
    }

    #[test]
    fn env_names_are_checked() {
        let vars = BTreeMap::from([("A=B".to_string(), "v".to_string())]);
        let e = container_env(&vars, "args.container", EnvFor::JobOrService).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "args.container.environmentVariables: invalid environment variable name \"A=B\" (use printable ASCII characters other than '=')"
        );
    }
}
