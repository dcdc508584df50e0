//! GitHub REST client: auth (token or App), pagination, conditional requests and rate-limit back-off.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::metrics::{RateLimit, SelfStats};

/// What a GitHub API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("no answer from {url} within {secs}s")]
    Timeout { url: String, secs: u64 },
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("cannot decode the answer of {url}: {source}")]
    Decode {
        url: String,
        source: serde_json::Error,
    },
    #[error("still rate limited at {url} after {tries} tries")]
    RateLimited { url: String, tries: u32 },
    #[error("GitHub App key: {0}")]
    AppKey(String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// How the exporter authenticates. `Debug` never prints a secret.
#[derive(Clone)]
pub enum Credentials {
    /// A personal access token or any bearer token.
    Token(String),
    /// A GitHub App installation: JWT (RS256) exchanged for an installation token.
    App {
        app_id: String,
        installation_id: u64,
        key: Arc<ring::signature::RsaKeyPair>,
    },
    /// No authentication (tests, public GHES mirrors).
    Anonymous,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::App {
                app_id,
                installation_id,
                ..
            } => {
                write!(
                    f,
                    "App {{ app_id: {app_id}, installation_id: {installation_id} }}"
                )
            }
            Credentials::Anonymous => f.write_str("Anonymous"),
        }
    }
}

impl Credentials {
    /// Loads an App private key from PEM (PKCS#1 `RSA PRIVATE KEY` as GitHub issues it, or PKCS#8).
    pub fn app_from_pem(
        app_id: String,
        installation_id: u64,
        pem: &str,
    ) -> Result<Self, GitHubError> {
        let key = parse_rsa_pem(pem)?;
        Ok(Credentials::App {
            app_id,
            installation_id,
            key: Arc::new(key),
        })
    }
}

fn parse_rsa_pem(pem: &str) -> Result<ring::signature::RsaKeyPair, GitHubError> {
    let (pkcs1, begin, end) = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        (
            true,
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----END RSA PRIVATE KEY-----",
        )
    } else if pem.contains("-----BEGIN PRIVATE KEY-----") {
        (
            false,
            "-----BEGIN PRIVATE KEY-----",
            "-----END PRIVATE KEY-----",
        )
    } else {
        return Err(GitHubError::AppKey(
            "no RSA PRIVATE KEY or PRIVATE KEY PEM block".into(),
        ));
    };
    let body = pem
        .split(begin)
        .nth(1)
        .and_then(|rest| rest.split(end).next())
        .ok_or_else(|| GitHubError::AppKey("unterminated PEM block".into()))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| GitHubError::AppKey(format!("PEM body is not base64: {e}")))?;
    let parsed = if pkcs1 {
        ring::signature::RsaKeyPair::from_der(&der)
    } else {
        ring::signature::RsaKeyPair::from_pkcs8(&der)
    };
    parsed.map_err(|e| GitHubError::AppKey(format!("not a usable RSA key: {e}")))
}

/// Builds the RS256 JWT GitHub wants from an App: issued 60 s in the past (clock drift), valid 9 minutes.
pub(crate) fn app_jwt(
    app_id: &str,
    key: &ring::signature::RsaKeyPair,
    now: DateTime<Utc>,
) -> Result<String, GitHubError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let iat = now.timestamp() - 60;
    let claims = serde_json::json!({ "iat": iat, "exp": iat + 600 - 60, "iss": app_id });
    let claims = b64.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| GitHubError::AppKey("RSA signing failed".into()))?;
    Ok(format!("{signing_input}.{}", b64.encode(sig)))
}

/// A repository as `GET /orgs/{org}/repos` and `GET /repos/{owner}/{repo}` return it (fields used here).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Repository {
    pub full_name: String,
    #[serde(default)]
    pub default_branch: Option<String>,
    #[serde(default)]
    pub archived: bool,
    /// The repository's topics (the organisation listing carries them).
    #[serde(default)]
    pub topics: Vec<String>,
}

/// A workflow run (attempt) as the runs API and `workflow_run` webhooks return it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkflowRun {
    pub id: u64,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    #[serde(default = "one")]
    pub run_attempt: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub run_started_at: Option<DateTime<Utc>>,
    /// The workflow file (`.github/workflows/ci.yml`): what identifies a workflow, since two files
    /// may share a display name.
    #[serde(default)]
    pub path: Option<String>,
}

fn one() -> u32 {
    1
}

