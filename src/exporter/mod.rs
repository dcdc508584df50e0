//! `arc-hook exporter`: GitHub Actions workflow, job and queue-time metrics for Prometheus.
pub mod collect;
pub mod github;
pub mod ledger;
pub mod metrics;
pub mod webhook;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use chrono::Utc;

use crate::config::{ExporterEnv, GitHubAuthEnv};
use collect::{Collector, PollReport, RepoFilter, Scope};
use github::{Client, ClientOptions, Credentials, GitHubError};
use ledger::{BranchPolicy, Ledger, RunnerGroupPolicy, RunnerLabelPolicy, State, StateError};
use metrics::{Buckets, Format, SelfStats};
use webhook::Webhook;

/// The credentials `--help` lists: they are read from the environment only, never from flags.
const CREDENTIALS_HELP: &str = "\
Credentials (environment variables only, never flags):
  GITHUB_TOKEN                  a token with actions:read and metadata:read (takes precedence)
  GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID, GITHUB_APP_PRIVATE_KEY_PATH
                                a GitHub App installation: its id, and its private key (PEM file)
  GITHUB_WEBHOOK_SECRET         the webhook's HMAC secret (--webhook needs it)
With neither a token nor an App, requests are anonymous: GitHub allows 60 an hour per IP
address, too few for more than a repository or two, and no private repository.";

/// Logged once at start when no credential is set.
pub(crate) const ANONYMOUS_WARNING: &str = "no GitHub credentials (GITHUB_TOKEN, or GITHUB_APP_ID with GITHUB_APP_INSTALLATION_ID and GITHUB_APP_PRIVATE_KEY_PATH): requests are anonymous, limited by GitHub to 60 an hour per IP address, and private repositories are not visible; polls will stall on the rate limit";

/// `arc-hook exporter` flags. Secrets come from the environment only (see [`ExporterEnv`]).
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("scope").required(true).args(["org", "repos"])))]
#[command(after_help = CREDENTIALS_HELP)]
pub struct ExporterArgs {
    /// Address to serve /metrics, /healthz (and /webhook) on.
    #[arg(long, default_value = "0.0.0.0:9185")]
    pub listen: SocketAddr,
    /// Watch every non-archived repository of these organisations (repeat the flag, or
    /// comma-separate).
    #[arg(long, value_delimiter = ',', conflicts_with = "repos")]
    pub org: Vec<String>,
    /// With --org: watch only repositories whose owner/name matches this regex (anchored).
    #[arg(long, requires = "org")]
    pub repo_include: Option<String>,
    /// With --org: do not watch repositories whose owner/name matches this regex (anchored).
    #[arg(long, requires = "org")]
    pub repo_exclude: Option<String>,
    /// With --org: watch only repositories carrying at least one of these topics (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "org")]
    pub repo_topic: Vec<String>,
    /// With --org: do not watch repositories carrying any of these topics (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "org")]
    pub repo_exclude_topic: Vec<String>,
    /// Watch these repositories (owner/name, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub repos: Vec<String>,
    /// GitHub API base URL (GitHub Enterprise Server: https://HOST/api/v3).
    #[arg(long, default_value = "https://api.github.com")]
    pub api_url: String,
    /// Time between poll cycles (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Window of workflow_failure_rate and workflow_queue_time_average_seconds; also how far back
    /// the first poll looks (e.g. 24h, 7d).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub failure_window: Duration,
    /// Branches kept as the `branch` label (comma-separated); others become "other". The repository's
    /// default branch is always kept. Default: main,master.
    #[arg(long, value_delimiter = ',')]
    pub branch_allow_list: Vec<String>,
    /// Runner labels kept as the `runner_label` label (comma-separated, as the exporter names them:
    /// generic labels dropped, the rest sorted and joined by ","); others become "other".
    /// Default: every label is kept.
    #[arg(long, value_delimiter = ',')]
    pub runner_label_allow_list: Vec<String>,
    /// Runner groups kept as the `runner_group` label of the runner-time histogram
    /// (comma-separated); others become "other". Default: every group is kept.
    #[arg(long, value_delimiter = ',')]
    pub runner_group_allow_list: Vec<String>,
    /// Upper bounds of the queue-time histogram's buckets (seconds or 30s, 5m, 1h; ascending).
    #[arg(long, value_parser = metrics::parse_buckets)]
    pub queue_time_buckets: Option<Arc<[f64]>>,
    /// Upper bounds of the run-duration histogram's buckets.
    #[arg(long, value_parser = metrics::parse_buckets)]
    pub duration_buckets: Option<Arc<[f64]>>,
    /// Upper bounds of the runner-time (job duration) histogram's buckets.
    #[arg(long, value_parser = metrics::parse_buckets)]
    pub job_duration_buckets: Option<Arc<[f64]>>,
    /// File remembering counted runs and jobs and the poll cursors, so a restart does not double-count.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Serve POST /webhook; the secret comes from GITHUB_WEBHOOK_SECRET.
    #[arg(long)]
    pub webhook: bool,
    /// Wait for the rate-limit reset once x-ratelimit-remaining is at or below this.
    #[arg(long, default_value_t = 50)]
    pub rate_limit_reserve: u64,
    /// Bound on each GitHub API request.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How far back each poll re-lists runs to catch re-runs of runs it already counted (0 disables;
    /// re-runs started later than this after the run was created are seen only with --webhook).
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    pub rerun_lookback: Duration,
    /// Repositories polled concurrently.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

/// Parses `90`, `90s`, `5m`, `24h` or `7d`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration such as 30s, 5m, 24h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    Ok(Duration::from_secs(secs))
}

