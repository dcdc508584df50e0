//! The exporter against a fake GitHub API on 127.0.0.1: metric values, pagination, 304s, rate limits,
//! webhook signatures, restart safety and the exposition formats.
mod fake_github;
#[path = "common/prerequisite.rs"]
mod prerequisite;

use std::collections::BTreeSet;
use std::time::Duration;

use arc_hook::exporter::collect::{RepoFilter, Scope};
use arc_hook::exporter::github::ClientOptions;
use arc_hook::exporter::metrics::{Buckets, Format};
use arc_hook::exporter::webhook::sign;
use arc_hook::exporter::{Config, Exporter};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fake_github::{FakeGitHub, Inject, job, run};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const GPU: &[&str] = &["self-hosted", "linux", "x64", "gpu"];
const SECRET: &[u8] = b"hook-secret";

fn config(fake: &FakeGitHub, scope: Scope) -> Config {
    Config {
        webhook_secret: Some(SECRET.to_vec()),
        client: ClientOptions {
            request_timeout: Duration::from_secs(10),
            rate_limit_reserve: 0,
            max_rate_limit_wait: Duration::from_secs(10),
            max_retries: 3,
        },
        concurrency: 2,
        rerun_lookback: Duration::from_secs(6 * 3600),
        ..fake.exporter_config(scope)
    }
}

fn org() -> Scope {
    Scope::Orgs(vec!["acme".into()])
}

/// Looks a sample up in the Prometheus text exposition, parsed by prometheus-parse.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("exposition parses");
    scrape.samples.iter().find_map(|s| {
        let matches = s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
        if !matches {
            return None;
        }
        match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            _ => None,
        }
    })
}

