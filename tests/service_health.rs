//! Service health checks end to end: docker's `--health-cmd` options from the runner's JSON
//! (fixtures/prepare_job_health.json), the real binary, and the simulator's kubelet running the
//! readiness probes.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Runner, sim_config};
use serde_json::{Value, json};

/// The fixture's prepare_job args.
fn fixture_args() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/prepare_job_health.json"
    ))
    .expect("fixture");
    let envelope: Value = serde_json::from_str(&text).expect("fixture is JSON");
    envelope["args"].clone()
}

/// Stand-ins for the images' tools, on the services' PATH: `pg_isready` answers as PostgreSQL's
/// does, accepting once `$READY_FILE` exists; `redis-cli ping` answers PONG. They live in the
/// work volume, which the service containers mount (each container has a private /tmp).
fn tools(r: &Runner) -> String {
    let bin = r.runner_path("_tool/service-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let write = |name: &str, body: &str| {
        let p = bin.join(name);
        std::fs::write(&p, body).expect("write tool");
        let mut perm = std::fs::metadata(&p).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).expect("chmod");
    };
    write(
        "pg_isready",
        "#!/bin/sh\nif [ -f \"$READY_FILE\" ]; then echo 'localhost:5432 - accepting connections'; else echo 'localhost:5432 - no response'; exit 2; fi\n",
    );
    write("redis-cli", "#!/bin/sh\necho PONG\n");
    format!("{}:/usr/local/bin:/usr/bin:/bin", in_pod(r, &bin))
}

/// Where a path under the runner's `_work` is in the pod: `/__w/...` where pods get their own
/// mount namespaces (root), else the host path itself.
fn in_pod(r: &Runner, host: &Path) -> String {
    if r.sim.uses_namespaces() {
        let rel = host.strip_prefix(&r.work).expect("under _work");
        format!("/__w/{}", rel.display())
    } else {
        host.display().to_string()
    }
}

/// A runner whose `postgres:16` starts accepting connections after `ready_after` seconds
/// (never when `None`), and the fixture's args pointed at this runner's tools.
async fn runner(ready_after: Option<u32>) -> (Runner, Value, std::path::PathBuf) {
    let mut cfg = sim_config();
    let start = match ready_after {
        Some(s) => format!("sleep {s}; touch \"$READY_FILE\"; exec sleep infinity"),
        None => "exec sleep infinity".to_string(),
    };
    cfg.image_commands = HashMap::from([(
        "postgres:16".to_string(),
        vec!["sh".into(), "-c".into(), start],
    )]);
    let r = Runner::start(cfg).await;
    let ready_file = r.runner_path("_temp/postgres-ready");
    let path = tools(&r);
    let mut args = fixture_args();
    for s in args["services"].as_array_mut().expect("services") {
        s["environmentVariables"]["PATH"] = json!(path);
        s["environmentVariables"]["READY_FILE"] = json!(in_pod(&r, &ready_file));
    }
    (r, args, ready_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_step_waits_for_a_service_turning_healthy() {
    let (mut r, args, ready_file) = runner(Some(3)).await;
    let began = Instant::now();
    let (run, resp) = r.prepare(args).await;
    let took = began.elapsed();
    run.assert_ok();
    assert!(
        took >= Duration::from_secs(3),
        "prepare_job returned after {took:?}, before postgres was healthy\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "arc-hook: waiting for services to be healthy: postgres (up to 17s), redis (up to 17s)"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("arc-hook: service postgres is healthy (after "),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("arc-hook: service redis is healthy (after "),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("redis-1 is healthy"), "{}", run.stdout);

    // Two services with the same image: distinct containers, both in the runner's service
    // context, in the job's order, with their own ports.
    let resp = resp.expect("response");
    let services = resp["context"]["services"].as_array().expect("services");
    let images: Vec<&str> = services
        .iter()
        .filter_map(|s| s["image"].as_str())
        .collect();
    assert_eq!(images, ["postgres:16", "redis:7", "redis:7"]);
    assert_eq!(services[0]["ports"]["5432"], "5432");
    assert_eq!(services[1]["ports"]["6379"], "6379");
    assert_eq!(services[2]["ports"]["6379"], "6380");
    let pod = r.job_pod().await;
    let spec = pod.spec.expect("spec");
    let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["job", "postgres", "redis", "redis-1"]);
    let probed: Vec<&str> = spec
        .containers
        .iter()
        .filter(|c| c.readiness_probe.is_some())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        probed,
        ["postgres", "redis"],
        "--no-healthcheck adds no probe"
    );

    // The first step finds the database ready.
    let s = r
        .script_step(
            &format!(
                "test -f '{}' && echo database ready\n",
                in_pod(&r, &ready_file)
            ),
            json!({}),
        )
        .await;
    s.assert_ok();
    assert!(s.stdout.contains("database ready"), "{}", s.stdout);
    r.cleanup().await.assert_ok();
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_never_turns_healthy_fails_prepare_job_naming_it() {
    let (mut r, mut args, _) = runner(None).await;
    args["services"][0]["createOptions"] = json!(
        "--health-cmd 'pg_isready -h localhost' --health-interval 1s --health-timeout 1s --health-retries 2"
    );
    let began = Instant::now();
    let (run, _) = r.prepare(args).await;
    let took = began.elapsed();
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("service postgres is unhealthy: its health check (--health-cmd, every 1s, 1s timeout, 2 retries) did not pass within 15s; last result: Readiness probe failed: localhost:5432 - no response"),
        "{}",
        run.stderr
    );
    // 15 s for the check, plus starting and removing the pod; never the prepare timeout (60 s).
    assert!(
        (Duration::from_secs(15)..Duration::from_secs(45)).contains(&took),
        "{took:?}"
    );
    assert!(
        r.pods_of(common::RUNNER).await.is_empty(),
        "the failed job's pod is removed"
    );
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_without_health_options_are_not_waited_for() {
    let (mut r, mut args, _) = runner(None).await;
    for s in args["services"].as_array_mut().expect("services") {
        s["createOptions"] = Value::Null;
    }
    let (run, _) = r.prepare(args).await;
    run.assert_ok();
    assert!(
        !run.stdout.contains("waiting for services"),
        "{}",
        run.stdout
    );
    let pod = r.job_pod().await;
    assert!(
        pod.spec
            .expect("spec")
            .containers
            .iter()
            .all(|c| c.readiness_probe.is_none())
    );
    r.cleanup().await.assert_ok();
    r.sim.shutdown().await;
}

/// Under ARC's default Role (no `list events`) the failure still names the service and says
/// where its probe's output is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_events_the_failure_says_where_the_output_is() {
    let mut cfg = sim_config();
    cfg.rbac = Some(arc_hook::sim::arc_chart_default_role());
    cfg.image_commands = HashMap::from([(
        "postgres:16".to_string(),
        ["sleep", "infinity"].map(String::from).to_vec(),
    )]);
    let mut r = Runner::start(cfg).await;
    let mut args = fixture_args();
    args["services"] = json!([args["services"][0].clone()]);
    args["services"][0]["createOptions"] =
        json!("--health-cmd 'exit 1' --health-interval 1s --health-timeout 1s --health-retries 1");
    let (run, _) = r.prepare(args).await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("service postgres is unhealthy: its health check (--health-cmd, every 1s, 1s timeout, 1 retry) did not pass within 13s; its probe's output is in the pod's events, which this runner's Role cannot list"),
        "{}",
        run.stderr
    );
    r.sim.shutdown().await;
}
