//! A fake GitHub REST API (runs, jobs, repos, App tokens) with pagination, ETags and rate limits, for the exporter's tests and benches.
// Each test binary (and benches/exporter.rs) includes this module and uses only part of it.
#![allow(dead_code)]
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash as _, Hasher as _};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use arc_hook::exporter::collect::Scope;
use arc_hook::exporter::github::{ClientOptions, Credentials, Job, WorkflowRun};
use arc_hook::exporter::{Config, Exporter};

/// One repository's history as the fake serves it.
#[derive(Debug, Clone, Default)]
pub struct FakeRepo {
    pub full_name: String,
    pub default_branch: String,
    pub archived: bool,
    pub topics: Vec<String>,
    /// Latest attempt of each run, by run id.
    pub runs: BTreeMap<u64, WorkflowRun>,
    /// Every attempt, by (run id, attempt).
    pub attempts: BTreeMap<(u64, u32), WorkflowRun>,
    /// Jobs of each attempt.
    pub jobs: BTreeMap<(u64, u32), Vec<Job>>,
}

/// A failure to inject into the next API response.
#[derive(Debug, Clone, PartialEq)]
pub enum Inject {
    /// 403 with `retry-after` (GitHub's secondary rate limit).
    SecondaryLimit { retry_after: u64 },
    /// 429 with `retry-after`.
    TooManyRequests { retry_after: u64 },
    /// Another client sharing the token spends the whole budget before this request: it gets
    /// GitHub's 403 "API rate limit exceeded" with `x-ratelimit-remaining: 0` until the reset.
    BudgetSpentElsewhere,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub if_none_match: Option<String>,
    pub authorization: Option<String>,
    pub at: DateTime<Utc>,
    pub status: u16,
}

/// The primary rate limit the fake enforces.
#[derive(Debug, Clone)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    /// Unix seconds.
    pub reset: i64,
}

/// The fake's whole state; tests edit it through [`FakeGitHub::with`].
#[derive(Debug)]
pub struct FakeState {
    pub org: String,
    pub repos: Vec<FakeRepo>,
    pub rate: RateLimit,
    pub inject: VecDeque<Inject>,
    pub requests: Vec<Recorded>,
    /// When set, requests must carry `Authorization: Bearer <one of these>`.
    pub accepted_tokens: Vec<String>,
    /// GitHub App: (app id, installation id, SPKI-less RSA public key DER from ring) to verify JWTs.
    pub app: Option<(String, u64, Vec<u8>)>,
    /// Tokens the App endpoint issued.
    pub issued_tokens: u32,
    /// Lifetime of issued installation tokens.
    pub token_lifetime: Duration,
    /// Serve run listings unfiltered, like an API that does not support `created`.
    pub ignore_created_filter: bool,
    /// Requests whose path contains the first part get the status in the second (e.g. a permanent
    /// 502 on one run's jobs).
    pub fail_paths: Vec<(String, u16)>,
}

