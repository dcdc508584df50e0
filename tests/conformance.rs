//! The hook against a real control plane: `scripts/real-cluster.sh` brings up etcd, kube-apiserver,
//! kube-scheduler and kube-controller-manager (tests/conformance) with arc-hook's node agent, and
//! the hook runs as the runner's ServiceAccount bound to deploy/rbac's Role.
//!
//! Needs the conformance binary (`tests/conformance/build.sh`, or `CONFORMANCE_BIN`), kubectl,
//! openssl and python3; under CI=true a missing one fails the test, elsewhere it is skipped.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{Cluster, prerequisites_met, repo, run_bounded};

#[test]
fn build_and_test_replays_on_the_real_control_plane_and_cleanup_leaves_nothing() {
    if !prerequisites_met() {
        return;
    }
    let job = repo().join("fixtures/jobs/build-and-test");
    let cluster = Cluster::up(Some(&job.join("sim.json")));
    // real-cluster.sh laid out the runner side: pod arc-runner, its claim bound to a local PV at
    // DIR/runner/_work, which the replay's runner home must be.
    let home = cluster.dir.join("runner");
    let mut replay = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
    replay
        .args(["replay", "--cluster", "--workdir"])
        .arg(&home)
        .arg(&job)
        .env("KUBECONFIG", cluster.runner());
    let ran = run_bounded(replay, cluster.scratch.path(), Duration::from_secs(300));
    let log = format!("{}{}", ran.stdout, ran.stderr);
    assert!(ran.status.success(), "replay --cluster failed:\n{log}");
    assert!(
        log.contains("--cluster: using context \"conformance\""),
        "{log}"
    );
    for command in [
        "01-prepare_job.json: prepare_job exited 0",
        "02-build.json: run_script_step exited 0",
        "03-test.json: run_script_step exited 0",
        "04-service.json: run_script_step exited 0",
        "05-cleanup_job.json: cleanup_job exited 0",
    ] {
        assert!(log.contains(command), "no {command:?} in:\n{log}");
    }
    assert!(log.contains("service web answered"), "{log}");

    // cleanup_job left only the runner's own pod (the hook's pods, secrets, jobs and leases are gone).
    let left = cluster.kubectl_ok(
        &cluster.runner(),
        &["get", "pods,secrets,jobs,leases", "-o", "name"],
        None,
    );
    assert_eq!(left.trim(), "pod/arc-runner", "left after cleanup_job");
}

#[test]
fn node_agent_runs_scheduled_pods_with_exec_exit_codes_and_logs_through_the_apiserver() {
    if !prerequisites_met() {
        return;
    }
    let cluster = Cluster::up(None);
    let runner = cluster.runner();
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
      "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
        "command": ["sh", "-c", "echo started; sleep 120"]}]}}"#;
    cluster.kubectl_ok(&runner, &["create"], Some(pod));
    cluster.kubectl_ok(
        &runner,
        &[
            "wait",
            "--for",
            "condition=Ready",
            "pod/p",
            "--timeout",
            "60s",
        ],
        None,
    );
    let node = cluster.kubectl_ok(
        &runner,
        &["get", "pod/p", "-o", "jsonpath={.spec.nodeName}"],
        None,
    );
    assert_eq!(
        node, "arc-node",
        "the real scheduler binds to the agent's Node"
    );
    // The agent keeps the Node alive as a kubelet does, with its Lease in kube-node-lease.
    let holder = cluster.kubectl_ok(
        &cluster.admin(),
        &[
            "-n",
            "kube-node-lease",
            "get",
            "lease/arc-node",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert_eq!(holder, "arc-node");

    // kubectl speaks WebSocket v5 to the apiserver, which speaks SPDY to the kubelet front.
    let exec = cluster.kubectl(
        &runner,
        &[
            "exec",
            "p",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(exec.status.code(), Some(3), "{}", exec.stderr);
    assert_eq!(exec.stdout, "out\n");
    assert!(exec.stderr.starts_with("err\n"), "{}", exec.stderr);

    let logs = cluster.kubectl_ok(&runner, &["logs", "p", "--timestamps"], None);
    let (stamp, line) = logs.trim_end().split_once(' ').expect("a timestamped line");
    assert_eq!(line, "started");
    assert!(stamp.ends_with('Z') && stamp.contains('T'), "{logs}");

    // The local kubelet's events reach the real pod, where the hook reads why a container failed.
    let bad = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"},
      "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
        "command": ["/no/such/program"]}]}}"#;
    cluster.kubectl_ok(&runner, &["create"], Some(bad));
    let deadline = Instant::now() + Duration::from_secs(60);
    let warnings = loop {
        let warnings = cluster.kubectl_ok(
            &runner,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=bad,type=Warning",
                "-o",
                "jsonpath={.items[*].message}",
            ],
            None,
        );
        if warnings.contains("/no/such/program") || Instant::now() >= deadline {
            break warnings;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        warnings.contains("/no/such/program"),
        "warnings: {warnings:?}"
    );

    // RBAC is real: deploy/rbac's Role grants no configMaps and nothing outside its namespace.
    let denied = cluster.kubectl(&runner, &["get", "configmaps"], None);
    assert!(!denied.status.success());
    assert!(denied.stderr.contains("Forbidden"), "{}", denied.stderr);
    let denied = cluster.kubectl(&runner, &["-n", "default", "get", "pods"], None);
    assert!(denied.stderr.contains("Forbidden"), "{}", denied.stderr);
}

