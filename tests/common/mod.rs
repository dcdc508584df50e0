//! End-to-end harness: a runner home, the embedded simulator with the work claim backed by that
//! home's `_work`, a runner pod, and the real `arc-hook` binary invoked through the shipped
//! wrapper with JSON on stdin, exactly as the runner invokes it.
#![allow(dead_code)]

pub mod cluster;
pub mod prerequisite;

// Not every test binary that includes this harness needs a prerequisite.
#[allow(unused_imports)]
pub use prerequisite::{require, require_program, require_root};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use arc_hook::sim::{SimConfig, Simulator};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

pub const RUNNER: &str = "arc-runner-test";

/// What one hook invocation did.
#[derive(Debug)]
pub struct HookRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl HookRun {
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "hook failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A simulated runner: its home, the simulator, and the state prepare_job returned.
pub struct Runner {
    pub sim: Simulator,
    pub home: tempfile::TempDir,
    pub work: PathBuf,
    pub kubeconfig: PathBuf,
    pub name: String,
    pub env: BTreeMap<String, String>,
    pub state: Option<Value>,
    step_counter: std::sync::atomic::AtomicUsize,
}

/// deploy/rbac/role.yaml: the Role as written, and its rules as the simulator enforces them.
pub fn deploy_role() -> (
    k8s_openapi::api::rbac::v1::Role,
    Vec<arc_hook::sim::PolicyRule>,
) {
    let path = cluster::repo().join("deploy/rbac/role.yaml");
    let role: k8s_openapi::api::rbac::v1::Role = serde_yaml_ng::from_str(
        &std::fs::read_to_string(&path).expect("read deploy/rbac/role.yaml"),
    )
    .expect("deploy/rbac/role.yaml is a Role");
    let rules = role
        .rules
        .iter()
        .flatten()
        .map(|r| arc_hook::sim::PolicyRule::from_role_rule(r).expect("deploy/rbac/role.yaml"))
        .collect();
    (role, rules)
}

pub fn sim_config() -> SimConfig {
    SimConfig {
        start_delay: Duration::from_millis(50),
        ..Default::default()
    }
}

impl Runner {
    /// Starts a simulator from `cfg` (its `pvc_dirs` gets this runner's work claim) and a runner pod.
    pub async fn start(cfg: SimConfig) -> Runner {
        Self::start_named(cfg, RUNNER).await
    }

    pub async fn start_named(mut cfg: SimConfig, name: &str) -> Runner {
        let home = tempfile::tempdir().expect("runner home");
        let work = home.path().join("_work");
        for d in [
            "_temp/_runner_file_commands",
            "_temp/_github_home",
            "_temp/_github_workflow",
            "_actions",
            "_tool",
            "repo/repo",
        ] {
            std::fs::create_dir_all(work.join(d)).expect("mkdir");
        }
        std::fs::create_dir_all(home.path().join("externals/node20/bin")).expect("mkdir");
        std::fs::write(
            home.path().join("externals/node20/bin/node"),
            "#!/bin/sh\necho fake node \"$@\"\n",
        )
        .expect("write");
        cfg.pvc_dirs.insert(format!("{name}-work"), work.clone());
        let sim = Simulator::start(cfg).await.expect("simulator starts");
        let kubeconfig = home.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let runner = Runner {
            sim,
            work: work.clone(),
            kubeconfig: kubeconfig.clone(),
            name: name.to_string(),
            env: BTreeMap::from([
                ("ACTIONS_RUNNER_POD_NAME".to_string(), name.to_string()),
                (
                    "KUBECONFIG".to_string(),
                    kubeconfig.to_string_lossy().to_string(),
                ),
                (
                    "RUNNER_WORKSPACE".to_string(),
                    work.join("repo").to_string_lossy().to_string(),
                ),
                (
                    "GITHUB_WORKSPACE".to_string(),
                    work.join("repo/repo").to_string_lossy().to_string(),
                ),
                (
                    "RUNNER_TEMP".to_string(),
                    work.join("_temp").to_string_lossy().to_string(),
                ),
                (
                    "ARC_HOOK_BIN".to_string(),
                    env!("CARGO_BIN_EXE_arc-hook").to_string(),
                ),
                (
                    "ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS".to_string(),
                    "60".to_string(),
                ),
            ]),
            home,
            state: None,
            step_counter: Default::default(),
        };
        runner.create_runner_pod(name).await;
        runner
    }