/// A running fake on 127.0.0.1.
pub struct FakeGitHub {
    state: Arc<Mutex<FakeState>>,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeGitHub {
    /// Starts a fake for organisation `org` with repositories `(full_name, default_branch)`.
    pub async fn start(org: &str, repos: &[(&str, &str)]) -> std::io::Result<FakeGitHub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(FakeState {
            org: org.to_string(),
            repos: repos
                .iter()
                .map(|(n, b)| FakeRepo {
                    full_name: n.to_string(),
                    default_branch: b.to_string(),
                    ..FakeRepo::default()
                })
                .collect(),
            rate: RateLimit {
                limit: 5000,
                remaining: 5000,
                reset: Utc::now().timestamp() + 3600,
            },
            inject: VecDeque::new(),
            requests: Vec::new(),
            accepted_tokens: Vec::new(),
            app: None,
            issued_tokens: 0,
            token_lifetime: Duration::hours(1),
            ignore_created_filter: false,
            fail_paths: Vec::new(),
        }));
        let app = Router::new()
            .fallback(serve)
            .with_state((state.clone(), addr));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "fake GitHub stopped");
            }
        });
        Ok(FakeGitHub {
            state,
            addr,
            server,
        })
    }

    /// Base URL to pass as `--api-url`.
    /// The exporter's configuration against this fake: `scope`, a token, a 24-hour window,
    /// no allow lists, state file or webhook, one request at a time, no rate-limit reserve.
    /// Tests change what they test with `Config { field, ..fake.exporter_config(scope) }`.
    pub fn exporter_config(&self, scope: Scope) -> Config {
        Config {
            api_url: self.url(),
            scope,
            credentials: Credentials::Token("ghp_test".into()),
            window: std::time::Duration::from_secs(24 * 3600),
            branch_allow_list: Vec::new(),
            runner_label_allow_list: Vec::new(),
            runner_group_allow_list: Vec::new(),
            repo_filter: arc_hook::exporter::collect::RepoFilter::default(),
            buckets: arc_hook::exporter::metrics::Buckets::default(),
            state_file: None,
            webhook_secret: None,
            client: ClientOptions {
                rate_limit_reserve: 0,
                ..ClientOptions::default()
            },
            concurrency: 1,
            rerun_lookback: std::time::Duration::from_secs(3600),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs `f` on the state under the lock.
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|s| s.requests.clone())
    }

    /// Adds or updates one attempt of a run and its jobs; the highest attempt is the run's current state.
    pub fn put_attempt(&self, repo: &str, run: WorkflowRun, jobs: Vec<Job>) {
        self.with(|s| {
            let Some(r) = s.repos.iter_mut().find(|r| r.full_name == repo) else {
                return;
            };
            let latest = r.runs.get(&run.id).map(|x| x.run_attempt).unwrap_or(0);
            if run.run_attempt >= latest {
                r.runs.insert(run.id, run.clone());
            }
            r.jobs.insert((run.id, run.run_attempt), jobs);
            r.attempts.insert((run.id, run.run_attempt), run);
        })
    }
}

