//! What has been counted: per-attempt/per-job deduplication, the sliding window, cursors and the state file.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::github::{Job, WorkflowRun};
use super::metrics::{Buckets, Histogram, Metrics, Series};

/// Conclusions that count as a failure (and increment consecutive failures).
pub(crate) const FAILURE_CONCLUSIONS: &[&str] = &["failure", "timed_out", "startup_failure"];

/// Events whose runs test proposed changes: their failures never touch a default-branch streak,
/// even when the proposing branch is named like the default branch.
const PROPOSAL_EVENTS: &[&str] = &["pull_request", "pull_request_target", "merge_group"];

/// Labels that say nothing about which runner pool a job needs.
const GENERIC_LABELS: &[&str] = &[
    "self-hosted",
    "linux",
    "windows",
    "macos",
    "x64",
    "x86",
    "arm",
    "arm64",
];

/// The branch label of a run: allowed branches keep their name, others become `other`.
#[derive(Debug, Clone)]
pub struct BranchPolicy {
    allow: Vec<String>,
}

impl Default for BranchPolicy {
    fn default() -> Self {
        BranchPolicy {
            allow: vec!["main".into(), "master".into()],
        }
    }
}

impl BranchPolicy {
    /// An explicit allow-list; the repository's default branch is always allowed in addition.
    pub(crate) fn new(allow: Vec<String>) -> Self {
        BranchPolicy { allow }
    }

    /// Whether `branch` is on the allow-list.
    pub(crate) fn allows(&self, branch: &str) -> bool {
        self.allow.iter().any(|a| a == branch)
    }

    /// The `branch` label for `branch` in a repository whose default branch is `default_branch`.
    pub(crate) fn label(&self, branch: Option<&str>, default_branch: Option<&str>) -> String {
        match branch {
            Some(b) if Some(b) == default_branch || self.allow.iter().any(|a| a == b) => {
                b.to_string()
            }
            Some(_) => "other".into(),
            None => "none".into(),
        }
    }
}

/// The `runner_label` of a job: its labels minus the generic ones (`self-hosted`, OS, architecture),
/// sorted and joined by `,`; if only generic labels remain, all of them sorted and joined; `none` if empty.
pub(crate) fn runner_label(labels: &[String]) -> String {
    let mut specific: Vec<&str> = labels
        .iter()
        .map(String::as_str)
        .filter(|l| !GENERIC_LABELS.iter().any(|g| g.eq_ignore_ascii_case(l)))
        .collect();
    if specific.is_empty() {
        specific = labels.iter().map(String::as_str).collect();
    }
    specific.sort_unstable();
    specific.dedup();
    if specific.is_empty() {
        "none".into()
    } else {
        specific.join(",")
    }
}

/// Which runner labels keep their name: all (the default), or an allow-list whose other labels
/// become `other`, so a label typed into `runs-on` by anyone cannot add series.
#[derive(Debug, Clone, Default)]
pub struct RunnerLabelPolicy {
    allow: Option<Vec<String>>,
}

impl RunnerLabelPolicy {
    /// Keeps only `allow` (values of [`runner_label`], e.g. `gpu`, `a100,gpu`); empty keeps all.
    pub fn new(allow: Vec<String>) -> Self {
        RunnerLabelPolicy {
            allow: (!allow.is_empty()).then_some(allow),
        }
    }

    /// The `runner_label` of a job with `labels`.
    pub(crate) fn label(&self, labels: &[String]) -> String {
        let label = runner_label(labels);
        match &self.allow {
            Some(allow) if !allow.contains(&label) => "other".into(),
            _ => label,
        }
    }
}

/// Which runner groups keep their name as the `runner_group` label: all (the default: groups are
/// created by organisation owners, not by workflow authors), or an allow-list whose other groups
/// become `other`. A job without a group (GHES without runner groups) is `none`.
#[derive(Debug, Clone, Default)]
pub struct RunnerGroupPolicy {
    allow: Option<Vec<String>>,
}

impl RunnerGroupPolicy {
    /// Keeps only `allow`; empty keeps all.
    pub fn new(allow: Vec<String>) -> Self {
        RunnerGroupPolicy {
            allow: (!allow.is_empty()).then_some(allow),
        }
    }

    /// The `runner_group` label of a job whose runner is in `group`.
    pub(crate) fn label(&self, group: Option<&str>) -> String {
        match (group.filter(|g| !g.is_empty()), &self.allow) {
            (None, _) => "none".into(),
            (Some(g), Some(allow)) if !allow.iter().any(|a| a == g) => "other".into(),
            (Some(g), _) => g.to_string(),
        }
    }
}

