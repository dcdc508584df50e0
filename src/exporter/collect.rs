//! Polling: which repositories, which runs since the cursor, which attempts and jobs to fetch, fed to the ledger.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt as _;

use super::github::{Client, GitHubError, Job, Page, Repository, WorkflowRun};
use super::ledger::{Ledger, RunJobs};
use super::metrics::SelfStats;

/// Runs created this long before the newest run seen are listed again, for runs that
/// became visible late; deduplication keeps them from being counted twice.
pub(crate) const CURSOR_OVERLAP: Duration = Duration::minutes(5);

/// Cycles a completed run's attempt or jobs may fail to load before the run is counted without
/// them: one broken run must neither block its repository nor stay uncounted.
pub(crate) const RUN_READ_TRIES: u32 = 3;

/// Which repositories the exporter watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every non-archived repository of these organisations (narrowed by a [`RepoFilter`]).
    Orgs(Vec<String>),
    /// An explicit list of `owner/name`.
    Repos(Vec<String>),
}

impl Scope {
    /// Whether `full_name` (`owner/name`) is watched (case-insensitive, as GitHub names are).
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn contains(&self, full_name: &str) -> bool {
        self.label_for(full_name).is_some()
    }

    /// The `repo` label for a watched `full_name`: the `--repos` spelling, so webhook and polled
    /// series of one repository never split over letter case; `None` if it is not watched.
    pub fn label_for(&self, full_name: &str) -> Option<String> {
        match self {
            Scope::Orgs(orgs) => full_name
                .split_once('/')
                .filter(|(owner, _)| orgs.iter().any(|o| owner.eq_ignore_ascii_case(o)))
                .map(|_| full_name.to_string()),
            Scope::Repos(repos) => repos
                .iter()
                .find(|r| r.eq_ignore_ascii_case(full_name))
                .cloned(),
        }
    }

    /// The organisation of `full_name` among `--org`'s, if it is one of them.
    fn org_of(&self, full_name: &str) -> Option<&str> {
        let Scope::Orgs(orgs) = self else {
            return None;
        };
        let (owner, _) = full_name.split_once('/')?;
        orgs.iter()
            .find(|o| owner.eq_ignore_ascii_case(o))
            .map(String::as_str)
    }
}

/// Which of an organisation's repositories are watched: names matching `--repo-include` and not
/// `--repo-exclude` (regexes over the whole `owner/name`, anchored as Prometheus anchors its
/// regexes), carrying one of `--repo-topic` (if given) and none of `--repo-exclude-topic`.
/// The organisation listing carries every repository's topics, so topics cost no request.
#[derive(Debug, Clone, Default)]
pub struct RepoFilter {
    include: Option<regex::Regex>,
    exclude: Option<regex::Regex>,
    topics: Vec<String>,
    exclude_topics: Vec<String>,
}

/// A `--repo-include`/`--repo-exclude` pattern that is not a regular expression.
#[derive(Debug, thiserror::Error)]
#[error("{flag} `{pattern}` is not a regular expression: {source}")]
pub struct PatternError {
    flag: &'static str,
    pattern: String,
    source: regex::Error,
}

impl RepoFilter {
    /// A filter from the flags' values; empty lists and `None` do not filter.
    pub fn new(
        include: Option<&str>,
        exclude: Option<&str>,
        topics: Vec<String>,
        exclude_topics: Vec<String>,
    ) -> Result<Self, PatternError> {
        let anchored = |flag: &'static str, p: Option<&str>| {
            p.map(|p| {
                regex::Regex::new(&format!("^(?:{p})$")).map_err(|source| PatternError {
                    flag,
                    pattern: p.to_string(),
                    source,
                })
            })
            .transpose()
        };
        Ok(RepoFilter {
            include: anchored("--repo-include", include)?,
            exclude: anchored("--repo-exclude", exclude)?,
            topics,
            exclude_topics,
        })
    }

    /// Whether the repository `full_name` with `topics` is watched.
    pub(crate) fn allows(&self, full_name: &str, topics: &[String]) -> bool {
        let has = |wanted: &[String]| wanted.iter().any(|t| topics.contains(t));
        self.include.as_ref().is_none_or(|r| r.is_match(full_name))
            && !self.exclude.as_ref().is_some_and(|r| r.is_match(full_name))
            && (self.topics.is_empty() || has(&self.topics))
            && !has(&self.exclude_topics)
    }
}

