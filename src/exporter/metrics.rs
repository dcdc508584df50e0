//! Metric values (counters, gauges, histograms) and their Prometheus text / OpenMetrics encoding.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// The metric name prefix every exported family carries.
pub(crate) const PREFIX: &str = "github_actions_";

/// Upper bounds (seconds) of the queue-time histogram buckets.
pub(crate) const QUEUE_TIME_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0,
];
/// Upper bounds (seconds) of the run-duration histogram buckets.
pub(crate) const DURATION_BUCKETS: &[f64] = &[
    30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0,
];

/// Upper bounds (seconds) of the job-duration (runner time) histogram buckets.
pub(crate) const JOB_DURATION_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0,
];

/// The bucket bounds of the three histograms: the defaults above, or `--*-buckets`.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub queue_time: Arc<[f64]>,
    pub duration: Arc<[f64]>,
    pub job_duration: Arc<[f64]>,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            queue_time: QUEUE_TIME_BUCKETS.into(),
            duration: DURATION_BUCKETS.into(),
            job_duration: JOB_DURATION_BUCKETS.into(),
        }
    }
}

/// Parses a `--*-buckets` value: ascending upper bounds, each seconds (`30`, `0.5`) or a
/// duration (`30s`, `5m`, `1h`, `1d`); `+Inf` is implied.
pub fn parse_buckets(s: &str) -> Result<Arc<[f64]>, String> {
    let mut bounds: Vec<f64> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (num, unit) = item.split_at(
            item.find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(item.len()),
        );
        let factor = match unit {
            "" | "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => {
                return Err(format!(
                    "bucket `{item}`: unknown unit `{unit}` (use s, m, h or d)"
                ));
            }
        };
        let v = num
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("bucket `{item}` is not a positive number of seconds"))?
            * factor;
        if bounds.last().is_some_and(|last| *last >= v) {
            return Err(format!(
                "buckets must ascend: `{item}` follows a bound as large"
            ));
        }
        bounds.push(v);
    }
    if bounds.is_empty() {
        return Err("give at least one bucket bound, e.g. 60,300,900".into());
    }
    Ok(bounds.into())
}

/// Which exposition format a scrape asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics text 1.0.0 (ends with `# EOF`).
    OpenMetrics,
}

impl Format {
    /// Picks the format from an HTTP `Accept` header value.
    pub(crate) fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of a response in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A histogram with fixed bucket bounds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Histogram {
    /// Upper bounds of the buckets.
    pub bounds: Arc<[f64]>,
    /// Non-cumulative count per bound; observations above the last bound are only in `count`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub(crate) fn new(bounds: Arc<[f64]>) -> Self {
        Histogram {
            counts: vec![0; bounds.len()],
            bounds,
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation.
    pub(crate) fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// Number of observations.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Sum of observations.
    pub(crate) fn sum(&self) -> f64 {
        self.sum
    }

    /// Cumulative `(le, count)` pairs, ending with `+Inf`.
    pub(crate) fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut acc = 0;
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                acc += c;
                (*b, acc)
            })
            .collect();
        out.push((f64::INFINITY, self.count));
        out
    }
}

/// Self-metrics of the exporter's GitHub client, poll cycles and webhook receiver.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SelfStats {
    /// API responses by HTTP status code (or `error` for transport failures).
    pub api_requests: BTreeMap<String, u64>,
    /// Last rate-limit headers seen, by `x-ratelimit-resource` (`core`, `search`, `graphql`, ...).
    pub(crate) rate_limits: BTreeMap<String, RateLimit>,
    /// Seconds the last poll cycle took, whether or not it reached GitHub.
    pub poll_cycle_seconds: Option<f64>,
    /// Unix time the last poll cycle that reached GitHub finished (at least one repository polled,
    /// or none to poll); the exporter's start until then, so a poll that never works still ages.
    pub last_poll_timestamp: Option<f64>,
    /// Failed polls per watched repository (zero from the moment it is watched).
    pub repo_poll_errors: BTreeMap<String, u64>,
    /// Unix time each watched repository was last polled successfully (its first sighting until then).
    pub repo_last_success: BTreeMap<String, f64>,
    /// Webhook deliveries by result.
    pub webhook_deliveries: BTreeMap<String, u64>,
}