/// A workflow run attempt with the fields the exporter reads.
#[allow(clippy::too_many_arguments)]
pub fn run(
    id: u64,
    attempt: u32,
    workflow: &str,
    branch: &str,
    event: &str,
    conclusion: Option<&str>,
    created_at: DateTime<Utc>,
    started_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> WorkflowRun {
    WorkflowRun {
        id,
        path: Some(workflow_file(workflow)),
        name: Some(workflow.into()),
        head_branch: Some(branch.into()),
        event: event.into(),
        status: Some(
            if conclusion.is_some() {
                "completed"
            } else {
                "in_progress"
            }
            .into(),
        ),
        conclusion: conclusion.map(str::to_string),
        run_attempt: attempt,
        created_at,
        updated_at,
        run_started_at: Some(started_at),
    }
}

/// The workflow file the fake gives a workflow name: `.github/workflows/<name, lower-case, dashed>.yml`.
pub fn workflow_file(workflow: &str) -> String {
    let slug: String = workflow
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(".github/workflows/{slug}.yml")
}

/// A job of an open run still waiting for a runner (status `queued`, no runner, not started).
pub fn queued_job(
    id: u64,
    run_id: u64,
    attempt: u32,
    labels: &[&str],
    created_at: DateTime<Utc>,
) -> Job {
    Job {
        id,
        run_id,
        run_attempt: attempt,
        status: Some("queued".into()),
        conclusion: None,
        created_at: Some(created_at),
        started_at: None,
        completed_at: None,
        labels: labels.iter().map(|l| l.to_string()).collect(),
        runner_name: None,
        runner_group_name: None,
    }
}

/// A job; `started_at: None` with conclusion `skipped` is how GitHub reports a skipped job.
pub fn job(
    id: u64,
    run_id: u64,
    attempt: u32,
    labels: &[&str],
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    conclusion: &str,
) -> Job {
    let ran = started_at.is_some() && conclusion != "skipped";
    Job {
        id,
        run_id,
        run_attempt: attempt,
        status: Some("completed".into()),
        conclusion: Some(conclusion.into()),
        created_at: Some(created_at),
        started_at,
        completed_at: started_at.map(|s| s + Duration::seconds(30)),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        runner_name: ran.then(|| format!("runner-{id}")),
        runner_group_name: ran.then(|| "Default".into()),
    }
}

fn ts(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The run as GitHub's "List workflow runs for a repository" documents it.
pub fn run_json(base: &str, repo: &FakeRepo, r: &WorkflowRun) -> Value {
    let full = &repo.full_name;
    let (owner, name) = full.split_once('/').unwrap_or((full, full));
    json!({
        "id": r.id,
        "name": r.name,
        "node_id": format!("WFR_{}", r.id),
        "head_branch": r.head_branch,
        "head_sha": format!("{:040x}", r.id),
        "path": r.path.as_deref().unwrap_or(".github/workflows/ci.yml"),
        "display_title": r.name,
        "run_number": r.id,
        "event": r.event,
        "status": r.status,
        "conclusion": r.conclusion,
        "workflow_id": 161335,
        "check_suite_id": r.id * 10,
        "url": format!("{base}/repos/{full}/actions/runs/{}", r.id),
        "html_url": format!("https://github.com/{full}/actions/runs/{}", r.id),
        "pull_requests": [],
        "created_at": ts(&r.created_at),
        "updated_at": ts(&r.updated_at),
        "actor": {"login": "octocat", "id": 1, "type": "User"},
        "run_attempt": r.run_attempt,
        "run_started_at": r.run_started_at.as_ref().map(ts),
        "jobs_url": format!("{base}/repos/{full}/actions/runs/{}/jobs", r.id),
        "previous_attempt_url": (r.run_attempt > 1).then(|| format!("{base}/repos/{full}/actions/runs/{}/attempts/{}", r.id, r.run_attempt - 1)),
        "repository": {"id": 1296269, "name": name, "full_name": full, "owner": {"login": owner}},
        "head_repository": {"id": 1296269, "name": name, "full_name": full},
    })
}

/// The job as GitHub's "List jobs for a workflow run" documents it.
pub fn job_json(base: &str, full: &str, j: &Job) -> Value {
    json!({
        "id": j.id,
        "run_id": j.run_id,
        "run_url": format!("{base}/repos/{full}/actions/runs/{}", j.run_id),
        "node_id": format!("CR_{}", j.id),
        "head_sha": format!("{:040x}", j.run_id),
        "url": format!("{base}/repos/{full}/actions/jobs/{}", j.id),
        "html_url": format!("https://github.com/{full}/actions/runs/{}/job/{}", j.run_id, j.id),
        "status": j.status,
        "conclusion": j.conclusion,
        "created_at": ts(&j.created_at.unwrap_or_else(Utc::now)),
        // GitHub's schema has no null here: a job not started yet (or skipped) says when it was queued.
        "started_at": ts(&j.started_at.or(j.created_at).unwrap_or_else(Utc::now)),
        "completed_at": j.completed_at.as_ref().map(ts),
        "name": format!("job-{}", j.id),
        "steps": [],
        "check_run_url": format!("{base}/repos/{full}/check-runs/{}", j.id),
        "labels": j.labels,
        "runner_id": j.runner_name.as_ref().map(|_| j.id),
        "runner_name": j.runner_name,
        "runner_group_id": j.runner_group_name.as_ref().map(|_| 1),
        "runner_group_name": j.runner_group_name,
        "run_attempt": j.run_attempt,
        "workflow_name": "CI",
        "head_branch": "main",
    })
}

fn repo_json(r: &FakeRepo) -> Value {
    let (owner, name) = r
        .full_name
        .split_once('/')
        .unwrap_or((&r.full_name, &r.full_name));
    json!({
        "id": 1296269,
        "name": name,
        "full_name": r.full_name,
        "owner": {"login": owner},
        "private": false,
        "default_branch": r.default_branch,
        "archived": r.archived,
        "topics": r.topics,
    })
}

type Shared = (Arc<Mutex<FakeState>>, SocketAddr);

async fn serve(
    State((state, addr)): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let base = format!("http://{addr}");
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut rec = Recorded {
        method: method.to_string(),
        target: uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        if_none_match: header("if-none-match"),
        authorization: header("authorization"),
        at: Utc::now(),
        status: 0,
    };
    let resp = answer(&mut s, &base, &method, &uri, &rec, &query);
    rec.status = resp.status().as_u16();
    s.requests.push(rec);
    resp
}

fn answer(
    s: &mut FakeState,
    base: &str,
    method: &Method,
    uri: &Uri,
    rec: &Recorded,
    query: &HashMap<String, String>,
) -> Response {
    let now = Utc::now().timestamp();
    if now >= s.rate.reset {
        s.rate.remaining = s.rate.limit;
        s.rate.reset = now + 3600;
    }
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();

    if method == Method::POST {
        if let ["app", "installations", id, "access_tokens"] = segs.as_slice() {
            return app_token(s, id, rec.authorization.as_deref());
        }
        return not_found(s);
    }
    if !s.accepted_tokens.is_empty() {
        let ok = rec
            .authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| s.accepted_tokens.iter().any(|x| x == t));
        if !ok {
            return error(s, StatusCode::UNAUTHORIZED, "Bad credentials", &[]);
        }
    }
    if let Some((_, status)) = s
        .fail_paths
        .iter()
        .find(|(p, _)| uri.path().contains(p.as_str()))
    {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
        return error(s, status, "Server Error", &[]);
    }
    let secondary =
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";
    match s.inject.pop_front() {
        Some(Inject::BudgetSpentElsewhere) => s.rate.remaining = 0,
        Some(Inject::SecondaryLimit { retry_after }) => {
            return error(
                s,
                StatusCode::FORBIDDEN,
                secondary,
                &[("retry-after", retry_after.to_string())],
            );
        }
        Some(Inject::TooManyRequests { retry_after }) => {
            return error(
                s,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                &[("retry-after", retry_after.to_string())],
            );
        }
        None => {}
    }
    if s.rate.remaining == 0 {
        return error(
            s,
            StatusCode::FORBIDDEN,
            "API rate limit exceeded for user ID 1.",
            &[],
        );
    }

    let paging = Paging::of(base, uri, query);
    let Ok((body, link)) = route(s, &segs, query, &paging) else {
        return not_found(s);
    };

    let text = body.to_string();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let etag = format!("W/\"{:016x}\"", h.finish());
    let not_modified = rec.if_none_match.as_deref() == Some(etag.as_str());
    if !not_modified {
        // GitHub does not charge a 304 to the rate limit.
        s.rate.remaining = s.rate.remaining.saturating_sub(1);
    }
    let mut headers = rate_headers(s);
    headers.insert("etag", hv(&etag));
    if let Some(l) = link {
        headers.insert("link", hv(&l));
    }
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    (StatusCode::OK, headers, text).into_response()
}

/// A GET for something the fake does not have.
struct NotFound;

/// The body and `Link` header of a GET the fake serves.
fn route(
    s: &FakeState,
    segs: &[&str],
    query: &HashMap<String, String>,
    paging: &Paging<'_>,
) -> Result<(Value, Option<String>), NotFound> {
    let base = paging.base;
    let repo = |o: &str, r: &str| {
        s.repos
            .iter()
            .find(|x| x.full_name == format!("{o}/{r}"))
            .ok_or(NotFound)
    };
    Ok(match segs {
        // The fake's first organisation, and any other that owns one of its repositories.
        ["orgs", org, "repos"]
            if *org == s.org
                || s.repos
                    .iter()
                    .any(|r| r.full_name.starts_with(&format!("{org}/"))) =>
        {
            let owned = |r: &&FakeRepo| r.full_name.starts_with(&format!("{org}/"));
            paging.array(s.repos.iter().filter(owned).map(repo_json).collect())
        }
        ["repos", o, r] => (repo_json(repo(o, r)?), None),
        ["repos", o, r, "actions", "runs"] => {
            let repo = repo(o, r)?;
            let since = query
                .get("created")
                .filter(|_| !s.ignore_created_filter)
                .and_then(|c| c.strip_prefix(">="))
                .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
                .map(|d| d.with_timezone(&Utc));
            let mut runs: Vec<&WorkflowRun> = repo
                .runs
                .values()
                .filter(|r| since.is_none_or(|s| r.created_at >= s))
                .collect();
            runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            let all = runs.iter().map(|r| run_json(base, repo, r)).collect();
            paging.counted("workflow_runs", all)
        }
        ["repos", o, r, "actions", "runs", id, "attempts", n] => {
            let repo = repo(o, r)?;
            let key = (id.parse().unwrap_or(0), n.parse().unwrap_or(0));
            let run = repo.attempts.get(&key).ok_or(NotFound)?;
            (run_json(base, repo, run), None)
        }
        ["repos", o, r, "actions", "runs", id, rest @ ..]
            if rest == ["jobs"]
                || (rest.len() == 3 && rest[0] == "attempts" && rest[2] == "jobs") =>
        {
            let repo = repo(o, r)?;
            let run_id: u64 = id.parse().unwrap_or(0);
            let jobs: Vec<&Job> = if rest.len() == 3 {
                let n: u32 = rest[1].parse().unwrap_or(0);
                repo.jobs
                    .get(&(run_id, n))
                    .map(|v| v.iter().collect())
                    .unwrap_or_default()
            } else if query.get("filter").map(String::as_str) == Some("all") {
                repo.jobs
                    .range((run_id, 0)..=(run_id, u32::MAX))
                    .flat_map(|(_, v)| v)
                    .collect()
            } else {
                let latest = repo.runs.get(&run_id).map(|r| r.run_attempt).unwrap_or(1);
                repo.jobs
                    .get(&(run_id, latest))
                    .map(|v| v.iter().collect())
                    .unwrap_or_default()
            };
            let all = jobs
                .iter()
                .map(|j| job_json(base, &repo.full_name, j))
                .collect();
            paging.counted("jobs", all)
        }
        _ => return Err(NotFound),
    })
}

/// The page a listing request asked for (`page`, `per_page` as GitHub reads them).
struct Paging<'a> {
    base: &'a str,
    uri: &'a Uri,
    page: usize,
    per_page: usize,
}

