//! The real kubectl against the simulator: apply, wait, get, logs, exec, describe, delete.

mod common;
mod sim_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use arc_hook::sim::{SimConfig, Simulator};
use sim_support::{WAIT, start};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// The kubectl on PATH (a dispatcher choosing a versioned binary from the server's version).
fn kubectl() -> Option<PathBuf> {
    common::prerequisite::on_path("kubectl")
}

/// A versioned kubectl (`kubectl.1.30`) next to the real binary the dispatcher links to.
fn versioned_kubectl(version: &str) -> Option<PathBuf> {
    let real = std::fs::canonicalize(kubectl()?).ok()?;
    let p = real.parent()?.join(format!("kubectl.{version}"));
    p.is_file().then_some(p)
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(sim: &Simulator, dir: &Path, bin: PathBuf) -> Kubectl {
        let kubeconfig = dir.join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig)
            .expect("kubeconfig written");
        Kubectl::with_kubeconfig(kubeconfig, dir, bin)
    }

    fn with_kubeconfig(kubeconfig: PathBuf, dir: &Path, bin: PathBuf) -> Kubectl {
        Kubectl {
            bin,
            kubeconfig,
            cache: dir.join("cache"),
        }
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("kubectl starts");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .await
                .expect("stdin written");
        }
        let out = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .expect("kubectl finishes in time")
            .expect("kubectl runs");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None).await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert_eq!(out.code, 0, "kubectl {args:?} failed: {}", out.stderr);
        out.stdout
    }
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: main
    image: alpine:3.19
    env: [{name: GREETING, value: hello}]
    command: ["sh", "-c", "echo $(GREETING) from the sim; exec sleep 3600"]
"#;

