//! Running a command in a pod's container over the exec WebSocket: output streamed as it arrives, the exit code from the status channel.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::AttachParams;
use kube::client::UpgradeConnectionError;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Kube;
use super::retry::backoff;

/// Attempts at opening the exec stream. A refused upgrade ran nothing; an upgrade whose answer
/// was lost may have started the command, so commands whose effect must happen once (steps) are
/// written to be re-sent safely (see `hooks::detached`).
const START_ATTEMPTS: u32 = 6;
/// How long output already received may still be drained once the stream has ended.
const OUTPUT_DRAIN: Duration = Duration::from_millis(500);
/// Buffer between the WebSocket task and our readers.
const PIPE_BUF: usize = 256 * 1024;

/// Why an exec did not produce an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {what} in pod {pod}: {message}")]
    Start {
        what: String,
        pod: String,
        message: String,
        /// No attempt reached the API server (every connection failed): nothing ran in the pod.
        unreachable: bool,
    },
    #[error(
        "lost the connection to pod {pod} while {what} was running ({message}); its result is unknown"
    )]
    Broken {
        what: String,
        pod: String,
        message: String,
    },
    /// The container runtime could not start the command's binary (missing or not executable):
    /// the exec has no exit code, only the runtime's reason.
    #[error(
        "{what} in pod {pod} could not start `{program}`: {message} (the container's image must provide it)"
    )]
    NotStarted {
        what: String,
        pod: String,
        program: String,
        message: String,
    },
    /// No exec stream could be reopened for `after`: the command may still be running. `last`
    /// is the last attempt's failure, kept typed (it is shown inside the sentence, so it is not
    /// a `#[source]`: `{:#}` would print it twice).
    #[error(
        "lost pod {pod} for {}s while {what} was running ({last}); it may still be running there, and its result is unknown. cleanup_job deletes the pod, which stops it",
        after.as_secs()
    )]
    Lost {
        what: String,
        pod: String,
        after: Duration,
        last: Box<ExecError>,
    },
    #[error("{what} in pod {pod} failed: {message}")]
    Failed {
        what: String,
        pod: String,
        message: String,
    },
}

impl ExecError {
    /// Adds what is known about why (the pod's state) to the message (a lost command's: to
    /// its last failure's).
    pub(crate) fn with_cause(self, cause: &str) -> Self {
        match self {
            ExecError::Lost {
                what,
                pod,
                after,
                last,
            } => ExecError::Lost {
                what,
                pod,
                after,
                last: Box::new(last.with_cause(cause)),
            },
            mut other => {
                if let ExecError::Start { message, .. }
                | ExecError::Broken { message, .. }
                | ExecError::NotStarted { message, .. }
                | ExecError::Failed { message, .. } = &mut other
                {
                    message.push_str("; ");
                    message.push_str(cause);
                }
                other
            }
        }
    }
}

/// The exit code a final exec `Status` encodes: 0 on Success, the `ExitCode` cause on
/// NonZeroExitCode, `None` for any other failure (the command could not run).
pub(crate) fn exit_code(status: &Status) -> Option<i32> {
    if status.status.as_deref() == Some("Success") {
        return Some(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        return status
            .details
            .as_ref()
            .and_then(|d| {
                d.causes
                    .iter()
                    .flatten()
                    .find(|c| c.reason.as_deref() == Some("ExitCode"))
            })
            .and_then(|c| c.message.as_deref()?.trim().parse().ok());
    }
    None
}

async fn pump<R, W>(mut from: R, mut to: W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.flush().await?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        // Flush each chunk: a step's output must reach the job log as it happens.
        to.flush().await?;
        total += n as u64;
    }
}

