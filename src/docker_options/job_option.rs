//! The docker options that change the pod, one enum: what `ARC_HOOK_JOB_OPTIONS` lists, and what parsing (`flags`), the policy and applying (`objects::options`) match on exhaustively.
//!
//! Adding an option is one variant here; the compiler then names every match that must say
//! what it means (its use, whether it widens privileges, its parsing, how it is applied).
//! Its flag must be in `flags`' table of docker's flags (a unit test checks it).

use super::DockerOptions;

/// Defines the enum and [`JobOption::ALL`] from one list, so no variant is missing from `ALL`.
macro_rules! job_options {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// A docker option that changes the pod, by its long flag name (`--cpus` is `cpus`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub(crate) enum JobOption {
            $($(#[$doc])* $variant,)+
        }

        impl JobOption {
            /// Every option, in the order the hook names them (a refusal lists them so).
            pub(crate) const ALL: &'static [JobOption] = &[$(JobOption::$variant,)+];

            /// The long flag name without `--`: the name `ARC_HOOK_JOB_OPTIONS` lists.
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(JobOption::$variant => $name,)+
                }
            }
        }
    };
}

job_options! {
    Cpus => "cpus",
    Memory => "memory",
    MemoryReservation => "memory-reservation",
    ShmSize => "shm-size",
    Gpus => "gpus",
    User => "user",
    Env => "env",
    Workdir => "workdir",
    Hostname => "hostname",
    AddHost => "add-host",
    /// A switch (`--privileged`, `--privileged=false`); every other option takes a value.
    Privileged => "privileged",
    CapAdd => "cap-add",
    CapDrop => "cap-drop",
    Ulimit => "ulimit",
    /// Stands for the whole health check: only a command adds a probe, so the tuning flags
    /// (`--health-interval`...) and `--no-healthcheck` change nothing on their own.
    HealthCmd => "health-cmd",
}

impl JobOption {
    /// The option named `name` (a long flag name without `--`).
    pub(crate) fn from_name(name: &str) -> Option<JobOption> {
        JobOption::ALL.iter().copied().find(|o| o.name() == name)
    }

    /// Whether the option widens the container's privileges: never in the policy's `default`.
    pub(crate) fn widens(self) -> bool {
        match self {
            JobOption::CapAdd | JobOption::Privileged => true,
            JobOption::Cpus
            | JobOption::Memory
            | JobOption::MemoryReservation
            | JobOption::ShmSize
            | JobOption::Gpus
            | JobOption::User
            | JobOption::Env
            | JobOption::Workdir
            | JobOption::Hostname
            | JobOption::AddHost
            | JobOption::CapDrop
            | JobOption::Ulimit
            | JobOption::HealthCmd => false,
        }
    }

    /// Whether `opts` use the option, so that it changes the pod (what the policy judges).
    pub(crate) fn is_used(self, opts: &DockerOptions) -> bool {
        match self {
            JobOption::Cpus => opts.cpus_milli.is_some(),
            JobOption::Memory => opts.memory.is_some(),
            JobOption::MemoryReservation => opts.memory_reservation.is_some(),
            JobOption::ShmSize => opts.shm_size.is_some(),
            JobOption::Gpus => opts.gpus.is_some(),
            JobOption::User => opts.user.is_some(),
            JobOption::Env => !opts.env.is_empty(),
            JobOption::Workdir => opts.workdir.is_some(),
            JobOption::Hostname => opts.hostname.is_some(),
            JobOption::AddHost => !opts.add_hosts.is_empty(),
            JobOption::Privileged => opts.privileged,
            JobOption::CapAdd => !opts.cap_add.is_empty(),
            JobOption::CapDrop => !opts.cap_drop.is_empty(),
            JobOption::Ulimit => !opts.ulimits.is_empty(),
            JobOption::HealthCmd => opts.health.cmd.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_read_back() {
        for o in JobOption::ALL {
            assert_eq!(JobOption::from_name(o.name()), Some(*o));
        }
        assert_eq!(JobOption::from_name("--cpus"), None);
        assert_eq!(JobOption::from_name("network"), None);
    }

    #[test]
    fn only_privileges_widen() {
        let widening: Vec<_> = JobOption::ALL
            .iter()
            .filter(|o| o.widens())
            .map(|o| o.name())
            .collect();
        assert_eq!(widening, ["privileged", "cap-add"]);
    }

    #[test]
    fn nothing_is_used_by_default() {
        let none = DockerOptions::default();
        assert!(JobOption::ALL.iter().all(|o| !o.is_used(&none)));
    }
}