impl WorkflowRun {
    /// Whether GitHub considers this attempt finished.
    pub(crate) fn is_completed(&self) -> bool {
        self.status.as_deref() == Some("completed")
    }

    /// The workflow's identity for metrics: its file path, or its name when the path is unknown.
    pub(crate) fn workflow_path(&self) -> &str {
        match (self.path.as_deref(), self.name.as_deref()) {
            (Some(p), _) if !p.is_empty() => p,
            (_, Some(n)) if !n.is_empty() => n,
            _ => "unknown",
        }
    }

    /// The workflow's display name: its name, or the file name of its path when the name is empty.
    pub(crate) fn workflow_name(&self) -> &str {
        match (self.name.as_deref(), self.path.as_deref()) {
            (Some(n), _) if !n.is_empty() => n,
            (_, Some(p)) if !p.is_empty() => p.rsplit('/').next().unwrap_or(p),
            _ => "unknown",
        }
    }
}

impl Job {
    /// Whether a runner picked the job up: status `in_progress`/`completed`, `started_at` and
    /// `runner_name` set, conclusion not `skipped`.
    pub(crate) fn started_on_runner(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("in_progress") | Some("completed")
        ) && self.conclusion.as_deref() != Some("skipped")
            && self.started_at.is_some()
            && self.runner_name.as_deref().is_some_and(|n| !n.is_empty())
    }

    /// Whether the job waits for a runner: status `queued` (or `pending`/`requested`). GitHub
    /// sets `started_at` of a queued job too, so only the status tells. `waiting` is an
    /// environment's approval, not a runner shortage.
    pub(crate) fn waits_for_runner(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("queued") | Some("pending") | Some("requested")
        )
    }
}

/// A job as `GET .../runs/{id}/jobs` and `workflow_job` webhooks return it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job {
    pub id: u64,
    pub run_id: u64,
    #[serde(default = "one")]
    pub run_attempt: u32,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub conclusion: Option<String>,
    /// When the job was queued; some `workflow_job` deliveries lack it (then no queue time is known).
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub runner_name: Option<String>,
    /// The runner group of the runner that took the job (null while queued, and on GitHub
    /// Enterprise Server releases without runner groups).
    #[serde(default)]
    pub runner_group_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RunsPage {
    workflow_runs: Vec<WorkflowRun>,
}

#[derive(Debug, Deserialize)]
struct JobsPage {
    jobs: Vec<Job>,
}

#[derive(Debug, Deserialize)]
struct InstallationToken {
    token: String,
    expires_at: DateTime<Utc>,
}

/// One page of a listing.
#[derive(Debug)]
pub(crate) enum Page<T> {
    /// New content, with the `rel="next"` link if there is one.
    Fresh { items: Vec<T>, next: Option<String> },
    /// A 304 for a page seen before: nothing to re-process; `next` is the link cached with it.
    NotModified { next: Option<String> },
}

/// Tunables of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bound on each request, body included.
    pub request_timeout: Duration,
    /// Stop and wait for the reset once `x-ratelimit-remaining` is at or below this.
    pub rate_limit_reserve: u64,
    /// Longest single wait for a rate-limit reset or a `retry-after`.
    pub max_rate_limit_wait: Duration,
    /// Retries after a 403/429 rate-limit answer.
    pub max_retries: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(30),
            rate_limit_reserve: 50,
            max_rate_limit_wait: Duration::from_secs(3600),
            max_retries: 3,
        }
    }
}

#[derive(Debug, Clone)]
struct CachedPage {
    etag: String,
    next: Option<String>,
}

#[derive(Debug, Default)]
struct RateState {
    remaining: Option<u64>,
    reset: Option<i64>,
}

type Https = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The GitHub REST client. Cheap to share behind an `Arc`.
pub(crate) struct Client {
    http: Https,
    api_url: String,
    credentials: Credentials,
    installation_token: tokio::sync::Mutex<Option<(String, DateTime<Utc>)>>,
    etags: Mutex<HashMap<String, CachedPage>>,
    rate: Mutex<RateState>,
    stats: Arc<Mutex<SelfStats>>,
    options: ClientOptions,
}

