//! `arc-hook check` end to end: the real binary against the embedded simulator (a runner pod,
//! its kubeconfig), reporting a good set-up, a missing permission and a template the API
//! refuses, each with its fix, and creating nothing.
mod common;

use std::process::Stdio;
use std::time::Duration;

use arc_hook::sim::{PolicyRule, SimConfig};
use common::{Runner, sim_config};

/// What one `arc-hook check` printed.
struct Checked {
    code: Option<i32>,
    lines: Vec<String>,
    stderr: String,
}

impl Checked {
    /// The line of check `name` (`ok   name: ...`, `FAIL name: ...`).
    fn line(&self, name: &str) -> &str {
        self.lines
            .iter()
            .find(|l| {
                l.get(5..)
                    .is_some_and(|rest| rest.starts_with(&format!("{name}: ")))
            })
            .unwrap_or_else(|| panic!("no line for {name}: {:#?}\n{}", self.lines, self.stderr))
    }
}

/// Runs `arc-hook check` with the runner's environment and `extra` on top.
async fn check(r: &Runner, extra: &[(&str, &str)]) -> Checked {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .arg("check")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE")
        .env_remove("ARC_HOOK_LOG")
        .envs(&r.env)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("check finishes within 60s")
        .expect("check runs");
    Checked {
        code: out.status.code(),
        lines: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Nothing of the runner's exists after a check: the dry runs stored nothing.
async fn nothing_created(r: &Runner) {
    assert_eq!(r.pods_of(&r.name).await, Vec::<String>::new(), "no pod");
    assert_eq!(
        r.secrets_of(&r.name).await,
        Vec::<String>::new(),
        "no secret"
    );
    let all: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::default_namespaced(r.sim.client().await);
    let names: Vec<String> = all
        .list(&Default::default())
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, std::slice::from_ref(&r.name), "only the runner pod");
}

#[tokio::test]
async fn a_good_set_up_passes_every_check_and_creates_nothing() {
    let r = Runner::start(sim_config()).await;
    let c = check(&r, &[]).await;
    assert_eq!(c.code, Some(0), "{:#?}\n{}", c.lines, c.stderr);
    assert!(
        c.lines
            .iter()
            .all(|l| l.starts_with("ok   ") || l.starts_with("skip ")),
        "{:#?}",
        c.lines
    );
    let server = c.line("cluster");
    assert!(
        server.contains("http://127.0.0.1:")
            && server.contains("(Kubernetes v1.32.4), namespace default, kubeconfig"),
        "{server}"
    );
    assert_eq!(
        c.line("node"),
        format!(
            "ok   node: runner pod {} runs on sim-node-1; job pods are pinned there",
            r.name
        )
    );
    assert!(c.line("pull secret (dry run)").contains("accepted"));
    assert!(
        c.line("workflow pod (dry run)").starts_with(&format!(
            "ok   workflow pod (dry run): pod {}-workflow (2 containers",
            r.name
        )),
        "{:#?}",
        c.lines
    );
    nothing_created(&r).await;

    // No-volume mode: the exec protocol is checked, and the node is not (nothing pins pods).
    let c = check(&r, &[("ARC_HOOK_WORK_VOLUME", "copy")]).await;
    assert_eq!(c.code, Some(0), "{:#?}\n{}", c.lines, c.stderr);
    assert_eq!(
        c.line("exec protocol"),
        "ok   exec protocol: v5 (Kubernetes 1.30+), as no-volume mode needs"
    );
    assert!(
        c.line("node")
            .starts_with("skip node: the scheduler places job pods")
    );
    assert!(c.line("workflow pod (dry run)").starts_with("ok   "));
    nothing_created(&r).await;
    r.sim.shutdown().await;
}

#[tokio::test]
async fn a_missing_permission_is_named_with_its_fix() {
    // ARC's Role without create on secrets or pods/exec.
    let role = vec![
        PolicyRule::new(
            &[""],
            &["pods"],
            &["get", "list", "create", "delete", "watch", "patch"],
        ),
        PolicyRule::new(&[""], &["pods/exec"], &["get"]),
        PolicyRule::new(&[""], &["pods/log"], &["get"]),
        PolicyRule::new(&[""], &["secrets"], &["get", "list", "delete"]),
    ];
    let r = Runner::start(SimConfig {
        rbac: Some(role),
        ..sim_config()
    })
    .await;
    let c = check(&r, &[]).await;
    assert_eq!(c.code, Some(1), "{:#?}\n{}", c.lines, c.stderr);
    assert_eq!(
        c.line("permissions"),
        "FAIL permissions: the runner's service account may not create pods/exec, create secrets in namespace default; fix: grant them in the runner's Role (deploy/rbac/role.yaml has the full list)"
    );
    // The dry run meets the same refusal from the API itself.
    let secret = c.line("pull secret (dry run)");
    assert!(
        secret.starts_with("FAIL ") && secret.contains("forbidden"),
        "{secret}"
    );
    assert!(
        secret.contains("; fix: grant the runner's Role create on it"),
        "{secret}"
    );
    assert!(c.line("workflow pod (dry run)").starts_with("ok   "));
    nothing_created(&r).await;
    r.sim.shutdown().await;
}

#[tokio::test]
async fn a_template_the_api_refuses_is_named_with_its_fix() {
    let r = Runner::start(sim_config()).await;
    // Loads, and merges: only the API knows that no volume is called `cache`.
    let template = r.home.path().join("template.yaml");
    std::fs::write(
        &template,
        "spec:\n  containers:\n  - name: $job\n    volumeMounts:\n    - name: cache\n      mountPath: /cache\n",
    )
    .expect("template written");
    let path = template.to_string_lossy().into_owned();
    let c = check(&r, &[("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", &path)]).await;
    assert_eq!(c.code, Some(1), "{:#?}\n{}", c.lines, c.stderr);
    assert_eq!(c.line("template"), format!("ok   template: {path} loaded"));
    let pod = c.line("workflow pod (dry run)");
    assert!(
        pod.starts_with("FAIL workflow pod (dry run): the API server refuses it: "),
        "{pod}"
    );
    assert!(
        pod.contains(&format!(
            "Pod \"{}-workflow\" is invalid: spec.containers[0].volumeMounts[",
            r.name
        )) && pod.contains("].name: Not found: \"cache\""),
        "{pod}"
    );
    assert!(
        pod.contains(&format!(
            "; fix: correct the template {path} at the field the message names"
        )),
        "{pod}"
    );
    assert_eq!(
        c.lines.iter().filter(|l| l.starts_with("FAIL ")).count(),
        1,
        "{:#?}",
        c.lines
    );
    nothing_created(&r).await;

    // A template that does not even load is said at the template line, and no dry run is made.
    std::fs::write(&template, "spec: [not, a, map\n").expect("template written");
    let c = check(&r, &[("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", &path)]).await;
    assert_eq!(c.code, Some(1));
    let t = c.line("template");
    assert!(
        t.starts_with(&format!("FAIL template: worker-podspec template {path}")),
        "{t}"
    );
    assert!(t.contains("; fix: correct "), "{t}");
    assert!(c.line("workflow pod (dry run)").starts_with("skip "));
    r.sim.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_fails_the_cluster_check_once() {
    let r = Runner::start(sim_config()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let kubeconfig = r.home.path().join("closed.kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"),
    )
    .expect("kubeconfig");
    let c = check(&r, &[("KUBECONFIG", &kubeconfig.to_string_lossy())]).await;
    assert_eq!(c.code, Some(1));
    let line = c.line("cluster");
    assert!(line.starts_with("FAIL cluster: "), "{line}");
    assert!(
        line.contains(&format!(
            "cannot connect to the Kubernetes API server at http://127.0.0.1:{port}"
        )),
        "{line}"
    );
    assert!(c.line("permissions").starts_with("skip "));
    assert_eq!(c.stderr, "", "no dependency log lines");
    r.sim.shutdown().await;
}

/// deploy/rbac's rules (from role.yaml), without the leases rule when `leases` is false.
fn deploy_rules(leases: bool) -> Vec<PolicyRule> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac/role.yaml");
    let role: k8s_openapi::api::rbac::v1::Role =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("role.yaml"))
            .expect("a Role");
    role.rules
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            leases
                || !r
                    .resources
                    .as_deref()
                    .unwrap_or_default()
                    .contains(&"leases".to_string())
        })
        .map(|r| {
            fn s(v: &[String]) -> Vec<&str> {
                v.iter().map(String::as_str).collect()
            }
            PolicyRule::new(
                &s(&r.api_groups.unwrap_or_default()),
                &s(&r.resources.unwrap_or_default()),
                &s(&r.verbs),
            )
        })
        .collect()
}

