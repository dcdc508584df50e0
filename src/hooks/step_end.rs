//! How a step command ends: its exit code, and the job log's last line saying whether the step failed on its own, the hook could not run it, or the runner cancelled it.
//!
//! The last line is written to stdout after everything else (the runner reads the hook's stderr
//! and stdout apart and, of lines that arrive together, logs stderr's first: a last line on
//! stderr could land above the step's last output). Its opening words are stable, for CI
//! dashboards to match: `arc-hook: step failed:`, `arc-hook: infrastructure failure:`,
//! `arc-hook: cancelled:`. A step that passed gets no such line.

use super::HookResult;
use super::steps::cancel::Cancelled;

/// Exit code of a step command the hook itself could not carry out (API refused or unreachable,
/// pod gone, invalid input...), when no more specific code applies.
pub(crate) const EXIT_HOOK_FAILED: i32 = 1;

/// A step the hook could not run, or whose result it could not learn: the code to exit with
/// (e.g. [`super::steps::detached::EXIT_RESULT_UNKNOWN`], 137 for an out-of-memory kill) and why.
#[derive(Debug, thiserror::Error)]
#[error("{cause}")]
pub(crate) struct Infrastructure {
    pub code: i32,
    pub cause: String,
}

/// What a step command's result means for the job log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ending {
    /// The hook's exit code.
    pub code: i32,
    /// The full error, for stderr above the last line (`None` when there was none).
    pub error: Option<String>,
    /// The last line (`None` for a step that passed).
    pub last_line: Option<String>,
}

/// The ending of a step command's `result` (pure).
pub(crate) fn ending(result: &HookResult) -> Ending {
    match result {
        Ok(0) => Ending {
            code: 0,
            error: None,
            last_line: None,
        },
        Ok(code) => Ending {
            code: *code,
            error: None,
            last_line: Some(format!(
                "arc-hook: step failed: the step's own command exited with code {code}{}; not an infrastructure failure",
                if *code == 137 {
                    " (137: killed by SIGKILL, often for running out of memory)"
                } else {
                    ""
                }
            )),
        },
        Err(e) => {
            if let Some(c) = e.downcast_ref::<Cancelled>() {
                return Ending {
                    code: c.signal.exit_code(),
                    error: None,
                    last_line: Some(format!(
                        "arc-hook: cancelled: the runner sent {}; {}",
                        c.signal.name(),
                        c.stopped
                    )),
                };
            }
            let (code, cause) = match e.downcast_ref::<Infrastructure>() {
                Some(i) => (i.code, i.cause.clone()),
                None => (EXIT_HOOK_FAILED, "see the error above".to_string()),
            };
            Ending {
                code,
                error: Some(format!("{e:#}")),
                last_line: Some(format!(
                    "arc-hook: infrastructure failure: the hook could not run the step or learn its result: {cause}; exit code {code}"
                )),
            }
        }
    }
}

/// Prints a step command's ending (the error on stderr, then the last line on stdout) and
/// returns the exit code.
pub(crate) fn finish(result: HookResult) -> i32 {
    use std::io::Write;
    let ending = ending(&result);
    if let Some(e) = &ending.error {
        crate::joblog::line_err(e);
    }
    if let Some(line) = &ending.last_line {
        // The step's output went to stdout through tokio's handle: what it buffered is out by
        // now (each chunk is flushed), so this line comes after it.
        crate::joblog::line(line);
        let _ = std::io::stdout().flush();
    }
    ending.code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::steps::cancel::StopSignal;

    #[test]
    fn a_passed_step_gets_no_line() {
        assert_eq!(
            ending(&Ok(0)),
            Ending {
                code: 0,
                error: None,
                last_line: None
            }
        );
    }

    #[test]
    fn a_step_failure_and_an_infrastructure_failure_read_differently() {
        let own = ending(&Ok(3));
        assert_eq!(own.code, 3);
        assert_eq!(
            own.last_line.as_deref(),
            Some(
                "arc-hook: step failed: the step's own command exited with code 3; not an infrastructure failure"
            )
        );
        let lost: HookResult = Err(anyhow::Error::new(Infrastructure {
            code: 75,
            cause: "lost pod p".into(),
        })
        .context("arc-hook run_script_step"));
        let infra = ending(&lost);
        assert_eq!(infra.code, 75);
        assert_eq!(
            infra.last_line.as_deref(),
            Some(
                "arc-hook: infrastructure failure: the hook could not run the step or learn its result: lost pod p; exit code 75"
            )
        );
        assert_eq!(
            infra.error.as_deref(),
            Some("arc-hook run_script_step: lost pod p")
        );
        let other = ending(&Err(anyhow::anyhow!("the API server is unreachable")));
        assert_eq!(other.code, EXIT_HOOK_FAILED);
        assert!(
            other
                .last_line
                .as_deref()
                .is_some_and(|l| l.starts_with("arc-hook: infrastructure failure: ")),
            "{other:?}"
        );
        assert!(
            ending(&Ok(137))
                .last_line
                .is_some_and(|l| l.contains("running out of memory"))
        );
    }

    #[test]
    fn a_cancel_exits_as_the_signal_would() {
        let cancelled: HookResult = Err(anyhow::Error::new(Cancelled {
            signal: StopSignal::Interrupt,
            stopped: "stopped the step's 2 process(es) with TERM in pod p".into(),
        }));
        let e = ending(&cancelled);
        assert_eq!(e.code, 130);
        assert_eq!(e.error, None);
        assert_eq!(
            e.last_line.as_deref(),
            Some(
                "arc-hook: cancelled: the runner sent SIGINT; stopped the step's 2 process(es) with TERM in pod p"
            )
        );
    }
}