impl SelfStats {
    /// Starts tracking `repo` (no-op when tracked), with `now` as its last success so that a
    /// repository that never polls successfully alerts too.
    pub(crate) fn watch_repo(&mut self, repo: &str, now: f64) {
        self.repo_poll_errors.entry(repo.to_string()).or_default();
        self.repo_last_success
            .entry(repo.to_string())
            .or_insert(now);
    }

    /// Stops tracking repositories not in `keep` (removed, archived, out of scope).
    pub(crate) fn retain_repos(&mut self, keep: &dyn Fn(&str) -> bool) {
        self.repo_poll_errors.retain(|r, _| keep(r));
        self.repo_last_success.retain(|r, _| keep(r));
    }
}

/// One resource's rate limit as GitHub last reported it.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct RateLimit {
    /// `x-ratelimit-limit`: requests per window.
    pub limit: Option<f64>,
    /// `x-ratelimit-remaining`.
    pub remaining: f64,
    /// `x-ratelimit-reset`: Unix time the window resets.
    pub reset: Option<f64>,
}

/// A counter or histogram and whether scrapes may see its value yet. A series first exposed at its
/// current value hides that value from `increase()`/`rate()` (Prometheus needs a sample before the
/// change), so a series created after the first scrape is served empty on its next scrape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series<T> {
    pub value: T,
    pub visible: bool,
}

impl<T> Series<T> {
    /// A series holding `value`; `visible: false` serves it empty once.
    pub(crate) fn new(value: T, visible: bool) -> Self {
        Series { value, visible }
    }
}

/// What a scrape serves of a histogram series: nothing observed until it is visible.
fn hist(s: &Series<Histogram>) -> std::borrow::Cow<'_, Histogram> {
    if s.visible {
        std::borrow::Cow::Borrowed(&s.value)
    } else {
        std::borrow::Cow::Owned(Histogram::new(s.value.bounds.clone()))
    }
}

/// Key of a run series: repo, workflow file, workflow name, branch, event, conclusion.
pub(crate) type RunKey = [String; 6];
/// Key of a duration series: repo, workflow file, workflow name, conclusion.
pub(crate) type DurationKey = [String; 4];
/// Key of a workflow: repo, workflow file, workflow name.
pub(crate) type WorkflowKey = [String; 3];

/// Every workflow metric value the exporter serves.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Metrics {
    pub(crate) runs_total: BTreeMap<RunKey, Series<u64>>,
    /// Key: repo, branch, conclusion.
    pub(crate) runs_by_branch_total: BTreeMap<[String; 3], Series<u64>>,
    pub(crate) duration: BTreeMap<DurationKey, Series<Histogram>>,
    /// Key: runner label.
    pub(crate) queue_time: BTreeMap<String, Series<Histogram>>,
    /// Key: runner label, runner group, job conclusion: runner time of completed jobs.
    pub(crate) job_duration: BTreeMap<[String; 3], Series<Histogram>>,
    /// Failed runs in a row on the default branch (pull requests excluded).
    pub consecutive_failures: BTreeMap<WorkflowKey, u64>,
    /// Key: repo, status (`queued`, `in_progress`, ...). Derived at render time.
    pub in_progress: BTreeMap<[String; 2], u64>,
    /// Key: runner label: jobs waiting for a runner. Derived at render time.
    pub jobs_queued: BTreeMap<String, u64>,
    /// Key: runner label: how many of `jobs_queued` are as of a repository's earlier poll (its
    /// last one failed). Derived at render time.
    pub jobs_queued_stale: BTreeMap<String, u64>,
    /// Key: runner label: age of the oldest job waiting for a runner (0 when none). Derived at render time.
    pub oldest_queued_age: BTreeMap<String, f64>,
}