/// The kubectl on PATH, or (what `common::require` says) the test returns.
macro_rules! need_kubectl {
    () => {
        match common::require_program("kubectl", "scripts/setup.sh installs the Debian package") {
            Some(k) => k,
            None => return,
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_kubectl_pod_lifecycle() {
    let bin = need_kubectl!();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start(SimConfig::default()).await;
    let k = Kubectl::new(&sim, dir.path(), bin);
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(&manifest, POD).expect("manifest");
    let manifest = manifest.to_str().expect("utf-8 path");

    assert_eq!(
        k.ok(&["apply", "-f", manifest]).await.trim(),
        "pod/web created"
    );
    assert_eq!(
        k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"])
            .await
            .trim(),
        "pod/web condition met"
    );
    let table = k.ok(&["get", "pods", "-l", "app=web"]).await;
    let row = table
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_else(|| panic!("no web row in {table}"));
    assert!(row.contains("1/1") && row.contains("Running"), "{row}");
    assert!(k.ok(&["get", "pods", "-l", "app=other"]).await.is_empty());
    assert_eq!(k.ok(&["logs", "web"]).await, "hello from the sim\n");

    let exec = k
        .run(&[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await;
    assert_eq!(exec.code, 3, "{}", exec.stderr);
    assert_eq!(exec.stdout, "out\n");
    assert!(exec.stderr.starts_with("err\n"), "{}", exec.stderr);

    // A binary the image lacks: kubectl shows containerd's internal error, not an exit code.
    let missing = k.run(&["exec", "web", "--", "no-such-tool"]).await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("error: Internal error occurred: error executing command in container: failed to exec in container: failed to start exec")
            && missing.stderr.contains("exec: \"no-such-tool\": executable file not found in $PATH: unknown"),
        "{}",
        missing.stderr
    );
    assert!(!missing.stderr.contains("exit code"), "{}", missing.stderr);

    let described = k.ok(&["describe", "pod", "web"]).await;
    for needle in [
        "Status:           Running",
        "Successfully assigned default/web to sim-node-1",
        "Started container main",
        "GREETING:  hello",
    ] {
        assert!(
            described.contains(needle),
            "describe lacks {needle:?}:\n{described}"
        );
    }
    // Re-applying an unchanged manifest is a no-op, a changed one patches.
    assert_eq!(
        k.ok(&["apply", "-f", manifest]).await.trim(),
        "pod/web unchanged"
    );
    assert_eq!(
        k.ok(&["label", "pod", "web", "tier=front"]).await.trim(),
        "pod/web labeled"
    );
    assert!(
        k.ok(&["get", "pods", "-l", "tier=front", "-o", "name"])
            .await
            .contains("pod/web")
    );

    assert_eq!(
        k.ok(&["delete", "pod", "web"]).await.trim(),
        "pod \"web\" deleted"
    );
    let gone = k.run(&["get", "pod", "web"]).await;
    assert_eq!(gone.code, 1);
    assert!(
        gone.stderr.contains("pods \"web\" not found"),
        "{}",
        gone.stderr
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_kubectl_refuses_an_invalid_pod_like_the_api_server() {
    let bin = need_kubectl!();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start(SimConfig::default()).await;
    let k = Kubectl::new(&sim, dir.path(), bin);
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec:\n  containers: [{name: c, image: alpine}]\n";
    let out = k.run_with_stdin(&["apply", "-f", "-"], Some(bad)).await;
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "The Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of"
        ),
        "{}",
        out.stderr
    );
    let no_image =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers: [{name: c}]\n";
    let out = k
        .run_with_stdin(&["create", "-f", "-"], Some(no_image))
        .await;
    assert!(
        out.stderr
            .contains("spec.containers[0].image: Required value"),
        "{}",
        out.stderr
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_kubectl_exec_works_across_client_versions() {
    let on_path = need_kubectl!();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start(SimConfig::default()).await;
    let setup = Kubectl::new(&sim, dir.path(), on_path.clone());
    setup.run_with_stdin(&["apply", "-f", "-"], Some(POD)).await;
    setup
        .ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"])
        .await;
    // The kubectl on PATH always; the versioned ones a dispatcher installs where they are.
    let mut clients = vec![("on PATH".to_string(), on_path)];
    for version in ["1.30", "1.33"] {
        match versioned_kubectl(version) {
            Some(bin) => clients.push((version.to_string(), bin)),
            None => eprintln!("kubectl {version} is not installed next to kubectl: not compared"),
        }
    }
    for (version, bin) in clients {
        let k = Kubectl::new(&sim, dir.path(), bin);
        let exec = k
            .run(&[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ])
            .await;
        assert_eq!(
            (exec.code, exec.stdout.as_str()),
            (3, "out\n"),
            "kubectl {version}: {}",
            exec.stderr
        );
        assert!(
            exec.stderr.starts_with("err\n"),
            "kubectl {version}: {}",
            exec.stderr
        );
        let piped = k
            .run_with_stdin(
                &["exec", "-i", "web", "--", "tr", "a-z", "A-Z"],
                Some("shout\n"),
            )
            .await;
        assert_eq!(
            (piped.code, piped.stdout.as_str()),
            (0, "SHOUT\n"),
            "kubectl {version}: {}",
            piped.stderr
        );
    }
    sim.shutdown().await;
}

/// `arc-hook sim serve --kubeconfig <dir>/kc <args>`, killed when dropped.
struct SimServe {
    child: tokio::process::Child,
    kubeconfig: PathBuf,
    /// The first line it printed (`export KUBECONFIG=...`), read once the API is served.
    first_line: String,
}

impl SimServe {
    async fn start(dir: &Path, args: &[&str]) -> SimServe {
        let kubeconfig = dir.join("kc");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_arc-hook"))
            .args(["sim", "serve", "--start-delay-ms", "50", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("arc-hook starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first_line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("a line in time")
            .expect("readable")
            .unwrap_or_else(|| panic!("arc-hook sim serve {args:?} printed nothing"));
        SimServe {
            child,
            kubeconfig,
            first_line,
        }
    }

    /// Stops it with SIGTERM, as a user's Ctrl-C or a service manager would; it must exit 0.
    async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("pid") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signalled");
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("exits in time")
            .expect("exit status");
        assert!(status.success(), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_serve_writes_a_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = SimServe::start(dir.path(), &[]).await;
    let kubeconfig = serve.kubeconfig.clone();
    assert_eq!(
        serve.first_line,
        format!(
            "export KUBECONFIG={}",
            std::fs::canonicalize(&kubeconfig)
                .expect("written")
                .display()
        )
    );
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig parses"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("kubeconfig loads");
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).expect("client");
    assert_eq!(
        client
            .apiserver_version()
            .await
            .expect("version")
            .git_version,
        "v1.32.4"
    );
    serve.stop().await;
}

/// `kubectl auth can-i <what>`: its answer and whether it exited as that answer says (0 for yes).
async fn can_i(k: &Kubectl, what: &[&str]) -> String {
    let args: Vec<&str> = ["auth", "can-i"].iter().chain(what).copied().collect();
    let out = k.run(&args).await;
    let answer = out.stdout.trim().to_string();
    let expected_code = if answer == "yes" { 0 } else { 1 };
    assert_eq!(
        out.code, expected_code,
        "kubectl {args:?} answered {answer:?}: {}",
        out.stderr
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_kubectl_auth_can_i_answers_what_the_simulator_enforces() {
    let bin = need_kubectl!();
    for default_role in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let flags: &[&str] = if default_role {
            &["--default-role"]
        } else {
            &[]
        };
        let serve = SimServe::start(dir.path(), flags).await;
        let k = Kubectl::with_kubeconfig(serve.kubeconfig.clone(), dir.path(), bin.clone());
        let (granted_by_role, beyond_role) = ("yes", if default_role { "no" } else { "yes" });
        for (what, expected) in [
            (&["create", "pods"][..], granted_by_role),
            (&["create", "pods/exec"], granted_by_role),
            (&["get", "pods/log"], granted_by_role),
            (&["delete", "jobs.batch"], granted_by_role),
            (&["create", "nodes"], beyond_role),
            (&["watch", "pods"], beyond_role),
            (&["create", "configmaps"], beyond_role),
        ] {
            assert_eq!(
                can_i(&k, what).await,
                expected,
                "can-i {what:?} (--default-role: {default_role})"
            );
        }
        // The answer is the decision requests meet.
        let configmap = k
            .run(&["create", "configmap", "c", "--from-literal=a=b"])
            .await;
        assert_eq!(configmap.code == 0, !default_role, "{configmap:?}");
        if default_role {
            assert!(
                configmap.stderr.contains(
                    "configmaps is forbidden: User \"system:serviceaccount:default:arc-runner\" cannot create resource \"configmaps\""
                ),
                "{}",
                configmap.stderr
            );
        }

        let list = k.ok(&["auth", "can-i", "--list"]).await;
        let row = |resource: &str| {
            list.lines()
                .find(|l| l.split_whitespace().next() == Some(resource))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        };
        if default_role {
            assert_eq!(
                row("pods/exec").as_deref(),
                Some("pods/exec [] [] [get create]"),
                "{list}"
            );
            assert_eq!(
                row("pods").as_deref(),
                Some("pods [] [] [get list create delete update patch]"),
                "{list}"
            );
            assert!(row("*.*").is_none(), "{list}");
        } else {
            assert_eq!(row("*.*").as_deref(), Some("*.* [] [] [*]"), "{list}");
        }
        serve.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_serve_image_command_stands_in_for_an_entrypoint() {
    let bin = need_kubectl!();
    let dir = tempfile::tempdir().expect("tempdir");
    let serve = SimServe::start(
        dir.path(),
        &[
            "--image-command",
            r#"cache:7=["sh","-c","echo cache serving on $0","6379"]"#,
            "--image-command",
            r#"db=["sh","-c","echo db up"]"#,
        ],
    )
    .await;
    let k = Kubectl::with_kubeconfig(serve.kubeconfig.clone(), dir.path(), bin);
    // A job's service containers name an image and no command.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: services}\nspec:\n  restartPolicy: Never\n  containers:\n  - {name: cache, image: 'cache:7'}\n  - {name: db, image: 'db:16'}\n  - {name: plain, image: 'other:1'}\n";
    k.run_with_stdin(&["apply", "-f", "-"], Some(pod)).await;
    for (container, log) in [("cache", "cache serving on 6379\n"), ("db", "db up\n")] {
        let completed = format!(
            "--for=jsonpath={{.status.containerStatuses[?(@.name==\"{container}\")].state.terminated.reason}}=Completed"
        );
        k.ok(&["wait", &completed, "pod/services", "--timeout=30s"])
            .await;
        assert_eq!(
            k.ok(&["logs", "services", "-c", container]).await,
            log,
            "{container} ran its image's command (a repository matches every tag)"
        );
    }
    let plain = k
        .ok(&[
            "get",
            "pod",
            "services",
            "-o",
            "jsonpath={.status.containerStatuses[?(@.name=='plain')].state.running}",
        ])
        .await;
    assert!(
        !plain.is_empty(),
        "an image without a configured command keeps running: {plain:?}"
    );
    serve.stop().await;

    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .args([
            "sim",
            "serve",
            "--image-command",
            "cache:7=redis-server --port 6379",
        ])
        .output()
        .await
        .expect("arc-hook runs");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the command must be a JSON array of strings"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_kubectl_create_generators_work_despite_protobuf() {
    let bin = need_kubectl!();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start(SimConfig::default()).await;
    let k = Kubectl::new(&sim, dir.path(), bin);
    assert_eq!(
        k.ok(&[
            "create",
            "secret",
            "generic",
            "creds",
            "--from-literal=token=s3cret"
        ])
        .await
        .trim(),
        "secret/creds created"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "secret",
            "creds",
            "-o",
            "jsonpath={.type} {.data.token}"
        ])
        .await,
        "Opaque czNjcmV0"
    );
    assert_eq!(
        k.ok(&[
            "create",
            "configmap",
            "settings",
            "--from-literal=mode=fast"
        ])
        .await
        .trim(),
        "configmap/settings created"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "configmap",
            "settings",
            "-o",
            "jsonpath={.data.mode}"
        ])
        .await,
        "fast"
    );
    assert_eq!(
        k.ok(&["create", "namespace", "team"]).await.trim(),
        "namespace/team created"
    );
    let job = k.run(&["create", "job", "j", "--image=busybox"]).await;
    assert_eq!(job.code, 1);
    assert!(
        job.stderr.contains("use kubectl apply/create -f"),
        "{}",
        job.stderr
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_kubectl_taint_keeps_a_pod_off_the_node_until_it_is_removed() {
    let bin = need_kubectl!();
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = start(SimConfig::default()).await;
    let k = Kubectl::new(&sim, dir.path(), bin);
    let node = arc_hook::sim::NODE_NAME;
    let taint = "example.com/cache-not-ready=true:NoSchedule";
    assert_eq!(
        k.ok(&["taint", "nodes", node, taint]).await.trim(),
        format!("node/{node} tainted")
    );
    let manifest = dir.path().join("pod.yaml");
    std::fs::write(&manifest, POD).expect("manifest");
    k.ok(&["apply", "-f", manifest.to_str().expect("utf-8 path")])
        .await;
    let pending = k
        .run(&["wait", "--for=condition=Ready", "pod/web", "--timeout=2s"])
        .await;
    assert_ne!(pending.code, 0, "a tainted node takes no pod");
    let scheduled = k
        .ok(&[
            "get",
            "pod",
            "web",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ])
        .await;
    assert!(
        scheduled.contains("1 node(s) had untolerated taint {example.com/cache-not-ready: true}"),
        "{scheduled}"
    );
    assert_eq!(
        k.ok(&["taint", "nodes", node, &format!("{taint}-")])
            .await
            .trim(),
        format!("node/{node} untainted")
    );
    assert_eq!(
        k.ok(&["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"])
            .await
            .trim(),
        "pod/web condition met",
        "scheduled once the taint is gone"
    );
    sim.shutdown().await;
}