/// `_count` of a histogram series, read from the raw text (prometheus-parse folds histograms).
fn histogram_count(text: &str, name: &str, label: &str) -> Option<f64> {
    let prefix = format!("{name}_count{{{label}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

fn histogram_sum(text: &str, name: &str, label: &str) -> Option<f64> {
    let prefix = format!("{name}_sum{{{label}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

fn at(base: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    base + chrono::Duration::seconds(secs)
}

/// acme/web: a success, a failure on a feature branch, a failed first attempt, a run in progress;
/// jobs including a skipped one and one never started.
fn script_first_history(fake: &FakeGitHub, base: DateTime<Utc>) {
    let w = "acme/web";
    fake.put_attempt(
        w,
        run(
            1,
            1,
            "CI",
            "main",
            "push",
            Some("success"),
            base,
            at(base, 10),
            at(base, 300),
        ),
        vec![
            job(11, 1, 1, GPU, base, Some(at(base, 30)), "success"),
            job(12, 1, 1, GPU, base, None, "skipped"),
        ],
    );
    fake.put_attempt(
        w,
        run(
            2,
            1,
            "CI",
            "feature/x",
            "pull_request",
            Some("failure"),
            at(base, 60),
            at(base, 60),
            at(base, 600),
        ),
        vec![job(
            21,
            2,
            1,
            &["ubuntu-latest"],
            at(base, 60),
            Some(at(base, 70)),
            "failure",
        )],
    );
    fake.put_attempt(
        w,
        run(
            3,
            1,
            "CI",
            "main",
            "push",
            Some("failure"),
            at(base, 120),
            at(base, 120),
            at(base, 900),
        ),
        vec![
            job(31, 3, 1, GPU, at(base, 120), Some(at(base, 180)), "failure"),
            job(33, 3, 1, GPU, at(base, 120), None, "cancelled"),
        ],
    );
    fake.put_attempt(
        w,
        run(
            5,
            1,
            "CI",
            "main",
            "push",
            None,
            at(base, 1000),
            at(base, 1000),
            at(base, 1000),
        ),
        Vec::new(),
    );
}

/// Second poll: run 3 re-run succeeds, run 5 completes with a failure.
fn script_second_history(fake: &FakeGitHub, base: DateTime<Utc>) {
    let w = "acme/web";
    fake.put_attempt(
        w,
        run(
            3,
            2,
            "CI",
            "main",
            "push",
            Some("success"),
            at(base, 120),
            at(base, 1700),
            at(base, 1800),
        ),
        vec![job(
            32,
            3,
            2,
            GPU,
            at(base, 1700),
            Some(at(base, 1820)),
            "success",
        )],
    );
    fake.put_attempt(
        w,
        run(
            5,
            1,
            "CI",
            "main",
            "push",
            Some("failure"),
            at(base, 1000),
            at(base, 1000),
            at(base, 2100),
        ),
        vec![job(
            51,
            5,
            1,
            GPU,
            at(base, 1000),
            Some(at(base, 1090)),
            "failure",
        )],
    );
}

/// acme/api: 250 successful runs, so its listing spans 3 pages of 100.
fn script_many_runs(fake: &FakeGitHub, base: DateTime<Utc>) {
    for i in 0..250u64 {
        let id = 1000 + i;
        let c = at(base, i as i64);
        fake.put_attempt(
            "acme/api",
            run(
                id,
                1,
                "Build",
                "develop",
                "push",
                Some("success"),
                c,
                c,
                at(base, i as i64 + 100),
            ),
            vec![job(
                id * 10,
                id,
                1,
                &["arc-runner-set"],
                c,
                Some(at(base, i as i64 + 5)),
                "success",
            )],
        );
    }
}

#[tokio::test]
async fn scripted_history_yields_exact_metric_values() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main"), ("acme/api", "develop")])
        .await
        .expect("fake starts");
    let base = Utc::now() - chrono::Duration::hours(1);
    script_first_history(&fake, base);
    script_many_runs(&fake, base);
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");

    let report = exporter.poll_once().await.expect("first poll");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let m = exporter.render(Format::Text);
    let runs = "github_actions_workflow_runs_total";
    let web_main_push = |c: &str| {
        value(
            &m,
            runs,
            &[
                ("repo", "acme/web"),
                ("workflow", "CI"),
                ("branch", "main"),
                ("event", "push"),
                ("conclusion", c),
            ],
        )
    };
    assert_eq!(web_main_push("success"), Some(1.0));
    assert_eq!(web_main_push("failure"), Some(1.0));
    // A non-default, non-allowed branch is folded into "other".
    assert_eq!(
        value(
            &m,
            runs,
            &[
                ("repo", "acme/web"),
                ("branch", "other"),
                ("event", "pull_request"),
                ("conclusion", "failure")
            ]
        ),
        Some(1.0)
    );
    // The repository's default branch is kept even though it is not main/master.
    assert_eq!(
        value(
            &m,
            runs,
            &[
                ("repo", "acme/api"),
                ("branch", "develop"),
                ("conclusion", "success")
            ]
        ),
        Some(250.0)
    );
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_runs_by_branch_total",
            &[
                ("repo", "acme/web"),
                ("branch", "main"),
                ("conclusion", "failure")
            ]
        ),
        Some(1.0)
    );
    // The run in progress is in the gauge, by status, not in the totals.
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_runs_in_progress",
            &[("repo", "acme/web"), ("status", "in_progress")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_runs_in_progress",
            &[("repo", "acme/web"), ("status", "queued")]
        ),
        Some(0.0)
    );
    // The streak counts the default branch only: run 3 failed on main; run 2's pull-request
    // failure on feature/x does not count.
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_consecutive_failures",
            &[
                ("repo", "acme/web"),
                ("workflow_path", ".github/workflows/ci.yml"),
                ("workflow", "CI")
            ]
        ),
        Some(1.0)
    );
    // Queue time: jobs 11 (30 s) and 31 (60 s) on gpu; skipped job 12 and never-started job 33 excluded.
    let qt = "github_actions_workflow_queue_time_seconds";
    assert_eq!(histogram_count(&m, qt, "runner_label=\"gpu\""), Some(2.0));
    assert_eq!(histogram_sum(&m, qt, "runner_label=\"gpu\""), Some(90.0));
    assert_eq!(
        histogram_count(&m, qt, "runner_label=\"ubuntu-latest\""),
        Some(1.0)
    );
    assert_eq!(
        histogram_count(&m, qt, "runner_label=\"arc-runner-set\""),
        Some(250.0)
    );
    // Durations by conclusion: run 1 succeeded; runs 2 and 3 failed.
    let duration = |c: &str| {
        histogram_count(
            &m,
            "github_actions_workflow_duration_seconds",
            &format!(
                "repo=\"acme/web\",workflow_path=\".github/workflows/ci.yml\",workflow=\"CI\",conclusion=\"{c}\""
            ),
        )
    };
    assert_eq!(
        (duration("success"), duration("failure")),
        (Some(1.0), Some(2.0))
    );

    // Pagination: the 250 runs of acme/api were read over pages 1, 2 and 3 by following Link rel="next".
    let reqs = fake.requests();
    let api_runs: Vec<_> = reqs
        .iter()
        .filter(|r| r.target.starts_with("/repos/acme/api/actions/runs?"))
        .collect();
    assert_eq!(
        api_runs.len(),
        3,
        "{:?}",
        api_runs.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
    assert!(api_runs[1].target.contains("page=2") && api_runs[2].target.contains("page=3"));
    assert!(
        reqs.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer ghp_test"))
    );

    // Second poll: the re-run's success resets the streak, run 5's failure starts a new one.
    script_second_history(&fake, base);
    let report = exporter.poll_once().await.expect("second poll");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let m = exporter.render(Format::Text);
    let web_main_push = |c: &str| {
        value(
            &m,
            runs,
            &[
                ("repo", "acme/web"),
                ("workflow", "CI"),
                ("branch", "main"),
                ("event", "push"),
                ("conclusion", c),
            ],
        )
    };
    assert_eq!(
        web_main_push("success"),
        Some(2.0),
        "attempt 2 of run 3 counted once, attempt 1 not again"
    );
    assert_eq!(web_main_push("failure"), Some(2.0));
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_runs_in_progress",
            &[("repo", "acme/web"), ("status", "in_progress")]
        ),
        Some(0.0)
    );
    // Run 3's successful re-run on main ended the streak; run 5's failure started a new one.
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_consecutive_failures",
            &[("repo", "acme/web"), ("workflow", "CI")]
        ),
        Some(1.0)
    );
    assert_eq!(
        histogram_count(&m, qt, "runner_label=\"gpu\""),
        Some(4.0),
        "re-run job attempt has its own queue time"
    );
    assert_eq!(histogram_sum(&m, qt, "runner_label=\"gpu\""), Some(300.0));
    assert_eq!(
        value(&m, runs, &[("repo", "acme/api"), ("conclusion", "success")]),
        Some(250.0)
    );

    // Third poll with nothing new: every listing answers 304 and nothing is re-processed.
    let before = fake.requests().len();
    let not_modified_before = value(
        &m,
        "github_actions_exporter_api_requests_total",
        &[("status", "304")],
    )
    .unwrap_or(0.0);
    let report = exporter.poll_once().await.expect("third poll");
    assert_eq!((report.runs_counted, report.jobs_counted), (0, 0));
    let third: Vec<_> = fake.requests().into_iter().skip(before).collect();
    assert!(!third.is_empty());
    assert!(
        third
            .iter()
            .all(|r| r.status == 304 && r.if_none_match.is_some()),
        "{:?}",
        third
            .iter()
            .map(|r| (&r.target, r.status))
            .collect::<Vec<_>>()
    );
    assert!(
        third.iter().all(|r| !r.target.contains("/jobs")),
        "no job listing fetched again"
    );
    let m3 = exporter.render(Format::Text);
    assert_eq!(
        value(
            &m3,
            runs,
            &[("repo", "acme/api"), ("conclusion", "success")]
        ),
        Some(250.0)
    );
    assert_eq!(
        value(
            &m3,
            "github_actions_exporter_api_requests_total",
            &[("status", "304")]
        ),
        Some(not_modified_before + third.len() as f64)
    );
    // The fake does not charge 304s, and the exporter reports the budget it was last told.
    let remaining = fake.with(|s| s.rate.remaining) as f64;
    assert_eq!(
        value(
            &m3,
            "github_actions_exporter_rate_limit_remaining",
            &[("resource", "core")]
        ),
        Some(remaining)
    );
}