impl Metrics {
    /// Marks every series visible: the next scrape serves real values.
    pub(crate) fn reveal(&mut self) {
        for s in self.runs_total.values_mut() {
            s.visible = true;
        }
        for s in self.runs_by_branch_total.values_mut() {
            s.visible = true;
        }
        for s in self.duration.values_mut() {
            s.visible = true;
        }
        for s in self.queue_time.values_mut() {
            s.visible = true;
        }
        for s in self.job_duration.values_mut() {
            s.visible = true;
        }
    }

    /// Encodes workflow metrics plus self-metrics in `format`.
    pub fn encode(&self, stats: &SelfStats, format: Format) -> String {
        let mut e = Encoder {
            out: String::with_capacity(4096),
            format,
        };
        let count = |s: &Series<u64>| if s.visible { s.value } else { 0 };

        e.counter(
            "workflow_runs",
            "Completed workflow run attempts, each attempt counted once.",
            self.runs_total.iter().map(|(k, v)| {
                (
                    labels(
                        &[
                            "repo",
                            "workflow_path",
                            "workflow",
                            "branch",
                            "event",
                            "conclusion",
                        ],
                        k,
                    ),
                    count(v),
                )
            }),
        );
        e.histogram(
            "workflow_duration_seconds",
            "Run attempt duration (run_started_at to completion) by conclusion.",
            self.duration.iter().map(|(k, h)| {
                (
                    labels(&["repo", "workflow_path", "workflow", "conclusion"], k),
                    hist(h),
                )
            }),
        );
        e.histogram(
            "workflow_queue_time_seconds",
            "Job queue time (started_at - created_at) by runner label, observed when the job starts; skipped and never-started jobs excluded.",
            self.queue_time
                .iter()
                .map(|(k, h)| (vec![("runner_label", k.as_str())], hist(h))),
        );
        e.histogram(
            "workflow_job_duration_seconds",
            "Runner time of completed jobs (started_at to completed_at) by runner label, runner group and job conclusion; _sum is the runner-seconds a pool spent.",
            self.job_duration.iter().map(|(k, h)| {
                (
                    labels(&["runner_label", "runner_group", "conclusion"], k),
                    hist(h),
                )
            }),
        );
        e.gauge(
            "workflow_jobs_queued",
            "Jobs of open runs waiting for a runner (status queued), by runner label.",
            self.jobs_queued
                .iter()
                .map(|(k, v)| (vec![("runner_label", k.as_str())], *v as f64)),
        );
        e.gauge(
            "workflow_jobs_queued_stale",
            "Of workflow_jobs_queued, the jobs known only from an earlier poll of a repository whose last poll failed (kept, not dropped, so an outage does not resolve the waiting-jobs alert).",
            self.jobs_queued_stale
                .iter()
                .map(|(k, v)| (vec![("runner_label", k.as_str())], *v as f64)),
        );
        e.gauge(
            "workflow_oldest_queued_job_age_seconds",
            "How long the oldest job still waiting for a runner has waited (0 when none waits), by runner label.",
            self.oldest_queued_age
                .iter()
                .map(|(k, v)| (vec![("runner_label", k.as_str())], *v)),
        );
        e.gauge(
            "workflow_consecutive_failures",
            "Failed runs in a row of a workflow file on the repository's default branch (pull requests excluded).",
            self.consecutive_failures
                .iter()
                .map(|(k, v)| (labels(&["repo", "workflow_path", "workflow"], k), *v as f64)),
        );
        e.gauge(
            "workflow_runs_in_progress",
            "Workflow runs not yet completed, by status (queued, in_progress, ...), as of the repository's last successful poll.",
            self.in_progress
                .iter()
                .map(|(k, v)| (labels(&["repo", "status"], k), *v as f64)),
        );
        e.counter(
            "workflow_runs_by_branch",
            "Completed workflow run attempts by branch.",
            self.runs_by_branch_total
                .iter()
                .map(|(k, v)| (labels(&["repo", "branch", "conclusion"], k), count(v))),
        );
        e.counter(
            "exporter_api_requests",
            "GitHub API responses by HTTP status.",
            stats
                .api_requests
                .iter()
                .map(|(k, v)| (vec![("status", k.as_str())], *v)),
        );
        let by_resource = |pick: fn(&RateLimit) -> Option<f64>| {
            stats
                .rate_limits
                .iter()
                .filter_map(move |(k, r)| Some((vec![("resource", k.as_str())], pick(r)?)))
        };
        e.gauge(
            "exporter_rate_limit_remaining",
            "Last x-ratelimit-remaining reported by the GitHub API, by rate-limit resource.",
            by_resource(|r| Some(r.remaining)),
        );
        e.gauge(
            "exporter_rate_limit_limit",
            "Last x-ratelimit-limit (requests per window) reported by the GitHub API, by rate-limit resource.",
            by_resource(|r| r.limit),
        );
        e.gauge(
            "exporter_rate_limit_reset_timestamp_seconds",
            "Unix time the rate-limit window resets (x-ratelimit-reset), by rate-limit resource.",
            by_resource(|r| r.reset),
        );
        e.gauge(
            "exporter_poll_cycle_duration_seconds",
            "Seconds the last poll cycle took, failed or not.",
            stats
                .poll_cycle_seconds
                .map(|v| (Vec::new(), v))
                .into_iter(),
        );
        e.gauge(
            "exporter_last_poll_timestamp_seconds",
            "Unix time of the last poll cycle in which at least one repository was polled successfully (the exporter's start until then).",
            stats
                .last_poll_timestamp
                .map(|v| (Vec::new(), v))
                .into_iter(),
        );
        e.counter(
            "exporter_repo_poll_errors",
            "Failed polls of a watched repository (and failed reads of one of its runs).",
            stats
                .repo_poll_errors
                .iter()
                .map(|(k, v)| (vec![("repo", k.as_str())], *v)),
        );
        e.gauge(
            "exporter_repo_last_success_timestamp_seconds",
            "Unix time a watched repository was last polled successfully (when it was first watched, until then).",
            stats
                .repo_last_success
                .iter()
                .map(|(k, v)| (vec![("repo", k.as_str())], *v)),
        );
        e.counter(
            "exporter_webhook_deliveries",
            "Webhook deliveries by result.",
            stats
                .webhook_deliveries
                .iter()
                .map(|(k, v)| (vec![("result", k.as_str())], *v)),
        );
        if format == Format::OpenMetrics {
            e.out.push_str("# EOF\n");
        }
        e.out
    }
}

