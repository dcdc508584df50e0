//! Golden files for `arc-hook render`: every template × fixture renders exactly the reviewed YAML,
//! and every rendered object is a valid Kubernetes object. `UPDATE_GOLDEN=1 cargo test --test
//! render_golden` rewrites the files after an intended change (review the diff).

#[path = "common/prerequisite.rs"]
mod prerequisite;

use std::path::PathBuf;
use std::process::Command;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use serde::Deserialize;

/// Whether `UPDATE_GOLDEN` asks to rewrite the files instead of comparing: never under CI=true,
/// where it would let every golden test pass without comparing anything.
fn updating_golden() -> bool {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    assert!(
        !(update && prerequisite::in_ci()),
        "UPDATE_GOLDEN under CI=true would compare nothing: unset it"
    );
    update
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn render(fixture: &str, template: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
    cmd.current_dir(root())
        .arg("render")
        .arg(format!("fixtures/{fixture}.json"))
        .env_remove("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE")
        .env_remove("GITHUB_EVENT_NAME")
        .env_remove("GITHUB_REF_PROTECTED")
        .env("ACTIONS_RUNNER_POD_NAME", "arc-runner-7x2kq-runner-h4v9c")
        .env("GITHUB_WORKSPACE", "/home/runner/_work/arc-demo/arc-demo");
    if let Some(t) = template {
        cmd.arg("--template").arg(format!("templates/{t}.yaml"));
    }
    cmd.output().expect("arc-hook runs")
}

fn check_names(pod_name: &str, labels: Option<&std::collections::BTreeMap<String, String>>) {
    assert!(
        arc_hook::validate::dns1123_subdomain(pod_name).is_empty(),
        "{pod_name}"
    );
    for (k, v) in labels.into_iter().flatten() {
        assert!(arc_hook::validate::label_key(k).is_empty(), "label key {k}");
        assert!(
            arc_hook::validate::label_value(v).is_empty(),
            "label value {v}"
        );
    }
}

fn check_pod_spec(spec: &k8s_openapi::api::core::v1::PodSpec) {
    let mut seen = std::collections::HashSet::new();
    for c in &spec.containers {
        assert!(
            arc_hook::validate::dns1123_label(&c.name).is_empty(),
            "container {}",
            c.name
        );
        assert!(
            seen.insert(c.name.clone()),
            "duplicate container {}",
            c.name
        );
        assert!(
            c.image.as_deref().is_some_and(|i| !i.is_empty()),
            "container {} has an image",
            c.name
        );
        let volumes: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(&m.name.as_str()),
                "mount {} refers to a volume",
                m.name
            );
        }
        for e in c.env.iter().flatten() {
            assert!(
                arc_hook::validate::env_var_name(&e.name).is_empty(),
                "env {}",
                e.name
            );
        }
    }
}