#[tokio::test]
async fn rate_limit_reserve_waits_for_the_reset() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let base = Utc::now() - chrono::Duration::hours(1);
    script_first_history(&fake, base);
    let reset = Utc::now().timestamp() + 2;
    fake.with(|s| {
        s.rate.remaining = 4;
        s.rate.reset = reset;
    });
    let mut cfg = config(&fake, org());
    cfg.client.rate_limit_reserve = 2;
    let exporter = Exporter::new(cfg).expect("exporter builds");
    let report = exporter.poll_once().await.expect("poll");
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    let reqs = fake.requests();
    assert!(
        reqs.iter().all(|r| r.status != 403),
        "the exporter never ran the budget dry"
    );
    // Two requests leave 2 = the reserve; the third waits until the reset.
    assert!(reqs[1].at.timestamp() < reset);
    assert!(
        reqs[2].at.timestamp() >= reset,
        "third request at {} before reset {reset}",
        reqs[2].at
    );
    let m = exporter.render(Format::Text);
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_runs_total",
            &[
                ("repo", "acme/web"),
                ("branch", "main"),
                ("conclusion", "success")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn exhausted_budget_403_waits_for_the_reset_and_retries() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    script_first_history(&fake, Utc::now() - chrono::Duration::hours(1));
    let reset = Utc::now().timestamp() + 2;
    fake.with(|s| {
        s.rate.reset = reset;
        s.inject.push_back(Inject::BudgetSpentElsewhere);
    });
    // The budget looked ample, but another user of the token spent it: GitHub answers 403 with
    // x-ratelimit-remaining 0, and the exporter waits for x-ratelimit-reset before retrying.
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");
    let report = exporter.poll_once().await.expect("poll");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let reqs = fake.requests();
    let refused: Vec<_> = reqs.iter().filter(|r| r.status == 403).collect();
    assert_eq!(refused.len(), 1);
    let retry = reqs
        .iter()
        .position(|r| r.status == 403)
        .map(|i| &reqs[i + 1])
        .expect("a retry follows");
    assert_eq!(
        retry.target, refused[0].target,
        "the refused request is the one retried"
    );
    assert!(
        retry.at.timestamp() >= reset,
        "retried at {} before the reset {reset}",
        retry.at
    );
    assert_eq!(retry.status, 200);
}

#[tokio::test]
async fn secondary_rate_limit_retry_after_is_honoured() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    script_first_history(&fake, Utc::now() - chrono::Duration::hours(1));
    fake.with(|s| {
        s.inject
            .push_back(Inject::SecondaryLimit { retry_after: 1 });
        s.inject
            .push_back(Inject::TooManyRequests { retry_after: 1 });
    });
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");
    let report = exporter.poll_once().await.expect("poll");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let reqs = fake.requests();
    assert_eq!(
        (reqs[0].status, reqs[1].status, reqs[2].status),
        (403, 429, 200)
    );
    assert!(reqs[1].at - reqs[0].at >= chrono::Duration::milliseconds(1000));
    assert!(reqs[2].at - reqs[1].at >= chrono::Duration::milliseconds(1000));
    let m = exporter.render(Format::Text);
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_api_requests_total",
            &[("status", "403")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_api_requests_total",
            &[("status", "429")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_runs_in_progress",
            &[("repo", "acme/web")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn restart_with_state_file_does_not_double_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("exporter-state.json");
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let base = Utc::now() - chrono::Duration::hours(1);
    script_first_history(&fake, base);
    let mut cfg = config(&fake, org());
    cfg.state_file = Some(state.clone());

    let first = Exporter::new(cfg.clone()).expect("exporter builds");
    first.poll_once().await.expect("poll");
    assert!(state.exists(), "state file written after a poll");
    drop(first);

    // A restarted exporter sees the same history plus one new run; the default-branch streak
    // (run 3 failed on main) survives the restart.
    let second = Exporter::new(cfg).expect("exporter restarts");
    assert_eq!(
        value(
            &second.render(Format::Text),
            "github_actions_workflow_consecutive_failures",
            &[("repo", "acme/web"), ("workflow", "CI")]
        ),
        Some(1.0)
    );
    fake.put_attempt(
        "acme/web",
        run(
            6,
            1,
            "CI",
            "main",
            "push",
            Some("success"),
            at(base, 2000),
            at(base, 2000),
            at(base, 2300),
        ),
        vec![job(
            61,
            6,
            1,
            GPU,
            at(base, 2000),
            Some(at(base, 2015)),
            "success",
        )],
    );
    let report = second.poll_once().await.expect("poll after restart");
    assert_eq!(
        (report.runs_counted, report.jobs_counted),
        (1, 1),
        "only the new run and its job are counted"
    );
    // Series born since the scrape above are served empty once; the next scrape has them.
    second.render(Format::Text);
    let m = second.render(Format::Text);
    let runs = "github_actions_workflow_runs_total";
    assert_eq!(
        value(
            &m,
            runs,
            &[
                ("repo", "acme/web"),
                ("branch", "main"),
                ("conclusion", "success")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&m, runs, &[("repo", "acme/web"), ("conclusion", "failure")]),
        None
    );
    assert_eq!(
        histogram_count(
            &m,
            "github_actions_workflow_queue_time_seconds",
            "runner_label=\"gpu\""
        ),
        Some(1.0)
    );
    // Run 6's success on main ends the restored streak.
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_consecutive_failures",
            &[("repo", "acme/web"), ("workflow", "CI")]
        ),
        Some(0.0)
    );
}

#[tokio::test]
async fn corrupt_state_file_is_set_aside_and_the_exporter_starts_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("exporter-state.json");
    std::fs::write(&state, b"{\"version\": 2, \"runs\": [tru").expect("write state");
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    script_first_history(&fake, Utc::now() - chrono::Duration::hours(1));
    let mut cfg = config(&fake, org());
    cfg.state_file = Some(state.clone());

    let exporter = Exporter::new(cfg).expect("a corrupt state file does not stop the exporter");
    let aside = dir.path().join("exporter-state.json.corrupt");
    assert_eq!(
        std::fs::read(&aside).expect("corrupt file kept beside"),
        b"{\"version\": 2, \"runs\": [tru"
    );
    let report = exporter.poll_once().await.expect("poll");
    assert_eq!(report.runs_counted, 3, "the window is counted afresh");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("new state written")).expect("json");
    assert_eq!(saved["version"], 2);
}

async fn serve(exporter: &Exporter) -> String {
    format!("http://{}", fake_github::serve_exporter(exporter).await)
}

