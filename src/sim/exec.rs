//! `pods/exec` over WebSocket (`v5`/`v4.channel.k8s.io`): stream channels, the final Status, v5 stdin close.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::api::Query;
use super::faults::CutStream;
use super::kubelet::{self, ExecTarget, Isolation, ProcessSpec};
use super::logs::pick_container;
use super::status::ApiError;
use super::store::Key;
use super::{SimState, rbac};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;
/// After the process exits, how long output may keep draining (from escaped background children).
const DRAIN: Duration = Duration::from_secs(2);

struct Request {
    key: Key,
    container: String,
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
}

fn check(
    sim: &SimState,
    ns: &str,
    name: &str,
    method: &Method,
    q: &Query,
) -> Result<Request, ApiError> {
    let verbs: &[&str] = if *method == Method::GET {
        &["get", "create"]
    } else {
        &["create"]
    };
    for verb in verbs {
        let attrs = rbac::Attributes {
            verb,
            group: "",
            resource: "pods",
            subresource: Some("exec"),
            namespace: Some(ns),
            name: Some(name),
        };
        rbac::authorize(
            sim.cfg.rbac.as_deref(),
            &sim.cfg.namespace,
            &sim.user,
            &attrs,
        )?;
    }
    let key = Key::new("pods", ns, name);
    let pod = sim
        .store
        .get(&key)
        .ok_or_else(|| ApiError::not_found("pods", "", name))?;
    let container = pick_container(&pod, q.get("container"))?;
    // No phase check: a completed pod's containers are simply not running (the kubelet's
    // `container not found`); "cannot exec into a container in a completed pod" is kubectl's.
    let command = q.all("command");
    if command.is_empty() {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    if q.flag("tty") {
        return Err(ApiError::bad_request(
            "tty is not supported by the arc-hook simulator",
        ));
    }
    Ok(Request {
        key,
        container,
        command,
        stdin: q.flag("stdin"),
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
    })
}

pub(crate) async fn handler(
    State(sim): State<Arc<SimState>>,
    Path((ns, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let q = Query::parse(&uri);
    sim.record_request(format!(
        "{} pods/exec {name} {}",
        if method == Method::POST {
            "create"
        } else {
            "get"
        },
        q.get("container").unwrap_or_default()
    ));
    let req = match check(&sim, &ns, &name, &method, &q) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let ExecTarget::Ready { rt, namespaces } = kubelet::exec_target(&sim, &req.key, &req.container)
    else {
        return ApiError::bad_request(format!("container not found (\"{}\")", req.container))
            .into_response();
    };
    let Ok(ws) = ws else {
        return ApiError::bad_request("Upgrade request required: the arc-hook simulator serves exec over WebSocket (v5.channel.k8s.io, v4.channel.k8s.io) only").into_response();
    };
    let offered: &[&'static str] = if sim.cfg.exec_v4_only {
        &["v4.channel.k8s.io"]
    } else {
        &["v5.channel.k8s.io", "v4.channel.k8s.io"]
    };
    let ws = ws.protocols(offered.iter().copied());
    let Some(protocol) = ws
        .selected_protocol()
        .and_then(|p| p.to_str().ok())
        .map(str::to_string)
    else {
        return ApiError::bad_request("none of the requested subprotocols is supported; use v5.channel.k8s.io or v4.channel.k8s.io").into_response();
    };
    let spec = ProcessSpec {
        argv: req.command.clone(),
        ..rt.process.clone()
    };
    let join = match (namespaces, rt.pid) {
        (true, Some(pid)) => Some(pid),
        _ => None,
    };
    ws.on_upgrade(move |socket| async move {
        let v5 = protocol.starts_with("v5");
        run(sim, socket, req, spec, join, v5).await;
    })
}

fn status_success() -> Value {
    json!({"metadata": {}, "status": "Success"})
}

fn status_exit(command: &[String], code: i64) -> Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The Status of an exec whose process could not be started (binary missing or not
/// executable), as containerd and the kubelet report it: `InternalError`, no `ExitCode` cause.
fn status_start_failed(argv: &[String], e: &std::io::Error) -> Value {
    let program = argv.first().map(String::as_str).unwrap_or("");
    let what = match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("exec: \"{program}\": executable file not found in $PATH")
        }
        std::io::ErrorKind::PermissionDenied => format!("exec: \"{program}\": permission denied"),
        _ => e.to_string(),
    };
    let err = format!(
        "error executing command in container: failed to exec in container: failed to start exec \"{id}\": OCI runtime exec failed: exec failed: unable to start container process: {what}: unknown",
        id = super::meta::new_uid().replace('-', "")
    );
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {err}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": err}]},
        "code": 500,
    })
}

/// A close frame with code 1000: client-go treats a close without a code as an error.
fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

/// Output from the process to the socket writer.
enum Out {
    Data(u8, Vec<u8>),
}

