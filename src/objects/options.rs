//! A workflow pod's containers with their docker `options:` applied: resources, `/dev/shm`, security context, env, host names.
//!
//! Applied after the worker-podspec template, so an option wins for the fields it sets and the
//! template's values stay for every other field (README: "Job container options").

use std::collections::BTreeMap;

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, ExecAction, HostAlias, Pod, PodSpec,
    Probe, ResourceRequirements, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::JOB_CONTAINER_NAME;
use super::pod::ServiceContainer;
use crate::docker_options::health::secs;
use crate::docker_options::values::{format_cpus, format_size};
use crate::docker_options::{
    DockerOptions, Gpus, HealthCheck, JobOption, OptionsError, OptionsPolicy, parse_options,
};
use crate::protocol::PrepareJobArgs;

/// The extended resource `--gpus N` asks for (the NVIDIA device plugin's).
pub(crate) const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Where docker mounts the shared-memory tmpfs `--shm-size` sizes.
pub(crate) const SHM_PATH: &str = "/dev/shm";

/// A container's options cannot be applied; displays as one line naming the container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} options: {error}")]
pub(crate) struct ContainerOptionsError {
    /// `job container` or `service <name>`.
    pub what: String,
    pub error: OptionsError,
}

/// A service with a docker health check (`--health-cmd`): prepare_job waits until it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceHealth {
    pub container: String,
    pub check: HealthCheck,
}

/// What applying the options left for the hook: warnings for the job log, services to wait for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AppliedOptions {
    pub warnings: Vec<String>,
    pub health: Vec<ServiceHealth>,
}

/// Applies the job container's and every service's `createOptions` to the workflow pod.
pub(crate) fn apply_job_options(
    pod: &mut Pod,
    args: &PrepareJobArgs,
    services: &[ServiceContainer],
    policy: &OptionsPolicy,
) -> Result<AppliedOptions, ContainerOptionsError> {
    let mut applied = AppliedOptions::default();
    if let Some(def) = &args.container {
        let (warnings, _) = apply_container_options(
            pod,
            JOB_CONTAINER_NAME,
            "job container",
            def.create_options.as_deref(),
            policy,
        )?;
        applied.warnings.extend(warnings);
    }
    for (def, svc) in args.services.iter().zip(services) {
        let (warnings, check) = apply_container_options(
            pod,
            &svc.container_name,
            &format!("service {}", svc.container_name),
            def.create_options.as_deref(),
            policy,
        )?;
        applied.warnings.extend(warnings);
        if let Some(check) = check {
            applied.health.push(ServiceHealth {
                container: svc.container_name.clone(),
                check,
            });
        }
    }
    Ok(applied)
}

/// Kubernetes probes count whole seconds, at least one.
pub(crate) fn probe_seconds(d: Duration) -> i32 {
    let whole = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(whole.max(1)).unwrap_or(i32::MAX)
}

/// docker's health check as a Kubernetes readiness probe.
///
/// A readiness probe, not a startup probe: docker never kills or restarts an unhealthy container,
/// it only reports it, and a failed readiness probe only leaves the container unready, while a
/// failed startup (or liveness) probe makes the kubelet kill it. docker also runs its check during
/// the start period and counts a success there at once; a startup probe or `initialDelaySeconds`
/// would hold that success back. So the probe runs from the container's start, failures before
/// the first success change nothing (the container starts unready, as docker's `starting`), and
/// the start period only lengthens how long prepare_job waits before calling it unhealthy.
/// The command runs as `/bin/sh -c`, as docker runs a `--health-cmd` string (`CMD-SHELL`).
pub(crate) fn readiness_probe(check: &HealthCheck) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec!["/bin/sh".into(), "-c".into(), check.command.clone()]),
        }),
        period_seconds: Some(probe_seconds(check.interval)),
        timeout_seconds: Some(probe_seconds(check.timeout)),
        failure_threshold: Some(i32::try_from(check.retries.max(1)).unwrap_or(i32::MAX)),
        success_threshold: Some(1),
        ..Default::default()
    }
}

