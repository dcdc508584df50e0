//! The kubelet's prober: exec startup and readiness probes run in a container at their period, results sent to the pod worker.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::PodHandle;
use super::process::{self, Isolation, ProcessSpec};

/// The most probe output the kubelet keeps (`maxReadLength` in `pkg/probe/exec`: 10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;

/// The probes the simulator runs (a liveness probe is not run: nothing here needs one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeKind {
    Startup,
    Readiness,
}

impl ProbeKind {
    pub(super) fn field(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startupProbe",
            ProbeKind::Readiness => "readinessProbe",
        }
    }

    /// As the kubelet names it in events (`Readiness probe failed: ...`).
    pub(super) fn label(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// A probe's settings, with the API server's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProbeSpec {
    pub(super) command: Vec<String>,
    pub(super) initial_delay: Duration,
    pub(super) period: Duration,
    pub(super) timeout: Duration,
    pub(super) success_threshold: u32,
    pub(super) failure_threshold: u32,
}

impl ProbeSpec {
    /// The container's `kind` probe when it is an exec probe (HTTP and TCP probes are not run).
    pub(super) fn of(container: &Value, kind: ProbeKind) -> Option<ProbeSpec> {
        let p = container.get(kind.field())?;
        let command: Vec<String> = p
            .pointer("/exec/command")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if command.is_empty() {
            return None;
        }
        let n = |k: &str, default: u64, min: u64| {
            p.get(k).and_then(Value::as_u64).unwrap_or(default).max(min)
        };
        Some(ProbeSpec {
            command,
            initial_delay: Duration::from_secs(n("initialDelaySeconds", 0, 0)),
            period: Duration::from_secs(n("periodSeconds", 10, 1)),
            timeout: Duration::from_secs(n("timeoutSeconds", 1, 1)),
            success_threshold: u32::try_from(n("successThreshold", 1, 1)).unwrap_or(1),
            failure_threshold: u32::try_from(n("failureThreshold", 3, 1)).unwrap_or(3),
        })
    }
}

/// One probe's outcome, for the container run `pid`.
#[derive(Debug)]
pub(super) struct ProbeResult {
    pub(super) container: String,
    pub(super) pid: i32,
    pub(super) kind: ProbeKind,
    pub(super) ok: bool,
    pub(super) output: String,
}

/// Where a probe's command runs: the container's process settings and namespaces.
pub(super) struct ProbeTarget {
    pub(super) handle: Arc<PodHandle>,
    pub(super) container: String,
    pub(super) pid: i32,
    pub(super) process: ProcessSpec,
    pub(super) namespaces: bool,
}

/// Runs `spec` every period from `initialDelaySeconds` after the container started, while the
/// container's run `pid` lasts; each result goes to `results`.
pub(super) fn start(
    target: ProbeTarget,
    kind: ProbeKind,
    spec: ProbeSpec,
    results: mpsc::UnboundedSender<ProbeResult>,
) {
    tokio::spawn(async move {
        let mut next = Instant::now() + spec.initial_delay;
        loop {
            tokio::time::sleep_until(next).await;
            if !still_running(&target) {
                return;
            }
            let (ok, output) = run_once(&target, &spec).await;
            let sent = results.send(ProbeResult {
                container: target.container.clone(),
                pid: target.pid,
                kind,
                ok,
                output,
            });
            if sent.is_err() {
                return;
            }
            // The kubelet's ticker: a probe longer than its period skips the ticks it overran.
            next += spec.period;
            let now = Instant::now();
            while next <= now {
                next += spec.period;
            }
        }
    });
}

fn still_running(t: &ProbeTarget) -> bool {
    t.handle
        .rt()
        .containers
        .get(&t.container)
        .and_then(|c| c.pid)
        == Some(t.pid)
}

