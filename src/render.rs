//! `arc-hook render`: every object a runner input would create, as multi-document YAML, without a cluster.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::config::Config;
use crate::objects::secret::redacted;
use crate::objects::{BuildContext, names};
use crate::plan::{plan_container_step, plan_prepare_job, workspace_subpath};
use crate::protocol::{Command, parse_envelope_from};
use crate::template::Template;

/// Options of one render.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub template: Option<std::path::PathBuf>,
    pub node_name: String,
    pub namespace: String,
    pub show_secrets: bool,
}

/// Renders the objects `fixture` would create, as YAML documents.
pub fn render(fixture: &Path, config: &Config, opts: &RenderOptions) -> anyhow::Result<String> {
    let input = std::fs::read_to_string(fixture)
        .with_context(|| format!("cannot read {}", fixture.display()))?;
    let envelope = parse_envelope_from(&input, &fixture.display().to_string())?;
    let runner_pod = config
        .runner_pod_name
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_RENDER_RUNNER_POD.to_string());
    let ctx = BuildContext {
        claim_name: config.claim_name_for(&runner_pod),
        runner_pod,
        namespace: opts.namespace.clone(),
        node_name: Some(opts.node_name.clone()),
        use_kube_scheduler: config.use_kube_scheduler,
        work_volume: config.work_volume,
        default_registry: config.default_registry.clone(),
        // What the first job on an idle node gets.
        cache_slot: Some(0),
        cache_trust: config.cache_trust,
    };
    let template_path = opts.template.as_ref().or(config.template_path.as_ref());
    let template = template_path.map(|p| Template::load(p)).transpose()?;
    // Deterministic suffixes so renders are reviewable and diffable.
    let suffix = names::stable_suffix(&input);

    let secret_yaml = |s: &k8s_openapi::api::core::v1::Secret| {
        to_yaml(&if opts.show_secrets {
            s.clone()
        } else {
            redacted(s)
        })
    };
    let mut docs = Vec::new();
    let mut warnings = Vec::new();
    match &envelope.command {
        Command::PrepareJob(args) => {
            let plan =
                plan_prepare_job(&ctx, args, template.as_ref(), &config.job_options, &suffix)?;
            if let Some(s) = &plan.secret {
                docs.push(secret_yaml(s)?);
            }
            docs.push(to_yaml(&plan.pod)?);
            warnings = plan.warnings;
        }
        Command::RunContainerStep(args) => {
            let Some(image) = args.image.as_deref() else {
                bail!(
                    "render: a Dockerfile step's image is built at run time; only image steps can be rendered"
                );
            };
            let ws = workspace_subpath(config.github_workspace.as_deref());
            let plan = plan_container_step(&ctx, args, image, &ws, template.as_ref(), &suffix)?;
            if let Some(s) = &plan.secret {
                docs.push(secret_yaml(s)?);
            }
            docs.push(to_yaml(&plan.job)?);
            warnings = plan.warnings;
        }
        Command::RunScriptStep(_) | Command::CleanupJob => {}
    }
    let mut out = String::new();
    for w in &warnings {
        out.push_str(&format!("# warning: {w}\n"));
    }
    if docs.is_empty() {
        out.push_str(&format!(
            "# {} creates no objects\n",
            envelope.command.name().as_str()
        ));
    }
    out.push_str(&docs.join("---\n"));
    Ok(out)
}

fn to_yaml<T: Serialize>(v: &T) -> anyhow::Result<String> {
    Ok(serde_yaml_ng::to_string(v)?)
}
