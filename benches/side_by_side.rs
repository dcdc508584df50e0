//! Upstream side by side: the same job through upstream's node hook (when `UPSTREAM_HOOK` names its
//! bundle) and through arc-hook in claim and copy mode, on one embedded simulator behind a
//! request-counting proxy; per command: API requests, exec sessions, wall, CPU and peak RSS.
//!
//! Run with `UPSTREAM_HOOK=/path/to/packages/k8s/dist/index.js cargo bench --bench side_by_side`
//! (without it, arc-hook alone). The job is `fixtures/jobs/build-and-test` (a job container, a
//! service, three script steps) plus one container step; every hook gets its own runner (pod, work
//! claim, `_work`), all in the same simulator. The hook processes are measured with `wait4`, so CPU
//! and peak RSS include whatever they spawn and reap (upstream's local `sh -c find`).
//! `SIDE_BY_SIDE_CLUSTER=1` plays the same job again on the conformance cluster
//! (`scripts/real-cluster.sh`, needs `target/conformance/conformance`), counting requests from the
//! real apiserver's audit log.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_hook::sim::{SimConfig, Simulator, kubeconfig_yaml};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use serde_json::{Value, json};

const JOB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/jobs/build-and-test");
/// Upper bound for one hook command; a command still running then is killed and reported.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// The request-counting proxy: a byte relay between the hooks and the simulator that reads the
/// request heads going by (it never changes a byte) and tunnels a connection once it upgrades.
mod proxy {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// One API request as the proxy saw it.
    #[derive(Debug, Clone)]
    pub struct Request {
        pub verb: String,
        /// `pods`, `pods/exec`, `selfsubjectaccessreviews`, `discovery`...
        pub resource: String,
        /// Method, path and query, for the detailed listing.
        pub line: String,
        /// A WebSocket upgrade to `exec` or `attach`.
        pub exec: bool,
    }

    pub type Log = Arc<Mutex<Vec<Request>>>;