fn labels<'a, const N: usize>(
    names: &[&'static str; N],
    values: &'a [String; N],
) -> Vec<(&'static str, &'a str)> {
    names
        .iter()
        .copied()
        .zip(values.iter().map(String::as_str))
        .collect()
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

struct Encoder {
    out: String,
    format: Format,
}

impl Encoder {
    fn header(&mut self, family: &str, help: &str, kind: &str) {
        let p = PREFIX;
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {p}{family} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {p}{family} {kind}");
    }

    /// `family` is the counter name without `_total`, as OpenMetrics wants it.
    fn counter<'a>(
        &mut self,
        family: &str,
        help: &str,
        samples: impl Iterator<Item = (Labels<'a>, u64)>,
    ) {
        let total = format!("{family}_total");
        let header = match self.format {
            Format::Text => total.as_str(),
            Format::OpenMetrics => family,
        };
        let samples = samples.map(|(l, v)| (l, v.to_string()));
        self.one_sample_family(header, help, "counter", &total, samples);
    }

    fn gauge<'a>(
        &mut self,
        family: &str,
        help: &str,
        samples: impl Iterator<Item = (Labels<'a>, f64)>,
    ) {
        let samples = samples.map(|(l, v)| (l, fmt_f64(v)));
        self.one_sample_family(family, help, "gauge", family, samples);
    }

    /// A family whose series are one sample each (counters and gauges): the header under
    /// `header`, then every series as `sample`.
    fn one_sample_family<'a>(
        &mut self,
        header: &str,
        help: &str,
        kind: &str,
        sample: &str,
        samples: impl Iterator<Item = (Labels<'a>, String)>,
    ) {
        self.header(header, help, kind);
        for (l, v) in samples {
            self.sample(sample, &l, None, &v);
        }
    }

    fn histogram<'a, H: std::ops::Deref<Target = Histogram>>(
        &mut self,
        family: &str,
        help: &str,
        samples: impl Iterator<Item = (Labels<'a>, H)>,
    ) {
        self.header(family, help, "histogram");
        for (l, h) in samples {
            for (le, c) in h.cumulative() {
                self.sample(
                    &format!("{family}_bucket"),
                    &l,
                    Some(&fmt_f64(le)),
                    &c.to_string(),
                );
            }
            self.sample(&format!("{family}_sum"), &l, None, &fmt_f64(h.sum()));
            self.sample(&format!("{family}_count"), &l, None, &h.count().to_string());
        }
    }

    fn sample(&mut self, name: &str, l: &Labels<'_>, le: Option<&str>, value: &str) {
        self.out.push_str(PREFIX);
        self.out.push_str(name);
        if !l.is_empty() || le.is_some() {
            self.out.push('{');
            let mut first = true;
            for (k, v) in l
                .iter()
                .map(|(k, v)| (*k, *v))
                .chain(le.map(|le| ("le", le)))
            {
                if !first {
                    self.out.push(',');
                }
                first = false;
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }
}

/// Formats a float the way both Prometheus and OpenMetrics parsers accept (`+Inf`, `1.0`, `0.25`).
pub(crate) fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn escape_label_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::new(Arc::from(&[1.0, 10.0][..]));
        h.observe(0.5);
        h.observe(5.0);
        h.observe(50.0);
        assert_eq!(
            h.cumulative(),
            vec![(1.0, 1), (10.0, 2), (f64::INFINITY, 3)]
        );
        assert_eq!(h.sum(), 55.5);
    }

    #[test]
    fn buckets_parse_ascending_with_units() {
        assert_eq!(
            &*parse_buckets("30, 5m,1h").expect("valid"),
            &[30.0, 300.0, 3600.0]
        );
        assert_eq!(&*parse_buckets("0.5,1").expect("valid"), &[0.5, 1.0]);
        assert!(parse_buckets("60,30").is_err(), "descending");
        assert!(parse_buckets("60,60").is_err(), "repeated");
        assert!(parse_buckets("").is_err());
        assert!(parse_buckets("-1").is_err());
        assert!(parse_buckets("5y").is_err());
    }

    #[test]
    fn floats_format_canonically() {
        assert_eq!(fmt_f64(1.0), "1.0");
        assert_eq!(fmt_f64(0.25), "0.25");
        assert_eq!(fmt_f64(f64::INFINITY), "+Inf");
    }

    #[test]
    fn counters_carry_total_suffix_and_openmetrics_ends_with_eof() {
        let mut m = Metrics::default();
        let key = [
            "o/r",
            ".github/workflows/ci.yml",
            "CI",
            "main",
            "push",
            "success",
        ]
        .map(String::from);
        m.runs_total.insert(key.clone(), Series::new(2, true));
        let text = m.encode(&SelfStats::default(), Format::Text);
        assert!(text.contains("# TYPE github_actions_workflow_runs_total counter"));
        assert!(text.contains(
            "github_actions_workflow_runs_total{repo=\"o/r\",workflow_path=\".github/workflows/ci.yml\",workflow=\"CI\",branch=\"main\",event=\"push\",conclusion=\"success\"} 2"
        ));
        // A series born after the first scrape is served at zero once, so increase() sees its first run.
        m.runs_total.insert(key, Series::new(1, false));
        let text = m.encode(&SelfStats::default(), Format::Text);
        assert!(text.contains("conclusion=\"success\"} 0\n"));
        m.reveal();
        let text = m.encode(&SelfStats::default(), Format::Text);
        assert!(text.contains("conclusion=\"success\"} 1\n"));
        assert!(!text.contains("# EOF"));
        let om = m.encode(&SelfStats::default(), Format::OpenMetrics);
        assert!(om.contains("# TYPE github_actions_workflow_runs counter"));
        assert!(om.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label_into(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }
}
