//! `arc-hook replay` on the shipped jobs: the README's main command, end to end on the simulator.

use std::process::Command;

fn replay(job: &str) -> (i32, String, String) {
    replay_with(job, &[])
}

/// Replays `job` with `env` on top; no cluster is configured, so replay must pick the simulator.
fn replay_with(job: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    replay_at(job, None, env)
}

/// [`replay_with`], the runner's home laid out at `workdir` (and kept) when given.
fn replay_at(
    job: &str,
    workdir: Option<&std::path::Path>,
    env: &[(&str, &str)],
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_arc-hook"));
    cmd.arg("replay");
    if let Some(dir) = workdir {
        cmd.arg("--workdir").arg(dir);
    }
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg(format!("fixtures/jobs/{job}"))
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("HOME", env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .output()
        .expect("arc-hook runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn build_and_test_passes_and_reaches_its_service() {
    let (code, out, err) = replay("build-and-test");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("using the embedded simulator"), "{out}");
    assert!(
        out.contains("Ran 2 tests") && out.contains("OK"),
        "{out}{err}"
    );
    assert!(out.contains("service web answered"), "{out}");
    assert!(
        out.contains("05-cleanup_job.json") && out.contains("cleanup_job exited 0"),
        "{out}"
    );
}

#[test]
fn a_failing_step_is_the_replays_exit_code_and_cleanup_still_runs() {
    let (code, out, err) = replay("failing-step");
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    // The step's stderr arrives on the hook's stdout, in order with its stdout.
    assert!(out.contains("check failed: 2 of 7 cases"), "{out}");
    assert!(
        out.contains("03-never-runs.json: run_script_step skipped"),
        "{out}"
    );
    assert!(!out.contains("this step must not run"), "{out}");
    assert!(out.contains("cleanup_job exited 0"), "{out}");
}

#[test]
fn file_commands_flow_between_steps() {
    let (code, out, err) = replay("file-commands");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("GITHUB_OUTPUT: version=1.2.3"), "{out}");
    assert!(
        out.contains("GITHUB_ENV: NOTES=line one\\nline two"),
        "{out}"
    );
    assert!(
        out.contains("hello from tool"),
        "GITHUB_PATH reached the next step: {out}"
    );
    assert!(out.contains("consumed BUILD_ID=42"), "{out}");
}

/// The shipped jobs again, in no-volume mode: the pod's work volume is an emptyDir and every
/// file goes through arc-hook's tar streams.
fn replay_no_volume(job: &str) -> (i32, String, String) {
    replay_with(job, &[("ARC_HOOK_WORK_VOLUME", "copy")])
}

#[test]
fn the_shipped_jobs_pass_in_no_volume_mode() {
    let (code, out, err) = replay_no_volume("file-commands");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("GITHUB_OUTPUT: version=1.2.3"), "{out}");
    assert!(out.contains("hello from tool"), "{out}");
    assert!(out.contains("consumed BUILD_ID=42"), "{out}");

    let (code, out, err) = replay_no_volume("failing-step");
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");

    let (code, out, err) = replay_no_volume("build-and-test");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("Ran 2 tests") && out.contains("OK"),
        "{out}{err}"
    );
    assert!(out.contains("service web answered"), "{out}");
}

