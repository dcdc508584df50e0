//! Container steps end to end: ephemeral containers in the job pod, the Job fallback, no-volume mode, and Dockerfile actions built by a BuildKit or Kaniko pod (or found in the registry).
//!
//! These run on the simulator only (in-process `common::Runner`, image stand-ins set per test, a
//! fake registry). On the conformance cluster the same paths run as recorded jobs in
//! `tests/conformance.rs`'s every-fixture loop: `docker-action-no-volume` (a step pod under ARC's
//! novolume Role), `cancel-container-step`, `registry-secrets` (pull credentials and secret env) and
//! `dockerfile-action` (a Kaniko builder pod after the registry check, from the claim or a context
//! secret).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use arc_hook::sim::{SimConfig, arc_chart_default_role, arc_chart_novolume_role};
use common::{HookRun, Runner, job_args, sim_config};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

const POD: &str = "arc-runner-test-workflow";
/// The action image's ENTRYPOINT, as the simulator runs it when the step names none.
const ACTION_ENTRYPOINT: &str = "echo from-entrypoint; printf 'who=[%s]\\n' \"$INPUT_WHO\"; cat /github/workspace/marker; echo x=1 >> \"$GITHUB_OUTPUT\"; exit 7";

fn cfg_with(images: &[(&str, Vec<&str>)]) -> SimConfig {
    let mut cfg = sim_config();
    cfg.image_commands = images
        .iter()
        .map(|(i, c)| (i.to_string(), c.iter().map(|s| s.to_string()).collect()))
        .collect::<HashMap<_, _>>();
    cfg
}

fn action_cfg() -> SimConfig {
    cfg_with(&[("action-image:1", vec!["sh", "-c", ACTION_ENTRYPOINT])])
}

fn step_input(
    r: &Runner,
    image: Option<&str>,
    dockerfile: Option<&str>,
    entry: Value,
    args: Value,
    env: Value,
) -> Value {
    // The runner sends a Docker action's args as its command line cut at spaces.
    let args: Vec<String> = serde_json::from_value(args).expect("a list of arguments");
    let args = arc_hook::runner_args::runner_container_tokens(
        &arc_hook::runner_args::runner_action_arguments(&args),
    );
    json!({
        "command": "run_container_step",
        "responseFile": null,
        "state": r.state.clone().unwrap_or(Value::Null),
        "args": {
            "image": image, "dockerfile": dockerfile,
            "entryPoint": entry, "entryPointArgs": args,
            "workingDirectory": "/github/workspace", "createOptions": null,
            "environmentVariables": env,
            "userMountVolumes": [], "systemMountVolumes": [],
            "registry": null, "portMappings": []
        }
    })
}

/// The runner's file-command file for a container step (at /github/file_commands in the container).
fn output_file(r: &Runner, name: &str) -> (String, std::path::PathBuf) {
    let local = r.runner_path(&format!("_temp/_runner_file_commands/{name}"));
    std::fs::write(&local, b"").expect("file command created");
    (format!("/github/file_commands/{name}"), local)
}

const WHO: &str = "it's \"$HOME\" `id` \\n and\na newline ✓";

async fn run_action(r: &Runner) -> (HookRun, std::path::PathBuf) {
    std::fs::write(r.runner_path("repo/repo/marker"), "in-workspace\n").expect("marker");
    let (out, local) = output_file(r, "set_output_c1");
    let run = r
        .hook(&step_input(
            r,
            Some("action-image:1"),
            None,
            Value::Null,
            json!([]),
            json!({"INPUT_WHO": WHO, "GITHUB_OUTPUT": out}),
        ))
        .await;
    (run, local)
}

fn assert_action_ran(run: &HookRun, output: &std::path::Path) {
    assert_eq!(
        run.code, 7,
        "the container's exit code\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("from-entrypoint"),
        "the image's own entrypoint ran:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("who=[{WHO}]")),
        "env byte-exact:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("in-workspace"),
        "/github/workspace is the workspace:\n{}",
        run.stdout
    );
    assert_eq!(std::fs::read_to_string(output).expect("output"), "x=1\n");
}

