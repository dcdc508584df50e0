//! Every environment variable arc-hook reads, read once, typed and documented (the README's table mirrors this file).

use std::path::PathBuf;
use std::time::Duration;

/// The runner pod name `render` assumes when `ACTIONS_RUNNER_POD_NAME` is unset.
pub(crate) const DEFAULT_RENDER_RUNNER_POD: &str = "arc-runner";
/// Default of `ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS` (upstream's 10 minutes).
pub(crate) const DEFAULT_PREPARE_TIMEOUT: Duration = Duration::from_secs(600);
/// Default of `ARC_HOOK_UNSCHEDULABLE_GRACE_SECONDS`: how long a pod the scheduler cannot place,
/// for a reason other than a busy node, is given before prepare_job fails.
pub(crate) const DEFAULT_UNSCHEDULABLE_GRACE: Duration = Duration::from_secs(60);
/// Default of `ARC_HOOK_NODE_TAINTS_TIMEOUT_SECONDS`: how long prepare_job waits for the runner's
/// node to lose the start-up taints in `ARC_HOOK_WAIT_FOR_NODE_TAINTS` (node agents such as
/// Karpenter's start-up taint owners usually clear them within a minute or two).
pub(crate) const DEFAULT_NODE_TAINTS_TIMEOUT: Duration = Duration::from_secs(300);
/// Default of `ARC_HOOK_CLEANUP_TIMEOUT_SECONDS`.
pub(crate) const DEFAULT_CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);
/// The most a no-volume pull may bring back to the runner after one step (2 GiB).
pub(crate) const DEFAULT_PULL_MAX_BYTES: u64 = 2 << 30;
/// Default of `ARC_HOOK_BUILD_TIMEOUT_SECONDS`: how long a Dockerfile action's image build may take.
pub(crate) const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(1800);
/// The one line a Dockerfile action gets when in-cluster builds are not configured.
pub(crate) const BUILD_NOT_CONFIGURED: &str = "args.dockerfile: this runner cannot build Dockerfile actions: in-cluster image builds are not configured; set ARC_HOOK_BUILDER_IMAGE (BuildKit's rootless image, e.g. moby/buildkit:v0.23.2-rootless, from your registry mirror) and ARC_HOOK_BUILD_REGISTRY (where built images are pushed, e.g. your Harbor project), optionally ARC_HOOK_BUILD_PUSH_SECRET (a dockerconfigjson secret with push credentials); or use a prebuilt image (`uses: docker://<image>`)";

/// An environment variable holding a value arc-hook cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

/// Which node caches a job's pods get (`${CACHE_TRUST}` in templates), from what the runner tells
/// the hook about the run (`GITHUB_EVENT_NAME`, `GITHUB_REF_PROTECTED`, from the job's `github`
/// context, which the workflow cannot set). Only a run of reviewed code on a protected ref is
/// trusted, so default-branch and release builds never read what pull-request code wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheTrust {
    /// push, schedule, workflow_dispatch or release, on a protected branch or tag.
    Trusted,
    /// Everything else: pull requests, unprotected refs, and a runner that does not say.
    Untrusted,
}

impl CacheTrust {
    /// Events whose code is the ref's own (not a pull request's), if the ref is protected.
    const TRUSTED_EVENTS: &'static [&'static str] =
        &["push", "schedule", "workflow_dispatch", "release"];

    /// The trust of a run with this event and `github.ref_protected`.
    pub(crate) fn of_run(event_name: Option<&str>, ref_protected: Option<&str>) -> Self {
        match (event_name, ref_protected) {
            (Some(event), Some(protected))
                if Self::TRUSTED_EVENTS.contains(&event.trim())
                    && protected.trim().eq_ignore_ascii_case("true") =>
            {
                Self::Trusted
            }
            _ => Self::Untrusted,
        }
    }

    /// The value templates see.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Untrusted => "untrusted",
        }
    }
}

/// How the runner's `_work` reaches the workflow pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkVolumeMode {
    /// The runner's work PVC is mounted in the workflow pod (upstream's kubernetes mode).
    Claim,
    /// The workflow pod gets an emptyDir and the hook copies files over exec (kubernetes-novolume).
    Copy,
}

/// How container steps (`run_container_step`) run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContainerStepMode {
    /// As an ephemeral container in the job pod where the Role allows it, else as a Job.
    Auto,
    /// Always as a separate Job (the job pod is never patched).
    Job,
}

/// Which image builder builds Dockerfile actions (`ARC_HOOK_BUILDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuilderKind {
    /// Rootless, daemonless BuildKit (`moby/buildkit:*-rootless`), or `BUILDKIT_HOST`.
    BuildKit,
    /// A Kaniko executor image.
    Kaniko,
}