impl Client {
    /// A client for `api_url` (e.g. `https://api.github.com` or `https://ghe.example/api/v3`).
    pub(crate) fn new(
        api_url: &str,
        credentials: Credentials,
        options: ClientOptions,
        stats: Arc<Mutex<SelfStats>>,
    ) -> Result<Self, GitHubError> {
        let provider = rustls::crypto::ring::default_provider();
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            // No system CA bundle (e.g. a distroless image): fall back to Mozilla's roots.
            Err(_) => hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| GitHubError::Tls(e.to_string()))?,
        };
        let connector = builder.https_or_http().enable_http1().build();
        let http = HyperClient::builder(TokioExecutor::new()).build(connector);
        Ok(Client {
            http,
            api_url: api_url.trim_end_matches('/').to_string(),
            credentials,
            installation_token: tokio::sync::Mutex::new(None),
            etags: Mutex::new(HashMap::new()),
            rate: Mutex::new(RateState::default()),
            stats,
            options,
        })
    }

    /// First page URL of an organisation's repositories.
    pub(crate) fn org_repos_url(&self, org: &str) -> String {
        format!("{}/orgs/{org}/repos?per_page=100&type=all", self.api_url)
    }

    /// First page URL of a repository's runs created at or after `since`.
    pub(crate) fn runs_url(&self, repo: &str, since: DateTime<Utc>) -> String {
        format!(
            "{}/repos/{repo}/actions/runs?per_page=100&created=%3E%3D{}",
            self.api_url,
            since.format("%Y-%m-%dT%H:%M:%SZ")
        )
    }

    /// First page URL of the jobs of one attempt of a run.
    pub(crate) fn attempt_jobs_url(&self, repo: &str, run_id: u64, attempt: u32) -> String {
        format!(
            "{}/repos/{repo}/actions/runs/{run_id}/attempts/{attempt}/jobs?per_page=100",
            self.api_url
        )
    }

    /// Fetches one repository (conditional: `None` when unchanged since the last call).
    pub(crate) async fn repository(&self, repo: &str) -> Result<Option<Repository>, GitHubError> {
        let url = format!("{}/repos/{repo}", self.api_url);
        match self.get(&url, true).await? {
            Fetched::NotModified { .. } => Ok(None),
            Fetched::Fresh { body, .. } => Ok(Some(decode(&url, &body)?)),
        }
    }

    /// One page of an organisation's repositories.
    pub(crate) async fn org_repos_page(&self, url: &str) -> Result<Page<Repository>, GitHubError> {
        self.page(url, decode::<Vec<Repository>>).await
    }

    /// One page of workflow runs.
    pub(crate) async fn runs_page(&self, url: &str) -> Result<Page<WorkflowRun>, GitHubError> {
        self.page(url, |url, body| {
            decode::<RunsPage>(url, body).map(|p| p.workflow_runs)
        })
        .await
    }

    /// All jobs of one run attempt, following pagination.
    pub(crate) async fn attempt_jobs(
        &self,
        repo: &str,
        run_id: u64,
        attempt: u32,
    ) -> Result<Vec<Job>, GitHubError> {
        let mut url = Some(self.attempt_jobs_url(repo, run_id, attempt));
        let mut jobs = Vec::new();
        while let Some(u) = url.take() {
            let fetched = self.get(&u, false).await?;
            if let Fetched::Fresh { body, next } = fetched {
                jobs.extend(decode::<JobsPage>(&u, &body)?.jobs);
                url = next;
            }
        }
        Ok(jobs)
    }

    /// One earlier attempt of a run (`GET .../runs/{id}/attempts/{n}`).
    pub(crate) async fn run_attempt(
        &self,
        repo: &str,
        run_id: u64,
        attempt: u32,
    ) -> Result<WorkflowRun, GitHubError> {
        let url = format!(
            "{}/repos/{repo}/actions/runs/{run_id}/attempts/{attempt}",
            self.api_url
        );
        match self.get(&url, false).await? {
            Fetched::Fresh { body, .. } => decode(&url, &body),
            Fetched::NotModified { .. } => Err(GitHubError::Status {
                url,
                status: 304,
                message: "unexpected 304 for an unconditional request".into(),
            }),
        }
    }

    async fn page<T>(
        &self,
        url: &str,
        parse: impl Fn(&str, &[u8]) -> Result<Vec<T>, GitHubError>,
    ) -> Result<Page<T>, GitHubError> {
        match self.get(url, true).await? {
            Fetched::NotModified { next } => Ok(Page::NotModified { next }),
            Fetched::Fresh { body, next } => Ok(Page::Fresh {
                items: parse(url, &body)?,
                next,
            }),
        }
    }

    /// Drops cached ETags not in `keep` so the cache does not grow with dead URLs.
    pub(crate) fn retain_etags(&self, keep: impl Fn(&str) -> bool) {
        if let Ok(mut c) = self.etags.lock() {
            c.retain(|k, _| keep(k));
        }
    }

    async fn get(&self, url: &str, conditional: bool) -> Result<Fetched, GitHubError> {
        let cached = if conditional {
            self.etags.lock().ok().and_then(|c| c.get(url).cloned())
        } else {
            None
        };
        let if_none_match = cached.as_ref().map(|c| c.etag.clone());
        let (status, headers, body) = self
            .send(Method::GET, url, if_none_match.as_deref())
            .await?;
        if status == StatusCode::NOT_MODIFIED {
            if let Some(c) = cached {
                return Ok(Fetched::NotModified { next: c.next });
            }
        }
        if !status.is_success() {
            return Err(status_error(url, status, &body));
        }
        let next = headers
            .get(http::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        if conditional {
            if let Some(etag) = headers
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
            {
                if let Ok(mut c) = self.etags.lock() {
                    c.insert(
                        url.to_string(),
                        CachedPage {
                            etag: etag.to_string(),
                            next: next.clone(),
                        },
                    );
                }
            }
        }
        Ok(Fetched::Fresh { body, next })
    }

    async fn authorization(&self) -> Result<Option<String>, GitHubError> {
        match &self.credentials {
            Credentials::Anonymous => Ok(None),
            Credentials::Token(t) => Ok(Some(format!("Bearer {t}"))),
            Credentials::App {
                app_id,
                installation_id,
                key,
            } => {
                let mut cached = self.installation_token.lock().await;
                let fresh_enough =
                    |exp: &DateTime<Utc>| *exp - Utc::now() > chrono::Duration::minutes(5);
                if let Some((tok, exp)) = cached.as_ref() {
                    if fresh_enough(exp) {
                        return Ok(Some(format!("Bearer {tok}")));
                    }
                }
                let jwt = app_jwt(app_id, key, Utc::now())?;
                let url = format!(
                    "{}/app/installations/{installation_id}/access_tokens",
                    self.api_url
                );
                let (status, _, body) = self
                    .send_once(Method::POST, &url, Some(&format!("Bearer {jwt}")), None)
                    .await?;
                if !status.is_success() {
                    return Err(status_error(&url, status, &body));
                }
                let t: InstallationToken = decode(&url, &body)?;
                tracing::debug!(expires_at = %t.expires_at, "obtained a GitHub App installation token");
                let header = format!("Bearer {}", t.token);
                *cached = Some((t.token, t.expires_at));
                Ok(Some(header))
            }
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        if_none_match: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), GitHubError> {
        let mut tries = 0;
        loop {
            self.wait_for_rate_limit().await;
            let auth = self.authorization().await?;
            let (status, headers, body) = self
                .send_once(method.clone(), url, auth.as_deref(), if_none_match)
                .await?;
            let limited = status == StatusCode::TOO_MANY_REQUESTS
                || (status == StatusCode::FORBIDDEN
                    && (headers.contains_key(http::header::RETRY_AFTER)
                        || header_u64(&headers, "x-ratelimit-remaining") == Some(0)));
            if !limited {
                return Ok((status, headers, body));
            }
            tries += 1;
            if tries > self.options.max_retries {
                return Err(GitHubError::RateLimited {
                    url: url.to_string(),
                    tries,
                });
            }
            let wait = match header_u64(&headers, "retry-after") {
                Some(secs) => Duration::from_secs(secs),
                None => until_reset(header_u64(&headers, "x-ratelimit-reset").map(|r| r as i64)),
            };
            let wait = wait.min(self.options.max_rate_limit_wait);
            tracing::warn!(
                url,
                status = status.as_u16(),
                wait_secs = wait.as_secs_f64(),
                "rate limited by GitHub; waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Waits for the reset when the remaining budget is at or below the reserve.
    async fn wait_for_rate_limit(&self) {
        let reset = match self.rate.lock() {
            Ok(r) => match (r.remaining, r.reset) {
                (Some(rem), Some(reset)) if rem <= self.options.rate_limit_reserve => Some(reset),
                _ => None,
            },
            Err(_) => None,
        };
        if let Some(reset) = reset {
            let wait = until_reset(Some(reset)).min(self.options.max_rate_limit_wait);
            if !wait.is_zero() {
                tracing::info!(
                    wait_secs = wait.as_secs_f64(),
                    "rate-limit budget at reserve; waiting for the reset"
                );
                tokio::time::sleep(wait).await;
            }
            if let Ok(mut r) = self.rate.lock() {
                // The budget is refilled at the reset; the next answer tells the real figure.
                if r.reset == Some(reset) {
                    r.remaining = None;
                }
            }
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: &str,
        authorization: Option<&str>,
        if_none_match: Option<&str>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), GitHubError> {
        let mut req = Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header(
                http::header::USER_AGENT,
                concat!("arc-hook-exporter/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-github-api-version", "2022-11-28");
        if let Some(a) = authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        if let Some(e) = if_none_match {
            req = req.header(http::header::IF_NONE_MATCH, e);
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| GitHubError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
        let secs = self.options.request_timeout.as_secs();
        let exchange = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| GitHubError::Transport {
                    url: url.to_string(),
                    message: e.to_string(),
                })?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| GitHubError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
            Ok::<_, GitHubError>((parts.status, parts.headers, body.to_bytes()))
        };
        let result = tokio::time::timeout(self.options.request_timeout, exchange)
            .await
            .map_err(|_| GitHubError::Timeout {
                url: url.to_string(),
                secs,
            })
            .and_then(|r| r);
        self.observe(&result);
        result
    }

    fn observe(&self, result: &Result<(StatusCode, HeaderMap, Bytes), GitHubError>) {
        let status = match result {
            Ok((s, _, _)) => s.as_u16().to_string(),
            Err(_) => "error".to_string(),
        };
        let remaining = result
            .as_ref()
            .ok()
            .and_then(|(_, h, _)| header_u64(h, "x-ratelimit-remaining"));
        let reset = result
            .as_ref()
            .ok()
            .and_then(|(_, h, _)| header_u64(h, "x-ratelimit-reset"));
        let headers = result.as_ref().ok().map(|(_, h, _)| h);
        if let Ok(mut s) = self.stats.lock() {
            *s.api_requests.entry(status).or_default() += 1;
            if let (Some(r), Some(h)) = (remaining, headers) {
                // GitHub names the budget a request was charged to; REST calls are `core`.
                let resource = h
                    .get("x-ratelimit-resource")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("core")
                    .to_string();
                s.rate_limits.insert(
                    resource,
                    RateLimit {
                        limit: header_u64(h, "x-ratelimit-limit").map(|v| v as f64),
                        remaining: r as f64,
                        reset: reset.map(|v| v as f64),
                    },
                );
            }
        }
        if let (Some(rem), Ok(mut r)) = (remaining, self.rate.lock()) {
            r.remaining = Some(rem);
            r.reset = reset.map(|v| v as i64);
        }
    }
}

enum Fetched {
    Fresh { body: Bytes, next: Option<String> },
    NotModified { next: Option<String> },
}

fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, GitHubError> {
    serde_json::from_slice(body).map_err(|source| GitHubError::Decode {
        url: url.to_string(),
        source,
    })
}

fn status_error(url: &str, status: StatusCode, body: &[u8]) -> GitHubError {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    GitHubError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        message,
    }
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Time until the Unix-seconds `reset` (plus one second, as the reset is rounded down).
fn until_reset(reset: Option<i64>) -> Duration {
    match reset {
        Some(reset) => {
            let ms = (reset + 1) * 1000 - Utc::now().timestamp_millis();
            Duration::from_millis(ms.max(0) as u64)
        }
        None => Duration::from_secs(60),
    }
}

/// Extracts the `rel="next"` URL from a `Link` header.
pub(crate) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        if is_next {
            Some(
                url.trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string(),
            )
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_link_is_found_among_others() {
        let h = r#"<https://api.github.com/repositories/1/actions/runs?page=1>; rel="prev", <https://api.github.com/repositories/1/actions/runs?page=3>; rel="next", <https://api.github.com/repositories/1/actions/runs?page=5>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/repositories/1/actions/runs?page=3")
        );
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="first""#), None);
    }

    #[test]
    fn credentials_debug_hides_the_token() {
        let c = Credentials::Token("ghp_secret".into());
        assert!(!format!("{c:?}").contains("ghp_secret"));
    }

    #[test]
    fn a_key_that_is_not_pem_is_refused_with_a_reason() {
        let err = Credentials::app_from_pem("1".into(), 2, "hello").unwrap_err();
        assert!(err.to_string().contains("PEM"), "{err}");
    }
}