/// The health check's warnings, and its probe on a service (the job container gets none);
/// returns the service's check.
fn apply_health(
    c: &mut Container,
    opts: &DockerOptions,
    is_job: bool,
    what: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<HealthCheck>, OptionsError> {
    let (check, notes) = opts.health.resolve()?;
    warnings.extend(notes.into_iter().map(|n| format!("{what}: {n}")));
    let Some(check) = check else {
        return Ok(None);
    };
    if is_job {
        warnings.push(format!(
            "{what}: --health-cmd ignored: the runner waits only for services' health checks"
        ));
        return Ok(None);
    }
    for (flag, d) in [
        ("--health-interval", check.interval),
        ("--health-timeout", check.timeout),
    ] {
        if d.subsec_nanos() > 0 {
            warnings.push(format!(
                "{what}: {flag} {} rounded up to {}s: Kubernetes probes count whole seconds",
                secs(d),
                probe_seconds(d)
            ));
        }
    }
    c.readiness_probe = Some(readiness_probe(&check));
    Ok(Some(check))
}

/// Parses, checks and applies one container's options; returns the warnings and, for a service,
/// its health check. The job container's `--hostname` names the pod; a service's is ignored
/// with a warning (one pod has one host name).
pub(crate) fn apply_container_options(
    pod: &mut Pod,
    container: &str,
    what: &str,
    options: Option<&str>,
    policy: &OptionsPolicy,
) -> Result<(Vec<String>, Option<HealthCheck>), ContainerOptionsError> {
    let Some(options) = options.filter(|o| !o.trim().is_empty()) else {
        return Ok((Vec::new(), None));
    };
    let fail = |error| ContainerOptionsError {
        what: what.to_string(),
        error,
    };
    let opts = policy
        .check(parse_options(options).map_err(fail)?)
        .map_err(fail)?;
    if let (Some(reservation), Some(memory)) = (opts.memory_reservation, opts.memory)
        && reservation > memory
    {
        return Err(fail(OptionsError::BadValue {
            flag: "--memory-reservation".into(),
            value: format_size(reservation),
            reason: format!("must not exceed --memory {}", format_size(memory)),
        }));
    }
    let mut warnings = Vec::new();
    let is_job = container == JOB_CONTAINER_NAME;
    let Some(spec) = pod.spec.as_mut() else {
        return Ok((warnings, None));
    };
    let shm_volume = shm_volume_name(container);
    let mut health = None;
    if let Some(c) = spec.containers.iter_mut().find(|c| c.name == container) {
        let mut to_container = ToContainer {
            c,
            opts: &opts,
            shm_volume: &shm_volume,
            what,
            warnings: &mut warnings,
        };
        for option in JobOption::ALL {
            if let Some(check) = to_container.apply(*option, is_job).map_err(fail)? {
                health = Some(check);
            }
        }
    }
    for option in JobOption::ALL {
        apply_to_pod(
            *option,
            spec,
            &opts,
            &shm_volume,
            is_job,
            what,
            &mut warnings,
        );
    }
    if !opts.no_meaning.is_empty() {
        warnings.push(format!(
            "{what}: {} ignored: no Kubernetes meaning (use the worker-podspec template for pod settings)",
            opts.no_meaning.join(", ")
        ));
    }
    Ok((warnings, health))
}

/// Applies one option's pod-wide part (the volume behind `/dev/shm`, the host name and
/// aliases, what Kubernetes lacks); the container's part is [`ToContainer::apply`].
fn apply_to_pod(
    option: JobOption,
    spec: &mut PodSpec,
    opts: &DockerOptions,
    shm_volume: &str,
    is_job: bool,
    what: &str,
    warnings: &mut Vec<String>,
) {
    match option {
        JobOption::ShmSize => {
            if let Some(size) = opts.shm_size {
                let volumes = spec.volumes.get_or_insert_with(Vec::new);
                volumes.retain(|v| v.name != shm_volume);
                volumes.push(Volume {
                    name: shm_volume.to_string(),
                    empty_dir: Some(EmptyDirVolumeSource {
                        medium: Some("Memory".into()),
                        size_limit: Some(Quantity(format_size(size))),
                    }),
                    ..Default::default()
                });
            }
        }
        JobOption::Hostname => {
            if let Some(h) = &opts.hostname {
                if is_job {
                    spec.hostname = Some(h.clone());
                } else {
                    warnings.push(format!(
                        "{what}: --hostname is ignored: the pod has one host name, which only the job container's options set"
                    ));
                }
            }
        }
        JobOption::AddHost => {
            for entry in &opts.add_hosts {
                let aliases = spec.host_aliases.get_or_insert_with(Vec::new);
                let alias = match aliases.iter_mut().position(|a| a.ip == entry.ip) {
                    Some(i) => &mut aliases[i],
                    None => {
                        aliases.push(HostAlias {
                            ip: entry.ip.clone(),
                            hostnames: None,
                        });
                        let last = aliases.len() - 1;
                        &mut aliases[last]
                    }
                };
                let names = alias.hostnames.get_or_insert_with(Vec::new);
                if !names.contains(&entry.host) {
                    names.push(entry.host.clone());
                }
            }
        }
        JobOption::Ulimit => {
            for u in &opts.ulimits {
                warnings.push(format!(
                    "{what}: --ulimit {u} is ignored: Kubernetes has no per-container ulimits (the node's limits apply)"
                ));
            }
        }
        // The container's alone.
        JobOption::Cpus
        | JobOption::Memory
        | JobOption::MemoryReservation
        | JobOption::Gpus
        | JobOption::User
        | JobOption::Env
        | JobOption::Workdir
        | JobOption::Privileged
        | JobOption::CapAdd
        | JobOption::CapDrop
        | JobOption::HealthCmd => {}
    }
}

/// The `/dev/shm` volume of a container (`shm-job`, `shm-<service>`), within the 63 characters a
/// volume name may have.
fn shm_volume_name(container: &str) -> String {
    crate::validate::truncate_label(&format!("shm-{container}"), 63)
}

/// One container and what its options' container parts need.
struct ToContainer<'a> {
    c: &'a mut Container,
    opts: &'a DockerOptions,
    shm_volume: &'a str,
    what: &'a str,
    warnings: &'a mut Vec<String>,
}