async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(Bytes::from(body))).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("answer within 10s")
        .expect("request succeeds");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn job_event(
    job_id: u64,
    run_id: u64,
    attempt: u32,
    created: DateTime<Utc>,
    started: DateTime<Utc>,
) -> Vec<u8> {
    let j = job(
        job_id,
        run_id,
        attempt,
        GPU,
        created,
        Some(started),
        "success",
    );
    let mut payload = serde_json::json!({
        "action": "completed",
        "workflow_job": fake_github::job_json("https://api.github.com", "acme/web", &j),
        "repository": {"full_name": "acme/web", "default_branch": "main", "name": "web"},
        "sender": {"login": "octocat"},
    });
    payload["workflow_job"]["status"] = "completed".into();
    payload.to_string().into_bytes()
}

#[tokio::test]
async fn webhook_verifies_signatures_and_dedupes_with_polling() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let base = Utc::now() - chrono::Duration::hours(1);
    script_first_history(&fake, base);
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");
    let url = serve(&exporter).await;
    let hook = format!("{url}/webhook");
    let qt = "github_actions_workflow_queue_time_seconds";

    // Job 31 of run 3 (60 s in the queue), delivered before any poll.
    let body = job_event(31, 3, 1, at(base, 120), at(base, 180));
    let event = ("x-github-event", "workflow_job".to_string());
    let (status, _, _) = http(
        "POST",
        &hook,
        &[event.clone(), ("x-github-delivery", "d1".into())],
        body.clone(),
    )
    .await;
    assert_eq!(status, 401, "missing signature");
    let forged = sign(b"wrong-secret", &body);
    let (status, _, _) = http(
        "POST",
        &hook,
        &[
            event.clone(),
            ("x-github-delivery", "d1".into()),
            ("x-hub-signature-256", forged),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(status, 401, "signature with another secret");
    let (_, _, m) = http("GET", &format!("{url}/metrics"), &[], Vec::new()).await;
    assert_eq!(
        histogram_count(&m, qt, "runner_label=\"gpu\""),
        None,
        "nothing recorded from refused deliveries"
    );
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_webhook_deliveries_total",
            &[("result", "bad_signature")]
        ),
        Some(2.0)
    );

    let good = sign(SECRET, &body);
    let headers = [
        event.clone(),
        ("x-github-delivery", "d1".to_string()),
        ("x-hub-signature-256", good.clone()),
    ];
    assert_eq!(http("POST", &hook, &headers, body.clone()).await.0, 200);
    assert_eq!(
        http("POST", &hook, &headers, body.clone()).await.0,
        200,
        "redelivery acknowledged"
    );
    let (_, _, m) = http("GET", &format!("{url}/metrics"), &[], Vec::new()).await;
    // A series born after the first scrape is served empty once, so that Prometheus sees its
    // first observation as an increase; the next scrape has it.
    assert_eq!(histogram_count(&m, qt, "runner_label=\"gpu\""), Some(0.0));
    let (_, _, m) = http("GET", &format!("{url}/metrics"), &[], Vec::new()).await;
    assert_eq!(histogram_count(&m, qt, "runner_label=\"gpu\""), Some(1.0));
    assert_eq!(histogram_sum(&m, qt, "runner_label=\"gpu\""), Some(60.0));
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_webhook_deliveries_total",
            &[("result", "duplicate")]
        ),
        Some(1.0)
    );

    // A workflow_run completion by webhook, then the poll that lists the same run.
    let r = run(
        2,
        1,
        "CI",
        "feature/x",
        "pull_request",
        Some("failure"),
        at(base, 60),
        at(base, 60),
        at(base, 600),
    );
    let repo = fake_github::FakeRepo {
        full_name: "acme/web".into(),
        ..Default::default()
    };
    let payload = serde_json::json!({
        "action": "completed",
        "workflow_run": fake_github::run_json("https://api.github.com", &repo, &r),
        "repository": {"full_name": "acme/web", "default_branch": "main"},
    })
    .to_string()
    .into_bytes();
    let sig = sign(SECRET, &payload);
    let headers = [
        ("x-github-event", "workflow_run".to_string()),
        ("x-github-delivery", "d2".into()),
        ("x-hub-signature-256", sig),
    ];
    assert_eq!(http("POST", &hook, &headers, payload).await.0, 200);

    exporter.poll_once().await.expect("poll");
    // Series born since the last scrape are served empty once; the second scrape has them.
    http("GET", &format!("{url}/metrics"), &[], Vec::new()).await;
    let (_, _, m) = http("GET", &format!("{url}/metrics"), &[], Vec::new()).await;
    // Polling saw jobs 11 and 31 and runs 1..3; job 31 and run 2 were already counted by the webhook.
    assert_eq!(histogram_count(&m, qt, "runner_label=\"gpu\""), Some(2.0));
    // Run 2 was counted from its webhook, yet polling still read its jobs: job 21's queue time.
    assert_eq!(
        histogram_count(&m, qt, "runner_label=\"ubuntu-latest\""),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_runs_total",
            &[
                ("repo", "acme/web"),
                ("branch", "other"),
                ("conclusion", "failure")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_webhook_deliveries_total",
            &[("result", "accepted")]
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn metrics_endpoint_serves_text_and_openmetrics() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    script_first_history(&fake, Utc::now() - chrono::Duration::hours(1));
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");
    exporter.poll_once().await.expect("poll");
    let url = serve(&exporter).await;

    let (status, headers, text) = http("GET", &format!("{url}/metrics"), &[], Vec::new()).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4")
    );
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("text format parses");
    for family in [
        "github_actions_workflow_runs_total",
        "github_actions_workflow_duration_seconds",
        "github_actions_workflow_queue_time_seconds",
        "github_actions_workflow_jobs_queued",
        "github_actions_workflow_oldest_queued_job_age_seconds",
        "github_actions_workflow_consecutive_failures",
        "github_actions_workflow_runs_in_progress",
        "github_actions_workflow_runs_by_branch_total",
        "github_actions_exporter_api_requests_total",
        "github_actions_exporter_rate_limit_remaining",
        "github_actions_exporter_last_poll_timestamp_seconds",
        "github_actions_exporter_repo_poll_errors_total",
        "github_actions_exporter_repo_last_success_timestamp_seconds",
    ] {
        assert!(
            scrape.samples.iter().any(|s| s.metric == family),
            "{family} missing from\n{text}"
        );
    }
    let hist = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "github_actions_workflow_queue_time_seconds"
                && s.labels.get("runner_label") == Some("gpu")
        })
        .expect("gpu histogram");
    match &hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(
                buckets.windows(2).all(|w| w[0].count <= w[1].count),
                "cumulative buckets"
            );
            assert_eq!(
                buckets.last().map(|b| (b.less_than, b.count)),
                Some((f64::INFINITY, 2.0))
            );
        }
        other => panic!("queue time is not a histogram: {other:?}"),
    }

    let accept = (
        "accept",
        "application/openmetrics-text; version=1.0.0".to_string(),
    );
    let (status, headers, om) = http("GET", &format!("{url}/metrics"), &[accept], Vec::new()).await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE github_actions_workflow_runs counter\n"));
    assert!(om.contains("github_actions_workflow_runs_total{repo=\"acme/web\""));

    strict_python_parsers(&text, &om);

    let (status, _, body) = http("GET", &format!("{url}/healthz"), &[], Vec::new()).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