impl<'a> Paging<'a> {
    fn of(base: &'a str, uri: &'a Uri, query: &HashMap<String, String>) -> Self {
        let number = |name: &str| query.get(name).and_then(|p| p.parse::<usize>().ok());
        Paging {
            base,
            uri,
            page: number("page").unwrap_or(1).max(1),
            per_page: number("per_page").unwrap_or(30).clamp(1, 100),
        }
    }

    /// A listing GitHub returns as a bare array (`/orgs/{org}/repos`).
    fn array(&self, all: Vec<Value>) -> (Value, Option<String>) {
        let (items, _, link) = self.cut(all);
        (Value::Array(items), link)
    }

    /// A listing GitHub wraps with its `total_count` (`{"total_count": n, "<key>": [...]}`).
    fn counted(&self, key: &str, all: Vec<Value>) -> (Value, Option<String>) {
        let (items, total, link) = self.cut(all);
        let mut body = serde_json::Map::new();
        body.insert("total_count".into(), total.into());
        body.insert(key.into(), Value::Array(items));
        (Value::Object(body), link)
    }

    /// This page's items, the total, and the `Link` header to the other pages.
    fn cut(&self, all: Vec<Value>) -> (Vec<Value>, usize, Option<String>) {
        let (page, per_page) = (self.page, self.per_page);
        let total = all.len();
        let last = total.div_ceil(per_page).max(1);
        let items: Vec<Value> = all
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect();
        let page_url = |p: usize| {
            let others: Vec<String> = self
                .uri
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty() && !kv.starts_with("page="))
                .map(str::to_string)
                .collect();
            let mut q = others.join("&");
            if !q.is_empty() {
                q.push('&');
            }
            format!("<{}{}?{q}page={p}>", self.base, self.uri.path())
        };
        let mut rels = Vec::new();
        if page < last {
            rels.push(format!("{}; rel=\"next\"", page_url(page + 1)));
            rels.push(format!("{}; rel=\"last\"", page_url(last)));
        }
        if page > 1 {
            rels.push(format!("{}; rel=\"first\"", page_url(1)));
            rels.push(format!("{}; rel=\"prev\"", page_url(page - 1)));
        }
        (items, total, (!rels.is_empty()).then(|| rels.join(", ")))
    }
}

