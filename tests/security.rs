//! A job's steps are untrusted code: the attacks they can make on the runner and on other jobs, each driven end to end through the real binary on the simulator, in both volume modes where they apply.
//!
//! These run on the simulator only: they drive the hook in-process through `common::Runner`, which
//! plants files and reads objects through the simulator's own handles, and some need its fault
//! knobs. On the conformance cluster the same attacks run as recorded jobs
//! (`fixtures/jobs/hostile-links`: file commands and chained links to `/etc/shadow`) in
//! `tests/conformance.rs`'s every-fixture loop, with the same outcomes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use arc_hook::objects::names::{job_pod_name, runner_label_value};
use common::{HookRun, Runner, job_args, sim_config};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

async fn runner(copy: bool) -> Runner {
    let mut r = Runner::start(sim_config()).await;
    if copy {
        r.env
            .insert("ARC_HOOK_WORK_VOLUME".to_string(), "copy".to_string());
    }
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    r
}

/// The runner's file-command file for the next step, created as the runner does.
fn file_command(r: &Runner, name: &str) -> (String, std::path::PathBuf) {
    let local = r.runner_path(&format!("_temp/_runner_file_commands/{name}"));
    std::fs::write(&local, b"").expect("file command created");
    (format!("/__w/_temp/_runner_file_commands/{name}"), local)
}

fn assert_failed_with(run: &HookRun, needle: &str) {
    assert_ne!(run.code, 0, "the step must fail\n{}", run.stderr);
    assert!(
        run.stderr.contains(needle),
        "expected {needle:?} in:\n{}",
        run.stderr
    );
}

fn assert_untouched(outside: &std::path::Path) {
    assert_eq!(
        std::fs::read_dir(outside).expect("ls").count(),
        0,
        "nothing written outside _work"
    );
    let mode = std::fs::metadata(outside)
        .expect("stat")
        .permissions()
        .mode();
    assert_ne!(mode & 0o7777, 0o1777, "never chmod-ed through the link");
}

