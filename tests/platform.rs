//! The platform on one node, end to end: warm and unshared cache slots, waiting for room on a
//! busy node, failing at once when a pod can never fit, and caches a non-root job can write.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arc_hook::sim::SimConfig;
use common::{HookRun, Runner, job_args, sim_config};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/templates/cpu.yaml");
const SLOT_LABEL: &str = "arc-hook.dev/cache-slot";

/// A simulator whose node has `cpu` cores, with the Hugging Face claim the template mounts.
fn node_with(cpu: &str, hf: &Path) -> SimConfig {
    let mut cfg = sim_config();
    cfg.node_allocatable.insert("cpu".into(), cpu.into());
    cfg.pvc_dirs
        .insert("huggingface-runner-pvc".into(), hf.to_path_buf());
    cfg
}

/// A second runner in the same simulator: its pod, and hook calls made as it (sharing the first
/// runner's work directory, which is all the simulator needs).
struct Other<'a> {
    r: &'a Runner,
    name: &'static str,
    /// What the runner tells the hook about the run (e.g. GITHUB_EVENT_NAME).
    run_env: Vec<(&'static str, &'static str)>,
}

impl Other<'_> {
    async fn new<'a>(r: &'a Runner, name: &'static str) -> Other<'a> {
        r.create_runner_pod(name).await;
        Other {
            r,
            name,
            run_env: Vec::new(),
        }
    }

    fn env(&self, template: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("ACTIONS_RUNNER_POD_NAME", self.name.to_string()),
            ("ACTIONS_RUNNER_CLAIM_NAME", format!("{}-work", self.r.name)),
            (
                "ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE",
                template.to_string(),
            ),
        ]
        .into_iter()
        .chain(self.run_env.iter().map(|(k, v)| (*k, v.to_string())))
        .collect()
    }

    async fn hook(&self, input: Value, template: &'static str) -> HookRun {
        let env = self.env(template);
        let extra: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.r.hook_with_env(&input, &extra).await
    }

    async fn prepare(&self, template: &'static str) -> HookRun {
        let response = self
            .r
            .work
            .join(format!("_temp/prepare-{}.json", self.name));
        std::fs::write(&response, b"").expect("response file");
        let input = json!({"command": "prepare_job", "responseFile": response, "state": {},
                           "args": job_args("ubuntu:24.04", json!([]))});
        self.hook(input, template).await
    }

    async fn script(&self, script: &str) -> HookRun {
        let file = format!("{}-{}.sh", self.name, script.len());
        std::fs::write(self.r.work.join("_temp").join(&file), script).expect("script");
        let input = json!({
            "command": "run_script_step", "responseFile": null,
            "state": {"jobPod": format!("{}-workflow", self.name)},
            "args": {"entryPoint": "bash", "entryPointArgs": ["-e", format!("/__w/_temp/{file}")],
                     "environmentVariables": {}, "prependPath": [], "workingDirectory": "/__w/repo/repo"}
        });
        self.hook(input, TEMPLATE).await
    }

    async fn cleanup(&self) -> HookRun {
        let input = json!({"command": "cleanup_job", "responseFile": null,
                           "state": {"jobPod": format!("{}-workflow", self.name)}, "args": {}});
        self.hook(input, TEMPLATE).await
    }

    async fn pod(&self) -> Pod {
        self.r
            .pods()
            .await
            .get(&format!("{}-workflow", self.name))
            .await
            .expect("workflow pod")
    }

    async fn slot(&self) -> String {
        self.pod().await.metadata.labels.expect("labels")[SLOT_LABEL].clone()
    }
}