async fn start(
    kube: &Kube,
    pod: &str,
    container: &str,
    command: &[String],
    stdin: bool,
    what: &str,
) -> Result<kube::api::AttachedProcess, ExecError> {
    let api: kube::Api<Pod> = kube.pods();
    let ap = AttachParams::default()
        .container(container)
        .stdin(stdin)
        .stdout(true)
        .stderr(true)
        .max_stdout_buf_size(PIPE_BUF)
        .max_stderr_buf_size(PIPE_BUF)
        .max_stdin_buf_size(PIPE_BUF);
    let mut attempt = 1;
    loop {
        let result = tokio::time::timeout(
            Duration::from_secs(30),
            api.exec(pod, command.to_vec(), &ap),
        )
        .await;
        let mut unreachable = false;
        let (retry, message) = match result {
            Ok(Ok(p)) => return Ok(p),
            Ok(Err(kube::Error::UpgradeConnection(UpgradeConnectionError::ProtocolSwitch(
                code,
            )))) => {
                let transient = code.as_u16() == 429 || code.is_server_error();
                let hint = match code.as_u16() {
                    404 => " (the pod or container does not exist)".to_string(),
                    403 => " (the service account may not create pods/exec)".to_string(),
                    400 => " (the container is not running)".to_string(),
                    _ => String::new(),
                };
                (transient, format!("the API server answered {code}{hint}"))
            }
            Ok(Err(kube::Error::Api(status))) => (
                status.code == 429 || status.code >= 500,
                status.message.clone(),
            ),
            // A failed connection by its own words (it names the server), not kube's `ServiceError: `.
            Ok(Err(e)) => {
                let cause = super::ApiCause(e);
                unreachable = cause.unreachable().is_some();
                (true, cause.message())
            }
            Err(_) => (true, "no answer within 30s".to_string()),
        };
        if !retry || attempt >= START_ATTEMPTS {
            return Err(ExecError::Start {
                what: what.into(),
                pod: pod.into(),
                message,
                unreachable,
            });
        }
        tracing::debug!(pod, attempt, %message, "exec did not start, retrying");
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

/// Where a command runs, and what to call it in errors ("the step", "tar").
#[derive(Debug, Clone, Copy)]
pub struct ExecTarget<'a> {
    pub pod: &'a str,
    pub container: &'a str,
    pub what: &'a str,
}

/// Runs `command` in the target container, feeding it `stdin` (then closing it) and copying its
/// stdout and stderr to `out` and `err` as they arrive. Returns the command's exit code.
pub(crate) async fn exec<I, O, E>(
    kube: &Kube,
    target: ExecTarget<'_>,
    command: &[String],
    stdin: Option<I>,
    out: O,
    err: E,
) -> Result<i32, ExecError>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
    E: AsyncWrite + Unpin,
{
    let ExecTarget {
        pod,
        container,
        what,
    } = target;
    let mut proc = start(kube, pod, container, command, stdin.is_some(), what).await?;
    let broken = |message: String| ExecError::Broken {
        what: what.into(),
        pod: pod.into(),
        message,
    };

    let stdin_task = match (stdin, proc.stdin()) {
        (Some(mut input), Some(mut writer)) => Some(tokio::spawn(async move {
            let r = tokio::io::copy(&mut input, &mut writer).await;
            // Closing stdin tells the command its input ended (v5 protocol close signal).
            let _ = writer.shutdown().await;
            r
        })),
        _ => None,
    };
    let status = proc.take_status().expect("status is taken once, here");
    let stdout = proc.stdout().expect("stdout was requested");
    let stderr = proc.stderr().expect("stderr was requested");
    let pumps = async { tokio::join!(pump(stdout, out), pump(stderr, err)) };
    tokio::pin!(pumps);
    tokio::pin!(status);
    // kube's stream task ends without closing our readers when the connection breaks, so once
    // it has ended without a status the output still buffered gets a short grace, never an
    // unbounded wait. With a status, the readers are closed and drained to the end.
    let mut final_status = None;
    let mut status_done = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let pumped = loop {
        tokio::select! {
            r = &mut pumps => break Some(r),
            s = &mut status, if !status_done => {
                status_done = true;
                if s.is_none() {
                    drain_deadline = Some(tokio::time::Instant::now() + OUTPUT_DRAIN);
                }
                final_status = s;
            }
            _ = tokio::time::sleep_until(drain_deadline.unwrap_or_else(tokio::time::Instant::now)), if drain_deadline.is_some() => break None,
        }
    };
    if let Some((o, e)) = pumped {
        o.map_err(|e| broken(format!("writing output: {e}")))?;
        e.map_err(|e| broken(format!("writing output: {e}")))?;
        if !status_done {
            final_status = status.await;
        }
    }
    let status = final_status;
    if let Some(t) = stdin_task {
        match t.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!("stdin copy ended early: {e}"),
            Err(e) => tracing::debug!("stdin task failed: {e}"),
        }
    }
    let joined = proc.join().await;
    let Some(status) = status else {
        let why = match joined {
            Err(e) => e.to_string(),
            Ok(()) => "the stream closed without an exit status".into(),
        };
        return Err(broken(why));
    };
    let message = status.message.as_deref().unwrap_or("");
    match exit_code(&status) {
        Some(code) => Ok(code),
        None if let Some(reason) = start_failure(message) => Err(ExecError::NotStarted {
            what: what.into(),
            pod: pod.into(),
            program: command.first().cloned().unwrap_or_default(),
            message: reason,
        }),
        None => Err(ExecError::Failed {
            what: what.into(),
            pod: pod.into(),
            message: if message.is_empty() {
                "no reason given".into()
            } else {
                message.to_string()
            },
        }),
    }
}

