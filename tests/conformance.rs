//! The hook against a real control plane: `scripts/real-cluster.sh` brings up etcd, kube-apiserver,
//! kube-scheduler and kube-controller-manager (tests/conformance) with arc-hook's node agent, and
//! the hook runs as the runner's ServiceAccount bound to deploy/rbac's Role (the cluster helpers are
//! in tests/common/cluster.rs, shared with tests/sim_differential.rs).
//!
//! Needs the conformance binary (`tests/conformance/build.sh`, or `CONFORMANCE_BIN`), kubectl,
//! openssl and python3; under CI=true a missing one fails the test, elsewhere it is skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    // DIR/runner/_work, which the replay's runner home must be. The README's command, as a
    // newcomer types it: no --workdir (the runner pod's annotation says where its home is).
    let home = cluster.dir.join("runner");
    let mut replay = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
    replay
        .args(["replay", "--cluster"])
        .arg(&job)
        .env("KUBECONFIG", cluster.runner());
    let ran = run_bounded(replay, cluster.scratch.path(), Duration::from_secs(300));
    let log = format!("{}{}", ran.stdout, ran.stderr);
    assert!(ran.status.success(), "replay --cluster failed:\n{log}");
    assert!(
        log.contains("--cluster: using context \"conformance\""),
        "{log}"
    );
    assert!(
        log.contains(&format!("the runner's home is {}", home.display())),
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

    // cleanup_job left only the runner's own pod (the hook's pods, secrets, jobs and leases are
    // gone), seen as the admin: the runner may not list secrets.
    let left = cluster.leftovers();
    assert!(left.is_empty(), "left after cleanup_job: {left:?}");
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

/// A sim.json under `dir` with the `imageCommands` of every job's sim.json (the node agent's
/// images; the rest of a job's settings, e.g. its Role, is the simulator's alone).
fn union_of_image_commands(jobs: &[PathBuf], dir: &Path) -> PathBuf {
    let mut images = serde_json::Map::new();
    for job in jobs {
        let Ok(text) = std::fs::read_to_string(job.join("sim.json")) else {
            continue;
        };
        let settings: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", job.display()));
        if let Some(m) = settings["imageCommands"].as_object() {
            images.extend(m.clone());
        }
    }
    let path = dir.join("sim.json");
    let json = serde_json::json!({ "imageCommands": images });
    std::fs::write(&path, json.to_string()).expect("write the node's settings");
    path
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
/// is left out: the real apiserver has no fault-injection knob. `hostile-links` is the security
/// attacks' part that replays (links to /etc/shadow from file commands and chained in `_temp`):
/// refused alike, and no line of the file reaches a log.
#[test]
fn every_fixture_job_ends_alike_on_the_simulator_and_the_real_control_plane_in_both_modes() {
    if !prerequisites_met() {
        return;
    }
    let fixtures = repo().join("fixtures/jobs");
    let mut jobs: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .expect("read fixtures/jobs")
        .map(|e| e.expect("a fixtures/jobs entry").path())
        .filter(|p| p.is_dir() && !p.ends_with("under-faults"))
        .collect();
    jobs.sort();
    // One cluster for all jobs: the node's images are the union of the jobs' sim.json.
    let settings = tempfile::tempdir().expect("a directory for the node's settings");
    let cluster = Cluster::up(Some(&union_of_image_commands(&jobs, settings.path())));
    assert!(jobs.len() >= 6, "fixture jobs: {jobs:?}");
    let home = cluster.dir.join("runner");
    // hostile-links points the runner at /etc/shadow: no line of it may reach a job log.
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let secrets: Vec<&str> = shadow.lines().filter(|l| l.len() > 8).collect();
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
            if secrets
                .iter()
                .any(|s| real.stdout.contains(s) || real.stderr.contains(s))
            {
                differences.push(format!(
                    "{name} ({mode}): a line of /etc/shadow reached the log"
                ));
            }
            // As the admin: the runner may not list secrets.
            let left = cluster.leftovers();
            if !left.is_empty() {
                differences.push(format!("{name} ({mode}): left after cleanup_job: {left:?}"));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n\n"));
}

/// The real authorizer's rules review names exactly the permission a narrower Role lacks: a
/// runner allowed to delete but not create secrets is stopped in prepare_job, before any pod.
#[test]
fn a_permission_the_role_lacks_is_named_from_the_real_authorizer() {
    if !prerequisites_met() {
        return;
    }
    let cluster = Cluster::up(None);
    let admin = cluster.admin();
    // deploy/rbac's Role without `create` on secrets, for its own ServiceAccount (its only
    // `verbs: ["create", "delete"]` is the secrets rule's).
    let role = std::fs::read_to_string(repo().join("deploy/rbac/role.yaml"))
        .expect("read deploy/rbac/role.yaml");
    let secrets = r#"verbs: ["create", "delete"]"#;
    assert!(
        role.contains(secrets),
        "deploy/rbac/role.yaml's secrets rule changed: update this test"
    );
    let role = role
        .replace(secrets, r#"verbs: ["delete"]"#)
        .replace("name: arc-hook-runner", "name: limited");
    let limited = format!(
        r#"apiVersion: v1
kind: ServiceAccount
metadata: {{name: limited, namespace: arc-runners}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: limited, namespace: arc-runners}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: limited}}
subjects: [{{kind: ServiceAccount, name: limited, namespace: arc-runners}}]
---
{role}"#
    );
    let kubeconfig = cluster.account_kubeconfig("limited", &limited);
    let ran = cluster.replay(
        &kubeconfig,
        &repo().join("fixtures/jobs/build-and-test"),
        &[],
    );
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

/// A job pod no scheduler picks up (the template names a scheduler that does not run) is not a
/// silent wait: after 30 s prepare_job says its scheduler has not looked at it and which one,
/// and at the timeout it fails with that reason, leaving nothing. The real kube-scheduler leaves
/// pods of another schedulerName alone, as a stopped one would.
#[test]
fn a_pod_no_scheduler_picks_up_is_named_with_its_scheduler() {
    if !prerequisites_met() {
        return;
    }
    let cluster = Cluster::up(None);
    let template = cluster.scratch.path().join("other-scheduler.yaml");
    std::fs::write(&template, "spec:\n  schedulerName: gpu-batch-scheduler\n").expect("template");
    let ran = cluster.replay(
        &cluster.runner(),
        &repo().join("fixtures/jobs/build-and-test"),
        &[
            ("ARC_HOOK_WORK_VOLUME", "copy"),
            (
                "ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE",
                &template.to_string_lossy(),
            ),
            ("ACTIONS_RUNNER_PREPARE_JOB_TIMEOUT_SECONDS", "40"),
        ],
    );
    let log = format!("{}{}", ran.stdout, ran.stderr);
    assert_eq!(ran.status.code(), Some(1), "{log}");
    assert!(log.contains("prepare_job exited 1"), "{log}");
    assert!(
        log.contains(
            "has not been picked up by its scheduler gpu-batch-scheduler (30s so far, up to 40s)"
        ),
        "a notice while it waits: {log}"
    );
    assert!(
        log.contains("did not start within 40s")
            && log.contains("never picked up by its scheduler gpu-batch-scheduler"),
        "the timeout names the scheduler: {log}"
    );
    let left = cluster.leftovers();
    assert!(left.is_empty(), "left {left:?}");
}

/// deploy/rbac's Role grants secrets only `create` and `delete` (issue 29.8): on the real
/// apiserver, as the runner's ServiceAccount bound to it, build-and-test and registry-secrets (a
/// pull secret for the job, a container step with its own pull secret and a secret in its
/// environment) pass in both volume modes and leave nothing, and the real authorizer refuses the
/// runner another runner's secret (403), the list of secrets, and a watch on them.
#[test]
fn jobs_pass_under_deploy_rbac_and_the_runner_reads_no_other_secret() {
    if !prerequisites_met() {
        return;
    }
    let role = std::fs::read_to_string(repo().join("deploy/rbac/role.yaml"))
        .expect("read deploy/rbac/role.yaml");
    assert!(
        role.contains(r#"resources: ["secrets"]"#)
            && role.contains(r#"verbs: ["create", "delete"]"#),
        "deploy/rbac/role.yaml's secrets rule changed: update this test"
    );
    let fixtures = repo().join("fixtures/jobs");
    let jobs = [
        fixtures.join("build-and-test"),
        fixtures.join("registry-secrets"),
    ];
    let settings = tempfile::tempdir().expect("a directory for the node's settings");
    let cluster = Cluster::up(Some(&union_of_image_commands(&jobs, settings.path())));
    let admin = cluster.admin();
    // Another runner's JIT configuration, as ARC keeps it in the runners' namespace.
    cluster.kubectl_ok(
        &admin,
        &[
            "-n",
            "arc-runners",
            "create",
            "secret",
            "generic",
            "arc-runner-other-jit",
            "--from-literal=jitToken=another-runners-registration",
        ],
        None,
    );
    for job in &jobs {
        for mode in ["claim", "copy"] {
            let ran = cluster.replay(&cluster.runner(), job, &[("ARC_HOOK_WORK_VOLUME", mode)]);
            let log = format!("{}{}", ran.stdout, ran.stderr);
            let name = job.file_name().expect("a name").to_string_lossy();
            assert_eq!(ran.status.code(), Some(0), "{name} ({mode}):\n{log}");
            assert!(!log.contains("may not"), "{name} ({mode}):\n{log}");
            assert!(!log.contains("another-runners-registration"), "{log}");
            let left: Vec<String> = cluster
                .leftovers()
                .into_iter()
                .filter(|o| o != "secret/arc-runner-other-jit")
                .collect();
            assert!(left.is_empty(), "{name} ({mode}) left {left:?}");
        }
    }
    let runner = cluster.runner();
    for args in [
        &["get", "secret", "arc-runner-other-jit", "-o", "yaml"][..],
        &["get", "secrets"][..],
        &["get", "secrets", "--watch", "--request-timeout=5s"][..],
    ] {
        let denied = cluster.kubectl(&runner, args, None);
        assert!(
            !denied.status.success(),
            "kubectl {args:?} succeeded: {}",
            denied.stdout
        );
        assert!(
            denied.stderr.contains("Forbidden") && denied.stderr.contains("cannot"),
            "kubectl {args:?}: {}",
            denied.stderr
        );
        assert!(!denied.stdout.contains("jitToken"), "{}", denied.stdout);
    }
    let can = cluster.kubectl(
        &runner,
        &["auth", "can-i", "get", "secrets/arc-runner-other-jit"],
        None,
    );
    assert_eq!(can.stdout.trim(), "no", "{}{}", can.stdout, can.stderr);
}

/// ARC's chart's own Role (rendered by helm from the vendored chart, as a scale set without
/// `serviceAccountName` gets it: no `watch`, no ephemeral containers, no events, no leases) is
/// enough on the real apiserver: in kubernetes mode the fixture jobs with script steps, services and
/// container steps (as Jobs, the only way that Role allows) pass and leave nothing; in
/// kubernetes-novolume mode (that Role has no Jobs) the script-step jobs pass, and the held-out
/// style Docker-action job, whose action runs in a pod of its own (issue 32).
#[test]
fn fixture_jobs_pass_under_the_arc_charts_own_role() {
    if !prerequisites_met() {
        return;
    }
    let tools = Command::new(repo().join("scripts/deploy-tools.sh"))
        .args(["helm", "arc"])
        .output()
        .expect("scripts/deploy-tools.sh runs");
    assert!(
        tools.status.success(),
        "scripts/deploy-tools.sh helm arc: {}",
        String::from_utf8_lossy(&tools.stderr)
    );
    let paths = String::from_utf8_lossy(&tools.stdout).to_string();
    let paths: Vec<&str> = paths.split_whitespace().collect();
    let (helm, chart) = (
        paths[0],
        Path::new(paths[1]).join("charts/gha-runner-scale-set"),
    );
    let fixtures = repo().join("fixtures/jobs");
    let settings = tempfile::tempdir().expect("a directory for the node's settings");
    let all = [
        fixtures.join("build-and-test"),
        fixtures.join("docker-action-no-volume"),
    ];
    let cluster = Cluster::up(Some(&union_of_image_commands(&all, settings.path())));
    for (mode, work_volume, jobs) in [
        (
            "kubernetes",
            "claim",
            &["build-and-test", "runner-encodings", "file-commands"][..],
        ),
        (
            // Issue 32: the Docker action runs in a pod of its own (no Jobs, no ephemeral containers).
            "kubernetes-novolume",
            "copy",
            &["build-and-test", "file-commands", "docker-action-no-volume"][..],
        ),
    ] {
        let release = format!("chart-{}", mode.len());
        let rendered = Command::new(helm)
            .args(["template", &release])
            .arg(&chart)
            .args([
                "--namespace",
                "arc-runners",
                "--set",
                "githubConfigUrl=https://github.com/example-org",
                "--set",
                "githubConfigSecret=arc-github-app",
                "--set",
                "controllerServiceAccount.namespace=arc-systems",
                "--set",
                "controllerServiceAccount.name=arc-gha-rs-controller",
                "--set",
            ])
            .arg(format!("containerMode.type={mode}"))
            .output()
            .expect("helm runs");
        assert!(
            rendered.status.success(),
            "helm template ({mode}): {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        let rendered = String::from_utf8_lossy(&rendered.stdout).to_string();
        // The chart's kube-mode ServiceAccount, Role and RoleBinding, as the chart renders them.
        let docs: Vec<&str> = rendered
            .split("\n---")
            .filter(|d| {
                ["kind: ServiceAccount", "kind: Role\n", "kind: RoleBinding"]
                    .iter()
                    .any(|k| d.contains(k))
                    && d.contains("kube-mode")
            })
            .collect();
        assert_eq!(
            docs.len(),
            3,
            "the chart's kube-mode objects ({mode}):\n{rendered}"
        );
        let role = docs
            .iter()
            .find(|d| d.contains("kind: Role\n"))
            .expect("a Role");
        assert!(
            !role.contains("ephemeralcontainers") && !role.contains("events"),
            "the chart's Role grew: update this test's expectations:\n{role}"
        );
        let account = format!("{release}-gha-rs-kube-mode");
        let kubeconfig = cluster.account_kubeconfig(&account, &docs.join("\n---\n"));
        for job in jobs {
            let ran = cluster.replay(
                &kubeconfig,
                &fixtures.join(job),
                &[("ARC_HOOK_WORK_VOLUME", work_volume)],
            );
            let log = format!("{}{}", ran.stdout, ran.stderr);
            assert_eq!(
                ran.status.code(),
                Some(0),
                "{job} under the {mode} Role:\n{log}"
            );
            let left = cluster.leftovers();
            assert!(left.is_empty(), "{job} ({mode}) left {left:?}");
        }
    }
}

/// A job of three commands from cancel-step's, in `cluster`'s scratch directory: prepare, a
/// 20-second step that prints a line a second and exits 7, cleanup.
fn restart_job(cluster: &Cluster) -> std::path::PathBuf {
    let job = cluster.scratch.path().join("restart-job");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(repo().join("fixtures/jobs/cancel-step"))
        .arg(&job)
        .status()
        .expect("cp runs");
    assert!(cp.success());
    for gone in ["03-skipped-step.json", "04-post-step.json"] {
        std::fs::remove_file(job.join(gone)).expect("remove a command");
    }
    let step = job.join("02-long-step.json");
    let mut input: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&step).expect("read the step"))
            .expect("the step is JSON");
    input
        .as_object_mut()
        .expect("an object")
        .remove("cancelAfterSeconds");
    std::fs::write(&step, input.to_string()).expect("write the step");
    std::fs::write(
        job.join("work/_temp/c0000000-0000-4000-8000-000000000002.sh"),
        "for i in $(seq 1 20); do echo \"line-$i\"; sleep 1; done\necho step-done\nexit 7\n",
    )
    .expect("write the step's script");
    job
}

/// A step outlives a kube-apiserver crash: its exec stream is cut, the hook reattaches through the
/// restarted apiserver and prints every line once, in order, then the step's own exit code; both
/// volume modes, each on a cluster of its own. The apiserver is killed and away for 5 s while the
/// step runs.
///
/// Each mode gets a fresh cluster because kube-scheduler does not always come back whole from
/// its apiserver's crash: now and then it schedules no new pod until it is itself restarted
/// (seen here with v1.35.4, reproduced with kubectl alone), which would leave the next mode's job
/// pod Pending and test the scheduler rather than the hook.
#[test]
fn a_step_survives_an_apiserver_restart_with_every_line_once() {
    if !prerequisites_met() {
        return;
    }
    for mode in ["claim", "copy"] {
        let cluster = Cluster::up(None);
        let job = restart_job(&cluster);
        let home = cluster.dir.join("runner");
        std::fs::remove_dir_all(home.join("_work")).expect("empty the runner's _work");
        std::fs::create_dir_all(home.join("_work")).expect("recreate the runner's _work");
        let out = cluster.scratch.path().join(format!("replay-{mode}.log"));
        // One open file for both streams: one offset, so neither overwrites the other.
        let log_file = std::fs::File::create(&out).expect("the replay's log");
        let mut replay = Command::new(env!("CARGO_BIN_EXE_arc-hook"))
            .args(["replay", "--cluster"])
            .arg(&job)
            .env("KUBECONFIG", cluster.runner())
            .env("ARC_HOOK_WORK_VOLUME", mode)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("the replay's log"))
            .stderr(log_file)
            .spawn()
            .expect("replay starts");
        // Restart once the step has printed a few lines.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("line-4")
        {
            assert!(
                Instant::now() < deadline,
                "the step never printed line-4 ({mode}):\n{}",
                std::fs::read_to_string(&out).unwrap_or_default()
            );
            assert!(
                replay.try_wait().expect("wait").is_none(),
                "replay ended early"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut restart = Command::new(repo().join("scripts/real-cluster.sh"));
        restart
            .args(["restart"])
            .arg(&cluster.dir)
            .arg("kube-apiserver")
            .env("DOWN_SECONDS", "5")
            // A crash: every open stream is cut at once (a graceful stop lets an open exec finish).
            .env("STOP_SIGNAL", "KILL");
        let restarted = run_bounded(restart, cluster.scratch.path(), Duration::from_secs(180));
        assert!(
            restarted.status.success(),
            "restart: {}{}",
            restarted.stdout,
            restarted.stderr
        );
        let deadline = Instant::now() + Duration::from_secs(300);
        let status = loop {
            if let Some(s) = replay.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "replay did not finish ({mode})");
            std::thread::sleep(Duration::from_millis(200));
        };
        let log = std::fs::read_to_string(&out).unwrap_or_default();
        assert_eq!(
            status.code(),
            Some(7),
            "the step's own code ({mode}):\n{log}"
        );
        assert!(
            log.contains("02-long-step.json: run_script_step exited 7"),
            "{log}"
        );
        assert!(
            log.contains("reattaching"),
            "the stream broke and was reattached ({mode}):\n{log}"
        );
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("line-") || *l == "step-done")
            .collect();
        let want: Vec<String> = (1..=20)
            .map(|i| format!("line-{i}"))
            .chain(["step-done".to_string()])
            .collect();
        assert_eq!(lines, want, "every line once, in order ({mode}):\n{log}");
        assert!(
            log.contains("05-cleanup_job.json: cleanup_job exited 0"),
            "{log}"
        );
        let left = cluster.leftovers();
        assert!(left.is_empty(), "{mode}: left {left:?}");
    }
}
