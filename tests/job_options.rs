//! Job container `options:` end to end: the real binary against the simulator (root: tmpfs mounts).

mod common;

use common::{Runner, job_args, sim_config};
use serde_json::json;

fn with_options(options: &str) -> serde_json::Value {
    let mut args = job_args("ubuntu:24.04", json!([]));
    args["container"]["createOptions"] = json!(options);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sees_its_shm_size_and_option_env() {
    let mut r = Runner::start(sim_config()).await;
    let (run, _) = r
        .prepare(with_options(
            "--shm-size 2g -e 'FROM_OPTIONS=a b' --network host",
        ))
        .await;
    run.assert_ok();
    assert!(
        run.stdout
            .contains("job container: --network ignored: no Kubernetes meaning"),
        "{}",
        run.stdout
    );
    let s = r.step_ok("df -B1 --output=size,fstype /dev/shm | tail -1\necho \"env=$FROM_OPTIONS\"\nhead -c 1048576 /dev/zero > /dev/shm/probe && echo wrote\n").await;
    let mut lines = s.stdout.lines();
    let df: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(df, ["2147483648", "tmpfs"], "{}", s.stdout);
    assert!(s.stdout.contains("env=a b\n"), "{}", s.stdout);
    assert!(s.stdout.contains("wrote\n"), "{}", s.stdout);
    r.cleanup().await.assert_ok();
}

/// The simulator's kubelet runs the job's processes as `securityContext.runAsUser/runAsGroup`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_as_its_option_user() {
    let mut r = Runner::start(sim_config()).await;
    let (run, _) = r.prepare(with_options("--user 1001:1001")).await;
    run.assert_ok();
    let s = r
        .script_step("echo \"ids=$(id -u):$(id -g)\"\n", json!({}))
        .await;
    s.assert_ok();
    assert!(s.stdout.contains("ids=1001:1001"), "{}", s.stdout);
    r.cleanup().await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileged_is_refused_before_anything_is_created() {
    let mut r = Runner::start(sim_config()).await;
    let (run, _) = r.prepare(with_options("--privileged")).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("job container options: --privileged is not allowed on this runner; the platform team can allow it by adding privileged to ARC_HOOK_JOB_OPTIONS"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of("arc-runner-test").await.is_empty());

    let (run, _) = r
        .prepare_with_env(
            with_options("--privileged"),
            &[("ARC_HOOK_JOB_OPTIONS", "default,privileged")],
        )
        .await;
    run.assert_ok();
    let pod = r.job_pod().await;
    let sc = pod.spec.expect("spec").containers[0]
        .security_context
        .clone()
        .expect("security context");
    assert_eq!(sc.privileged, Some(true));
    r.cleanup().await.assert_ok();
}
