//! Script steps run detached from the exec connection: started once (a marker decides), output to per-step logs in the pod, followed live and re-followed after a broken stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::k8s::Kube;
use crate::k8s::exec::{ExecError, ExecTarget, exec};
use crate::k8s::retry::backoff;

/// Directory (in the pod) under the hook's private `_temp/_arc_hook` holding one directory per step:
/// `log` (the step's output, stdout and stderr in the order it wrote them), `pid`, `status` (its
/// exit code, written once it ended).
pub(crate) const STEPS_DIR_IN_POD: &str = "/__w/_temp/_arc_hook/steps";

/// How long a step's first exec may fail to reach the API server at all (every connection
/// refused or timed out) before the step ends: no request reached the server, so the step never
/// started and there is nothing to reattach to.
pub(crate) const NEVER_REACHED_WINDOW: Duration = Duration::from_secs(30);

/// How long reattaching may keep failing (no exec stream could be opened) before the hook gives up.
pub(crate) const REATTACH_WINDOW: Duration = Duration::from_secs(600);

/// Exit code when the hook lost the pod for [`REATTACH_WINDOW`]: the step's result is unknown and
/// it may still be running (EX_TEMPFAIL).
pub(crate) const EXIT_RESULT_UNKNOWN: i32 = 75;

/// Exit code when the step provably never started: no start marker, and its start script is gone.
pub(crate) const EXIT_NOT_STARTED: i32 = 76;

/// The follower's exit code when the step was cancelled: a process ended by SIGINT's.
pub(crate) const EXIT_CANCELLED: i32 = 130;

/// The follower's exit code when the step's result is lost: its directory was replaced, its
/// status file holds no code, or it stopped without writing one.
pub(crate) const EXIT_LOST: i32 = 1;

/// The follower's exit code when it cannot follow: a bad log offset, or no step directory.
pub(crate) const EXIT_USAGE: i32 = 2;

/// The program every exec of a step runs (`sh -c FOLLOW arc-hook-step DIR SCRIPT LOG_OFFSET`),
/// in `follow_step.sh` (checked by shellcheck in `scripts/test.sh`); [`follow_program`] puts the
/// exit codes above before it.
///
/// `mkdir DIR` is the start marker: atomic, so of all execs that may reach the pod for one step
/// (the first, a re-sent one whose first response was lost, reattaches) exactly one starts it.
/// The step runs in its own session (`setsid`, when the image has it) with its output in files,
/// so it outlives the exec that started it. Its stdout and stderr are one file, opened once with
/// both descriptors on it, so the log keeps the order in which the step wrote (two files followed
/// apart would print `err-2` before `out-1`). Every exec then prints the log from the offset the
/// hook already printed, until the status file exists, and exits with the step's code (looking
/// every 20 ms at first, where `sleep` takes fractions, so a short step costs no dead wait; then
/// every 0.2 s and 1 s while it prints nothing). Reads
/// are bounded (`head -c`) and only regular files are read, so a job that tampers with these
/// files can change its own result, never make the follower read elsewhere or block.
const FOLLOW: &str = include_str!("follow_step.sh");

/// [`FOLLOW`] with its exit codes assigned first: the constants above are their one definition.
fn follow_program() -> String {
    format!(
        "EXIT_LOST={EXIT_LOST} EXIT_USAGE={EXIT_USAGE} EXIT_NOT_STARTED={EXIT_NOT_STARTED} EXIT_CANCELLED={EXIT_CANCELLED}\n{FOLLOW}"
    )
}

/// The program that stops a step (`sh -c STOP arc-hook-stop DIR GRACE_SECONDS`).
///
/// If the step's start marker is not there yet, it takes it, so a start still in flight never
/// runs the step. Otherwise the step's processes are those of its session and process group
/// (the step runs under `setsid`) and, for images without `setsid`, the descendants of its first
/// process, read from `/proc` (the `pid` file is only where to begin: a process is signalled
/// only while it belongs to the step, and never the stop itself). TERM first, KILL to what is
/// left after the grace; zombies count as gone. A `cancelling` file tells followers that the
/// step's end is the cancel's doing. Prints one line: `not-started`, `gone`, or
/// `ended N K` (N processes, K of them killed); exits 1 if any survived KILL. In
/// `stop_step.sh` after `stop_lib.sh`, the TERM-grace-KILL loop it shares with the container
/// step's stop (both checked by shellcheck in `scripts/test.sh`).
const STOP: &str = concat!(include_str!("stop_lib.sh"), include_str!("stop_step.sh"));