/// The node's uv cache directory of `slot` (the template's hostPath, under the simulator's state).
fn uv_slot(r: &Runner, slot: &str) -> PathBuf {
    r.sim
        .state_dir()
        .join("hostpath/var/cache/arc-hook/untrusted/uv")
        .join(format!("slot-{slot}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_jobs_of_different_runners_share_a_warm_uv_cache() {
    let hf = tempfile::tempdir().expect("hf");
    let r = Runner::start(node_with("64", hf.path())).await;
    let a = Other::new(&r, "runner-a").await;
    let b = Other::new(&r, "runner-b").await;

    let run = a.prepare(TEMPLATE).await;
    run.assert_ok();
    assert!(
        run.stdout.contains("arc-hook: workflow pod ready after"),
        "the start-up line is in the job log:\n{}",
        run.stdout
    );
    let annotations = a.pod().await.metadata.annotations.unwrap_or_default();
    let startup: Value =
        serde_json::from_str(&annotations["arc-hook.dev/startup"]).expect("startup annotation");
    assert!(startup["readySeconds"].as_f64().is_some(), "{startup}");
    assert!(
        startup["pullSeconds"]
            .as_object()
            .is_some_and(|p| p.contains_key("ubuntu:24.04")),
        "{startup}"
    );
    assert_eq!(a.slot().await, "0");
    a.script("echo warm > /mnt/cache/uv/wheel-from-a\n")
        .await
        .assert_ok();
    a.cleanup().await.assert_ok();

    b.prepare(TEMPLATE).await.assert_ok();
    assert_eq!(
        b.slot().await,
        "0",
        "the next job on the node reuses slot 0"
    );
    let seen = b.script("cat /mnt/cache/uv/wheel-from-a\n").await;
    seen.assert_ok();
    assert!(seen.stdout.contains("warm"), "{}", seen.stdout);
    assert!(uv_slot(&r, "0").join("wheel-from-a").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_on_one_node_never_share_a_uv_cache() {
    let hf = tempfile::tempdir().expect("hf");
    let r = Runner::start(node_with("64", hf.path())).await;
    let a = Other::new(&r, "runner-a").await;
    let b = Other::new(&r, "runner-b").await;
    let c = Other::new(&r, "runner-c").await;

    // Two runners racing for the lowest slot: both start, on different slots.
    let (ra, rb) = tokio::join!(a.prepare(TEMPLATE), b.prepare(TEMPLATE));
    ra.assert_ok();
    rb.assert_ok();
    let mut slots = vec![a.slot().await, b.slot().await];
    slots.sort();
    assert_eq!(slots, ["0", "1"]);

    a.script("echo a > /mnt/cache/uv/owner\n").await.assert_ok();
    let in_b = b
        .script("test ! -e /mnt/cache/uv/owner && echo clean\n")
        .await;
    in_b.assert_ok();
    assert!(in_b.stdout.contains("clean"), "{}", in_b.stdout);

    // A third job while both run takes slot 2; once A ends, its slot is the lowest free again.
    c.prepare(TEMPLATE).await.assert_ok();
    assert_eq!(c.slot().await, "2");
    let a_slot = a.slot().await;
    a.cleanup().await.assert_ok();
    c.cleanup().await.assert_ok();
    c.prepare(TEMPLATE).await.assert_ok();
    assert_eq!(c.slot().await, a_slot);
}

/// `sh -ec <script>` as the runner sends it: one command line cut at spaces.
fn script_tokens(script: &str) -> Vec<String> {
    arc_hook::runner_args::runner_script_tokens(&format!("-ec \"{}\"", script.replace('"', "\\\"")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_as_uid_1001_writes_every_cache() {
    if !common::require_root("running the job as another user") {
        return;
    }
    let hf = tempfile::tempdir().expect("hf");
    // The shared Hugging Face cache's ownership is set once, as
    // deploy/storage/huggingface-permissions-job.yaml does (jobs never touch it).
    for (cmd, args) in [("chgrp", ["-R", "30000"]), ("chmod", ["-R", "g+rwX"])] {
        let ok = std::process::Command::new(cmd)
            .args(args)
            .arg(hf.path())
            .status()
            .expect(cmd);
        assert!(ok.success(), "{cmd}");
    }
    let ok = std::process::Command::new("chmod")
        .arg("g+s")
        .arg(hf.path())
        .status()
        .expect("chmod g+s");
    assert!(ok.success());
    let r = Runner::start(node_with("64", hf.path())).await;
    // The runner's _work belongs to the runner user, as in the runner image.
    let chown = std::process::Command::new("chown")
        .args(["-R", "1001:1001"])
        .arg(&r.work)
        .status()
        .expect("chown");
    assert!(chown.success());
    let template = r.home.path().join("uid-1001.yaml");
    let text = std::fs::read_to_string(TEMPLATE)
        .expect("template")
        .replacen(
            "    - name: $job\n",
            "    - name: $job\n      securityContext: {runAsUser: 1001, runAsGroup: 1001}\n",
            1,
        );
    std::fs::write(&template, text).expect("write template");
    let template: &'static str = Box::leak(template.to_string_lossy().to_string().into_boxed_str());

    let a = Other::new(&r, "runner-a").await;
    a.prepare(template).await.assert_ok();
    let input = json!({
        "command": "run_script_step", "responseFile": null,
        "state": {"jobPod": "runner-a-workflow"},
        "args": {"entryPoint": "sh", "entryPointArgs": script_tokens(
            "id -u; for d in \"$HF_HOME\" \"$CCACHE_DIR\" \"$UV_CACHE_DIR\"; do mkdir -p \"$d/by-1001\" && echo ok > \"$d/by-1001/f\"; done; echo wrote-all"),
                 "environmentVariables": {}, "prependPath": [], "workingDirectory": "/__w/repo/repo"}
    });
    let run = a.hook(input, template).await;
    run.assert_ok();
    assert!(run.stdout.starts_with("1001"), "{}", run.stdout);
    assert!(run.stdout.contains("wrote-all"), "{}", run.stdout);
    assert!(hf.path().join("by-1001/f").is_file());
    assert!(uv_slot(&r, "0").join("by-1001/f").is_file());

    // A later job as another UID can still write what UID 1001 left in the slot.
    a.cleanup().await.assert_ok();
    let other = std::fs::read_to_string(template)
        .expect("template")
        .replace(
            "runAsUser: 1001, runAsGroup: 1001",
            "runAsUser: 1002, runAsGroup: 1002",
        );
    std::fs::write(template, other).expect("template");
    a.prepare(template).await.assert_ok();
    let input = json!({
        "command": "run_script_step", "responseFile": null,
        "state": {"jobPod": "runner-a-workflow"},
        "args": {"entryPoint": "sh", "entryPointArgs": script_tokens(
            "id -u; echo again > \"$UV_CACHE_DIR/by-1001/f\"; echo again > \"$CCACHE_DIR/by-1001/f\"; echo rewrote"),
                 "environmentVariables": {}, "prependPath": [], "workingDirectory": "/__w/repo/repo"}
    });
    let run = a.hook(input, template).await;
    run.assert_ok();
    assert!(run.stdout.starts_with("1002"), "{}", run.stdout);
    assert!(run.stdout.contains("rewrote"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_does_not_fit_waits_until_a_pod_on_the_node_ends() {
    let hf = tempfile::tempdir().expect("hf");
    // Room for one 4-core job.
    let r = Runner::start(node_with("6", hf.path())).await;
    let a = Other::new(&r, "runner-a").await;
    let b = Other::new(&r, "runner-b").await;
    a.prepare(TEMPLATE).await.assert_ok();

    let free_a_once_b_waits = async {
        let pods = r.pods().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let waiting = pods
                .get_opt("runner-b-workflow")
                .await
                .ok()
                .flatten()
                .and_then(|p| p.status?.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "PodScheduled" && c.status == "False")
                });
            if waiting {
                break;
            }
            assert!(Instant::now() < deadline, "runner-b's pod never waited");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        a.cleanup().await.assert_ok();
    };
    let (run, ()) = tokio::join!(b.prepare(TEMPLATE), free_a_once_b_waits);
    run.assert_ok();
    assert!(
        run.stdout.contains("is waiting for the scheduler")
            && run
                .stdout
                .contains("0/1 nodes are available: 1 Insufficient cpu."),
        "the job log gives the scheduler's reason:\n{}",
        run.stdout
    );
    let started = b.script("echo running\n").await;
    started.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_can_never_fit_fails_at_once_naming_the_reason() {
    let hf = tempfile::tempdir().expect("hf");
    let r = Runner::start(node_with("2", hf.path())).await;
    let a = Other::new(&r, "runner-a").await;
    let started = Instant::now();
    let run = a.prepare(TEMPLATE).await;
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("can never be scheduled") && run.stderr.contains("Insufficient cpu"),
        "{}",
        run.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failed at once, not after the grace period"
    );
    assert!(
        r.pods_of("runner-a").await.is_empty(),
        "nothing is left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_rejects_a_bound_pod_that_does_not_fit() {
    let hf = tempfile::tempdir().expect("hf");
    let r = Runner::start(node_with("2", hf.path())).await;
    let pods = r.pods().await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pinned"},
        "spec": {"nodeName": "sim-node-1", "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"],
                                 "resources": {"requests": {"cpu": "3"}}}]}
    }))
    .expect("pod");
    pods.create(&Default::default(), &pod)
        .await
        .expect("created");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let p = pods.get("pinned").await.expect("pod");
        let s = p.status.unwrap_or_default();
        if s.phase.as_deref() == Some("Failed") || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("OutOfcpu"));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000"
        )
    );
}

