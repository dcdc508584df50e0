//! The hook under deploy/rbac's Role, which grants secrets only `create` and `delete` (issue
//! 29.8): whole fixture jobs pass on the simulator in both volume modes and leave nothing, the
//! runner's identity cannot read another secret of its namespace, and a pull secret a killed hook
//! left goes with its owner pod. The same jobs on the real control plane are in
//! tests/conformance.rs.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use arc_hook::sim::settings::SimSettings;
use arc_hook::sim::{PolicyRule, SimConfig};
use common::cluster::{repo, run_bounded};
use common::{Runner, job_args, sim_config};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

/// deploy/rbac/role.yaml's rules, checked to grant no read of secrets.
fn deploy_role() -> Vec<PolicyRule> {
    let (role, rules) = common::deploy_role();
    for r in role.rules.iter().flatten() {
        if r.resources
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|x| x == "secrets")
            && r.resource_names.as_deref().unwrap_or_default().is_empty()
        {
            assert!(
                !r.verbs
                    .iter()
                    .any(|v| ["get", "list", "watch", "*"].contains(&v.as_str())),
                "deploy/rbac/role.yaml lets the runner read secrets: {:?}",
                r.verbs
            );
        }
    }
    rules
}

/// The simulator under deploy/rbac's Role, with `job`'s image settings.
fn config_for(job: &Path) -> SimConfig {
    let mut cfg = SimConfig {
        rbac: Some(deploy_role()),
        ..sim_config()
    };
    if let Ok(text) = std::fs::read_to_string(job.join("sim.json")) {
        SimSettings::from_json(&text)
            .expect("the job's sim.json")
            .apply(&mut cfg)
            .expect("valid settings");
    }
    cfg
}

/// `replay --cluster` of `job` against the runner's simulator, as the runner's identity.
fn replay(r: &Runner, job: &Path, mode: &str) -> (Option<i32>, String) {
    let scratch = tempfile::tempdir().expect("scratch");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
    cmd.args(["replay", "--cluster", "--workdir"])
        .arg(r.home.path())
        .arg(job)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", &r.kubeconfig)
        .env("ACTIONS_RUNNER_POD_NAME", &r.name)
        .env("ARC_HOOK_WORK_VOLUME", mode);
    let ran = run_bounded(cmd, scratch.path(), Duration::from_secs(300));
    (ran.status.code(), format!("{}{}", ran.stdout, ran.stderr))
}

/// What is in the namespace besides the runner pod and `keep`, seen as the admin.
async fn leftovers(r: &Runner, keep: &str) -> Vec<String> {
    let admin = r.sim.admin_client().await;
    let mut left = Vec::new();
    let name = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.name.clone().unwrap_or_default()
    };
    let pods: kube::Api<Pod> = kube::Api::default_namespaced(admin.clone());
    for p in pods.list(&Default::default()).await.expect("pods").items {
        left.push(format!("pod/{}", name(&p.metadata)));
    }
    let secrets: kube::Api<Secret> = kube::Api::default_namespaced(admin.clone());
    for s in secrets
        .list(&Default::default())
        .await
        .expect("secrets")
        .items
    {
        left.push(format!("secret/{}", name(&s.metadata)));
    }
    let jobs: kube::Api<Job> = kube::Api::default_namespaced(admin.clone());
    for j in jobs.list(&Default::default()).await.expect("jobs").items {
        left.push(format!("job/{}", name(&j.metadata)));
    }
    let leases: kube::Api<Lease> = kube::Api::default_namespaced(admin);
    for l in leases
        .list(&Default::default())
        .await
        .expect("leases")
        .items
    {
        left.push(format!("lease/{}", name(&l.metadata)));
    }
    left.retain(|o| *o != format!("pod/{}", r.name) && o != keep);
    left
}