/// A counted run attempt kept for the window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SeenRun {
    pub repo: String,
    pub workflow: String,
    pub run_id: u64,
    pub attempt: u32,
    pub conclusion: String,
    pub completed_at: DateTime<Utc>,
    /// Whether the attempt's jobs were read (a run counted from a webhook has not had them yet).
    #[serde(default = "counted")]
    pub jobs_counted: bool,
}

fn counted() -> bool {
    true
}

/// Failed runs in a row of one workflow file on a repository's default branch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Streak {
    pub repo: String,
    pub workflow_path: String,
    /// Display name of the latest run.
    pub workflow: String,
    pub failures: u64,
    /// Completion of the latest run that changed it; streaks of workflows without a run for a
    /// whole window (deleted, disabled, renamed files) are dropped.
    pub last_run_at: DateTime<Utc>,
}

/// A counted job attempt kept for the window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SeenJob {
    pub job_id: u64,
    pub attempt: u32,
    pub runner_label: String,
    /// None when the job's queueing time is unknown (a webhook delivery without `created_at`).
    pub queue_seconds: Option<f64>,
    pub started_at: DateTime<Utc>,
    /// Whether its completion (runner time) was counted too.
    #[serde(default)]
    pub completed: bool,
}

/// The state file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// Per repository: runs created before this were fully processed.
    pub cursors: BTreeMap<String, DateTime<Utc>>,
    pub(crate) runs: Vec<SeenRun>,
    pub(crate) jobs: Vec<SeenJob>,
    /// Default-branch failure streaks (version 2; version 1's name-keyed streaks are dropped).
    #[serde(default)]
    pub(crate) streaks: Vec<Streak>,
}

/// What the state file can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl State {
    /// Loads `path`; a missing file is an empty state (first start).
    pub fn load(path: &Path) -> Result<State, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
                path: path.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

/// The state file's content borrowed from a ledger, so saving copies nothing.
#[derive(Serialize)]
struct StateRef<'a> {
    version: u32,
    cursors: &'a BTreeMap<String, DateTime<Utc>>,
    runs: &'a [SeenRun],
    jobs: &'a [SeenJob],
    streaks: Vec<&'a Streak>,
}

fn write_atomically(path: &Path, value: &impl Serialize) -> Result<(), StateError> {
    use std::io::Write as _;
    let err = |source| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(err)?;
    let mut out = std::io::BufWriter::new(file);
    serde_json::to_writer(&mut out, value).map_err(|e| err(std::io::Error::other(e)))?;
    out.flush().map_err(err)?;
    out.get_ref().sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Whether a run attempt's jobs are counted when the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunJobs {
    /// The caller read the jobs and counts them with the run (a poll).
    Counted,
    /// Not known yet (a webhook delivery): the next poll reads them.
    Pending,
}

/// Counts each run attempt and job attempt once, and keeps the window the derived gauges need.
#[derive(Debug)]
pub struct Ledger {
    window: Duration,
    branches: BranchPolicy,
    runner_labels: RunnerLabelPolicy,
    runner_groups: RunnerGroupPolicy,
    buckets: Buckets,
    /// Counted attempts, and whether their jobs were read.
    seen_runs: HashMap<(u64, u32), bool>,
    runs: Vec<SeenRun>,
    /// Counted job attempts, and whether their completion was counted too.
    seen_jobs: HashMap<(u64, u32), bool>,
    jobs: Vec<SeenJob>,
    cursors: BTreeMap<String, DateTime<Utc>>,
    /// Per repository: open run id -> status.
    open_runs: BTreeMap<String, BTreeMap<u64, String>>,
    /// Per repository: job id -> (runner label, queued since) of jobs waiting for a runner.
    queued_jobs: BTreeMap<String, BTreeMap<u64, (String, DateTime<Utc>)>>,
    /// Repositories whose last poll failed: their `queued_jobs` are as of an earlier poll.
    stale_queues: BTreeSet<String>,
    /// Key: repo, workflow file.
    streaks: BTreeMap<[String; 2], Streak>,
    metrics: Metrics,
    /// Whether `/metrics` was scraped yet: series born later are served empty once.
    scraped: bool,
    dirty: bool,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(window: Duration, branches: BranchPolicy) -> Self {
        Ledger {
            window,
            branches,
            runner_labels: RunnerLabelPolicy::default(),
            runner_groups: RunnerGroupPolicy::default(),
            buckets: Buckets::default(),
            seen_runs: HashMap::new(),
            runs: Vec::new(),
            seen_jobs: HashMap::new(),
            jobs: Vec::new(),
            cursors: BTreeMap::new(),
            open_runs: BTreeMap::new(),
            queued_jobs: BTreeMap::new(),
            stale_queues: BTreeSet::new(),
            streaks: BTreeMap::new(),
            metrics: Metrics::default(),
            scraped: false,
            dirty: false,
        }
    }