/// A pull request's job cannot plant cache entries that a default-branch build then reads (issue
/// 29.6): `${CACHE_TRUST}` gives runs of protected refs their own node caches, while jobs of one
/// trust still share theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_request_jobs_cannot_write_caches_that_default_branch_jobs_read() {
    const PR: &[(&str, &str)] = &[
        ("GITHUB_EVENT_NAME", "pull_request"),
        ("GITHUB_REF_PROTECTED", "false"),
    ];
    const MAIN: &[(&str, &str)] = &[
        ("GITHUB_EVENT_NAME", "push"),
        ("GITHUB_REF_PROTECTED", "true"),
    ];
    let plant = r#"for d in "$CCACHE_DIR" "$UV_CACHE_DIR"; do echo evil > "$d/planted"; done; echo planted"#;
    let look = r#"for d in "$CCACHE_DIR" "$UV_CACHE_DIR"; do [ -e "$d/planted" ] && echo "sees $d"; done; echo looked"#;
    let hf = tempfile::tempdir().expect("hf");
    let r = Runner::start(node_with("64", hf.path())).await;
    let mut a = Other::new(&r, "runner-a").await;

    let mut job = async |env: &'static [(&'static str, &'static str)], script: &str| {
        a.run_env = env.to_vec();
        a.prepare(TEMPLATE).await.assert_ok();
        let run = a.script(script).await;
        run.assert_ok();
        a.cleanup().await.assert_ok();
        run.stdout
    };
    let planted = job(PR, plant).await;
    assert!(planted.contains("planted"), "{planted}");
    let main_sees = job(MAIN, look).await;
    assert!(main_sees.contains("looked"), "{main_sees}");
    assert!(
        !main_sees.contains("sees"),
        "a default-branch job reads what a pull request wrote:\n{main_sees}"
    );
    // Within one trust the caches stay shared (and warm): the next pull request sees the entry.
    let pr_sees = job(PR, look).await;
    assert!(
        pr_sees.contains("sees /mnt/cache/ccache") && pr_sees.contains("sees /mnt/cache/uv"),
        "{pr_sees}"
    );
    let node = r.sim.state_dir().join("hostpath/var/cache/arc-hook");
    assert!(node.join("untrusted/ccache/planted").is_file());
    assert!(!node.join("trusted/ccache/planted").exists());
    assert!(!node.join("trusted/uv/slot-0/planted").exists());
}