/// Also runs the reference parsers of the Python `prometheus_client` (text and the strict OpenMetrics
/// one) with the interpreter named by `PROMETHEUS_PYTHON` (default `python3`); under CI=true a
/// missing package fails the test.
fn strict_python_parsers(text: &str, openmetrics: &str) {
    let python = std::env::var("PROMETHEUS_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_client = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client.openmetrics.parser"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !prerequisite::require(
        has_client,
        &format!("{python} with prometheus_client (scripts/setup.sh installs it)"),
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (t, o) = (
        dir.path().join("metrics.txt"),
        dir.path().join("metrics.om"),
    );
    std::fs::write(&t, text).expect("write");
    std::fs::write(&o, openmetrics).expect("write");
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
t = list(text_string_to_metric_families(open(sys.argv[1]).read()))
o = list(om_families(open(sys.argv[2]).read()))
print(len(t), len(o))
"#;
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&t)
        .arg(&o)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "strict parsers refused the exposition: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every family the text exposition declares, in both formats.
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let counts = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        counts.trim(),
        format!("{families} {families}"),
        "both formats carry the {families} families"
    );
}

#[tokio::test]
async fn webhook_job_lifecycle_counts_queue_and_runner_time_once_and_ignores_other_repos() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");
    let url = serve(&exporter).await;
    let hook = format!("{url}/webhook");
    let created = Utc::now() - chrono::Duration::minutes(3);
    let started = created + chrono::Duration::seconds(75);

    let deliver =
        |n: u32, action: &str, status: &str, started_at: Option<DateTime<Utc>>, repo: &str| {
            let mut j = job(
                900,
                90,
                1,
                &["arc-runner-set"],
                created,
                started_at,
                "success",
            );
            j.status = Some(status.into());
            if status != "completed" {
                j.conclusion = None;
                j.completed_at = None;
            }
            if status == "queued" {
                j.runner_name = None;
            }
            let body = serde_json::json!({
                "action": action,
                "workflow_job": fake_github::job_json("https://api.github.com", repo, &j),
                "repository": {"full_name": repo, "default_branch": "main"},
            })
            .to_string()
            .into_bytes();
            let headers = vec![
                ("x-github-event", "workflow_job".to_string()),
                ("x-github-delivery", format!("life-{n}")),
                ("x-hub-signature-256", sign(SECRET, &body)),
            ];
            (headers, body)
        };
    // GitHub sends queued (no runner yet), in_progress (runner picked it up), completed; a
    // redelivery of the completion (a new delivery id) counts nothing.
    for (n, action, status, started_at) in [
        (1, "queued", "queued", Some(created)),
        (2, "in_progress", "in_progress", Some(started)),
        (3, "completed", "completed", Some(started)),
        (5, "completed", "completed", Some(started)),
    ] {
        let (h, b) = deliver(n, action, status, started_at, "acme/web");
        assert_eq!(http("POST", &hook, &h, b).await.0, 200);
    }
    let (h, b) = deliver(
        4,
        "in_progress",
        "in_progress",
        Some(started),
        "someone-else/repo",
    );
    assert_eq!(http("POST", &hook, &h, b).await.0, 200);

    let (_, _, m) = http("GET", &format!("{url}/metrics"), &[], Vec::new()).await;
    let qt = "github_actions_workflow_queue_time_seconds";
    assert_eq!(
        histogram_count(&m, qt, "runner_label=\"arc-runner-set\""),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        histogram_sum(&m, qt, "runner_label=\"arc-runner-set\""),
        Some(75.0)
    );
    let deliveries = "github_actions_exporter_webhook_deliveries_total";
    assert_eq!(
        value(&m, deliveries, &[("result", "accepted")]),
        Some(3.0),
        "queued (a job waiting for a runner), in_progress (its queue time), completed (its runner time)"
    );
    assert_eq!(
        value(&m, deliveries, &[("result", "unchanged")]),
        Some(1.0),
        "the completion of a job whose completion was counted"
    );
    // The fake's jobs run 30 s (completed_at = started_at + 30 s).
    let rt = "github_actions_workflow_job_duration_seconds";
    let success = "runner_label=\"arc-runner-set\",runner_group=\"Default\",conclusion=\"success\"";
    assert_eq!(histogram_count(&m, rt, success), Some(1.0), "{m}");
    assert_eq!(histogram_sum(&m, rt, success), Some(30.0));
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_jobs_queued",
            &[("runner_label", "arc-runner-set")]
        ),
        Some(0.0),
        "the job left the queue when a runner took it"
    );
    assert_eq!(
        value(&m, deliveries, &[("result", "ignored")]),
        Some(1.0),
        "repository outside --org"
    );
}