impl ToContainer<'_> {
    /// Applies one option's container part; returns a service's health check
    /// ([`JobOption::HealthCmd`]). The pod-wide part is [`apply_to_pod`].
    fn apply(
        &mut self,
        option: JobOption,
        is_job: bool,
    ) -> Result<Option<HealthCheck>, OptionsError> {
        let opts = self.opts;
        let c = &mut *self.c;
        match option {
            JobOption::Cpus => {
                if let Some(m) = opts.cpus_milli {
                    limit(c, "cpu", format_cpus(m));
                }
            }
            JobOption::Memory => {
                if let Some(b) = opts.memory {
                    limit(c, "memory", format_size(b));
                }
            }
            JobOption::MemoryReservation => {
                if let Some(b) = opts.memory_reservation {
                    c.resources
                        .get_or_insert_with(ResourceRequirements::default)
                        .requests
                        .get_or_insert_with(BTreeMap::new)
                        .insert("memory".into(), Quantity(format_size(b)));
                }
            }
            JobOption::ShmSize => {
                if opts.shm_size.is_some() {
                    let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
                    mounts.retain(|m| m.mount_path.trim_end_matches('/') != SHM_PATH);
                    mounts.push(VolumeMount {
                        name: self.shm_volume.to_string(),
                        mount_path: SHM_PATH.into(),
                        ..Default::default()
                    });
                }
            }
            JobOption::Gpus => {
                if let Some(Gpus::Count(n)) = opts.gpus {
                    // Extended resources need requests equal to limits.
                    let r = c
                        .resources
                        .get_or_insert_with(ResourceRequirements::default);
                    for map in [&mut r.limits, &mut r.requests] {
                        map.get_or_insert_with(BTreeMap::new)
                            .insert(GPU_RESOURCE.into(), Quantity(n.to_string()));
                    }
                }
            }
            JobOption::User => {
                if let Some(u) = opts.user {
                    let sc = security_context(c);
                    sc.run_as_user = Some(u.uid);
                    if let Some(g) = u.gid {
                        sc.run_as_group = Some(g);
                    }
                    sc.run_as_non_root = sc.run_as_non_root.filter(|_| u.uid != 0);
                }
            }
            JobOption::Env => {
                for (name, value) in &opts.env {
                    let Some(value) = value else {
                        self.warnings.push(format!(
                            "{}: -e {name} without a value is ignored: docker would copy it from the runner's environment, which the pod does not have; write -e {name}=value",
                            self.what
                        ));
                        continue;
                    };
                    let env = c.env.get_or_insert_with(Vec::new);
                    env.retain(|e| &e.name != name);
                    env.push(EnvVar {
                        name: name.clone(),
                        value: Some(value.clone()),
                        value_from: None,
                    });
                }
            }
            JobOption::Workdir => {
                if let Some(w) = &opts.workdir {
                    c.working_dir = Some(w.clone());
                }
            }
            JobOption::Privileged => {
                if opts.privileged {
                    let sc = security_context(c);
                    sc.privileged = Some(true);
                    // The API refuses privileged together with allowPrivilegeEscalation: false.
                    sc.allow_privilege_escalation = None;
                }
            }
            JobOption::CapAdd => add_capabilities(c, &opts.cap_add, |caps| &mut caps.add),
            JobOption::CapDrop => add_capabilities(c, &opts.cap_drop, |caps| &mut caps.drop),
            JobOption::HealthCmd => {
                return apply_health(c, opts, is_job, self.what, self.warnings);
            }
            // The pod's alone.
            JobOption::Hostname | JobOption::AddHost | JobOption::Ulimit => {}
        }
        Ok(None)
    }
}

