//! What a command will create, fully built and template-merged: the one place `render` and the hooks get their objects from.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EphemeralContainer, Pod, Secret};

use crate::objects::ephemeral::{NotEphemeral, ephemeral_step_container, github_links};
use crate::objects::job::{container_step_job, step_container, step_system_mounts};
use crate::objects::pod::{JobPod, ServiceContainer, job_pod, work_subpath};
use crate::objects::ports::{PortMapping, context_ports};
use crate::objects::secret::{PullCredentials, registry_secret};
use crate::objects::{BuildContext, BuildError, names};
use crate::protocol::{ContextEntry, PrepareJobArgs, ResponseContext, RunContainerStepArgs};
use crate::template::{Template, TemplateError, TemplateVars};

/// Object construction or template merge failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Options(#[from] crate::objects::options::ContainerOptionsError),
}

/// prepare_job's objects.
#[derive(Debug, Clone)]
pub(crate) struct PreparePlan {
    pub secret: Option<Secret>,
    pub pod: Pod,
    pub job_image: Option<String>,
    pub job_ports: Vec<PortMapping>,
    pub services: Vec<ServiceContainer>,
    /// Services with a health check, in the job's order: prepare_job waits until they are ready.
    pub health: Vec<crate::objects::options::ServiceHealth>,
    pub warnings: Vec<String>,
}

impl PreparePlan {
    pub(crate) fn pod_name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }

    /// The runner's `job.container` / `job.services` context for this pod.
    pub(crate) fn response_context(&self) -> ResponseContext {
        ResponseContext {
            container: self.job_image.as_ref().map(|image| ContextEntry {
                image: image.clone(),
                ports: context_ports(&self.job_ports),
            }),
            services: self
                .services
                .iter()
                .map(|s| ContextEntry {
                    image: s.image.clone(),
                    ports: context_ports(&s.ports),
                })
                .collect(),
        }
    }
}

pub(crate) fn template_vars(ctx: &BuildContext) -> TemplateVars {
    TemplateVars {
        runner_pod_name: ctx.runner_pod.clone(),
        workflow_pod_name: names::job_pod_name(&ctx.runner_pod),
        namespace: ctx.namespace.clone(),
        cache_slot: ctx.cache_slot.map(|s| s.to_string()),
        cache_trust: ctx.cache_trust.as_str().to_string(),
    }
}

/// Builds prepare_job's secret (if any credentials) and workflow pod; `suffix` names the secret.
/// The containers' docker options are applied after the template, within `policy`.
pub(crate) fn plan_prepare_job(
    ctx: &BuildContext,
    args: &PrepareJobArgs,
    template: Option<&Template>,
    policy: &crate::docker_options::OptionsPolicy,
    suffix: &str,
) -> Result<PreparePlan, PlanError> {
    let mut creds = Vec::new();
    if let Some(c) = &args.container
        && let Some(r) = &c.registry
    {
        creds.push(PullCredentials {
            field: "args.container.registry".into(),
            image: &c.image,
            registry: r,
        });
    }
    for (i, s) in args.services.iter().enumerate() {
        if let Some(r) = &s.registry {
            creds.push(PullCredentials {
                field: format!("args.services[{i}].registry"),
                image: &s.image,
                registry: r,
            });
        }
    }
    let secret_name = names::runner_object_name(&ctx.runner_pod, "secret", suffix);
    let secret = registry_secret(ctx, &secret_name, &creds)?;
    let JobPod {
        pod,
        job_ports,
        services,
        mut warnings,
    } = job_pod(ctx, args, secret.as_ref().map(|_| secret_name.as_str()))?;
    let mut pod = match template {
        Some(t) => {
            let jp = JobPod {
                pod,
                job_ports: job_ports.clone(),
                services: services.clone(),
                warnings: Vec::new(),
            };
            let merged = t.apply_to_job_pod(&jp, &template_vars(ctx))?;
            warnings.extend(merged.warnings);
            let mut pod = merged.object;
            // A template's own affinity replaces the pod's: pin to the runner's node again.
            if let Some(spec) = pod.spec.as_mut() {
                crate::objects::pod::pin_to_node(spec, ctx);
            }
            pod
        }
        None => pod,
    };
    // Job options after the template: they win for the fields they set.
    let applied = crate::objects::options::apply_job_options(&mut pod, args, &services, policy)?;
    warnings.extend(applied.warnings);
    // Last: it takes the job container's final user, image and resources.
    if ctx.work_volume == crate::config::WorkVolumeMode::Copy {
        crate::objects::pod::make_work_dirs_first(&mut pod);
    }
    Ok(PreparePlan {
        secret,
        pod,
        job_image: args.container.as_ref().map(|c| c.image.clone()),
        job_ports,
        services,
        health: applied.health,
        warnings,
    })
}

/// A container step's objects when it runs as its own Job.
#[derive(Debug, Clone)]
pub(crate) struct ContainerStepPlan {
    pub secret: Option<Secret>,
    pub job: Job,
    pub warnings: Vec<String>,
}

/// The work-volume sub-path of the runner's workspace (`GITHUB_WORKSPACE` on the runner).
pub(crate) fn workspace_subpath(github_workspace: Option<&std::path::Path>) -> String {
    github_workspace
        .and_then(|p| work_subpath(&p.to_string_lossy()))
        .unwrap_or_default()
}

