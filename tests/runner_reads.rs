//! Issue 25: what the runner reads after a step (its file commands) is out of the job's reach: a process a step leaves running swaps links and renames directories through every path it has, and the runner still reads only what the hook wrote, in claim mode, for script and container steps.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{Runner, job_args, sim_config};
use serde_json::{Value, json};

/// The runner's mount-namespace isolation is what makes the guarding mounts real: without it
/// (not root) the simulator runs containers on the host paths and the test proves nothing.
fn isolation_or_skip() -> bool {
    common::require_root("mount namespaces, which make the guarding mounts real")
}

fn secret(r: &Runner) -> PathBuf {
    let secret = r.home.path().join(".credentials");
    std::fs::write(&secret, b"runner-token-123").expect("secret");
    secret
}

/// The runner's side after a step: its `_temp` and file-command directory are real, every entry
/// there is a regular file the runner made (never one the job added; one a container step
/// replaced with a link is removed), none holds the secret.
fn assert_runner_side_clean(r: &Runner, made: &[String]) {
    let temp = r.runner_path("_temp");
    assert!(
        temp.symlink_metadata().expect("_temp").is_dir(),
        "_temp is a directory"
    );
    let fc = temp.join("_runner_file_commands");
    assert!(
        fc.symlink_metadata().expect("fc").is_dir(),
        "the file-command directory is real"
    );
    let mut names: Vec<String> = std::fs::read_dir(&fc)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
        .collect();
    names.sort();
    assert!(
        names.iter().all(|n| made.contains(n)),
        "only the runner's own files: {names:?} (the runner made {made:?})"
    );
    for n in &names {
        let p = fc.join(n);
        let meta = p.symlink_metadata().expect("stat");
        assert!(meta.is_file(), "{n} is a regular file");
        let data = std::fs::read(&p).expect("read");
        assert!(
            !String::from_utf8_lossy(&data).contains("runner-token-123"),
            "{n} never holds what a link pointed at"
        );
    }
}

/// A leftover process that, as fast as it can, swaps links to the runner's secret over every
/// file-command file it can name and tries to rename `_temp` and the file-command directory away,
/// through `/__w` and through a second mount of the whole volume (`/wx`, a user volume).
fn attacker(secret: &Path) -> String {
    format!(
        r#"( set +e; while [ ! -e /wx/stop-attack ]; do
  for d in /__w/_temp/_runner_file_commands /wx/_temp/_runner_file_commands; do
    for f in "$d"/set_*; do
      [ -e "$f" ] || [ -L "$f" ] || continue
      ln -sfn {secret} "$f.x" 2>/dev/null && mv -f "$f.x" "$f" 2>/dev/null
    done
    ln -sfn {secret} "$d/planted" 2>/dev/null
  done
  mv /__w/_temp /__w/_temp_gone 2>/dev/null && echo renamed /__w/_temp >> /wx/attack.log
  mv /wx/_temp /wx/_temp_gone 2>/dev/null && echo renamed /wx/_temp >> /wx/attack.log
  mv /__w/_temp/_runner_file_commands /__w/_temp/fc_gone 2>/dev/null && echo renamed fc >> /wx/attack.log
  mv /wx/_temp/_runner_file_commands /wx/fc_gone 2>/dev/null && echo renamed /wx fc >> /wx/attack.log
  rm -rf /wx/_temp/_runner_file_commands 2>/dev/null || true
  echo x >> /wx/attack.rounds
done ) >/dev/null 2>&1 &
touch /wx/attack-started
"#,
        secret = secret.display()
    )
}