/// What the exporter can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Pattern(#[from] collect::PatternError),
    #[error("cannot read GITHUB_APP_PRIVATE_KEY_PATH {}", path.display())]
    PrivateKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The exporter's secrets, resolved: credentials ready to use and the webhook secret.
#[derive(Clone, Default)]
pub(crate) struct Secrets {
    pub credentials: Option<Credentials>,
    pub webhook_secret: Option<Vec<u8>>,
}

impl Secrets {
    /// Resolves what the environment named (see [`ExporterEnv`]): an App's private key is read
    /// from its file here.
    pub(crate) fn load(env: ExporterEnv) -> Result<Self, Error> {
        let credentials = match env.auth {
            GitHubAuthEnv::Token(t) => Some(Credentials::Token(t)),
            GitHubAuthEnv::App {
                app_id,
                installation_id,
                private_key_path,
            } => {
                let pem = std::fs::read_to_string(&private_key_path).map_err(|source| {
                    Error::PrivateKey {
                        path: private_key_path,
                        source,
                    }
                })?;
                Some(Credentials::app_from_pem(app_id, installation_id, &pem)?)
            }
            GitHubAuthEnv::Anonymous => None,
        };
        Ok(Secrets {
            credentials,
            webhook_secret: env.webhook_secret,
        })
    }
}

/// Everything an [`Exporter`] needs, flags and secrets resolved.
#[derive(Clone)]
pub struct Config {
    pub api_url: String,
    pub scope: Scope,
    /// Which of `--org`'s repositories are watched.
    pub repo_filter: RepoFilter,
    pub credentials: Credentials,
    pub window: Duration,
    pub branch_allow_list: Vec<String>,
    /// Empty: every runner label is kept.
    pub runner_label_allow_list: Vec<String>,
    /// Empty: every runner group is kept.
    pub runner_group_allow_list: Vec<String>,
    pub buckets: Buckets,
    pub state_file: Option<PathBuf>,
    /// `Some` enables `/webhook`.
    pub webhook_secret: Option<Vec<u8>>,
    pub client: ClientOptions,
    pub concurrency: usize,
    pub rerun_lookback: Duration,
}

impl Config {
    /// Combines flags and secrets; refuses `--webhook` without a secret and a missing scope.
    pub(crate) fn from_args(args: &ExporterArgs, secrets: Secrets) -> Result<Self, Error> {
        let scope = match (args.org.is_empty(), args.repos.is_empty()) {
            (false, true) => {
                if let Some(bad) = args.org.iter().find(|o| o.is_empty() || o.contains('/')) {
                    return Err(Error::Config(format!(
                        "--org entry `{bad}` is not an organisation name"
                    )));
                }
                Scope::Orgs(args.org.clone())
            }
            (true, false) => {
                if let Some(bad) = args.repos.iter().find(|r| r.split('/').count() != 2) {
                    return Err(Error::Config(format!(
                        "--repos entry `{bad}` is not owner/name"
                    )));
                }
                Scope::Repos(args.repos.clone())
            }
            _ => {
                return Err(Error::Config(
                    "give exactly one of --org ORG or --repos owner/a,owner/b".into(),
                ));
            }
        };
        let webhook_secret = match (args.webhook, secrets.webhook_secret) {
            (true, Some(s)) => Some(s),
            (true, None) => {
                return Err(Error::Config(
                    "--webhook needs the secret in GITHUB_WEBHOOK_SECRET".into(),
                ));
            }
            (false, _) => None,
        };
        let defaults = Buckets::default();
        Ok(Config {
            api_url: args.api_url.clone(),
            scope,
            repo_filter: RepoFilter::new(
                args.repo_include.as_deref(),
                args.repo_exclude.as_deref(),
                args.repo_topic.clone(),
                args.repo_exclude_topic.clone(),
            )?,
            credentials: secrets.credentials.unwrap_or(Credentials::Anonymous),
            window: args.failure_window,
            branch_allow_list: args.branch_allow_list.clone(),
            runner_label_allow_list: args.runner_label_allow_list.clone(),
            runner_group_allow_list: args.runner_group_allow_list.clone(),
            buckets: Buckets {
                queue_time: args
                    .queue_time_buckets
                    .clone()
                    .unwrap_or(defaults.queue_time),
                duration: args.duration_buckets.clone().unwrap_or(defaults.duration),
                job_duration: args
                    .job_duration_buckets
                    .clone()
                    .unwrap_or(defaults.job_duration),
            },
            state_file: args.state_file.clone(),
            webhook_secret,
            client: ClientOptions {
                request_timeout: args.request_timeout,
                rate_limit_reserve: args.rate_limit_reserve,
                ..ClientOptions::default()
            },
            concurrency: args.concurrency,
            rerun_lookback: args.rerun_lookback,
        })
    }
}