/// The runtime's reason when a failed exec never started its process: runc (under containerd
/// or CRI-O) says `... unable to start container process: exec: "sh": executable file not
/// found in $PATH: unknown`.
fn start_failure(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("unable to start container process: ")?;
    let rest = rest.strip_suffix(": unknown").unwrap_or(rest);
    // `exec: "sh": ` names the program, which the error already says.
    let reason = match rest
        .strip_prefix("exec: \"")
        .and_then(|r| r.split_once("\": "))
    {
        Some((_, reason)) => reason,
        None => rest,
    };
    Some(reason.to_string())
}

/// Runs `command` and collects its stdout (stderr goes to `err`); for short helper commands.
pub async fn exec_capture(
    kube: &Kube,
    target: ExecTarget<'_>,
    command: &[String],
) -> Result<(i32, Vec<u8>, Vec<u8>), ExecError> {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = exec(
        kube,
        target,
        command,
        None::<tokio::io::Empty>,
        &mut out,
        &mut err,
    )
    .await?;
    Ok((code, out, err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> Status {
        serde_json::from_value(v).expect("valid status")
    }

    #[test]
    fn a_process_that_never_started_is_told_apart() {
        let m = "Internal error occurred: error executing command in container: failed to exec in container: failed to start exec \"0a1b\": OCI runtime exec failed: exec failed: unable to start container process: exec: \"sh\": executable file not found in $PATH: unknown";
        assert_eq!(
            start_failure(m).as_deref(),
            Some("executable file not found in $PATH")
        );
        assert_eq!(
            start_failure("Internal error occurred: the node went away"),
            None
        );
    }

    #[test]
    fn a_lost_command_keeps_its_last_failure_typed_and_in_its_sentence() {
        let broken = ExecError::Broken {
            what: "the step".into(),
            pod: "p".into(),
            message: "connection reset".into(),
        };
        let lost = ExecError::Lost {
            what: "the step".into(),
            pod: "p".into(),
            after: Duration::from_secs(600),
            last: Box::new(broken),
        }
        .with_cause("pod p: pod Evicted");
        assert!(
            matches!(&lost, ExecError::Lost { last, .. } if matches!(**last, ExecError::Broken { .. }))
        );
        assert_eq!(
            format!("{:#}", anyhow::Error::from(lost)),
            "lost pod p for 600s while the step was running (lost the connection to pod p while the step was running (connection reset; pod p: pod Evicted); its result is unknown); it may still be running there, and its result is unknown. cleanup_job deletes the pod, which stops it"
        );
    }

    #[test]
    fn exit_codes_from_status() {
        assert_eq!(exit_code(&status(json!({"status": "Success"}))), Some(0));
        let three = status(json!({
            "status": "Failure", "reason": "NonZeroExitCode",
            "message": "command terminated with non-zero exit code: exit code 3",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }));
        assert_eq!(exit_code(&three), Some(3));
        assert_eq!(
            exit_code(&status(
                json!({"status": "Failure", "reason": "InternalError"})
            )),
            None
        );
    }
}
