//! The conformance cluster from a test: `scripts/real-cluster.sh up` (etcd, kube-apiserver,
//! kube-scheduler, kube-controller-manager and, unless asked not to, the node agent), kubectl
//! against it, and bounded child processes. Shared by tests/conformance.rs and
//! tests/sim_differential.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::prerequisite::{on_path, require};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn conformance_bin() -> PathBuf {
    std::env::var_os("CONFORMANCE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/conformance/conformance"))
}

/// Whether everything the conformance cluster needs is here, as [`require`] says.
pub fn prerequisites_met() -> bool {
    let mut missing = Vec::new();
    if !conformance_bin().is_file() {
        missing.push(format!(
            "{} (build it with tests/conformance/build.sh)",
            conformance_bin().display()
        ));
    }
    for program in ["kubectl", "openssl", "python3", "setsid"] {
        if on_path(program).is_none() {
            missing.push(program.to_string());
        }
    }
    require(
        missing.is_empty(),
        &format!("the conformance cluster's {}", missing.join(", ")),
    )
}

/// Output of a bounded command run.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` with its output in files under `scratch` (no pipe to fill), killed after `limit`.
pub fn run_bounded(mut cmd: Command, scratch: &Path, limit: Duration) -> Ran {
    let out = scratch.join(format!("out-{}", std::process::id()));
    let err = scratch.join(format!("err-{}", std::process::id()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create the stdout file"))
        .stderr(std::fs::File::create(&err).expect("create the stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; its stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ran {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// A running conformance cluster, stopped (and its directory removed) when dropped.
pub struct Cluster {
    pub dir: PathBuf,
    pub scratch: tempfile::TempDir,
}

impl Cluster {
    /// The whole cluster, its node agent taking `settings` (a `sim.json`).
    pub fn up(settings: Option<&Path>) -> Cluster {
        Self::start(settings, true)
    }

    /// The control plane alone (`--no-node`): pods are stored and scheduled nowhere.
    pub fn control_plane() -> Cluster {
        Self::start(None, false)
    }

    fn start(settings: Option<&Path>, node: bool) -> Cluster {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let dir = scratch.path().join("cluster");
        let mut cmd = Command::new(repo().join("scripts/real-cluster.sh"));
        cmd.arg("up").arg(&dir);
        if let Some(s) = settings {
            cmd.arg("--settings").arg(s);
        }
        if !node {
            cmd.arg("--no-node");
        }
        cmd.env("CONFORMANCE_BIN", conformance_bin())
            .env("ARC_HOOK_BIN", env!("CARGO_BIN_EXE_arc-hook"));
        let ran = run_bounded(cmd, scratch.path(), Duration::from_secs(300));
        let cluster = Cluster { dir, scratch };
        assert!(
            ran.status.success(),
            "real-cluster.sh up failed:\n{}\n{}",
            ran.stdout,
            ran.stderr
        );
        cluster
    }

    pub fn admin(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    pub fn runner(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// kubectl with `kubeconfig`, `stdin` as its input; bounded.
    pub fn kubectl(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Ran {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
        if let Some(input) = stdin {
            let file = self.scratch.path().join("kubectl-stdin");
            std::fs::write(&file, input).expect("write kubectl's input");
            cmd.arg("-f").arg(&file);
        }
        run_bounded(cmd, self.scratch.path(), Duration::from_secs(90))
    }

    /// A kubeconfig like the runner's for ServiceAccount `name` in arc-runners (created, and
    /// bound to Role `role`, unless it exists).
    pub fn service_account_kubeconfig(&self, name: &str, role: &str) -> PathBuf {
        let binding = format!(
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: arc-runners}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}, namespace: arc-runners}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role}}}
subjects: [{{kind: ServiceAccount, name: {name}, namespace: arc-runners}}]
"#
        );
        self.account_kubeconfig(name, &binding)
    }

    /// Applies `objects` as admin, then writes a kubeconfig for ServiceAccount `account` in
    /// arc-runners (a token from the real TokenRequest API): the hook's identity under that Role.
    pub fn account_kubeconfig(&self, account: &str, objects: &str) -> PathBuf {
        let admin = self.admin();
        self.kubectl_ok(&admin, &["-n", "arc-runners", "apply"], Some(objects));
        let token = self.kubectl_ok(
            &admin,
            &["-n", "arc-runners", "create", "token", account],
            None,
        );
        let kubeconfig = self.scratch.path().join(format!("{account}.kubeconfig"));
        std::fs::copy(self.runner(), &kubeconfig).expect("copy the runner's kubeconfig");
        self.kubectl_ok(
            &kubeconfig,
            &[
                "config",
                "set-credentials",
                "arc-hook-runner",
                "--token",
                token.trim(),
            ],
            None,
        );
        kubeconfig
    }

    /// `replay --cluster` of `job` as the identity in `kubeconfig`, the runner's _work emptied
    /// first as a fresh runner pod has it.
    pub fn replay(&self, kubeconfig: &Path, job: &Path, env: &[(&str, &str)]) -> Ran {
        let home = self.dir.join("runner");
        let work = home.join("_work");
        std::fs::remove_dir_all(&work).expect("empty the runner's _work");
        std::fs::create_dir_all(&work).expect("recreate the runner's _work");
        let mut replay = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
        replay
            .args(["replay", "--cluster", "--workdir"])
            .arg(&home)
            .arg(job)
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().copied());
        run_bounded(replay, self.scratch.path(), Duration::from_secs(300))
    }

    /// What the hook left in arc-runners besides the runner pod (seen as admin).
    pub fn leftovers(&self) -> Vec<String> {
        self.kubectl_ok(
            &self.admin(),
            &[
                "-n",
                "arc-runners",
                "get",
                "pods,secrets,jobs,leases",
                "-o",
                "name",
            ],
            None,
        )
        .lines()
        .filter(|l| *l != "pod/arc-runner")
        .map(str::to_string)
        .collect()
    }

    pub fn kubectl_ok(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
        let ran = self.kubectl(kubeconfig, args, stdin);
        assert!(
            ran.status.success(),
            "kubectl {args:?} failed: {}{}",
            ran.stdout,
            ran.stderr
        );
        ran.stdout
    }
}

impl Cluster {
    /// What a failed test needs to say why: the cluster's objects and events, and the tail of
    /// each component's log. Written to stderr (the test's captured output) while unwinding.
    fn diagnose(&self) {
        let admin = self.admin();
        for args in [
            &["get", "nodes,pods", "-A", "-o", "wide"][..],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
        ] {
            let ran = self.kubectl(&admin, args, None);
            eprintln!(
                "── kubectl {}:\n{}{}",
                args.join(" "),
                ran.stdout,
                ran.stderr
            );
        }
        let Ok(logs) = std::fs::read_dir(self.dir.join("logs")) else {
            return;
        };
        let mut logs: Vec<PathBuf> = logs.flatten().map(|e| e.path()).collect();
        logs.sort();
        for log in logs.iter().filter(|l| !l.ends_with("audit.log")) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "── last {} lines of {}:\n{}",
                tail.len(),
                log.display(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnose();
        }
        let mut cmd = Command::new(repo().join("scripts/real-cluster.sh"));
        cmd.arg("down").arg(&self.dir);
        let ran = run_bounded(cmd, self.scratch.path(), Duration::from_secs(120));
        if !ran.status.success() {
            eprintln!("real-cluster.sh down failed: {}", ran.stderr);
        }
    }
}