/// One exec of the probe's command in the container: success on exit 0; the combined output
/// (at most 10 KiB), or the kubelet's words for a timeout.
async fn run_once(t: &ProbeTarget, spec: &ProbeSpec) -> (bool, String) {
    let ps = ProcessSpec {
        argv: spec.command.clone(),
        ..t.process.clone()
    };
    let iso = if t.namespaces {
        Isolation::Join {
            container_pid: t.pid,
        }
    } else {
        Isolation::None
    };
    let mut child = match process::spawn(&ps, iso, Stdio::null(), Stdio::piped(), Stdio::piped()) {
        Ok(c) => c,
        // containerd fails the exec before any process exists; the kubelet counts a failure.
        Err(e) => return (false, format!("exec {:?}: {e}", spec.command.join(" "))),
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    t.handle.rt().exec_pgids.insert(pgid);
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let collect = async {
        let mut buf = Vec::new();
        let (a, b) = futures::future::join(read_capped(out), read_capped(err)).await;
        buf.extend(a);
        buf.extend(b);
        buf.truncate(MAX_OUTPUT);
        let status = child.wait().await;
        (status, buf)
    };
    let outcome = tokio::time::timeout(spec.timeout, collect).await;
    process::signal_group(pgid, Signal::SIGKILL);
    t.handle.rt().exec_pgids.remove(&pgid);
    match outcome {
        Ok((Ok(status), buf)) => (status.success(), String::from_utf8_lossy(&buf).into_owned()),
        Ok((Err(e), _)) => (false, e.to_string()),
        // CRI's words (remote_runtime.go ExecSync), which the exec prober reports as output.
        Err(_) => (
            false,
            format!("command {:?} timed out", spec.command.join(" ")),
        ),
    }
}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) -> Vec<u8> {
    let Some(mut s) = stream else {
        return Vec::new();
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return buf,
            Ok(n) if buf.len() < MAX_OUTPUT => buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {}
        }
    }
}

/// Consecutive results of one probe, and what they decided.
#[derive(Debug, Clone, Default)]
pub(super) struct ProbeState {
    successes: u32,
    failures: u32,
}

/// What a result changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The success threshold was just reached.
    Passed,
    /// The failure threshold was just reached.
    Failed,
    /// Nothing changes yet.
    Pending,
}

impl ProbeState {
    /// Counts one result against the thresholds, as the kubelet's probe worker does.
    pub(super) fn record(&mut self, ok: bool, spec: &ProbeSpec) -> Verdict {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= spec.success_threshold {
                return Verdict::Passed;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= spec.failure_threshold {
                return Verdict::Failed;
            }
        }
        Verdict::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn probe_settings_default_like_the_api_server() {
        let c = json!({"readinessProbe": {"exec": {"command": ["/bin/sh", "-c", "true"]}}});
        let s = ProbeSpec::of(&c, ProbeKind::Readiness).expect("exec probe");
        assert_eq!(s.command, ["/bin/sh", "-c", "true"]);
        assert_eq!(
            (s.initial_delay, s.period, s.timeout),
            (
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(1)
            )
        );
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        assert!(ProbeSpec::of(&c, ProbeKind::Startup).is_none());
        let http = json!({"readinessProbe": {"httpGet": {"port": 80}}});
        assert!(ProbeSpec::of(&http, ProbeKind::Readiness).is_none());
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let c = json!({"readinessProbe": {"exec": {"command": ["x"]}, "successThreshold": 2, "failureThreshold": 2}});
        let s = ProbeSpec::of(&c, ProbeKind::Readiness).expect("probe");
        let mut st = ProbeState::default();
        assert_eq!(st.record(true, &s), Verdict::Pending);
        assert_eq!(st.record(false, &s), Verdict::Pending);
        assert_eq!(st.record(true, &s), Verdict::Pending);
        assert_eq!(st.record(true, &s), Verdict::Passed);
        assert_eq!(st.record(false, &s), Verdict::Pending);
        assert_eq!(st.record(false, &s), Verdict::Failed);
    }
}