/// Builds a container step's Job (image steps; Dockerfile steps pass the built image).
pub(crate) fn plan_container_step(
    ctx: &BuildContext,
    args: &RunContainerStepArgs,
    image: &str,
    workspace_subpath: &str,
    template: Option<&Template>,
    suffix: &str,
) -> Result<ContainerStepPlan, PlanError> {
    let secret_name = names::runner_object_name(&ctx.runner_pod, "secret", suffix);
    let creds: Vec<_> = args
        .registry
        .iter()
        .map(|r| PullCredentials {
            field: "args.registry".into(),
            image,
            registry: r,
        })
        .collect();
    let secret = registry_secret(ctx, &secret_name, &creds)?;
    let (mut container, volumes) = step_container(args, image, workspace_subpath)?;
    if let Some(mounts) = container.volume_mounts.take() {
        container.volume_mounts = Some(crate::objects::pod::guarded(ctx, mounts, "args")?);
    }
    let name = names::runner_object_name(&ctx.runner_pod, "step", suffix);
    let job = container_step_job(
        ctx,
        &name,
        container,
        volumes,
        secret.as_ref().map(|_| secret_name.as_str()),
    );
    let mut warnings = Vec::new();
    warnings.extend(crate::objects::ignored_options_warning(
        args.create_options.as_deref(),
        "container step",
    ));
    let job = match template {
        Some(t) => {
            let merged = t.apply_to_step_job(&job, &template_vars(ctx))?;
            warnings.extend(merged.warnings);
            let mut job = merged.object;
            if let Some(spec) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
                crate::objects::pod::pin_to_node(spec, ctx);
            }
            job
        }
        None => job,
    };
    Ok(ContainerStepPlan {
        secret,
        job,
        warnings,
    })
}

/// A container step as an ephemeral container of the job pod.
#[derive(Debug, Clone)]
pub(crate) struct EphemeralStepPlan {
    pub container: EphemeralContainer,
    /// Links to create at the work volume's root so `/github/*` resolves (`name -> target`).
    pub links: Vec<(String, String)>,
    pub warnings: Vec<String>,
}

/// What planning a container step as an ephemeral container of the job pod came to.
#[derive(Debug, Clone)]
pub(crate) enum EphemeralPlanning {
    Planned(Box<EphemeralStepPlan>),
    /// It cannot be one (it needs a Job or a pod of its own), for this reason.
    NotEphemeral(NotEphemeral),
}

/// Builds a container step as an ephemeral container named `step-<suffix>`, or says why it
/// needs a Job instead.
pub(crate) fn plan_ephemeral_step(
    ctx: &BuildContext,
    args: &RunContainerStepArgs,
    image: &str,
    workspace_subpath: &str,
    template: Option<&Template>,
    suffix: &str,
) -> Result<EphemeralPlanning, PlanError> {
    if args.registry.as_ref().is_some_and(|r| r.has_credentials()) {
        return Ok(EphemeralPlanning::NotEphemeral(NotEphemeral(
            "the step's image needs registry credentials, and a running pod cannot take a new pull secret".into(),
        )));
    }
    let mut system = step_system_mounts(&args.system_mount_volumes, workspace_subpath)?;
    if ctx.work_volume == crate::config::WorkVolumeMode::Claim {
        // `/github/file_commands` leads to the job's own directory (an ephemeral container
        // cannot have the guarding mounts; the hook checks the runner's after it ends).
        for m in &mut system {
            m.sub_path = crate::objects::pod::job_side_subpath(&m.sub_path);
        }
    }
    let links = match github_links(&system) {
        Ok(l) => l,
        Err(e) => return Ok(EphemeralPlanning::NotEphemeral(e)),
    };
    let (container, mut warnings) =
        match ephemeral_step_container(args, image, &format!("step-{suffix}"))? {
            Ok(c) => c,
            Err(e) => return Ok(EphemeralPlanning::NotEphemeral(e)),
        };
    warnings.extend(crate::objects::ignored_options_warning(
        args.create_options.as_deref(),
        "container step",
    ));
    let container = match template {
        Some(t) => {
            let merged = t.apply_to_ephemeral_step(&container, &template_vars(ctx))?;
            warnings.extend(merged.warnings);
            merged.object
        }
        None => container,
    };
    Ok(EphemeralPlanning::Planned(Box::new(EphemeralStepPlan {
        container,
        links,
        warnings,
    })))
}

/// A container step as a bare pod of its own.
#[derive(Debug, Clone)]
pub(crate) struct StepPodPlan {
    pub secret: Option<Secret>,
    pub pod: Pod,
    pub warnings: Vec<String>,
}

/// Builds a container step's own pod: the step Job's pod ([`plan_container_step`], so the
/// `$step` template and the claim-mode guards apply alike), with the no-volume helpers
/// (`files`) and the services' names (`aliases`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn plan_step_pod(
    ctx: &BuildContext,
    args: &RunContainerStepArgs,
    image: &str,
    workspace_subpath: &str,
    template: Option<&Template>,
    suffix: &str,
    files: Option<&crate::objects::step_pod::FilesHelper>,
    aliases: Option<k8s_openapi::api::core::v1::HostAlias>,
) -> Result<StepPodPlan, PlanError> {
    let ContainerStepPlan {
        secret,
        job,
        warnings,
    } = plan_container_step(ctx, args, image, workspace_subpath, template, suffix)?;
    Ok(StepPodPlan {
        secret,
        pod: crate::objects::step_pod::step_pod(job, files, aliases),
        warnings,
    })
}