/// The runner's own encodings (actions/runner: `ContainerActionHandler.cs`, `HookInput.cs`,
/// `ScriptHandlerHelpers.cs`) decode to exactly the arguments Docker mode gives each process.
fn assert_runner_encodings(out: &str, err: &str) {
    assert!(
        out.contains(r#"action argv: ["a b", "say \"hi\"", ""]"#),
        "a Docker action's runs.args, with a space, quotes and an empty value:\n{out}\n{err}"
    );
    assert!(
        out.contains("docker argv: ['--flag', 'x y']"),
        "a docker:// step's raw with.args:\n{out}"
    );
    assert!(
        out.contains("runner_temp marker: visible from /github/runner_temp"),
        "RUNNER_TEMP is mounted at /github/runner_temp:\n{out}"
    );
    assert!(
        out.contains(
            r#"env: {"EMPTY_KEPT": "", "DOLLARS": "$(CI) $$ $HOME", "HOME": "/github/home"}"#
        ),
        "container-step env is byte-exact, keeps KEY= and HOME, as docker run does:\n{out}"
    );
    assert!(
        out.contains("pwsh arg: [-command]\npwsh arg: [. '/__w/_temp/4d3e6f70-0000-4000-8000-000000000004.ps1']\npwsh script ran"),
        "shell: pwsh gets -command and one dot-source argument, and its script runs:\n{out}"
    );
    assert!(out.contains("python shell ran with []"), "{out}");
}

#[test]
fn runner_encodings_decode_as_in_docker_mode() {
    let (code, out, err) = replay("runner-encodings");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_runner_encodings(&out, &err);
}

#[test]
fn runner_encodings_decode_as_in_docker_mode_without_a_volume() {
    let (code, out, err) = replay_with("runner-encodings", &[("ARC_HOOK_WORK_VOLUME", "copy")]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_runner_encodings(&out, &err);
}

#[test]
fn a_job_replays_under_api_faults() {
    // fixtures/jobs/under-faults: build-and-test with sim.json faults (429s, latency, cut exec
    // streams, short watches): every command still succeeds, each step's output once.
    let (code, out, err) = replay("under-faults");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("service web answered"), "{out}");
    assert_eq!(out.matches("Ran 2 tests").count(), 1, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("the simulator injected"))
        .unwrap_or_else(|| panic!("no fault summary in:\n{out}"));
    assert!(
        !line.contains(" 0 API errors") && !line.contains(" 0 exec"),
        "{line}"
    );
}

/// A kubeconfig present (in KUBECONFIG and in ~/.kube/config, as on a developer's machine) must not
/// change where `replay` plays without `--cluster`: the job passes on the simulator and the configured
/// server is never contacted.
#[test]
fn replay_without_cluster_never_contacts_the_configured_cluster() {
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let contacts = Arc::new(AtomicUsize::new(0));
    let seen = contacts.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf);
        }
    });
    let home = tempfile::tempdir().expect("home");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: must-not-be-used\nclusters:\n- name: prod\n  cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}\nusers:\n- name: admin\n  user: {{token: not-a-real-token}}\ncontexts:\n- name: must-not-be-used\n  context: {{cluster: prod, user: admin, namespace: production}}\n"
    );
    std::fs::create_dir_all(home.path().join(".kube")).expect("mkdir");
    let path = home.path().join(".kube/config");
    std::fs::write(&path, kubeconfig).expect("write kubeconfig");
    let path = path.to_string_lossy().to_string();
    let home_dir = home.path().to_string_lossy().to_string();

    let (code, out, err) = replay_with(
        "file-commands",
        &[("KUBECONFIG", &path), ("HOME", &home_dir)],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("using the embedded simulator"), "{out}");
    assert!(
        !out.contains("must-not-be-used") && !err.contains("must-not-be-used"),
        "{out}{err}"
    );
    assert_eq!(
        contacts.load(Ordering::SeqCst),
        0,
        "replay without --cluster connected to the kubeconfig's server"
    );
}

/// A job whose container runs as another user than root (a hardened image, or `--user`) runs the
/// whole build-and-test job in both volume modes. No-volume mode: the directories the kubelet
/// would make as root (the sub-path mount points, the working directory) are made first as the
/// job's user, so the copy into the pod can set their times and modes. Claim mode: prepare_job
/// opens `_temp`, HOME, the workspace and `_tool` to the job's user, and replay gives the seeded
/// workspace to that user, as the checkout step that made it in the job container would have.
#[test]
fn a_non_root_job_runs_build_and_test_in_both_volume_modes() {
    let dir = tempfile::tempdir().expect("dir");
    let template = dir.path().join("non-root.yaml");
    std::fs::write(
        &template,
        "spec:\n  containers:\n    - name: $job\n      securityContext:\n        runAsUser: 1234\n        runAsGroup: 1234\n",
    )
    .expect("template");
    let template = template.to_string_lossy().to_string();
    for mode in ["claim", "copy"] {
        let (code, out, err) = replay_with(
            "build-and-test",
            &[
                ("ARC_HOOK_WORK_VOLUME", mode),
                ("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE", &template),
            ],
        );
        assert_eq!(code, 0, "{mode}: stdout:\n{out}\nstderr:\n{err}");
        assert!(
            out.contains("Ran 2 tests") && out.contains("OK"),
            "{mode}: {out}{err}"
        );
        assert!(out.contains("service web answered"), "{mode}: {out}");
        assert!(
            out.contains("the workspace goes to the job's user 1234:1234"),
            "{mode}: {out}"
        );
        assert!(
            !out.contains("Cannot utime") && !err.contains("Cannot utime"),
            "{mode}: {out}{err}"
        );
        assert!(
            !out.contains("Permission denied") && !err.contains("Permission denied"),
            "{mode}: {out}{err}"
        );
    }
}

