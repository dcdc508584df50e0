//! What a newcomer meets first, with the real binary: an unreachable API server in one line,
//! the hook started by hand on a terminal, a bad `render` input file, a bad `ARC_HOOK_LOG`.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_arc-hook");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");

/// The binary with none of the caller's cluster or log settings.
fn arc_hook() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBECONFIG")
        .env_remove("ARC_HOOK_LOG")
        .env_remove("ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE");
    c
}

/// Runs `cmd` with `input` on stdin, bounded by `limit` (a hang fails the test, not CI).
fn run_with_input(mut cmd: Command, input: &[u8], limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("arc-hook starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("stdin written");
    wait_bounded(child, limit)
}

fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("arc-hook still running after {}s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// A kubeconfig naming a loopback port nothing listens on.
fn closed_port_kubeconfig(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = format!("http://127.0.0.1:{port}");
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\"}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u, namespace: ci}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .expect("kubeconfig written");
    (path, server)
}

#[test]
fn an_unreachable_api_server_is_one_line_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kubeconfig, server) = closed_port_kubeconfig(dir.path());
    for fixture in ["prepare_job.json", "cleanup_job.json"] {
        let input = std::fs::read(format!("{FIXTURES}/{fixture}")).expect("fixture");
        let mut cmd = arc_hook();
        cmd.env("KUBECONFIG", &kubeconfig)
            .env("ACTIONS_RUNNER_POD_NAME", "runner-0");
        // Retries stay (a restarting API server is waited for), bounded well below this.
        let out = run_with_input(cmd, &input, Duration::from_secs(90));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{fixture}: {stdout}{stderr}");
        let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
        let command = fixture.trim_end_matches(".json");
        assert_eq!(
            lines.len(),
            1,
            "{fixture}: one line, not kube-client's: {lines:#?}"
        );
        let line = lines[0];
        assert!(line.starts_with(&format!("arc-hook {command}: ")), "{line}");
        assert!(
            line.contains(&format!(
                "cannot connect to the Kubernetes API server at {server}: tcp connect error: Connection refused"
            )),
            "names the server and the cause: {line}"
        );
        assert_eq!(line.matches("Connection refused").count(), 1, "{line}");
        assert_eq!(line.matches("(Connect)").count(), 0, "{line}");
        assert!(line.contains("gave up after 8 attempts"), "{line}");
    }
}

/// A step whose API server cannot be reached at all never started: it ends after the short
/// never-reached window (30 s, not the 10-minute reattach window meant for a broken stream),
/// quietly, naming the server, as an infrastructure failure.
#[test]
fn a_step_against_an_unreachable_api_server_ends_without_the_reattach_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kubeconfig, server) = closed_port_kubeconfig(dir.path());
    let temp = dir.path().join("_work/_temp");
    std::fs::create_dir_all(&temp).expect("runner temp");
    let input = std::fs::read(format!("{FIXTURES}/run_script_step.json")).expect("fixture");
    let mut cmd = arc_hook();
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("ACTIONS_RUNNER_POD_NAME", "runner-0")
        .env("RUNNER_TEMP", &temp)
        .env("RUNNER_WORKSPACE", dir.path().join("_work/repo"));
    // Well below the 600 s reattach window; the run is killed (and the test fails) past it.
    let out = run_with_input(cmd, &input, Duration::from_secs(180));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = format!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.lines().count() <= 4,
        "a few lines, not kube-client's: {log}"
    );
    assert!(log.contains(&format!("API server at {server}")), "{log}");
    assert!(log.contains("infrastructure failure"), "{log}");
    assert!(
        !log.contains("reattaching"),
        "nothing to reattach to: {log}"
    );
}

#[test]
fn the_hook_on_a_terminal_says_what_it_expects() {
    // A pseudo-terminal for stdin, as when someone types `arc-hook` in a shell.
    // SAFETY: plain libc calls on a descriptor this test owns; each result is checked.
    let (master, slave) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(master >= 0, "posix_openpt");
        assert_eq!(libc::grantpt(master), 0, "grantpt");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master, name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r"
        );
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0, "open the terminal's slave side");
        (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    };
    let child = arc_hook()
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("arc-hook starts");
    let out = wait_bounded(child, Duration::from_secs(20));
    drop(master);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("reads one runner command as JSON on stdin, and stdin is a terminal"),
        "{stderr}"
    );
    assert!(stderr.contains("arc-hook --help"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn render_names_the_file_that_is_not_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("broken.json");
    std::fs::write(&bad, "{not json").expect("write");
    let out = arc_hook()
        .arg("render")
        .arg(&bad)
        .output()
        .expect("render runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "invalid hook input: {}: not valid JSON",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("stdin"), "{stderr}");
}

#[test]
fn an_invalid_log_filter_is_named_once_and_the_default_used() {
    for bad in ["debgu", "kube_client=loud"] {
        let out = arc_hook()
            .env("ARC_HOOK_LOG", bad)
            .args(["render", &format!("{FIXTURES}/prepare_job.json")])
            .output()
            .expect("render runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let warnings: Vec<&str> = stderr.lines().collect();
        assert_eq!(warnings.len(), 1, "{stderr}");
        assert!(
            warnings[0].contains(&format!("ignoring ARC_HOOK_LOG={bad:?}")),
            "{stderr}"
        );
        assert!(warnings[0].contains("(the default)"), "{stderr}");
    }
    // A valid filter is taken without a word.
    let out = arc_hook()
        .env("ARC_HOOK_LOG", "info")
        .args(["render", &format!("{FIXTURES}/prepare_job.json")])
        .output()
        .expect("render runs");
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("ARC_HOOK_LOG"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
