//! What has been counted: per-attempt/per-job deduplication, the sliding window, cursors and the state file.
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::github::{Job, WorkflowRun};
use super::metrics::{DURATION_BUCKETS, Histogram, Metrics, QUEUE_TIME_BUCKETS};

/// Conclusions that count as a failure (and increment consecutive failures).
pub const FAILURE_CONCLUSIONS: &[&str] = &["failure", "timed_out", "startup_failure"];

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
    pub fn new(allow: Vec<String>) -> Self {
        BranchPolicy { allow }
    }

    /// The `branch` label for `branch` in a repository whose default branch is `default_branch`.
    pub fn label(&self, branch: Option<&str>, default_branch: Option<&str>) -> String {
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
pub fn runner_label(labels: &[String]) -> String {
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

/// A counted run attempt kept for the window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeenRun {
    pub repo: String,
    pub workflow: String,
    pub run_id: u64,
    pub attempt: u32,
    pub conclusion: String,
    pub completed_at: DateTime<Utc>,
}

/// A counted job attempt kept for the window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeenJob {
    pub job_id: u64,
    pub attempt: u32,
    pub runner_label: String,
    pub queue_seconds: f64,
    pub started_at: DateTime<Utc>,
}

/// The state file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// Per repository: runs created before this were fully processed.
    pub cursors: BTreeMap<String, DateTime<Utc>>,
    pub runs: Vec<SeenRun>,
    pub jobs: Vec<SeenJob>,
    /// `(repo, workflow, count)`.
    pub consecutive_failures: Vec<(String, String, u64)>,
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

    /// Writes `path` atomically (temporary file in the same directory, then rename).
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        write_atomically(path, self)
    }
}

/// The state file's content borrowed from a ledger, so saving copies nothing.
#[derive(Serialize)]
struct StateRef<'a> {
    version: u32,
    cursors: &'a BTreeMap<String, DateTime<Utc>>,
    runs: &'a [SeenRun],
    jobs: &'a [SeenJob],
    consecutive_failures: Vec<(&'a str, &'a str, u64)>,
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

/// Counts each run attempt and job attempt once, and keeps the window the derived gauges need.
#[derive(Debug)]
pub struct Ledger {
    window: Duration,
    branches: BranchPolicy,
    seen_runs: HashSet<(u64, u32)>,
    runs: Vec<SeenRun>,
    seen_jobs: HashSet<(u64, u32)>,
    jobs: Vec<SeenJob>,
    cursors: BTreeMap<String, DateTime<Utc>>,
    open_runs: BTreeMap<String, BTreeSet<u64>>,
    metrics: Metrics,
    dirty: bool,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(window: Duration, branches: BranchPolicy) -> Self {
        Ledger {
            window,
            branches,
            seen_runs: HashSet::new(),
            runs: Vec::new(),
            seen_jobs: HashSet::new(),
            jobs: Vec::new(),
            cursors: BTreeMap::new(),
            open_runs: BTreeMap::new(),
            metrics: Metrics::default(),
            dirty: false,
        }
    }

    /// A ledger resuming from a saved state: what it lists is never counted again.
    pub fn from_state(window: Duration, branches: BranchPolicy, state: State) -> Self {
        let mut l = Ledger::new(window, branches);
        l.seen_runs = state.runs.iter().map(|r| (r.run_id, r.attempt)).collect();
        l.seen_jobs = state.jobs.iter().map(|j| (j.job_id, j.attempt)).collect();
        l.runs = state.runs;
        l.jobs = state.jobs;
        l.cursors = state.cursors;
        for (repo, wf, n) in state.consecutive_failures {
            l.metrics.consecutive_failures.insert([repo, wf], n);
        }
        l
    }

    /// The state to persist.
    pub fn to_state(&self) -> State {
        State {
            version: 1,
            cursors: self.cursors.clone(),
            runs: self.runs.clone(),
            jobs: self.jobs.clone(),
            consecutive_failures: self
                .metrics
                .consecutive_failures
                .iter()
                .map(|([r, w], n)| (r.clone(), w.clone(), *n))
                .collect(),
        }
    }

