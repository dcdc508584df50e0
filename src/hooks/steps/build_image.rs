//! Dockerfile actions: the image built in-cluster by a BuildKit (or Kaniko) builder pod, pushed to the configured registry under a content-hash tag, then run like any other image.

use std::path::Path;

use anyhow::{Context, bail};
use kube::api::DeleteParams;

use super::cancel::{Cancel, Cancelled};
use super::job::terminated;
use crate::config::{BuildConfig, Config};
use crate::k8s::Kube;
use crate::k8s::owned::{self, create_once, create_secret_once};
use crate::k8s::rbac::{Extra, Granted};
use crate::k8s::retry::with_retry;
use crate::k8s::wait::wait_running;
use crate::objects::builder::{
    BUILDER_CONTAINER, BuildRequest, BuildSource, MAX_CONTEXT_ARCHIVE, builder_pod,
    context_archive, context_hash, context_secret, image_name,
};
use crate::objects::pod::work_subpath;
use crate::objects::{BuildContext, names};
use crate::registry::{ImageRef, Presence, Registry, credentials_for};

/// What the build needs to know about the job.
pub(crate) struct BuildJob<'a> {
    pub ctx: &'a BuildContext,
    /// No-volume mode: the context travels in a secret instead of a claim sub-path.
    pub copy: bool,
    /// The runner-side path of the action's Dockerfile (`args.dockerfile`).
    pub dockerfile: &'a str,
    /// The pod the build-context secret goes with (the workflow pod, else the runner pod).
    pub owner_pod: &'a str,
}

/// Builds the action's image and returns the reference to run (`<destination>@<digest>`).
pub(crate) async fn build(
    kube: &Kube,
    config: &Config,
    build: &BuildConfig,
    job: &BuildJob<'_>,
    granted: &Granted,
    cancel: &Cancel,
) -> anyhow::Result<String> {
    let dockerfile = Path::new(job.dockerfile);
    let (Some(dir), Some(file)) = (dockerfile.parent(), dockerfile.file_name()) else {
        bail!(
            "args.dockerfile: {:?} is not a path to a Dockerfile",
            job.dockerfile
        );
    };
    let hash = context_hash(dir).with_context(|| {
        format!(
            "args.dockerfile: cannot read the build context {}",
            dir.display()
        )
    })?;
    let destination = format!("{}/{}:{hash}", build.registry, image_name(job.dockerfile));
    if let Some(reference) = already_pushed(kube, build, &destination).await {
        crate::joblog::notice(format_args!(
            "{destination} is already in the registry (same build context): not building it again"
        ));
        return Ok(reference);
    }
    let suffix = names::random_suffix();
    let pod_name = names::runner_object_name(&job.ctx.runner_pod, "build", &suffix);
    let mut secret_name = None;
    let source = if job.copy {
        let archive = context_archive(dir)
            .with_context(|| format!("archiving the build context {}", dir.display()))?;
        if archive.len() > MAX_CONTEXT_ARCHIVE {
            bail!(
                "no-volume mode: the Dockerfile action's context {} is {} KiB, more than the {} KiB a secret can carry to the builder; use ARC_HOOK_WORK_VOLUME=claim or a prebuilt image",
                dir.display(),
                archive.len() / 1024,
                MAX_CONTEXT_ARCHIVE / 1024
            );
        }
        let name = names::runner_object_name(&job.ctx.runner_pod, "buildctx", &suffix);
        let secret = context_secret(job.ctx, &name, archive);
        let api = kube.secrets();
        let owner = owned::pod_owner(kube, job.owner_pod).await;
        create_secret_once(&api, "secret", &secret, owner).await?;
        secret_name = Some(name.clone());
        BuildSource::Archive { secret: name }
    } else {
        let sub_path = work_subpath(&dir.to_string_lossy()).with_context(|| {
            format!(
                "args.dockerfile: {} is outside the runner's _work directory, which the builder cannot mount",
                dir.display()
            )
        })?;
        BuildSource::Claim {
            claim: job.ctx.claim_name.clone(),
            sub_path,
        }
    };
    let req = BuildRequest {
        pod_name: pod_name.clone(),
        source,
        dockerfile: file.to_string_lossy().to_string(),
        destination: destination.clone(),
    };
    let pod = builder_pod(job.ctx, build, &req);
    crate::joblog::notice(format_args!(
        "building {destination} from {} in pod {pod_name}",
        dir.display()
    ));
    // A cancel ends the build here; the builder pod is deleted below, as on every path out.
    let result = tokio::select! {
        result = run_builder(kube, config, build, &pod, &pod_name, granted) => result,
        signal = cancel.cancelled() => Err(Cancelled {
            signal,
            stopped: format!("the image build was stopped: deleted the builder pod {pod_name}"),
        }
        .into()),
    };

    let dp = DeleteParams::default().grace_period(0);
    crate::hooks::delete_or_warn(&kube.pods(), "builder pod", &pod_name, &dp).await;
    if let Some(s) = secret_name {
        crate::hooks::delete_or_warn(&kube.secrets(), "secret", &s, &DeleteParams::default()).await;
    }
    let digest = result?;
    Ok(match digest {
        Some(d) => format!("{destination}@{d}"),
        None => destination,
    })
}