/// In-cluster builds of Dockerfile actions (BuildKit or Kaniko builder pods).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildConfig {
    /// `ARC_HOOK_BUILDER`: `buildkit` (default) or `kaniko`.
    pub kind: BuilderKind,
    /// `ARC_HOOK_BUILDER_IMAGE`: the builder image (BuildKit's rootless image, or a Kaniko executor).
    pub builder_image: String,
    /// `BUILDKIT_HOST`: a remote buildkitd the builder pod's `buildctl` uses instead of its own.
    pub buildkit_host: Option<String>,
    /// `ARC_HOOK_BUILD_REGISTRY`: repository prefix built images are pushed under (`host/project`).
    pub registry: String,
    /// `ARC_HOOK_BUILD_PUSH_SECRET`: a `kubernetes.io/dockerconfigjson` secret with push credentials.
    pub push_secret: Option<String>,
    /// `ARC_HOOK_BUILD_TIMEOUT_SECONDS`: how long a build may take.
    pub timeout: Duration,
}

/// Configuration of one hook invocation.
#[derive(Debug, Clone)]
pub struct Config {
    /// `ACTIONS_RUNNER_POD_NAME`: the runner pod; workflow objects are named after and labelled with it.
    pub runner_pod_name: Option<String>,
    /// `ACTIONS_RUNNER_CLAIM_NAME`: the work volume's PVC (default `<runner pod>-work`).
    pub claim_name: Option<String>,
    /// `ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER=true`: refuse jobs without `container:`.
    pub require_job_container: bool,
    /// `ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE`: worker-podspec template path.
    pub template_path: Option<PathBuf>,
    /// `ACTIONS_RUNNER_USE_KUBE_SCHEDULER=true`: let the scheduler place the workflow pod.
    pub use_kube_scheduler: bool,
    /// `ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS`: how long prepare_job waits for the pod.
    pub prepare_timeout: Duration,
    /// `ARC_HOOK_UNSCHEDULABLE_GRACE_SECONDS`: how long an Unschedulable workflow pod is given
    /// when the node is not merely busy and the cluster is not scaling up.
    pub unschedulable_grace: Duration,
    /// `ARC_HOOK_WAIT_FOR_NODE_TAINTS`: taint keys (start-up taints the runner pod tolerates and
    /// the workflow pod does not) that prepare_job waits to see gone from the runner's node,
    /// where pods are pinned to it (claim mode); empty: no wait, and nodes are never read.
    pub wait_for_node_taints: Vec<String>,
    /// `ARC_HOOK_NODE_TAINTS_TIMEOUT_SECONDS`: how long that wait may take.
    pub node_taints_timeout: Duration,
    /// `ARC_HOOK_IMAGE_PULL_WAIT_SECONDS`: how long a container whose image the registry does not
    /// have (yet) is waited for; zero (the default): such a pull error fails at once.
    pub image_pull_wait: Duration,
    /// `ACTIONS_RUNNER_KUBERNETES_NAMESPACE`: overrides the namespace (as upstream).
    pub namespace: Option<String>,
    /// `ARC_HOOK_WORK_VOLUME`: `claim` (default) or `copy` (no-volume mode).
    pub work_volume: WorkVolumeMode,
    /// `ARC_HOOK_CLEANUP_TIMEOUT_SECONDS`: how long cleanup_job waits for objects to disappear.
    pub cleanup_timeout: Duration,
    /// `ARC_HOOK_PULL_MAX_BYTES`: the most a no-volume pull may bring back after one step; a
    /// step that leaves more in `_temp` fails, naming the largest files.
    pub pull_max_bytes: u64,
    /// `ARC_HOOK_DEFAULT_REGISTRY` (default [`DOCKER_HUB_CONFIG_KEY`]): the docker-config key for
    /// credentials of images that name no
    /// registry host (the runner then sends no `serverUrl`).
    pub default_registry: String,
    /// `ARC_HOOK_CONTAINER_STEPS`: `auto` (ephemeral containers where allowed) or `job`.
    pub(crate) container_steps: ContainerStepMode,
    /// `ARC_HOOK_JOB_OPTIONS` and `ARC_HOOK_JOB_OPTIONS_MAX`: which docker `options:` jobs may use, and their maxima.
    pub(crate) job_options: crate::docker_options::OptionsPolicy,
    /// Dockerfile action builds; `None` unless `ARC_HOOK_BUILDER_IMAGE` and `ARC_HOOK_BUILD_REGISTRY` are set.
    pub(crate) build: Option<BuildConfig>,
    /// `RUNNER_WORKSPACE`: `<_work>/<repo>` on the runner.
    pub runner_workspace: Option<PathBuf>,
    /// `GITHUB_WORKSPACE`: `<_work>/<repo>/<repo>` on the runner.
    pub github_workspace: Option<PathBuf>,
    /// `RUNNER_TEMP`: `<_work>/_temp` on the runner.
    pub runner_temp: Option<PathBuf>,
    /// `GITHUB_EVENT_NAME` and `GITHUB_REF_PROTECTED` (set by the runner): `${CACHE_TRUST}`.
    pub cache_trust: CacheTrust,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (tests pass a map).
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let flag = |k: &'static str| -> Result<bool, ConfigError> {
            match get(k).as_deref().map(str::trim) {
                None => Ok(false),
                Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
                Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
                Some(v) => Err(ConfigError {
                    name: k,
                    value: v.to_string(),
                    reason: "expected true or false".into(),
                }),
            }
        };
        let seconds = |k: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match get(k) {
                None => Ok(default),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
                    _ => Err(ConfigError {
                        name: k,
                        value: v,
                        reason: "expected a whole number of seconds > 0".into(),
                    }),
                },
            }
        };
        let work_volume = choice(
            &get,
            "ARC_HOOK_WORK_VOLUME",
            &[
                ("claim", WorkVolumeMode::Claim),
                ("copy", WorkVolumeMode::Copy),
            ],
            "expected claim (mount the work PVC) or copy (no-volume mode)",
        )?;
        let container_steps = choice(
            &get,
            "ARC_HOOK_CONTAINER_STEPS",
            &[
                ("auto", ContainerStepMode::Auto),
                ("job", ContainerStepMode::Job),
            ],
            "expected auto (ephemeral containers where allowed) or job",
        )?;
        let build = match (
            get("ARC_HOOK_BUILDER_IMAGE"),
            get("ARC_HOOK_BUILD_REGISTRY"),
        ) {
            (Some(image), Some(registry)) => Some(BuildConfig {
                kind: choice(
                    &get,
                    "ARC_HOOK_BUILDER",
                    &[
                        ("buildkit", BuilderKind::BuildKit),
                        ("kaniko", BuilderKind::Kaniko),
                    ],
                    "expected buildkit (rootless BuildKit, the default) or kaniko",
                )?,
                buildkit_host: get("BUILDKIT_HOST").map(|s| s.trim().to_string()),
                builder_image: image.trim().to_string(),
                registry: registry.trim().trim_end_matches('/').to_string(),
                push_secret: get("ARC_HOOK_BUILD_PUSH_SECRET").map(|s| s.trim().to_string()),
                timeout: seconds("ARC_HOOK_BUILD_TIMEOUT_SECONDS", DEFAULT_BUILD_TIMEOUT)?,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError {
                    name: "ARC_HOOK_BUILD_REGISTRY",
                    value: String::new(),
                    reason: "must be set with ARC_HOOK_BUILDER_IMAGE: where built Dockerfile action images are pushed (host/project)".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError {
                    name: "ARC_HOOK_BUILDER_IMAGE",
                    value: String::new(),
                    reason: "must be set with ARC_HOOK_BUILD_REGISTRY: the builder image (BuildKit's rootless image, or a Kaniko executor with ARC_HOOK_BUILDER=kaniko) that builds Dockerfile actions".into(),
                });
            }
        };
        let job_options = crate::docker_options::OptionsPolicy::from_settings(
            get("ARC_HOOK_JOB_OPTIONS").as_deref(),
            get("ARC_HOOK_JOB_OPTIONS_MAX").as_deref(),
        )
        .map_err(|e| ConfigError {
            name: e.setting,
            value: get(e.setting).unwrap_or_default(),
            reason: e.reason,
        })?;
        Ok(Self {
            runner_pod_name: get("ACTIONS_RUNNER_POD_NAME"),
            claim_name: get("ACTIONS_RUNNER_CLAIM_NAME"),
            require_job_container: runner_flag(
                get("ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER").as_deref(),
            ),
            template_path: get("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE").map(PathBuf::from),
            use_kube_scheduler: flag("ACTIONS_RUNNER_USE_KUBE_SCHEDULER")?,
            prepare_timeout: seconds(
                "ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS",
                DEFAULT_PREPARE_TIMEOUT,
            )?,
            unschedulable_grace: seconds(
                "ARC_HOOK_UNSCHEDULABLE_GRACE_SECONDS",
                DEFAULT_UNSCHEDULABLE_GRACE,
            )?,
            wait_for_node_taints: taint_keys(get("ARC_HOOK_WAIT_FOR_NODE_TAINTS"))?,
            node_taints_timeout: seconds(
                "ARC_HOOK_NODE_TAINTS_TIMEOUT_SECONDS",
                DEFAULT_NODE_TAINTS_TIMEOUT,
            )?,
            image_pull_wait: match get("ARC_HOOK_IMAGE_PULL_WAIT_SECONDS") {
                None => Duration::ZERO,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) => Duration::from_secs(n),
                    Err(_) => {
                        return Err(ConfigError {
                            name: "ARC_HOOK_IMAGE_PULL_WAIT_SECONDS",
                            value: v,
                            reason: "expected a whole number of seconds (0: fail at once)".into(),
                        });
                    }
                },
            },
            namespace: get("ACTIONS_RUNNER_KUBERNETES_NAMESPACE"),
            work_volume,
            cleanup_timeout: seconds("ARC_HOOK_CLEANUP_TIMEOUT_SECONDS", DEFAULT_CLEANUP_TIMEOUT)?,
            pull_max_bytes: match get("ARC_HOOK_PULL_MAX_BYTES") {
                None => DEFAULT_PULL_MAX_BYTES,
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(ConfigError {
                            name: "ARC_HOOK_PULL_MAX_BYTES",
                            value: v,
                            reason: "expected a whole number of bytes > 0".into(),
                        });
                    }
                },
            },
            default_registry: get("ARC_HOOK_DEFAULT_REGISTRY")
                .unwrap_or_else(|| DOCKER_HUB_CONFIG_KEY.to_string()),
            container_steps,
            job_options,
            build,
            runner_workspace: get("RUNNER_WORKSPACE").map(PathBuf::from),
            github_workspace: get("GITHUB_WORKSPACE").map(PathBuf::from),
            runner_temp: get("RUNNER_TEMP").map(PathBuf::from),
            cache_trust: CacheTrust::of_run(
                get("GITHUB_EVENT_NAME").as_deref(),
                get("GITHUB_REF_PROTECTED").as_deref(),
            ),
        })
    }

    /// The runner pod's name, required by every hook command.
    pub(crate) fn require_runner_pod_name(&self) -> Result<&str, ConfigError> {
        self.runner_pod_name.as_deref().ok_or_else(|| ConfigError {
            name: "ACTIONS_RUNNER_POD_NAME",
            value: String::new(),
            reason:
                "must be set to the runner pod's name (ARC's chart sets it from the downward API)"
                    .into(),
        })
    }

    /// The work volume's claim name for the runner pod `runner`.
    pub(crate) fn claim_name_for(&self, runner: &str) -> String {
        self.claim_name
            .clone()
            .unwrap_or_else(|| format!("{runner}-work"))
    }

    /// The runner's `_work` directory, from `RUNNER_WORKSPACE` (`_work/<repo>`) or `RUNNER_TEMP` (`_work/_temp`).
    pub(crate) fn runner_work_dir(&self) -> Option<PathBuf> {
        self.runner_workspace
            .as_deref()
            .or(self.runner_temp.as_deref())
            .and_then(|p| p.parent())
            .map(PathBuf::from)
    }
}