/// Another runner's secret (as ARC keeps the JIT configuration), made by the admin.
async fn other_secret(r: &Runner) {
    let secrets: kube::Api<Secret> = kube::Api::default_namespaced(r.sim.admin_client().await);
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "arc-runner-other-jit"},
        "stringData": {"jitToken": "another runner's registration"}
    }))
    .expect("a secret");
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("the admin creates it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_jobs_pass_under_a_role_that_reads_no_secret_and_leave_nothing() {
    let fixtures = repo().join("fixtures/jobs");
    let jobs: Vec<PathBuf> = ["build-and-test", "registry-secrets"]
        .iter()
        .map(|j| fixtures.join(j))
        .collect();
    for job in &jobs {
        for mode in ["claim", "copy"] {
            let r = Runner::start(config_for(job)).await;
            other_secret(&r).await;
            let (code, log) = {
                let (r, job) = (&r, job.clone());
                tokio::task::block_in_place(|| replay(r, &job, mode))
            };
            let name = job.file_name().expect("a name").to_string_lossy();
            assert_eq!(code, Some(0), "{name} ({mode}):\n{log}");
            assert!(
                !log.contains("may not"),
                "{name} ({mode}): a permission was missing:\n{log}"
            );
            if name == "registry-secrets" {
                assert!(log.contains("API_TOKEN arrived (22 characters)"), "{log}");
                assert!(!log.contains("fixture-token-not-real"), "{log}");
                assert!(!log.contains("password-not-real"), "{log}");
            }
            let left = leftovers(&r, "secret/arc-runner-other-jit").await;
            assert!(left.is_empty(), "{name} ({mode}) left {left:?}");

            // The runner's identity may not read the other runner's secret, nor list secrets.
            let secrets: kube::Api<Secret> = kube::Api::default_namespaced(r.sim.client().await);
            for denied in [
                secrets.get("arc-runner-other-jit").await.map(|_| ()),
                secrets.list(&Default::default()).await.map(|_| ()),
            ] {
                match denied {
                    Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
                    other => panic!("the runner read a secret: {other:?}"),
                }
            }
            r.sim.shutdown().await;
        }
    }
}

/// prepare_job's pull secret, made before the workflow pod, is owned by the runner pod: a hook
/// killed before cleanup_job (which deletes it by name) leaves it only as long as the runner pod
/// lives, and no Role needs `list` on secrets to find it.
#[tokio::test]
async fn the_pull_secret_goes_with_the_runner_pod() {
    let mut r = Runner::start(SimConfig {
        rbac: Some(deploy_role()),
        ..sim_config()
    })
    .await;
    let mut args = job_args("ubuntu:24.04", json!([]));
    args["container"]["registry"] = json!({"username": "ci-bot", "password": "not-real", "serverUrl": "registry.example.internal"});
    let (run, _) = r.prepare(args).await;
    run.assert_ok();
    let state = r.state.clone().expect("a state");
    let name = state["registrySecret"]
        .as_str()
        .unwrap_or_else(|| panic!("the state names the pull secret: {state}"))
        .to_string();
    let admin = r.sim.admin_client().await;
    let secrets: kube::Api<Secret> = kube::Api::default_namespaced(admin.clone());
    let secret = secrets.get(&name).await.expect("the pull secret exists");
    let owners = secret.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Pod", r.name.as_str())
    );

    // The hook is gone without cleanup_job; ARC deletes the runner pod.
    let pods: kube::Api<Pod> = kube::Api::default_namespaced(admin);
    pods.delete(&r.name, &DeleteParams::default().grace_period(0))
        .await
        .expect("the runner pod is deleted");
    let mut gone = false;
    for _ in 0..100 {
        if secrets.get_opt(&name).await.expect("read").is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the pull secret outlived its owner, the runner pod");
    r.sim.shutdown().await;
}

/// A retried create whose first attempt landed (its answer lost) meets AlreadyExists, and the
/// Role may not read the secret to see whose it is: the hook deletes that name and creates it
/// again, so the secret holds what it sent now (here the first attempt's stand-in, made by the
/// admin, held something else).
#[tokio::test]
async fn a_lost_create_of_an_unreadable_secret_is_made_again() {
    let r = Runner::start(SimConfig {
        rbac: Some(deploy_role()),
        ..sim_config()
    })
    .await;
    let name = arc_hook::objects::names::runner_object_name(&r.name, "secret", "abcdefgh");
    let secret = |value: &str| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"runner-pod": r.name}},
            "stringData": {"v": value}
        }))
        .expect("a secret")
    };
    let admin: kube::Api<Secret> = kube::Api::default_namespaced(r.sim.admin_client().await);
    admin
        .create(&PostParams::default(), &secret("first attempt"))
        .await
        .expect("the first attempt landed");
    let kube = arc_hook::k8s::Kube {
        client: r.sim.client().await,
        namespace: "default".into(),
        server: r.sim.url(),
    };
    let runner_pod = arc_hook::k8s::owned::pod_owner(&kube, &r.name).await;
    assert!(runner_pod.is_some(), "the runner pod is readable");
    arc_hook::k8s::owned::create_secret_once(
        &kube.secrets(),
        "secret",
        &secret("sent now"),
        runner_pod,
    )
    .await
    .expect("created again");
    let now = admin.get(&name).await.expect("the secret");
    assert_eq!(
        now.data.expect("data")["v"].0,
        b"sent now".to_vec(),
        "the secret holds what was sent last"
    );
    assert_eq!(
        now.metadata.owner_references.expect("an owner")[0].name,
        r.name
    );
    r.sim.shutdown().await;
}
