//! prepare_job's opt-in waits, end to end (the real binary against the embedded simulator): a
//! runner node's start-up taints (`ARC_HOOK_WAIT_FOR_NODE_TAINTS`) and an image a parallel job has
//! not pushed yet (`ARC_HOOK_IMAGE_PULL_WAIT_SECONDS`); each off by default, costing no request.

mod common;

use std::time::{Duration, Instant};

use arc_hook::sim::{NODE_NAME, PolicyRule, arc_chart_default_role};
use common::{RUNNER, Runner, job_args, sim_config};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const TAINT_KEY: &str = "node.example.com/cache-not-ready";

/// Sets the node's taints as `kubectl taint` does: a strategic merge patch of `spec.taints`.
async fn set_taints(r: &Runner, taints: Value) {
    let nodes: kube::Api<Node> = kube::Api::all(r.sim.admin_client().await);
    nodes
        .patch(
            NODE_NAME,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"taints": taints}})),
        )
        .await
        .expect("node patched");
}

fn start_up_taint() -> Value {
    json!([{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}])
}

/// The requests that touched nodes, or asked about them.
fn node_requests(r: &Runner) -> Vec<String> {
    r.sim
        .requests()
        .into_iter()
        .filter(|l| l.contains("nodes"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tainted_runner_node_delays_the_workflow_pod_until_the_taint_goes() {
    let mut r = Runner::start(sim_config()).await;
    set_taints(&r, start_up_taint()).await;
    let nodes: kube::Api<Node> = kube::Api::all(r.sim.admin_client().await);
    let pods = r.pods().await;
    let untaint = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during = pods
            .list(&kube::api::ListParams::default().labels(&format!("runner-pod={RUNNER}")))
            .await
            .expect("list")
            .items
            .len();
        nodes
            .patch(
                NODE_NAME,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"taints": null}})),
            )
            .await
            .expect("taint removed");
        during
    });
    let started = Instant::now();
    let (run, resp) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[("ARC_HOOK_WAIT_FOR_NODE_TAINTS", TAINT_KEY)],
        )
        .await;
    run.assert_ok();
    assert!(resp.is_some());
    assert_eq!(
        untaint.await.expect("untaint task"),
        0,
        "no workflow pod while the node is tainted"
    );
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(
        run.stdout.contains(&format!(
            "arc-hook: node {NODE_NAME} has start-up taint(s) {TAINT_KEY}=true:NoSchedule; waiting (0s so far, up to 300s)"
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "arc-hook: node {NODE_NAME} lost its start-up taints after"
        )),
        "{}",
        run.stdout
    );
    assert!(
        r.sim
            .requests()
            .iter()
            .any(|l| l.starts_with("watch nodes")),
        "watched where allowed: {:?}",
        node_requests(&r)
    );
    r.script_step("echo on the node\n", json!({}))
        .await
        .assert_ok();
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_there_is_no_wait_and_no_node_request_so_a_tainted_node_fails_after_the_grace() {
    let mut cfg = sim_config();
    cfg.rbac = Some(
        arc_chart_default_role()
            .into_iter()
            // The test's own `kubectl taint`.
            .chain([PolicyRule::cluster_wide(&[""], &["nodes"], &["patch"])])
            .collect(),
    );
    // Access reviews one by one, so what is asked shows in the request log.
    cfg.rules_review_incomplete = true;
    let mut r = Runner::start(cfg).await;
    set_taints(&r, start_up_taint()).await;
    let before = node_requests(&r).len();
    let started = Instant::now();
    let (run, _) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[("ARC_HOOK_UNSCHEDULABLE_GRACE_SECONDS", "1")],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the scheduler's verdict and the grace end it"
    );
    assert!(
        run.stderr
            .contains("cannot be scheduled after 1s (ARC_HOOK_UNSCHEDULABLE_GRACE_SECONDS)"),
        "a taint gets the grace, not a never-fits verdict: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains(&format!("had untolerated taint {{{TAINT_KEY}: true}}"))
            && run
                .stderr
                .contains("name its key in ARC_HOOK_WAIT_FOR_NODE_TAINTS"),
        "{}",
        run.stderr
    );
    assert_eq!(
        node_requests(&r)[before..],
        [] as [String; 0],
        "prepare_job asked nothing about nodes"
    );
    assert!(
        r.sim
            .requests()
            .iter()
            .any(|l| l.contains("selfsubjectaccessreviews")),
        "permissions were reviewed one by one"
    );
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_wait_off_prepare_job_reads_no_node_and_execs_only_its_alpine_check() {
    let mut r = Runner::start(sim_config()).await;
    let before = r.sim.requests().len();
    let (run, _) = r.prepare(job_args("ubuntu:24.04", json!([]))).await;
    run.assert_ok();
    let made: Vec<String> = r.sim.requests()[before..].to_vec();
    assert!(!made.iter().any(|l| l.contains("nodes")), "{made:?}");
    assert_eq!(
        made.iter().filter(|l| l.contains("pods/exec")).count(),
        1,
        "the alpine check only: {made:?}"
    );
    assert!(!run.stdout.contains("readiness") && !run.stdout.contains("registry yet"));
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taint_that_stays_fails_prepare_job_naming_node_taint_and_variable() {
    let mut r = Runner::start(sim_config()).await;
    set_taints(&r, start_up_taint()).await;
    let (run, _) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[
                (
                    "ARC_HOOK_WAIT_FOR_NODE_TAINTS",
                    &format!("other,{TAINT_KEY}"),
                ),
                ("ARC_HOOK_NODE_TAINTS_TIMEOUT_SECONDS", "2"),
            ],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "node {NODE_NAME} still has start-up taint(s) {TAINT_KEY}=true:NoSchedule after 2s"
        )) && run
            .stderr
            .contains("raise ARC_HOOK_NODE_TAINTS_TIMEOUT_SECONDS"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(RUNNER).await.is_empty(), "no workflow pod made");
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_nodes_may_only_be_read_the_wait_reads_instead_of_watching() {
    let mut cfg = sim_config();
    cfg.rbac = Some(
        arc_chart_default_role()
            .into_iter()
            .chain([PolicyRule::cluster_wide(
                &[""],
                &["nodes"],
                &["get", "patch"],
            )])
            .collect(),
    );
    cfg.rules_review_incomplete = true;
    let mut r = Runner::start(cfg).await;
    set_taints(&r, start_up_taint()).await;
    let nodes: kube::Api<Node> = kube::Api::all(r.sim.admin_client().await);
    let untaint = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        nodes
            .patch(
                NODE_NAME,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"taints": []}})),
            )
            .await
            .expect("taint removed");
    });
    let (run, _) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[("ARC_HOOK_WAIT_FOR_NODE_TAINTS", TAINT_KEY)],
        )
        .await;
    untaint.await.expect("untaint task");
    run.assert_ok();
    let asked = node_requests(&r);
    assert!(
        asked.iter().any(|l| l.ends_with("(get nodes)"))
            && asked.iter().any(|l| l.ends_with("(watch nodes)")),
        "{asked:?}"
    );
    assert!(
        asked
            .iter()
            .filter(|l| *l == &format!("get nodes {NODE_NAME}"))
            .count()
            >= 2,
        "read again and again: {asked:?}"
    );
    assert!(
        !asked.iter().any(|l| l.starts_with("watch nodes")),
        "{asked:?}"
    );
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_get_nodes_the_variable_fails_before_anything_is_created() {
    let mut cfg = sim_config();
    cfg.rbac = Some(arc_chart_default_role());
    let mut r = Runner::start(cfg).await;
    let (run, _) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[("ARC_HOOK_WAIT_FOR_NODE_TAINTS", TAINT_KEY)],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(
            "ARC_HOOK_WAIT_FOR_NODE_TAINTS is set, but the runner's service account may not get nodes"
        ),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(RUNNER).await.is_empty());
    r.sim.shutdown().await;
}

