//! Cancelled steps stop in the pod, a step's output keeps its order, and the last line tells a step's own failure from the hook's: the real binary on the simulator.

mod common;

use std::process::Command;

use common::{Runner, job_args, sim_config};
use serde_json::json;

/// Replays `job` (a directory under fixtures/jobs) on the simulator with `env` on top.
fn replay(job: &str, env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["replay", &format!("fixtures/jobs/{job}")])
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .output()
        .expect("arc-hook runs");
    // The hook's output and the replay's lines, as one log.
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), log)
}

/// What every cancelled replay shows: the hook stopped the step and exited on the runner's
/// first signal (it never needed the runner's SIGTERM or kill), later steps are skipped, the
/// `always` post step finds the step's background child gone, and cleanup succeeds.
fn assert_cancelled_cleanly(code: i32, log: &str, step: &str, stopped: &str) {
    assert_eq!(
        code, 130,
        "the cancelled step's code is the replay's\n{log}"
    );
    assert!(
        log.contains(&format!("{step}: cancelled: SIGINT to the hook after")),
        "{log}"
    );
    assert!(
        !log.contains("SIGTERM to the hook") && !log.contains("SIGKILL to the hook"),
        "the hook outlived the runner's grace:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "arc-hook: cancelled: the runner sent SIGINT; {stopped}"
        )),
        "{log}"
    );
    assert!(
        log.contains("post step: the cancelled step's processes are gone"),
        "{log}"
    );
    assert!(log.contains("cleanup_job exited 0"), "{log}");
    assert!(!log.contains("was not stopped"), "{log}");
}

#[test]
fn a_cancelled_script_step_stops_in_the_pod_claim_mode() {
    let (code, log) = replay("cancel-step", &[]);
    assert_cancelled_cleanly(code, &log, "02-long-step.json", "stopped the step's");
    // The step and its child ignore TERM: KILL after the grace ended them.
    assert!(log.contains("TERM, then KILL for"), "{log}");
    assert!(
        log.contains("03-skipped-step.json: run_script_step skipped"),
        "{log}"
    );
    assert!(!log.contains("must not run after a cancel"), "{log}");
}

#[test]
fn a_cancelled_script_step_stops_in_the_pod_no_volume_mode() {
    let (code, log) = replay("cancel-step", &[("ARC_HOOK_WORK_VOLUME", "copy")]);
    assert_cancelled_cleanly(code, &log, "02-long-step.json", "stopped the step's");
}

#[test]
fn a_cancelled_container_step_job_is_deleted() {
    let (code, log) = replay("cancel-container-step", &[]);
    assert_cancelled_cleanly(
        code,
        &log,
        "02-long-container-step.json",
        "deleted the step's Job arc-runner-step-",
    );
}

#[test]
fn a_step_failure_ends_with_its_own_line() {
    let (code, log) = replay("failing-step", &[]);
    assert_eq!(code, 3, "{log}");
    let before_finish = log
        .lines()
        .take_while(|l| !l.starts_with("── 02-fail.json: run_script_step exited"))
        .last()
        .unwrap_or_default();
    assert_eq!(
        before_finish,
        "arc-hook: step failed: the step's own command exited with code 3; not an infrastructure failure",
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infrastructure_failure_ends_with_its_own_line() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    r.sim
        .evict_pod("default", "arc-runner-test-workflow")
        .await
        .expect("evicted");
    let s = r.script_step("echo never\n", json!({})).await;
    assert_ne!(s.code, 0);
    let last = s.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("arc-hook: infrastructure failure: the hook could not run the step"),
        "stdout:\n{}\nstderr:\n{}",
        s.stdout,
        s.stderr
    );
    assert!(!s.stdout.contains("arc-hook: step failed:"), "{}", s.stdout);
    r.clean_up().await;
}