    /// Listens on 127.0.0.1 (ephemeral port) and relays to `upstream`; returns the proxy's URL.
    pub async fn start(upstream: std::net::SocketAddr, log: Log) -> String {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy binds 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, log).await;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    async fn relay(client: TcpStream, server: TcpStream, log: Log) {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut server_rd, mut server_wr) = server.into_split();
        let down = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut server_rd, &mut client_wr).await;
            let _ = client_wr.shutdown().await;
        });
        let mut parser = Parser::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for r in parser.feed(&buf[..n]) {
                log.lock().expect("request log lock").push(r);
            }
            if server_wr.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_wr.shutdown().await;
        let _ = down.await;
    }

    /// Where the parser is in the client's byte stream.
    #[derive(Debug, Default)]
    enum State {
        #[default]
        Head,
        Body(u64),
        ChunkSize,
        ChunkData(u64),
        Trailer,
        /// Upgraded (or not HTTP): bytes only pass through.
        Tunnel,
    }

    /// Splits an HTTP/1.1 request stream into requests (Content-Length or chunked bodies).
    #[derive(Debug, Default)]
    pub struct Parser {
        state: State,
        pending: Vec<u8>,
    }

    impl Parser {
        pub fn feed(&mut self, bytes: &[u8]) -> Vec<Request> {
            let mut out = Vec::new();
            if matches!(self.state, State::Tunnel) {
                return out;
            }
            self.pending.extend_from_slice(bytes);
            loop {
                match self.state {
                    State::Tunnel => {
                        self.pending.clear();
                        return out;
                    }
                    State::Body(n) => {
                        let take = (n as usize).min(self.pending.len());
                        self.pending.drain(..take);
                        let left = n - take as u64;
                        if left > 0 {
                            self.state = State::Body(left);
                            return out;
                        }
                        self.state = State::Head;
                    }
                    State::ChunkData(n) => {
                        let take = (n as usize).min(self.pending.len());
                        self.pending.drain(..take);
                        let left = n - take as u64;
                        if left > 0 {
                            self.state = State::ChunkData(left);
                            return out;
                        }
                        self.state = State::ChunkSize;
                    }
                    State::ChunkSize | State::Trailer => {
                        let Some(end) = find(&self.pending, b"\r\n") else {
                            return out;
                        };
                        let line: Vec<u8> = self.pending.drain(..end + 2).collect();
                        let line = String::from_utf8_lossy(&line[..end]).to_string();
                        if matches!(self.state, State::Trailer) {
                            if line.is_empty() {
                                self.state = State::Head;
                            }
                            continue;
                        }
                        let size = line.split(';').next().unwrap_or("").trim();
                        match u64::from_str_radix(size, 16) {
                            Ok(0) => self.state = State::Trailer,
                            // The chunk and its CRLF.
                            Ok(n) => self.state = State::ChunkData(n + 2),
                            Err(_) => self.state = State::Tunnel,
                        }
                    }
                    State::Head => {
                        let Some(end) = find(&self.pending, b"\r\n\r\n") else {
                            if self.pending.len() > 1 << 20 {
                                self.state = State::Tunnel;
                            }
                            return out;
                        };
                        let head: Vec<u8> = self.pending.drain(..end + 4).collect();
                        let head = String::from_utf8_lossy(&head).to_string();
                        let (request, next) = parse_head(&head);
                        out.extend(request);
                        self.state = next;
                    }
                }
            }
        }
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    fn parse_head(head: &str) -> (Option<Request>, State) {
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let (Some(method), Some(target)) = (first.next(), first.next()) else {
            return (None, State::Tunnel);
        };
        let mut length = 0u64;
        let mut chunked = false;
        let mut upgrade = false;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "upgrade" => upgrade = true,
                _ => {}
            }
        }
        let (verb, resource) = classify(method, target);
        let exec = upgrade && (resource.ends_with("/exec") || resource.ends_with("/attach"));
        let request = Request {
            verb,
            resource,
            line: format!("{method} {target}"),
            exec,
        };
        let next = if upgrade {
            State::Tunnel
        } else if chunked {
            State::ChunkSize
        } else if length > 0 {
            State::Body(length)
        } else {
            State::Head
        };
        (Some(request), next)
    }

    /// The API verb and resource (`pods/exec`) of a request, as RBAC names them.
    pub fn classify(method: &str, target: &str) -> (String, String) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let seg: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let rest: &[&str] = match seg.first() {
            Some(&"api") if seg.len() > 2 => &seg[2..],
            Some(&"apis") if seg.len() > 3 => &seg[3..],
            _ => return (method.to_ascii_lowercase(), "discovery".to_string()),
        };
        let rest = if rest.first() == Some(&"namespaces") && rest.len() > 2 {
            &rest[2..]
        } else {
            rest
        };
        let named = rest.len() > 1;
        let resource = match rest.get(2) {
            Some(sub) => format!("{}/{sub}", rest[0]),
            None => rest[0].to_string(),
        };
        let watch = query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        let verb = match method {
            "GET" if watch => "watch",
            "GET" if named => "get",
            "GET" => "list",
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" if named => "delete",
            "DELETE" => "deletecollection",
            other => return (other.to_ascii_lowercase(), resource),
        };
        (verb.to_string(), resource)
    }
}

/// Wall seconds, CPU seconds and peak RSS (KiB) of one child process, and its exit code.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    max_rss_kib: i64,
    code: i32,
}

