//! The job log: every line the hook itself shows the user goes through here.
//!
//! The runner puts the hook's stdout and stderr in the job's log, where anyone who can read the
//! workflow run reads them. So what reaches them is decided in one place: notices and warnings
//! (progress, something the user may want to change) on stdout, in order with the step's own
//! output; refusals and problems (what failed, and why) on stderr. Every line is passed through
//! [`masked`] first: a value registered with [`mask`] (a registry password from the job's input)
//! never appears, whoever formatted the line — an API server's error that quotes an object
//! back, a wrapped cause. The step's own output is not a line of the hook's and is streamed
//! as it comes (the runner masks its own secrets there).
//!
//! Lower layers (`k8s`) report through this module too, for the waits the user sees progress
//! of; they return errors for everything that ends a command.

use std::fmt::Display;
use std::io::Write;
use std::sync::{Mutex, PoisonError};

/// Values shorter than this are not masked: they would hide ordinary words of the log and are
/// no secret worth the name (the runner's own masker has the same kind of floor).
const MIN_MASKED_LEN: usize = 4;

static MASKS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Registers a secret value: it is replaced by `***` in every later line of the hook's.
pub(crate) fn mask(secret: &str) {
    if secret.len() < MIN_MASKED_LEN {
        return;
    }
    let mut masks = MASKS.lock().unwrap_or_else(PoisonError::into_inner);
    if !masks.iter().any(|m| m == secret) {
        masks.push(secret.to_string());
        // Longest first, so a secret containing another is hidden whole.
        masks.sort_by_key(|m| std::cmp::Reverse(m.len()));
    }
}

/// `text` with every registered secret replaced by `***`.
pub(crate) fn masked(text: &str) -> String {
    let masks = MASKS.lock().unwrap_or_else(PoisonError::into_inner);
    masks
        .iter()
        .fold(text.to_string(), |t, m| t.replace(m.as_str(), "***"))
}

/// Progress the user sees in order with the step's output: `arc-hook: <what>` on stdout.
pub(crate) fn notice(what: impl Display) {
    out(&format!("arc-hook: {what}"));
}

/// Something the user may want to change, the command going on: `arc-hook: warning: <what>`.
pub(crate) fn warning(what: impl Display) {
    out(&format!("arc-hook: warning: {what}"));
}

/// Something the hook would not do, naming it: `arc-hook: refused: <what>` on stderr.
pub(crate) fn refused(what: impl Display) {
    err(&format!("arc-hook: refused: {what}"));
}

/// What went wrong, the command going on or about to end: `arc-hook: <what>` on stderr.
pub(crate) fn problem(what: impl Display) {
    err(&format!("arc-hook: {what}"));
}

/// The error that ends a command, with its causes (`{:#}`), on stderr.
pub fn error(e: &anyhow::Error) {
    err(&format!("{e:#}"));
}

/// A whole line as the caller wrote it, on stdout (a step's final line, the start-up summary).
pub fn line(text: impl Display) {
    out(&text.to_string());
}

/// A whole line as the caller wrote it, on stderr.
pub(crate) fn line_err(text: impl Display) {
    err(&text.to_string());
}

fn out(line: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (the runner gone) leaves nobody to tell.
    let _ = writeln!(stdout, "{}", masked(line));
    let _ = stdout.flush();
}

fn err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", masked(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_never_appear_whoever_formatted_the_line() {
        mask("hunter2-registry-password");
        mask("hunter2");
        mask("abc");
        let quoted = anyhow::anyhow!("HTTP 422: {{\"password\":\"hunter2-registry-password\"}}")
            .context("creating secret runner-secret-x");
        let shown = masked(&format!("{quoted:#}"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("\"password\":\"***\""), "{shown}");
        assert_eq!(masked("a short abc stays"), "a short abc stays");
    }
}