async fn interleaved_output_keeps_its_order(copy: bool) {
    let mut r = Runner::start(sim_config()).await;
    if copy {
        r.env
            .insert("ARC_HOOK_WORK_VOLUME".to_string(), "copy".to_string());
    }
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let s = r
        .step_ok("echo out-1; echo err-2 >&2; echo out-3; sleep 0.2; echo err-4 >&2; echo out-5\n")
        .await;
    assert!(
        s.stdout.contains("out-1\nerr-2\nout-3\nerr-4\nout-5\n"),
        "stdout:\n{}\nstderr:\n{}",
        s.stdout,
        s.stderr
    );
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_stdout_and_stderr_arrive_in_order_claim_mode() {
    interleaved_output_keeps_its_order(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_stdout_and_stderr_arrive_in_order_no_volume_mode() {
    interleaved_output_keeps_its_order(true).await;
}

/// Starts the hook on `input` as the runner does (the wrapper, the JSON on stdin) without
/// waiting for it.
async fn spawn_hook(r: &Runner, input: &serde_json::Value) -> tokio::process::Child {
    use tokio::io::AsyncWriteExt;
    let mut hook = tokio::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/arc-hook.sh"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(&r.env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hook starts");
    let mut stdin = hook.stdin.take().expect("stdin");
    stdin
        .write_all(&serde_json::to_vec(input).expect("json"))
        .await
        .expect("stdin written");
    drop(stdin);
    hook
}

/// Sends the runner's first cancel signal (SIGINT) and waits for the hook, which must end before
/// the runner would send its SIGTERM (7.5 s later). Returns its exit code and stdout + stderr.
async fn cancel_hook(hook: tokio::process::Child) -> (Option<i32>, String, String) {
    use std::time::{Duration, Instant};
    let pid = hook.id().expect("the hook runs") as i32;
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT sent");
    let out = tokio::time::timeout(Duration::from_secs(10), hook.wait_with_output())
        .await
        .expect("the hook ends before the runner's kill (10 s after its SIGINT)")
        .expect("hook output");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        signalled.elapsed() < Duration::from_millis(7500),
        "the runner would have sent SIGTERM: {:?}\n{stdout}{stderr}",
        signalled.elapsed()
    );
    (out.status.code(), stdout, stderr)
}

fn container_step(r: &Runner, image: Option<&str>, dockerfile: Option<&str>) -> serde_json::Value {
    json!({
        "command": "run_container_step",
        "responseFile": null,
        "state": r.state.clone(),
        "args": {
            "image": image, "dockerfile": dockerfile,
            "entryPoint": null, "entryPointArgs": [],
            "workingDirectory": "/github/workspace", "createOptions": null,
            "environmentVariables": {},
            "userMountVolumes": [], "systemMountVolumes": [],
            "registry": null, "portMappings": []
        }
    })
}

/// A container step (an ephemeral container of the job pod, as the simulator's default Role
/// allows) whose background child ignores TERM, cancelled once it runs: the hook stops its
/// processes inside the container before the runner would escalate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_ephemeral_container_step_stops_its_processes() {
    use std::time::Duration;
    let mut cfg = sim_config();
    cfg.image_commands.insert(
        "long-action:1".to_string(),
        [
            "sh",
            "-c",
            "(trap '' TERM; while :; do echo t >> /github/workspace/ticks; sleep 0.1; done) & echo started > /github/workspace/started; sleep 600",
        ]
        .map(String::from)
        .to_vec(),
    );
    let r = Runner::prepared(cfg, job_args("ubuntu:24.04", json!([]))).await;
    let hook = spawn_hook(&r, &container_step(&r, Some("long-action:1"), None)).await;
    let started = r.runner_path("repo/repo/started");
    let ticks = r.runner_path("repo/repo/ticks");
    for _ in 0..200 {
        if started.exists() && ticks.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ticks.exists(), "the container step never ran");
    let (code, stdout, stderr) = cancel_hook(hook).await;
    assert_eq!(code, Some(130), "{stdout}{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("arc-hook: cancelled: the runner sent SIGINT; stopped the step's")
            && last.contains("in container step-"),
        "{stdout}{stderr}"
    );
    let before = std::fs::read_to_string(&ticks).expect("ticks").len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = std::fs::read_to_string(&ticks).expect("ticks").len();
    assert_eq!(before, after, "the step's background child still runs");
    r.clean_up().await;
}