/// Runs `cmd` with `stdin`, output to `log`, and measures it with `wait4`.
fn run_measured(mut cmd: std::process::Command, stdin: &[u8], log: &Path) -> Sample {
    use std::io::Write;
    let out = std::fs::File::create(log).expect("hook log file");
    let err = out.try_clone().expect("hook log file");
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("the hook starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .expect("the hook reads its input");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value of a plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4 on the hook");
        if start.elapsed() > COMMAND_TIMEOUT {
            // SAFETY: signalling our own, not yet reaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = usage.ru_utime.tv_sec as f64
        + usage.ru_utime.tv_usec as f64 / 1e6
        + usage.ru_stime.tv_sec as f64
        + usage.ru_stime.tv_usec as f64 / 1e6;
    // Reaped by wait4 already: the Child must not wait again.
    std::mem::forget(child);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Sample {
        wall,
        cpu,
        max_rss_kib: usage.ru_maxrss,
        code,
    }
}

/// The conformance cluster (`scripts/real-cluster.sh`), brought up for the bench and stopped when
/// dropped; its apiserver audits every request of the runner's ServiceAccount.
struct ConformanceCluster {
    dir: PathBuf,
    _scratch: tempfile::TempDir,
}

impl ConformanceCluster {
    fn up(settings: &Path) -> ConformanceCluster {
        let scratch = tempfile::tempdir().expect("a directory for the cluster");
        let dir = scratch.path().join("cluster");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = std::process::Command::new(repo.join("scripts/real-cluster.sh"))
            .arg("up")
            .arg(&dir)
            .arg("--settings")
            .arg(settings)
            .env("ARC_HOOK_BIN", env!("CARGO_BIN_EXE_arc-hook"))
            .stdout(Stdio::null())
            .status()
            .expect("scripts/real-cluster.sh runs");
        assert!(status.success(), "scripts/real-cluster.sh up failed");
        ConformanceCluster {
            dir,
            _scratch: scratch,
        }
    }

    /// The runner's requests in the audit log so far, in order.
    fn audited(&self) -> Vec<proxy::Request> {
        let text = std::fs::read_to_string(self.dir.join("logs/audit.log")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| {
                e["user"]["username"] == "system:serviceaccount:arc-runners:arc-hook-runner"
            })
            .map(|e| {
                let obj = &e["objectRef"];
                let resource = match (obj["resource"].as_str(), obj["subresource"].as_str()) {
                    (Some(r), Some(s)) => format!("{r}/{s}"),
                    (Some(r), None) => r.to_string(),
                    _ => "discovery".to_string(),
                };
                proxy::Request {
                    verb: e["verb"].as_str().unwrap_or_default().to_string(),
                    exec: obj["subresource"] == "exec" || obj["subresource"] == "attach",
                    line: e["requestURI"].as_str().unwrap_or_default().to_string(),
                    resource,
                }
            })
            .collect()
    }
}

/// What upstream 0.8.1 checks for before every command (its `requiredPermissions`), more than
/// deploy/rbac's Role grants (it reads Secrets): bound to the same ServiceAccount for upstream's
/// run only, so its requests are counted under the same name.
const UPSTREAM_EXTRA_ROLE: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
   "metadata": {"name": "upstream-hook-extra", "namespace": "arc-runners"},
   "rules": [
     {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get", "list", "watch"]},
     {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create", "delete"]}]},
  {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
   "metadata": {"name": "upstream-hook-extra", "namespace": "arc-runners"},
   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "upstream-hook-extra"},
   "subjects": [{"kind": "ServiceAccount", "name": "arc-hook-runner", "namespace": "arc-runners"}]}]}"#;

impl ConformanceCluster {
    /// `kubectl VERB -f -` of `objects` as the cluster admin.
    fn admin_kubectl(&self, verb: &str, objects: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new("kubectl")
            .args([verb, "-f", "-"])
            .env("KUBECONFIG", self.dir.join("admin.kubeconfig"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(objects.as_bytes())
            .expect("kubectl's stdin");
        assert!(
            child.wait().expect("kubectl").success(),
            "kubectl {verb} failed"
        );
    }
}

impl Drop for ConformanceCluster {
    fn drop(&mut self) {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let _ = std::process::Command::new(repo.join("scripts/real-cluster.sh"))
            .arg("down")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

/// One of the hooks under test.
struct Hook {
    label: &'static str,
    runner: &'static str,
    program: Vec<OsString>,
    env: Vec<(String, String)>,
    upstream: bool,
}

/// One measured command of one hook.
struct Row {
    command: String,
    sample: Sample,
    requests: Vec<proxy::Request>,
}

/// Lays out a runner home like the runner's: `_work` from the fixture, empty externals.
fn runner_home(root: &Path, runner: &str) -> PathBuf {
    lay_out_home(root.join(runner))
}

/// [`runner_home`] at `home` (its `_work` emptied first: a fresh runner pod's).
fn lay_out_home(home: PathBuf) -> PathBuf {
    let work = home.join("_work");
    if work.exists() {
        for entry in std::fs::read_dir(&work).expect("runner _work") {
            let path = entry.expect("an entry").path();
            if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path).expect("empty _work");
            } else {
                std::fs::remove_file(&path).expect("empty _work");
            }
        }
    }
    std::fs::create_dir_all(&work).expect("runner _work");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{JOB_DIR}/work/."))
        .arg(&work)
        .status()
        .expect("cp runs");
    assert!(status.success(), "copying the fixture's work/");
    for d in [
        "_temp/_runner_file_commands",
        "_temp/_github_home",
        "_temp/_github_workflow",
        "_temp/_runner_hook_responses",
        "_actions",
        "_tool",
    ] {
        std::fs::create_dir_all(work.join(d)).expect("runner directory");
    }
    std::fs::create_dir_all(home.join("externals")).expect("externals");
    home
}

/// The job's inputs: the fixture's runner inputs, with a container step before cleanup_job.
fn job_inputs() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(JOB_DIR)
        .expect("job directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && p.file_name().is_some_and(|n| n != "sim.json")
        })
        .collect();
    files.sort();
    let mut inputs: Vec<(String, Value)> = files
        .iter()
        .map(|f| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(f).expect("runner input"))
                .expect("runner input is JSON");
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let cmd = v["command"].as_str().unwrap_or_default().to_string();
            let label = match cmd.as_str() {
                "run_script_step" => format!("run_script_step ({})", &stem[3..]),
                _ => cmd,
            };
            (label, v)
        })
        .collect();
    // Upstream joins arguments with spaces into a script, so they are plain words here.
    let container_step = json!({
        "command": "run_container_step", "responseFile": null, "state": {},
        "args": {
            "image": "alpine:3.20", "dockerfile": null,
            "entryPoint": "ls", "entryPointArgs": ["-l", "src"],
            "workingDirectory": "/github/workspace", "createOptions": null,
            "environmentVariables": {"GITHUB_ACTIONS": "true", "CI": "true"}, "prependPath": [],
            "userMountVolumes": [], "systemMountVolumes": [], "registry": null, "portMappings": []
        }
    });
    let at = inputs.len() - 1;
    inputs.insert(at, ("run_container_step".to_string(), container_step));
    inputs
}

