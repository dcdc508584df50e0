//! A fake container registry on 127.0.0.1 for tests: manifest HEAD requests behind a bearer-token or basic challenge, tags pushed by the test or by a builder stand-in writing a file.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head the fake reads.
const MAX_HEAD: usize = 16 * 1024;

/// How the fake registry asks for credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeAuth {
    /// Anyone may read.
    Anonymous,
    /// `401` with a `Bearer realm=<this registry>/token` challenge; the token endpoint wants
    /// these credentials as basic auth.
    Bearer { username: String, password: String },
    /// `401` with a `Basic` challenge; manifests want these credentials as basic auth.
    Basic { username: String, password: String },
}

/// One request the fake registry received (the credentials as sent, for assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub authorization: Option<String>,
    pub accept: Option<String>,
}

#[derive(Debug)]
struct State {
    auth: FakeAuth,
    tags: HashSet<String>,
    pushed_dir: Option<PathBuf>,
    fail_status: Option<u16>,
    tokens: Vec<String>,
    requests: Vec<RecordedRequest>,
}

/// The running fake; stops when dropped.
pub struct FakeRegistry {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The file name a builder stand-in writes into the pushed directory for `repository:tag`.
pub(crate) fn pushed_file_name(repository: &str, tag: &str) -> String {
    format!("{repository}:{tag}").replace(['/', ':'], "_")
}

/// The digest the fake answers for `repository:tag`.
pub fn fake_digest(repository: &str, tag: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{repository}:{tag}").as_bytes(),
    );
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl FakeRegistry {
    /// Listens on 127.0.0.1 (a free port). A tag exists when [`FakeRegistry::push`] added it or
    /// when `pushed_dir` holds a file named [`pushed_file_name`].
    pub async fn start(auth: FakeAuth, pushed_dir: Option<PathBuf>) -> io::Result<FakeRegistry> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), auth, pushed_dir).await
    }

    /// [`FakeRegistry::start`] on another address, e.g. `::1` for an IPv6-only registry.
    pub(crate) async fn start_on(
        ip: std::net::IpAddr,
        auth: FakeAuth,
        pushed_dir: Option<PathBuf>,
    ) -> io::Result<FakeRegistry> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            auth,
            tags: HashSet::new(),
            pushed_dir,
            fail_status: None,
            tokens: Vec::new(),
            requests: Vec::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, addr, state).await;
                });
            }
        });
        Ok(FakeRegistry { addr, state, task })
    }

    /// `127.0.0.1:<port>` (`[::1]:<port>`), the registry host of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Makes `repository:tag` exist.
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn push(&self, repository: &str, tag: &str) {
        self.lock().tags.insert(format!("{repository}:{tag}"));
    }

    /// Answers every manifest request with this status (a registry outage), or normally.
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn fail_with(&self, status: Option<u16>) {
        self.lock().fail_status = status;
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn basic(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
    )
}

async fn serve(
    mut stream: TcpStream,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
) -> io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > MAX_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("").to_string();
    let target = request_line.next().unwrap_or("").to_string();
    let header = |name: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let recorded = RecordedRequest {
        method: method.clone(),
        target: target.clone(),
        authorization: header("authorization"),
        accept: header("accept"),
    };
    let (status, headers, body) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.push(recorded.clone());
        answer(&mut s, addr, &recorded)
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Error",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    if method != "HEAD" {
        out.push_str(&body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

fn answer(
    s: &mut State,
    addr: SocketAddr,
    req: &RecordedRequest,
) -> (u16, Vec<(String, String)>, String) {
    let path = req.target.split('?').next().unwrap_or("");
    if path == "/token" {
        let FakeAuth::Bearer { username, password } = &s.auth else {
            return (404, vec![], String::new());
        };
        if req.authorization.as_deref() != Some(basic(username, password).as_str()) {
            return (
                401,
                vec![],
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}".into(),
            );
        }
        let token = format!("fake-token-{}", s.tokens.len() + 1);
        s.tokens.push(token.clone());
        return (
            200,
            vec![("Content-Type".into(), "application/json".into())],
            format!("{{\"token\":\"{token}\",\"expires_in\":300}}"),
        );
    }
    let Some((repository, tag)) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.rsplit_once("/manifests/"))
    else {
        return (404, vec![], String::new());
    };
    let authorized = match &s.auth {
        FakeAuth::Anonymous => true,
        FakeAuth::Basic { username, password } => {
            req.authorization.as_deref() == Some(basic(username, password).as_str())
        }
        FakeAuth::Bearer { .. } => req
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| s.tokens.iter().any(|k| k == t)),
    };
    if !authorized {
        let challenge = match &s.auth {
            FakeAuth::Basic { .. } => "Basic realm=\"fake-registry\"".to_string(),
            _ => format!(
                "Bearer realm=\"http://{addr}/token\",service=\"fake-registry\",scope=\"repository:{repository}:pull\""
            ),
        };
        return (
            401,
            vec![("WWW-Authenticate".into(), challenge)],
            String::new(),
        );
    }
    if let Some(status) = s.fail_status {
        return (status, vec![], String::new());
    }
    let pushed = s.tags.contains(&format!("{repository}:{tag}"))
        || s.pushed_dir
            .as_ref()
            .is_some_and(|d| d.join(pushed_file_name(repository, tag)).exists());
    if pushed {
        (
            200,
            vec![
                (
                    "Content-Type".into(),
                    "application/vnd.oci.image.manifest.v1+json".into(),
                ),
                ("Docker-Content-Digest".into(), fake_digest(repository, tag)),
            ],
            String::new(),
        )
    } else {
        (404, vec![], String::new())
    }
}