/// Parses every document back into k8s-openapi types and checks Kubernetes' naming rules.
fn check_objects(yaml: &str) {
    for doc in serde_yaml_ng::Deserializer::from_str(yaml) {
        let v = serde_json::Value::deserialize(doc).expect("valid YAML");
        if v.is_null() {
            continue;
        }
        match v["kind"].as_str().expect("kind") {
            "Pod" => {
                let pod: Pod = serde_json::from_value(v.clone()).expect("a Pod");
                assert_eq!(
                    serde_json::to_value(&pod).expect("serialises"),
                    v,
                    "round trip"
                );
                check_names(
                    pod.metadata.name.as_deref().expect("name"),
                    pod.metadata.labels.as_ref(),
                );
                check_pod_spec(pod.spec.as_ref().expect("spec"));
            }
            "Secret" => {
                let s: Secret = serde_json::from_value(v.clone()).expect("a Secret");
                check_names(
                    s.metadata.name.as_deref().expect("name"),
                    s.metadata.labels.as_ref(),
                );
            }
            "Job" => {
                let j: Job = serde_json::from_value(v.clone()).expect("a Job");
                assert_eq!(
                    serde_json::to_value(&j).expect("serialises"),
                    v,
                    "round trip"
                );
                check_names(
                    j.metadata.name.as_deref().expect("name"),
                    j.metadata.labels.as_ref(),
                );
                check_pod_spec(
                    j.spec
                        .as_ref()
                        .expect("spec")
                        .template
                        .spec
                        .as_ref()
                        .expect("pod spec"),
                );
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

fn golden(fixture: &str, template: Option<&str>) {
    let out = render(fixture, template);
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("utf-8");
    check_objects(&yaml);
    let file = root()
        .join("tests/golden")
        .join(format!("{fixture}__{}.yaml", template.unwrap_or("none")));
    if updating_golden() {
        std::fs::write(&file, &yaml).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&file)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", file.display()));
    pretty_assertions::assert_eq!(want, yaml, "{} differs", file.display());
}

#[test]
fn prepare_job_without_template() {
    golden("prepare_job", None);
}

#[test]
fn prepare_job_cpu() {
    golden("prepare_job", Some("cpu"));
}

#[test]
fn prepare_job_gpu() {
    golden("prepare_job", Some("gpu"));
}

#[test]
fn prepare_job_fpga() {
    golden("prepare_job", Some("fpga"));
}

#[test]
fn services_only_job_cpu() {
    golden("prepare_job_no_container", Some("cpu"));
}

/// Health options: a readiness probe on the services with `--health-cmd`, none with
/// `--no-healthcheck` (the second `redis:7`, named `redis-1`).
#[test]
fn services_with_health_checks() {
    golden("prepare_job_health", None);
}

#[test]
fn alpine_job() {
    golden("prepare_job_alpine", None);
}

#[test]
fn container_step_without_template() {
    golden("run_container_step", None);
}

#[test]
fn container_step_gpu() {
    golden("run_container_step", Some("gpu"));
}

#[test]
fn script_step_and_cleanup_create_nothing() {
    for f in ["run_script_step", "cleanup_job"] {
        let out = render(f, Some("cpu"));
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("# {f} creates no objects\n")
        );
    }
}

#[test]
fn secrets_are_redacted_unless_asked() {
    let out = render("prepare_job", None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("not-a-real-password"));
    let shown = Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .current_dir(root())
        .args(["render", "fixtures/prepare_job.json", "--show-secrets"])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&shown.stdout);
    let data = text
        .lines()
        .find(|l| l.contains(".dockerconfigjson:"))
        .expect("data line");
    let b64 = data.split(": ").nth(1).expect("value").trim();
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let v: serde_json::Value = serde_json::from_slice(&decoded).expect("json");
    assert_eq!(
        v["auths"]["registry.example.internal"]["username"],
        "ci-bot"
    );
}

#[test]
fn dockerfile_steps_cannot_be_rendered() {
    let out = render("run_container_step_dockerfile", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only image steps can be rendered"));
}

#[test]
fn bad_template_is_one_line_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = dir.path().join("t.yaml");
    std::fs::write(&t, "spec:\n  containers:\n    - name: $nosuch\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .current_dir(root())
        .args(["render", "fixtures/prepare_job.json", "--template"])
        .arg(&t)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("spec.containers[0].name: \"$nosuch\" matches no container of this job (known: $job, $redis, $postgres)"), "{err}");
}

#[test]
fn malformed_fixture_names_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("bad.json");
    std::fs::write(
        &f,
        r#"{"command":"prepare_job","args":{"container":{"workingDirectory":"/__w"}}}"#,
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .arg("render")
        .arg(&f)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: invalid hook input: args.container.image: missing"
    );
}

fn golden_with_env(fixture: &str, template: Option<&str>, env: &[(&str, &str)], name: &str) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
    cmd.current_dir(root())
        .arg("render")
        .arg(format!("fixtures/{fixture}.json"))
        .env_remove("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE")
        .env("ACTIONS_RUNNER_POD_NAME", "arc-runner-7x2kq-runner-h4v9c");
    if let Some(t) = template {
        cmd.arg("--template").arg(format!("templates/{t}.yaml"));
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("arc-hook runs");
    assert!(
        out.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).expect("utf-8");
    check_objects(&yaml);
    let file = root().join("tests/golden").join(format!("{name}.yaml"));
    if updating_golden() {
        std::fs::write(&file, &yaml).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&file)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1", file.display()));
    pretty_assertions::assert_eq!(want, yaml, "{} differs", file.display());
}

/// Job options: resources, the /dev/shm volume, the security context, env, working directory,
/// host name and aliases; ulimit and network are warnings.
#[test]
fn job_options_without_template() {
    golden("prepare_job_options", None);
}

/// The template's values stay where no option speaks; options win for the fields they set
/// (limits replaced, a request above the new limit lowered to it).
#[test]
fn job_options_over_the_gpu_template() {
    golden("prepare_job_options", Some("gpu"));
}

#[test]
fn privileged_options_are_refused_by_default() {
    let out = render("prepare_job_privileged", None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "error: job container options: --privileged and --cap-add are not allowed on this runner; the platform team can allow them by adding privileged,cap-add to ARC_HOOK_JOB_OPTIONS (e.g. ARC_HOOK_JOB_OPTIONS=default,privileged,cap-add)"
    );
}

#[test]
fn privileged_options_when_the_platform_allows_them() {
    golden_with_env(
        "prepare_job_privileged",
        None,
        &[("ARC_HOOK_JOB_OPTIONS", "default,privileged,cap-add")],
        "prepare_job_privileged__allowed",
    );
}

#[test]
fn job_options_above_a_maximum_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .current_dir(root())
        .args(["render", "fixtures/prepare_job_options.json"])
        .env("ARC_HOOK_JOB_OPTIONS_MAX", "cpus=2,gpus=1")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: job container options: --cpus 4: above this runner's maximum of 2 (ARC_HOOK_JOB_OPTIONS_MAX)"
    );
}
