//! The platform's rules for job options: which may be used (`ARC_HOOK_JOB_OPTIONS`) and their maxima (`ARC_HOOK_JOB_OPTIONS_MAX`).

use std::collections::BTreeSet;

use super::values::{format_cpus, format_size, parse_cpus, parse_size};
use super::{ALLOWED_SETTING, DockerOptions, Gpus, JobOption, MAXIMA_SETTING, OptionsError};

/// What `default` means: every option except the ones that widen privileges ([`JobOption::widens`]).
pub(crate) fn default_allowed() -> impl Iterator<Item = JobOption> {
    JobOption::ALL.iter().copied().filter(|o| !o.widens())
}

/// A setting's value arc-hook cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct PolicyError {
    pub setting: &'static str,
    pub reason: String,
}

/// Upper bounds a job's options may ask for; `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Maxima {
    pub cpus_milli: Option<u64>,
    /// Bounds `--memory` and `--memory-reservation`.
    pub memory: Option<u64>,
    pub shm_size: Option<u64>,
    /// Also what `--gpus all` means; without it `all` is refused.
    pub gpus: Option<u32>,
}

/// Which options jobs may use on this runner, and how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OptionsPolicy {
    pub allowed: BTreeSet<JobOption>,
    pub maxima: Maxima,
}

impl Default for OptionsPolicy {
    fn default() -> Self {
        Self {
            allowed: default_allowed().collect(),
            maxima: Maxima::default(),
        }
    }
}