#[tokio::test]
async fn incremental_polls_list_only_runs_since_the_cursor() {
    for ignore_filter in [false, true] {
        let fake = FakeGitHub::start("acme", &[("acme/api", "develop")])
            .await
            .expect("fake starts");
        // 250 runs a minute apart, so most lie well before the cursor's 5-minute overlap.
        let base = Utc::now() - chrono::Duration::hours(5);
        for i in 0..250i64 {
            let id = 1000 + i as u64;
            let c = at(base, i * 60);
            fake.put_attempt(
                "acme/api",
                run(
                    id,
                    1,
                    "Build",
                    "develop",
                    "push",
                    Some("success"),
                    c,
                    c,
                    at(c, 100),
                ),
                vec![job(
                    id * 10,
                    id,
                    1,
                    &["arc-runner-set"],
                    c,
                    Some(at(c, 5)),
                    "success",
                )],
            );
        }
        fake.with(|s| s.ignore_created_filter = ignore_filter);
        let mut cfg = config(&fake, Scope::Repos(vec!["acme/api".into()]));
        cfg.rerun_lookback = Duration::ZERO;
        let exporter = Exporter::new(cfg).expect("exporter builds");
        exporter.poll_once().await.expect("first poll");

        let before = fake.requests().len();
        let c = at(base, 250 * 60);
        fake.put_attempt(
            "acme/api",
            run(
                5000,
                1,
                "Build",
                "develop",
                "push",
                Some("success"),
                c,
                c,
                at(c, 100),
            ),
            vec![job(
                50000,
                5000,
                1,
                &["arc-runner-set"],
                c,
                Some(at(c, 3)),
                "success",
            )],
        );
        let report = exporter.poll_once().await.expect("second poll");
        assert_eq!((report.runs_counted, report.jobs_counted), (1, 1));
        let second: Vec<_> = fake.requests().into_iter().skip(before).collect();
        let listings: Vec<_> = second
            .iter()
            .filter(|r| r.target.contains("/actions/runs?"))
            .collect();
        // One page: the filter (or, on an API ignoring it, the first run older than the cursor) ends the listing.
        assert_eq!(
            listings.len(),
            1,
            "filter ignored: {ignore_filter}: {:?}",
            listings.iter().map(|r| &r.target).collect::<Vec<_>>()
        );
        assert!(listings[0].target.contains("created=%3E%3D"));
        assert_eq!(
            second.iter().filter(|r| r.target.contains("/jobs")).count(),
            1,
            "jobs fetched for the new run only"
        );
        let m = exporter.render(Format::Text);
        assert_eq!(
            value(
                &m,
                "github_actions_workflow_runs_total",
                &[("repo", "acme/api")]
            ),
            Some(251.0)
        );
    }
}

#[tokio::test]
async fn a_run_failing_to_load_does_not_block_its_repository() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let base = Utc::now() - chrono::Duration::hours(1);
    script_first_history(&fake, base);
    // Run 3's jobs answer 502 forever.
    fake.with(|s| {
        s.fail_paths = vec![("/actions/runs/3/attempts/1/jobs".into(), 502)];
    });
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");
    let report = exporter.poll_once().await.expect("poll");
    assert!(
        report.errors.is_empty(),
        "the repository itself polled: {report:?}"
    );
    assert_eq!(report.runs_counted, 2, "runs 1 and 2 counted despite run 3");
    let errors = |m: &str| {
        value(
            m,
            "github_actions_exporter_repo_poll_errors_total",
            &[("repo", "acme/web")],
        )
    };
    let m = exporter.render(Format::Text);
    assert_eq!(errors(&m), Some(1.0));
    // Retried each cycle (its jobs not counted twice meanwhile), then counted without its jobs.
    for _ in 0..2 {
        exporter.poll_once().await.expect("poll");
    }
    let jobs_requests = fake
        .requests()
        .iter()
        .filter(|r| {
            r.target
                .starts_with("/repos/acme/web/actions/runs/1/attempts/1/jobs")
        })
        .count();
    assert_eq!(jobs_requests, 1, "run 1's jobs are read once");
    exporter.render(Format::Text);
    let m = exporter.render(Format::Text);
    assert_eq!(errors(&m), Some(3.0));
    assert_eq!(
        value(
            &m,
            "github_actions_workflow_runs_total",
            &[
                ("repo", "acme/web"),
                ("branch", "main"),
                ("conclusion", "failure")
            ]
        ),
        Some(1.0),
        "run 3 counted after 3 failed cycles"
    );
}

#[tokio::test]
async fn failed_and_removed_repositories_report_nothing_stale() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main"), ("acme/api", "main")])
        .await
        .expect("fake starts");
    let base = Utc::now() - chrono::Duration::hours(1);
    script_first_history(&fake, base);
    // acme/api: three failures on main, and a run in progress.
    for id in 0..3u64 {
        fake.put_attempt(
            "acme/api",
            run(
                700 + id,
                1,
                "CI",
                "main",
                "push",
                Some("failure"),
                at(base, id as i64),
                at(base, id as i64),
                at(base, 100 + id as i64),
            ),
            Vec::new(),
        );
    }
    fake.put_attempt(
        "acme/api",
        run(
            710,
            1,
            "CI",
            "main",
            "push",
            None,
            at(base, 500),
            at(base, 500),
            at(base, 500),
        ),
        Vec::new(),
    );
    fake.with(|s| s.accepted_tokens = vec!["ghp_test".into()]);
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");
    exporter.poll_once().await.expect("poll");
    let m = exporter.render(Format::Text);
    let in_progress = |m: &str, repo: &str| {
        value(
            m,
            "github_actions_workflow_runs_in_progress",
            &[("repo", repo), ("status", "in_progress")],
        )
    };
    assert_eq!(in_progress(&m, "acme/web"), Some(1.0));
    assert_eq!(in_progress(&m, "acme/api"), Some(1.0));
    let last_poll = value(
        &m,
        "github_actions_exporter_last_poll_timestamp_seconds",
        &[],
    );
    let api_success = |m: &str| {
        value(
            m,
            "github_actions_exporter_repo_last_success_timestamp_seconds",
            &[("repo", "acme/api")],
        )
    };
    let api_success_before = api_success(&m);

    // A revoked token: every request is refused. The poll cycle does not count as a poll.
    fake.with(|s| s.accepted_tokens = vec!["another".into()]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(exporter.poll_once().await.is_err(), "the org listing fails");
    let m = exporter.render(Format::Text);
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_last_poll_timestamp_seconds",
            &[]
        ),
        last_poll
    );
    assert_eq!(api_success(&m), api_success_before);
    assert_eq!(
        in_progress(&m, "acme/web"),
        None,
        "unknown, not the last value"
    );
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_repo_poll_errors_total",
            &[("repo", "acme/api")]
        ),
        Some(1.0)
    );

    // Access back, and acme/api archived: it leaves every series, its streak and its counters
    // included (an organisation's churn must not pile up series).
    assert!(m.contains("github_actions_workflow_runs_total{repo=\"acme/api\""));
    fake.with(|s| {
        s.accepted_tokens = vec!["ghp_test".into()];
        if let Some(r) = s.repos.iter_mut().find(|r| r.full_name == "acme/api") {
            r.archived = true;
        }
    });
    exporter.poll_once().await.expect("poll");
    let m = exporter.render(Format::Text);
    assert_eq!(in_progress(&m, "acme/web"), Some(1.0));
    assert!(
        !m.lines()
            .any(|l| !l.starts_with('#') && l.contains("repo=\"acme/api\"")),
        "nothing of acme/api remains:\n{m}"
    );
    assert!(m.contains("github_actions_workflow_runs_total{repo=\"acme/web\""));
}