    /// The same ledger with `policy` naming runner labels from now on.
    pub fn with_runner_labels(mut self, policy: RunnerLabelPolicy) -> Self {
        self.runner_labels = policy;
        self
    }

    /// The same ledger with `policy` naming runner groups from now on.
    pub fn with_runner_groups(mut self, policy: RunnerGroupPolicy) -> Self {
        self.runner_groups = policy;
        self
    }

    /// The same ledger with histograms created from now on over `buckets`.
    pub fn with_buckets(mut self, buckets: Buckets) -> Self {
        self.buckets = buckets;
        self
    }

    /// A ledger resuming from a saved state: what it lists is never counted again.
    pub fn from_state(window: Duration, branches: BranchPolicy, state: State) -> Self {
        let mut l = Ledger::new(window, branches);
        l.seen_runs = state
            .runs
            .iter()
            .map(|r| ((r.run_id, r.attempt), r.jobs_counted))
            .collect();
        l.seen_jobs = state
            .jobs
            .iter()
            .map(|j| ((j.job_id, j.attempt), j.completed))
            .collect();
        l.runs = state.runs;
        l.jobs = state.jobs;
        l.cursors = state.cursors;
        for st in state.streaks {
            l.streaks
                .insert([st.repo.clone(), st.workflow_path.clone()], st);
        }
        l
    }

    /// The state to persist.
    #[cfg(test)] // only the unit tests use it
    pub(crate) fn to_state(&self) -> State {
        State {
            version: 2,
            cursors: self.cursors.clone(),
            runs: self.runs.clone(),
            jobs: self.jobs.clone(),
            streaks: self.streaks.values().cloned().collect(),
        }
    }

    /// Whether something changed since the last `take_dirty`.
    pub(crate) fn take_dirty(&mut self) -> bool {
        std::mem::replace(&mut self.dirty, false)
    }

    /// Writes the state file straight from the ledger (no copy of the window), atomically.
    /// On failure the ledger stays dirty so the next flush tries again.
    pub fn save_state(&mut self, path: &Path) -> Result<(), StateError> {
        let state = StateRef {
            version: 2,
            cursors: &self.cursors,
            runs: &self.runs,
            jobs: &self.jobs,
            streaks: self.streaks.values().collect(),
        };
        let result = write_atomically(path, &state);
        self.dirty = result.is_err();
        result
    }

    /// The window the failure rate and queue average cover.
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// The poll cursor of `repo`.
    pub(crate) fn cursor(&self, repo: &str) -> Option<DateTime<Utc>> {
        self.cursors.get(repo).copied()
    }

    /// Moves the poll cursor of `repo`.
    pub(crate) fn set_cursor(&mut self, repo: &str, at: DateTime<Utc>) {
        if self.cursors.get(repo) != Some(&at) {
            self.cursors.insert(repo.to_string(), at);
            self.dirty = true;
        }
    }

    /// Whether this attempt has been counted already.
    pub(crate) fn has_run_attempt(&self, run_id: u64, attempt: u32) -> bool {
        self.seen_runs.contains_key(&(run_id, attempt))
    }

    /// `None`: attempt not counted; `Some(false)`: counted (from a webhook) but its jobs not read;
    /// `Some(true)`: counted with its jobs.
    pub(crate) fn run_attempt_jobs_counted(&self, run_id: u64, attempt: u32) -> Option<bool> {
        self.seen_runs.get(&(run_id, attempt)).copied()
    }

