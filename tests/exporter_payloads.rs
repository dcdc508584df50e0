//! Real GitHub payloads: every `workflow_job`/`workflow_run` example of the npm package
//! `@octokit/webhooks-examples` fed to the webhook handler, and the fake GitHub's answers checked
//! against GitHub's OpenAPI description (`@octokit/openapi`). `.ci/run` installs both into
//! target/test-data/ (never committed).
mod fake_github;
#[path = "common/prerequisite.rs"]
mod prerequisite;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_hook::exporter::collect::Scope;
use arc_hook::exporter::ledger::{BranchPolicy, Ledger};
use arc_hook::exporter::metrics::{Format, SelfStats};
use arc_hook::exporter::webhook::{Webhook, sign};
use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use chrono::Utc;
use fake_github::{FakeGitHub, job, queued_job, run};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

const SECRET: &[u8] = b"payload-secret";

/// The installed npm package `name`, or `None` (as `prerequisite::require` says).
fn test_data(name: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-data/node_modules")
        .join(name);
    let hint = "install it with: npm install --prefix target/test-data @octokit/webhooks-examples@7.6.1 @octokit/openapi@23.0.2 (.ci/run does)";
    prerequisite::require(
        dir.join("package.json").exists(),
        &format!("the test data {name}; {hint}"),
    )
    .then_some(dir)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

#[test]
fn every_octokit_workflow_example_is_understood_by_the_webhook() {
    let Some(dir) = test_data("@octokit/webhooks-examples") else {
        return;
    };
    let index = read_json(&dir.join("api.github.com/index.json"));
    let mut deliveries: Vec<(String, Value)> = Vec::new();
    for event in index.as_array().into_iter().flatten() {
        let name = event["name"].as_str().unwrap_or("");
        if name == "workflow_job" || name == "workflow_run" {
            for example in event["examples"].as_array().into_iter().flatten() {
                deliveries.push((name.to_string(), example.clone()));
            }
        }
    }
    let count = |n: &str| deliveries.iter().filter(|(e, _)| e == n).count();
    assert!(
        count("workflow_job") >= 5 && count("workflow_run") >= 3,
        "examples found: {} workflow_job, {} workflow_run",
        count("workflow_job"),
        count("workflow_run")
    );
    let repos: BTreeSet<String> = deliveries
        .iter()
        .filter_map(|(_, p)| p["repository"]["full_name"].as_str().map(str::to_string))
        .collect();
    // The examples are years old: a window that reaches them.
    let ledger = Arc::new(Mutex::new(Ledger::new(
        chrono::Duration::days(365 * 30),
        BranchPolicy::default(),
    )));
    let stats = Arc::new(Mutex::new(SelfStats::default()));
    let hook = Webhook::new(
        SECRET,
        Scope::Repos(repos.into_iter().collect()),
        ledger.clone(),
        stats.clone(),
    );
    for (i, (event, payload)) in deliveries.iter().enumerate() {
        let body = payload.to_string().into_bytes();
        let mut headers = HeaderMap::new();
        let hv = |s: &str| HeaderValue::from_str(s).expect("header value");
        headers.insert("x-github-event", hv(event));
        headers.insert("x-github-delivery", hv(&format!("example-{i}")));
        headers.insert("x-hub-signature-256", hv(&sign(SECRET, &body)));
        let (status, text) = hook.handle(&headers, &body);
        assert_eq!(
            status.as_u16(),
            200,
            "{event} example {i} ({}): {text}",
            payload["action"]
        );
    }
    let deliveries_by_result = stats
        .lock()
        .map(|s| s.webhook_deliveries.clone())
        .unwrap_or_default();
    assert_eq!(
        deliveries_by_result.get("invalid"),
        None,
        "{deliveries_by_result:?}"
    );

    let metrics = ledger
        .lock()
        .map(|l| l.metrics(Utc::now()))
        .expect("ledger lock");
    let text = metrics.encode(&SelfStats::default(), Format::Text);
    assert!(
        !text.contains("workflow=\"\""),
        "a run without a name is named by its workflow:\n{text}"
    );
    // The completed run whose `name` is empty is named by the payload's workflow object and path.
    assert!(
        text.lines()
            .any(|l| l.starts_with("github_actions_workflow_runs_total{")
                && l.contains("workflow_path=\".github/workflows/test.yml\"")
                && !l.contains("workflow=\"unknown\"")),
        "{text}"
    );
    // The `queued` job examples are waiting for a runner; the `waiting` ones await an approval.
    assert!(
        text.contains("github_actions_workflow_jobs_queued{runner_label=\"ubuntu-latest\"} 1.0\n"),
        "{text}"
    );
    assert!(
        text.lines().any(
            |l| l.starts_with("github_actions_workflow_queue_time_seconds_count{")
                && !l.ends_with(" 0")
        ),
        "jobs that started have a queue time:\n{text}"
    );
    // Runner time: job 289782451 ran 10:34:58 to 10:38:16 on ubuntu-latest. Its two `completed`
    // examples (failure, then success) are one job attempt, counted once; the in-progress and
    // queued deliveries of the same job, in between or after, change nothing.
    for (line, want) in [
        (
            "github_actions_workflow_job_duration_seconds_count{runner_label=\"ubuntu-latest\",runner_group=\"GitHub Actions\",conclusion=\"failure\"} ",
            "1",
        ),
        (
            "github_actions_workflow_job_duration_seconds_sum{runner_label=\"ubuntu-latest\",runner_group=\"GitHub Actions\",conclusion=\"failure\"} ",
            "198.0",
        ),
        (
            "github_actions_workflow_job_duration_seconds_bucket{runner_label=\"ubuntu-latest\",runner_group=\"GitHub Actions\",conclusion=\"failure\",le=\"120.0\"} ",
            "0",
        ),
        (
            "github_actions_workflow_job_duration_seconds_bucket{runner_label=\"ubuntu-latest\",runner_group=\"GitHub Actions\",conclusion=\"failure\",le=\"300.0\"} ",
            "1",
        ),
    ] {
        assert!(
            text.contains(&format!("{line}{want}\n")),
            "{line}{want}:\n{text}"
        );
    }
    assert!(
        !text.contains("github_actions_workflow_job_duration_seconds_count{runner_label=\"ubuntu-latest\",runner_group=\"GitHub Actions\",conclusion=\"success\"}"),
        "a job attempt's runner time is counted once:\n{text}"
    );
}

/// The OpenAPI 3.0 description with `$ref`s resolved on the way.
struct Spec(Value);

impl Spec {
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        while let Some(r) = s["$ref"].as_str() {
            let pointer = r.trim_start_matches('#');
            s = self.0.pointer(pointer).unwrap_or(&Value::Null);
        }
        s
    }

    /// The schema of the JSON answer of `GET`/`POST path` with status `code`.
    fn response(&self, method: &str, path: &str, code: &str) -> &Value {
        let op = &self.0["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not in the description");
        self.resolve(&op["responses"][code]["content"]["application/json"]["schema"])
    }

    /// Problems of `value` against `schema`: fields the schema does not declare, wrong types, values
    /// outside an enum, malformed date-times, `null` where not nullable.
    fn check(&self, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(all) = schema["allOf"].as_array() {
            for s in all {
                self.check(s, value, at, problems);
            }
            return;
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(any) = schema[key].as_array() {
                let fits = any.iter().any(|s| {
                    let mut p = Vec::new();
                    self.check(s, value, at, &mut p);
                    p.is_empty()
                });
                let null_allowed = value.is_null() && schema["nullable"] == true;
                if !(fits || null_allowed) {
                    problems.push(format!("{at}: {value} fits none of {key}"));
                }
                return;
            }
        }
        if value.is_null() {
            if schema["nullable"] != true && schema.get("type").is_some() {
                problems.push(format!("{at}: null, but the schema is not nullable"));
            }
            return;
        }
        match schema["type"].as_str() {
            Some("object") => {
                let Some(obj) = value.as_object() else {
                    return problems.push(format!("{at}: {value} is not an object"));
                };
                let props = &schema["properties"];
                for (k, v) in obj {
                    match props.get(k) {
                        Some(p) => self.check(p, v, &format!("{at}.{k}"), problems),
                        None if schema.get("additionalProperties").is_some() => {}
                        None if props.is_object() => {
                            problems.push(format!("{at}.{k}: not a field of GitHub's schema"))
                        }
                        None => {}
                    }
                }
            }
            Some("array") => match value.as_array() {
                Some(items) => {
                    for (i, v) in items.iter().enumerate() {
                        self.check(&schema["items"], v, &format!("{at}[{i}]"), problems);
                    }
                }
                None => problems.push(format!("{at}: {value} is not an array")),
            },
            Some("string") => match value.as_str() {
                Some(s) => {
                    if let Some(allowed) = schema["enum"].as_array() {
                        if !allowed.iter().any(|a| a == s) {
                            problems.push(format!("{at}: {s:?} is not one of {allowed:?}"));
                        }
                    }
                    if schema["format"] == "date-time"
                        && chrono::DateTime::parse_from_rfc3339(s).is_err()
                    {
                        problems.push(format!("{at}: {s:?} is not a date-time"));
                    }
                }
                None => problems.push(format!("{at}: {value} is not a string")),
            },
            Some("integer") if !(value.is_i64() || value.is_u64()) => {
                problems.push(format!("{at}: {value} is not an integer"))
            }
            Some("number") if !value.is_number() => {
                problems.push(format!("{at}: {value} is not a number"))
            }
            Some("boolean") if !value.is_boolean() => {
                problems.push(format!("{at}: {value} is not a boolean"))
            }
            _ => {}
        }
    }

    /// Fields of `item` the exporter reads that GitHub's schema requires but the fake left out.
    fn missing_required(
        &self,
        schema: &Value,
        item: &Value,
        reads: &[&str],
        at: &str,
    ) -> Vec<String> {
        let schema = self.resolve(schema);
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        reads
            .iter()
            .filter(|f| required.contains(*f) && item.get(**f).is_none())
            .map(|f| format!("{at}.{f}: required by GitHub, read by the exporter, not served"))
            .collect()
    }
}