/// What one poll cycle did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PollReport {
    pub repos: usize,
    pub runs_counted: usize,
    pub jobs_counted: usize,
    /// One line per repository whose poll failed (it is retried next cycle).
    pub errors: Vec<String>,
}

/// Where a repository's run listing starts: the cursor (or the window on a first poll), moved back
/// to cover `rerun_lookback` so re-runs of recent runs are seen, and never before the window (a run
/// stuck in `queued` for days must not make every poll list days of runs). Bounds other than the
/// cursor are floored to the hour so the URL, and with it the ETag, stays the same between polls of
/// an idle repository.
pub(crate) fn listing_start(
    cursor: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    window: Duration,
    rerun_lookback: Duration,
) -> DateTime<Utc> {
    let floor_hour = |t: DateTime<Utc>| t - Duration::seconds(t.timestamp().rem_euclid(3600));
    let window_start = floor_hour(now - window);
    let start = cursor.map_or(window_start, |c| c.max(window_start));
    if rerun_lookback <= Duration::zero() {
        return start;
    }
    start.min(floor_hour(now - rerun_lookback))
}

/// What a page of runs told us, kept so a 304 for it still yields its open runs.
#[derive(Debug, Clone, Default)]
struct PageSummary {
    open: Vec<OpenRun>,
    newest_created: Option<DateTime<Utc>>,
    reached_cursor: bool,
}

/// Polls the GitHub API and feeds the ledger.
pub(crate) struct Collector {
    client: Arc<Client>,
    scope: Scope,
    filter: RepoFilter,
    ledger: Arc<Mutex<Ledger>>,
    stats: Arc<Mutex<SelfStats>>,
    concurrency: usize,
    rerun_lookback: Duration,
    /// Watched repositories and their default branches, as last resolved.
    repos: Mutex<BTreeMap<String, Option<String>>>,
    org_pages: Mutex<HashMap<String, Vec<Repository>>>,
    run_pages: Mutex<HashMap<String, PageSummary>>,
    /// Run-listing URLs requested in the current cycle; cached pages of other URLs are dropped.
    used_urls: Mutex<HashSet<String>>,
    /// Failed reads per (run, attempt), for [`RUN_READ_TRIES`].
    run_failures: Mutex<HashMap<(u64, u32), u32>>,
}

impl Collector {
    /// A collector polling `scope` (an organisation's repositories narrowed by `filter`) through
    /// `client` with up to `concurrency` repositories at once.
    pub(crate) fn new(
        client: Arc<Client>,
        scope: Scope,
        filter: RepoFilter,
        ledger: Arc<Mutex<Ledger>>,
        stats: Arc<Mutex<SelfStats>>,
        concurrency: usize,
        rerun_lookback: Duration,
    ) -> Self {
        Collector {
            client,
            scope,
            filter,
            ledger,
            stats,
            concurrency: concurrency.max(1),
            rerun_lookback,
            repos: Mutex::new(BTreeMap::new()),
            org_pages: Mutex::new(HashMap::new()),
            run_pages: Mutex::new(HashMap::new()),
            used_urls: Mutex::new(HashSet::new()),
            run_failures: Mutex::new(HashMap::new()),
        }
    }

    /// The default branch of a watched repository, if known.
    pub(crate) fn default_branch(&self, repo: &str) -> Option<String> {
        self.repos.lock().ok()?.get(repo).cloned().flatten()
    }

    /// One full poll cycle over every watched repository.
    pub(crate) async fn poll_once(&self) -> Result<PollReport, GitHubError> {
        let started = std::time::Instant::now();
        let result = self.poll_cycle().await;
        if let Ok(mut s) = self.stats.lock() {
            s.poll_cycle_seconds = Some(started.elapsed().as_secs_f64());
        }
        result
    }

