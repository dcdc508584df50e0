//! No-volume mode end to end: the job pod has an emptyDir, and files move only through arc-hook's tar streams.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{Runner, job_args, sim_config};
use serde_json::json;

const POD: &str = "arc-runner-test-workflow";

async fn copy_mode_runner() -> Runner {
    let mut r = Runner::start(sim_config()).await;
    r.env
        .insert("ARC_HOOK_WORK_VOLUME".to_string(), "copy".to_string());
    r
}

/// The runner creates a file-command file before each step and names it in the step's env.
fn file_command(r: &Runner, kind: &str, n: u32) -> (String, std::path::PathBuf) {
    let name = format!("{kind}_{n}");
    let local = r.runner_path(&format!("_temp/_runner_file_commands/{name}"));
    std::fs::write(&local, b"").expect("file command created");
    (format!("/__w/_temp/_runner_file_commands/{name}"), local)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_share_workspace_and_outputs_without_a_shared_volume() {
    let mut r = copy_mode_runner().await;
    let tool = r.runner_path("repo/repo/tool.sh");
    std::fs::write(&tool, "#!/bin/sh\necho tool ran\n").expect("write");
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("tool.sh", r.runner_path("repo/repo/tool-link")).expect("link");
    std::fs::create_dir(r.runner_path("repo/repo/empty-dir")).expect("mkdir");

    let (run, resp) = r.prepare(job_args("ubuntu:24.04", json!([]))).await;
    run.assert_ok();
    let resp = resp.expect("response");
    assert_eq!(resp["state"]["noVolume"], true);
    let pod = r.pods().await.get(POD).await.expect("job pod");
    let volumes = pod.spec.expect("spec").volumes.expect("volumes");
    assert!(volumes[0].empty_dir.is_some() && volumes[0].persistent_volume_claim.is_none());

    // Step 1: modes, links and empty directories arrived; it writes the workspace and an output.
    let (out1, out1_local) = file_command(&r, "set_output", 1);
    let s1 = r
        .script_step(
            "./tool-link\ntest -x tool.sh\ntest -L tool-link\ntest -d empty-dir\ntest -f /__e/node20/bin/node\necho built > artifact.txt\necho result=42 >> \"$GITHUB_OUTPUT\"\n",
            json!({"GITHUB_OUTPUT": out1}),
        )
        .await;
    s1.assert_ok();
    assert!(s1.stdout.contains("tool ran"), "{}", s1.stdout);
    assert_eq!(
        read(&out1_local),
        "result=42\n",
        "the runner sees step 1's output"
    );
    assert!(
        !r.runner_path("repo/repo/artifact.txt").exists(),
        "the workspace is the pod's own: no shared volume"
    );

    // Step 2 reads both, writes its own output and a file with a mode and a link into _temp.
    let (out2, out2_local) = file_command(&r, "set_output", 2);
    let s2 = r
        .script_step(
            "cat artifact.txt\ngrep -x result=42 /__w/_temp/_runner_file_commands/set_output_1\necho seen=yes >> \"$GITHUB_OUTPUT\"\nmkdir -p /__w/_temp/made\nprintf 'x' > /__w/_temp/made/run.sh\nchmod 750 /__w/_temp/made/run.sh\nln -s run.sh /__w/_temp/made/link\nmkdir /__w/_temp/made/empty\n",
            json!({"GITHUB_OUTPUT": out2}),
        )
        .await;
    s2.assert_ok();
    assert!(s2.stdout.contains("built"), "{}", s2.stdout);
    assert_eq!(read(&out2_local), "seen=yes\n");
    let made = r.runner_path("_temp/made");
    let mode = std::fs::metadata(made.join("run.sh"))
        .expect("pulled")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o750);
    assert_eq!(
        std::fs::read_link(made.join("link")).expect("link"),
        Path::new("run.sh")
    );
    assert!(made.join("empty").is_dir());

    r.cleanup().await.assert_ok();
    assert!(r.pods_of(&r.name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_steps_file_commands_come_back() {
    let mut r = copy_mode_runner().await;
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    let (out, out_local) = file_command(&r, "set_output", 1);
    let (summary, summary_local) = file_command(&r, "step_summary", 1);
    let (env, env_local) = file_command(&r, "set_env", 1);
    let s = r
        .script_step(
            "echo failed=yes >> \"$GITHUB_OUTPUT\"\necho '## what broke' >> \"$GITHUB_STEP_SUMMARY\"\necho K=v >> \"$GITHUB_ENV\"\nexit 3\n",
            json!({"GITHUB_OUTPUT": out, "GITHUB_STEP_SUMMARY": summary, "GITHUB_ENV": env}),
        )
        .await;
    assert_eq!(s.code, 3, "the step's own exit code\n{}", s.stderr);
    assert_eq!(read(&out_local), "failed=yes\n");
    assert_eq!(read(&summary_local), "## what broke\n");
    assert_eq!(read(&env_local), "K=v\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_symlink_is_never_written_through() {
    let mut r = copy_mode_runner().await;
    let outside = tempfile::tempdir().expect("outside");
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    // Step 1 plants a link to a directory outside the runner's _temp: the pull refuses it by
    // name, the step fails with that reason, and nothing lands on the runner.
    let s1 = r
        .script_step(
            &format!(
                "ln -s {} /__w/_temp/trap
",
                outside.path().display()
            ),
            json!({}),
        )
        .await;
    assert_ne!(s1.code, 0, "a refused pull fails the step");
    assert!(
        s1.stderr.contains(&format!(
            "refusing archive entry \"trap\": a symbolic link to {}, outside the copied directory",
            outside.path().display()
        )),
        "{}",
        s1.stderr
    );
    let trap = r.runner_path("_temp/trap");
    assert!(
        std::fs::symlink_metadata(&trap).is_err(),
        "no link on the runner"
    );
    // The refused link was removed from the job's pod (it fails only the step that left it).
    // Step 2 makes a directory of that name with a file: it comes back as a directory.
    let s2 = r.step_ok("[ -L /__w/_temp/trap ] || echo link-removed\nmkdir /__w/_temp/trap\necho caught > /__w/_temp/trap/f\n").await;
    assert!(s2.stdout.contains("link-removed"), "{}", s2.stdout);
    assert!(
        !outside.path().join("f").exists(),
        "written through the link"
    );
    assert_eq!(read(&trap.join("f")), "caught\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_changes_are_pushed_between_steps() {
    let mut r = copy_mode_runner().await;
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    // The runner downloads an action between steps; the next step sees it.
    let action = r.runner_path("_actions/org/act/v1");
    std::fs::create_dir_all(&action).expect("mkdir");
    std::fs::write(action.join("action.yml"), "name: act\n").expect("write");
    let s = r
        .script_step("cat /__w/_actions/org/act/v1/action.yml\n", json!({}))
        .await;
    s.assert_ok();
    assert!(s.stdout.contains("name: act"), "{}", s.stdout);
    let manifest = read(&r.runner_path("_temp/_arc_hook/pushed.json"));
    assert!(
        manifest.contains("_actions/org/act/v1/action.yml"),
        "{manifest}"
    );
}

/// A tar stream with raw entry names (the tar crate's builder refuses `..`).
fn crafted_archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_entry_climbing_out_of_temp_is_refused() {
    let mut r = copy_mode_runner().await;
    // The job container's PATH finds a `tar` that answers the pull with a crafted archive.
    let bin = r.runner_path("_temp/evilbin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::write(
        bin.join("tar"),
        "#!/bin/sh\nif [ \"$1\" = -c ]; then exec cat /__w/_temp/evil.tar; fi\nexec /usr/bin/tar \"$@\"\n",
    )
    .expect("write");
    std::fs::set_permissions(bin.join("tar"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::write(
        r.runner_path("_temp/evil.tar"),
        crafted_archive(&[("ok.txt", b"fine"), ("../escape.txt", b"escaped")]),
    )
    .expect("write");
    let mut args = job_args("ubuntu:24.04", json!([]));
    args["container"]["environmentVariables"]["PATH"] =
        json!("/__w/_temp/evilbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    r.prepare(args).await.0.assert_ok();

    let s = r.script_step("true\n", json!({})).await;
    assert_eq!(
        s.code, 1,
        "a passing step whose files cannot come back fails\n{}",
        s.stderr
    );
    assert!(
        s.stderr.contains(
            "the step exited with code 0, but copying _temp (its file commands) back from the job pod failed: refusing archive entry \"../escape.txt\": it climbs out of the target with `..`"
        ),
        "{}",
        s.stderr
    );
    assert!(
        !r.runner_path("escape.txt").exists(),
        "nothing lands outside _temp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_a_silent_step_outlives_an_idle_timeout() {
    let mut r = copy_mode_runner().await;
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    common::silent_step_outlives_idle_timeout(&r).await;
    r.cleanup().await.assert_ok();
    r.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_a_step_survives_cut_streams_and_an_api_restart() {
    let mut r = copy_mode_runner().await;
    r.prepare(job_args("ubuntu:24.04", json!([])))
        .await
        .0
        .assert_ok();
    common::chatty_step_survives_cuts_and_an_api_restart(&r).await;
    r.cleanup().await.assert_ok();
    r.sim.shutdown().await;
}

/// An API server before 1.30 (or with the stream-translation gate off) speaks exec v4. Script
/// steps send no stdin and work there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_mode_steps_work_over_exec_v4() {
    let mut cfg = sim_config();
    cfg.exec_v4_only = true;
    let r = Runner::prepared(cfg, job_args("ubuntu:24.04", json!([]))).await;
    let (out, out_local) = file_command(&r, "set_output", 1);
    let step = r
        .script_step(
            "echo on-v4\necho v4=ok >> \"$GITHUB_OUTPUT\"\nexit 3\n",
            json!({"GITHUB_OUTPUT": out}),
        )
        .await;
    assert_eq!(
        step.code, 3,
        "the exit code arrives over v4: {}",
        step.stderr
    );
    assert!(step.stdout.contains("on-v4"), "{}", step.stdout);
    assert_eq!(read(&out_local), "v4=ok\n");
    r.cleanup().await.assert_ok();
}

/// Copy mode over exec v4 (a server before 1.30): kube-rs, on a v4 connection, closes the whole
/// WebSocket when stdin ends (v4 has no stdin close signal), so a copy's result would be lost.
/// prepare_job refuses such a server at once, saying what to use instead, and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_refuses_an_api_server_before_1_30() {
    let mut cfg = sim_config();
    cfg.exec_v4_only = true;
    let mut r = Runner::start(cfg).await;
    r.env
        .insert("ARC_HOOK_WORK_VOLUME".to_string(), "copy".to_string());
    let (run, _) = r.prepare(job_args("ubuntu:24.04", json!([]))).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("no-volume mode (ARC_HOOK_WORK_VOLUME=copy) needs Kubernetes 1.30 or later")
            && run
                .stderr
                .contains("this API server is v1.29.14: use ARC_HOOK_WORK_VOLUME=claim"),
        "{}",
        run.stderr
    );
    assert!(r.pods_of(&r.name).await.is_empty(), "nothing created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_runner_pod_is_read_and_the_job_pod_is_not_pinned() {
    // Nothing ties a no-volume job to the runner's node: the runner pod may be anywhere (or, to
    // the hook, nowhere), and the scheduler places the workflow pod.
    let mut r = copy_mode_runner().await;
    r.pods()
        .await
        .delete(
            common::RUNNER,
            &kube::api::DeleteParams::default().grace_period(0),
        )
        .await
        .expect("runner pod deleted");
    let (run, resp) = r.prepare(job_args("ubuntu:24.04", json!([]))).await;
    run.assert_ok();
    assert_eq!(resp.expect("response")["state"]["noVolume"], true);
    let spec = r
        .pods()
        .await
        .get(POD)
        .await
        .expect("job pod")
        .spec
        .expect("spec");
    assert!(
        spec.affinity.is_none() && spec.node_selector.is_none(),
        "not pinned to a node: {:?} {:?}",
        spec.affinity,
        spec.node_selector
    );
    let s = r.step_ok("echo scheduled anywhere\n").await;
    assert!(s.stdout.contains("scheduled anywhere"), "{}", s.stdout);
    r.cleanup().await.assert_ok();
    r.sim.shutdown().await;
}
