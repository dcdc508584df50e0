//! Dockerfile actions: the image built in-cluster by a Kaniko executor pod and pushed to the configured registry.

use anyhow::bail;

use crate::build::BuildContext;
use crate::config::{BuildConfig, Config};
use crate::k8s::Kube;
use crate::k8s::rbac::Granted;

/// Builds the action's image and returns its reference.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    _kube: &Kube,
    _config: &Config,
    _build: &BuildConfig,
    _ctx: &BuildContext,
    _job_pod: &str,
    _copy: bool,
    _dockerfile: &str,
    _granted: &Granted,
) -> anyhow::Result<String> {
    bail!("not yet")
}