const BUILT: &str = "registry.example.internal/ci/built:abc123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_image_pushed_while_prepare_job_waits_is_used() {
    let mut r = Runner::start(sim_config()).await;
    r.sim.hide_image_for(BUILT, Duration::from_secs(4));
    let started = Instant::now();
    let (run, resp) = r
        .prepare_with_env(
            job_args(BUILT, json!([])),
            &[("ARC_HOOK_IMAGE_PULL_WAIT_SECONDS", "120")],
        )
        .await;
    run.assert_ok();
    assert!(resp.is_some());
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert!(
        run.stdout.contains(&format!(
            "arc-hook: image {BUILT} is not in the registry yet; waiting for it to be pushed (0s so far, up to 120s)"
        )) && run.stdout.contains("arc-hook: waited "),
        "{}",
        run.stdout
    );
    r.script_step("echo built\n", json!({})).await.assert_ok();
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_never_comes_fails_when_the_wait_ends() {
    let mut r = Runner::start(sim_config()).await;
    r.sim.hide_image(BUILT);
    let (run, _) = r
        .prepare_with_env(
            job_args(BUILT, json!([])),
            &[("ARC_HOOK_IMAGE_PULL_WAIT_SECONDS", "3")],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "image {BUILT} is still not in the registry after 3s (ARC_HOOK_IMAGE_PULL_WAIT_SECONDS)"
        )) && run.stderr.contains(": not found"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(RUNNER).await.is_empty(), "the pod is removed");
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_pull_errors_and_an_unset_wait_fail_at_once() {
    let mut r = Runner::start(sim_config()).await;
    let denied = format!(
        "rpc error: code = Unknown desc = failed to pull and unpack image \"{BUILT}\": failed to resolve reference \"{BUILT}\": pulling from host registry.example.internal failed with status code [manifests abc123]: 401 Unauthorized"
    );
    r.sim.fail_pulls(BUILT, &denied);
    let started = Instant::now();
    let (run, _) = r
        .prepare_with_env(
            job_args(BUILT, json!([])),
            &[("ARC_HOOK_IMAGE_PULL_WAIT_SECONDS", "120")],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("401 Unauthorized"), "{}", run.stderr);
    assert!(
        !run.stdout.contains("not in the registry yet"),
        "{}",
        run.stdout
    );
    assert!(started.elapsed() < Duration::from_secs(15), "at once");

    // Not found, but the wait is off (the default): fails at once too.
    r.sim.hide_image(BUILT);
    let started = Instant::now();
    let (run, _) = r.prepare(job_args(BUILT, json!([]))).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("ErrImagePull") && run.stderr.contains(": not found"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(15), "at once");
    r.sim.shutdown().await;
}