// Finding 1: a link planted where the hook writes its start scripts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_hook_directory_link_fails_the_step_and_is_removed() {
    let r = runner(false).await;
    let outside = tempfile::tempdir().expect("outside");
    let plant = format!(
        "rm -rf /__w/_temp/_arc_hook\nln -s {} /__w/_temp/_arc_hook\n",
        outside.path().display()
    );
    let run = r.script_step(&plant, json!({})).await;
    assert_failed_with(
        &run,
        "_arc_hook is a symbolic link where the runner keeps a directory (removed)",
    );
    assert!(
        std::fs::symlink_metadata(r.runner_path("_temp/_arc_hook"))
            .map(|m| !m.file_type().is_symlink())
            .unwrap_or(true),
        "the link is gone"
    );
    // The next step runs normally, and nothing reached the link's target.
    r.script_step("echo next step ok\n", json!({}))
        .await
        .assert_ok();
    assert_untouched(outside.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_planted_after_the_check_is_never_written_through() {
    let r = runner(false).await;
    let outside = tempfile::tempdir().expect("outside");
    // A background process the step leaves behind plants the link once the step has ended
    // (and passed the hook's check), right before the next step.
    let planter = format!(
        "( while [ ! -e /__w/_temp/go ]; do sleep 0.05; done; rm -rf /__w/_temp/_arc_hook; ln -s {} /__w/_temp/_arc_hook; touch /__w/_temp/planted ) >/dev/null 2>&1 &\n",
        outside.path().display()
    );
    r.script_step(&planter, json!({})).await.assert_ok();
    std::fs::write(r.runner_path("_temp/go"), b"").expect("go");
    assert!(r.wait_for_pod_file("planted").await, "the planter ran");
    let run = r.script_step("echo must not start\n", json!({})).await;
    assert_failed_with(
        &run,
        "_arc_hook is a symbolic link, where the runner keeps a real directory or file (planted by a step?); arc-hook does not follow it",
    );
    assert!(!run.stdout.contains("must not start"));
    assert_untouched(outside.path());
}

// Finding 2: file commands pointed at the runner's own files.

async fn output_link_to_a_runner_secret(copy: bool, needle: &str) {
    let r = runner(copy).await;
    let secret = r.home.path().join(".credentials");
    std::fs::write(&secret, b"runner-token-123").expect("secret");
    let (in_pod, local) = file_command(&r, "set_output_1");
    let run = r
        .script_step(
            &format!(
                "rm -f \"$GITHUB_OUTPUT\"\nln -s {} \"$GITHUB_OUTPUT\"\n",
                secret.display()
            ),
            json!({ "GITHUB_OUTPUT": in_pod }),
        )
        .await;
    assert_failed_with(&run, needle);
    let meta = std::fs::symlink_metadata(&local);
    assert!(
        meta.map(|m| !m.file_type().is_symlink()).unwrap_or(true),
        "the runner never finds a link where it reads GITHUB_OUTPUT"
    );
    assert_eq!(std::fs::read(&secret).expect("secret"), b"runner-token-123");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_output_linked_to_a_runner_file_is_refused() {
    output_link_to_a_runner_secret(
        false,
        "the step's file command set_output_1 is a symbolic link, not a regular file; not delivered",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_output_linked_to_a_runner_file_is_refused_without_a_volume() {
    output_link_to_a_runner_secret(
        true,
        "refusing archive entry \"_runner_file_commands/set_output_1\": it would replace a file on the runner with a symbolic link",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_never_replaces_the_runners_file_command_directory() {
    let r = runner(true).await;
    let run = r
        .script_step(
            "rm -rf /__w/_temp/_runner_file_commands\nln -s /home /__w/_temp/_runner_file_commands\n",
            json!({}),
        )
        .await;
    assert_failed_with(
        &run,
        "refusing archive entry \"_runner_file_commands\": it would replace a directory on the runner with something else",
    );
    let m = std::fs::symlink_metadata(r.runner_path("_temp/_runner_file_commands")).expect("kept");
    assert!(m.is_dir() && !m.file_type().is_symlink());
}

// Findings 3 and 4: runner names that collide when cut, and names too long for a label.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_sharing_a_long_prefix_get_their_own_pods() {
    // ARC names runners <scale set>-<5>-runner-<5>: a 42-character scale-set name.
    let set = "gpu-inference-large-memory-nightly-build-x";
    let a = format!("{set}-x7k2p-runner-abcde");
    let b = format!("{set}-x7k2p-runner-fghij");
    let mut r = Runner::start_named(sim_config(), &a).await;
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    r.create_runner_pod(&b).await;
    let claim = format!("{a}-work");
    let extra = [
        ("ACTIONS_RUNNER_POD_NAME", b.as_str()),
        ("ACTIONS_RUNNER_CLAIM_NAME", claim.as_str()),
    ];
    let response = r.runner_path("_temp/prepare-b.json");
    std::fs::write(&response, b"").expect("response");
    let input = json!({"command": "prepare_job", "responseFile": response, "state": null,
                       "args": job_args("ubuntu:24.04", json!([]))});
    r.hook_with_env(&input, &extra).await.assert_ok();
    let state: Value =
        serde_json::from_slice(&std::fs::read(&response).expect("response")).expect("json");
    let pod_a = r.state.as_ref().expect("state")["jobPod"]
        .as_str()
        .expect("a")
        .to_string();
    let pod_b = state["state"]["jobPod"].as_str().expect("b").to_string();
    assert_ne!(pod_a, pod_b, "one pod per runner");
    assert_eq!(pod_b, job_pod_name(&b));
    for (runner, pod) in [(&a, &pod_a), (&b, &pod_b)] {
        let p = r.pods().await.get(pod).await.expect("pod");
        let labels = p.metadata.labels.expect("labels");
        assert_eq!(labels["runner-pod"], runner_label_value(runner));
        assert_eq!(
            p.metadata.annotations.expect("annotations")["arc-hook.dev/runner-pod"],
            *runner
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_runners_object_under_our_name_is_never_adopted() {
    let r = Runner::start(sim_config()).await;
    // A pod with our workflow pod's name, belonging to someone else.
    let foreign: Pod = serde_json::from_value(json!({
        "metadata": {"name": job_pod_name(&r.name), "labels": {"runner-pod": "someone-else"}},
        "spec": {"containers": [{"name": "job", "image": "ubuntu:24.04", "command": ["sleep", "infinity"]}], "restartPolicy": "Never"}
    }))
    .expect("pod");
    r.pods()
        .await
        .create(&PostParams::default(), &foreign)
        .await
        .expect("created");
    let mut r = r;
    let (run, _) = r.prepare(job_args("ubuntu:24.04", json!([]))).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains(
            "already exists and belongs to someone-else (its runner-pod label), not to this runner"
        ),
        "{}",
        run.stderr
    );
    let still = r
        .pods()
        .await
        .get(&job_pod_name(&r.name))
        .await
        .expect("foreign pod kept");
    assert_eq!(
        still.metadata.labels.expect("labels")["runner-pod"],
        "someone-else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_name_longer_than_a_label_runs_a_job() {
    let name = format!(
        "{}-x7k2p-runner-abcde",
        "a-very-long-scale-set-name-for-fpga-synthesis-jobs"
    );
    assert!(name.len() > 63);
    let mut r = Runner::start_named(sim_config(), &name).await;
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let step = r
        .script_step("echo hello from a long name\n", json!({}))
        .await;
    step.assert_ok();
    assert!(step.stdout.contains("hello from a long name"));
    r.cleanup().await.assert_ok();
    let lp = ListParams::default().labels(&format!("runner-pod={}", runner_label_value(&name)));
    assert!(
        r.pods()
            .await
            .list(&lp)
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

// Finding 5: the kubelet's $(VAR) and $$ expansion never alters workflow data.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_container_env_reaches_the_job_byte_exact() {
    let mut r = Runner::start(sim_config()).await;
    let mut args = job_args("ubuntu:24.04", json!([]));
    args["container"]["environmentVariables"] = json!({"DOLLARS": "a$$b $(CI) $(HOME)"});
    r.prepare(args).await.0.assert_ok();
    let run = r
        .script_step("printf 'dollars=%s\\n' \"$DOLLARS\"\n", json!({}))
        .await;
    run.assert_ok();
    assert!(
        run.stdout.contains("dollars=a$$b $(CI) $(HOME)"),
        "{}",
        run.stdout
    );
}

// Finding 7: a pull is bounded, and a sparse file never fills the runner's disk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sparse_file_is_refused_by_the_pull() {
    let r = runner(true).await;
    let run = r
        .script_step("truncate -s 1T /__w/_temp/big\n", json!({}))
        .await;
    assert_failed_with(
        &run,
        "holds more than 2147483648 bytes (ARC_HOOK_PULL_MAX_BYTES); largest entries: big (1099511627776 bytes)",
    );
    let size = std::fs::metadata(r.runner_path("_temp/big"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(size, 0, "nothing of it reached the runner");
}

// Finding 8: no secret in the hook's logs at any level.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log_at_trace() {
    for copy in [false, true] {
        let r = runner(copy).await;
        let run = r
            .script_step_with(
                "echo step ran\n",
                json!({"API_TOKEN": "s3cr3t-value-4711"}),
                json!([]),
                // A bare level is arc-hook's own: name the dependencies that see the request
                // and the WebSocket frames too (they are capped at DEBUG whatever is asked).
                &[(
                    "ARC_HOOK_LOG",
                    "trace,kube=trace,kube_client=trace,tungstenite=trace,tokio_tungstenite=trace,hyper=trace,hyper_util=trace,tower_http=trace",
                )],
            )
            .await;
        run.assert_ok();
        assert!(!run.stderr.is_empty(), "trace logging is on");
        assert!(
            !run.stderr.contains("s3cr3t-value-4711") && !run.stdout.contains("s3cr3t-value-4711"),
            "copy={copy}: the secret leaked into the log"
        );
    }
}

// Finding 9: bad input gets one line naming the field, and nothing is created.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_are_refused_by_field() {
    let r = runner(false).await;
    let state = r.state.clone().expect("state");
    let step = |args: Value| json!({"command": "run_script_step", "responseFile": null, "state": state, "args": args});
    let cases = [
        (
            step(
                json!({"entryPoint": "sh", "entryPointArgs": "-c id", "environmentVariables": {}}),
            ),
            "args.entryPointArgs: expected a sequence",
        ),
        (
            step(
                json!({"entryPoint": "sh", "entryPointArgs": ["-c", "echo a\u{0}b"], "environmentVariables": {}}),
            ),
            "args.entryPointArgs[2]: holds a NUL byte",
        ),
        (
            step(
                json!({"entryPoint": "sh", "entryPointArgs": [], "environmentVariables": {"BIG": "x".repeat(140_000)}}),
            ),
            "args.environmentVariables.BIG: is 140004 bytes; Linux refuses a single argument or variable over 128 KiB",
        ),
        (
            json!({"command": "run_script_step", "responseFile": null, "state": {"jobPod": "../../namespaces/kube-system/pods/x"},
                   "args": {"entryPoint": "sh", "entryPointArgs": [], "environmentVariables": {}}}),
            "state.jobPod: \"../../namespaces/kube-system/pods/x\" is not a pod name",
        ),
    ];
    for (input, needle) in cases {
        let run = r.hook(&input).await;
        assert_eq!(run.code, 1, "{input}");
        assert!(
            run.stderr.contains(needle),
            "expected {needle:?} in {}",
            run.stderr
        );
        assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_passwords_for_one_registry_are_refused_before_anything_is_created() {
    let mut r = Runner::start(sim_config()).await;
    let mut args = job_args(
        "registry.example.internal/ci/job:1",
        json!([{
            "image": "registry.example.internal/ci/db:1", "entryPoint": null, "entryPointArgs": [],
            "environmentVariables": {}, "userMountVolumes": [], "systemMountVolumes": [],
            "registry": {"username": "svc", "password": "service-password-1", "serverUrl": "registry.example.internal"},
            "portMappings": []
        }]),
    );
    args["container"]["registry"] = json!({"username": "job", "password": "job-password-2", "serverUrl": "registry.example.internal"});
    let (run, _) = r.prepare(args).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("args.container.registry and args.services[0].registry: two different sets of credentials for registry registry.example.internal"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("password-"),
        "no password in the message"
    );
    assert!(r.pods_of(&r.name).await.is_empty());
    assert!(r.secrets_of(&r.name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_prepare_job_leaves_no_pod() {
    let mut cfg = sim_config();
    cfg.start_delay = Duration::from_secs(30);
    let r = Runner::start(cfg).await;
    let response = r.runner_path("_temp/prepare.json");
    std::fs::write(&response, b"").expect("response");
    let input = json!({"command": "prepare_job", "responseFile": response, "state": null,
                       "args": job_args("ubuntu:24.04", json!([]))});
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .envs(&r.env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("hook starts");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(&serde_json::to_vec(&input).expect("json"))
            .await
            .expect("written");
    }
    // Wait (bounded) until the workflow pod exists, then stop the hook as a runner's shutdown would.
    let mut created = false;
    for _ in 0..200 {
        if !r.pods_of(&r.name).await.is_empty() {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(created, "prepare_job created its pod");
    let pid = child.id().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signalled");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the hook stops")
        .expect("output");
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("stopped by SIGTERM; removing what it created")
    );
    assert!(r.pods_of(&r.name).await.is_empty(), "no pod left behind");
}
