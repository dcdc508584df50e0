//! The real `arc-hook exporter` binary: flag errors, serving /metrics from a fake GitHub, state file at SIGTERM.
mod fake_github;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use fake_github::{FakeGitHub, job, run};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncReadExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_arc-hook");
const TOKEN: &str = "ghp_cli_test_token_do_not_log";

fn exporter() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.arg("exporter")
        .env_remove("GITHUB_TOKEN")
        .env_remove("GITHUB_APP_ID")
        .env_remove("GITHUB_WEBHOOK_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

#[tokio::test]
async fn org_and_repos_together_are_refused() {
    let out = exporter()
        .args(["--org", "acme", "--repos", "acme/web"])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[tokio::test]
async fn webhook_without_secret_says_which_variable_is_missing() {
    let out = exporter()
        .args(["--org", "acme", "--webhook"])
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("GITHUB_WEBHOOK_SECRET"));
}

async fn get(url: &str) -> Option<String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(url).body(Empty::new()).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn binary_polls_serves_metrics_and_saves_state_on_sigterm() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let t = Utc::now() - chrono::Duration::minutes(30);
    fake.put_attempt(
        "acme/web",
        run(
            1,
            1,
            "CI",
            "main",
            "push",
            Some("success"),
            t,
            t,
            t + chrono::Duration::minutes(4),
        ),
        vec![job(
            11,
            1,
            1,
            &["arc-runner-set"],
            t,
            Some(t + chrono::Duration::seconds(42)),
            "success",
        )],
    );
    fake.with(|s| s.accepted_tokens = vec![TOKEN.into()]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let mut child = exporter()
        .env("GITHUB_TOKEN", TOKEN)
        .env("ARC_HOOK_LOG", "debug")
        .args([
            "--repos",
            "acme/web",
            "--api-url",
            &fake.url(),
            "--poll-interval",
            "1h",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--state-file")
        .arg(&state)
        .spawn()
        .expect("exporter starts");

    // Wait (bounded) until the first poll is visible on /metrics.
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    // Series born after a scrape are served empty once, so wait for the counted value itself.
    let counted = "github_actions_workflow_runs_total{repo=\"acme/web\",workflow_path=\".github/workflows/ci.yml\",workflow=\"CI\",branch=\"main\",event=\"push\",conclusion=\"success\"} 1\n";
    let metrics = loop {
        if let Some(m) = get(&url).await {
            if m.contains(counted) {
                break m;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first poll's run not on /metrics within 30s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.contains(
        "github_actions_workflow_queue_time_seconds_sum{runner_label=\"arc-runner-set\"} 42.0\n"
    ));

    let pid = child.id().expect("child pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within 15s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
    let saved = std::fs::read_to_string(&state).expect("state file written");
    assert!(saved.contains("\"acme/web\""));

    let mut logs = String::new();
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut logs).await.expect("stderr");
    }
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut logs).await.expect("stdout");
    }
    assert!(logs.contains("poll cycle done"), "{logs}");
    assert!(!logs.contains(TOKEN), "the token appears in the logs");
}

#[tokio::test]
async fn help_lists_the_credential_variables() {
    let out = exporter().arg("--help").output().await.expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for var in [
        "GITHUB_TOKEN",
        "GITHUB_APP_ID",
        "GITHUB_APP_INSTALLATION_ID",
        "GITHUB_APP_PRIVATE_KEY_PATH",
        "GITHUB_WEBHOOK_SECRET",
    ] {
        assert!(help.contains(var), "--help names {var}:\n{help}");
    }
    assert!(help.contains("60 an hour"), "{help}");
}

#[tokio::test]
async fn running_anonymously_is_warned_once_with_the_rate_limit() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let mut child = exporter()
        .args(["--repos", "acme/web", "--api-url", &fake.url()])
        .args(["--poll-interval", "1h", "--listen", "127.0.0.1:0"])
        .spawn()
        .expect("exporter starts");
    let mut stderr = child.stderr.take().expect("stderr");
    // The warning comes before the first poll; read until it shows (bounded), then stop.
    let mut logs = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&logs).contains('\n') {
            let n = stderr.read(&mut buf).await.expect("stderr");
            if n == 0 {
                break;
            }
            logs.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let _ = child.kill().await;
    let mut rest = Vec::new();
    let _ = stderr.read_to_end(&mut rest).await;
    logs.extend_from_slice(&rest);
    let logs = String::from_utf8_lossy(&logs);
    assert!(read.is_ok(), "no log line within 20s: {logs}");
    assert_eq!(
        logs.matches("requests are anonymous").count(),
        1,
        "warned once: {logs}"
    );
    assert!(logs.contains("60 an hour per IP address"), "{logs}");
    assert!(logs.contains("GITHUB_TOKEN"), "{logs}");
}
