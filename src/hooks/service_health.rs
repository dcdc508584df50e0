//! Services' health checks before the first step, as the runner waits for them in Docker mode.

use std::time::Duration;

use anyhow::bail;

use crate::docker_options::HealthCheck;
use crate::docker_options::health::secs;
use crate::k8s::Kube;
use crate::k8s::rbac::{Extra, Granted};
use crate::k8s::ready::{ReadyError, ReadyWait, wait_containers_ready};
use crate::objects::options::{ServiceHealth, probe_seconds};

/// Beyond docker's own verdict time, how long the kubelet may take to run a probe and report it.
pub(crate) const HEALTH_MARGIN: Duration = Duration::from_secs(10);

/// How long prepare_job waits for a service to become healthy: as long as docker would keep it
/// `starting` (start period, then retries × (interval + timeout), in the probe's whole seconds),
/// one more interval (the kubelet probes on its own period, not from the service's start), and
/// [`HEALTH_MARGIN`].
pub(crate) fn wait_limit(check: &HealthCheck) -> Duration {
    let s = |d: Duration| Duration::from_secs(u64::from(probe_seconds(d).unsigned_abs()));
    let (interval, timeout) = (s(check.interval), s(check.timeout));
    check.start_period + (interval + timeout) * check.retries + interval + HEALTH_MARGIN
}

/// Waits until every service with a health check is ready, saying so in the job log; fails
/// naming the first that is not, with its probe's last output.
pub(crate) async fn wait_for_services(
    kube: &Kube,
    pod: &str,
    health: &[ServiceHealth],
    granted: &Granted,
) -> anyhow::Result<()> {
    if health.is_empty() {
        return Ok(());
    }
    let waits: Vec<ReadyWait> = health
        .iter()
        .map(|h| ReadyWait {
            container: h.container.clone(),
            within: wait_limit(&h.check),
        })
        .collect();
    let names: Vec<String> = health
        .iter()
        .zip(&waits)
        .map(|(h, w)| format!("{} (up to {}s)", h.container, w.within.as_secs()))
        .collect();
    crate::joblog::notice(format_args!(
        "waiting for services to be healthy: {}",
        names.join(", ")
    ));
    let can_list_events = granted.has(Extra::ListEvents);
    let waited = wait_containers_ready(
        kube,
        pod,
        &waits,
        granted.has(Extra::WatchPods),
        can_list_events,
        |name, after| {
            crate::joblog::notice(format_args!(
                "service {name} is healthy (after {})",
                secs(Duration::from_secs(after.as_secs()))
            ))
        },
    )
    .await;
    match waited {
        Ok(()) => Ok(()),
        Err(ReadyError::NotReady {
            container,
            within,
            last_failure,
        }) => {
            let check = health
                .iter()
                .find(|h| h.container == container)
                .map(|h| h.check.describe())
                .unwrap_or_default();
            let output = match last_failure {
                Some(event) => format!("last result: {event}"),
                None if can_list_events => format!(
                    "the kubelet reported no probe failure; `kubectl describe pod {pod}` shows the pod's events"
                ),
                None => "its probe's output is in the pod's events, which this runner's Role cannot list".to_string(),
            };
            bail!(
                "service {container} is unhealthy: its health check (--health-cmd, {check}) did not pass within {}s; {output}",
                within.as_secs()
            )
        }
        Err(e) => bail!("waiting for the services to be healthy: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_covers_dockers_verdict_plus_an_interval_and_the_margin() {
        let check = HealthCheck {
            command: "pg_isready".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            retries: 5,
            start_period: Duration::from_secs(20),
        };
        // 20 + 5 × (10 + 5) + 10 + 10
        assert_eq!(wait_limit(&check), Duration::from_secs(115));
        let fast = HealthCheck {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            retries: 2,
            start_period: Duration::ZERO,
            ..check
        };
        // Rounded up to the probe's whole seconds: 2 × (1 + 1) + 1 + 10.
        assert_eq!(wait_limit(&fast), Duration::from_secs(15));
    }
}