/// `ARC_HOOK_WAIT_FOR_NODE_TAINTS`: comma-separated taint keys, each a Kubernetes qualified name
/// (`[prefix/]name`, the rule for label keys, which `kubectl taint` applies), duplicates dropped.
fn taint_keys(value: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut keys: Vec<String> = Vec::new();
    for key in value.split(',').map(str::trim).filter(|k| !k.is_empty()) {
        if !crate::validate::label_key(key).is_empty() {
            return Err(ConfigError {
                name: "ARC_HOOK_WAIT_FOR_NODE_TAINTS",
                value: value.clone(),
                reason: format!(
                    "{key:?} is not a taint key: expected comma-separated keys such as karpenter.sh/unregistered,node.example.com/cache-not-ready"
                ),
            });
        }
        if !keys.iter().any(|k| k == key) {
            keys.push(key.to_string());
        }
    }
    Ok(keys)
}

/// A setting that is one of a few words (`words`, the first the default when unset).
fn choice<T: Copy>(
    get: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    words: &[(&str, T)],
    reason: &str,
) -> Result<T, ConfigError> {
    let Some(value) = get(name) else {
        return Ok(words[0].1);
    };
    match words.iter().find(|(w, _)| *w == value.trim()) {
        Some((_, v)) => Ok(*v),
        None => Err(ConfigError {
            name,
            value,
            reason: reason.into(),
        }),
    }
}

