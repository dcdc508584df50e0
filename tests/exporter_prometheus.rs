//! End to end: the exporter against the fake GitHub, scraped by a real Prometheus server that
//! evaluates deploy/monitoring's rules while the scenario changes; alert states read from its API.
mod fake_github;
#[path = "common/prerequisite.rs"]
mod prerequisite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use arc_hook::exporter::collect::Scope;
use arc_hook::exporter::github::{ClientOptions, Credentials, WorkflowRun};
use arc_hook::exporter::{Config, Exporter};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fake_github::{FakeGitHub, job, queued_job, run};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const GPU: &[&str] = &["self-hosted", "linux", "x64", "gpu"];
const FPGA: &[&str] = &["self-hosted", "linux", "x64", "fpga"];
const TOKEN: &str = "ghp_e2e";
/// Bound on each wait for Prometheus to reach a state.
const WAIT: Duration = Duration::from_secs(45);

/// A Prometheus server on a free port of 127.0.0.1 with its own storage; killed on drop.
struct Prometheus {
    child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(exporter: &str, rules: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: github-actions-exporter\n    static_configs:\n      - targets: [{exporter:?}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).expect("write config");
        let port = free_port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// Alerts pending or firing: (alertname, labels, state).
    async fn alerts(&self) -> Vec<(String, BTreeMap<String, String>, String)> {
        let Some(v) = get_json(&format!("{}/api/v1/alerts", self.url)).await else {
            return Vec::new();
        };
        v["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let labels: BTreeMap<String, String> = a["labels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                let name = labels.get("alertname").cloned().unwrap_or_default();
                (name, labels, a["state"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }

    /// States of `alert` for series whose labels include `with`.
    async fn states(&self, alert: &str, with: &[(&str, &str)]) -> Vec<String> {
        self.alerts()
            .await
            .into_iter()
            .filter(|(n, l, _)| {
                n == alert
                    && with
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, s)| s)
            .collect()
    }

    /// The values of an instant query.
    async fn query(&self, promql: &str) -> Vec<f64> {
        let q: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let Some(v) = get_json(&format!("{}/api/v1/query?query={q}", self.url)).await else {
            return Vec::new();
        };
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["value"][1].as_str()?.parse().ok())
            .collect()
    }

    /// Waits (bounded by [`WAIT`], plus the rule's `for:` when waiting for "firing") until
    /// `alert` with labels `with` is in `state` ("pending", "firing", or "inactive" for absent).
    async fn wait_alert(&self, alert: &str, with: &[(&str, &str)], state: &str) {
        let bound = if state == "firing" {
            WAIT + Duration::from_secs(60)
        } else {
            WAIT
        };
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let states = self.states(alert, with).await;
            let reached = match state {
                "inactive" => states.is_empty(),
                s => states.iter().any(|x| x == s),
            };
            if reached {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{alert} {with:?} not {state} within {bound:?}; alerts now: {:?}",
                self.alerts().await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits (bounded) until `promql` returns a value satisfying `ok`.
    async fn wait_query(&self, promql: &str, ok: impl Fn(&[f64]) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.query(promql).await;
            if ok(&v) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{promql}` still {v:?} after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

async fn get_json(url: &str) -> Option<Value> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(url).body(Empty::new()).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// deploy/monitoring/prometheusrule.yaml's spec: a Prometheus rule file.
fn extract_rules(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("deploy/monitoring/prometheusrule.yaml"))
        .expect("read the PrometheusRule");
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("PrometheusRule parses");
    let path = dir.join("rules.yaml");
    std::fs::write(
        &path,
        serde_yaml_ng::to_string(&doc["spec"]).expect("spec serialises"),
    )
    .expect("write rules");
    path
}

/// Whether the Prometheus server is here, as `prerequisite::require` says.
fn prometheus_available() -> bool {
    let found = std::process::Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    prerequisite::require(
        found,
        "the `prometheus` server (.ci/run installs the Debian package `prometheus`)",
    )
}

fn at(base: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    base + chrono::Duration::seconds(secs)
}

/// A completed run of `workflow` on `branch` finishing at `done`.
fn finished(
    id: u64,
    workflow: &str,
    branch: &str,
    event: &str,
    conclusion: &str,
    done: DateTime<Utc>,
) -> WorkflowRun {
    let start = done - chrono::Duration::seconds(60);
    run(
        id,
        1,
        workflow,
        branch,
        event,
        Some(conclusion),
        start,
        start,
        done,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_follow_the_scenario_in_a_real_prometheus() {
    if !prometheus_available() {
        return;
    }
    let now = Utc::now();
    let fake = FakeGitHub::start("acme", &[("acme/web", "main"), ("acme/api", "main")])
        .await
        .expect("fake starts");
    fake.with(|s| s.accepted_tokens = vec![TOKEN.into()]);
    // History before Prometheus starts: ci.yml green on main. A gpu job has waited 20 minutes for a
    // runner in an open run of acme/api.
    let ci = |id, branch, event, conclusion, done| {
        let r = finished(id, "CI", branch, event, conclusion, done);
        fake.put_attempt("acme/web", r, Vec::new());
    };
    ci(1, "main", "push", "success", at(now, -600));
    let waiting_since = at(now, -1200);
    let mut open = run(
        200,
        1,
        "GPU tests",
        "main",
        "push",
        None,
        waiting_since,
        waiting_since,
        waiting_since,
    );
    open.status = Some("queued".into());
    fake.put_attempt(
        "acme/api",
        open.clone(),
        vec![queued_job(2001, 200, 1, GPU, waiting_since)],
    );
    // An fpga job waits through the whole scenario, including the outage at the end.
    let mut fpga_run = open.clone();
    fpga_run.id = 300;
    fpga_run.name = Some("FPGA tests".into());
    fpga_run.path = Some(".github/workflows/fpga-tests.yml".into());
    fake.put_attempt(
        "acme/web",
        fpga_run,
        vec![queued_job(3001, 300, 1, FPGA, waiting_since)],
    );

    let exporter = Exporter::new(Config {
        credentials: Credentials::Token(TOKEN.into()),
        client: ClientOptions {
            request_timeout: Duration::from_secs(5),
            rate_limit_reserve: 0,
            max_rate_limit_wait: Duration::from_secs(5),
            max_retries: 1,
        },
        concurrency: 2,
        ..fake.exporter_config(Scope::Orgs(vec!["acme".into()]))
    })
    .expect("exporter builds");
    let addr = fake_github::serve_exporter(&exporter).await;
    let poller = {
        let exporter = exporter.clone();
        tokio::spawn(async move {
            loop {
                let _ = exporter.poll_once().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let rules = extract_rules(dir.path());
    let prom = Prometheus::start(&addr.to_string(), &rules).await;
    prom.wait_query("up{job=\"github-actions-exporter\"}", |v| v == [1.0])
        .await;

    // 1. A job waiting 20 minutes for a gpu runner alerts before it starts: pending, then firing.
    let gpu = [("runner_label", "gpu")];
    let fpga = [("runner_label", "fpga")];
    prom.wait_alert("GitHubActionsJobsWaitingForRunner", &gpu, "pending")
        .await;
    prom.wait_alert("GitHubActionsJobsWaitingForRunner", &gpu, "firing")
        .await;
    prom.wait_alert("GitHubActionsJobsWaitingForRunner", &fpga, "firing")
        .await;
    assert!(
        prom.alerts()
            .await
            .iter()
            .all(|(n, _, _)| n == "GitHubActionsJobsWaitingForRunner"),
        "nothing else alerts on a green history: {:?}",
        prom.alerts().await
    );

    // 2. While Prometheus watches: three pull-request failures of lint.yml (never page), three
    //    failures of ci.yml on main (pages), and deploy.yml failing 3 of 7 runs on main (ratio
    //    alert, although its failure series are new); the gpu job finally starts after 20 minutes.
    let t = Utc::now();
    for i in 0..3 {
        let r = finished(
            10 + i,
            "Lint",
            "feature/x",
            "pull_request",
            "failure",
            at(t, i as i64),
        );
        fake.put_attempt("acme/web", r, Vec::new());
        ci(20 + i, "main", "push", "failure", at(t, i as i64));
    }
    for (i, c) in [
        "failure", "failure", "failure", "success", "success", "success", "success",
    ]
    .iter()
    .enumerate()
    {
        let r = finished(30 + i as u64, "Deploy", "main", "push", c, at(t, i as i64));
        fake.put_attempt("acme/web", r, Vec::new());
    }
    let mut started = open.clone();
    started.status = Some("in_progress".into());
    fake.put_attempt(
        "acme/api",
        started,
        vec![{
            let mut j = job(
                2001,
                200,
                1,
                GPU,
                waiting_since,
                Some(Utc::now()),
                "success",
            );
            j.status = Some("in_progress".into());
            j.conclusion = None;
            j
        }],
    );
    let ci_yml = [
        ("repo", "acme/web"),
        ("workflow_path", ".github/workflows/ci.yml"),
    ];
    prom.wait_alert("GitHubActionsConsecutiveFailures", &ci_yml, "pending")
        .await;
    let deploy = [
        ("repo", "acme/web"),
        ("workflow_path", ".github/workflows/deploy.yml"),
    ];
    prom.wait_alert("GitHubActionsWorkflowFailureRateHigh", &deploy, "pending")
        .await;
    prom.wait_alert("GitHubActionsQueueTimeHigh", &gpu, "pending")
        .await;
    prom.wait_alert("GitHubActionsJobsWaitingForRunner", &gpu, "inactive")
        .await;
    // increase() extrapolates a burst seen in one or two samples (up to 2x for a series born at 0
    // a scrape ago), so ci.yml and lint.yml may be pending for a few seconds; they settle below the
    // minimum of 5 runs long before the rule's `for: 10m`.
    for wf in [".github/workflows/ci.yml", ".github/workflows/lint.yml"] {
        let with = [("repo", "acme/web"), ("workflow_path", wf)];
        prom.wait_alert("GitHubActionsWorkflowFailureRateHigh", &with, "inactive")
            .await;
    }
    let alerts = prom.alerts().await;
    let paged: Vec<_> = alerts
        .iter()
        .filter(|(n, _, _)| n == "GitHubActionsConsecutiveFailures")
        .map(|(_, l, _)| l.get("workflow_path").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        paged,
        vec![".github/workflows/ci.yml".to_string()],
        "pull-request failures never page; deploy.yml ended green"
    );
    let ratio: Vec<_> = alerts
        .iter()
        .filter(|(n, _, _)| n == "GitHubActionsWorkflowFailureRateHigh")
        .map(|(_, l, _)| l.get("workflow_path").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        ratio,
        vec![".github/workflows/deploy.yml".to_string()],
        "ci.yml and lint.yml have fewer than 5 succeeded+failed runs"
    );

    // 3. A success on a feature branch does not end main's streak; a success on main does.
    ci(40, "feature/y", "push", "success", at(Utc::now(), 0));
    prom.wait_query(
        "github_actions_workflow_runs_total{workflow_path=\".github/workflows/ci.yml\",branch=\"other\",conclusion=\"success\"}",
        |v| v == [1.0],
    )
    .await;
    assert_eq!(
        prom.states("GitHubActionsConsecutiveFailures", &ci_yml)
            .await,
        vec!["pending".to_string()]
    );
    ci(41, "main", "push", "success", at(Utc::now(), 0));
    prom.wait_alert("GitHubActionsConsecutiveFailures", &ci_yml, "inactive")
        .await;

    // 4. The gpu job completes 30 s after it started: its runner time is counted once, by runner
    //    label and conclusion, and polls that list it again do not count it again.
    let mut done = open.clone();
    done.status = Some("completed".into());
    done.conclusion = Some("success".into());
    done.updated_at = Utc::now();
    let gpu_started = Utc::now() - chrono::Duration::seconds(30);
    fake.put_attempt(
        "acme/api",
        done,
        vec![job(
            2001,
            200,
            1,
            GPU,
            waiting_since,
            Some(gpu_started),
            "success",
        )],
    );
    let runner_time = "github_actions_workflow_job_duration_seconds_sum{runner_label=\"gpu\",runner_group=\"Default\",conclusion=\"success\"}";
    prom.wait_query(runner_time, |v| v == [30.0]).await;
    prom.wait_query(
        "github_actions_workflow_job_duration_seconds_count{runner_label=\"gpu\",runner_group=\"Default\",conclusion=\"success\"}",
        |v| v == [1.0],
    )
    .await;
    // The runner group's recording rule sees the pool's runner time.
    prom.wait_query(
        "runner_group:github_actions_workflow_job_duration_seconds:sum_rate5m{runner_group=\"Default\"} > 0",
        |v| v.len() == 1,
    )
    .await;

    // 5. A revoked token: every repository fails. The last-poll timestamp stops (PollStale fires
    //    15 minutes later, see rules-tests/05), each repository's errors rise, and runs in
    //    progress are no longer reported as if known.
    fake.with(|s| s.accepted_tokens = vec!["another-token".into()]);
    prom.wait_query(
        "min(increase(github_actions_exporter_repo_poll_errors_total[15s]))",
        |v| v.first().is_some_and(|x| *x > 0.0),
    )
    .await;
    prom.wait_query(
        "time() - github_actions_exporter_last_poll_timestamp_seconds",
        |v| v.first().is_some_and(|x| *x > 5.0),
    )
    .await;
    prom.wait_query("github_actions_workflow_runs_in_progress", |v| v.is_empty())
        .await;
    prom.wait_query(
        "time() - max by (repo) (github_actions_exporter_repo_last_success_timestamp_seconds)",
        |v| v.len() == 2 && v.iter().all(|x| *x > 5.0),
    )
    .await;
    // The fpga job still waits as far as anyone knows: kept, marked stale, and its alert holds
    // (the gpu series never comes back: its job completed before the outage).
    prom.wait_query(
        "github_actions_workflow_jobs_queued_stale{runner_label=\"fpga\"}",
        |v| v == [1.0],
    )
    .await;
    assert_eq!(
        prom.states("GitHubActionsJobsWaitingForRunner", &fpga)
            .await,
        vec!["firing".to_string()],
        "a failing poll does not resolve a firing waiting-jobs alert"
    );
    assert_eq!(
        prom.states("GitHubActionsJobsWaitingForRunner", &gpu).await,
        Vec::<String>::new()
    );
    assert_eq!(prom.query(runner_time).await, vec![30.0]);

    prom.stop().await;
    poller.abort();
}