    /// A second runner pod in the same simulator (it shares nothing else with this one).
    pub async fn create_runner_pod(&self, name: &str) {
        let pods: kube::Api<Pod> = kube::Api::default_namespaced(self.sim.client().await);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "runner", "image": "runner:test", "command": ["sleep", "infinity"]}], "restartPolicy": "Never"}
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("runner pod created");
    }

    /// This runner's workflow (job) pod as the API has it now.
    pub async fn job_pod(&self) -> Pod {
        self.pods()
            .await
            .get(&format!("{}-workflow", self.name))
            .await
            .expect("the workflow pod exists")
    }

    /// A script step (no step env) that must succeed; what it printed.
    pub async fn step_ok(&self, script: &str) -> HookRun {
        let run = self.script_step(script, json!({})).await;
        run.assert_ok();
        run
    }

    pub async fn pods(&self) -> kube::Api<Pod> {
        kube::Api::default_namespaced(self.sim.client().await)
    }

    /// Names of pods labelled for runner `name`.
    pub async fn pods_of(&self, name: &str) -> Vec<String> {
        let lp = ListParams::default().labels(&format!("runner-pod={name}"));
        self.pods()
            .await
            .list(&lp)
            .await
            .expect("list pods")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    pub async fn secrets_of(&self, name: &str) -> Vec<String> {
        let api: kube::Api<Secret> = kube::Api::default_namespaced(self.sim.client().await);
        let lp = ListParams::default().labels(&format!("runner-pod={name}"));
        api.list(&lp)
            .await
            .expect("list secrets")
            .items
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect()
    }

    /// Runs the hook through the wrapper with `input` on stdin and `extra` env on top.
    pub async fn hook_with_env(&self, input: &Value, extra: &[(&str, &str)]) -> HookRun {
        let wrapper = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/arc-hook.sh");
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg(wrapper)
            .env_remove("KUBERNETES_SERVICE_HOST")
            // ${CACHE_TRUST} comes from these; a test that wants a trust sets them in `extra`.
            .env_remove("GITHUB_EVENT_NAME")
            .env_remove("GITHUB_REF_PROTECTED")
            .envs(&self.env)
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("hook starts");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(&serde_json::to_vec(input).expect("json"))
            .await
            .expect("stdin written");
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .expect("the hook finishes within 180s")
            .expect("hook output");
        HookRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    pub async fn hook(&self, input: &Value) -> HookRun {
        self.hook_with_env(input, &[]).await
    }

    /// prepare_job with `args`; remembers the returned state for later commands.
    pub async fn prepare_with_env(
        &mut self,
        args: Value,
        extra: &[(&str, &str)],
    ) -> (HookRun, Option<Value>) {
        let response = self.work.join("_temp/_runner_hook_responses/prepare.json");
        std::fs::create_dir_all(response.parent().expect("parent")).expect("mkdir");
        std::fs::write(&response, b"").expect("empty response file");
        let input =
            json!({"command": "prepare_job", "responseFile": response, "state": {}, "args": args});
        let run = self.hook_with_env(&input, extra).await;
        let resp = if run.code == 0 {
            let v: Value = serde_json::from_slice(&std::fs::read(&response).expect("response"))
                .expect("response is JSON");
            self.state = Some(v["state"].clone());
            Some(v)
        } else {
            None
        };
        (run, resp)
    }

    pub async fn prepare(&mut self, args: Value) -> (HookRun, Option<Value>) {
        self.prepare_with_env(args, &[]).await
    }

    /// run_script_step running `script` with bash, as the runner does (the script is written to `_temp`).
    pub async fn script_step(&self, script: &str, env: Value) -> HookRun {
        self.script_step_with(script, env, json!([]), &[]).await
    }

    pub async fn script_step_with(
        &self,
        script: &str,
        env: Value,
        prepend: Value,
        extra: &[(&str, &str)],
    ) -> HookRun {
        let n = self
            .step_counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("step-{n}.sh");
        std::fs::write(self.work.join("_temp").join(&name), script).expect("script written");
        let input = json!({
            "command": "run_script_step",
            "responseFile": null,
            "state": self.state.clone().unwrap_or(json!({})),
            "args": {
                "entryPoint": "bash",
                "entryPointArgs": ["--noprofile", "--norc", "-e", "-o", "pipefail", format!("/__w/_temp/{name}")],
                "environmentVariables": env,
                "prependPath": prepend,
                "workingDirectory": "/__w/repo/repo"
            }
        });
        self.hook_with_env(&input, extra).await
    }

    /// The frame most tests share, first half: a runner on a fresh simulator (from `cfg`) whose
    /// prepare_job for `args` succeeded.
    pub async fn prepared(cfg: SimConfig, args: Value) -> Runner {
        let mut r = Runner::start(cfg).await;
        r.prepare(args).await.0.assert_ok();
        r
    }

    /// The frame's second half: cleanup_job succeeds, nothing labelled for this runner is left
    /// (pods, secrets), and the simulator stops.
    pub async fn clean_up(self) {
        self.cleanup().await.assert_ok();
        assert_eq!(
            self.pods_of(&self.name).await,
            Vec::<String>::new(),
            "pods left"
        );
        assert_eq!(
            self.secrets_of(&self.name).await,
            Vec::<String>::new(),
            "secrets left"
        );
        self.sim.shutdown().await;
    }

    pub async fn cleanup(&self) -> HookRun {
        let input = json!({"command": "cleanup_job", "responseFile": null, "state": self.state.clone().unwrap_or(json!({})), "args": {}});
        self.hook(&input).await
    }

    pub fn runner_path(&self, rel: &str) -> PathBuf {
        self.work.join(rel)
    }

    /// Waits (at most 20 s) until a file named `name` shows up in the job pod's `_temp`: the
    /// runner's own `_work` in claim mode, an emptyDir under the simulator's state in copy mode.
    pub async fn wait_for_pod_file(&self, name: &str) -> bool {
        fn find(dir: &std::path::Path, name: &str, depth: u32) -> bool {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return false;
            };
            entries.flatten().any(|e| {
                e.file_name() == name
                    || (depth > 0
                        && e.file_type().is_ok_and(|t| t.is_dir())
                        && find(&e.path(), name, depth - 1))
            })
        }
        for _ in 0..400 {
            if find(&self.work.join("_temp"), name, 0) || find(self.sim.state_dir(), name, 8) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// A step that counts its runs in `_temp/ran-count`, prints, stays silent for 4 s, prints again and exits 7.
pub const SILENT_STEP: &str =
    "echo ran >> /__w/_temp/ran-count\necho before\nsleep 4\necho after\nexit 7\n";

/// A step that counts its runs in `_temp/ran-count` and prints 40 numbered lines over about 4 s.
pub const CHATTY_STEP: &str =
    "echo ran >> /__w/_temp/ran-count\nfor i in $(seq 1 40); do echo line $i; sleep 0.1; done\n";

/// Runs `SILENT_STEP` behind a 2 s exec idle timeout: the full log, exit 7, one run.
pub async fn silent_step_outlives_idle_timeout(r: &Runner) {
    r.sim
        .faults()
        .update(|f| f.exec_idle_timeout = Some(Duration::from_secs(2)));
    let s = r.script_step(SILENT_STEP, json!({})).await;
    r.sim.faults().clear();
    assert_eq!(s.code, 7, "{s:?}");
    let lines: Vec<&str> = s.stdout.lines().filter(|l| !l.is_empty()).collect();
    // The step's output, then the hook's last line: the step's own failure.
    assert_eq!(
        lines,
        [
            "before",
            "after",
            "arc-hook: step failed: the step's own command exited with code 7; not an infrastructure failure"
        ],
        "{s:?}"
    );
    assert!(
        s.stderr.contains("reattaching"),
        "the stream was cut: {s:?}"
    );
    assert_eq!(
        std::fs::read_to_string(r.runner_path("_temp/ran-count")).expect("ran-count"),
        "ran\n",
        "the step ran exactly once"
    );
}

/// Runs `CHATTY_STEP` while its exec stream is cut three times and the API server restarts
/// once: every line once, in order, one run.
pub async fn chatty_step_survives_cuts_and_an_api_restart(r: &Runner) {
    let step = r.script_step(CHATTY_STEP, json!({}));
    let storm = async {
        assert!(r.wait_for_pod_file("ran-count").await, "the step started");
        r.sim.faults().update(|f| {
            f.exec_drop_after_bytes = Some(60);
            f.exec_drops_left = Some(3);
        });
        tokio::time::sleep(Duration::from_millis(800)).await;
        r.sim.restart_api(Duration::from_secs(2));
    };
    let (s, ()) = tokio::join!(step, storm);
    let drops_left = r.sim.faults().get().exec_drops_left;
    r.sim.faults().clear();
    s.assert_ok();
    let lines: Vec<String> = s
        .stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (1..=40).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want, "{}", s.stderr);
    assert_eq!(drops_left, Some(0), "three cuts happened");
    assert_eq!(
        std::fs::read_to_string(r.runner_path("_temp/ran-count")).expect("ran-count"),
        "ran\n",
        "the step ran exactly once"
    );
}

/// prepare_job args for a job container with optional services.
pub fn job_args(image: &str, services: Value) -> Value {
    json!({
        "container": {
            "image": image,
            "workingDirectory": "/__w/repo/repo",
            "createOptions": null,
            "environmentVariables": {"FROM_PREPARE": "yes"},
            "entryPoint": null,
            "entryPointArgs": null,
            "userMountVolumes": [],
            "systemMountVolumes": [],
            "registry": null,
            "portMappings": []
        },
        "services": services
    })
}