/// `ARC_HOOK_LOG`: the internal log filter (`tracing` syntax), read before anything else so that
/// configuration errors can be logged. Dependencies never log below DEBUG (see `main.rs`).
pub fn log_filter() -> Option<String> {
    std::env::var("ARC_HOOK_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Where the API client's configuration comes from, as the environment says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClusterSource {
    /// Inside a pod (`KUBERNETES_SERVICE_HOST` set): the service account.
    InCluster,
    /// `KUBECONFIG` (non-empty) or `~/.kube/config`.
    Kubeconfig,
    /// Neither: `replay` starts the embedded simulator.
    None,
}

impl ClusterSource {
    pub(crate) fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok(), |p| p.exists())
    }

    pub(crate) fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        exists: impl Fn(&std::path::Path) -> bool,
    ) -> Self {
        if get("KUBERNETES_SERVICE_HOST").is_some() {
            Self::InCluster
        } else if get("KUBECONFIG").is_some_and(|v| !v.is_empty())
            || get("HOME").is_some_and(|h| exists(&PathBuf::from(h).join(".kube/config")))
        {
            Self::Kubeconfig
        } else {
            Self::None
        }
    }
}

/// The docker-config key Docker itself uses for Docker Hub credentials: the runner sends
/// `serverUrl: ""` for an image without a registry host, and Docker mode logs in there.
pub(crate) const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