/// Creates the step's file-command files empty, as the runner does before each step.
fn prepare_file_commands(input: &Value, work: &Path) {
    let Some(env) = input["args"]["environmentVariables"].as_object() else {
        return;
    };
    for v in env.values().filter_map(Value::as_str) {
        if let Some(rest) = v.strip_prefix("/__w/_temp/_runner_file_commands/") {
            std::fs::write(work.join("_temp/_runner_file_commands").join(rest), b"")
                .expect("file-command file");
        }
    }
}

/// The fixture's workspace (`/__w/<repo>/<repo>`) on the runner's side.
fn workspace_rel(inputs: &[(String, Value)]) -> String {
    inputs
        .iter()
        .find_map(|(_, v)| v["args"]["container"]["workingDirectory"].as_str())
        .and_then(|w| w.strip_prefix("/__w/"))
        .unwrap_or("repo/repo")
        .to_string()
}

/// Upstream's job pod has an init container that moves the runner image's externals into the pod
/// (`mv /home/runner/externals/* ...`); simulated containers run the host's filesystem, which has
/// no runner image, so the bench gives upstream a hook template with the same init container minus
/// that move (same volumes, same mkdirs). Only prepare_job reads it.
fn upstream_template(root: &Path, workspace: &str) -> PathBuf {
    let path = root.join("upstream-template.yaml");
    let yaml = format!(
        "spec:\n  initContainers:\n  - name: fs-init\n    image: ghcr.io/actions/actions-runner:latest\n    \
         command: [sh, -c, 'mkdir -p /mnt/externals && mkdir -p /mnt/work && mkdir -p /mnt/github && mkdir -p /mnt/work/{workspace}']\n    \
         securityContext: {{runAsGroup: 1001, runAsUser: 1001}}\n    volumeMounts:\n    \
         - {{name: externals, mountPath: /mnt/externals}}\n    - {{name: work, mountPath: /mnt/work}}\n    \
         - {{name: github, mountPath: /mnt/github}}\n"
    );
    std::fs::write(&path, yaml).expect("upstream template");
    path
}

async fn create_runner_pod(sim: &Simulator, name: &str) {
    let pods: kube::Api<Pod> = kube::Api::default_namespaced(sim.client().await);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "runner"}},
        "spec": {"containers": [{"name": "runner", "image": "arc-hook-runner:bench", "command": ["sleep", "infinity"]}], "restartPolicy": "Never"}
    }))
    .expect("runner pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("runner pod created");
}