#[tokio::test]
async fn runner_label_allow_list_folds_other_labels_into_other() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let t = Utc::now() - chrono::Duration::hours(1);
    let labels: [&[&str]; 3] = [
        &["self-hosted", "linux", "gpu"],
        &["self-hosted", "linux", "gpu-typo"],
        &["someones-laptop"],
    ];
    let jobs = labels
        .iter()
        .enumerate()
        .map(|(i, l)| job(800 + i as u64, 80, 1, l, t, Some(at(t, 10)), "success"))
        .collect();
    let done = run(
        80,
        1,
        "CI",
        "main",
        "push",
        Some("success"),
        t,
        t,
        at(t, 60),
    );
    fake.put_attempt("acme/web", done, jobs);
    let exporter = Exporter::new(Config {
        runner_label_allow_list: vec!["gpu".into()],
        ..config(&fake, org())
    })
    .expect("exporter builds");
    exporter.poll_once().await.expect("poll");
    let m = exporter.render(Format::Text);
    let qt = "github_actions_workflow_queue_time_seconds";
    assert_eq!(
        histogram_count(&m, qt, "runner_label=\"gpu\""),
        Some(1.0),
        "{m}"
    );
    assert_eq!(histogram_count(&m, qt, "runner_label=\"other\""), Some(2.0));
    let labels: BTreeSet<&str> = m
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split("runner_label=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(labels, BTreeSet::from(["gpu", "other"]), "{m}");
}

#[tokio::test]
async fn a_failed_poll_keeps_the_queue_as_stale_and_reports_rate_limits_per_resource() {
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let now = Utc::now();
    // An open run whose one job has waited 20 minutes for a GPU runner.
    fake.put_attempt(
        "acme/web",
        run(
            900,
            1,
            "CI",
            "main",
            "push",
            None,
            at(now, -1200),
            at(now, -1200),
            at(now, -1200),
        ),
        vec![fake_github::queued_job(
            9001,
            900,
            1,
            &["gpu"],
            at(now, -1200),
        )],
    );
    fake.with(|s| s.accepted_tokens = vec!["ghp_test".into()]);
    let exporter = Exporter::new(config(&fake, org())).expect("exporter builds");
    exporter.poll_once().await.expect("poll");
    let gpu = [("runner_label", "gpu")];
    let m = exporter.render(Format::Text);
    assert_eq!(
        value(&m, "github_actions_workflow_jobs_queued", &gpu),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "github_actions_workflow_jobs_queued_stale", &gpu),
        Some(0.0)
    );
    let age_before = value(
        &m,
        "github_actions_workflow_oldest_queued_job_age_seconds",
        &gpu,
    )
    .expect("age served");
    assert!(age_before >= 1200.0, "age {age_before}");
    let core = [("resource", "core")];
    let (limit, reset) = fake.with(|s| (s.rate.limit as f64, s.rate.reset as f64));
    assert_eq!(
        value(&m, "github_actions_exporter_rate_limit_limit", &core),
        Some(limit)
    );
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_rate_limit_reset_timestamp_seconds",
            &core
        ),
        Some(reset)
    );
    let cycle = value(
        &m,
        "github_actions_exporter_poll_cycle_duration_seconds",
        &[],
    )
    .expect("cycle duration served");
    assert!(cycle > 0.0 && cycle < 30.0, "cycle {cycle}");

    // A revoked token: the poll fails, and the job is still known to wait (marked stale), its
    // age still growing, so the waiting-jobs alert does not resolve during the outage.
    fake.with(|s| s.accepted_tokens = vec!["another".into()]);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(exporter.poll_once().await.is_err(), "the org listing fails");
    let m = exporter.render(Format::Text);
    assert_eq!(
        value(&m, "github_actions_workflow_jobs_queued", &gpu),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "github_actions_workflow_jobs_queued_stale", &gpu),
        Some(1.0)
    );
    let age_during = value(
        &m,
        "github_actions_workflow_oldest_queued_job_age_seconds",
        &gpu,
    )
    .expect("age served");
    assert!(age_during > age_before, "{age_during} after {age_before}");

    // Access back and the job started: a successful poll replaces the stale queue.
    fake.with(|s| s.accepted_tokens = vec!["ghp_test".into()]);
    fake.put_attempt(
        "acme/web",
        run(
            900,
            1,
            "CI",
            "main",
            "push",
            None,
            at(now, -1200),
            at(now, -1200),
            at(now, 1),
        ),
        vec![arc_hook::exporter::github::Job {
            status: Some("in_progress".into()),
            started_at: Some(now),
            runner_name: Some("runner-9001".into()),
            ..fake_github::queued_job(9001, 900, 1, &["gpu"], at(now, -1200))
        }],
    );
    exporter.poll_once().await.expect("poll");
    let m = exporter.render(Format::Text);
    assert_eq!(
        value(&m, "github_actions_workflow_jobs_queued", &gpu),
        Some(0.0)
    );
    assert_eq!(
        value(&m, "github_actions_workflow_jobs_queued_stale", &gpu),
        Some(0.0)
    );
}