    /// Whether something changed since the last `take_dirty`.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::replace(&mut self.dirty, false)
    }

    /// Writes the state file straight from the ledger (no copy of the window), atomically.
    /// On failure the ledger stays dirty so the next flush tries again.
    pub fn save_state(&mut self, path: &Path) -> Result<(), StateError> {
        let state = StateRef {
            version: 1,
            cursors: &self.cursors,
            runs: &self.runs,
            jobs: &self.jobs,
            consecutive_failures: self
                .metrics
                .consecutive_failures
                .iter()
                .map(|([r, w], n)| (r.as_str(), w.as_str(), *n))
                .collect(),
        };
        let result = write_atomically(path, &state);
        self.dirty = result.is_err();
        result
    }

    /// The window the failure rate and queue average cover.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The poll cursor of `repo`.
    pub fn cursor(&self, repo: &str) -> Option<DateTime<Utc>> {
        self.cursors.get(repo).copied()
    }

    /// Moves the poll cursor of `repo`.
    pub fn set_cursor(&mut self, repo: &str, at: DateTime<Utc>) {
        if self.cursors.get(repo) != Some(&at) {
            self.cursors.insert(repo.to_string(), at);
            self.dirty = true;
        }
    }

    /// Whether this attempt has been counted already.
    pub fn has_run_attempt(&self, run_id: u64, attempt: u32) -> bool {
        self.seen_runs.contains(&(run_id, attempt))
    }

    /// Replaces the set of not-yet-completed runs of `repo` (a poll sees all of them).
    pub fn set_open_runs(&mut self, repo: &str, ids: BTreeSet<u64>) {
        self.metrics
            .in_progress
            .insert(repo.to_string(), ids.len() as u64);
        self.open_runs.insert(repo.to_string(), ids);
    }

    /// Tracks a run that a webhook reported as requested or in progress.
    pub fn mark_run_open(&mut self, repo: &str, run_id: u64) {
        let set = self.open_runs.entry(repo.to_string()).or_default();
        set.insert(run_id);
        self.metrics
            .in_progress
            .insert(repo.to_string(), set.len() as u64);
    }

    fn mark_run_closed(&mut self, repo: &str, run_id: u64) {
        if let Some(set) = self.open_runs.get_mut(repo) {
            set.remove(&run_id);
            self.metrics
                .in_progress
                .insert(repo.to_string(), set.len() as u64);
        }
    }

    /// Counts a completed run attempt once. Returns whether it was counted: attempts not completed,
    /// already counted, or completed before the window are not.
    pub fn record_run(
        &mut self,
        repo: &str,
        default_branch: Option<&str>,
        run: &WorkflowRun,
        now: DateTime<Utc>,
    ) -> bool {
        if !run.is_completed() {
            return false;
        }
        self.mark_run_closed(repo, run.id);
        let completed_at = run.updated_at;
        if completed_at < now - self.window || !self.seen_runs.insert((run.id, run.run_attempt)) {
            return false;
        }
        let workflow = run.name.clone().unwrap_or_else(|| "unknown".into());
        let conclusion = run.conclusion.clone().unwrap_or_else(|| "unknown".into());
        let branch = self
            .branches
            .label(run.head_branch.as_deref(), default_branch);
        let m = &mut self.metrics;
        *m.runs_total
            .entry([
                repo.into(),
                workflow.clone(),
                branch.clone(),
                run.event.clone(),
                conclusion.clone(),
            ])
            .or_default() += 1;
        *m.runs_by_branch_total
            .entry([repo.into(), branch, conclusion.clone()])
            .or_default() += 1;
        if let Some(started) = run.run_started_at {
            let secs = (completed_at - started).num_milliseconds().max(0) as f64 / 1000.0;
            m.duration
                .entry([repo.into(), workflow.clone()])
                .or_insert_with(|| Histogram::new(DURATION_BUCKETS))
                .observe(secs);
        }
        let streak = m
            .consecutive_failures
            .entry([repo.into(), workflow.clone()])
            .or_default();
        if conclusion == "success" {
            *streak = 0;
        } else if FAILURE_CONCLUSIONS.contains(&conclusion.as_str()) {
            *streak += 1;
        }
        self.runs.push(SeenRun {
            repo: repo.into(),
            workflow,
            run_id: run.id,
            attempt: run.run_attempt,
            conclusion,
            completed_at,
        });
        self.dirty = true;
        true
    }

    /// Counts a job's queue time once per job attempt. Only jobs that started on a runner count:
    /// status `in_progress`/`completed`, `started_at` and `runner_name` set, conclusion not `skipped`.
    pub fn record_job(&mut self, job: &Job, now: DateTime<Utc>) -> bool {
        let started_on_runner = matches!(
            job.status.as_deref(),
            Some("in_progress") | Some("completed")
        ) && job.conclusion.as_deref() != Some("skipped")
            && job.runner_name.as_deref().is_some_and(|n| !n.is_empty());
        let Some(started_at) = job.started_at.filter(|_| started_on_runner) else {
            return false;
        };
        if started_at < now - self.window || !self.seen_jobs.insert((job.id, job.run_attempt)) {
            return false;
        }
        let label = runner_label(&job.labels);
        let secs = (started_at - job.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        self.metrics
            .queue_time
            .entry(label.clone())
            .or_insert_with(|| Histogram::new(QUEUE_TIME_BUCKETS))
            .observe(secs);
        self.jobs.push(SeenJob {
            job_id: job.id,
            attempt: job.run_attempt,
            runner_label: label,
            queue_seconds: secs,
            started_at,
        });
        self.dirty = true;
        true
    }

    /// Forgets attempts and jobs older than the window (they can no longer be counted anyway).
    pub fn prune(&mut self, now: DateTime<Utc>) {
        let horizon = now - self.window;
        let (runs, seen_runs) = (&mut self.runs, &mut self.seen_runs);
        runs.retain(|r| {
            let keep = r.completed_at >= horizon;
            if !keep {
                seen_runs.remove(&(r.run_id, r.attempt));
            }
            keep
        });
        let (jobs, seen_jobs) = (&mut self.jobs, &mut self.seen_jobs);
        jobs.retain(|j| {
            let keep = j.started_at >= horizon;
            if !keep {
                seen_jobs.remove(&(j.job_id, j.attempt));
            }
            keep
        });
    }

    /// The metric values with the window-derived gauges computed for `now`.
    pub fn metrics(&self, now: DateTime<Utc>) -> Metrics {
        let mut m = self.metrics.clone();
        let horizon = now - self.window;
        let mut rate: BTreeMap<[String; 2], (u64, u64)> = BTreeMap::new();
        for r in self.runs.iter().filter(|r| r.completed_at >= horizon) {
            let e = rate
                .entry([r.repo.clone(), r.workflow.clone()])
                .or_default();
            if FAILURE_CONCLUSIONS.contains(&r.conclusion.as_str()) {
                e.0 += 1;
                e.1 += 1;
            } else if r.conclusion == "success" {
                e.1 += 1;
            }
        }
        m.failure_rate = rate
            .into_iter()
            .map(|(k, (failed, decisive))| {
                (
                    k,
                    if decisive == 0 {
                        0.0
                    } else {
                        failed as f64 / decisive as f64
                    },
                )
            })
            .collect();
        let mut queue: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for j in self.jobs.iter().filter(|j| j.started_at >= horizon) {
            let e = queue.entry(j.runner_label.clone()).or_default();
            e.0 += j.queue_seconds;
            e.1 += 1;
        }
        m.queue_time_average = queue
            .into_iter()
            .map(|(k, (sum, n))| (k, sum / n as f64))
            .collect();
        m
    }
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