/// A template whose readiness command fails `failures` times (counting its tries in `_temp`), then
/// succeeds, retried every second for up to `timeout` seconds.
fn readiness_template(r: &Runner, failures: u32, timeout: u32) -> String {
    let path = r.home.path().join("readiness-template.yaml");
    let command = format!(
        "n=$(cat /__w/_temp/ready-tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > /__w/_temp/ready-tries; if [ $n -le {failures} ]; then echo \"dcmi module initialize failed. ret is -8020 (try $n)\" >&2; exit 9; fi; echo NPU 0 OK"
    );
    let template = json!({
        "metadata": {"annotations": {
            "arc-hook.dev/readiness-command": command,
            "arc-hook.dev/readiness-interval-seconds": "1",
            "arc-hook.dev/readiness-timeout-seconds": timeout.to_string(),
        }},
        "spec": {"containers": [{"name": "$job"}]}
    });
    std::fs::write(&path, serde_json::to_string(&template).expect("json")).expect("template");
    path.to_string_lossy().to_string()
}

fn tries(r: &Runner) -> String {
    std::fs::read_to_string(r.runner_path("_temp/ready-tries"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_command_that_comes_good_lets_prepare_job_succeed() {
    let mut r = Runner::start(sim_config()).await;
    let template = readiness_template(&r, 2, 30);
    let (run, resp) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", &template)],
        )
        .await;
    run.assert_ok();
    assert!(resp.is_some());
    assert_eq!(tries(&r), "3", "two failures, then ready");
    assert_eq!(
        r.sim
            .requests()
            .iter()
            .filter(|l| l.contains("pods/exec"))
            .count(),
        1 + 3,
        "the alpine check and one exec per try"
    );
    assert!(
        run.stdout.contains("failed (exit code 9: dcmi module initialize failed. ret is -8020 (try 1)); trying every 1s for up to 30s")
            && run.stdout.contains("succeeded on try 3"),
        "{}",
        run.stdout
    );
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_command_that_fails_three_times_fails_prepare_job_naming_it() {
    let mut r = Runner::start(sim_config()).await;
    let template = readiness_template(&r, 100, 2);
    let (run, _) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", &template)],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(tries(&r), "3", "tries at 0, 1 and 2 s");
    assert!(
        run.stderr.contains("the job container is not ready: the template's readiness command `n=$(cat /__w/_temp/ready-tries")
            && run.stderr.contains("(arc-hook.dev/readiness-command) failed 3 time(s) in 2s; last: exit code 9: dcmi module initialize failed. ret is -8020 (try 3)"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(RUNNER).await.is_empty(), "the pod is removed");
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_program_the_image_lacks_fails_at_once() {
    let mut r = Runner::start(sim_config()).await;
    let path = r.home.path().join("missing-tool.yaml");
    std::fs::write(
        &path,
        "metadata:\n  annotations:\n    arc-hook.dev/readiness-command: '[\"no-such-smi\", \"-L\"]'\n    arc-hook.dev/readiness-timeout-seconds: \"60\"\n",
    )
    .expect("template");
    let started = Instant::now();
    let (run, _) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[(
                "ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE",
                &path.to_string_lossy(),
            )],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "not retried");
    assert!(
        run.stderr.contains("readiness command `[\"no-such-smi\", \"-L\"]` (arc-hook.dev/readiness-command) cannot run in the job container")
            && run.stderr.contains("no-such-smi"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(RUNNER).await.is_empty());
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_readiness_annotation_fails_before_anything_is_created() {
    let mut r = Runner::start(sim_config()).await;
    let path = r.home.path().join("bad.yaml");
    std::fs::write(
        &path,
        "metadata:\n  annotations:\n    arc-hook.dev/readiness-command: nvidia-smi -L\n    arc-hook.dev/readiness-timeout-seconds: two minutes\n",
    )
    .expect("template");
    let (run, _) = r
        .prepare_with_env(
            job_args("ubuntu:24.04", json!([])),
            &[(
                "ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE",
                &path.to_string_lossy(),
            )],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("metadata.annotations[\"arc-hook.dev/readiness-timeout-seconds\"]: expected a whole number of seconds > 0"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(RUNNER).await.is_empty());
    r.sim.shutdown().await;
}

/// A container step running `echo word` in `image` (the runner sends the arguments as one
/// command line, which the hook cuts at spaces: one word keeps it simple).
fn container_step(r: &Runner, image: &str, word: &str) -> Value {
    json!({
        "command": "run_container_step",
        "responseFile": null,
        "state": r.state.clone().unwrap_or(Value::Null),
        "args": {
            "image": image, "dockerfile": null,
            "entryPoint": "echo", "entryPointArgs": [word],
            "workingDirectory": "/github/workspace", "createOptions": null,
            "environmentVariables": {},
            "userMountVolumes": [], "systemMountVolumes": [],
            "registry": null, "portMappings": []
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_steps_image_pushed_while_it_waits_is_used_in_either_step_mode() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    for (mode, image) in [
        ("auto", "registry.example.internal/ci/tool:1"),
        ("job", "registry.example.internal/ci/tool:2"),
    ] {
        r.sim.hide_image_for(image, Duration::from_secs(3));
        let started = Instant::now();
        let run = r
            .hook_with_env(
                &container_step(&r, image, "step-ran"),
                &[
                    ("ARC_HOOK_CONTAINER_STEPS", mode),
                    ("ARC_HOOK_IMAGE_PULL_WAIT_SECONDS", "60"),
                ],
            )
            .await;
        run.assert_ok();
        assert!(started.elapsed() >= Duration::from_secs(3), "{mode}");
        assert!(
            run.stdout.contains("step-ran")
                && run.stdout.contains(&format!(
                    "arc-hook: image {image} is not in the registry yet; waiting for it to be pushed"
                )),
            "{mode}: {}\n{}",
            run.stdout,
            run.stderr
        );
    }
    // The wait off: the same not-yet-pushed image fails the step at once.
    let image = "registry.example.internal/ci/tool:3";
    r.sim.hide_image(image);
    let run = r.hook(&container_step(&r, image, "never")).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("ErrImagePull"), "{}", run.stderr);
    r.clean_up().await;
}
