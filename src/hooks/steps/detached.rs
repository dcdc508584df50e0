//! Script steps run detached from the exec connection: started once (a marker decides), output to per-step logs in the pod, followed live and re-followed after a broken stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;

use crate::k8s::Kube;
use crate::k8s::exec::{ExecError, ExecTarget, exec};
use crate::k8s::retry::backoff;

/// Directory (in the pod) under the hook's private `_temp/_arc_hook` holding one directory per step:
/// `out` and `err` (the step's output), `pid`, `status` (its exit code, written once it ended).
pub const STEPS_DIR_IN_POD: &str = "/__w/_temp/_arc_hook/steps";

/// How long reattaching may keep failing (no exec stream could be opened) before the hook gives up.
pub const REATTACH_WINDOW: Duration = Duration::from_secs(600);

/// Exit code when the hook lost the pod for [`REATTACH_WINDOW`]: the step's result is unknown and
/// it may still be running (EX_TEMPFAIL).
pub const EXIT_RESULT_UNKNOWN: i32 = 75;

/// Exit code when the step provably never started: no start marker, and its start script is gone.
pub const EXIT_NOT_STARTED: i32 = 76;

/// The program every exec of a step runs (`sh -c FOLLOW arc-hook-step DIR SCRIPT OUT_OFFSET ERR_OFFSET`).
///
/// `mkdir DIR` is the start marker: atomic, so of all execs that may reach the pod for one step
/// (the first, a re-sent one whose first response was lost, reattaches) exactly one starts it.
/// The step runs in its own session (`setsid`, when the image has it) with its output in files,
/// so it outlives the exec that started it. Every exec then prints the logs from the offsets the
/// hook already printed, until the status file exists, and exits with the step's code (looking
/// every 20 ms at first, where `sleep` takes fractions, so a short step costs no dead wait; then
/// every 0.2 s and 1 s while it prints nothing). Reads
/// are bounded (`head -c`) and only regular files are read, so a job that tampers with these
/// files can change its own result, never make the follower read elsewhere or block.
const FOLLOW: &str = r#"d=$1 s=$2 o=$3 e=$4
case "$o.$e" in *[!0-9.]*|.*|*.) echo "arc-hook: invalid log offsets" >&2; exit 2;; esac
reg() { [ -f "$1" ] && [ ! -L "$1" ]; }
size() { if reg "$1"; then wc -c <"$1" | tr -d ' '; else echo 0; fi; }
if mkdir -p -- "${d%/*}" 2>/dev/null && mkdir -- "$d" 2>/dev/null; then
  for x in "${d%/*}"/*; do [ "$x" != "$d" ] && [ -f "$x/status" ] && rm -rf -- "$x"; done
  if [ -f "$s" ]; then
    : >"$d/out"; : >"$d/err"
    S=; command -v setsid >/dev/null 2>&1 && S=setsid
    $S sh -c 'echo $$ >"$1/pid"; sh "$2" >>"$1/out" 2>>"$1/err" </dev/null; c=$?; echo $c >"$1/status.new"; mv -f "$1/status.new" "$1/status"' arc-hook-step "$d" "$s" </dev/null >/dev/null 2>&1 &
    echo $! >"$d/pid"
  else
    echo nostart >"$d/status"
  fi
elif [ ! -d "$d" ]; then
  echo "arc-hook: cannot create the step's directory $d" >&2; exit 2
fi
F=; sleep 0.001 2>/dev/null && F=1
idle=0 waited=0
while :; do
  if [ ! -d "$d" ] || [ -L "$d" ] || [ -L "${d%/*}" ]; then
    echo "arc-hook: the step's directory $d was removed or replaced (by the step itself?); its result is lost" >&2; exit 1
  fi
  fin=; reg "$d/status" && fin=1
  got=
  z=$(size "$d/out"); if [ "$z" -gt "$o" ]; then tail -c +$((o+1)) "$d/out" | head -c $((z-o)); o=$z; got=1; fi
  z=$(size "$d/err"); if [ "$z" -gt "$e" ]; then tail -c +$((e+1)) "$d/err" | head -c $((z-e)) >&2; e=$z; got=1; fi
  if [ -n "$fin" ]; then
    c=$(head -c 8 "$d/status")
    case "$c" in
      nostart) echo "arc-hook: the step did not start: its start script $s is missing from the pod" >&2; exit 76;;
      ''|*[!0-9]*) echo "arc-hook: the step's status file holds no exit code" >&2; exit 1;;
    esac
    [ "$c" -gt 255 ] && c=255
    exit "$c"
  fi
  if [ -n "$got" ]; then idle=0; else idle=$((idle+1)); fi
  p=$(head -c 12 "$d/pid" 2>/dev/null)
  case "$p" in
    ''|*[!0-9]*) waited=$((waited+1))
      if [ "$waited" -gt 600 ]; then echo "arc-hook: the step's start was interrupted before it ran" >&2; exit 76; fi;;
    *) if ! kill -0 "$p" 2>/dev/null && ! reg "$d/status"; then
         sleep 1; reg "$d/status" && continue
         echo "arc-hook: the step stopped without recording an exit code (killed, or its status file was removed)" >&2; exit 1
       fi;;
  esac
  if [ -z "$F" ]; then sleep 1
  elif [ "$idle" -lt 5 ]; then sleep 0.02
  elif [ "$idle" -lt 20 ]; then sleep 0.2
  else sleep 1; fi
done
"#;

/// Where one step lives in the pod.
#[derive(Debug, Clone)]
pub struct DetachedStep {
    /// The step's directory (its existence is the start marker).
    pub dir: String,
    /// The start script the first exec runs (it removes itself when it starts).
    pub script: String,
}

impl DetachedStep {
    /// The step named `id` whose start script is `script` (both paths in the pod).
    pub fn new(id: &str, script: String) -> DetachedStep {
        DetachedStep {
            dir: format!("{STEPS_DIR_IN_POD}/{id}"),
            script,
        }
    }

    /// The exec command that starts the step unless its marker exists, then prints its output
    /// from the given offsets and exits with its code.
    pub fn follow_command(&self, out_offset: u64, err_offset: u64) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            FOLLOW.into(),
            "arc-hook-step".into(),
            self.dir.clone(),
            self.script.clone(),
            out_offset.to_string(),
            err_offset.to_string(),
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
/// stream breaks; every byte of output reaches `out`/`err` once, in order.
///
/// A broken stream (the exec was open) resets the window; failures to open one count against
/// [`REATTACH_WINDOW`], after which the result is [`ExecError::Lost`]. A pod that is gone or
/// failed ends the attempts at once with the pod's story.
pub async fn run<O, E>(
    kube: &Kube,
    target: ExecTarget<'_>,
    step: &DetachedStep,
    out: O,
    err: E,
) -> Result<i32, ExecError>
where
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let mut out = Counting {
        inner: out,
        written: 0,
    };
    let mut err = Counting {
        inner: err,
        written: 0,
    };
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut attempt = 0u32;
    let mut reattaches = 0u32;
    loop {
        let command = step.follow_command(out.written, err.written);
        let result = exec(
            kube,
            target,
            &command,
            None::<tokio::io::Empty>,
            &mut out,
            &mut err,
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
        if matches!(e, ExecError::Broken { .. }) {
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
                message: e.to_string(),
            });
        }
        attempt += 1;
        reattaches += 1;
        tracing::debug!(attempt, error = %e, "step stream lost, reattaching");
        if attempt == 1 {
            eprintln!("arc-hook: lost the step's output stream ({e}); reattaching");
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn follow(step: &DetachedStep, o: u64, e: u64) -> std::process::Output {
        let argv = step.follow_command(o, e);
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

    #[test]
    fn a_step_runs_once_and_a_reattach_resumes_at_the_offset() {
        let (_t, step) = setup("echo one; echo err-one >&2; echo two; exit 7\n");
        let first = follow(&step, 0, 0);
        assert_eq!(first.status.code(), Some(7));
        assert_eq!(String::from_utf8_lossy(&first.stdout), "one\ntwo\n");
        assert_eq!(String::from_utf8_lossy(&first.stderr), "err-one\n");
        // A reattach (or a re-sent first exec) never starts the step again, and prints only
        // what lies past the offsets.
        let again = follow(&step, 4, 8);
        assert_eq!(again.status.code(), Some(7));
        assert_eq!(String::from_utf8_lossy(&again.stdout), "two\n");
        assert_eq!(String::from_utf8_lossy(&again.stderr), "");
    }

    #[test]
    fn a_step_outlives_its_follower_and_runs_exactly_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let count = tmp.path().join("count");
        let (_t, step) = setup(&format!(
            "echo ran >> {c}\necho before\nsleep 1\necho after\nexit 3\n",
            c = count.display()
        ));
        let argv = step.follow_command(0, 0);
        let mut first = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("sh runs");
        std::thread::sleep(Duration::from_millis(300));
        first.kill().expect("follower killed");
        let _ = first.wait();
        let out = follow(&step, 0, 0);
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
        assert_eq!(std::fs::read_to_string(&count).expect("count"), "ran\n");
    }

    #[test]
    fn a_missing_start_script_is_reported_as_not_started() {
        let (_t, step) = setup("echo never\n");
        std::fs::remove_file(&step.script).expect("rm");
        let out = follow(&step, 0, 0);
        assert_eq!(out.status.code(), Some(EXIT_NOT_STARTED));
        assert!(String::from_utf8_lossy(&out.stderr).contains("the step did not start"));
    }

    #[test]
    fn a_tampered_status_or_offset_is_refused() {
        let (_t, step) = setup("exit 0\n");
        assert_eq!(follow(&step, 0, 0).status.code(), Some(0));
        std::fs::write(format!("{}/status", step.dir), "../../etc\n").expect("write");
        let out = follow(&step, 0, 0);
        assert_eq!(out.status.code(), Some(1));
        let argv: Vec<String> = step
            .follow_command(0, 0)
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
}