/// Where one step lives in the pod.
#[derive(Debug, Clone)]
pub(crate) struct DetachedStep {
    /// The step's directory (its existence is the start marker).
    pub dir: String,
    /// The start script the first exec runs (it removes itself when it starts).
    pub script: String,
}

impl DetachedStep {
    /// The step named `id` whose start script is `script` (both paths in the pod).
    pub(crate) fn new(id: &str, script: String) -> DetachedStep {
        DetachedStep {
            dir: format!("{STEPS_DIR_IN_POD}/{id}"),
            script,
        }
    }

    /// The exec command that starts the step unless its marker exists, then prints its log
    /// from `offset` and exits with its code.
    pub(crate) fn follow_command(&self, offset: u64) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            follow_program(),
            "arc-hook-step".into(),
            self.dir.clone(),
            self.script.clone(),
            offset.to_string(),
        ]
    }

    /// The exec command that stops the step: TERM to its processes, KILL after `grace`.
    pub(crate) fn stop_command(&self, grace: Duration) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            STOP.into(),
            "arc-hook-stop".into(),
            self.dir.clone(),
            grace.as_secs().max(1).to_string(),
        ]
    }
}

/// A writer that counts the bytes it passed on: the offset to resume from.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.written += *n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs `step` in the target container and returns its exit code, reattaching whenever the
/// stream breaks; every byte of the step's output (stdout and stderr, in the order the step
/// wrote them) reaches `out` once. The follower's own notices go to the hook's stderr.
///
/// A broken stream (the exec was open) resets the window; failures to open one count against
/// [`REATTACH_WINDOW`], after which the result is [`ExecError::Lost`]. A pod that is gone or
/// failed ends the attempts at once with the pod's story.
pub(crate) async fn run<O>(
    kube: &Kube,
    target: ExecTarget<'_>,
    step: &DetachedStep,
    out: O,
) -> Result<i32, ExecError>
where
    O: AsyncWrite + Unpin,
{
    let mut out = Counting {
        inner: out,
        written: 0,
    };
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut attempt = 0u32;
    let mut reattaches = 0u32;
    // Whether any exec of this step reached the API server: until one does, nothing ran in the
    // pod, so an unreachable server ends the step after NEVER_REACHED_WINDOW, not REATTACH_WINDOW.
    let mut reached = false;
    loop {
        let command = step.follow_command(out.written);
        let result = exec(
            kube,
            target,
            &command,
            None::<tokio::io::Empty>,
            &mut out,
            tokio::io::stderr(),
        )
        .await;
        let e = match result {
            Ok(code) => {
                tracing::debug!(reattaches, "step finished");
                return Ok(code);
            }
            Err(e @ (ExecError::Broken { .. } | ExecError::Start { .. })) => e,
            Err(e) => return Err(e),
        };
        let never_reached = !reached
            && matches!(
                e,
                ExecError::Start {
                    unreachable: true,
                    ..
                }
            );
        reached |= !never_reached;
        if never_reached {
            let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= NEVER_REACHED_WINDOW {
                // Provably not started: no request of this step ever reached the server.
                return Err(e);
            }
        } else if matches!(e, ExecError::Broken { .. }) {
            failing_since = None;
            attempt = 0;
        } else if crate::k8s::wait::pod_problem(kube, target.pod)
            .await
            .is_some()
        {
            // The pod is gone or failed: no step is left to reattach to.
            return Err(e);
        }
        let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= REATTACH_WINDOW {
            return Err(ExecError::Lost {
                what: target.what.into(),
                pod: target.pod.into(),
                after: REATTACH_WINDOW,
                last: Box::new(e),
            });
        }
        attempt += 1;
        reattaches += 1;
        tracing::debug!(attempt, error = %e, "step stream lost, reattaching");
        if attempt == 1 && never_reached {
            crate::joblog::problem(format_args!(
                "{e}; retrying for up to {}s",
                NEVER_REACHED_WINDOW.as_secs()
            ));
        } else if attempt == 1 {
            crate::joblog::problem(format_args!(
                "lost the step's output stream ({e}); reattaching"
            ));
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// What stopping a step found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// It had not started; it never will (the stop took its start marker).
    NotStarted,
    /// None of its processes were left.
    AlreadyEnded,
    /// `processes` ended after TERM; `killed` of them needed KILL after the grace.
    Ended { processes: u32, killed: u32 },
}

impl Stopped {
    /// A stop script's report line, read.
    pub(crate) fn parse(line: &str) -> Option<Stopped> {
        let mut words = line.split_whitespace();
        let stopped = match words.next()? {
            "not-started" => Stopped::NotStarted,
            "gone" => Stopped::AlreadyEnded,
            "ended" => Stopped::Ended {
                processes: words.next()?.parse().ok()?,
                killed: words.next()?.parse().ok()?,
            },
            _ => return None,
        };
        Some(stopped)
    }

    /// What the job log says about it, after "stopped ...".
    pub(crate) fn describe(&self) -> String {
        match self {
            Stopped::NotStarted => "the step had not started and will not".into(),
            Stopped::AlreadyEnded => "the step's processes had already ended".into(),
            Stopped::Ended {
                processes,
                killed: 0,
            } => format!("stopped the step's {processes} process(es) with TERM"),
            Stopped::Ended { processes, killed } => format!(
                "stopped the step's {processes} process(es): TERM, then KILL for {killed} still running after {}s",
                super::cancel::TERM_GRACE.as_secs()
            ),
        }
    }
}

/// Stops `step` in its container: TERM to its session and process group (and, where the image
/// has no `setsid`, to its descendants), KILL to whatever is left after `grace`. Opening the
/// exec is retried until the caller's deadline ends the attempt (a cancel may come while the
/// hook is reattaching to a pod it cannot reach).
pub(crate) async fn stop(
    kube: &Kube,
    target: ExecTarget<'_>,
    step: &DetachedStep,
    grace: Duration,
) -> Result<Stopped, ExecError> {
    let command = step.stop_command(grace);
    let mut attempt = 0u32;
    loop {
        match crate::k8s::exec::exec_capture(kube, target, &command).await {
            Ok((code, out, err)) => {
                let line = String::from_utf8_lossy(&out);
                let line = line.lines().next().unwrap_or_default();
                return match (code, Stopped::parse(line)) {
                    (0, Some(stopped)) => Ok(stopped),
                    _ => Err(ExecError::Failed {
                        what: "stopping the step".into(),
                        pod: target.pod.into(),
                        message: format!(
                            "exit code {code}: {}{}",
                            line.trim(),
                            String::from_utf8_lossy(&err).trim()
                        ),
                    }),
                };
            }
            Err(e @ (ExecError::Start { .. } | ExecError::Broken { .. })) => {
                attempt += 1;
                tracing::debug!(attempt, error = %e, "could not reach the step to stop it, retrying");
                tokio::time::sleep(backoff(attempt).min(Duration::from_millis(500))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn follow(step: &DetachedStep, offset: u64) -> std::process::Output {
        let argv = step.follow_command(offset);
        Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .expect("sh runs")
    }

    fn stop_now(step: &DetachedStep, grace: u64) -> std::process::Output {
        let argv = step.stop_command(Duration::from_secs(grace));
        Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .expect("sh runs")
    }

    fn setup(body: &str) -> (tempfile::TempDir, DetachedStep) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let script = tmp.path().join("step.sh");
        std::fs::write(&script, format!("rm -f -- \"$0\"\n{body}")).expect("script");
        let step = DetachedStep {
            dir: tmp.path().join("steps/one").to_string_lossy().into_owned(),
            script: script.to_string_lossy().into_owned(),
        };
        (tmp, step)
    }

    /// Waits (bounded) until `path` exists.
    fn wait_for(path: &std::path::Path) {
        for _ in 0..100 {
            if path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{} never appeared", path.display());
    }

    #[test]
    fn the_follower_exits_only_with_the_codes_defined_here() {
        let program = follow_program();
        let (assigned, _) = program.split_once('\n').expect("the codes' line");
        for name in FOLLOW.split("$EXIT_").skip(1) {
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            assert!(
                assigned.contains(&format!("EXIT_{name}=")),
                "follow_step.sh uses EXIT_{name}, which follow_program does not set"
            );
        }
        for (at, _) in FOLLOW.match_indices("exit ") {
            let next = FOLLOW[at + 5..].chars().next();
            assert!(
                !next.is_some_and(|c| c.is_ascii_digit()),
                "follow_step.sh exits with a literal code: {}",
                &FOLLOW[at..(at + 12).min(FOLLOW.len())]
            );
        }
        assert_eq!(
            EXIT_CANCELLED,
            super::super::cancel::StopSignal::Interrupt.exit_code()
        );
    }

    #[test]
    fn output_keeps_the_steps_order_and_a_reattach_resumes_at_the_offset() {
        let (_t, step) = setup("echo out-1; echo err-2 >&2; echo out-3; exit 7\n");
        let first = follow(&step, 0);
        assert_eq!(first.status.code(), Some(7));
        assert_eq!(
            String::from_utf8_lossy(&first.stdout),
            "out-1\nerr-2\nout-3\n"
        );
        assert_eq!(String::from_utf8_lossy(&first.stderr), "");
        // A reattach (or a re-sent first exec) never starts the step again, and prints only
        // what lies past the offset.
        let again = follow(&step, 6);
        assert_eq!(again.status.code(), Some(7));
        assert_eq!(String::from_utf8_lossy(&again.stdout), "err-2\nout-3\n");
    }

    #[test]
    fn a_step_outlives_its_follower_and_runs_exactly_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let count = tmp.path().join("count");
        let (_t, step) = setup(&format!(
            "echo ran >> {c}\necho before\nsleep 1\necho after\nexit 3\n",
            c = count.display()
        ));
        let argv = step.follow_command(0);
        let mut first = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("sh runs");
        std::thread::sleep(Duration::from_millis(300));
        first.kill().expect("follower killed");
        let _ = first.wait();
        let out = follow(&step, 0);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
        assert_eq!(std::fs::read_to_string(&count).expect("count"), "ran\n");
    }

    #[test]
    fn a_missing_start_script_is_reported_as_not_started() {
        let (_t, step) = setup("echo never\n");
        std::fs::remove_file(&step.script).expect("rm");
        let out = follow(&step, 0);
        assert_eq!(out.status.code(), Some(EXIT_NOT_STARTED));
        assert!(String::from_utf8_lossy(&out.stderr).contains("the step did not start"));
    }

    #[test]
    fn a_tampered_status_or_offset_is_refused() {
        let (_t, step) = setup("exit 0\n");
        assert_eq!(follow(&step, 0).status.code(), Some(0));
        std::fs::write(format!("{}/status", step.dir), "../../etc\n").expect("write");
        let out = follow(&step, 0);
        assert_eq!(out.status.code(), Some(1));
        let argv: Vec<String> = step
            .follow_command(0)
            .into_iter()
            .enumerate()
            .map(|(i, a)| if i == 6 { "1;id".into() } else { a })
            .collect();
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .output()
            .expect("sh");
        assert_eq!(out.status.code(), Some(2));
    }

    #[test]
    fn a_stop_ends_the_step_and_the_children_that_ignore_term() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ticks = tmp.path().join("ticks");
        // The step and its background child ignore TERM: only KILL ends them.
        let (_t, step) = setup(&format!(
            "trap '' TERM\n(trap '' TERM; while :; do echo t >> {m}; sleep 0.1; done) &\nsleep 100\n",
            m = ticks.display()
        ));
        let argv = step.follow_command(0);
        let mut follower = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh runs");
        wait_for(&ticks);
        let out = stop_now(&step, 1);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let Some(Stopped::Ended { processes, killed }) = Stopped::parse(&line) else {
            panic!("unexpected report {line:?}");
        };
        assert!(processes >= 3 && killed >= 2, "{line}");
        let before = std::fs::read_to_string(&ticks).expect("ticks").len();
        std::thread::sleep(Duration::from_millis(400));
        let after = std::fs::read_to_string(&ticks).expect("ticks").len();
        assert_eq!(before, after, "the background child still writes");
        // The follower notices and ends, reporting the cancel.
        let status = follower.wait().expect("follower ends");
        assert_eq!(status.code(), Some(130));
        // Stopping again finds nothing left.
        let again = stop_now(&step, 1);
        assert_eq!(
            Stopped::parse(&String::from_utf8_lossy(&again.stdout)),
            Some(Stopped::AlreadyEnded)
        );
    }

    #[test]
    fn a_step_that_honours_term_needs_no_kill() {
        let (tmp, step) = setup("sleep 100\n");
        let argv = step.follow_command(0);
        let mut follower = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("sh runs");
        wait_for(&tmp.path().join("steps/one/pid"));
        let out = stop_now(&step, 3);
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            matches!(
                Stopped::parse(&line),
                Some(Stopped::Ended { killed: 0, .. })
            ),
            "{line}"
        );
        let _ = follower.wait();
    }

    #[test]
    fn a_stop_before_the_start_means_it_never_starts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ran = tmp.path().join("ran");
        let (_t, step) = setup(&format!("touch {}\n", ran.display()));
        let out = stop_now(&step, 1);
        assert_eq!(
            Stopped::parse(&String::from_utf8_lossy(&out.stdout)),
            Some(Stopped::NotStarted)
        );
        let late = follow(&step, 0);
        assert_eq!(late.status.code(), Some(130));
        assert!(!ran.exists(), "a start after the cancel ran the step");
    }

    #[test]
    fn stop_reports_are_read_strictly() {
        assert_eq!(
            Stopped::parse("ended 3 1"),
            Some(Stopped::Ended {
                processes: 3,
                killed: 1
            })
        );
        for bad in ["", "ended", "ended x 1", "survived 12", "gone-ish"] {
            assert_eq!(Stopped::parse(bad), None, "{bad}");
        }
    }
}