async fn get(url: &str) -> Value {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = http::Request::get(url)
        .header("authorization", "Bearer ghp_schema")
        .body(Empty::new())
        .expect("request");
    let resp = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(req))
        .await
        .expect("answer within 10s")
        .expect("request succeeds");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("JSON answer")
}

/// Fields the exporter reads (src/exporter/github.rs).
const RUN_READS: &[&str] = &[
    "id",
    "name",
    "head_branch",
    "event",
    "status",
    "conclusion",
    "run_attempt",
    "created_at",
    "updated_at",
    "run_started_at",
    "path",
];
const JOB_READS: &[&str] = &[
    "id",
    "run_id",
    "run_attempt",
    "status",
    "conclusion",
    "created_at",
    "started_at",
    "completed_at",
    "labels",
    "runner_name",
];
const REPO_READS: &[&str] = &["full_name", "default_branch", "archived"];

/// One answer to check: what, its URL on the fake, its schema, and (list field, fields read).
type Check<'a> = (&'a str, String, Value, Option<(&'a str, &'a [&'a str])>);

#[tokio::test]
async fn fake_github_answers_fit_the_openapi_description() {
    let Some(dir) = test_data("@octokit/openapi") else {
        return;
    };
    let spec = Spec(read_json(&dir.join("generated/api.github.com.json")));
    let fake = FakeGitHub::start("acme", &[("acme/web", "main")])
        .await
        .expect("fake starts");
    let t = Utc::now() - chrono::Duration::hours(1);
    let s = |n| t + chrono::Duration::seconds(n);
    fake.put_attempt(
        "acme/web",
        run(1, 1, "CI", "main", "push", Some("failure"), t, s(5), s(300)),
        vec![
            job(11, 1, 1, &["self-hosted", "gpu"], t, Some(s(30)), "failure"),
            job(12, 1, 1, &["gpu"], t, None, "skipped"),
        ],
    );
    fake.put_attempt(
        "acme/web",
        run(
            1,
            2,
            "CI",
            "main",
            "push",
            Some("success"),
            t,
            s(400),
            s(700),
        ),
        vec![job(13, 1, 2, &["gpu"], s(400), Some(s(420)), "success")],
    );
    fake.put_attempt(
        "acme/web",
        run(2, 1, "Deploy", "main", "push", None, s(800), s(800), s(800)),
        vec![queued_job(21, 2, 1, &["gpu"], s(800))],
    );
    let base = fake.url();
    let checks: Vec<Check> = vec![
        (
            "/repos/{owner}/{repo}/actions/runs",
            format!("{base}/repos/acme/web/actions/runs?per_page=100"),
            spec.response("get", "/repos/{owner}/{repo}/actions/runs", "200")
                .clone(),
            Some(("workflow_runs", RUN_READS)),
        ),
        (
            "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}",
            format!("{base}/repos/acme/web/actions/runs/1/attempts/1"),
            spec.response(
                "get",
                "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}",
                "200",
            )
            .clone(),
            Some(("", RUN_READS)),
        ),
        (
            "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs",
            format!("{base}/repos/acme/web/actions/runs/1/attempts/1/jobs?per_page=100"),
            spec.response(
                "get",
                "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs",
                "200",
            )
            .clone(),
            Some(("jobs", JOB_READS)),
        ),
        (
            "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs (queued)",
            format!("{base}/repos/acme/web/actions/runs/2/attempts/1/jobs?per_page=100"),
            spec.response(
                "get",
                "/repos/{owner}/{repo}/actions/runs/{run_id}/attempts/{attempt_number}/jobs",
                "200",
            )
            .clone(),
            Some(("jobs", JOB_READS)),
        ),
        (
            "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
            format!("{base}/repos/acme/web/actions/runs/1/jobs?filter=all"),
            spec.response(
                "get",
                "/repos/{owner}/{repo}/actions/runs/{run_id}/jobs",
                "200",
            )
            .clone(),
            Some(("jobs", JOB_READS)),
        ),
        (
            "/orgs/{org}/repos",
            format!("{base}/orgs/acme/repos?per_page=100"),
            spec.response("get", "/orgs/{org}/repos", "200").clone(),
            None,
        ),
        (
            "/repos/{owner}/{repo}",
            format!("{base}/repos/acme/web"),
            spec.response("get", "/repos/{owner}/{repo}", "200").clone(),
            Some(("", REPO_READS)),
        ),
    ];
    let mut problems = Vec::new();
    for (what, url, schema, reads) in &checks {
        let answer = get(url).await;
        spec.check(schema, &answer, what, &mut problems);
        if let Some((field, reads)) = reads {
            let (items, item_schema): (Vec<&Value>, &Value) = if field.is_empty() {
                (vec![&answer], schema)
            } else {
                (
                    answer[*field].as_array().into_iter().flatten().collect(),
                    spec.resolve(&schema["properties"][*field]["items"]),
                )
            };
            assert!(!items.is_empty(), "{what}: nothing served");
            for item in items {
                problems.extend(spec.missing_required(item_schema, item, reads, what));
            }
        }
    }
    // The exporter's fields are GitHub's: each one it reads is declared in the schema.
    for (schema, reads) in [
        ("workflow-run", RUN_READS),
        ("job", JOB_READS),
        ("full-repository", REPO_READS),
    ] {
        for f in reads.iter() {
            if spec.0["components"]["schemas"][schema]["properties"]
                .get(*f)
                .is_none()
            {
                problems.push(format!(
                    "{schema}.{f}: read by the exporter, not in GitHub's schema"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
