//! A container as the kubelet models it: its API status, and the task collecting its output and exit.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::probes::{ProbeKind, ProbeSpec, ProbeState};
use super::{process, volumes};
use crate::sim::logs::LogBuffer;

/// After the main process exits, how long its output pipes may stay open (escaped children).
const PIPE_DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Init,
    App,
    Ephemeral,
}

impl Kind {
    pub(super) fn spec_list(self) -> &'static str {
        match self {
            Kind::Init => "initContainers",
            Kind::App => "containers",
            Kind::Ephemeral => "ephemeralContainers",
        }
    }
}

pub(super) struct Container {
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) spec: Value,
    pub(super) state: Value,
    pub(super) last_state: Value,
    pub(super) ready: bool,
    pub(super) started: bool,
    pub(super) restart_count: i64,
    pub(super) container_id: Option<String>,
    pub(super) pid: Option<i32>,
    pub(super) restart_at: Option<Instant>,
    pub(super) pulled: bool,
    /// Killed by the (simulated) OOM killer: the next exit is reported as OOMKilled.
    pub(super) oom_killed: bool,
    /// Exec startup and readiness probes (app containers only), and their counts in this run.
    pub(super) startup_probe: Option<ProbeSpec>,
    pub(super) readiness_probe: Option<ProbeSpec>,
    pub(super) startup_state: ProbeState,
    pub(super) readiness_state: ProbeState,
    /// This run's startup probe has not passed yet: the status says `started: false`.
    pub(super) startup_pending: bool,
}

impl Container {
    pub(super) fn new(kind: Kind, spec: &Value, waiting: &str) -> Container {
        Container {
            name: spec
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            kind,
            spec: spec.clone(),
            state: json!({"waiting": {"reason": waiting}}),
            last_state: json!({}),
            ready: false,
            started: false,
            restart_count: 0,
            container_id: None,
            pid: None,
            restart_at: None,
            pulled: false,
            oom_killed: false,
            startup_probe: (kind == Kind::App)
                .then(|| ProbeSpec::of(spec, ProbeKind::Startup))
                .flatten(),
            readiness_probe: (kind == Kind::App)
                .then(|| ProbeSpec::of(spec, ProbeKind::Readiness))
                .flatten(),
            startup_state: ProbeState::default(),
            readiness_state: ProbeState::default(),
            startup_pending: false,
        }
    }

    /// A (re)started run: unready until its probes pass, `started` once its startup probe has.
    pub(super) fn begin_run(&mut self) {
        self.started = true;
        self.startup_pending = self.startup_probe.is_some();
        self.ready = self.kind != Kind::Init
            && self.startup_probe.is_none()
            && self.readiness_probe.is_none();
        self.startup_state = ProbeState::default();
        self.readiness_state = ProbeState::default();
    }

    pub(super) fn image(&self) -> &str {
        self.spec.get("image").and_then(Value::as_str).unwrap_or("")
    }

    pub(super) fn field_path(&self) -> String {
        format!("spec.{}{{{}}}", self.kind.spec_list(), self.name)
    }

    pub(super) fn terminated(&self) -> Option<i64> {
        self.state
            .pointer("/terminated/exitCode")
            .and_then(Value::as_i64)
    }

    pub(super) fn status_json(&self) -> Value {
        let mut s = json!({
            "name": self.name,
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image(),
            "imageID": if self.pulled { image_id(self.image()) } else { String::new() },
            "started": self.started && !self.startup_pending,
        });
        if let Some(id) = &self.container_id {
            s["containerID"] = json!(id);
        }
        if self.kind == Kind::Ephemeral {
            s.as_object_mut().map(|m| m.remove("restartCount"));
        }
        s
    }
}

pub(super) fn hex64(seed: &str) -> String {
    (0..4)
        .map(|i| {
            let mut h = DefaultHasher::new();
            (seed, i).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

pub(super) fn image_id(image: &str) -> String {
    format!(
        "{}@sha256:{}",
        volumes::image_repository(image),
        hex64(image)
    )
}

/// A container process ended.
pub(super) struct Exit {
    pub(super) name: String,
    pub(super) pid: i32,
    pub(super) code: i64,
}

/// Copies a container's output into its log and reports its exit. Leftover processes in its
/// process group die with the main process, as in a container's PID namespace.
pub(super) fn monitor(
    mut child: tokio::process::Child,
    name: String,
    pid: i32,
    logs: Arc<LogBuffer>,
    exits: mpsc::UnboundedSender<Exit>,
) {
    let out = pump(child.stdout.take(), logs.clone());
    let err = pump(child.stderr.take(), logs.clone());
    tokio::spawn(async move {
        let code = match child.wait().await {
            Ok(status) => exit_code(status),
            Err(_) => 128,
        };
        process::signal_group(pid, Signal::SIGKILL);
        let _ = tokio::time::timeout(PIPE_DRAIN, futures::future::join(out, err)).await;
        logs.close();
        let _ = exits.send(Exit { name, pid, code });
    });
}

fn pump<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    stream: Option<R>,
    logs: Arc<LogBuffer>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(mut s) = stream else { return };
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => logs.append(&buf[..n]),
            }
        }
    })
}

/// A process's exit code as a container runtime reports it (128 + signal when killed).
pub(crate) fn exit_code(status: std::process::ExitStatus) -> i64 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => i64::from(c),
        (None, Some(sig)) => 128 + i64::from(sig),
        _ => 128,
    }
}