/// A boolean the way the runner reads its own settings (`StringUtil.ConvertToBoolean`): `1`,
/// `true`, `$true` (any case) are true, anything else false. The runner has already acted on
/// `ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER` before calling the hook, so arc-hook must agree with it
/// rather than fail on a value the runner accepted.
pub(crate) fn runner_flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "$true"))
}

// ─── The exporter's and replay's environment ────────────────────────────────────────────────────
// Kept apart from the hook's `Config`: neither command is the hook, and a variable the hook would
// refuse (say `ARC_HOOK_WORK_VOLUME=nfs`) must not stop a replay or the exporter.

/// How the exporter authenticates to GitHub, as the environment says. `Debug` never prints a secret.
#[cfg(feature = "exporter")]
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum GitHubAuthEnv {
    /// `GITHUB_TOKEN`: a bearer token; takes precedence over App credentials.
    Token(String),
    /// `GITHUB_APP_ID`, `GITHUB_APP_INSTALLATION_ID` and `GITHUB_APP_PRIVATE_KEY_PATH`: a GitHub App
    /// installation (the exporter reads the key file).
    App {
        app_id: String,
        installation_id: u64,
        private_key_path: PathBuf,
    },
    /// Neither: anonymous requests.
    Anonymous,
}

#[cfg(feature = "exporter")]
impl std::fmt::Debug for GitHubAuthEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::App {
                app_id,
                installation_id,
                private_key_path,
            } => f
                .debug_struct("App")
                .field("app_id", app_id)
                .field("installation_id", installation_id)
                .field("private_key_path", private_key_path)
                .finish(),
            Self::Anonymous => f.write_str("Anonymous"),
        }
    }
}

/// The exporter's secrets: read from the environment only, never from flags.
#[cfg(feature = "exporter")]
#[derive(Clone, PartialEq, Eq)]
pub struct ExporterEnv {
    pub(crate) auth: GitHubAuthEnv,
    /// `GITHUB_WEBHOOK_SECRET`: the webhook's HMAC secret (`exporter --webhook` needs it).
    pub webhook_secret: Option<Vec<u8>>,
}

#[cfg(feature = "exporter")]
impl std::fmt::Debug for ExporterEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterEnv")
            .field("auth", &self.auth)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

#[cfg(feature = "exporter")]
impl ExporterEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the exporter's variables through `get` (tests pass a map); an empty value is unset.
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let missing = |name: &'static str, reason: &str| ConfigError {
            name,
            value: String::new(),
            reason: reason.into(),
        };
        let auth = if let Some(token) = get("GITHUB_TOKEN") {
            GitHubAuthEnv::Token(token)
        } else if let Some(app_id) = get("GITHUB_APP_ID") {
            let installation = get("GITHUB_APP_INSTALLATION_ID").ok_or_else(|| {
                missing(
                    "GITHUB_APP_INSTALLATION_ID",
                    "must be set with GITHUB_APP_ID: the App's installation id for the organisation",
                )
            })?;
            let installation_id = installation.trim().parse().map_err(|_| ConfigError {
                name: "GITHUB_APP_INSTALLATION_ID",
                value: installation.clone(),
                reason: "expected the installation's number".into(),
            })?;
            let private_key_path = get("GITHUB_APP_PRIVATE_KEY_PATH").ok_or_else(|| {
                missing(
                    "GITHUB_APP_PRIVATE_KEY_PATH",
                    "must be set with GITHUB_APP_ID: the path of the App's private key (PEM)",
                )
            })?;
            GitHubAuthEnv::App {
                app_id,
                installation_id,
                private_key_path: PathBuf::from(private_key_path),
            }
        } else {
            GitHubAuthEnv::Anonymous
        };
        Ok(Self {
            auth,
            webhook_secret: get("GITHUB_WEBHOOK_SECRET").map(String::into_bytes),
        })
    }
}

