//! A template's readiness command for the job container (`arc-hook.dev/readiness-command`): read from the workflow pod's annotations, run by exec once the pod runs, retried at an interval until a timeout, so no step starts on a device that is not ready.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::k8s::Kube;
use crate::k8s::exec::{ExecError, ExecTarget, exec_capture};
use crate::objects::JOB_CONTAINER_NAME;

/// The annotation naming the command: a shell command line (run with `sh -c`), or a JSON array
/// of words run as they are (for images without a shell).
pub(crate) const COMMAND_ANNOTATION: &str = "arc-hook.dev/readiness-command";
/// How long the command may keep failing before prepare_job does (default [`DEFAULT_TIMEOUT`]).
pub(crate) const TIMEOUT_ANNOTATION: &str = "arc-hook.dev/readiness-timeout-seconds";
/// The pause between two tries (default [`DEFAULT_INTERVAL`]).
pub(crate) const INTERVAL_ANNOTATION: &str = "arc-hook.dev/readiness-interval-seconds";

pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// The least time one try is given, even when the timeout is nearly up (a device tool's first
/// call may take seconds).
const MIN_TRY: Duration = Duration::from_secs(10);

/// The most of a failed try's output the job log gets: its last lines, this many bytes.
const OUTPUT_MAX: usize = 1000;

/// A readiness check the template asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Readiness {
    /// The annotation's text, as the user wrote it (for messages).
    pub shown: String,
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub interval: Duration,
}

/// An annotation arc-hook cannot use.
#[derive(Debug, thiserror::Error)]
#[error("worker-podspec template: metadata.annotations[{annotation:?}]: {reason}")]
pub(crate) struct ReadinessError {
    pub annotation: &'static str,
    pub reason: String,
}

/// The readiness check the pod's annotations (the template's, merged) ask for; `None` without
/// [`COMMAND_ANNOTATION`]. Pure.
pub(crate) fn from_pod(pod: &Pod) -> Result<Option<Readiness>, ReadinessError> {
    let annotations = pod.metadata.annotations.as_ref();
    let get = |k: &str| annotations.and_then(|a| a.get(k)).map(|v| v.trim());
    let Some(command) = get(COMMAND_ANNOTATION) else {
        return Ok(None);
    };
    let bad = |annotation, reason: &str| ReadinessError {
        annotation,
        reason: reason.to_string(),
    };
    if command.is_empty() {
        return Err(bad(COMMAND_ANNOTATION, "the command is empty"));
    }
    let argv: Vec<String> = if command.starts_with('[') {
        serde_json::from_str(command).map_err(|_| {
            bad(
                COMMAND_ANNOTATION,
                "a value starting with [ must be a JSON array of strings, e.g. [\"nvidia-smi\", \"-L\"]",
            )
        })?
    } else {
        vec!["sh".into(), "-c".into(), command.to_string()]
    };
    if argv.is_empty() || argv.iter().all(|w| w.trim().is_empty()) {
        return Err(bad(COMMAND_ANNOTATION, "the command is empty"));
    }
    let seconds = |annotation: &'static str, default: Duration| match get(annotation) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
            _ => Err(bad(annotation, "expected a whole number of seconds > 0")),
        },
    };
    Ok(Some(Readiness {
        shown: command.to_string(),
        argv,
        timeout: seconds(TIMEOUT_ANNOTATION, DEFAULT_TIMEOUT)?,
        interval: seconds(INTERVAL_ANNOTATION, DEFAULT_INTERVAL)?,
    }))
}

/// The end of a try's output, one line, bounded and without control characters.
pub(crate) fn output_tail(stdout: &[u8], stderr: &[u8]) -> String {
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(stdout),
        String::from_utf8_lossy(stderr)
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut joined = lines.join(" | ");
    joined.retain(|c| !c.is_control());
    if joined.len() > OUTPUT_MAX {
        let mut start = joined.len() - OUTPUT_MAX;
        while !joined.is_char_boundary(start) {
            start += 1;
        }
        joined = format!("...{}", &joined[start..]);
    }
    if joined.is_empty() {
        "no output".into()
    } else {
        joined
    }
}

