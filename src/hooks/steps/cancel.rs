//! A cancelled or timed-out step: the runner's signals heard, and the time the step gets to stop in the pod before the runner kills the hook.
//!
//! The runner cancels a step by signalling the hook process: SIGINT, SIGTERM 7.5 s later if the
//! hook is still there, and a kill of its process tree 2.5 s after that (actions/runner
//! `src/Runner.Sdk/ProcessInvoker.cs`, `CancelAndKillProcessTree`). A step runs in the pod, not
//! in the hook's process tree, so the hook must stop it itself, on the first signal, and be done
//! before the runner's kill.

use std::time::Duration;

use tokio::sync::watch;

/// The runner waits this long after its SIGINT before sending SIGTERM.
#[cfg(test)] // only the unit tests use it
pub(crate) const RUNNER_SIGINT_WAIT: Duration = Duration::from_millis(7500);
/// How long the step's processes get between TERM and KILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(3);
/// The whole stop (TERM, grace, KILL, confirmation) is abandoned after this, counted from the
/// first signal: before the runner's SIGTERM, so the hook exits on its own terms.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_millis(7000);

/// A stop signal the runner sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The exit code of a process ended by this signal (128 + its number), which is what a
    /// cancelled step exits with (the runner marks the step cancelled whatever the code).
    pub(crate) fn exit_code(self) -> i32 {
        128 + match self {
            StopSignal::Interrupt => 2,
            StopSignal::Terminate => 15,
        }
    }
}

/// Hears the runner's first stop signal; cheap to clone into every wait that must end on it.
///
/// Listening starts when it is created (the signals' default action, ending the process at once,
/// is replaced then), so create it before the step can start.
#[derive(Debug, Clone)]
pub(crate) struct Cancel {
    heard: watch::Receiver<Option<StopSignal>>,
}

/// A command that stopped because the runner cancelled it: the hook maps it to
/// [`StopSignal::exit_code`] and the job log's `cancelled:` line.
#[derive(Debug, thiserror::Error)]
#[error("cancelled by the runner ({}): {stopped}", signal.name())]
pub(crate) struct Cancelled {
    pub signal: StopSignal,
    /// What the hook did about the step, e.g. "stopped the step's 3 processes in pod p".
    pub stopped: String,
}

impl Cancel {
    /// Starts listening for SIGINT and SIGTERM.
    pub(crate) fn listen() -> std::io::Result<Cancel> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, heard) = watch::channel(None);
        tokio::spawn(async move {
            let first = tokio::select! {
                _ = int.recv() => StopSignal::Interrupt,
                _ = term.recv() => StopSignal::Terminate,
            };
            tracing::debug!(signal = first.name(), "stop signal");
            let _ = tx.send(Some(first));
            // Later signals (the runner's SIGTERM while the step is being stopped) are heard
            // and ignored: the stop already under way is bounded by STOP_DEADLINE.
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
        });
        Ok(Cancel { heard })
    }

    /// The first signal, if one came.
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn signal(&self) -> Option<StopSignal> {
        *self.heard.borrow()
    }

    /// Resolves with the first signal (at once if it already came).
    pub(crate) async fn cancelled(&self) -> StopSignal {
        let mut heard = self.heard.clone();
        loop {
            if let Some(s) = *heard.borrow_and_update() {
                return s;
            }
            if heard.changed().await.is_err() {
                // The listener is gone: no signal will ever be reported.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_ends_before_the_runner_escalates() {
        assert!(TERM_GRACE < STOP_DEADLINE);
        assert!(STOP_DEADLINE < RUNNER_SIGINT_WAIT);
        assert_eq!(StopSignal::Interrupt.exit_code(), 130);
        assert_eq!(StopSignal::Terminate.exit_code(), 143);
    }

    fn signal_self(signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &std::process::id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    #[tokio::test]
    async fn a_signal_reaches_every_clone_also_after_it_came() {
        let cancel = Cancel::listen().expect("listening");
        let clone = cancel.clone();
        assert_eq!(cancel.signal(), None);
        signal_self("-INT");
        let got = tokio::time::timeout(Duration::from_secs(5), clone.cancelled())
            .await
            .expect("heard");
        assert_eq!(got, StopSignal::Interrupt);
        // A second signal neither ends the process nor changes the first.
        signal_self("-TERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(cancel.cancelled().await, StopSignal::Interrupt);
    }
}