/// What `replay` reads from its own environment (the job directory's `env` file comes first).
#[cfg(feature = "sim")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayEnv {
    /// `ACTIONS_RUNNER_POD_NAME`: the runner pod's name when the job's `env` file gives none.
    pub runner_pod_name: Option<String>,
    /// A configured cluster (then replay uses it), or none (then the embedded simulator).
    pub(crate) cluster: ClusterSource,
    /// `ACTIONS_RUNNER_KUBERNETES_NAMESPACE`, shown by `replay --cluster`.
    pub namespace: Option<String>,
}

#[cfg(feature = "sim")]
impl ReplayEnv {
    /// Reads the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok(), |p| p.exists())
    }

    /// Reads through `get`, with `exists` for `~/.kube/config` (tests pass both).
    pub(crate) fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
        exists: impl Fn(&std::path::Path) -> bool,
    ) -> Self {
        Self {
            runner_pod_name: get("ACTIONS_RUNNER_POD_NAME").filter(|v| !v.trim().is_empty()),
            namespace: get("ACTIONS_RUNNER_KUBERNETES_NAMESPACE").filter(|v| !v.trim().is_empty()),
            cluster: ClusterSource::from_lookup(get, exists),
        }
    }
}

#[cfg(all(test, feature = "exporter"))]
mod exporter_env_tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<ExporterEnv, ConfigError> {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExporterEnv::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn nothing_set_is_anonymous_without_webhook() {
        let e = env(&[("GITHUB_TOKEN", ""), ("GITHUB_APP_ID", "")]).expect("valid");
        assert_eq!(e.auth, GitHubAuthEnv::Anonymous);
        assert_eq!(e.webhook_secret, None);
    }

    #[test]
    fn a_token_wins_over_app_credentials_even_incomplete_ones() {
        let e = env(&[
            ("GITHUB_TOKEN", "ghp_x"),
            ("GITHUB_APP_ID", "12"),
            ("GITHUB_APP_INSTALLATION_ID", "not a number"),
            ("GITHUB_WEBHOOK_SECRET", "s3cret"),
        ])
        .expect("valid");
        assert_eq!(e.auth, GitHubAuthEnv::Token("ghp_x".into()));
        assert_eq!(e.webhook_secret.as_deref(), Some(&b"s3cret"[..]));
        let debug = format!("{e:?}");
        assert!(
            !debug.contains("ghp_x") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn app_credentials_need_all_three() {
        let e = env(&[
            ("GITHUB_APP_ID", "12"),
            ("GITHUB_APP_INSTALLATION_ID", "345"),
            ("GITHUB_APP_PRIVATE_KEY_PATH", "/etc/exporter/key.pem"),
        ])
        .expect("valid");
        assert_eq!(
            e.auth,
            GitHubAuthEnv::App {
                app_id: "12".into(),
                installation_id: 345,
                private_key_path: PathBuf::from("/etc/exporter/key.pem"),
            }
        );
        let e = env(&[("GITHUB_APP_ID", "12")]).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "GITHUB_APP_INSTALLATION_ID=\"\": must be set with GITHUB_APP_ID: the App's installation id for the organisation"
        );
        let e = env(&[
            ("GITHUB_APP_ID", "12"),
            ("GITHUB_APP_INSTALLATION_ID", "acme"),
        ])
        .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "GITHUB_APP_INSTALLATION_ID=\"acme\": expected the installation's number"
        );
        let e = env(&[
            ("GITHUB_APP_ID", "12"),
            ("GITHUB_APP_INSTALLATION_ID", "345"),
        ])
        .expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("GITHUB_APP_PRIVATE_KEY_PATH=\"\": must be set with GITHUB_APP_ID"),
            "{e}"
        );
    }
}

#[cfg(all(test, feature = "sim"))]
mod replay_env_tests {
    use super::*;