/// A running exporter's state: the ledger, the collector and the HTTP routes over them.
#[derive(Clone)]
pub struct Exporter {
    ledger: Arc<Mutex<Ledger>>,
    stats: Arc<Mutex<SelfStats>>,
    collector: Arc<Collector>,
    webhook: Option<Arc<Webhook>>,
    state_file: Option<PathBuf>,
}

impl Exporter {
    /// Builds the exporter, resuming from the state file if there is one.
    pub fn new(config: Config) -> Result<Self, Error> {
        let window = chrono::Duration::from_std(config.window)
            .map_err(|_| Error::Config("--failure-window is too large".into()))?;
        let branches = if config.branch_allow_list.is_empty() {
            BranchPolicy::default()
        } else {
            BranchPolicy::new(config.branch_allow_list.clone())
        };
        let ledger = match &config.state_file {
            Some(path) => Ledger::from_state(window, branches, load_or_set_aside(path)?),
            None => Ledger::new(window, branches),
        }
        .with_runner_labels(RunnerLabelPolicy::new(
            config.runner_label_allow_list.clone(),
        ))
        .with_runner_groups(RunnerGroupPolicy::new(
            config.runner_group_allow_list.clone(),
        ))
        .with_buckets(config.buckets.clone());
        let ledger = Arc::new(Mutex::new(ledger));
        // The last poll is "now" at start: a poll that never succeeds ages like one that stopped.
        let stats = Arc::new(Mutex::new(SelfStats {
            last_poll_timestamp: Some(Utc::now().timestamp_millis() as f64 / 1000.0),
            ..SelfStats::default()
        }));
        let client = Arc::new(Client::new(
            &config.api_url,
            config.credentials,
            config.client,
            stats.clone(),
        )?);
        let collector = Arc::new(Collector::new(
            client,
            config.scope.clone(),
            config.repo_filter.clone(),
            ledger.clone(),
            stats.clone(),
            config.concurrency,
            chrono::Duration::from_std(config.rerun_lookback)
                .map_err(|_| Error::Config("--rerun-lookback is too large".into()))?,
        ));
        let webhook = config.webhook_secret.as_deref().map(|s| {
            Arc::new(
                Webhook::new(s, config.scope.clone(), ledger.clone(), stats.clone())
                    .with_repo_filter(config.repo_filter.clone()),
            )
        });
        Ok(Exporter {
            ledger,
            stats,
            collector,
            webhook,
            state_file: config.state_file,
        })
    }

    /// One poll cycle, then the state file is written if anything changed.
    pub async fn poll_once(&self) -> Result<PollReport, Error> {
        let report = self.collector.poll_once().await?;
        self.save_state_if_changed()?;
        Ok(report)
    }

    /// Writes the state file if the ledger changed since the last write.
    pub(crate) fn save_state_if_changed(&self) -> Result<(), Error> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        // Written under the ledger lock, streaming from the ledger, so a large window is not copied.
        let Ok(mut ledger) = self.ledger.lock() else {
            return Ok(());
        };
        if ledger.take_dirty() {
            ledger.save_state(path)?;
        }
        Ok(())
    }

    /// The `/metrics` body in `format`.
    pub fn render(&self, format: Format) -> String {
        let metrics = self
            .ledger
            .lock()
            .map(|mut l| l.metrics_for_scrape(Utc::now()))
            .unwrap_or_default();
        let stats = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        metrics.encode(&stats, format)
    }

    /// `/metrics`, `/healthz` and, with a webhook secret, `POST /webhook`.
    pub fn router(&self) -> Router {
        let me = self.clone();
        let mut router = Router::new()
            .route(
                "/metrics",
                get(move |headers: HeaderMap| {
                    let me = me.clone();
                    async move {
                        let format = Format::from_accept(
                            headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
                        );
                        (
                            [(header::CONTENT_TYPE, format.content_type())],
                            me.render(format),
                        )
                    }
                }),
            )
            .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }));
        if let Some(hook) = &self.webhook {
            router = router.merge(
                Router::new()
                    .route("/webhook", post(webhook::receive))
                    .with_state(hook.clone()),
            );
        }
        router
    }
}