/// The README's worst-case sample count of the workflow families (`github_actions_workflow_*`,
/// the deprecated by-branch counter included) for `r` repositories, `w` workflow files, `b`
/// branch-label values, `e` events, `c` run conclusions, `l` runner-label values, `g` runner-group
/// values, `j` job conclusions and `nq`, `nd`, `nj` bucket bounds of the queue-time, run-duration
/// and runner-time histograms.
#[allow(clippy::too_many_arguments)]
fn worst_case(
    r: u64,
    w: u64,
    b: u64,
    e: u64,
    c: u64,
    l: u64,
    g: u64,
    j: u64,
    nq: u64,
    nd: u64,
    nj: u64,
) -> u64 {
    r * w * b * e * c // workflow_runs_total
        + r * b * c // workflow_runs_by_branch_total
        + (nd + 3) * r * w * c // workflow_duration_seconds: buckets, +Inf, _sum, _count
        + (nq + 3) * l + 3 * l // queue time; jobs_queued, jobs_queued_stale, oldest age
        + (nj + 3) * l * g * j // workflow_job_duration_seconds
        + r * w // workflow_consecutive_failures
        + 5 * r // workflow_runs_in_progress
}

#[tokio::test]
async fn every_combination_of_a_small_configuration_reaches_the_readme_worst_case_exactly() {
    // Two organisations; acme/old is excluded by name, beta/docs by topic, acme/tool is not
    // included: two repositories are watched.
    let fake = FakeGitHub::start(
        "acme",
        &[
            ("acme/web", "main"),
            ("acme/old", "main"),
            ("acme/tool", "main"),
            ("beta/api", "main"),
            ("beta/docs", "main"),
        ],
    )
    .await
    .expect("fake starts");
    fake.with(|s| {
        for r in &mut s.repos {
            r.topics = match r.full_name.as_str() {
                "beta/docs" => vec!["ci".into(), "deprecated".into()],
                "acme/tool" => vec!["tools".into()],
                _ => vec!["ci".into()],
            };
        }
    });
    let base = Utc::now() - chrono::Duration::hours(3);
    let mut id = 0;
    let all = ["acme/web", "acme/old", "acme/tool", "beta/api", "beta/docs"];
    for repo in all {
        let mut k = 0;
        for workflow in ["CI", "Lint"] {
            for branch in [Some("main"), Some("feature/x"), None] {
                for event in ["push", "schedule"] {
                    for conclusion in ["success", "failure"] {
                        id += 1;
                        let t = at(base, id as i64 * 60);
                        let mut r = run(
                            id,
                            1,
                            workflow,
                            branch.unwrap_or(""),
                            event,
                            Some(conclusion),
                            t,
                            t,
                            at(t, 30),
                        );
                        r.head_branch = branch.map(String::from);
                        // Every runner label x runner group x job conclusion, over 12 runs.
                        let labels: &[&str] = [GPU, &["self-hosted", "a-typo"]][k % 2];
                        let mut j = job(
                            id * 10,
                            id,
                            1,
                            labels,
                            t,
                            Some(at(t, 5)),
                            ["success", "failure"][(k / 6) % 2],
                        );
                        j.runner_group_name = [Some("gpu-pool"), Some("Default"), None]
                            [(k / 2) % 3]
                            .map(String::from);
                        fake.put_attempt(repo, r, vec![j]);
                        k += 1;
                    }
                }
            }
        }
        // One open run in each status, one of its jobs waiting for a runner.
        for status in ["queued", "in_progress", "waiting", "requested", "pending"] {
            id += 1;
            let t = at(Utc::now(), -600);
            let mut r = run(id, 1, "CI", "main", "push", None, t, t, t);
            r.status = Some(status.into());
            let waiting = fake_github::queued_job(id * 10, id, 1, GPU, t);
            fake.put_attempt(repo, r, vec![waiting]);
        }
    }
    let buckets = |s: &str| arc_hook::exporter::metrics::parse_buckets(s).expect("buckets");
    let exporter = Exporter::new(Config {
        scope: Scope::Orgs(vec!["acme".into(), "beta".into()]),
        repo_filter: RepoFilter::new(
            Some("acme/(web|old)|beta/.*"),
            Some("acme/old"),
            vec!["ci".into()],
            vec!["deprecated".into()],
        )
        .expect("patterns"),
        branch_allow_list: vec!["main".into()],
        runner_label_allow_list: vec!["gpu".into()],
        runner_group_allow_list: vec!["gpu-pool".into()],
        buckets: Buckets {
            queue_time: buckets("60,300"),
            duration: buckets("600"),
            job_duration: buckets("60,600,3600"),
        },
        ..config(&fake, org())
    })
    .expect("exporter builds");
    let report = exporter.poll_once().await.expect("poll");
    assert_eq!(report.repos, 2, "{report:?}");
    let url = serve(&exporter).await;

    // A delivery for an excluded repository is ignored, as polling ignores it.
    let mut event =
        serde_json::from_slice::<serde_json::Value>(&job_event(1, 1, 1, base, at(base, 5)))
            .expect("event");
    event["repository"]["full_name"] = "acme/old".into();
    let body = event.to_string().into_bytes();
    let headers = [
        ("x-github-event", "workflow_job".to_string()),
        ("x-hub-signature-256", sign(SECRET, &body)),
    ];
    let (status, _, _) = http("POST", &format!("{url}/webhook"), &headers, body).await;
    assert_eq!(status, 200);

    let (_, _, m) = http("GET", &format!("{url}/metrics"), &[], Vec::new()).await;
    assert_eq!(
        value(
            &m,
            "github_actions_exporter_webhook_deliveries_total",
            &[("result", "ignored")]
        ),
        Some(1.0)
    );
    for gone in ["acme/old", "acme/tool", "beta/docs"] {
        assert!(
            !m.contains(&format!("\"{gone}\"")),
            "{gone} is not watched:\n{m}"
        );
    }
    let samples = m
        .lines()
        .filter(|l| l.starts_with("github_actions_workflow_"))
        .count() as u64;
    // R=2, W=2, B=3 (main, other, none), E=2, C=2, L=2 (gpu, other), G=3 (gpu-pool, other,
    // none), J=2, and 2, 1 and 3 bucket bounds.
    assert_eq!(samples, worst_case(2, 2, 3, 2, 2, 2, 3, 2, 2, 1, 3), "{m}");
    assert_eq!(samples, 194);
    assert!(m.contains("runner_group=\"other\""));
    assert!(
        m.contains(
            "github_actions_workflow_duration_seconds_bucket{repo=\"beta/api\",workflow_path=\".github/workflows/ci.yml\",workflow=\"CI\",conclusion=\"success\",le=\"600.0\"} 6\n"
        ),
        "{m}"
    );
}