/// Sets a resource's limit; a request above it is lowered to it.
fn limit(c: &mut Container, resource: &str, value: String) {
    let r = c
        .resources
        .get_or_insert_with(ResourceRequirements::default);
    r.limits
        .get_or_insert_with(BTreeMap::new)
        .insert(resource.to_string(), Quantity(value.clone()));
    // A request above the new limit would be invalid: it is lowered to the limit, and a
    // missing request becomes the limit (what Kubernetes defaults it to anyway).
    let requests = r.requests.get_or_insert_with(BTreeMap::new);
    let keep = requests
        .get(resource)
        .and_then(|q| crate::quantity::parse(&q.0))
        .zip(crate::quantity::parse(&value))
        .is_some_and(|(req, lim)| req <= lim);
    if !keep {
        requests.insert(resource.to_string(), Quantity(value));
    }
}

fn security_context(c: &mut Container) -> &mut SecurityContext {
    c.security_context
        .get_or_insert_with(SecurityContext::default)
}

/// Adds `names` (once each) to the capability list `list` picks.
fn add_capabilities(
    c: &mut Container,
    names: &[String],
    list: impl FnOnce(&mut Capabilities) -> &mut Option<Vec<String>>,
) {
    if names.is_empty() {
        return;
    }
    let caps = security_context(c)
        .capabilities
        .get_or_insert_with(Capabilities::default);
    let list = list(caps).get_or_insert_with(Vec::new);
    for n in names {
        if !list.contains(n) {
            list.push(n.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::pod::job_pod;
    use crate::objects::test_context;
    use crate::protocol::ContainerDefinition;

    fn args(job: &str, service: &str) -> PrepareJobArgs {
        PrepareJobArgs {
            container: Some(ContainerDefinition {
                image: "pytorch/pytorch:2.5.1".into(),
                create_options: Some(job.into()),
                ..Default::default()
            }),
            services: vec![ContainerDefinition {
                image: "redis:7".into(),
                create_options: Some(service.into()),
                ..Default::default()
            }],
        }
    }

    fn applied(
        job: &str,
        service: &str,
        policy: &OptionsPolicy,
    ) -> Result<(Pod, Vec<String>), String> {
        let a = args(job, service);
        let jp = job_pod(&test_context(), &a, None).expect("valid pod");
        let mut pod = jp.pod;
        apply_job_options(&mut pod, &a, &jp.services, policy)
            .map(|a| (pod, a.warnings))
            .map_err(|e| e.to_string())
    }

    fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
        pod.spec
            .as_ref()
            .and_then(|s| s.containers.iter().find(|c| c.name == name))
            .expect("container")
    }

    fn q(map: &Option<BTreeMap<String, Quantity>>, key: &str) -> Option<String> {
        map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone())
    }

    #[test]
    fn the_issue_example_sizes_the_job() {
        let (pod, warnings) = applied(
            "--cpus 4 --memory 8g --shm-size 2g --gpus 1 --user 1001:1001",
            "",
            &OptionsPolicy::default(),
        )
        .expect("applies");
        assert!(warnings.is_empty(), "{warnings:?}");
        let job = container(&pod, "job");
        let r = job.resources.as_ref().expect("resources");
        assert_eq!(q(&r.limits, "cpu").as_deref(), Some("4"));
        assert_eq!(q(&r.requests, "cpu").as_deref(), Some("4"));
        assert_eq!(q(&r.limits, "memory").as_deref(), Some("8Gi"));
        assert_eq!(q(&r.limits, GPU_RESOURCE).as_deref(), Some("1"));
        assert_eq!(q(&r.requests, GPU_RESOURCE).as_deref(), Some("1"));
        let sc = job.security_context.as_ref().expect("security context");
        assert_eq!((sc.run_as_user, sc.run_as_group), (Some(1001), Some(1001)));
        let shm = job
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/dev/shm")
            .expect("shm mount");
        assert_eq!(shm.name, "shm-job");
        let vol = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name == "shm-job"))
            .and_then(|v| v.empty_dir.as_ref())
            .expect("shm volume");
        assert_eq!(vol.medium.as_deref(), Some("Memory"));
        assert_eq!(vol.size_limit.as_ref().map(|q| q.0.as_str()), Some("2Gi"));
    }

    #[test]
    fn a_template_request_above_the_limit_is_lowered() {
        let a = args("--cpus 2 --memory 64g", "");
        let jp = job_pod(&test_context(), &a, None).expect("valid pod");
        let mut pod = jp.pod;
        if let Some(s) = pod.spec.as_mut() {
            s.containers[0].resources = Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("4".into())),
                    ("memory".to_string(), Quantity("16Gi".into())),
                ])),
                limits: Some(BTreeMap::from([
                    ("cpu".to_string(), Quantity("32".into())),
                    ("memory".to_string(), Quantity("128Gi".into())),
                    ("ephemeral-storage".to_string(), Quantity("50Gi".into())),
                ])),
                ..Default::default()
            });
        }
        apply_job_options(&mut pod, &a, &jp.services, &OptionsPolicy::default()).expect("applies");
        let r = container(&pod, "job").resources.clone().expect("resources");
        assert_eq!(q(&r.limits, "cpu").as_deref(), Some("2"));
        assert_eq!(
            q(&r.requests, "cpu").as_deref(),
            Some("2"),
            "lowered to the limit"
        );
        assert_eq!(q(&r.limits, "memory").as_deref(), Some("64Gi"));
        assert_eq!(
            q(&r.requests, "memory").as_deref(),
            Some("16Gi"),
            "kept: below the limit"
        );
        assert_eq!(
            q(&r.limits, "ephemeral-storage").as_deref(),
            Some("50Gi"),
            "template's other values stay"
        );
    }

    #[test]
    fn security_options_follow_the_policy() {
        let e = applied("--privileged", "", &OptionsPolicy::default()).expect_err("refused");
        assert_eq!(
            e,
            "job container options: --privileged is not allowed on this runner; the platform team can allow it by adding privileged to ARC_HOOK_JOB_OPTIONS (e.g. ARC_HOOK_JOB_OPTIONS=default,privileged)"
        );
        let e = applied("", "--cap-add NET_ADMIN", &OptionsPolicy::default()).expect_err("refused");
        assert!(
            e.starts_with("service redis options: --cap-add is not allowed"),
            "{e}"
        );
        let p =
            OptionsPolicy::from_settings(Some("default,privileged,cap-add"), None).expect("valid");
        let (pod, _) =
            applied("--privileged --cap-drop ALL", "--cap-add net_admin", &p).expect("allowed");
        let sc = container(&pod, "job").security_context.clone().expect("sc");
        assert_eq!(sc.privileged, Some(true));
        assert_eq!(
            sc.capabilities.and_then(|c| c.drop),
            Some(vec!["ALL".to_string()])
        );
        let sc = container(&pod, "redis")
            .security_context
            .clone()
            .expect("sc");
        assert_eq!(
            sc.capabilities.and_then(|c| c.add),
            Some(vec!["NET_ADMIN".to_string()])
        );
    }

    #[test]
    fn env_workdir_and_hosts() {
        let (pod, warnings) = applied(
            "-e CI=false -e TOKEN -w /src --hostname trainer --add-host db:10.0.0.5 --add-host cache:10.0.0.5 --ulimit nofile=4096 --network host",
            "--hostname other --add-host queue:10.0.0.6",
            &OptionsPolicy::default(),
        )
        .expect("applies");
        let job = container(&pod, "job");
        let env: Vec<_> = job
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == "CI")
            .collect();
        assert_eq!(env.len(), 1, "options replace the runner's value");
        assert_eq!(env[0].value.as_deref(), Some("false"));
        assert_eq!(job.working_dir.as_deref(), Some("/src"));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("trainer"));
        let aliases: Vec<_> = spec
            .host_aliases
            .iter()
            .flatten()
            .map(|a| (a.ip.as_str(), a.hostnames.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            aliases,
            vec![
                ("10.0.0.5", vec!["db".to_string(), "cache".to_string()]),
                ("10.0.0.6", vec!["queue".to_string()])
            ]
        );
        assert_eq!(
            warnings,
            vec![
                "job container: -e TOKEN without a value is ignored: docker would copy it from the runner's environment, which the pod does not have; write -e TOKEN=value",
                "job container: --ulimit nofile=4096 is ignored: Kubernetes has no per-container ulimits (the node's limits apply)",
                "job container: --network ignored: no Kubernetes meaning (use the worker-podspec template for pod settings)",
                "service redis: --hostname is ignored: the pod has one host name, which only the job container's options set",
            ]
        );
    }

    #[test]
    fn a_service_gets_its_own_shm_volume() {
        let (pod, _) = applied("", "--shm-size 256m", &OptionsPolicy::default()).expect("applies");
        let redis = container(&pod, "redis");
        assert!(
            redis
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "shm-redis" && m.mount_path == "/dev/shm")
        );
        assert!(
            container(&pod, "job")
                .volume_mounts
                .iter()
                .flatten()
                .all(|m| m.mount_path != "/dev/shm")
        );
    }

    #[test]
    fn reservation_above_memory_is_refused() {
        let e = applied(
            "--memory 1g --memory-reservation 2g",
            "",
            &OptionsPolicy::default(),
        )
        .expect_err("refused");
        assert_eq!(
            e,
            "job container options: --memory-reservation \"2Gi\": must not exceed --memory 1Gi"
        );
    }

    fn health_of(service: &str) -> (Pod, AppliedOptions) {
        let a = args("", service);
        let jp = job_pod(&test_context(), &a, None).expect("valid pod");
        let mut pod = jp.pod;
        let applied = apply_job_options(&mut pod, &a, &jp.services, &OptionsPolicy::default())
            .expect("applies");
        (pod, applied)
    }

    #[test]
    fn a_service_health_check_becomes_a_readiness_probe() {
        let (pod, applied) = health_of(
            "--health-cmd pg_isready --health-interval 10s --health-timeout 5s --health-retries 5",
        );
        let probe = container(&pod, "redis")
            .readiness_probe
            .clone()
            .expect("probe");
        assert_eq!(
            probe.exec.and_then(|e| e.command),
            Some(vec![
                "/bin/sh".to_string(),
                "-c".into(),
                "pg_isready".into()
            ])
        );
        assert_eq!(
            (
                probe.period_seconds,
                probe.timeout_seconds,
                probe.failure_threshold,
                probe.success_threshold,
                probe.initial_delay_seconds
            ),
            (Some(10), Some(5), Some(5), Some(1), None)
        );
        assert!(container(&pod, "redis").startup_probe.is_none());
        assert!(applied.warnings.is_empty(), "{:?}", applied.warnings);
        assert_eq!(applied.health.len(), 1);
        assert_eq!(applied.health[0].container, "redis");
        assert_eq!(applied.health[0].check.retries, 5);
    }

    #[test]
    fn no_health_options_or_no_healthcheck_add_no_probe() {
        for options in ["", "--memory 1g", "--no-healthcheck"] {
            let (pod, applied) = health_of(options);
            assert!(
                container(&pod, "redis").readiness_probe.is_none(),
                "{options}"
            );
            assert!(applied.health.is_empty(), "{options}");
            assert!(
                applied.warnings.is_empty(),
                "{options}: {:?}",
                applied.warnings
            );
        }
    }

    #[test]
    fn health_check_edge_cases_are_explained() {
        let (pod, result) = health_of("--health-cmd 'redis-cli ping' --health-interval 500ms");
        let probe = container(&pod, "redis")
            .readiness_probe
            .clone()
            .expect("probe");
        assert_eq!(
            (probe.period_seconds, probe.timeout_seconds),
            (Some(1), Some(30))
        );
        assert_eq!(
            result.warnings,
            [
                "service redis: --health-interval 0.5s rounded up to 1s: Kubernetes probes count whole seconds"
            ]
        );
        let (_, tuning) = health_of("--health-retries 2");
        assert!(tuning.health.is_empty());
        assert_eq!(tuning.warnings.len(), 1);
        let e = applied_err("--no-healthcheck --health-cmd true");
        assert_eq!(
            e,
            "service redis options: --no-healthcheck conflicts with --health-* options"
        );
        // The job container's check: the runner never waits for it, so no probe.
        let (pod, w) =
            applied("--health-cmd true", "", &OptionsPolicy::default()).expect("applies");
        assert!(container(&pod, "job").readiness_probe.is_none());
        assert_eq!(
            w,
            [
                "job container: --health-cmd ignored: the runner waits only for services' health checks"
            ]
        );
        let p = OptionsPolicy::from_settings(Some("cpus"), None).expect("valid");
        assert!(
            applied("", "--health-cmd true", &p)
                .expect_err("refused")
                .contains("--health-cmd is not allowed on this runner")
        );
    }

    fn applied_err(service: &str) -> String {
        applied("", service, &OptionsPolicy::default()).expect_err("refused")
    }
}