/// No-volume mode under ARC's novolume Role: a container step runs in a pod of its own; cancelled
/// once it runs, the pod is deleted (its processes with it) before the runner would escalate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_step_pod_is_deleted() {
    use std::time::Duration;
    let mut cfg = sim_config();
    cfg.rbac = Some(arc_hook::sim::arc_chart_novolume_role());
    cfg.image_commands.insert(
        "long-action:1".to_string(),
        ["sh", "-c", "echo long action started; sleep 600"]
            .map(String::from)
            .to_vec(),
    );
    let mut r = Runner::start(cfg).await;
    r.env
        .insert("ARC_HOOK_WORK_VOLUME".to_string(), "copy".to_string());
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let hook = spawn_hook(&r, &container_step(&r, Some("long-action:1"), None)).await;
    let pods = r.pods().await;
    let running = |p: &k8s_openapi::api::core::v1::Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == "step"))
            .and_then(|c| c.state.as_ref())
            .is_some_and(|st| st.running.is_some())
    };
    let mut step_pod = None;
    for _ in 0..200 {
        for name in r.pods_of(&r.name).await {
            if name.contains("-step-") && pods.get(&name).await.is_ok_and(|p| running(&p)) {
                step_pod = Some(name);
            }
        }
        if step_pod.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let step_pod = step_pod.expect("the step's container never ran in its own pod");
    let (code, stdout, stderr) = cancel_hook(hook).await;
    assert_eq!(code, Some(130), "{stdout}{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "arc-hook: cancelled: the runner sent SIGINT; deleted the step's pod {step_pod}, which stops it"
        ),
        "{stdout}{stderr}"
    );
    let mut gone = false;
    for _ in 0..100 {
        if pods.get_opt(&step_pod).await.expect("get").is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the step's pod {step_pod} is gone");
    r.clean_up().await;
}

/// A Dockerfile action cancelled while its image builds: the builder pod is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_image_build_deletes_its_builder_pod() {
    use std::time::Duration;
    const BUILDER: &str = "mirror.internal/kaniko/executor:v1";
    let mut cfg = sim_config();
    cfg.image_commands.insert(
        BUILDER.to_string(),
        ["sh", "-c", "echo building; sleep 600", "executor"]
            .map(String::from)
            .to_vec(),
    );
    let mut r = Runner::start(cfg).await;
    for (k, v) in [
        ("ARC_HOOK_BUILDER", "kaniko"),
        ("ARC_HOOK_BUILDER_IMAGE", BUILDER),
        ("ARC_HOOK_BUILD_REGISTRY", "harbor.internal/ci-actions"),
    ] {
        r.env.insert(k.to_string(), v.to_string());
    }
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let dir = r.runner_path("_actions/example-org/slow-action/v1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("Dockerfile"), "FROM alpine:3.19\n").expect("Dockerfile");
    let dockerfile = dir.join("Dockerfile").to_string_lossy().to_string();
    let hook = spawn_hook(&r, &container_step(&r, None, Some(&dockerfile))).await;
    let pods = r.pods().await;
    let lp = kube::api::ListParams::default().labels("arc-hook.dev/role=build");
    let mut building = false;
    for _ in 0..400 {
        let list = pods.list(&lp).await.expect("pods listed");
        building = list
            .items
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if building {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(building, "the builder pod never ran");
    let (code, stdout, stderr) = cancel_hook(hook).await;
    assert_eq!(code, Some(130), "{stdout}{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "arc-hook: cancelled: the runner sent SIGINT; the image build was stopped: deleted the builder pod "
        ),
        "{stdout}{stderr}"
    );
    // Deleted with grace 0: gone as soon as the kubelet has stopped it.
    let mut gone = false;
    for _ in 0..100 {
        gone = pods.list(&lp).await.expect("pods listed").items.is_empty();
        if gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the builder pod is still there");
    r.clean_up().await;
}