/// Loads the state file; one that cannot be parsed is renamed to `<file>.corrupt` with a warning
/// and the exporter starts fresh (refusing to start would crash-loop the pod over a bad file).
pub(crate) fn load_or_set_aside(path: &std::path::Path) -> Result<State, StateError> {
    match State::load(path) {
        Err(StateError::Parse { source, .. }) => {
            let mut aside = path.as_os_str().to_owned();
            aside.push(".corrupt");
            let aside = PathBuf::from(aside);
            std::fs::rename(path, &aside).map_err(|e| StateError::Write {
                path: aside.clone(),
                source: e,
            })?;
            tracing::warn!(state_file = %path.display(), moved_to = %aside.display(), error = %source,
                "state file is not valid; set it aside and starting fresh (runs in the window are counted again)");
            Ok(State::default())
        }
        other => other,
    }
}

/// `arc-hook exporter`: serve metrics and poll until SIGINT/SIGTERM, with the secrets `env` names.
pub async fn run(args: ExporterArgs, env: ExporterEnv) -> anyhow::Result<()> {
    let secrets =
        Secrets::load(env).context("reading exporter credentials from the environment")?;
    if secrets.credentials.is_none() {
        tracing::warn!("{ANONYMOUS_WARNING}");
    }
    let config = Config::from_args(&args, secrets)?;
    let exporter = Exporter::new(config).context("starting the exporter")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, webhook = args.webhook, "exporter serving /metrics");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let server = tokio::spawn(
        axum::serve(listener, exporter.router())
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    // Webhook deliveries change the ledger between polls; flush them this often.
    let flush_every = Duration::from_secs(10).min(args.poll_interval);
    let mut next_poll = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_poll {
            // A poll can wait long for a rate-limit reset; a shutdown does not wait for it. Each
            // repository's results enter the ledger at once, so a cut poll leaves no half-counted repo.
            tokio::select! {
                result = exporter.poll_once() => match result {
                    Ok(r) => tracing::info!(repos = r.repos, runs = r.runs_counted, jobs = r.jobs_counted, failed_repos = r.errors.len(), "poll cycle done"),
                    Err(e) => tracing::warn!(error = %e, "poll cycle failed; retrying next interval"),
                },
                _ = stop_rx.wait_for(|s| *s) => break,
            }
            next_poll = tokio::time::Instant::now() + args.poll_interval;
        } else if let Err(e) = exporter.save_state_if_changed() {
            tracing::warn!(error = %e, "cannot write the state file");
        }
        let wake = next_poll.min(tokio::time::Instant::now() + flush_every);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            _ = stop_rx.wait_for(|s| *s) => break,
        }
    }
    exporter
        .save_state_if_changed()
        .context("writing the state file at shutdown")?;
    match tokio::time::timeout(Duration::from_secs(10), server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(anyhow::Error::new(e).context("metrics server failed")),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context("metrics server task failed")),
        Err(_) => anyhow::bail!("metrics server did not stop within 10s of the shutdown signal"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn secrets_name_an_unreadable_app_key() {
        let env = ExporterEnv {
            auth: GitHubAuthEnv::App {
                app_id: "12".into(),
                installation_id: 345,
                private_key_path: PathBuf::from("/nonexistent/arc-hook-test/key.pem"),
            },
            webhook_secret: Some(b"s".to_vec()),
        };
        let Err(e) = Secrets::load(env) else {
            panic!("a missing key file is refused");
        };
        assert_eq!(
            e.to_string(),
            "cannot read GITHUB_APP_PRIVATE_KEY_PATH /nonexistent/arc-hook-test/key.pem"
        );
        let secrets = Secrets::load(ExporterEnv {
            auth: GitHubAuthEnv::Token("t".into()),
            webhook_secret: Some(b"s".to_vec()),
        })
        .expect("a token needs no file");
        assert!(matches!(secrets.credentials, Some(Credentials::Token(_))));
        assert_eq!(secrets.webhook_secret.as_deref(), Some(&b"s"[..]));
    }
}