/// The summary's outcome of each command (`exit N` or `skipped`), without the durations.
fn outcomes(log: &str) -> Vec<String> {
    log.lines()
        .skip_while(|l| !l.starts_with("── summary"))
        .skip(1)
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len().saturating_sub(1)].join(" ")
        })
        .collect()
}

/// Every fixture job, in claim and in no-volume mode, ends command for command as it does on the
/// simulator: a difference is a finding about the simulator (or the node agent). `under-faults`
/// is left out: the real apiserver has no fault-injection knob.
#[test]
fn every_fixture_job_ends_alike_on_the_simulator_and_the_real_control_plane_in_both_modes() {
    if !prerequisites_met() {
        return;
    }
    let fixtures = repo().join("fixtures/jobs");
    // One cluster for all jobs: the node's images are the union of the jobs' sim.json (only
    // build-and-test names one).
    let cluster = Cluster::up(Some(&fixtures.join("build-and-test/sim.json")));
    let mut jobs: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("read fixtures/jobs")
        .map(|e| e.expect("a fixtures/jobs entry").path())
        .filter(|p| p.is_dir() && !p.ends_with("under-faults"))
        .collect();
    jobs.sort();
    assert!(jobs.len() >= 6, "fixture jobs: {jobs:?}");
    let home = cluster.dir.join("runner");
    let mut differences = Vec::new();
    for job in &jobs {
        for mode in ["claim", "copy"] {
            let mut on_sim = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
            on_sim
                .arg("replay")
                .arg(job)
                .env("ARC_HOOK_WORK_VOLUME", mode)
                .env_remove("KUBECONFIG");
            let sim = run_bounded(on_sim, cluster.scratch.path(), Duration::from_secs(300));

            // The runner's _work is the PV's directory: empty it as a fresh runner pod has it.
            let work = home.join("_work");
            std::fs::remove_dir_all(&work).expect("empty the runner's _work");
            std::fs::create_dir_all(&work).expect("recreate the runner's _work");
            let mut on_cluster = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
            on_cluster
                .args(["replay", "--cluster", "--workdir"])
                .arg(&home)
                .arg(job)
                .env("ARC_HOOK_WORK_VOLUME", mode)
                .env("KUBECONFIG", cluster.runner());
            let real = run_bounded(on_cluster, cluster.scratch.path(), Duration::from_secs(300));

            let name = job.file_name().expect("a job name").to_string_lossy();
            let (want, got) = (outcomes(&sim.stdout), outcomes(&real.stdout));
            assert!(
                !want.is_empty(),
                "{name} {mode}: no summary on the simulator:\n{}{}",
                sim.stdout,
                sim.stderr
            );
            if want != got || sim.status.code() != real.status.code() {
                differences.push(format!(
                    "{name} ({mode}): simulator {:?} {want:#?}\ncluster {:?} {got:#?}\n{}{}",
                    sim.status.code(),
                    real.status.code(),
                    real.stdout,
                    real.stderr
                ));
            }
            let left = cluster.kubectl_ok(
                &cluster.runner(),
                &["get", "pods,secrets,jobs,leases", "-o", "name"],
                None,
            );
            if left.trim() != "pod/arc-runner" {
                differences.push(format!("{name} ({mode}): left after cleanup_job: {left}"));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n\n"));
}

/// The real authorizer's rules review names exactly the permission a narrower Role lacks: a
/// runner allowed to read but not create secrets is stopped in prepare_job, before any pod.
#[test]
fn a_permission_the_role_lacks_is_named_from_the_real_authorizer() {
    if !prerequisites_met() {
        return;
    }
    let cluster = Cluster::up(None);
    let admin = cluster.admin();
    // deploy/rbac's Role without `create` on secrets, for its own ServiceAccount.
    let role = std::fs::read_to_string(repo().join("deploy/rbac/role.yaml"))
        .expect("read deploy/rbac/role.yaml");
    let secrets = r#"resources: ["secrets"]
    verbs: ["get", "list", "create", "delete"]"#;
    assert!(
        role.contains(secrets),
        "deploy/rbac/role.yaml's secrets rule changed: update this test"
    );
    let role = role
        .replace(
            secrets,
            r#"resources: ["secrets"]
    verbs: ["get", "list", "delete"]"#,
        )
        .replace("name: arc-hook-runner", "name: limited");
    cluster.kubectl_ok(&admin, &["-n", "arc-runners", "apply"], Some(&role));
    let kubeconfig = cluster.service_account_kubeconfig("limited", "limited");

    let mut replay = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
    replay
        .args(["replay", "--cluster", "--workdir"])
        .arg(cluster.dir.join("runner"))
        .arg(repo().join("fixtures/jobs/build-and-test"))
        .env("KUBECONFIG", &kubeconfig);
    let ran = run_bounded(replay, cluster.scratch.path(), Duration::from_secs(120));
    let log = format!("{}{}", ran.stdout, ran.stderr);
    assert_eq!(ran.status.code(), Some(1), "{log}");
    assert!(log.contains("prepare_job exited 1"), "{log}");
    assert!(log.contains("may not create secrets in namespace"), "{log}");
    assert!(
        !log.contains("create pods"),
        "only the missing permission: {log}"
    );
    let pods = cluster.kubectl_ok(
        &admin,
        &["-n", "arc-runners", "get", "pods", "-o", "name"],
        None,
    );
    assert_eq!(pods.trim(), "pod/arc-runner", "no workflow pod was created");
}