/// The reference to run when the registry already has `destination` (pinned to the digest it
/// answered); `None` when it has not, or cannot say: a registry that fails the check must not
/// fail the job, so that costs one line and a build.
async fn already_pushed(kube: &Kube, build: &BuildConfig, destination: &str) -> Option<String> {
    match registry_presence(kube, build, destination).await {
        Ok(Presence::Present { digest }) => Some(match digest {
            Some(d) => format!("{destination}@{d}"),
            None => destination.to_string(),
        }),
        Ok(Presence::Absent) => {
            tracing::debug!(destination, "not in the registry yet");
            None
        }
        Err(e) => {
            crate::joblog::notice(format_args!(
                "could not check whether the registry already has {destination} ({e:#}); building it"
            ));
            None
        }
    }
}

/// One manifest request with the push secret's credentials for the registry's host.
async fn registry_presence(
    kube: &Kube,
    build: &BuildConfig,
    destination: &str,
) -> anyhow::Result<Presence> {
    let image = ImageRef::parse(destination)?;
    let credentials = match &build.push_secret {
        None => None,
        Some(name) => {
            let secrets = kube.secrets();
            let secret = with_retry(&format!("reading secret {name}"), || secrets.get(name))
                .await
                .with_context(|| format!("reading the push secret {name}"))?;
            let config = secret
                .data
                .as_ref()
                .and_then(|d| d.get(".dockerconfigjson"))
                .with_context(|| format!("the push secret {name} has no .dockerconfigjson"))?;
            credentials_for(&config.0, &image.config_host)?
        }
    };
    Ok(Registry::new()?
        .tag_exists(&image, credentials.as_ref())
        .await?)
}

/// Creates the builder pod, streams its log, and returns the pushed digest (when Kaniko wrote one).
async fn run_builder(
    kube: &Kube,
    config: &Config,
    build: &BuildConfig,
    pod: &k8s_openapi::api::core::v1::Pod,
    name: &str,
    granted: &Granted,
) -> anyhow::Result<Option<String>> {
    let api = kube.pods();
    create_once(&api, "builder pod", pod)
        .await
        .context("cannot create the image builder pod")?;
    let opts = crate::k8s::wait::WaitOptions {
        // The builder image is the platform's, never one a parallel job is pushing.
        image_pull_wait: std::time::Duration::ZERO,
        ..crate::hooks::pod_wait(config, granted, true)
    };
    wait_running(kube, name, opts).await.with_context(|| {
        format!(
            "the image builder did not start (ARC_HOOK_BUILDER_IMAGE={})",
            build.builder_image
        )
    })?;
    crate::k8s::logs::follow(kube, name, BUILDER_CONTAINER, tokio::io::stdout()).await?;
    let t = terminated(kube, name, BUILDER_CONTAINER, granted.has(Extra::WatchPods)).await?;
    if t.exit_code != 0 {
        bail!(
            "building the Dockerfile action's image failed (builder exit code {}{}{}); the builder's log is above",
            t.exit_code,
            t.reason.map(|r| format!(", {r}")).unwrap_or_default(),
            t.message
                .map(|m| format!(": {}", m.trim()))
                .unwrap_or_default()
        );
    }
    Ok(t.message
        .as_deref()
        .and_then(crate::objects::buildkit::pushed_digest))
}
