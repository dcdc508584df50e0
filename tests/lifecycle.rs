//! The job lifecycle end to end: the real binary, through the wrapper, against the simulator.

mod common;

use std::collections::HashMap;

use arc_hook::sim::{Faults, PolicyRule, arc_chart_default_role};
use common::{Runner, job_args, sim_config};
use serde_json::json;

fn web_service() -> serde_json::Value {
    json!([{
        "image": "nginx:1.27",
        "entryPoint": null,
        "entryPointArgs": [],
        "environmentVariables": {},
        "userMountVolumes": [],
        "systemMountVolumes": [],
        "registry": null,
        "portMappings": ["8080"]
    }])
}

fn with_web() -> arc_hook::sim::SimConfig {
    let mut cfg = sim_config();
    cfg.image_commands = HashMap::from([(
        "nginx:1.27".to_string(),
        vec![
            "python3".into(),
            "-m".into(),
            "http.server".into(),
            "8080".into(),
            "--bind".into(),
            "127.0.0.1".into(),
        ],
    )]);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_job_with_a_service() {
    let mut r = Runner::start(with_web()).await;
    let (run, resp) = r.prepare(job_args("ubuntu:24.04", web_service())).await;
    run.assert_ok();
    let resp = resp.expect("response");
    assert_eq!(resp["state"]["jobPod"], "arc-runner-test-workflow");
    assert_eq!(resp["isAlpine"], false);
    assert_eq!(resp["context"]["services"][0]["ports"]["8080"], "8080");
    assert!(resp["context"]["container"].is_object());

    // Step 1 writes into the workspace; the runner sees it (shared work volume).
    let s1 = r
        .step_ok("echo built > artifact.txt\necho step-one-out; echo step-one-err >&2\n")
        .await;
    assert!(s1.stdout.contains("step-one-out"), "{}", s1.stdout);
    // stdout and stderr of a script step arrive together, in order, on the hook's stdout.
    assert!(s1.stdout.contains("step-one-err"), "{}", s1.stdout);
    assert_eq!(
        std::fs::read_to_string(r.runner_path("repo/repo/artifact.txt")).expect("artifact"),
        "built\n"
    );

    // Step 2 sees the job container's env and step 1's file.
    let s2 = r
        .step_ok("test \"$FROM_PREPARE\" = yes\ncat artifact.txt\n")
        .await;
    assert!(s2.stdout.contains("built"));

    // Step 3 reaches the service over the pod's network.
    let s3 = r.step_ok("python3 - <<'PY'\nimport time, urllib.request\nfor _ in range(600):\n    try:\n        print('service answered', len(urllib.request.urlopen('http://127.0.0.1:8080/', timeout=2).read()))\n        break\n    except OSError:\n        time.sleep(0.1)\nelse:\n    raise SystemExit('no answer')\nPY\n").await;
    assert!(s3.stdout.contains("service answered"), "{}", s3.stdout);

    r.cleanup().await.assert_ok();
    assert!(r.pods_of(common::RUNNER).await.is_empty());
    assert!(r.secrets_of(common::RUNNER).await.is_empty());
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_exit_code_is_the_hooks() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    let s = r
        .script_step("echo about to fail\nexit 3\n", json!({}))
        .await;
    assert_eq!(s.code, 3, "{s:?}");
    assert!(s.stdout.contains("about to fail"));
    let s = r.script_step("exit 0\n", json!({})).await;
    assert_eq!(s.code, 0);
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_values_arrive_byte_exact() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    let big: String = (0..100 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let values = json!({
        "QUOTES": "it's \"quoted\" and 'single'",
        "SUBST": "$(touch /tmp/pwned) ${HOME} $$ $1",
        "BACKTICKS": "`id` and \\`escaped\\`",
        "NEWLINES": "one\ntwo\n\ttab\r\nend\n",
        "PERCENT": "100% %PATH% %s %n",
        "UNICODE": "héllo wörld ✓ 日本語 🚀",
        "BIG": big,
    });
    // The step dumps each value as JSON; Python reads the environment without any shell in between.
    let s = r
        .script_step(
            "python3 -c 'import json, os; print(json.dumps({k: os.environ[k] for k in [\"QUOTES\",\"SUBST\",\"BACKTICKS\",\"NEWLINES\",\"PERCENT\",\"UNICODE\",\"BIG\"]}))' > env.json\n",
            values.clone(),
        )
        .await;
    s.assert_ok();
    let seen: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(r.runner_path("repo/repo/env.json")).expect("env.json"),
    )
    .expect("json");
    assert_eq!(seen, values);
    assert!(
        !std::path::Path::new("/tmp/pwned").exists(),
        "no value was executed"
    );
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepend_path_and_working_directory() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    std::fs::create_dir_all(r.runner_path("_tool/mytool/bin")).expect("mkdir");
    std::fs::write(
        r.runner_path("_tool/mytool/bin/mytool"),
        "#!/bin/sh\necho mytool ran in $PWD\n",
    )
    .expect("write");
    std::fs::set_permissions(
        r.runner_path("_tool/mytool/bin/mytool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let s = r
        .script_step_with("mytool\n", json!({}), json!(["/__w/_tool/mytool/bin"]), &[])
        .await;
    s.assert_ok();
    assert!(
        s.stdout.contains("mytool ran in /__w/repo/repo"),
        "{}",
        s.stdout
    );
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpullable_image_fails_fast_and_leaves_nothing() {
    let mut cfg = sim_config();
    cfg.unpullable_images = vec!["registry.example.internal/nope:1".into()];
    let mut r = Runner::start(cfg).await;
    let mut args = job_args("registry.example.internal/nope:1", json!([]));
    args["container"]["registry"] = json!({"username": "u", "password": "hunter2-secret", "serverUrl": "registry.example.internal"});
    let (run, _) = r
        .prepare_with_env(
            args,
            &[("ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS", "300")],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("registry.example.internal/nope:1"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("ErrImagePull") || run.stderr.contains("ImagePullBackOff"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("did not start within"),
        "failed on the pull error, not the timeout: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("hunter2-secret") && !run.stdout.contains("hunter2-secret"));
    assert!(r.pods_of(common::RUNNER).await.is_empty(), "no pod left");
    assert!(
        r.secrets_of(common::RUNNER).await.is_empty(),
        "no secret left"
    );
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_image_without_sh_is_named_by_prepare_job() {
    let mut r = Runner::start(sim_config()).await;
    let mut args = job_args("distroless:1", json!([]));
    // No `sh` on the container's PATH; the keep-alive runs by absolute path.
    args["container"]["environmentVariables"]["PATH"] = json!("/nonexistent");
    args["container"]["entryPoint"] = json!("/usr/bin/tail");
    args["container"]["entryPointArgs"] = json!(["-f", "/dev/null"]);
    let (run, _) = r.prepare(args).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("could not start `sh`: executable file not found in $PATH"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(common::RUNNER).await.is_empty(), "no pod left");
    r.sim.shutdown().await;
}

/// Runs prepare_job with a pod template, returning its output once it has failed.
async fn prepare_failing_with_template(template: &str, image: &str) -> common::HookRun {
    let mut r = Runner::start(sim_config()).await;
    let path = r.home.path().join("template.yaml");
    std::fs::write(&path, template).expect("template");
    r.env.insert(
        "ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE".into(),
        path.to_string_lossy().to_string(),
    );
    let (run, _) = r
        .prepare_with_env(
            job_args(image, json!([])),
            &[("ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS", "4")],
        )
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(r.pods_of(common::RUNNER).await.is_empty(), "no pod left");
    r.sim.shutdown().await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_reference_the_kubelet_refuses_fails_fast() {
    let run = prepare_failing_with_template("spec: {}\n", "docker://alpine:3.19").await;
    assert!(
        run.stderr.contains("InvalidImageName")
            && run.stderr.contains(
                "couldn't parse image name \"docker://alpine:3.19\": invalid reference format"
            ),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("did not start within"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_in_the_job_env_fails_fast() {
    let run = prepare_failing_with_template(
        "spec:\n  containers:\n    - name: $job\n      env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: nope, key: token}}}]\n",
        "ubuntu:24.04",
    )
    .await;
    assert!(
        run.stderr.contains("CreateContainerConfigError")
            && run.stderr.contains("secret \"nope\" not found"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("did not start within"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_volume_source_is_named_when_the_pod_never_starts() {
    let run = prepare_failing_with_template(
        "spec:\n  volumes: [{name: cfg, configMap: {name: nope}}]\n",
        "ubuntu:24.04",
    )
    .await;
    assert!(
        run.stderr.contains("FailedMount")
            && run.stderr.contains(
                "MountVolume.SetUp failed for volume \"cfg\" : configmap \"nope\" not found"
            ),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_container_can_be_required() {
    let mut r = Runner::start(sim_config()).await;
    let (run, _) = r
        .prepare_with_env(
            json!({"container": null, "services": []}),
            &[("ACTIONS_RUNNER_REQUIRE_JOB_CONTAINER", "true")],
        )
        .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("add `container: <image>` to the job"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(common::RUNNER).await.is_empty());
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_is_named() {
    // From the rules review where it is complete, and from access reviews one by one where the
    // cluster's authorizers cannot list their rules (the review then holds none: a hook that used
    // them anyway would name every permission, not just the missing one).
    for incomplete in [false, true] {
        let mut cfg = sim_config();
        let mut rules: Vec<PolicyRule> = arc_chart_default_role();
        rules.retain(|r| !r.resources.iter().any(|res| res == "secrets"));
        rules.push(PolicyRule::new(
            &[""],
            &["secrets"],
            &["get", "list", "delete"],
        ));
        rules.push(PolicyRule::new(&[""], &["pods"], &["get"])); // runner pod lookup only
        cfg.rbac = Some(rules);
        cfg.rules_review_incomplete = incomplete;
        let mut r = Runner::start(cfg).await;
        let (run, _) = r.prepare(job_args("ubuntu:24.04", json!([]))).await;
        assert_eq!(run.code, 1, "{run:?}");
        assert!(
            run.stderr.contains("may not create secrets in namespace"),
            "incomplete review: {incomplete}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("create pods"),
            "incomplete review: {incomplete}: {}",
            run.stderr
        );
        r.sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_job_with_only_the_chart_default_role() {
    let mut cfg = sim_config();
    cfg.rbac = Some(arc_chart_default_role());
    let mut r = Runner::start(cfg).await;
    let (run, resp) = r.prepare(job_args("ubuntu:24.04", json!([]))).await;
    run.assert_ok();
    assert!(resp.is_some());
    r.script_step("echo works without watch or events\n", json!({}))
        .await
        .assert_ok();
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_twice_and_other_runners_survive() {
    let mut r = Runner::start(sim_config()).await;
    // Another runner's workflow pod, created by its own hook run in the same namespace.
    r.create_runner_pod("arc-runner-other").await;
    let mut other_env = r.env.clone();
    other_env.insert("ACTIONS_RUNNER_POD_NAME".into(), "arc-runner-other".into());
    // The simulator has only this runner's work claim; the scheduler needs the claim to exist.
    other_env.insert(
        "ACTIONS_RUNNER_CLAIM_NAME".into(),
        format!("{}-work", common::RUNNER),
    );
    let response = r.work.join("_temp/other-response.json");
    std::fs::write(&response, b"").expect("response file");
    let other = {
        let saved = std::mem::replace(&mut r.env, other_env);
        let run = r
            .hook(&json!({"command": "prepare_job", "responseFile": response, "args": job_args("ubuntu:24.04", json!([]))}))
            .await;
        r.env = saved;
        run
    };
    other.assert_ok();

    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    r.cleanup().await.assert_ok();
    r.cleanup().await.assert_ok();
    assert!(r.pods_of(common::RUNNER).await.is_empty());
    assert_eq!(
        r.pods_of("arc-runner-other").await,
        vec!["arc-runner-other-workflow".to_string()]
    );
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_error_bursts_are_ridden_out() {
    let mut r = Runner::start(sim_config()).await;
    r.sim.faults().set(Faults {
        error_rate: 0.3,
        error_status: 503,
        ..Default::default()
    });
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    r.sim.faults().update(|f| f.error_status = 429);
    let s = r.step_ok("echo through the storm\n").await;
    assert!(s.stdout.contains("through the storm"));
    r.cleanup().await.assert_ok();
    r.sim.faults().clear();
    assert!(r.pods_of(common::RUNNER).await.is_empty());
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_step_outlives_an_idle_timeout() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    common::silent_step_outlives_idle_timeout(&r).await;
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_survives_cut_streams_and_an_api_restart() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    common::chatty_step_survives_cuts_and_an_api_restart(&r).await;
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpine_is_detected() {
    let mut r = Runner::start(sim_config()).await;
    let (run, resp) = r.prepare(job_args("alpine:3.20", json!([]))).await;
    run.assert_ok();
    assert_eq!(resp.expect("response")["isAlpine"], true);
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_exits_1_naming_the_field() {
    let r = Runner::start(sim_config()).await;
    let run = r.hook(&json!({"command": "prepare_job", "responseFile": "/tmp/x", "args": {"container": {"workingDirectory": "/__w"}}})).await;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr.trim(),
        "invalid hook input: args.container.image: missing"
    );
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_job_pod_is_named_in_the_next_step() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    r.sim
        .evict_pod("default", "arc-runner-test-workflow")
        .await
        .expect("evicted");
    let s = r.script_step("echo never\n", json!({})).await;
    assert_ne!(s.code, 0);
    assert!(s.stderr.contains("Evicted"), "{}", s.stderr);
    assert!(s.stderr.contains("low on resource: memory"), "{}", s.stderr);
    r.clean_up().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_job_container_is_named() {
    let r = Runner::prepared(sim_config(), job_args("ubuntu:24.04", json!([]))).await;
    let marker = r.runner_path("repo/repo/started");
    let step = r.script_step("touch started\nsleep 30\n", json!({}));
    let killer = async {
        for _ in 0..200 {
            if marker.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        r.sim
            .oom_kill("default", "arc-runner-test-workflow", "job")
            .await
            .expect("oom kill");
    };
    let (s, ()) = tokio::join!(step, killer);
    assert_ne!(s.code, 0, "{s:?}");
    assert!(s.stderr.contains("OOMKilled"), "{}", s.stderr);
    // The last line says it was the infrastructure's doing, with the code the kill left.
    let last = s.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("arc-hook: infrastructure failure: ") && last.ends_with("exit code 137"),
        "{}",
        s.stdout
    );
    r.clean_up().await;
}