/// Under deploy/rbac's Role (secrets: create and delete only) every check passes and says the
/// runner reads no secret; without its leases a template taking cache slots cannot run (the
/// Secret-lock fallback needs get and list on secrets), and the permissions line says so.
#[tokio::test]
async fn a_role_that_reads_no_secret_passes_and_cache_slots_then_need_leases() {
    let r = Runner::start(SimConfig {
        rbac: Some(deploy_rules(true)),
        ..sim_config()
    })
    .await;
    let template = r.home.path().join("slots.yaml");
    std::fs::write(
        &template,
        "metadata:\n  annotations:\n    example.com/slot: \"${CACHE_SLOT}\"\nspec:\n  containers:\n  - name: $job\n",
    )
    .expect("template written");
    let path = template.to_string_lossy().into_owned();
    let c = check(&r, &[("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", &path)]).await;
    assert_eq!(c.code, Some(0), "{:#?}\n{}", c.lines, c.stderr);
    let permissions = c.line("permissions");
    assert!(
        permissions.starts_with("ok   ")
            && permissions.ends_with("secrets: create and delete only (the runner reads none)"),
        "{permissions}"
    );
    r.sim.shutdown().await;

    let r = Runner::start(SimConfig {
        rbac: Some(deploy_rules(false)),
        ..sim_config()
    })
    .await;
    let c = check(&r, &[("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", &path)]).await;
    assert_eq!(c.code, Some(1), "{:#?}\n{}", c.lines, c.stderr);
    let permissions = c.line("permissions");
    assert!(
        permissions.starts_with("FAIL permissions: the template uses ${CACHE_SLOT}, but the runner's service account may neither use coordination.k8s.io leases nor get and list secrets"),
        "{permissions}"
    );
    r.sim.shutdown().await;

    // ARC's chart's Role lets the runner read the namespace's secrets: check says so.
    let r = Runner::start(SimConfig {
        rbac: Some(arc_hook::sim::arc_chart_default_role()),
        ..sim_config()
    })
    .await;
    let c = check(&r, &[]).await;
    assert!(
        c.line("permissions")
            .contains("note: the Role lets the runner read the secrets of namespace default"),
        "{:#?}",
        c.lines
    );
    r.sim.shutdown().await;
}