fn hv(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn rate_headers(s: &FakeState) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("x-ratelimit-limit", hv(&s.rate.limit.to_string()));
    h.insert("x-ratelimit-remaining", hv(&s.rate.remaining.to_string()));
    h.insert("x-ratelimit-reset", hv(&s.rate.reset.to_string()));
    h.insert(
        "x-ratelimit-used",
        hv(&(s.rate.limit - s.rate.remaining.min(s.rate.limit)).to_string()),
    );
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    h
}

fn error(
    s: &FakeState,
    status: StatusCode,
    message: &str,
    extra: &[(&'static str, String)],
) -> Response {
    let mut h = rate_headers(s);
    for (k, v) in extra {
        h.insert(*k, hv(v));
    }
    let body = json!({"message": message, "documentation_url": "https://docs.github.com/rest"})
        .to_string();
    (status, h, body).into_response()
}

fn not_found(s: &FakeState) -> Response {
    error(s, StatusCode::NOT_FOUND, "Not Found", &[])
}

fn app_token(s: &mut FakeState, installation: &str, authorization: Option<&str>) -> Response {
    let Some((app_id, inst, public_key)) = s.app.clone() else {
        return not_found(s);
    };
    let jwt = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or("");
    let valid = installation == inst.to_string() && verify_jwt(jwt, &app_id, &public_key);
    if !valid {
        return error(
            s,
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
            &[],
        );
    }
    s.issued_tokens += 1;
    let token = format!("ghs_fake{}", s.issued_tokens);
    s.accepted_tokens.push(token.clone());
    let body = json!({
        "token": token,
        "expires_at": ts(&(Utc::now() + s.token_lifetime)),
        "permissions": {"actions": "read", "metadata": "read"},
        "repository_selection": "all",
    });
    (StatusCode::CREATED, rate_headers(s), body.to_string()).into_response()
}

/// Checks an RS256 JWT's signature and `iss`, `iat`, `exp` claims like GitHub does.
fn verify_jwt(jwt: &str, app_id: &str, public_key: &[u8]) -> bool {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, sig] = parts.as_slice() else {
        return false;
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (Ok(sig), Ok(claims), Ok(header)) = (b64.decode(sig), b64.decode(c), b64.decode(h)) else {
        return false;
    };
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public_key,
    );
    if key.verify(format!("{h}.{c}").as_bytes(), &sig).is_err() {
        return false;
    }
    let (Ok(claims), Ok(header)) = (
        serde_json::from_slice::<Value>(&claims),
        serde_json::from_slice::<Value>(&header),
    ) else {
        return false;
    };
    let now = Utc::now().timestamp();
    header["alg"] == "RS256"
        && claims["iss"].as_str() == Some(app_id)
        && claims["iat"].as_i64().is_some_and(|iat| iat <= now)
        && claims["exp"]
            .as_i64()
            .is_some_and(|exp| exp > now && exp - now <= 600)
}

/// Serves `exporter`'s HTTP endpoints (/metrics, /healthz, the webhook) on a free port of
/// 127.0.0.1 until the test's runtime ends; the address.
pub async fn serve_exporter(exporter: &Exporter) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    let router = exporter.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}