/// Where a hook plays: the embedded simulator behind the counting proxy, or the conformance
/// cluster (its one runner, `arc-runner`, and the apiserver's audit log as the count).
enum Target<'a> {
    Simulator {
        proxy_url: &'a str,
        log: &'a proxy::Log,
    },
    Cluster(&'a ConformanceCluster),
}

impl Target<'_> {
    /// The requests seen so far (for the simulator, the proxy's; for the cluster, the audit log's).
    fn requests(&self) -> Vec<proxy::Request> {
        match self {
            Target::Simulator { log, .. } => log.lock().expect("request log lock").clone(),
            Target::Cluster(c) => c.audited(),
        }
    }
}

/// Plays the job through `hook`; one row per command.
async fn play(
    hook: &Hook,
    root: &Path,
    target: &Target<'_>,
    inputs: &[(String, Value)],
    template: Option<&Path>,
) -> Vec<Row> {
    let (home, runner, kubeconfig) = match target {
        Target::Simulator { proxy_url, .. } => {
            let home = root.join(hook.runner);
            let kubeconfig = home.join("kubeconfig");
            std::fs::write(&kubeconfig, kubeconfig_yaml(proxy_url, "default")).expect("kubeconfig");
            (home, hook.runner, kubeconfig)
        }
        Target::Cluster(c) => (
            lay_out_home(c.dir.join("runner")),
            "arc-runner",
            c.dir.join("kubeconfig"),
        ),
    };
    let work = home.join("_work");
    let workspace = work.join(workspace_rel(inputs));
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("ACTIONS_RUNNER_POD_NAME".into(), runner.into()),
        ("ACTIONS_RUNNER_CLAIM_NAME".into(), format!("{runner}-work")),
        ("KUBECONFIG".into(), kubeconfig.to_string_lossy().into()),
        (
            "RUNNER_WORKSPACE".into(),
            workspace.parent().unwrap_or(&work).to_string_lossy().into(),
        ),
        (
            "GITHUB_WORKSPACE".into(),
            workspace.to_string_lossy().into(),
        ),
        (
            "RUNNER_TEMP".into(),
            work.join("_temp").to_string_lossy().into(),
        ),
        (
            "ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS".into(),
            "120".into(),
        ),
    ]);
    env.extend(hook.env.iter().cloned());
    let mut state = json!({});
    let mut rows = Vec::new();
    for (i, (label, input)) in inputs.iter().enumerate() {
        let mut input = input.clone();
        let command = input["command"].as_str().unwrap_or_default().to_string();
        let response = work.join("_temp/_runner_hook_responses/prepare.json");
        if command == "prepare_job" {
            std::fs::write(&response, b"").expect("empty response file");
            input["responseFile"] = json!(response);
        } else {
            input["state"] = state.clone();
        }
        prepare_file_commands(&input, &work);
        let mut cmd = std::process::Command::new(&hook.program[0]);
        cmd.args(&hook.program[1..])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE")
            .envs(&env)
            .current_dir(&home);
        if let (Some(t), "prepare_job") = (template, command.as_str()) {
            cmd.env("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", t);
        }
        let out = root.join(format!("{}-{i:02}-{command}.log", hook.runner));
        let before = target.requests().len();
        let bytes = serde_json::to_vec(&input).expect("input JSON");
        let out2 = out.clone();
        let sample = tokio::task::spawn_blocking(move || run_measured(cmd, &bytes, &out2))
            .await
            .expect("measuring thread");
        if matches!(target, Target::Cluster(_)) {
            // Long-running requests (watch, exec) are audited when they close.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let requests = target.requests()[before..].to_vec();
        if sample.code != 0 {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            eprintln!(
                "{} {label} exited {}; last lines of {}:",
                hook.label,
                sample.code,
                out.display()
            );
            for l in tail.iter().rev() {
                eprintln!("    {l}");
            }
        }
        if command == "prepare_job" && sample.code == 0 {
            let r: Value = serde_json::from_slice(&std::fs::read(&response).expect("response"))
                .expect("prepare_job's response is JSON");
            state = r["state"].clone();
        }
        rows.push(Row {
            command: label.clone(),
            sample,
            requests,
        });
        // Upstream's cleanup deletes without waiting; let the next runner start on a quiet node.
        if command == "cleanup_job" && hook.upstream {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    rows
}

fn mib(kib: i64) -> f64 {
    kib as f64 / 1024.0
}

fn execs<'a>(requests: impl IntoIterator<Item = &'a proxy::Request>) -> usize {
    requests.into_iter().filter(|r| r.exec).count()
}

/// One hook's whole job.
struct Total {
    label: &'static str,
    requests: usize,
    execs: usize,
    wall: f64,
    cpu: f64,
    max_rss_mib: f64,
}

/// Prints the table (markdown, as in the README), the ratios and the request breakdowns.
fn report(results: &[(&Hook, Vec<Row>)]) {
    println!("| command | hook | requests | execs | wall | CPU | peak RSS |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let commands = results.first().map_or(0, |(_, rows)| rows.len());
    for i in 0..commands {
        for (h, rows) in results {
            let r = &rows[i];
            let s = r.sample;
            let failed = if s.code != 0 {
                format!(" (exit {})", s.code)
            } else {
                String::new()
            };
            println!(
                "| {}{failed} | {} | {} | {} | {:.2} s | {:.2} s | {:.1} MiB |",
                r.command,
                h.label,
                r.requests.len(),
                execs(&r.requests),
                s.wall,
                s.cpu,
                mib(s.max_rss_kib)
            );
        }
    }
    let totals: Vec<Total> = results
        .iter()
        .map(|(h, rows)| Total {
            label: h.label,
            requests: rows.iter().map(|r| r.requests.len()).sum(),
            execs: rows.iter().map(|r| execs(&r.requests)).sum(),
            wall: rows.iter().map(|r| r.sample.wall).sum(),
            cpu: rows.iter().map(|r| r.sample.cpu).sum(),
            max_rss_mib: mib(rows.iter().map(|r| r.sample.max_rss_kib).max().unwrap_or(0)),
        })
        .collect();
    for t in &totals {
        println!(
            "| **job total** | {} | {} | {} | {:.2} s | {:.2} s | {:.1} MiB (max) |",
            t.label, t.requests, t.execs, t.wall, t.cpu, t.max_rss_mib
        );
    }
    if let Some((up, ours)) = totals
        .split_first()
        .filter(|(u, _)| u.label.starts_with("upstream"))
    {
        println!();
        for t in ours {
            println!(
                "upstream / {}: requests {:.1}x, execs {:.1}x, wall {:.1}x, CPU {:.1}x, peak RSS {:.1}x",
                t.label,
                up.requests as f64 / t.requests.max(1) as f64,
                up.execs as f64 / t.execs.max(1) as f64,
                up.wall / t.wall,
                up.cpu / t.cpu,
                up.max_rss_mib / t.max_rss_mib
            );
        }
    }

    println!("\nRequests by command (verb resource, first-seen order):");
    for (h, rows) in results {
        for r in rows {
            println!(
                "  {:<15} {:<27} {}",
                h.label,
                r.command,
                breakdown(&r.requests)
            );
        }
    }
    for (h, rows) in results.iter().filter(|(h, _)| !h.upstream) {
        println!("\n{} prepare_job, request by request:", h.label);
        for q in rows.first().map_or(&[][..], |r| &r.requests[..]) {
            println!("  {}{}", q.line, if q.exec { "  [exec]" } else { "" });
        }
    }
}

/// `3× create pods/exec, 1× get pods` in first-seen order.
fn breakdown(requests: &[proxy::Request]) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in requests {
        let k = format!("{} {}", r.verb, r.resource);
        if !counts.contains_key(&k) {
            order.push(k.clone());
        }
        *counts.entry(k).or_default() += 1;
    }
    order
        .iter()
        .map(|k| format!("{}× {k}", counts[k]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn main() {
    let upstream = std::env::var_os("UPSTREAM_HOOK").map(PathBuf::from);
    let arc_hook = PathBuf::from(env!("CARGO_BIN_EXE_arc-hook"));
    let mut hooks = Vec::new();
    match &upstream {
        Some(bundle) => {
            assert!(
                bundle.is_file(),
                "UPSTREAM_HOOK={} is not a file (packages/k8s/dist/index.js of runner-container-hooks)",
                bundle.display()
            );
            hooks.push(Hook {
                label: "upstream 0.8.1",
                runner: "bench-upstream",
                program: vec!["node".into(), bundle.clone().into()],
                env: vec![],
                upstream: true,
            });
        }
        None => println!(
            "UPSTREAM_HOOK is not set: measuring arc-hook alone (set it to upstream's packages/k8s/dist/index.js for the side by side)\n"
        ),
    }
    hooks.push(Hook {
        label: "arc-hook claim",
        runner: "bench-claim",
        program: vec![arc_hook.clone().into()],
        env: vec![("ARC_HOOK_WORK_VOLUME".into(), "claim".into())],
        upstream: false,
    });
    hooks.push(Hook {
        label: "arc-hook copy",
        runner: "bench-copy",
        program: vec![arc_hook.into()],
        env: vec![("ARC_HOOK_WORK_VOLUME".into(), "copy".into())],
        upstream: false,
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let root = tempfile::Builder::new()
            .prefix("arc-hook-side-by-side-")
            .tempdir()
            .expect("scratch directory");
        let inputs = job_inputs();
        let sim_json: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{JOB_DIR}/sim.json")).expect("sim.json"),
        )
        .expect("sim.json is JSON");
        let image_commands: HashMap<String, Vec<String>> =
            serde_json::from_value(sim_json["imageCommands"].clone()).expect("imageCommands");
        let mut pvc_dirs = HashMap::new();
        for h in &hooks {
            let home = runner_home(root.path(), h.runner);
            pvc_dirs.insert(format!("{}-work", h.runner), home.join("_work"));
        }
        // The same start delay as `arc-hook replay`.
        let cfg = SimConfig {
            pvc_dirs,
            image_commands,
            start_delay: Duration::from_millis(100),
            state_dir: Some(root.path().join("sim")),
            ..Default::default()
        };
        let sim = Simulator::start(cfg).await.expect("simulator starts");
        let sim_addr: std::net::SocketAddr = sim
            .url()
            .trim_start_matches("http://")
            .parse()
            .expect("simulator address");
        let log: proxy::Log = Arc::new(Mutex::new(Vec::new()));
        let proxy_url = proxy::start(sim_addr, log.clone()).await;
        for h in &hooks {
            create_runner_pod(&sim, h.runner).await;
        }
        let template = upstream_template(root.path(), &workspace_rel(&inputs));
        println!(
            "Side by side on the embedded simulator (pod start delay 100 ms), through a counting proxy; one run each.\n\
             Job: fixtures/jobs/build-and-test (job container, one service, three script steps) + one container step.\n"
        );
        let mut results = Vec::new();
        let target = Target::Simulator {
            proxy_url: &proxy_url,
            log: &log,
        };
        for h in &hooks {
            let t = h.upstream.then_some(template.as_path());
            let rows = play(h, root.path(), &target, &inputs, t).await;
            results.push((h, rows));
        }

        report(&results);
        sim.shutdown().await;

        // The same job on the real control plane: kube-apiserver, scheduler and controller-manager
        // v1.35.4, the node agent running the pods with the simulator's kubelet; the requests are
        // the apiserver's audit log of the runner's ServiceAccount (deploy/rbac's Role).
        if std::env::var("SIDE_BY_SIDE_CLUSTER").as_deref() == Ok("1") {
            let cluster = ConformanceCluster::up(Path::new(&format!("{JOB_DIR}/sim.json")));
            println!(
                "\nThe same job on the conformance cluster (scripts/real-cluster.sh: a real control plane, \
                 the node agent's kubelet), counted from the apiserver's audit log; one run each.\n"
            );
            let target = Target::Cluster(&cluster);
            let mut results = Vec::new();
            for h in &hooks {
                let t = h.upstream.then_some(template.as_path());
                if h.upstream {
                    cluster.admin_kubectl("apply", UPSTREAM_EXTRA_ROLE);
                }
                let rows = play(h, root.path(), &target, &inputs, t).await;
                if h.upstream {
                    cluster.admin_kubectl("delete", UPSTREAM_EXTRA_ROLE);
                }
                results.push((h, rows));
            }
            report(&results);
        }
    });
}