fn whole_volume_mount(r: &Runner) -> Value {
    let mut args = job_args("ubuntu:24.04", json!([]));
    args["container"]["userMountVolumes"] = json!([{
        "sourceVolumePath": r.work.to_string_lossy(),
        "targetVolumePath": "/wx",
        "readOnly": false
    }]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_process_never_changes_what_the_runner_reads() {
    if !isolation_or_skip() {
        return;
    }
    let mut r = Runner::start(sim_config()).await;
    let args = whole_volume_mount(&r);
    r.prepare(args).await.0.assert_ok();
    let secret = secret(&r);
    r.script_step(&attacker(&secret), json!({}))
        .await
        .assert_ok();
    assert!(
        r.wait_for_pod_file("attack-started").await || r.runner_path("attack-started").exists()
    );
    let mut delivered = 0;
    let mut refused = 0;
    let mut broken = 0;
    for n in 0..12 {
        // As the runner does before each step: fresh, empty file-command files.
        let made: Vec<String> = ["set_output", "set_env", "step_summary"]
            .iter()
            .map(|k| format!("{k}_{n}"))
            .collect();
        let fc = r.runner_path("_temp/_runner_file_commands");
        for e in std::fs::read_dir(&fc).expect("ls") {
            std::fs::remove_file(e.expect("entry").path()).expect("runner removes old files");
        }
        for m in &made {
            std::fs::write(fc.join(m), b"").expect("runner file");
        }
        let run = r
            .script_step(
                &format!("echo n={n} >> \"$GITHUB_OUTPUT\"\necho '# step {n}' >> \"$GITHUB_STEP_SUMMARY\"\n"),
                json!({
                    "GITHUB_OUTPUT": format!("/__w/_temp/_runner_file_commands/set_output_{n}"),
                    "GITHUB_STEP_SUMMARY": format!("/__w/_temp/_runner_file_commands/step_summary_{n}"),
                    "GITHUB_ENV": format!("/__w/_temp/_runner_file_commands/set_env_{n}"),
                }),
            )
            .await;
        assert_runner_side_clean(&r, &made);
        let output = std::fs::read_to_string(fc.join(format!("set_output_{n}"))).expect("output");
        // The runner reads the step's own line, or nothing (the swapper's `rm -rf` removed the
        // job's file: the job may drop its own outputs), never anything else.
        assert!(
            output.is_empty() || output == format!("n={n}\n"),
            "{output:?}"
        );
        if run
            .stderr
            .contains("is a symbolic link, not a regular file; not delivered")
        {
            // The swapper replaced the step's file with a link: refused by name, nothing read.
            assert_ne!(run.code, 0);
            refused += 1;
        } else if run.code != 0 {
            // The swapper broke the step's own write (its link leads nowhere in the container).
            assert!(
                run.stdout.contains("the step's own command exited"),
                "{}",
                run.stdout
            );
            broken += 1;
        } else if !output.is_empty() {
            delivered += 1;
        }
    }
    std::fs::write(r.runner_path("stop-attack"), b"").expect("stop");
    let log = std::fs::read_to_string(r.runner_path("attack.log")).unwrap_or_default();
    assert_eq!(
        log, "",
        "the kernel refused every rename of a guarded directory"
    );
    assert_eq!(std::fs::read(&secret).expect("secret"), b"runner-token-123");
    let rounds = std::fs::read_to_string(r.runner_path("attack.rounds"))
        .unwrap_or_default()
        .lines()
        .count();
    eprintln!(
        "12 steps under attack ({rounds} rounds of swaps): {delivered} delivered, {refused} refused, {broken} broken by the swapper"
    );
    assert!(rounds > 12, "the attacker ran throughout ({rounds} rounds)");
    r.cleanup().await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_cannot_see_the_runners_file_command_directory() {
    if !isolation_or_skip() {
        return;
    }
    let mut r = Runner::start(sim_config()).await;
    let args = whole_volume_mount(&r);
    r.prepare(args).await.0.assert_ok();
    let fc = r.runner_path("_temp/_runner_file_commands");
    std::fs::write(fc.join("set_output_a"), b"").expect("runner file");
    // What the step plants beside the runner's files never shows up on the runner's side, and
    // what it writes reaches the runner only through the hook.
    let run = r
        .script_step(
            "for d in /__w/_temp/_runner_file_commands /wx/_temp/_runner_file_commands; do echo mine > \"$d/planted\"; done\necho a=1 >> \"$GITHUB_OUTPUT\"\n",
            json!({"GITHUB_OUTPUT": "/__w/_temp/_runner_file_commands/set_output_a"}),
        )
        .await;
    run.assert_ok();
    assert_runner_side_clean(&r, &["set_output_a".to_string()]);
    assert_eq!(
        std::fs::read_to_string(fc.join("set_output_a")).expect("read"),
        "a=1\n"
    );
    r.cleanup().await.assert_ok();
}

fn container_step(r: &Runner, image: &str, env: Value) -> Value {
    json!({
        "command": "run_container_step",
        "responseFile": null,
        "state": r.state.clone().unwrap_or(Value::Null),
        "args": {
            "image": image, "dockerfile": null,
            "entryPoint": null, "entryPointArgs": [],
            "workingDirectory": "/github/workspace", "createOptions": null,
            "environmentVariables": env,
            "userMountVolumes": [], "systemMountVolumes": [],
            "registry": null, "portMappings": []
        }
    })
}

/// Where a hostile container step runs: the hook's env, the Role, and the refusal expected.
struct Placement {
    env: &'static [(&'static str, &'static str)],
    rbac: Option<Vec<arc_hook::sim::PolicyRule>>,
    /// What the step's failure says, every part.
    refusal: &'static [&'static str],
}

const CLAIM_REFUSAL: &[&str] = &["set_output_c is a symbolic link, not a regular file"];

async fn container_step_plants_links(place: Placement) {
    let mut cfg = sim_config();
    cfg.rbac = place.rbac;
    let home = tempfile::tempdir().expect("secret's home");
    let secret = home.path().join(".credentials");
    std::fs::write(&secret, b"runner-token-123").expect("secret");
    // The action's entrypoint: a link as its output, another straight into the runner's real
    // directory (reachable from an ephemeral container, whose mounts cannot be guarded).
    let entry = format!(
        "ln -sfn {s} \"$GITHUB_OUTPUT\"; for d in /__w/_temp/_runner_file_commands /github/runner_temp/_runner_file_commands; do [ -d \"$d\" ] && ln -sfn {s} \"$d/set_env_c\"; done; exit 0",
        s = secret.display()
    );
    cfg.image_commands = HashMap::from([(
        "hostile-action:1".to_string(),
        vec!["sh".to_string(), "-c".to_string(), entry],
    )]);
    let mut r = Runner::start(cfg).await;
    for (k, v) in place.env {
        r.env.insert(k.to_string(), v.to_string());
    }
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let fc = r.runner_path("_temp/_runner_file_commands");
    for m in ["set_output_c", "set_env_c"] {
        std::fs::write(fc.join(m), b"").expect("runner file");
    }
    let run = r
        .hook(&container_step(
            &r,
            "hostile-action:1",
            json!({
                "GITHUB_OUTPUT": "/github/file_commands/set_output_c",
                "GITHUB_ENV": "/github/file_commands/set_env_c",
            }),
        ))
        .await;
    assert_runner_side_clean(&r, &["set_env_c".to_string(), "set_output_c".to_string()]);
    assert_eq!(std::fs::read(&secret).expect("secret"), b"runner-token-123");
    // The step's own link is refused by name and fails the step.
    assert_ne!(run.code, 0, "{}", run.stderr);
    for needle in place.refusal {
        assert!(run.stderr.contains(needle), "{needle:?} in\n{}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_step_in_the_job_pod_cannot_make_the_runner_read_a_link() {
    if !isolation_or_skip() {
        return;
    }
    container_step_plants_links(Placement {
        env: &[],
        rbac: None,
        refusal: CLAIM_REFUSAL,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_step_job_cannot_make_the_runner_read_a_link() {
    if !isolation_or_skip() {
        return;
    }
    container_step_plants_links(Placement {
        env: &[("ARC_HOOK_CONTAINER_STEPS", "job")],
        rbac: None,
        refusal: CLAIM_REFUSAL,
    })
    .await;
}

/// Issue 32: claim mode where the Role grants neither ephemeral containers nor Jobs: the step's
/// own pod has the same guarding mounts as a step Job's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_step_pod_cannot_make_the_runner_read_a_link() {
    if !isolation_or_skip() {
        return;
    }
    container_step_plants_links(Placement {
        env: &[],
        rbac: Some(arc_hook::sim::arc_chart_novolume_role()),
        refusal: CLAIM_REFUSAL,
    })
    .await;
}

/// Issue 32: no-volume mode under ARC's novolume Role: the links come back to the job pod with
/// the step's changes, and the pull to the runner refuses them as after any other step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_volume_container_step_pod_cannot_make_the_runner_read_a_link() {
    if !isolation_or_skip() {
        return;
    }
    container_step_plants_links(Placement {
        env: &[("ARC_HOOK_WORK_VOLUME", "copy")],
        rbac: Some(arc_hook::sim::arc_chart_novolume_role()),
        // Either link may be met first: both are the runner's file commands.
        refusal: &[
            "refusing archive entry \"_runner_file_commands/set_",
            "_c\": it would replace a file on the runner with a symbolic link",
        ],
    })
    .await;
}

/// Issue 25.5 (claim mode): a job container running as another user than the runner writes
/// `_temp`, its HOME, the workspace, `_tool` and its file commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_job_writes_temp_home_workspace_and_file_commands() {
    if !isolation_or_skip() {
        return;
    }
    let mut r = Runner::start(sim_config()).await;
    let template = r.home.path().join("non-root.yaml");
    std::fs::write(
        &template,
        "spec:\n  containers:\n    - name: $job\n      securityContext:\n        runAsUser: 1234\n        runAsGroup: 1234\n",
    )
    .expect("template");
    r.env.insert(
        "ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE".to_string(),
        template.to_string_lossy().to_string(),
    );
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let fc = r.runner_path("_temp/_runner_file_commands");
    std::fs::write(fc.join("set_output_u"), b"").expect("runner file");
    let run = r
        .script_step(
            "echo uid=$(id -u)\ntouch /__w/_temp/t /github/home/h /__w/repo/repo/w /__w/repo/sibling /__w/_tool/cache\necho u=1 >> \"$GITHUB_OUTPUT\"\n",
            json!({"GITHUB_OUTPUT": "/__w/_temp/_runner_file_commands/set_output_u"}),
        )
        .await;
    run.assert_ok();
    assert!(run.stdout.contains("uid=1234"), "{}", run.stdout);
    for p in [
        "_temp/t",
        "_temp/_github_home/h",
        "repo/repo/w",
        "repo/sibling",
        "_tool/cache",
    ] {
        assert!(r.runner_path(p).exists(), "{p} written by the job's user");
    }
    assert_eq!(
        std::fs::read_to_string(fc.join("set_output_u")).expect("read"),
        "u=1\n"
    );
    r.cleanup().await.assert_ok();
}