    #[test]
    fn runner_pod_name_and_cluster() {
        let none = |_: &std::path::Path| false;
        let e = ReplayEnv::from_lookup(
            |k| (k == "ACTIONS_RUNNER_POD_NAME").then(|| "runner-7".to_string()),
            none,
        );
        assert_eq!(e.runner_pod_name.as_deref(), Some("runner-7"));
        assert_eq!(e.cluster, ClusterSource::None);
        let e = ReplayEnv::from_lookup(
            |k| match k {
                "ACTIONS_RUNNER_POD_NAME" => Some(" ".to_string()),
                "KUBECONFIG" => Some("/k".to_string()),
                _ => None,
            },
            none,
        );
        assert_eq!(e.runner_pod_name, None, "a blank name is no name");
        assert_eq!(e.cluster, ClusterSource::Kubeconfig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn start_up_taints_and_image_waits_are_off_unless_set() {
        let c = cfg(&[]).expect("defaults");
        assert!(c.wait_for_node_taints.is_empty());
        assert_eq!(c.node_taints_timeout, DEFAULT_NODE_TAINTS_TIMEOUT);
        assert_eq!(c.image_pull_wait, Duration::ZERO);
        let c = cfg(&[
            (
                "ARC_HOOK_WAIT_FOR_NODE_TAINTS",
                " karpenter.sh/unregistered, cache-not-ready,,cache-not-ready ",
            ),
            ("ARC_HOOK_NODE_TAINTS_TIMEOUT_SECONDS", "90"),
            ("ARC_HOOK_IMAGE_PULL_WAIT_SECONDS", "7200"),
        ])
        .expect("valid");
        assert_eq!(
            c.wait_for_node_taints,
            ["karpenter.sh/unregistered", "cache-not-ready"]
        );
        assert_eq!(c.node_taints_timeout, Duration::from_secs(90));
        assert_eq!(c.image_pull_wait, Duration::from_secs(7200));
        let e = cfg(&[("ARC_HOOK_WAIT_FOR_NODE_TAINTS", "ok,not a key")]).expect_err("bad key");
        assert_eq!(e.name, "ARC_HOOK_WAIT_FOR_NODE_TAINTS");
        assert!(e.reason.contains("\"not a key\""), "{e}");
        let e = cfg(&[("ARC_HOOK_IMAGE_PULL_WAIT_SECONDS", "-1")]).expect_err("negative");
        assert_eq!(e.name, "ARC_HOOK_IMAGE_PULL_WAIT_SECONDS");
        assert!(cfg(&[("ARC_HOOK_NODE_TAINTS_TIMEOUT_SECONDS", "0")]).is_err());
    }

    #[test]
    fn cluster_source_prefers_the_service_account() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = |_: &std::path::Path| false;
        let home_config = |p: &std::path::Path| p == std::path::Path::new("/h/.kube/config");
        assert_eq!(
            ClusterSource::from_lookup(
                env(&[("KUBERNETES_SERVICE_HOST", "10.0.0.1"), ("KUBECONFIG", "x")]),
                none
            ),
            ClusterSource::InCluster
        );
        assert_eq!(
            ClusterSource::from_lookup(env(&[("KUBECONFIG", "x")]), none),
            ClusterSource::Kubeconfig
        );
        assert_eq!(
            ClusterSource::from_lookup(env(&[("KUBECONFIG", "")]), none),
            ClusterSource::None
        );
        assert_eq!(
            ClusterSource::from_lookup(env(&[("HOME", "/h")]), home_config),
            ClusterSource::Kubeconfig
        );
        assert_eq!(
            ClusterSource::from_lookup(env(&[("HOME", "/elsewhere")]), home_config),
            ClusterSource::None
        );
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).expect("empty env is valid");
        assert!(!c.require_job_container);
        assert!(!c.use_kube_scheduler);
        assert_eq!(c.prepare_timeout, DEFAULT_PREPARE_TIMEOUT);
        assert_eq!(c.work_volume, WorkVolumeMode::Claim);
        assert_eq!(c.claim_name_for("r1"), "r1-work");
        assert!(c.require_runner_pod_name().is_err());
    }