    async fn poll_cycle(&self) -> Result<PollReport, GitHubError> {
        if let Ok(mut u) = self.used_urls.lock() {
            u.clear();
        }
        let Resolved { repos, failed } = self.resolve_repos().await;
        // Without an organisation's repository list none of its repositories is polled: each one
        // known failed, and keeps its series (it is still watched as far as anyone knows).
        let mut unlisted: Vec<String> = Vec::new();
        if !failed.is_empty() {
            let known: Vec<String> = self
                .repos
                .lock()
                .map(|k| k.keys().cloned().collect())
                .unwrap_or_default();
            for repo in known {
                let org_failed = self
                    .scope
                    .org_of(&repo)
                    .is_some_and(|o| failed.iter().any(|(f, _)| f == o));
                if org_failed {
                    self.record_repo_failure(&repo);
                    unlisted.push(repo);
                }
            }
        }
        let mut errors: Vec<String> = Vec::new();
        let mut failed = failed.into_iter();
        if repos.is_empty() {
            if let Some((_, e)) = failed.next() {
                // Every listing failed: no poll at all.
                return Err(e);
            }
        }
        for (org, e) in failed {
            tracing::warn!(org, error = %e, "listing an organisation's repositories failed; retrying next cycle");
            errors.push(format!("{org}: {e}"));
        }
        let started = Utc::now();
        let watched: HashSet<String> = repos
            .iter()
            .map(|(r, _)| r.clone())
            .chain(unlisted.iter().cloned())
            .collect();
        let keep = |r: &str| watched.contains(r);
        if let Ok(mut s) = self.stats.lock() {
            s.retain_repos(&keep);
            for r in &watched {
                s.watch_repo(r, unix_seconds(started));
            }
        }
        if let Ok(mut l) = self.ledger.lock() {
            l.retain_repos(&keep);
        }
        let mut report = PollReport {
            repos: repos.len() + unlisted.len(),
            errors,
            ..PollReport::default()
        };
        let results: Vec<_> = futures::stream::iter(repos)
            .map(|(repo, default_branch)| async move {
                let r = self.poll_repo(&repo, default_branch.as_deref()).await;
                (repo, r)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (repo, result) in results {
            match result {
                Ok(outcome) => {
                    report.runs_counted += outcome.runs;
                    report.jobs_counted += outcome.jobs;
                    if let Ok(mut s) = self.stats.lock() {
                        s.repo_last_success
                            .insert(repo.clone(), unix_seconds(Utc::now()));
                        *s.repo_poll_errors.entry(repo.clone()).or_default() +=
                            outcome.failed_runs as u64;
                    }
                }
                Err(e) => {
                    tracing::warn!(repo, error = %e, "polling a repository failed; retrying next cycle");
                    self.record_repo_failure(&repo);
                    // Nothing of this repo was recorded past the failure: forget its ETags so
                    // the next cycle re-reads the pages instead of getting 304s for them.
                    let marker = format!("/repos/{repo}/");
                    self.client.retain_etags(|u| !u.contains(&marker));
                    if let Ok(mut p) = self.run_pages.lock() {
                        p.retain(|u, _| !u.contains(&marker));
                    }
                    report.errors.push(format!("{repo}: {e}"));
                }
            }
        }
        let used = self.used_urls.lock().map(|u| u.clone()).unwrap_or_default();
        if let Ok(mut p) = self.run_pages.lock() {
            p.retain(|u, _| used.contains(u));
        }
        self.client
            .retain_etags(|u| !u.contains("/actions/runs?") || used.contains(u));
        let now = Utc::now();
        if let Ok(mut l) = self.ledger.lock() {
            l.prune(now);
        }
        // A cycle in which every repository failed (a revoked token) is no poll at all.
        if report.repos == 0 || report.errors.len() < report.repos {
            if let Ok(mut s) = self.stats.lock() {
                s.last_poll_timestamp = Some(unix_seconds(now));
            }
        }
        Ok(report)
    }

    /// A failed poll of `repo`: one more error; its open runs are dropped, its queue kept as stale.
    fn record_repo_failure(&self, repo: &str) {
        if let Ok(mut s) = self.stats.lock() {
            *s.repo_poll_errors.entry(repo.to_string()).or_default() += 1;
        }
        if let Ok(mut l) = self.ledger.lock() {
            l.mark_stale(repo);
        }
    }

    /// The repositories to poll this cycle, and the organisations whose listing failed.
    async fn resolve_repos(&self) -> Resolved {
        match &self.scope {
            Scope::Orgs(orgs) => {
                let mut resolved = Resolved::default();
                let mut seen_urls = HashSet::new();
                for org in orgs {
                    match self.list_org(org, &mut seen_urls).await {
                        Ok(list) => {
                            if let Ok(mut known) = self.repos.lock() {
                                known.retain(|r, _| self.scope.org_of(r) != Some(org.as_str()));
                                known.extend(list.iter().cloned());
                            }
                            resolved.repos.extend(list);
                        }
                        Err(e) => resolved.failed.push((org.clone(), e)),
                    }
                }
                if resolved.failed.is_empty() {
                    if let Ok(mut c) = self.org_pages.lock() {
                        c.retain(|u, _| seen_urls.contains(u));
                    }
                }
                resolved
            }
            Scope::Repos(names) => {
                let mut list = Vec::with_capacity(names.len());
                for name in names {
                    let known = self.default_branch(name);
                    let default_branch = match self.client.repository(name).await {
                        Ok(Some(r)) => r.default_branch,
                        Ok(None) => known,
                        Err(e) => {
                            // The default branch only refines the branch label; keep polling runs.
                            tracing::warn!(repo = %name, error = %e, "cannot read the repository; branch label uses the allow-list only");
                            known
                        }
                    };
                    if let Ok(mut k) = self.repos.lock() {
                        k.insert(name.clone(), default_branch.clone());
                    }
                    list.push((name.clone(), default_branch));
                }
                Resolved {
                    repos: list,
                    failed: Vec::new(),
                }
            }
        }
    }

    /// The watched repositories of `org`: non-archived and allowed by the filter (pages with ETags;
    /// a `304` page is served from the previous answer).
    async fn list_org(
        &self,
        org: &str,
        seen_urls: &mut HashSet<String>,
    ) -> Result<Vec<(String, Option<String>)>, GitHubError> {
        let mut url = Some(self.client.org_repos_url(org));
        let mut found = Vec::new();
        while let Some(u) = url.take() {
            seen_urls.insert(u.clone());
            match self.client.org_repos_page(&u).await? {
                Page::Fresh { items, next } => {
                    found.extend(items.iter().cloned());
                    if let Ok(mut c) = self.org_pages.lock() {
                        c.insert(u, items);
                    }
                    url = next;
                }
                Page::NotModified { next } => {
                    let cached = self.org_pages.lock().ok().and_then(|c| c.get(&u).cloned());
                    found.extend(cached.unwrap_or_default());
                    url = next;
                }
            }
        }
        Ok(found
            .into_iter()
            .filter(|r| !r.archived && self.filter.allows(&r.full_name, &r.topics))
            .map(|r| (r.full_name, r.default_branch))
            .collect())
    }

    /// Polls one repository: counts its completed attempts and their jobs, and reads the jobs of
    /// its open runs (queued jobs, queue times of jobs that started). A run whose details fail to
    /// load is retried next cycle without holding back the others.
    async fn poll_repo(
        &self,
        repo: &str,
        default_branch: Option<&str>,
    ) -> Result<RepoOutcome, GitHubError> {
        let now = Utc::now();
        let mut outcome = RepoOutcome::default();
        let (window, cursor) = match self.ledger.lock() {
            Ok(l) => (l.window(), l.cursor(repo)),
            Err(_) => return Ok(outcome),
        };
        let since = listing_start(cursor, now, window, self.rerun_lookback);
        let mut url = Some(self.client.runs_url(repo, since));
        let mut fresh_runs: Vec<WorkflowRun> = Vec::new();
        let mut open: Vec<OpenRun> = Vec::new();
        let mut newest: Option<DateTime<Utc>> = None;
        let mut listed: Vec<String> = Vec::new();
        while let Some(u) = url.take() {
            listed.push(u.clone());
            if let Ok(mut used) = self.used_urls.lock() {
                used.insert(u.clone());
            }
            let (summary, next) = match self.client.runs_page(&u).await? {
                Page::NotModified { next } => {
                    let cached = self.run_pages.lock().ok().and_then(|c| c.get(&u).cloned());
                    (cached.unwrap_or_default(), next)
                }
                Page::Fresh { items, next } => {
                    let mut summary = PageSummary::default();
                    for run in items {
                        if run.created_at < since {
                            // Listings are newest first: everything after this was handled before.
                            summary.reached_cursor = true;
                            continue;
                        }
                        summary.newest_created = summary.newest_created.max(Some(run.created_at));
                        if !run.is_completed() {
                            summary.open.push(OpenRun {
                                id: run.id,
                                attempt: run.run_attempt.max(1),
                                status: run.status.clone().unwrap_or_else(|| "queued".into()),
                                created_at: run.created_at,
                            });
                        }
                        fresh_runs.push(run);
                    }
                    if let Ok(mut c) = self.run_pages.lock() {
                        c.insert(u, summary.clone());
                    }
                    (summary, next)
                }
            };
            open.extend(summary.open.iter().cloned());
            newest = newest.max(summary.newest_created);
            if !summary.reached_cursor {
                url = next;
            }
        }

        let mut attempts: Vec<(WorkflowRun, Option<Vec<Job>>)> = Vec::new();
        // Runs to list again next cycle, whose details failed to load.
        let mut retry: Vec<DateTime<Utc>> = Vec::new();
        for run in &fresh_runs {
            let last = run.run_attempt.max(1);
            for attempt in 1..=last {
                let jobs_counted = self
                    .ledger
                    .lock()
                    .map(|l| l.run_attempt_jobs_counted(run.id, attempt))
                    .unwrap_or(Some(true));
                if jobs_counted == Some(true) || (attempt == last && !run.is_completed()) {
                    continue;
                }
                match self.read_attempt(repo, run, attempt, last).await {
                    Ok(Some((attempt_run, jobs))) => {
                        if attempt_run.is_completed() && attempt_run.updated_at >= now - window {
                            attempts.push((attempt_run, Some(jobs)));
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        outcome.failed_runs += 1;
                        let tries = self.note_run_failure(run.id, attempt);
                        if tries >= RUN_READ_TRIES {
                            // Give up on the details; the latest attempt still counts.
                            tracing::warn!(repo, run = run.id, attempt, error = %e, "cannot read a run's details; counting it without them");
                            if attempt == last && run.is_completed() {
                                attempts.push((run.clone(), None));
                            }
                        } else {
                            tracing::warn!(repo, run = run.id, attempt, error = %e, "cannot read a run's details; retrying next cycle");
                            retry.push(run.created_at);
                        }
                    }
                }
            }
        }
        if !retry.is_empty() {
            // The next cycle must list these runs again, not get a 304 for the pages holding them.
            self.client.retain_etags(|u| !listed.iter().any(|l| l == u));
            if let Ok(mut p) = self.run_pages.lock() {
                p.retain(|u, _| !listed.contains(u));
            }
        }
        // Consecutive-failure streaks follow completion order.
        attempts.sort_by_key(|(r, _)| (r.updated_at, r.id, r.run_attempt));

        // Jobs of open runs: those waiting for a runner (the shortage signal) and those that started.
        let mut open_jobs: Vec<Job> = Vec::new();
        for run in &open {
            match self.client.attempt_jobs(repo, run.id, run.attempt).await {
                Ok(jobs) => open_jobs.extend(jobs),
                Err(e) => {
                    outcome.failed_runs += 1;
                    tracing::warn!(repo, run = run.id, error = %e, "cannot read the jobs of an open run");
                }
            }
        }

        let Ok(mut ledger) = self.ledger.lock() else {
            return Ok(outcome);
        };
        for job in &open_jobs {
            outcome.jobs += usize::from(ledger.record_job(job, now));
        }
        for (run, jobs) in &attempts {
            for job in jobs.iter().flatten() {
                outcome.jobs += usize::from(ledger.record_job(job, now));
            }
            if ledger.has_run_attempt(run.id, run.run_attempt) {
                ledger.set_jobs_counted(run.id, run.run_attempt);
            } else {
                outcome.runs += usize::from(ledger.record_run(
                    repo,
                    default_branch,
                    run,
                    now,
                    RunJobs::Counted,
                ));
            }
        }
        ledger.set_open_runs(
            repo,
            open.iter()
                .map(|r| (r.id, r.status.clone()))
                .collect::<BTreeMap<_, _>>(),
        );
        ledger.set_queued_jobs(repo, &open_jobs);
        let oldest_pending = open
            .iter()
            .map(|r| r.created_at)
            .chain(retry.iter().copied())
            .min();
        let next_cursor = match (oldest_pending, newest) {
            (Some(o), _) => o,
            (None, Some(n)) => n - CURSOR_OVERLAP,
            (None, None) => since,
        };
        ledger.set_cursor(repo, next_cursor.max(cursor.unwrap_or(since)));
        drop(ledger);
        if let Ok(mut f) = self.run_failures.lock() {
            for (run, _) in &attempts {
                f.remove(&(run.id, run.run_attempt));
            }
        }
        Ok(outcome)
    }

    /// Reads one attempt of `run` (the listing's copy for the latest) and its jobs; `None` if the
    /// attempt is not completed.
    async fn read_attempt(
        &self,
        repo: &str,
        run: &WorkflowRun,
        attempt: u32,
        last: u32,
    ) -> Result<Option<(WorkflowRun, Vec<Job>)>, GitHubError> {
        let attempt_run = if attempt == last {
            run.clone()
        } else {
            self.client.run_attempt(repo, run.id, attempt).await?
        };
        if !attempt_run.is_completed() {
            return Ok(None);
        }
        let jobs = self.client.attempt_jobs(repo, run.id, attempt).await?;
        Ok(Some((attempt_run, jobs)))
    }

    fn note_run_failure(&self, run_id: u64, attempt: u32) -> u32 {
        let Ok(mut f) = self.run_failures.lock() else {
            return RUN_READ_TRIES;
        };
        let n = f.entry((run_id, attempt)).or_default();
        *n += 1;
        *n
    }
}

/// What resolving the scope found.
#[derive(Debug, Default)]
struct Resolved {
    repos: Vec<(String, Option<String>)>,
    /// Organisations whose listing failed, with the error.
    failed: Vec<(String, GitHubError)>,
}

/// A run the listing showed as not completed.
#[derive(Debug, Clone)]
struct OpenRun {
    id: u64,
    attempt: u32,
    status: String,
    created_at: DateTime<Utc>,
}

/// What polling one repository did.
#[derive(Debug, Default)]
struct RepoOutcome {
    runs: usize,
    jobs: usize,
    /// Runs whose details failed to load this cycle.
    failed_runs: usize,
}

fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matches_case_insensitively_and_keeps_the_configured_spelling() {
        let repos = Scope::Repos(vec!["Acme/Web".into()]);
        assert_eq!(repos.label_for("acme/web").as_deref(), Some("Acme/Web"));
        assert_eq!(repos.label_for("acme/api"), None);
        let orgs = Scope::Orgs(vec!["acme".into(), "beta".into()]);
        assert!(orgs.contains("ACME/api"));
        assert!(orgs.contains("beta/web"));
        assert!(!orgs.contains("other/api"));
        assert_eq!(orgs.org_of("Beta/web"), Some("beta"));
    }

    #[test]
    fn repo_filter_anchors_its_patterns_and_reads_topics() {
        let topics = |t: &[&str]| t.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let f = RepoFilter::new(
            Some("acme/(web|api).*"),
            Some(".*-archive"),
            topics(&["ci"]),
            topics(&["deprecated"]),
        )
        .expect("patterns compile");
        assert!(f.allows("acme/web", &topics(&["ci"])));
        assert!(f.allows("acme/api-v2", &topics(&["ci", "go"])));
        assert!(!f.allows("acme/web-archive", &topics(&["ci"])), "excluded");
        assert!(!f.allows("beta/acme/web", &topics(&["ci"])), "anchored");
        assert!(!f.allows("acme/web", &topics(&["go"])), "no wanted topic");
        assert!(!f.allows("acme/web", &topics(&["ci", "deprecated"])));
        assert!(RepoFilter::default().allows("any/thing", &[]));
        let Err(e) = RepoFilter::new(Some("acme/("), None, Vec::new(), Vec::new()) else {
            panic!("a bad pattern is refused");
        };
        assert!(
            e.to_string()
                .starts_with("--repo-include `acme/(` is not a regular expression")
        );
    }

    #[test]
    fn listing_start_covers_the_rerun_lookback_on_an_hour_boundary() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:34:56Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let cursor = now - Duration::minutes(10);
        let start = listing_start(Some(cursor), now, Duration::hours(24), Duration::hours(2));
        assert_eq!(start.to_rfc3339(), "2026-01-01T10:00:00+00:00");
        assert_eq!(
            listing_start(Some(cursor), now, Duration::hours(24), Duration::zero()),
            cursor
        );
        let day_before_hour = DateTime::parse_from_rfc3339("2025-12-31T12:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(
            listing_start(None, now, Duration::hours(24), Duration::zero()),
            day_before_hour
        );
        // A cursor held back by a run queued for two days is capped at the window.
        assert_eq!(
            listing_start(
                Some(now - Duration::days(2)),
                now,
                Duration::hours(24),
                Duration::hours(2)
            ),
            day_before_hour
        );
    }
}
