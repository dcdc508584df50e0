//! A job container's docker `options:` (`createOptions`): parsed with docker's rules into typed options.
//!
//! Pure: nothing here knows Kubernetes objects. `crate::objects::options` applies the result to the
//! workflow pod, after `policy` has checked it against what the platform allows.

pub(crate) mod flags;
pub(crate) mod health;
pub(crate) mod job_option;
pub(crate) mod policy;
pub(crate) mod values;
pub(crate) mod words;

pub(crate) use flags::parse_options;
pub(crate) use health::{HealthCheck, HealthOptions};
pub(crate) use job_option::JobOption;
pub(crate) use policy::OptionsPolicy;

/// The setting that lists which options jobs may use.
pub(crate) const ALLOWED_SETTING: &str = "ARC_HOOK_JOB_OPTIONS";
/// The setting that bounds sizes and counts.
pub(crate) const MAXIMA_SETTING: &str = "ARC_HOOK_JOB_OPTIONS_MAX";

/// Options a job cannot have: each displays as one line naming the option and what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OptionsError {
    #[error("{0}")]
    Syntax(String),
    #[error(
        "unknown docker option {flag}: docker would refuse it too; remove it from the job's options"
    )]
    UnknownFlag { flag: String },
    #[error("{flag} needs a value")]
    MissingValue { flag: String },
    #[error("{flag} {value:?}: {reason}")]
    BadValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error(
        "unexpected argument {arg:?}: options are flags only (the workflow sets the image and command)"
    )]
    Positional { arg: String },
    #[error(
        "{} not allowed on this runner; the platform team can allow {} by adding {} to {ALLOWED_SETTING} (e.g. {ALLOWED_SETTING}=default,{})",
        not_allowed_flags(names), if names.len() == 1 { "it" } else { "them" }, names.join(","), names.join(",")
    )]
    NotAllowed { names: Vec<&'static str> },
    #[error("{flag} {value}: above this runner's maximum of {max} ({MAXIMA_SETTING})")]
    AboveMaximum {
        flag: String,
        value: String,
        max: String,
    },
}

/// `--privileged is` / `--privileged and --cap-add are`.
fn not_allowed_flags(names: &[&str]) -> String {
    let flags: Vec<String> = names.iter().map(|n| format!("--{n}")).collect();
    match flags.as_slice() {
        [one] => format!("{one} is"),
        _ => format!("{} are", flags.join(" and ")),
    }
}

/// `--gpus`: a count, or `all` (resolved by the policy, since Kubernetes needs a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gpus {
    Count(u32),
    All,
}

/// `--user uid[:gid]`, numeric only: Kubernetes' runAsUser/runAsGroup take numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct User {
    pub uid: i64,
    pub gid: Option<i64>,
}

/// `--add-host name:ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostEntry {
    pub host: String,
    pub ip: String,
}

/// The options that mean something on Kubernetes, typed; the rest are listed in `no_meaning`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DockerOptions {
    /// `--cpus`, in thousandths of a CPU.
    pub cpus_milli: Option<u64>,
    /// `--memory`/`-m`, bytes.
    pub memory: Option<u64>,
    /// `--memory-reservation`, bytes.
    pub memory_reservation: Option<u64>,
    /// `--shm-size`, bytes.
    pub shm_size: Option<u64>,
    pub gpus: Option<Gpus>,
    pub user: Option<User>,
    /// `-e NAME=value`, or `-e NAME` (value `None`: docker copies it from its own environment).
    pub env: Vec<(String, Option<String>)>,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub add_hosts: Vec<HostEntry>,
    /// Capability names as Kubernetes writes them (`NET_ADMIN`, no `CAP_`).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    /// `--ulimit` values as given (Kubernetes has no per-container ulimits).
    pub ulimits: Vec<String>,
    /// `--health-cmd`, `--health-interval`... and `--no-healthcheck`, as given.
    pub health: HealthOptions,
    /// Known docker flags without a Kubernetes meaning (`--network`, `--init`...), once each.
    pub no_meaning: Vec<String>,
}

impl DockerOptions {
    /// The options in use that change the pod (what the policy judges), in [`JobOption::ALL`]'s order.
    pub(crate) fn in_use(&self) -> Vec<JobOption> {
        JobOption::ALL
            .iter()
            .copied()
            .filter(|o| o.is_used(self))
            .collect()
    }
}