    /// Records that the jobs of a counted attempt were read.
    pub(crate) fn set_jobs_counted(&mut self, run_id: u64, attempt: u32) {
        if let Some(done) = self.seen_runs.get_mut(&(run_id, attempt)) {
            if !*done {
                *done = true;
                if let Some(r) = self
                    .runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.run_id == run_id && r.attempt == attempt)
                {
                    r.jobs_counted = true;
                }
                self.dirty = true;
            }
        }
    }

    /// Replaces the not-yet-completed runs of `repo` (id -> status; a poll sees all of them).
    pub(crate) fn set_open_runs(&mut self, repo: &str, runs: BTreeMap<u64, String>) {
        self.open_runs.insert(repo.to_string(), runs);
    }

    /// Replaces the jobs of `repo` waiting for a runner (a poll reads the jobs of every open run).
    pub(crate) fn set_queued_jobs(&mut self, repo: &str, jobs: &[Job]) {
        let queued = jobs
            .iter()
            .filter(|j| j.waits_for_runner())
            .filter_map(|j| Some((j.id, (self.runner_labels.label(&j.labels), j.created_at?))))
            .collect();
        self.queued_jobs.insert(repo.to_string(), queued);
        self.stale_queues.remove(repo);
    }

    /// Tracks a run that a webhook reported as requested, queued or in progress.
    pub(crate) fn mark_run_open(&mut self, repo: &str, run_id: u64, status: &str) {
        self.open_runs
            .entry(repo.to_string())
            .or_default()
            .insert(run_id, status.to_string());
    }

    fn mark_run_closed(&mut self, repo: &str, run_id: u64) {
        if let Some(set) = self.open_runs.get_mut(repo) {
            set.remove(&run_id);
        }
    }

    /// A webhook's view of one job: waiting for a runner, or not any more.
    pub(crate) fn job_update(&mut self, repo: &str, job: &Job) {
        let label = self.runner_labels.label(&job.labels);
        let queue = self.queued_jobs.entry(repo.to_string()).or_default();
        match job.created_at.filter(|_| job.waits_for_runner()) {
            Some(created) => {
                queue.insert(job.id, (label, created));
            }
            None => {
                queue.remove(&job.id);
            }
        }
    }

    /// After a failed poll of `repo`: its open-run counts are forgotten (a stale count is worse
    /// than none), but its queued jobs are kept and marked stale. A job that waited before the
    /// outage still waits as far as anyone knows, and dropping it would resolve the waiting-jobs
    /// alert exactly while GitHub or the token fails.
    pub(crate) fn mark_stale(&mut self, repo: &str) {
        self.open_runs.remove(repo);
        if self.queued_jobs.contains_key(repo) {
            self.stale_queues.insert(repo.to_string());
        }
    }

    /// Drops everything of repositories no longer watched (removed, archived, out of scope),
    /// including their failure streaks and their run series: an organisation's churn must not
    /// leave series behind for ever.
    pub(crate) fn retain_repos(&mut self, keep: &dyn Fn(&str) -> bool) {
        let m = &mut self.metrics;
        m.runs_total.retain(|k, _| keep(&k[0]));
        m.runs_by_branch_total.retain(|k, _| keep(&k[0]));
        m.duration.retain(|k, _| keep(&k[0]));
        self.open_runs.retain(|r, _| keep(r));
        self.queued_jobs.retain(|r, _| keep(r));
        self.stale_queues.retain(|r| keep(r));
        let before = self.streaks.len();
        self.streaks.retain(|[r, _], _| keep(r));
        self.dirty |= before != self.streaks.len();
    }

    /// Counts a completed run attempt once; `jobs` says whether its jobs are counted with it.
    /// Returns whether it was counted: attempts not completed, already counted, or completed
    /// before the window are not.
    pub fn record_run(
        &mut self,
        repo: &str,
        default_branch: Option<&str>,
        run: &WorkflowRun,
        now: DateTime<Utc>,
        jobs: RunJobs,
    ) -> bool {
        let jobs_counted = jobs == RunJobs::Counted;
        if !run.is_completed() {
            return false;
        }
        self.mark_run_closed(repo, run.id);
        let completed_at = run.updated_at;
        if completed_at < now - self.window
            || self.seen_runs.contains_key(&(run.id, run.run_attempt))
        {
            return false;
        }
        self.seen_runs
            .insert((run.id, run.run_attempt), jobs_counted);
        let path = run.workflow_path().to_string();
        let workflow = run.workflow_name().to_string();
        let conclusion = run.conclusion.clone().unwrap_or_else(|| "unknown".into());
        let branch = self
            .branches
            .label(run.head_branch.as_deref(), default_branch);
        let visible = !self.scraped;
        let m = &mut self.metrics;
        m.runs_total
            .entry([
                repo.into(),
                path.clone(),
                workflow.clone(),
                branch.clone(),
                run.event.clone(),
                conclusion.clone(),
            ])
            .or_insert_with(|| Series::new(0, visible))
            .value += 1;
        m.runs_by_branch_total
            .entry([repo.into(), branch, conclusion.clone()])
            .or_insert_with(|| Series::new(0, visible))
            .value += 1;
        if let Some(started) = run.run_started_at {
            let secs = (completed_at - started).num_milliseconds().max(0) as f64 / 1000.0;
            m.duration
                .entry([
                    repo.into(),
                    path.clone(),
                    workflow.clone(),
                    conclusion.clone(),
                ])
                .or_insert_with(|| {
                    Series::new(Histogram::new(self.buckets.duration.clone()), visible)
                })
                .value
                .observe(secs);
        }
        if on_default_branch(run, default_branch, &self.branches) {
            let streak = self
                .streaks
                .entry([repo.into(), path.clone()])
                .or_insert_with(|| Streak {
                    repo: repo.into(),
                    workflow_path: path.clone(),
                    workflow: workflow.clone(),
                    failures: 0,
                    last_run_at: completed_at,
                });
            // Out-of-order completions (a webhook before an older polled run) must not undo a newer state.
            if completed_at >= streak.last_run_at {
                if conclusion == "success" {
                    streak.failures = 0;
                } else if FAILURE_CONCLUSIONS.contains(&conclusion.as_str()) {
                    streak.failures += 1;
                }
                streak.workflow = workflow.clone();
                streak.last_run_at = completed_at;
            }
        }
        self.runs.push(SeenRun {
            repo: repo.into(),
            workflow,
            run_id: run.id,
            attempt: run.run_attempt,
            conclusion,
            completed_at,
            jobs_counted,
        });
        self.dirty = true;
        true
    }

    /// Counts a job attempt once when it started on a runner ([`Job::started_on_runner`]): its
    /// queue time if known; and once when it completed: its runner time (started to completed)
    /// by runner label and conclusion. A job seen completed at its first sighting counts both.
    /// Returns whether anything was counted.
    pub fn record_job(&mut self, job: &Job, now: DateTime<Utc>) -> bool {
        let Some(started_at) = job.started_at.filter(|_| job.started_on_runner()) else {
            return false;
        };
        if started_at < now - self.window {
            return false;
        }
        let key = (job.id, job.run_attempt);
        let completed_at = job
            .completed_at
            .filter(|_| job.status.as_deref() == Some("completed"));
        let already = self.seen_jobs.get(&key).copied();
        if already == Some(true) || (already == Some(false) && completed_at.is_none()) {
            return false;
        }
        let label = self.runner_labels.label(&job.labels);
        let visible = !self.scraped;
        if already.is_none() {
            let queue_seconds = job
                .created_at
                .map(|c| (started_at - c).num_milliseconds().max(0) as f64 / 1000.0);
            if let Some(secs) = queue_seconds {
                self.metrics
                    .queue_time
                    .entry(label.clone())
                    .or_insert_with(|| {
                        Series::new(Histogram::new(self.buckets.queue_time.clone()), visible)
                    })
                    .value
                    .observe(secs);
            }
            self.jobs.push(SeenJob {
                job_id: job.id,
                attempt: job.run_attempt,
                runner_label: label.clone(),
                queue_seconds,
                started_at,
                completed: false,
            });
        }
        if let Some(done) = completed_at {
            let secs = (done - started_at).num_milliseconds().max(0) as f64 / 1000.0;
            let conclusion = job.conclusion.clone().unwrap_or_else(|| "unknown".into());
            let group = self.runner_groups.label(job.runner_group_name.as_deref());
            self.metrics
                .job_duration
                .entry([label, group, conclusion])
                .or_insert_with(|| {
                    Series::new(Histogram::new(self.buckets.job_duration.clone()), visible)
                })
                .value
                .observe(secs);
            // Completion follows the start closely, so the entry is near the end.
            if let Some(j) = self
                .jobs
                .iter_mut()
                .rev()
                .find(|j| (j.job_id, j.attempt) == key)
            {
                j.completed = true;
            }
        }
        self.seen_jobs.insert(key, completed_at.is_some());
        self.dirty = true;
        true
    }

    /// Forgets attempts and jobs older than the window (they can no longer be counted anyway).
    pub(crate) fn prune(&mut self, now: DateTime<Utc>) {
        let horizon = now - self.window;
        retain_since(
            &mut self.runs,
            horizon,
            |r| r.completed_at,
            |r| {
                self.seen_runs.remove(&(r.run_id, r.attempt));
            },
        );
        let before = self.streaks.len();
        self.streaks.retain(|_, st| st.last_run_at >= horizon);
        self.dirty |= before != self.streaks.len();
        retain_since(
            &mut self.jobs,
            horizon,
            |j| j.started_at,
            |j| {
                self.seen_jobs.remove(&(j.job_id, j.attempt));
            },
        );
    }

    /// The metric values, with the gauges that depend on `now` computed.
    pub fn metrics(&self, now: DateTime<Utc>) -> Metrics {
        let mut m = self.metrics.clone();
        m.consecutive_failures = self
            .streaks
            .values()
            .map(|st| {
                (
                    [
                        st.repo.clone(),
                        st.workflow_path.clone(),
                        st.workflow.clone(),
                    ],
                    st.failures,
                )
            })
            .collect();
        for (repo, runs) in &self.open_runs {
            // Queued and in_progress are always present, so "none" reads as 0, not as no data.
            for status in ["queued", "in_progress"] {
                m.in_progress.insert([repo.clone(), status.into()], 0);
            }
            for status in runs.values() {
                *m.in_progress
                    .entry([repo.clone(), status.clone()])
                    .or_default() += 1;
            }
        }
        for label in self.metrics.queue_time.keys() {
            m.jobs_queued.insert(label.clone(), 0);
            m.oldest_queued_age.insert(label.clone(), 0.0);
            m.jobs_queued_stale.insert(label.clone(), 0);
        }
        for (repo, queue) in &self.queued_jobs {
            let stale = self.stale_queues.contains(repo);
            for (label, _) in queue.values() {
                *m.jobs_queued_stale.entry(label.clone()).or_default() += u64::from(stale);
            }
        }
        for (label, since) in self.queued_jobs.values().flat_map(|q| q.values()) {
            *m.jobs_queued.entry(label.clone()).or_default() += 1;
            let age = (now - *since).num_milliseconds().max(0) as f64 / 1000.0;
            let oldest = m.oldest_queued_age.entry(label.clone()).or_default();
            *oldest = oldest.max(age);
        }
        m
    }

    /// The metric values for a scrape: series born since the previous scrape are served empty
    /// this once, then revealed.
    pub(crate) fn metrics_for_scrape(&mut self, now: DateTime<Utc>) -> Metrics {
        let m = self.metrics(now);
        self.metrics.reveal();
        self.scraped = true;
        m
    }
}

