//! Container logs: per-container buffers the kubelet fills, and the `pods/log` endpoint.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::watch;

use super::api::{Query, Target, key_of};
use super::faults::CutStream;
use super::status::{ApiError, streamed_response};
use super::{SimState, meta};

/// One chunk of output as it arrived, with its time (RFC 3339, nanoseconds).
#[derive(Debug, Clone)]
struct Chunk {
    at: String,
    bytes: Bytes,
}

#[derive(Default)]
struct Inner {
    chunks: Vec<Chunk>,
    closed: bool,
}

/// A container's output: appended as it arrives, readable while it grows.
impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer")
            .field("chunks", &self.lock().chunks.len())
            .finish()
    }
}

pub(crate) struct LogBuffer {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl LogBuffer {
    pub(crate) fn new() -> Arc<LogBuffer> {
        Arc::new(LogBuffer {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends output, split so each line (or trailing partial line) is its own chunk.
    pub(crate) fn append(&self, data: &[u8]) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let mut inner = self.lock();
        for piece in data.split_inclusive(|b| *b == b'\n') {
            inner.chunks.push(Chunk {
                at: at.clone(),
                bytes: Bytes::copy_from_slice(piece),
            });
        }
        drop(inner);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Marks the end of output (the container exited).
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.send_modify(|n| *n += 1);
    }

    fn snapshot(&self, from: usize) -> (Vec<Chunk>, bool) {
        let inner = self.lock();
        (
            inner
                .chunks
                .get(from..)
                .map(<[Chunk]>::to_vec)
                .unwrap_or_default(),
            inner.closed,
        )
    }

    /// Index of the first chunk written at or after `t` (RFC 3339 strings of one format sort by time).
    fn first_at_or_after(&self, t: &str) -> usize {
        let inner = self.lock();
        inner
            .chunks
            .iter()
            .position(|c| c.at.as_str() >= t)
            .unwrap_or(inner.chunks.len())
    }

    /// Index of the first chunk of the last `n` lines.
    fn tail_start(&self, n: usize) -> usize {
        let inner = self.lock();
        let mut lines = 0;
        for (i, c) in inner.chunks.iter().enumerate().rev() {
            if c.bytes.ends_with(b"\n") {
                lines += 1;
                if lines > n {
                    return i + 1;
                }
            }
        }
        0
    }
}

/// Renders chunks, prefixing each line start with its timestamp when asked.
struct Renderer {
    timestamps: bool,
    at_line_start: bool,
}

impl Renderer {
    fn render(&mut self, chunks: &[Chunk]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks {
            if !self.timestamps {
                out.extend_from_slice(&c.bytes);
                continue;
            }
            // Every line gets its timestamp, as the kubelet writes one CRI log entry per line.
            for piece in c.bytes.split_inclusive(|b| *b == b'\n') {
                if self.at_line_start {
                    out.extend_from_slice(c.at.as_bytes());
                    out.push(b' ');
                }
                out.extend_from_slice(piece);
                self.at_line_start = piece.ends_with(b"\n");
            }
        }
        out
    }
}

fn container_names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a log or exec request means, with the API server's errors.
pub(crate) fn pick_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = meta::name(pod);
    let main = container_names(pod, "containers");
    let init = container_names(pod, "initContainers");
    let eph = container_names(pod, "ephemeralContainers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if main.iter().chain(&init).chain(&eph).any(|x| x == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if main.len() == 1 => Ok(main[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            );
            if !init.is_empty() {
                msg.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// Why a container has no log yet, in the API server's words.
fn waiting_error(pod: &Value, container: &str) -> ApiError {
    let statuses = [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|f| {
        pod.pointer(&format!("/status/{f}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    })
    .collect::<Vec<_>>();
    let reason = statuses
        .iter()
        .find(|s| s["name"] == container)
        .and_then(|s| {
            s.pointer("/state/waiting/reason")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "ContainerCreating".to_string());
    let detail = match reason.as_str() {
        "ErrImagePull" | "ImagePullBackOff" => "trying and failing to pull image".to_string(),
        r => r.to_string(),
    };
    ApiError::bad_request(format!(
        "container \"{container}\" in pod \"{}\" is waiting to start: {detail}",
        meta::name(pod)
    ))
}

/// The `sinceSeconds`/`sinceTime` bound, in the chunks' timestamp format.
fn since(q: &Query) -> Option<String> {
    let t = match (
        q.get("sinceSeconds").and_then(|s| s.parse::<i64>().ok()),
        q.get("sinceTime"),
    ) {
        (Some(secs), _) => chrono::Utc::now() - chrono::Duration::seconds(secs),
        (None, Some(t)) => chrono::DateTime::parse_from_rfc3339(t)
            .ok()?
            .with_timezone(&chrono::Utc),
        _ => return None,
    };
    Some(t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

pub(crate) async fn handler(sim: &Arc<SimState>, t: &Target, q: &Query) -> Response {
    match serve(sim, t, q) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn serve(sim: &Arc<SimState>, t: &Target, q: &Query) -> Result<Response, ApiError> {
    let key = key_of(t);
    let pod = sim
        .store
        .get(&key)
        .ok_or_else(|| ApiError::not_found("pods", "", t.name.as_deref().unwrap_or("")))?;
    let container = pick_container(&pod, q.get("container"))?;
    let previous = q.flag("previous");
    let buf = match sim.kubelet.log_buffer(&key, &container, previous) {
        Some(b) => b,
        None if previous => {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{}\" not found",
                meta::name(&pod)
            )));
        }
        None => return Err(waiting_error(&pod, &container)),
    };
    let follow = q.flag("follow");
    let mut renderer = Renderer {
        timestamps: q.flag("timestamps"),
        at_line_start: true,
    };
    let since = since(q);
    let start = match q.get("tailLines").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => buf.tail_start(n),
        None => 0,
    }
    .max(since.map(|t| buf.first_at_or_after(&t)).unwrap_or(0));
    let limit = q.get("limitBytes").and_then(|n| n.parse::<usize>().ok());
    if !follow {
        let (chunks, _) = buf.snapshot(start);
        let mut out = renderer.render(&chunks);
        if let Some(l) = limit {
            out.truncate(l);
        }
        return Ok((
            http::StatusCode::OK,
            [(http::header::CONTENT_TYPE, "text/plain")],
            out,
        )
            .into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let drop_after = sim.faults.drop_after_bytes(CutStream::Log);
    let faults = sim.faults.clone();
    tokio::spawn(async move {
        let mut changed = buf.changed.subscribe();
        let mut next = start;
        let mut sent = 0usize;
        loop {
            changed.mark_unchanged();
            let (chunks, closed) = buf.snapshot(next);
            next += chunks.len();
            if !chunks.is_empty() {
                let mut out = renderer.render(&chunks);
                if let Some(l) = limit {
                    out.truncate(l.saturating_sub(sent));
                }
                // Fault: drop the connection mid-body, possibly inside a line, as a proxy would.
                if let Some(n) = drop_after
                    && sent + out.len() >= n
                    && faults.take_drop(CutStream::Log)
                {
                    out.truncate(n.saturating_sub(sent));
                    let _ = tx.send(Ok(Bytes::from(out))).await;
                    let _ = tx
                        .send(Err(std::io::Error::other("injected fault: log stream cut")))
                        .await;
                    return;
                }
                sent += out.len();
                if tx.send(Ok(Bytes::from(out))).await.is_err() || limit.is_some_and(|l| sent >= l)
                {
                    return;
                }
            }
            if closed {
                return;
            }
            // Fault: a proxy's idle timeout cuts a followed log with nothing to send for that long.
            let idle = faults.exec_idle_timeout();
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
                _ = async {
                    match idle {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let _ = tx.send(Err(std::io::Error::other("injected fault: idle stream cut"))).await;
                    return;
                }
            }
        }
    });
    Ok(streamed_response("text/plain", rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_and_timestamps() {
        let b = LogBuffer::new();
        b.append(b"one\ntwo\nthr");
        b.append(b"ee\n");
        let (chunks, _) = b.snapshot(b.tail_start(2));
        let mut r = Renderer {
            timestamps: false,
            at_line_start: true,
        };
        assert_eq!(r.render(&chunks), b"two\nthree\n");
        let (all, _) = b.snapshot(0);
        let mut r = Renderer {
            timestamps: true,
            at_line_start: true,
        };
        let text = String::from_utf8(r.render(&all)).expect("utf8");
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|l| l.contains("Z ")), "{text}");
    }

    #[test]
    fn container_choice_errors() {
        let pod = serde_json::json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        assert_eq!(pick_container(&pod, Some("a")).expect("a"), "a");
        let e = pick_container(&pod, None).expect_err("ambiguous");
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(
            pick_container(&pod, Some("z")).expect_err("bad").message,
            "container z is not valid for pod p"
        );
    }
}