/// The hostile fixture job (links from the step's file commands and chained links in `_temp` to
/// `/etc/shadow`) in both modes: every link is refused by name, no byte of the file reaches the
/// job log or a file the runner reads, and an ordinary step after them delivers its outputs: in
/// no-volume mode the refused entries are removed from the job's pod, so they fail only the steps
/// that left them.
#[test]
fn hostile_links_never_make_the_runner_read_outside_what_it_should() {
    let shadow = std::fs::read_to_string("/etc/shadow").expect("the test reads /etc/shadow (root)");
    let secret = shadow
        .lines()
        .find(|l| !l.is_empty())
        .expect("a line of /etc/shadow")
        .to_string();
    for mode in ["claim", "copy"] {
        let home = tempfile::tempdir().expect("runner home");
        let (code, out, err) = replay_at(
            "hostile-links",
            Some(home.path()),
            &[("ARC_HOOK_WORK_VOLUME", mode)],
        );
        let log = format!("{out}{err}");
        assert_eq!(code, 1, "{mode}:\n{log}");
        assert!(!log.contains(&secret), "{mode}: the secret reached the log");
        assert!(
            log.contains("02-link-outputs.json: run_script_step exited 1"),
            "{mode}:\n{log}"
        );
        assert!(
            log.contains("symbolic link"),
            "{mode}: refused by name:\n{log}"
        );
        assert!(
            log.contains("04-after.json: run_script_step exited 0"),
            "{mode}:\n{log}"
        );
        assert!(log.contains("GITHUB_OUTPUT: after=ok"), "{mode}:\n{log}");
        assert!(
            log.contains("05-cleanup_job.json: cleanup_job exited 0"),
            "{mode}:\n{log}"
        );
        // What the runner reads: its file-command directory holds regular files only, none with
        // a byte of the secret.
        let fc = home.path().join("_work/_temp/_runner_file_commands");
        for entry in std::fs::read_dir(&fc).expect("the runner's file commands") {
            let path = entry.expect("an entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            assert!(
                meta.is_file(),
                "{mode}: {} is not a regular file",
                path.display()
            );
            let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).to_string();
            assert!(
                !text.contains(&secret),
                "{mode}: {} holds the secret",
                path.display()
            );
        }
    }
}

/// Issue 32: the held-out style job in no-volume mode under ARC's `kubernetes-novolume` Role
/// (`sim.json`: no Jobs, no `pods/ephemeralcontainers`): script steps around a Docker action with
/// arguments whose file commands and workspace changes a later step reads.
#[test]
fn a_docker_action_runs_in_its_own_pod_under_arcs_novolume_role() {
    let (code, out, err) = replay("docker-action-no-volume");
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("container steps run in pods of their own on this runner"),
        "{out}"
    );
    assert!(
        out.contains("greeter: hello, Mona Lisa (loud)"),
        "the image's own entrypoint, runs.args decoded as Docker mode does:\n{out}"
    );
    assert!(
        out.contains("greeter read: built by step 2"),
        "the job pod's workspace reached the action:\n{out}"
    );
    assert!(
        out.contains("GITHUB_OUTPUT: greeting=hello Mona Lisa"),
        "{out}"
    );
    assert!(
        out.contains("hello, Mona Lisa, from the action"),
        "what the action wrote reached the next step:\n{out}"
    );
    assert!(out.contains("consumed GREETED=hello Mona Lisa"), "{out}");
    assert!(out.contains("cleanup_job exited 0"), "{out}");
}