/// Runs the check in the job container of `pod`: tries at 0, `interval`, 2 × `interval`...
/// while within `timeout` (each try given at least [`MIN_TRY`]); fails naming the command, the
/// tries and the last output, or at once when the image lacks the program.
pub(crate) async fn run(kube: &Kube, pod: &str, check: &Readiness) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let deadline = started + check.timeout;
    let target = ExecTarget {
        pod,
        container: JOB_CONTAINER_NAME,
        what: "the readiness command",
    };
    let mut tries = 0u32;
    loop {
        tries += 1;
        let budget = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(MIN_TRY);
        let outcome = match tokio::time::timeout(budget, exec_capture(kube, target, &check.argv))
            .await
        {
            Ok(Ok((0, _, _))) => {
                if tries > 1 {
                    crate::joblog::notice(format_args!(
                        "readiness command `{}` succeeded on try {tries} after {}s",
                        check.shown,
                        started.elapsed().as_secs()
                    ));
                }
                return Ok(());
            }
            Ok(Ok((code, out, err))) => format!("exit code {code}: {}", output_tail(&out, &err)),
            // A program the image lacks will not appear by waiting.
            Ok(Err(e @ ExecError::NotStarted { .. })) => anyhow::bail!(
                "the template's readiness command `{}` ({COMMAND_ANNOTATION}) cannot run in the job container: {e}",
                check.shown
            ),
            Ok(Err(e)) => format!("{:#}", anyhow::Error::from(e)),
            Err(_) => format!("no answer within {}s", budget.as_secs()),
        };
        let next = started + check.interval * tries;
        if next > deadline {
            anyhow::bail!(
                "the job container is not ready: the template's readiness command `{}` ({COMMAND_ANNOTATION}) failed {tries} time(s) in {}s; last: {outcome} (raise {TIMEOUT_ANNOTATION} if the device needs longer)",
                check.shown,
                started.elapsed().as_secs()
            );
        }
        if tries == 1 {
            crate::joblog::notice(format_args!(
                "readiness command `{}` failed ({outcome}); trying every {}s for up to {}s",
                check.shown,
                check.interval.as_secs(),
                check.timeout.as_secs()
            ));
        }
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(annotations: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "annotations": annotations}}))
            .expect("pod")
    }

    #[test]
    fn the_annotations_name_the_command_and_its_bounds() {
        assert_eq!(from_pod(&pod(json!({"a": "b"}))).expect("none"), None);
        let r = from_pod(&pod(json!({COMMAND_ANNOTATION: "nvidia-smi -L"})))
            .expect("valid")
            .expect("some");
        assert_eq!(r.argv, ["sh", "-c", "nvidia-smi -L"]);
        assert_eq!((r.timeout, r.interval), (DEFAULT_TIMEOUT, DEFAULT_INTERVAL));
        let r = from_pod(&pod(json!({
            COMMAND_ANNOTATION: " [\"npu-smi\", \"info\"] ",
            TIMEOUT_ANNOTATION: "300",
            INTERVAL_ANNOTATION: "10",
        })))
        .expect("valid")
        .expect("some");
        assert_eq!(r.argv, ["npu-smi", "info"]);
        assert_eq!(r.shown, "[\"npu-smi\", \"info\"]");
        assert_eq!(
            (r.timeout, r.interval),
            (Duration::from_secs(300), Duration::from_secs(10))
        );
        for (bad, field) in [
            (
                json!({COMMAND_ANNOTATION: "[nvidia-smi"}),
                COMMAND_ANNOTATION,
            ),
            (json!({COMMAND_ANNOTATION: "[]"}), COMMAND_ANNOTATION),
            (json!({COMMAND_ANNOTATION: "  "}), COMMAND_ANNOTATION),
            (
                json!({COMMAND_ANNOTATION: "x", TIMEOUT_ANNOTATION: "0"}),
                TIMEOUT_ANNOTATION,
            ),
            (
                json!({COMMAND_ANNOTATION: "x", INTERVAL_ANNOTATION: "5s"}),
                INTERVAL_ANNOTATION,
            ),
        ] {
            let e = from_pod(&pod(bad.clone())).expect_err("invalid");
            assert_eq!(e.annotation, field, "{bad}");
        }
    }

    #[test]
    fn output_is_one_bounded_line() {
        assert_eq!(output_tail(b"", b""), "no output");
        assert_eq!(
            output_tail(b"line 1\n\nline 2\n", b"\x1b[31merr\x1b[0m\n"),
            "line 1 | line 2 | [31merr[0m"
        );
        let long = "é".repeat(2000);
        let t = output_tail(long.as_bytes(), b"");
        assert!(
            t.starts_with("...") && t.len() <= OUTPUT_MAX + 3,
            "{}",
            t.len()
        );
    }
}