/// Whether a run belongs to its repository's default-branch history: pushed (or scheduled, or
/// dispatched) on the default branch, not a pull request's. Without a known default branch, the
/// allow-list's `main`/`master` stand in.
fn on_default_branch(
    run: &WorkflowRun,
    default_branch: Option<&str>,
    branches: &BranchPolicy,
) -> bool {
    if PROPOSAL_EVENTS.contains(&run.event.as_str()) {
        return false;
    }
    match (run.head_branch.as_deref(), default_branch) {
        (Some(b), Some(d)) => b == d,
        (Some(b), None) => branches.allows(b),
        (None, _) => false,
    }
}

/// Keeps the entries dated (by `at`) from `horizon` on; `forget` is called with each one dropped.
fn retain_since<T>(
    entries: &mut Vec<T>,
    horizon: DateTime<Utc>,
    at: impl Fn(&T) -> DateTime<Utc>,
    mut forget: impl FnMut(&T),
) {
    entries.retain(|e| {
        let keep = at(e) >= horizon;
        if !keep {
            forget(e);
        }
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn runner_label_drops_generic_labels_and_sorts() {
        assert_eq!(
            runner_label(&s(&["self-hosted", "Linux", "X64", "gpu", "a100"])),
            "a100,gpu"
        );
        assert_eq!(runner_label(&s(&["arc-runner-set"])), "arc-runner-set");
        assert_eq!(
            runner_label(&s(&["self-hosted", "linux"])),
            "linux,self-hosted"
        );
        assert_eq!(runner_label(&[]), "none");
    }

    fn finished(
        id: u64,
        path: &str,
        branch: &str,
        event: &str,
        conclusion: &str,
        at: DateTime<Utc>,
    ) -> WorkflowRun {
        WorkflowRun {
            id,
            name: Some("CI".into()),
            head_branch: Some(branch.into()),
            event: event.into(),
            status: Some("completed".into()),
            conclusion: Some(conclusion.into()),
            run_attempt: 1,
            created_at: at,
            updated_at: at,
            run_started_at: Some(at),
            path: Some(path.into()),
        }
    }

    #[test]
    fn streaks_count_default_branch_failures_per_workflow_file_and_age_out() {
        let now = Utc::now();
        let mut l = Ledger::new(Duration::hours(24), BranchPolicy::default());
        let t = |s: i64| now - Duration::hours(2) + Duration::seconds(s);
        let ci = ".github/workflows/ci.yml";
        let nightly = ".github/workflows/nightly.yml";
        let runs = [
            finished(1, ci, "main", "push", "failure", t(1)),
            finished(2, ci, "trunk-fix", "pull_request", "failure", t(2)),
            finished(3, ci, "main", "pull_request", "failure", t(3)),
            finished(4, ci, "feature", "push", "success", t(4)),
            finished(5, ci, "trunk", "schedule", "failure", t(5)),
            finished(6, ci, "trunk", "push", "timed_out", t(6)),
            finished(7, nightly, "trunk", "schedule", "success", t(7)),
        ];
        for r in &runs {
            assert!(l.record_run("acme/web", Some("trunk"), r, now, RunJobs::Counted));
        }
        let streak = |m: &Metrics, path: &str| {
            m.consecutive_failures
                .get(&["acme/web".into(), path.into(), "CI".into()])
                .copied()
        };
        let m = l.metrics(now);
        // Pull requests (even from a branch named like the default) and other branches never count;
        // the feature branch's success does not reset trunk's streak; "main" is not this repo's default.
        assert_eq!(streak(&m, ci), Some(2));
        assert_eq!(streak(&m, nightly), Some(0), "same name, another file");
        // A workflow without a default-branch run for a whole window loses its streak.
        l.prune(now + Duration::hours(23));
        assert_eq!(streak(&l.metrics(now), ci), None);
    }

    fn gpu_job(status: &str, conclusion: Option<&str>, t0: DateTime<Utc>) -> Job {
        Job {
            id: 7,
            run_id: 1,
            run_attempt: 1,
            status: Some(status.into()),
            conclusion: conclusion.map(String::from),
            created_at: Some(t0),
            started_at: Some(t0 + Duration::seconds(30)),
            completed_at: conclusion.map(|_| t0 + Duration::seconds(30 + 600)),
            labels: s(&["self-hosted", "gpu"]),
            runner_name: Some("runner-gpu-abc".into()),
            runner_group_name: Some("gpu-pool".into()),
        }
    }

    #[test]
    fn a_job_counts_its_queue_time_when_it_starts_and_its_runner_time_once_when_it_completes() {
        let now = Utc::now();
        let t0 = now - Duration::hours(1);
        let mut l = Ledger::new(Duration::hours(24), BranchPolicy::default());
        let runner_time = |l: &Ledger| {
            l.metrics(now)
                .job_duration
                .get(&["gpu", "gpu-pool", "failure"].map(String::from))
                .map(|h| (h.value.count(), h.value.sum()))
        };
        assert!(l.record_job(&gpu_job("in_progress", None, t0), now));
        assert!(!l.record_job(&gpu_job("in_progress", None, t0), now));
        assert_eq!(runner_time(&l), None, "still running");
        assert!(l.record_job(&gpu_job("completed", Some("failure"), t0), now));
        assert!(!l.record_job(&gpu_job("completed", Some("failure"), t0), now));
        assert_eq!(runner_time(&l), Some((1, 600.0)));
        let queue = l.metrics(now).queue_time["gpu"].value.clone();
        assert_eq!((queue.count(), queue.sum()), (1, 30.0), "queue time once");

        // A restarted exporter neither counts the completed job again nor misses one that was
        // running: it completes after the restart and counts then.
        let mut running = gpu_job("in_progress", None, t0);
        running.id = 8;
        assert!(l.record_job(&running, now));
        let mut l = Ledger::from_state(l.window(), BranchPolicy::default(), l.to_state());
        assert!(!l.record_job(&gpu_job("completed", Some("failure"), t0), now));
        let mut done = gpu_job("completed", Some("failure"), t0);
        done.id = 8;
        assert!(l.record_job(&done, now));
        assert_eq!(
            runner_time(&l),
            Some((1, 600.0)),
            "only job 8 since the restart"
        );
        assert!(
            !l.metrics(now).queue_time.contains_key("gpu"),
            "job 8's queue time was counted before the restart"
        );

        // Skipped jobs and jobs no runner took have no runner time.
        let mut skipped = gpu_job("completed", Some("skipped"), t0);
        skipped.id = 9;
        let mut cancelled_queued = gpu_job("completed", Some("cancelled"), t0);
        cancelled_queued.id = 10;
        cancelled_queued.runner_name = None;
        assert!(!l.record_job(&skipped, now));
        assert!(!l.record_job(&cancelled_queued, now));
        assert_eq!(l.metrics(now).job_duration.len(), 1);
    }

    #[test]
    fn runner_label_allow_list_folds_other_labels_and_unwatched_repos_lose_their_series() {
        let p = RunnerLabelPolicy::new(s(&["gpu", "a100,gpu"]));
        assert_eq!(p.label(&s(&["self-hosted", "gpu"])), "gpu");
        assert_eq!(p.label(&s(&["gpu", "a100"])), "a100,gpu");
        assert_eq!(p.label(&s(&["self-hosted", "my-typo"])), "other");
        assert_eq!(
            RunnerLabelPolicy::default().label(&s(&["my-typo"])),
            "my-typo"
        );

        let now = Utc::now();
        let mut l = Ledger::new(Duration::hours(24), BranchPolicy::default()).with_runner_labels(p);
        let mut typo = gpu_job("completed", Some("success"), now - Duration::hours(1));
        typo.labels = s(&["self-hosted", "my-typo"]);
        assert!(l.record_job(&typo, now));
        let m = l.metrics(now);
        assert_eq!(m.queue_time.keys().collect::<Vec<_>>(), ["other"]);
        assert!(
            m.job_duration
                .contains_key(&["other", "gpu-pool", "success"].map(String::from))
        );

        let at = now - Duration::hours(1);
        let ci = ".github/workflows/ci.yml";
        assert!(l.record_run(
            "acme/web",
            None,
            &finished(1, ci, "main", "push", "success", at),
            now,
            RunJobs::Counted
        ));
        assert!(l.record_run(
            "acme/old",
            None,
            &finished(2, ci, "main", "push", "failure", at),
            now,
            RunJobs::Counted
        ));
        l.retain_repos(&|r| r == "acme/web");
        let m = l.metrics(now);
        for repos in [
            m.runs_total
                .keys()
                .map(|k| k[0].as_str())
                .collect::<Vec<_>>(),
            m.runs_by_branch_total
                .keys()
                .map(|k| k[0].as_str())
                .collect(),
            m.duration.keys().map(|k| k[0].as_str()).collect(),
            m.consecutive_failures
                .keys()
                .map(|k| k[0].as_str())
                .collect(),
        ] {
            assert_eq!(repos, ["acme/web"]);
        }
    }

    #[test]
    fn runner_group_allow_list_folds_other_groups() {
        let p = RunnerGroupPolicy::new(s(&["gpu-pool"]));
        assert_eq!(p.label(Some("gpu-pool")), "gpu-pool");
        assert_eq!(p.label(Some("Default")), "other");
        assert_eq!(p.label(None), "none");
        assert_eq!(
            RunnerGroupPolicy::default().label(Some("Default")),
            "Default"
        );
        assert_eq!(RunnerGroupPolicy::default().label(Some("")), "none");

        let now = Utc::now();
        let mut l = Ledger::new(Duration::hours(24), BranchPolicy::default())
            .with_runner_groups(p)
            .with_buckets(Buckets {
                job_duration: vec![60.0, 3600.0].into(),
                ..Buckets::default()
            });
        let mut job = gpu_job("completed", Some("success"), now - Duration::hours(1));
        job.runner_group_name = Some("Default".into());
        assert!(l.record_job(&job, now));
        let m = l.metrics(now);
        let h = &m.job_duration[&["gpu", "other", "success"].map(String::from)].value;
        assert_eq!(
            h.cumulative(),
            vec![(60.0, 0), (3600.0, 1), (f64::INFINITY, 1)]
        );
    }

    #[test]
    fn branch_policy_keeps_default_and_allowed_branches() {
        let p = BranchPolicy::default();
        assert_eq!(p.label(Some("main"), Some("develop")), "main");
        assert_eq!(p.label(Some("develop"), Some("develop")), "develop");
        assert_eq!(p.label(Some("feature/x"), Some("develop")), "other");
        let p = BranchPolicy::new(s(&["release"]));
        assert_eq!(p.label(Some("main"), Some("trunk")), "other");
        assert_eq!(p.label(Some("release"), Some("trunk")), "release");
    }
}