async fn ephemeral_names(r: &Runner) -> Vec<String> {
    let pod = r.pods().await.get(POD).await.expect("job pod");
    pod.spec
        .and_then(|s| s.ephemeral_containers)
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_runs_in_the_job_pod_with_its_own_entrypoint() {
    let r = Runner::prepared(action_cfg(), job_args("ubuntu:24.04", json!([]))).await;
    let (run, output) = run_action(&r).await;
    assert_action_ran(&run, &output);
    assert!(!run.stdout.contains("separate Jobs"), "{}", run.stdout);
    // A second step gets its own container; the first stays (ephemeral containers cannot be removed).
    let (again, output) = run_action(&r).await;
    assert_action_ran(&again, &output);
    let names = ephemeral_names(&r).await;
    assert_eq!(names.len(), 2);
    assert_ne!(names[0], names[1]);
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("step-") && n.len() == 13),
        "{names:?}"
    );
    let pods = r.pods_of(&r.name).await;
    assert_eq!(pods, vec![POD.to_string()], "no step pod or Job");
    r.cleanup().await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_reaches_a_service_container() {
    let mut r = Runner::start(cfg_with(&[(
        "nginx:1.27",
        vec![
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "127.0.0.1",
        ],
    )]))
    .await;
    let services = json!([{
        "image": "nginx:1.27", "entryPoint": null, "entryPointArgs": [],
        "environmentVariables": {}, "userMountVolumes": [], "systemMountVolumes": [],
        "registry": null, "portMappings": ["8080"]
    }]);
    r.prepare(job_args("ubuntu:24.04", services))
        .await
        .0
        .assert_ok();
    let probe = "import time, urllib.request\nfor _ in range(100):\n    try:\n        print('service answered', len(urllib.request.urlopen('http://127.0.0.1:8080/', timeout=2).read()))\n        break\n    except OSError:\n        time.sleep(0.1)\nelse:\n    raise SystemExit('no answer')\n";
    // A multi-line program cannot pass through the runner's argument encoding (its Trim() eats
    // the newline before each indented line), so it goes in a file as a real action's would.
    std::fs::write(r.runner_path("_temp/probe.py"), probe).expect("probe written");
    let run = r
        .hook(&step_input(
            &r,
            Some("python:3.12"),
            None,
            json!("python3"),
            json!(["/github/runner_temp/probe.py"]),
            json!({}),
        ))
        .await;
    run.assert_ok();
    assert!(run.stdout.contains("service answered"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_permission_steps_run_as_jobs_and_say_so_once() {
    let mut cfg = action_cfg();
    cfg.rbac = Some(arc_chart_default_role());
    let r = Runner::prepared(cfg, job_args("ubuntu:24.04", json!([]))).await;
    let (first, output) = run_action(&r).await;
    assert_action_ran(&first, &output);
    assert!(
        first.stdout.contains("arc-hook: container steps run as separate Jobs on this runner: the runner's Role does not grant patch on pods/ephemeralcontainers"),
        "{}",
        first.stdout
    );
    let (second, output) = run_action(&r).await;
    assert_action_ran(&second, &output);
    assert!(
        !second.stdout.contains("separate Jobs"),
        "said once:\n{}",
        second.stdout
    );
    assert!(ephemeral_names(&r).await.is_empty());
    r.cleanup().await.assert_ok();
    assert!(r.pods_of(&r.name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_volume_steps_run_in_the_job_pod_and_their_outputs_come_back() {
    let mut r = Runner::start(action_cfg()).await;
    r.env.insert("ARC_HOOK_WORK_VOLUME".into(), "copy".into());
    std::fs::write(r.runner_path("repo/repo/marker"), "in-workspace\n").expect("marker");
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let (run, output) = run_action(&r).await;
    assert_action_ran(&run, &output);
}

/// The runner's pods other than the job pod, once deleted ones are gone (up to 10 s: the hook
/// deletes with no grace and does not wait).
async fn step_pods(r: &Runner) -> Vec<String> {
    let mut left = Vec::new();
    for _ in 0..100 {
        left = r
            .pods_of(&r.name)
            .await
            .into_iter()
            .filter(|p| p != POD)
            .collect();
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_volume_under_arcs_role_runs_the_step_in_a_pod_of_its_own() {
    let mut cfg = action_cfg();
    cfg.rbac = Some(arc_chart_novolume_role());
    let mut r = Runner::start(cfg).await;
    r.env.insert("ARC_HOOK_WORK_VOLUME".into(), "copy".into());
    // The workspace as prepare_job sends it to the job pod; the step's pod gets it from there.
    std::fs::write(r.runner_path("repo/repo/marker"), "in-workspace\n").expect("marker");
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let (run, output) = run_action(&r).await;
    assert_action_ran(&run, &output);
    assert!(
        run.stdout.contains("arc-hook: container steps run in pods of their own on this runner: the runner's Role does not grant patch on pods/ephemeralcontainers"),
        "{}",
        run.stdout
    );
    assert!(ephemeral_names(&r).await.is_empty());
    assert!(step_pods(&r).await.is_empty(), "the step's pod is gone");
}

/// An action that prints its arguments, writes an output and a file in the workspace, and exits 3.
const FAILING_ACTION: &str = "printf 'arg=[%s]\\n' \"$@\"; cat /github/workspace/marker; echo made-by-action > /github/workspace/from-action; echo done=yes >> \"$GITHUB_OUTPUT\"; exit 3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_pod_keeps_its_code_its_outputs_and_its_changes() {
    let mut cfg = cfg_with(&[(
        "failing-action:1",
        vec!["sh", "-c", FAILING_ACTION, "failing-action"],
    )]);
    cfg.rbac = Some(arc_chart_novolume_role());
    let mut r = Runner::start(cfg).await;
    r.env.insert("ARC_HOOK_WORK_VOLUME".into(), "copy".into());
    std::fs::write(r.runner_path("repo/repo/marker"), "in-workspace\n").expect("marker");
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    // A script step first: what it writes in the job pod is what the action sees.
    r.script_step("echo from-script > marker\n", json!({}))
        .await
        .assert_ok();
    // 4 MiB in the workspace: it goes to the step's pod, but only what the step changed comes back.
    r.script_step("head -c 4194304 /dev/zero > big.bin\n", json!({}))
        .await
        .assert_ok();
    let (out, local) = output_file(&r, "set_output_f1");
    let run = r
        .hook_with_env(
            &step_input(
                &r,
                Some("failing-action:1"),
                None,
                Value::Null,
                json!(["a b", "c"]),
                json!({"GITHUB_OUTPUT": out}),
            ),
            &[("ARC_HOOK_LOG", "arc_hook::k8s::copy=debug")],
        )
        .await;
    let relayed: Vec<(String, u64)> = run
        .stderr
        .lines()
        .filter(|l| l.contains("relayed"))
        .filter_map(|l| {
            let from = l.split("from=\"").nth(1)?.split('"').next()?.to_string();
            let bytes = l.split("bytes=").nth(1)?.trim().parse().ok()?;
            Some((from, bytes))
        })
        .collect();
    assert_eq!(relayed.len(), 2, "in and back:\n{}", run.stderr);
    assert_eq!(relayed[0].0, POD, "in: from the job pod");
    assert!(relayed[0].1 > 4 << 20, "the workspace went in: {relayed:?}");
    assert!(
        relayed[1].1 < 64 << 10,
        "only the changes came back: {relayed:?}"
    );
    assert_eq!(
        run.code, 3,
        "the action's own code\n{}{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains("arg=[a b]\narg=[c]\nfrom-script"),
        "the image's entrypoint with the step's arguments, on the job pod's workspace:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("the step's own command exited with code 3"),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&local).expect("output"),
        "done=yes\n",
        "a failed step's outputs still come back"
    );
    assert!(step_pods(&r).await.is_empty(), "the step's pod is gone");
    // What the action wrote in the workspace is in the job pod for the next step.
    let next = r.step_ok("cat from-action\n").await;
    assert!(next.stdout.contains("made-by-action"), "{}", next.stdout);
    r.cleanup().await.assert_ok();
}

/// A step killed for memory in its own pod is the infrastructure's failure, says what to raise,
/// and the pod is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_step_pod_is_an_infrastructure_failure() {
    let mut cfg = cfg_with(&[(
        "hungry-action:1",
        vec![
            "sh",
            "-c",
            "echo x > /github/runner_temp/hungry-started; sleep 600",
        ],
    )]);
    cfg.rbac = Some(arc_chart_novolume_role());
    let mut r = Runner::start(cfg).await;
    r.env.insert("ARC_HOOK_WORK_VOLUME".into(), "copy".into());
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let input = step_input(
        &r,
        Some("hungry-action:1"),
        None,
        Value::Null,
        json!([]),
        json!({}),
    );
    let step = r.hook(&input);
    let kill = async {
        assert!(
            r.wait_for_pod_file("hungry-started").await,
            "the step started"
        );
        let pod = r
            .pods_of(&r.name)
            .await
            .into_iter()
            .find(|p| p != POD)
            .expect("the step's pod");
        r.sim
            .oom_kill("default", &pod, "step")
            .await
            .expect("killed");
    };
    let (run, ()) = tokio::join!(step, kill);
    assert_eq!(run.code, 137, "{}{}", run.stdout, run.stderr);
    let last = run.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("arc-hook: infrastructure failure: the hook could not run the step or learn its result: the step's container was killed: OOMKilled (exit code 137; raise its memory limit in the worker-podspec template, `$step`)"),
        "{}",
        run.stdout
    );
    assert!(step_pods(&r).await.is_empty(), "the step's pod is gone");
}

/// Claim mode under a Role with neither ephemeral containers nor Jobs: the same pod of its own,
/// on the work claim (nothing copied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_mode_without_ephemeral_containers_or_jobs_runs_the_step_in_a_pod() {
    let mut cfg = action_cfg();
    cfg.rbac = Some(arc_chart_novolume_role());
    let r = Runner::prepared(cfg, job_args("ubuntu:24.04", json!([]))).await;
    let (run, output) = run_action(&r).await;
    assert_action_ran(&run, &output);
    assert!(
        run.stdout.contains("container steps run in pods of their own on this runner: the runner's Role does not grant patch on pods/ephemeralcontainers, nor create on batch jobs"),
        "{}",
        run.stdout
    );
    assert!(step_pods(&r).await.is_empty(), "the step's pod is gone");
}

const BUILDER: &str = "mirror.internal/kaniko/executor:v1";
const REGISTRY: &str = "harbor.internal/ci-actions";

fn write_action(r: &Runner) -> String {
    let dir = r.runner_path("_actions/example-org/hello-action/v1");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM alpine:3.19\nENTRYPOINT [\"/hello.sh\"]\n",
    )
    .expect("write");
    dir.join("Dockerfile").to_string_lossy().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_step_without_a_builder_says_how_to_enable_it() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    let dockerfile = write_action(&r);
    let run = r
        .hook(&step_input(
            &r,
            None,
            Some(&dockerfile),
            Value::Null,
            json!([]),
            json!({}),
        ))
        .await;
    assert_eq!(run.code, 1);
    let last = run
        .stderr
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains("cannot build Dockerfile actions")
            && last.contains("ARC_HOOK_BUILDER_IMAGE")
            && last.contains("ARC_HOOK_BUILD_REGISTRY"),
        "{}",
        run.stderr
    );
    assert_eq!(r.pods_of(&r.name).await, vec![POD.to_string()]);
}

/// Sets the builder `env`, prepares the job, and runs the Dockerfile action once while watching
/// for the first builder pod: what the Dockerfile-action tests share.
async fn build_and_run_action(
    r: &mut Runner,
    env: &[(&str, &str)],
) -> (HookRun, tokio::task::JoinHandle<Pod>) {
    for (k, v) in env {
        r.env.insert(k.to_string(), v.to_string());
    }
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let dockerfile = write_action(r);
    let watcher = tokio::spawn(first_builder_pod(r.pods().await));
    let run = r
        .hook(&step_input(
            r,
            None,
            Some(&dockerfile),
            Value::Null,
            json!([]),
            json!({}),
        ))
        .await;
    (run, watcher)
}

/// The first builder pod that appears (they are deleted once the build ends).
async fn first_builder_pod(api: kube::Api<Pod>) -> Pod {
    let lp = ListParams::default().labels("arc-hook.dev/role=build");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(list) = api.list(&lp).await
            && let Some(p) = list.items.into_iter().next()
        {
            return p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no builder pod appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_step_is_built_by_a_kaniko_pod_then_run() {
    let mut r = Runner::start(cfg_with(&[
        // Kaniko's stand-in shows what it was given; the built image's ENTRYPOINT says it ran.
        (
            BUILDER,
            vec![
                "sh",
                "-c",
                "sleep 0.3; echo \"kaniko $*\"; cat /workspace/Dockerfile; echo pushed",
                "executor",
            ],
        ),
        (
            &format!("{REGISTRY}/example-org-hello-action"),
            vec!["sh", "-c", "echo built-image-ran"],
        ),
    ]))
    .await;
    let secrets: kube::Api<Secret> = kube::Api::default_namespaced(r.sim.client().await);
    let push: Secret = serde_json::from_value(json!({
        "metadata": {"name": "harbor-push"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &push)
        .await
        .expect("push secret");
    let (run, watcher) = build_and_run_action(
        &mut r,
        &[
            ("ARC_HOOK_BUILDER", "kaniko"),
            ("ARC_HOOK_BUILDER_IMAGE", BUILDER),
            ("ARC_HOOK_BUILD_REGISTRY", REGISTRY),
            ("ARC_HOOK_BUILD_PUSH_SECRET", "harbor-push"),
        ],
    )
    .await;
    run.assert_ok();
    assert!(
        run.stdout.contains("FROM alpine:3.19"),
        "the build log is streamed:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "kaniko --context=dir:///workspace --dockerfile=/workspace/Dockerfile --destination="
        ),
        "Kaniko's entrypoint got the flags:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("built-image-ran"),
        "the built image ran:\n{}",
        run.stdout
    );

    let pod = watcher.await.expect("watcher");
    let spec = pod.spec.expect("spec");
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some(BUILDER));
    assert_eq!(c.command, None, "Kaniko's own entrypoint");
    let args = c.args.clone().expect("args");
    assert_eq!(args[0], "--context=dir:///workspace");
    assert_eq!(args[1], "--dockerfile=/workspace/Dockerfile");
    let dest = args[2].strip_prefix("--destination=").expect("destination");
    let (repo, tag) = dest.rsplit_once(':').expect("tag");
    assert_eq!(repo, format!("{REGISTRY}/example-org-hello-action"));
    assert_eq!(tag.len(), 16, "content hash tag {tag}");
    let mounts = c.volume_mounts.clone().expect("mounts");
    let context = mounts
        .iter()
        .find(|m| m.mount_path == "/workspace")
        .expect("context mount");
    assert_eq!(
        context.sub_path.as_deref(),
        Some("_actions/example-org/hello-action/v1")
    );
    assert_eq!(context.read_only, Some(true));
    assert!(mounts.iter().any(|m| m.mount_path == "/kaniko/.docker"));
    let volumes = spec.volumes.expect("volumes");
    let claim = volumes
        .iter()
        .find_map(|v| v.persistent_volume_claim.as_ref())
        .expect("claim");
    assert_eq!(claim.claim_name, "arc-runner-test-work");
    let push = volumes
        .iter()
        .find_map(|v| v.secret.as_ref())
        .expect("push secret volume");
    assert_eq!(push.secret_name.as_deref(), Some("harbor-push"));
    assert_eq!(
        push.items.as_ref().expect("items")[0].key,
        ".dockerconfigjson"
    );
    assert!(
        spec.containers[0].security_context.is_none(),
        "unprivileged"
    );

    let left: Vec<String> = r.pods_of(&r.name).await;
    assert_eq!(left, vec![POD.to_string()], "the builder pod is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_volume_dockerfile_build_gets_its_context_from_a_secret() {
    let mut r = Runner::start(cfg_with(&[
        (
            BUILDER,
            vec![
                "sh",
                "-c",
                "sleep 0.3; echo \"kaniko $1\"; tar -tzf /context/context.tar.gz; tar -xzOf /context/context.tar.gz Dockerfile",
                "executor",
            ],
        ),
        (
            &format!("{REGISTRY}/example-org-hello-action"),
            vec!["sh", "-c", "echo built-image-ran"],
        ),
    ]))
    .await;
    let (run, watcher) = build_and_run_action(
        &mut r,
        &[
            ("ARC_HOOK_WORK_VOLUME", "copy"),
            ("ARC_HOOK_BUILDER", "kaniko"),
            ("ARC_HOOK_BUILDER_IMAGE", BUILDER),
            ("ARC_HOOK_BUILD_REGISTRY", REGISTRY),
        ],
    )
    .await;
    run.assert_ok();
    assert!(
        run.stdout
            .contains("kaniko --context=tar:///context/context.tar.gz"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("FROM alpine:3.19"),
        "the context archive unpacks:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("built-image-ran"), "{}", run.stdout);
    let spec = watcher.await.expect("watcher").spec.expect("spec");
    let ctx = spec
        .volumes
        .expect("volumes")
        .into_iter()
        .find_map(|v| v.secret)
        .expect("context secret volume");
    assert!(
        ctx.secret_name
            .expect("name")
            .starts_with("arc-runner-test-buildctx-")
    );
    assert!(
        r.secrets_of(&r.name)
            .await
            .iter()
            .all(|s| !s.contains("buildctx")),
        "context secret removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_template_merges_into_the_ephemeral_container() {
    let mut r = Runner::start(cfg_with(&[(
        "action-image:1",
        vec!["sh", "-c", "echo \"from-template=[$FROM_TEMPLATE]\""],
    )]))
    .await;
    let template = r.home.path().join("template.yaml");
    std::fs::write(
        &template,
        "spec:\n  containers:\n    - name: $step\n      env: [{name: FROM_TEMPLATE, value: \"${RUNNER_POD_NAME}\"}]\n      resources: {limits: {memory: 1Gi}}\n",
    )
    .expect("template");
    r.env.insert(
        "ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE".into(),
        template.to_string_lossy().to_string(),
    );
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let run = r
        .hook(&step_input(
            &r,
            Some("action-image:1"),
            None,
            Value::Null,
            json!([]),
            json!({}),
        ))
        .await;
    run.assert_ok();
    assert!(
        run.stdout.contains("from-template=[arc-runner-test]"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("arc-hook: warning: template $step.resources is ignored: the step runs as an ephemeral container in the job pod"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_step_is_built_by_rootless_buildkit_then_run() {
    const BUILDKIT: &str = "mirror.internal/moby/buildkit:v0.23.2-rootless";
    let mut cfg = cfg_with(&[(
        &format!("{REGISTRY}/example-org-hello-action"),
        vec!["sh", "-c", "echo built-image-ran"],
    )]);
    // buildctl-daemonless.sh's stand-in reads the context and says what it would push.
    cfg.programs.insert(
        "buildctl-daemonless.sh".into(),
        ["sh", "-c", "sleep 0.3; echo \"buildctl $*\"; cat /workspace/Dockerfile; echo \"BUILDKITD_FLAGS=$BUILDKITD_FLAGS\"; echo pushed", "buildctl-daemonless.sh"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    );
    let mut r = Runner::start(cfg).await;
    let (run, watcher) = build_and_run_action(
        &mut r,
        &[
            ("ARC_HOOK_BUILDER_IMAGE", BUILDKIT),
            ("ARC_HOOK_BUILD_REGISTRY", REGISTRY),
        ],
    )
    .await;
    run.assert_ok();
    assert!(
        run.stdout.contains("buildctl build --frontend dockerfile.v0 --local context=/workspace --local dockerfile=/workspace --opt filename=Dockerfile --output type=image,name=harbor.internal/ci-actions/example-org-hello-action:"),
        "buildctl got the build:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains("FROM alpine:3.19"), "{}", run.stdout);
    assert_eq!(
        run.stdout
            .matches("arc-hook: could not check whether the registry already has harbor.internal/ci-actions/example-org-hello-action:")
            .count(),
        1,
        "an unreachable registry costs one line, then the build:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("BUILDKITD_FLAGS=--oci-worker-no-process-sandbox"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("built-image-ran"), "{}", run.stdout);
    let spec = watcher.await.expect("watcher").spec.expect("spec");
    let sc = spec.containers[0]
        .security_context
        .clone()
        .expect("rootless BuildKit's documented security context");
    assert_eq!(sc.privileged, None);
    assert_eq!(
        sc.seccomp_profile.map(|p| p.type_).as_deref(),
        Some("Unconfined")
    );
    assert!(spec.volumes.iter().flatten().all(|v| v.host_path.is_none()));
    assert_eq!(
        r.pods_of(&r.name).await,
        vec![POD.to_string()],
        "the builder pod is removed"
    );
}

/// A job with neither container nor services gets no prepare_job and no cleanup_job from the
/// runner, yet its Docker-action steps arrive with `state: null`: each runs as a Job and removes
/// what it created itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_without_prepare_job_runs_as_a_job_and_leaves_nothing() {
    let r = Runner::start(action_cfg()).await;
    assert!(r.state.is_none(), "no prepare_job");
    let (run, output) = run_action(&r).await;
    assert_action_ran(&run, &output);
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::default_namespaced(r.sim.client().await);
    let lp = ListParams::default().labels(&format!("runner-pod={}", r.name));
    let mut left = usize::MAX;
    for _ in 0..100 {
        let j = jobs.list(&lp).await.expect("jobs").items.len();
        let p = r.pods_of(&r.name).await.len();
        let s = r.secrets_of(&r.name).await.len();
        left = j + p + s;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        left, 0,
        "the step's Job, its pod and secret are gone without a cleanup_job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_of_the_same_dockerfile_action_skips_the_build() {
    use arc_hook::sim::registry::{FakeAuth, FakeRegistry, fake_digest};
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;

    const BUILDKIT: &str = "mirror.internal/moby/buildkit:v0.23.2-rootless";
    // Where the builder stand-in "pushes": outside /tmp and /root, which each container has its
    // own of (and outside the checkout, which may itself live under /tmp).
    let pushed = tempfile::Builder::new()
        .prefix("arc-hook-pushed-")
        .tempdir_in("/var/tmp")
        .expect("pushed dir");
    std::fs::set_permissions(pushed.path(), std::fs::Permissions::from_mode(0o777))
        .expect("writable by the rootless builder");
    let fake = FakeRegistry::start(
        FakeAuth::Bearer {
            username: "robot".into(),
            password: "s3cr3t".into(),
        },
        Some(pushed.path().to_path_buf()),
    )
    .await
    .expect("fake registry");
    let registry = format!("{}/ci-actions", fake.host());
    let repository = format!("{registry}/example-org-hello-action");
    let mut cfg = cfg_with(&[(&repository, vec!["sh", "-c", "echo built-image-ran"])]);
    // The stand-in pushes what buildctl's --output names: a file the fake registry serves.
    let push = "name=$(echo \"$*\" | sed -n 's/.*name=\\([^,]*\\),push=true.*/\\1/p'); ref=${name#*/}; touch \"$0/$(echo \"$ref\" | tr '/:' '__')\" && echo \"pushed $name\"";
    cfg.programs.insert(
        "buildctl-daemonless.sh".into(),
        vec![
            "sh".into(),
            "-c".into(),
            push.into(),
            pushed.path().to_string_lossy().to_string(),
        ],
    );
    let mut r = Runner::start(cfg).await;
    let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cr3t");
    let config = json!({"auths": {fake.host(): {"auth": auth}}}).to_string();
    let secrets: kube::Api<Secret> = kube::Api::default_namespaced(r.sim.client().await);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "registry-push"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(config)}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("push secret");
    for (k, v) in [
        ("ARC_HOOK_BUILDER_IMAGE", BUILDKIT),
        ("ARC_HOOK_BUILD_REGISTRY", registry.as_str()),
        ("ARC_HOOK_BUILD_PUSH_SECRET", "registry-push"),
    ] {
        r.env.insert(k.into(), v.into());
    }
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let dockerfile = write_action(&r);
    let step = step_input(
        &r,
        None,
        Some(&dockerfile),
        Value::Null,
        json!([]),
        json!({}),
    );

    let first = r.hook(&step).await;
    first.assert_ok();
    assert!(
        first.stdout.contains(&format!("pushed {repository}:")),
        "the first run builds and pushes:\n{}",
        first.stdout
    );
    assert!(first.stdout.contains("built-image-ran"), "{}", first.stdout);

    let second = r.hook(&step).await;
    second.assert_ok();
    assert!(
        second.stdout.contains(&format!("arc-hook: {repository}:"))
            && second
                .stdout
                .contains("is already in the registry (same build context): not building it again"),
        "the second run says it skips the build:\n{}",
        second.stdout
    );
    assert!(
        !second.stdout.contains("pushed") && !second.stdout.contains("in pod"),
        "no builder pod the second time:\n{}",
        second.stdout
    );
    assert!(
        second.stdout.contains("built-image-ran"),
        "{}",
        second.stdout
    );

    // One token request per check, with the push secret's credentials; the manifest request
    // retried with the token.
    let requests = fake.requests();
    let tokens: Vec<_> = requests
        .iter()
        .filter(|q| q.target.starts_with("/token"))
        .collect();
    assert_eq!(tokens.len(), 2, "{requests:#?}");
    assert!(
        tokens
            .iter()
            .all(|q| q.authorization.as_deref() == Some(format!("Basic {auth}").as_str()))
    );
    assert_eq!(
        requests.len(),
        6,
        "two checks of three requests: {requests:#?}"
    );

    // The step ran exactly the image the registry answered for.
    let tag = requests[0]
        .target
        .rsplit('/')
        .next()
        .expect("tag")
        .to_string();
    let pod = r.pods().await.get(POD).await.expect("job pod");
    let images: Vec<String> = pod
        .spec
        .and_then(|s| s.ephemeral_containers)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.image)
        .collect();
    let digest = fake_digest("ci-actions/example-org-hello-action", &tag);
    // The newest ephemeral container is the first: a strategic merge puts the patch's new
    // items before the server's (kube-apiserver does; tests/sim_differential.rs checks it).
    assert_eq!(
        images.first().map(String::as_str),
        Some(format!("{repository}:{tag}@{digest}").as_str()),
        "{images:?}"
    );
    assert_eq!(r.pods_of(&r.name).await, vec![POD.to_string()]);
}

/// The three ways a container step runs, as the runner's Role and volume mode choose them.
const STEP_PLACES: [&str; 3] = ["ephemeral", "job", "own pod"];

/// A runner whose container steps run as `place` says ([`STEP_PLACES`]).
async fn runner_for(mut cfg: SimConfig, place: &str) -> Runner {
    cfg.rbac = match place {
        "ephemeral" => None,
        "job" => Some(arc_chart_default_role()),
        _ => Some(arc_chart_novolume_role()),
    };
    let mut r = Runner::start(cfg).await;
    if place == "own pod" {
        r.env.insert("ARC_HOOK_WORK_VOLUME".into(), "copy".into());
    }
    r
}

/// A container step whose log stream breaks three times (as through a restarting proxy) and
/// whose API server restarts once still shows every line once and in order, and its own exit
/// code; the command ran once. Every way a container step runs: an ephemeral container, a Job, a
/// pod of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_steps_log_survives_cut_streams() {
    let script = "echo ran >> /github/runner_temp/ran-count; for i in $(seq 1 40); do echo \"line $i of the step\"; sleep 0.1; done; exit 5";
    for place in STEP_PLACES {
        let mut cfg = cfg_with(&[("chatty:1", vec!["sh", "-c", script])]);
        cfg.faults.log_drop_after_bytes = Some(150);
        cfg.faults.log_drops_left = Some(3);
        let mut r = runner_for(cfg, place).await;
        r.prepare(job_args("ubuntu:24.04", json!([])))
            .await
            .0
            .assert_ok();
        let input = step_input(
            &r,
            Some("chatty:1"),
            None,
            Value::Null,
            json!([]),
            json!({}),
        );
        let step = r.hook(&input);
        // Mid-step, the API server restarts (every connection cut, 2 s down) while the pod runs.
        let restart = async {
            assert!(r.wait_for_pod_file("ran-count").await, "the step started");
            tokio::time::sleep(Duration::from_millis(300)).await;
            r.sim.restart_api(Duration::from_secs(2));
        };
        let (run, ()) = tokio::join!(step, restart);
        assert_eq!(
            run.code, 5,
            "place={place}: the step's code\n{}",
            run.stderr
        );
        let lines: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with("line "))
            .collect();
        let want: Vec<String> = (1..=40).map(|i| format!("line {i} of the step")).collect();
        assert_eq!(lines, want, "place={place}: every line once, in order");
        assert_eq!(
            r.sim.faults().injected().log_cuts,
            3,
            "place={place}: the cuts happened"
        );
        assert_eq!(
            std::fs::read_to_string(r.runner_path("_temp/ran-count")).expect("ran"),
            "ran\n",
            "place={place}: the command ran once"
        );
    }
}

/// A silent container step outlives a proxy's idle timeout on its log stream: it prints, stays
/// silent past the timeout, prints again and exits 7, and the job log has both lines, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_container_step_outlives_an_idle_timeout() {
    let script =
        "echo ran >> /github/runner_temp/ran-count; echo before; sleep 4; echo after; exit 7";
    for place in STEP_PLACES {
        let mut cfg = cfg_with(&[("silent:1", vec!["sh", "-c", script])]);
        cfg.faults.exec_idle_timeout = Some(Duration::from_secs(2));
        let mut r = runner_for(cfg, place).await;
        r.prepare(job_args("ubuntu:24.04", json!([])))
            .await
            .0
            .assert_ok();
        let input = step_input(
            &r,
            Some("silent:1"),
            None,
            Value::Null,
            json!([]),
            json!({}),
        );
        let run = r
            .hook_with_env(&input, &[("ARC_HOOK_LOG", "arc_hook=debug")])
            .await;
        assert_eq!(run.code, 7, "place={place}\n{}", run.stderr);
        assert!(
            run.stderr.contains("log stream broke; resuming"),
            "place={place}: the idle timeout cut the log: {}",
            run.stderr
        );
        let lines: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| *l == "before" || *l == "after")
            .collect();
        assert_eq!(lines, ["before", "after"], "place={place}: {}", run.stdout);
        assert_eq!(
            std::fs::read_to_string(r.runner_path("_temp/ran-count")).expect("ran"),
            "ran\n",
            "place={place}: the command ran once"
        );
    }
}