    #[test]
    fn reads_values() {
        let c = cfg(&[
            ("ACTIONS_RUNNER_POD_NAME", "runner-abc"),
            ("ACTIONS_RUNNER_CLAIM_NAME", "my-claim"),
            ("ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER", "true"),
            ("ACTIONS_RUNNER_USE_KUBE_SCHEDULER", "TRUE"),
            ("ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS", "30"),
            ("RUNNER_WORKSPACE", "/home/runner/_work/repo"),
        ])
        .expect("valid env");
        assert_eq!(c.require_runner_pod_name().expect("set"), "runner-abc");
        assert_eq!(c.claim_name_for("runner-abc"), "my-claim");
        assert!(c.require_job_container && c.use_kube_scheduler);
        assert_eq!(c.prepare_timeout, Duration::from_secs(30));
        assert_eq!(
            c.runner_work_dir(),
            Some(PathBuf::from("/home/runner/_work"))
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e =
            cfg(&[("ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS", "soon")]).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS=\"soon\": expected a whole number of seconds > 0"
        );
        for (value, want) in [
            ("yes", false),
            ("TRUE", true),
            ("$true", true),
            ("1", true),
            ("0", false),
            (" true", false),
        ] {
            let c = cfg(&[("ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER", value)]).expect("accepted");
            assert_eq!(
                c.require_job_container, want,
                "{value:?} as the runner reads it"
            );
        }
        let e = cfg(&[("ARC_HOOK_WORK_VOLUME", "nfs")]).expect_err("refused");
        assert_eq!(
            e.to_string(),
            "ARC_HOOK_WORK_VOLUME=\"nfs\": expected claim (mount the work PVC) or copy (no-volume mode)"
        );
        let e =
            cfg(&[("ARC_HOOK_BUILDER_IMAGE", "mirror.internal/kaniko:v1")]).expect_err("refused");
        assert!(
            e.to_string().starts_with(
                "ARC_HOOK_BUILD_REGISTRY=\"\": must be set with ARC_HOOK_BUILDER_IMAGE"
            )
        );
    }

    #[test]
    fn copy_mode_and_builds() {
        let c = cfg(&[
            ("ARC_HOOK_WORK_VOLUME", "copy"),
            ("ARC_HOOK_CONTAINER_STEPS", "job"),
            ("ARC_HOOK_BUILDER_IMAGE", "mirror.internal/kaniko:v1"),
            ("ARC_HOOK_BUILD_REGISTRY", "harbor.internal/ci-actions/"),
            ("ARC_HOOK_BUILD_PUSH_SECRET", "harbor-push"),
        ])
        .expect("valid env");
        assert_eq!(c.work_volume, WorkVolumeMode::Copy);
        assert_eq!(c.container_steps, ContainerStepMode::Job);
        let b = c.build.expect("builds configured");
        assert_eq!(b.registry, "harbor.internal/ci-actions");
        assert_eq!(b.push_secret.as_deref(), Some("harbor-push"));
        assert_eq!(b.timeout, DEFAULT_BUILD_TIMEOUT);
        assert_eq!(b.kind, BuilderKind::BuildKit);
        let e = cfg(&[
            ("ARC_HOOK_BUILDER", "docker"),
            ("ARC_HOOK_BUILDER_IMAGE", "i"),
            ("ARC_HOOK_BUILD_REGISTRY", "r"),
        ])
        .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "ARC_HOOK_BUILDER=\"docker\": expected buildkit (rootless BuildKit, the default) or kaniko"
        );
        let c = cfg(&[]).expect("valid");
        assert!(c.build.is_none());
        assert!(
            !c.job_options
                .allowed
                .contains(&crate::docker_options::JobOption::Privileged)
        );
        assert_eq!(c.container_steps, ContainerStepMode::Auto);
    }

    #[test]
    fn cache_trust_only_for_reviewed_code_on_a_protected_ref() {
        use super::CacheTrust::{Trusted, Untrusted};
        let of = CacheTrust::of_run;
        assert_eq!(of(Some("push"), Some("true")), Trusted);
        assert_eq!(of(Some("release"), Some("true")), Trusted);
        assert_eq!(of(Some("schedule"), Some("True")), Trusted);
        assert_eq!(
            of(Some("push"), Some("false")),
            Untrusted,
            "unprotected branch"
        );
        assert_eq!(of(Some("push"), None), Untrusted);
        assert_eq!(of(Some("pull_request"), Some("true")), Untrusted);
        assert_eq!(of(Some("pull_request_target"), Some("true")), Untrusted);
        assert_eq!(of(Some("merge_group"), Some("true")), Untrusted);
        assert_eq!(of(None, None), Untrusted, "a runner that does not say");
        let config = |pairs: &[(&str, &str)]| {
            let map: std::collections::HashMap<_, _> = pairs.iter().cloned().collect();
            Config::from_lookup(|k| map.get(k).map(|v| v.to_string())).expect("valid")
        };
        assert_eq!(
            config(&[
                ("GITHUB_EVENT_NAME", "push"),
                ("GITHUB_REF_PROTECTED", "true")
            ])
            .cache_trust,
            Trusted
        );
        assert_eq!(config(&[]).cache_trust, Untrusted);
    }
}