async fn run(
    sim: Arc<SimState>,
    socket: WebSocket,
    req: Request,
    spec: ProcessSpec,
    join: Option<i32>,
    v5: bool,
) {
    let (mut sink, mut source) = socket.split();
    let iso = match join {
        Some(pid) => Isolation::Join { container_pid: pid },
        None => Isolation::None,
    };
    let stdin_cfg = if req.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let out_cfg = if req.stdout {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let err_cfg = if req.stderr {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = match kubelet::process_spawn(&spec, iso, stdin_cfg, out_cfg, err_cfg) {
        Ok(c) => c,
        Err(e) => {
            // containerd's answer when the runtime cannot start the process: no exit code, an
            // internal error (kubelet's ServeExec wraps it; containerd's execInternal words it).
            let status = status_start_failed(&spec.argv, &e);
            let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
            let _ = sink.send(normal_close()).await;
            return;
        }
    };
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    kubelet::track_exec(&sim, &req.key, pgid, true);

    let (out_tx, mut out_rx) = mpsc::channel::<Out>(64);
    let pumps: Vec<tokio::task::JoinHandle<()>> = [
        (
            STDOUT,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
        (
            STDERR,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ),
    ]
    .into_iter()
    .filter_map(|(ch, s)| s.map(|s| (ch, s)))
    .map(|(ch, mut s)| {
        let tx = out_tx.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Out::Data(ch, buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    })
    .collect();
    drop(out_tx);

    // Client -> process: stdin frames, v5 close signal; a closed socket kills the process.
    let mut stdin = child.stdin.take();
    let (gone_tx, mut gone_rx) = mpsc::channel::<()>(1);
    // When the client last sent a frame (pings included), for the idle-timeout fault.
    let started = tokio::time::Instant::now();
    let last_rx = Arc::new(AtomicU64::new(0));
    let last_rx_w = last_rx.clone();
    let reader = tokio::spawn(async move {
        while let Some(msg) = source.next().await {
            last_rx_w.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let Ok(msg) = msg else { break };
            let data = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            match data.first() {
                Some(&STDIN) => {
                    if let Some(s) = stdin.as_mut()
                        && s.write_all(&data[1..]).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => {
                    if let Some(mut s) = stdin.take() {
                        let _ = s.shutdown().await;
                    }
                }
                _ => {}
            }
        }
        drop(stdin);
        let _ = gone_tx.send(()).await;
    });

    let drop_after = sim.faults.drop_after_bytes(CutStream::Exec);
    let idle_timeout = sim.faults.exec_idle_timeout();
    let mut last_tx = started;
    let mut sent = 0usize;
    let mut exit: Option<i64> = None;
    let mut outputs_done = false;
    let mut client_gone = false;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    'cut: {
        loop {
            tokio::select! {
                out = out_rx.recv(), if !outputs_done => match out {
                    Some(Out::Data(ch, mut data)) => {
                        let cut = drop_after.is_some_and(|n| sent + data.len() >= n)
                            && sim.faults.take_drop(CutStream::Exec);
                        if let Some(n) = drop_after.filter(|_| cut) {
                            data.truncate(n.saturating_sub(sent));
                        }
                        if sink.send(frame(ch, &data)).await.is_err() {
                            client_gone = true;
                            kubelet::signal_group(pgid, Signal::SIGKILL);
                            continue;
                        }
                        sent += data.len();
                        last_tx = tokio::time::Instant::now();
                        if cut {
                            tracing::debug!(sent, "injected fault: dropping exec stream");
                            break 'cut;
                        }
                    }
                    None => {
                        outputs_done = true;
                        if exit.is_some() {
                            break;
                        }
                    }
                },
                status = child.wait(), if exit.is_none() => {
                    exit = Some(status.map(kubelet::exit_code).unwrap_or(128));
                    // Leftover background processes of the exec session die with it.
                    kubelet::signal_group(pgid, Signal::SIGKILL);
                    if outputs_done || client_gone {
                        break;
                    }
                    drain_deadline = Some(tokio::time::Instant::now() + DRAIN);
                },
                _ = gone_rx.recv(), if !client_gone => {
                    // The client went away: nobody will read the result.
                    client_gone = true;
                    kubelet::signal_group(pgid, Signal::SIGKILL);
                    if exit.is_some() {
                        break;
                    }
                },
                _ = sleep_until(drain_deadline) => break,
                _ = sleep_until(idle_timeout.map(|t| last_tx.max(started + Duration::from_millis(last_rx.load(Ordering::Relaxed))) + t)), if exit.is_none() => {
                    let rx = started + Duration::from_millis(last_rx.load(Ordering::Relaxed));
                    if idle_timeout.is_some_and(|t| last_tx.max(rx).elapsed() >= t) {
                        tracing::debug!("injected fault: exec stream idle, closing it");
                        break 'cut;
                    }
                },
            }
        }
        kubelet::track_exec(&sim, &req.key, pgid, false);
        for p in pumps {
            p.abort();
        }
        let code = match exit {
            Some(c) => c,
            None => child.wait().await.map(kubelet::exit_code).unwrap_or(128),
        };
        if !client_gone {
            let status = if code == 0 {
                status_success()
            } else {
                status_exit(&req.command, code)
            };
            let _ = sink.send(frame(ERROR, status.to_string().as_bytes())).await;
            let _ = sink.send(normal_close()).await;
        }
        reader.abort();
        return;
    }
    // A cut: the socket closes without a close frame or status, as when a proxy drops it.
    kubelet::signal_group(pgid, Signal::SIGKILL);
    kubelet::track_exec(&sim, &req.key, pgid, false);
    reader.abort();
    drop(sink);
    pumps.iter().for_each(|p| p.abort());
    let _ = child.wait().await;
}

async fn sleep_until(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
