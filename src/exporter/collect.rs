//! Polling: which repositories, which runs since the cursor, which attempts and jobs to fetch, fed to the ledger.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt as _;

use super::github::{Client, GitHubError, Job, Page, Repository, WorkflowRun};
use super::ledger::Ledger;
use super::metrics::SelfStats;

/// Runs created this long before the newest run seen are listed again, for runs that
/// became visible late; deduplication keeps them from being counted twice.
pub const CURSOR_OVERLAP: Duration = Duration::minutes(5);

/// Which repositories the exporter watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every non-archived repository of an organisation.
    Org(String),
    /// An explicit list of `owner/name`.
    Repos(Vec<String>),
}

impl Scope {
    /// Whether `full_name` (`owner/name`) is watched (case-insensitive, as GitHub names are).
    pub fn contains(&self, full_name: &str) -> bool {
        self.label_for(full_name).is_some()
    }

    /// The `repo` label for a watched `full_name`: the `--repos` spelling, so webhook and polled
    /// series of one repository never split over letter case; `None` if it is not watched.
    pub fn label_for(&self, full_name: &str) -> Option<String> {
        match self {
            Scope::Org(org) => full_name
                .split_once('/')
                .filter(|(owner, _)| owner.eq_ignore_ascii_case(org))
                .map(|_| full_name.to_string()),
            Scope::Repos(repos) => repos
                .iter()
                .find(|r| r.eq_ignore_ascii_case(full_name))
                .cloned(),
        }
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
pub fn listing_start(
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
    open: Vec<(u64, DateTime<Utc>)>,
    newest_created: Option<DateTime<Utc>>,
    reached_cursor: bool,
}

/// Polls the GitHub API and feeds the ledger.
pub struct Collector {
    client: Arc<Client>,
    scope: Scope,
    ledger: Arc<Mutex<Ledger>>,
    stats: Arc<Mutex<SelfStats>>,
    concurrency: usize,
    rerun_lookback: Duration,
    repos: Mutex<BTreeMap<String, Option<String>>>,
    org_pages: Mutex<HashMap<String, Vec<Repository>>>,
    run_pages: Mutex<HashMap<String, PageSummary>>,
    /// Run-listing URLs requested in the current cycle; cached pages of other URLs are dropped.
    used_urls: Mutex<HashSet<String>>,
}

impl Collector {
    /// A collector polling `scope` through `client` with up to `concurrency` repositories at once.
    pub fn new(
        client: Arc<Client>,
        scope: Scope,
        ledger: Arc<Mutex<Ledger>>,
        stats: Arc<Mutex<SelfStats>>,
        concurrency: usize,
        rerun_lookback: Duration,
    ) -> Self {
        Collector {
            client,
            scope,
            ledger,
            stats,
            concurrency: concurrency.max(1),
            rerun_lookback,
            repos: Mutex::new(BTreeMap::new()),
            org_pages: Mutex::new(HashMap::new()),
            run_pages: Mutex::new(HashMap::new()),
            used_urls: Mutex::new(HashSet::new()),
        }
    }

    /// The default branch of a watched repository, if known.
    pub fn default_branch(&self, repo: &str) -> Option<String> {
        self.repos.lock().ok()?.get(repo).cloned().flatten()
    }

    /// One full poll cycle over every watched repository.
    pub async fn poll_once(&self) -> Result<PollReport, GitHubError> {
        if let Ok(mut u) = self.used_urls.lock() {
            u.clear();
        }
        let repos = self.resolve_repos().await?;
        let mut report = PollReport {
            repos: repos.len(),
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
                Ok((runs, jobs)) => {
                    report.runs_counted += runs;
                    report.jobs_counted += jobs;
                }
                Err(e) => {
                    tracing::warn!(repo, error = %e, "polling a repository failed; retrying next cycle");
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
        if let Ok(mut s) = self.stats.lock() {
            s.last_poll_timestamp = Some(now.timestamp_millis() as f64 / 1000.0);
        }
        Ok(report)
    }

    async fn resolve_repos(&self) -> Result<Vec<(String, Option<String>)>, GitHubError> {
        match &self.scope {
            Scope::Org(org) => {
                let mut url = Some(self.client.org_repos_url(org));
                let mut found = Vec::new();
                let mut seen_urls = HashSet::new();
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
                            let cached =
                                self.org_pages.lock().ok().and_then(|c| c.get(&u).cloned());
                            found.extend(cached.unwrap_or_default());
                            url = next;
                        }
                    }
                }
                if let Ok(mut c) = self.org_pages.lock() {
                    c.retain(|u, _| seen_urls.contains(u));
                }
                let list: Vec<_> = found
                    .into_iter()
                    .filter(|r| !r.archived)
                    .map(|r| (r.full_name, r.default_branch))
                    .collect();
                if let Ok(mut known) = self.repos.lock() {
                    *known = list.iter().cloned().collect();
                }
                Ok(list)
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
                Ok(list)
            }
        }
    }

    /// Polls one repository; returns (run attempts counted, jobs counted).
    async fn poll_repo(
        &self,
        repo: &str,
        default_branch: Option<&str>,
    ) -> Result<(usize, usize), GitHubError> {
        let now = Utc::now();
        let (window, cursor) = match self.ledger.lock() {
            Ok(l) => (l.window(), l.cursor(repo)),
            Err(_) => return Ok((0, 0)),
        };
        let since = listing_start(cursor, now, window, self.rerun_lookback);
        let mut url = Some(self.client.runs_url(repo, since));
        let mut fresh_runs: Vec<WorkflowRun> = Vec::new();
        let mut open: Vec<(u64, DateTime<Utc>)> = Vec::new();
        let mut newest: Option<DateTime<Utc>> = None;
        while let Some(u) = url.take() {
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
                            summary.open.push((run.id, run.created_at));
                        }
                        fresh_runs.push(run);
                    }
                    if let Ok(mut c) = self.run_pages.lock() {
                        c.insert(u, summary.clone());
                    }
                    (summary, next)
                }
            };
            open.extend(summary.open.iter().copied());
            newest = newest.max(summary.newest_created);
            if !summary.reached_cursor {
                url = next;
            }
        }

        let mut attempts: Vec<(WorkflowRun, Vec<Job>)> = Vec::new();
        for run in &fresh_runs {
            let last = run.run_attempt.max(1);
            for attempt in 1..=last {
                let seen = self
                    .ledger
                    .lock()
                    .map(|l| l.has_run_attempt(run.id, attempt))
                    .unwrap_or(true);
                if seen || (attempt == last && !run.is_completed()) {
                    continue;
                }
                let attempt_run = if attempt == last {
                    run.clone()
                } else {
                    self.client.run_attempt(repo, run.id, attempt).await?
                };
                if !attempt_run.is_completed() || attempt_run.updated_at < now - window {
                    continue;
                }
                let jobs = self.client.attempt_jobs(repo, run.id, attempt).await?;
                attempts.push((attempt_run, jobs));
            }
        }
        // Consecutive-failure streaks follow completion order.
        attempts.sort_by_key(|(r, _)| (r.updated_at, r.id, r.run_attempt));

        let mut counted = (0, 0);
        let Ok(mut ledger) = self.ledger.lock() else {
            return Ok(counted);
        };
        for (run, jobs) in &attempts {
            for job in jobs {
                counted.1 += usize::from(ledger.record_job(job, now));
            }
            counted.0 += usize::from(ledger.record_run(repo, default_branch, run, now));
        }
        ledger.set_open_runs(
            repo,
            open.iter().map(|(id, _)| *id).collect::<BTreeSet<_>>(),
        );
        let oldest_open = open.iter().map(|(_, c)| *c).min();
        let next_cursor = match (oldest_open, newest) {
            (Some(o), _) => o,
            (None, Some(n)) => n - CURSOR_OVERLAP,
            (None, None) => since,
        };
        ledger.set_cursor(repo, next_cursor.max(cursor.unwrap_or(since)));
        Ok(counted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matches_case_insensitively_and_keeps_the_configured_spelling() {
        let repos = Scope::Repos(vec!["Acme/Web".into()]);
        assert_eq!(repos.label_for("acme/web").as_deref(), Some("Acme/Web"));
        assert_eq!(repos.label_for("acme/api"), None);
        let org = Scope::Org("acme".into());
        assert!(org.contains("ACME/api"));
        assert!(!org.contains("other/api"));
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