impl OptionsPolicy {
    /// Reads the two settings: `allowed` is a comma list of option names, `default` (the default
    /// set) or `none`; `maxima` is `cpus=16,memory=64g,shm-size=8g,gpus=2`.
    pub(crate) fn from_settings(
        allowed: Option<&str>,
        maxima: Option<&str>,
    ) -> Result<Self, PolicyError> {
        let mut policy = Self::default();
        if let Some(list) = allowed {
            policy.allowed.clear();
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let item = item.trim_start_matches("--");
                match item {
                    "default" => policy.allowed.extend(default_allowed()),
                    "none" => {}
                    name => match JobOption::from_name(name) {
                        Some(o) => {
                            policy.allowed.insert(o);
                        }
                        None => {
                            return Err(PolicyError {
                                setting: ALLOWED_SETTING,
                                reason: format!(
                                    "unknown option {name:?}; expected default, none or any of {}",
                                    JobOption::ALL
                                        .iter()
                                        .map(|o| o.name())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            });
                        }
                    },
                }
            }
        }
        for item in maxima
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let bad = |reason: String| PolicyError {
                setting: MAXIMA_SETTING,
                reason: format!("{item:?}: {reason}"),
            };
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| bad("expected name=value, e.g. cpus=16".into()))?;
            let m = &mut policy.maxima;
            match JobOption::from_name(name.trim()) {
                Some(JobOption::Cpus) => m.cpus_milli = Some(parse_cpus(value).map_err(bad)?),
                Some(JobOption::Memory) => m.memory = Some(parse_size(value).map_err(bad)?),
                Some(JobOption::ShmSize) => m.shm_size = Some(parse_size(value).map_err(bad)?),
                Some(JobOption::Gpus) => {
                    m.gpus = Some(
                        value
                            .trim()
                            .parse()
                            .map_err(|_| bad("expected a whole number of GPUs".into()))?,
                    )
                }
                _ => return Err(bad("expected one of cpus, memory, shm-size, gpus".into())),
            }
        }
        Ok(policy)
    }

    /// Checks a job's options: a disallowed option or a value above its maximum is refused;
    /// `--gpus all` becomes the GPU maximum.
    pub(crate) fn check(&self, mut opts: DockerOptions) -> Result<DockerOptions, OptionsError> {
        let refused: Vec<&'static str> = opts
            .in_use()
            .into_iter()
            .filter(|o| !self.allowed.contains(o))
            .map(JobOption::name)
            .collect();
        if !refused.is_empty() {
            return Err(OptionsError::NotAllowed { names: refused });
        }
        let above = |flag: &str, value: String, max: String| OptionsError::AboveMaximum {
            flag: flag.into(),
            value,
            max,
        };
        let m = &self.maxima;
        if let (Some(v), Some(max)) = (opts.cpus_milli, m.cpus_milli)
            && v > max
        {
            return Err(above("--cpus", format_cpus(v), format_cpus(max)));
        }
        for (flag, v) in [
            ("--memory", opts.memory),
            ("--memory-reservation", opts.memory_reservation),
        ] {
            if let (Some(v), Some(max)) = (v, m.memory)
                && v > max
            {
                return Err(above(flag, format_size(v), format_size(max)));
            }
        }
        if let (Some(v), Some(max)) = (opts.shm_size, m.shm_size)
            && v > max
        {
            return Err(above("--shm-size", format_size(v), format_size(max)));
        }
        match (opts.gpus, m.gpus) {
            (Some(Gpus::All), Some(max)) => opts.gpus = Some(Gpus::Count(max)),
            (Some(Gpus::All), None) => {
                return Err(OptionsError::BadValue {
                    flag: "--gpus".into(),
                    value: "all".into(),
                    reason: format!(
                        "Kubernetes needs a number of GPUs; use --gpus N (all means the maximum set in {MAXIMA_SETTING}, and this runner sets none)"
                    ),
                });
            }
            (Some(Gpus::Count(n)), Some(max)) if n > max => {
                return Err(above("--gpus", n.to_string(), max.to_string()));
            }
            _ => {}
        }
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker_options::parse_options;

    fn policy(allowed: Option<&str>, max: Option<&str>) -> OptionsPolicy {
        OptionsPolicy::from_settings(allowed, max).expect("valid settings")
    }

    fn check(p: &OptionsPolicy, s: &str) -> Result<DockerOptions, String> {
        p.check(parse_options(s).expect("parses"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn privileges_are_refused_by_default() {
        let p = OptionsPolicy::default();
        assert_eq!(
            check(&p, "--privileged"),
            Err("--privileged is not allowed on this runner; the platform team can allow it by adding privileged to ARC_HOOK_JOB_OPTIONS (e.g. ARC_HOOK_JOB_OPTIONS=default,privileged)".into())
        );
        assert_eq!(
            check(&p, "--cap-add NET_ADMIN"),
            Err("--cap-add is not allowed on this runner; the platform team can allow it by adding cap-add to ARC_HOOK_JOB_OPTIONS (e.g. ARC_HOOK_JOB_OPTIONS=default,cap-add)".into())
        );
        assert_eq!(
            check(&p, "--cap-add SYS_PTRACE --privileged"),
            Err("--privileged and --cap-add are not allowed on this runner; the platform team can allow them by adding privileged,cap-add to ARC_HOOK_JOB_OPTIONS (e.g. ARC_HOOK_JOB_OPTIONS=default,privileged,cap-add)".into())
        );
        assert!(check(&p, "--privileged=false --cap-drop ALL --cpus 64 --gpus 8").is_ok());
    }

    #[test]
    fn the_platform_can_allow_and_restrict() {
        let p = policy(Some("default, --privileged"), None);
        assert!(check(&p, "--privileged").expect("allowed").privileged);
        let p = policy(Some("cpus"), None);
        assert!(check(&p, "--cpus 2").is_ok());
        assert!(
            check(&p, "--memory 1g")
                .expect_err("only cpus")
                .starts_with("--memory is not allowed on this runner")
        );
        let p = policy(Some("none"), None);
        assert!(check(&p, "-e A=1").is_err());
        // Options without a Kubernetes meaning are never refused: they change nothing.
        assert!(check(&p, "--network host --init").is_ok());
    }

    #[test]
    fn maxima_bound_values() {
        let p = policy(None, Some("cpus=8, memory=16g,shm-size=4g,gpus=2"));
        assert!(check(&p, "--cpus 8 --memory 16g --shm-size 4g --gpus 2").is_ok());
        assert_eq!(
            check(&p, "--cpus 8.5"),
            Err("--cpus 8500m: above this runner's maximum of 8 (ARC_HOOK_JOB_OPTIONS_MAX)".into())
        );
        assert_eq!(
            check(&p, "-m 32g"),
            Err(
                "--memory 32Gi: above this runner's maximum of 16Gi (ARC_HOOK_JOB_OPTIONS_MAX)"
                    .into()
            )
        );
        assert!(check(&p, "--memory-reservation 17g").is_err());
        assert!(check(&p, "--shm-size 5g").is_err());
        assert!(check(&p, "--gpus 3").is_err());
        assert_eq!(
            check(&p, "--gpus all").expect("all is the maximum").gpus,
            Some(Gpus::Count(2))
        );
    }

    #[test]
    fn gpus_all_without_a_maximum_is_refused() {
        let e = check(&OptionsPolicy::default(), "--gpus all").expect_err("refused");
        assert!(
            e.starts_with("--gpus \"all\": Kubernetes needs a number of GPUs; use --gpus N"),
            "{e}"
        );
    }

    #[test]
    fn bad_settings_name_the_problem() {
        let e = OptionsPolicy::from_settings(Some("default,sudo"), None).expect_err("bad");
        assert_eq!(e.setting, "ARC_HOOK_JOB_OPTIONS");
        assert!(
            e.reason
                .starts_with("unknown option \"sudo\"; expected default, none or any of cpus,")
        );
        let e = OptionsPolicy::from_settings(None, Some("cpus")).expect_err("bad");
        assert_eq!(e.setting, "ARC_HOOK_JOB_OPTIONS_MAX");
        assert_eq!(e.reason, "\"cpus\": expected name=value, e.g. cpus=16");
        assert!(OptionsPolicy::from_settings(None, Some("disk=1g")).is_err());
        assert!(OptionsPolicy::from_settings(None, Some("gpus=two")).is_err());
    }
}
