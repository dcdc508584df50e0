//! Exporter benchmark: CPU time and peak memory to ingest 100 000 runs across 1 000 repositories,
//! plus a slice polled end to end through the fake GitHub API. Run with `cargo bench --bench exporter`.
// The fake GitHub API is test support, shared with the exporter tests (not in the library).
#[path = "../tests/fake_github/mod.rs"]
mod fake_github;

use std::time::{Duration, Instant};

use arc_hook::exporter::collect::{RepoFilter, Scope};
use arc_hook::exporter::github::{ClientOptions, Credentials};
use arc_hook::exporter::ledger::{
    BranchPolicy, Ledger, RunJobs, RunnerGroupPolicy, RunnerLabelPolicy,
};
use arc_hook::exporter::metrics::{Buckets, Format, SelfStats};
use arc_hook::exporter::{Config, Exporter};
use chrono::{DateTime, Utc};
use fake_github::{FakeGitHub, job, run};

const REPOS: u64 = 1_000;
const RUNS_PER_REPO: u64 = 100;
const SLICE_REPOS: u64 = 20;

/// Process CPU time (user + system) from /proc/self/stat, in seconds (USER_HZ is 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// A `/proc/self/status` figure in KiB (VmHWM = peak RSS, VmRSS = current RSS).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field).map(|v| {
                v.trim_start_matches(':')
                    .trim()
                    .trim_end_matches(" kB")
                    .trim()
                    .to_string()
            })
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux >= 4.0), so each phase reports its own peak.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Run `i` of repository `r`: a mix of outcomes, branches, events, re-runs and skipped jobs.
fn history(
    r: u64,
    i: u64,
    now: DateTime<Utc>,
) -> Vec<(
    arc_hook::exporter::github::WorkflowRun,
    Vec<arc_hook::exporter::github::Job>,
)> {
    let id = r * 1_000_000 + i;
    let created = now - chrono::Duration::minutes(((RUNS_PER_REPO - i) * 60 + r % 60) as i64);
    let sec = |s: i64| created + chrono::Duration::seconds(s);
    let conclusion = match i % 10 {
        0 => "failure",
        7 => "cancelled",
        _ => "success",
    };
    let branch = ["main", "develop", "feature/a", "release"][(i % 4) as usize];
    let event = if i % 3 == 0 { "pull_request" } else { "push" };
    let workflow = ["CI", "Lint", "Release"][(i % 3) as usize];
    let labels: &[&str] = match r % 4 {
        0 => &["self-hosted", "linux", "x64", "gpu"],
        1 => &["arc-runner-set"],
        2 => &["ubuntu-latest"],
        _ => &["self-hosted", "linux", "arm64", "fpga"],
    };
    let queue = (i % 17 * 13) as i64;
    let mut out = vec![(
        run(
            id,
            1,
            workflow,
            branch,
            event,
            Some(conclusion),
            created,
            sec(5),
            sec(600),
        ),
        vec![
            job(
                id * 10,
                id,
                1,
                labels,
                created,
                Some(sec(queue)),
                conclusion,
            ),
            job(id * 10 + 1, id, 1, labels, created, None, "skipped"),
        ],
    )];
    if i % 20 == 0 {
        // The failed run is re-run and succeeds.
        out.push((
            run(
                id,
                2,
                workflow,
                branch,
                event,
                Some("success"),
                created,
                sec(700),
                sec(1300),
            ),
            vec![job(
                id * 10 + 2,
                id,
                2,
                labels,
                sec(700),
                Some(sec(700 + queue)),
                "success",
            )],
        ));
    }
    out
}

fn in_process(repos: u64) {
    let now = Utc::now();
    reset_peak();
    let rss0 = status_kib("VmRSS");
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut ledger = Ledger::new(chrono::Duration::days(30), BranchPolicy::default());
    let (mut runs, mut attempts, mut jobs) = (0u64, 0u64, 0u64);
    for r in 0..repos {
        let repo = format!("bench-org/repo-{r:04}");
        for i in 0..RUNS_PER_REPO {
            runs += 1;
            for (attempt, attempt_jobs) in history(r, i, now) {
                for j in &attempt_jobs {
                    jobs += u64::from(ledger.record_job(j, now));
                }
                attempts += u64::from(ledger.record_run(
                    &repo,
                    Some("main"),
                    &attempt,
                    now,
                    RunJobs::Counted,
                ));
            }
        }
    }
    let ingest = t0.elapsed();
    let cpu_ingest = cpu_seconds() - cpu0;
    let rss_ingested = status_kib("VmRSS");
    let hwm_ingested = status_kib("VmHWM");
    let t1 = Instant::now();
    let text = ledger
        .metrics(now)
        .encode(&SelfStats::default(), Format::Text);
    let render = t1.elapsed();
    let (state, hwm_saved, restart) =
        restart_time(&mut ledger).map_or((0, 0, None), |(n, hwm, s, l)| (n, hwm, Some((s, l))));
    let series = text.lines().filter(|l| !l.starts_with('#')).count();
    println!("in-process ingestion ({repos} repos x {RUNS_PER_REPO} runs):");
    println!("  runs {runs}, attempts counted {attempts}, jobs counted {jobs}");
    println!(
        "  ingest: wall {:.3} s, CPU {:.2} s ({:.1} µs per run)",
        ingest.as_secs_f64(),
        cpu_ingest,
        ingest.as_secs_f64() * 1e6 / runs as f64
    );
    println!(
        "  render /metrics: {:.1} ms, {} samples, {} KiB",
        render.as_secs_f64() * 1e3,
        series,
        text.len() / 1024
    );
    println!(
        "  memory: RSS {:.1} MiB after ingestion (peak {:.1} MiB while ingesting; {:.1} MiB at start)",
        mib(rss_ingested),
        mib(hwm_ingested),
        mib(rss0)
    );
    println!(
        "  peak RSS including a /metrics render and a state-file save: {:.1} MiB; state file {:.1} MiB",
        mib(hwm_saved),
        state as f64 / (1024.0 * 1024.0)
    );
    match restart {
        Some((save, load)) => println!(
            "  state file: save {:.0} ms, load + rebuild at restart {:.0} ms",
            save.as_secs_f64() * 1e3,
            load.as_secs_f64() * 1e3
        ),
        None => println!("  state file: could not write a temporary file"),
    }
}

/// Time to write the state file and to load it back into a ledger, as a restart does.
fn restart_time(ledger: &mut Ledger) -> Option<(u64, u64, Duration, Duration)> {
    let dir = tempfile::tempdir().ok()?;
    let path = dir.path().join("state.json");
    let t0 = Instant::now();
    ledger.save_state(&path).ok()?;
    let save = t0.elapsed();
    let size = std::fs::metadata(&path).ok()?.len();
    let hwm = status_kib("VmHWM");
    let t1 = Instant::now();
    let state = arc_hook::exporter::ledger::State::load(&path).ok()?;
    let restored = Ledger::from_state(chrono::Duration::days(30), BranchPolicy::default(), state);
    let load = t1.elapsed();
    std::hint::black_box(restored);
    Some((size, hwm, save, load))
}

async fn through_fake_api(slice: u64) {
    let now = Utc::now();
    let names: Vec<String> = (0..slice)
        .map(|r| format!("bench-org/repo-{r:04}"))
        .collect();
    let pairs: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "main")).collect();
    let fake = match FakeGitHub::start("bench-org", &pairs).await {
        Ok(f) => f,
        Err(e) => {
            println!("fake GitHub API could not start: {e}");
            return;
        }
    };
    for (r, name) in names.iter().enumerate() {
        for i in 0..RUNS_PER_REPO {
            for (attempt, jobs) in history(r as u64, i, now) {
                fake.put_attempt(name, attempt, jobs);
            }
        }
    }
    let config = Config {
        api_url: fake.url(),
        scope: Scope::Orgs(vec!["bench-org".into()]),
        credentials: Credentials::Token("bench".into()),
        window: Duration::from_secs(30 * 86400),
        branch_allow_list: Vec::new(),
        runner_label_allow_list: Vec::new(),
        runner_group_allow_list: Vec::new(),
        repo_filter: RepoFilter::default(),
        buckets: Buckets::default(),
        state_file: None,
        webhook_secret: None,
        client: ClientOptions {
            rate_limit_reserve: 0,
            ..ClientOptions::default()
        },
        concurrency: 4,
        rerun_lookback: Duration::from_secs(2 * 3600),
    };
    let exporter = match Exporter::new(config) {
        Ok(e) => e,
        Err(e) => {
            println!("exporter could not start: {e}");
            return;
        }
    };
    reset_peak();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let first = exporter.poll_once().await;
    let first_wall = t0.elapsed();
    let first_cpu = cpu_seconds() - cpu0;
    let requests = fake.requests().len();
    // The first poll moves the cursors off the start-up window; the poll after that is the steady state.
    let _ = exporter.poll_once().await;
    let before_idle = fake.requests().len();
    let cpu1 = cpu_seconds();
    let t1 = Instant::now();
    let second = exporter.poll_once().await;
    let second_wall = t1.elapsed();
    let second_cpu = cpu_seconds() - cpu1;
    let second_requests = fake.requests().len() - before_idle;
    let not_modified = fake
        .requests()
        .iter()
        .skip(before_idle)
        .filter(|r| r.status == 304)
        .count();
    println!(
        "through the fake GitHub API ({slice} repos x {RUNS_PER_REPO} runs, fake server in the same process):"
    );
    match first {
        Ok(r) => println!(
            "  first poll: {} attempts, {} jobs, {} requests, wall {:.2} s, CPU {:.2} s (exporter + fake)",
            r.runs_counted,
            r.jobs_counted,
            requests,
            first_wall.as_secs_f64(),
            first_cpu
        ),
        Err(e) => println!("  first poll failed: {e}"),
    }
    match second {
        Ok(r) => println!(
            "  idle poll: {} attempts, {} requests ({} answered 304), wall {:.3} s, CPU {:.3} s",
            r.runs_counted,
            second_requests,
            not_modified,
            second_wall.as_secs_f64(),
            second_cpu
        ),
        Err(e) => println!("  idle poll failed: {e}"),
    }
    println!(
        "  peak RSS during the polls: {:.1} MiB",
        mib(status_kib("VmHWM"))
    );
}

/// The runner labels the cardinality phase allows: the platform's pools.
const POOLS: &[&str] = &["gpu", "fpga", "arc-runner-set", "ubuntu-latest"];
/// Teams with a runner label of their own in the cardinality phase (every 4th repository's jobs).
const TEAM_LABELS: u64 = 250;
/// Set in a child process: which cardinality configuration to measure.
const PHASE_ENV: &str = "EXPORTER_BENCH_CARDINALITY";

/// Samples per family of a text exposition (comment lines skipped).
fn samples(text: &str) -> usize {
    text.lines().filter(|l| !l.starts_with('#')).count()
}

/// The run-duration buckets of the controlled configuration (`--duration-buckets`): 5 instead of 11.
const COARSE_DURATION_BUCKETS: &[f64] = &[300.0, 900.0, 1800.0, 3600.0, 14400.0];

/// One cardinality configuration, in a process of its own so its RSS is its own: the history of
/// [`history`] where every 4th repository's jobs also carry a team label (`team-N`, 250 teams) and
/// run in the team's runner group, as an organisation's self-service runner pools do;
/// `controlled` adds the runner-label allow-list of [`POOLS`], a runner-group allow-list of the
/// platform's `Default` group, and [`COARSE_DURATION_BUCKETS`]. Prints `samples bytes rss_kib`.
fn cardinality_phase(repos: u64, controlled: bool) {
    let now = Utc::now();
    let rss0 = status_kib("VmRSS");
    let mut ledger = Ledger::new(chrono::Duration::days(30), BranchPolicy::default());
    if controlled {
        ledger = ledger
            .with_runner_labels(RunnerLabelPolicy::new(
                POOLS.iter().map(|p| p.to_string()).collect(),
            ))
            .with_runner_groups(RunnerGroupPolicy::new(vec!["Default".into()]))
            .with_buckets(Buckets {
                duration: COARSE_DURATION_BUCKETS.into(),
                ..Buckets::default()
            });
    }
    for r in 0..repos {
        let repo = format!("bench-org/repo-{r:04}");
        for i in 0..RUNS_PER_REPO {
            for (attempt, mut attempt_jobs) in history(r, i, now) {
                for j in &mut attempt_jobs {
                    if r % 4 == 2 {
                        j.labels = vec!["self-hosted".into(), format!("team-{}", r % TEAM_LABELS)];
                        j.runner_group_name = Some(format!("team-{}", r % TEAM_LABELS));
                    }
                    ledger.record_job(j, now);
                }
                ledger.record_run(&repo, Some("main"), &attempt, now, RunJobs::Counted);
            }
        }
    }
    let text = ledger
        .metrics(now)
        .encode(&SelfStats::default(), Format::Text);
    let rss = status_kib("VmRSS").saturating_sub(rss0);
    println!("{} {} {}", samples(&text), text.len(), rss);
}

/// The worst-case sample count the README states, for `repos` repositories with `workflows` files
/// each, `branches` branch-label values, `events` events, `conclusions` run conclusions,
/// `labels` runner-label values, `groups` runner-group values, `job_conclusions` job conclusions
/// and `duration_buckets` run-duration buckets (default queue and job buckets; self-metrics left
/// out). tests/exporter_api.rs checks the formula against a real /metrics.
#[allow(clippy::too_many_arguments)]
fn worst_case(
    repos: u64,
    workflows: u64,
    branches: u64,
    events: u64,
    conclusions: u64,
    labels: u64,
    groups: u64,
    job_conclusions: u64,
    duration_buckets: u64,
) -> u64 {
    let runs = repos * workflows * branches * events * conclusions;
    let by_branch = repos * branches * conclusions;
    let duration = repos * workflows * conclusions * (duration_buckets + 3);
    let queue = labels * 14 + 3 * labels;
    let job_duration = labels * groups * job_conclusions * 15;
    let streaks = repos * workflows;
    let in_progress = repos * 5;
    runs + by_branch + duration + queue + job_duration + streaks + in_progress
}

/// Series before and after the cardinality controls, each measured in a child process; ratios
/// only, no thresholds.
fn cardinality(repos: u64) {
    let measure = |controlled: bool| -> Option<(u64, u64, u64)> {
        let exe = std::env::current_exe().ok()?;
        let out = std::process::Command::new(exe)
            .env(PHASE_ENV, if controlled { "controlled" } else { "open" })
            .env("EXPORTER_BENCH_REPOS", repos.to_string())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut f = text.split_whitespace().map(|v| v.parse::<u64>().ok());
        Some((f.next()??, f.next()??, f.next()??))
    };
    let (Some(open), Some(controlled)) = (measure(false), measure(true)) else {
        println!("cardinality: a child process failed");
        return;
    };
    // The bench's history: 3 workflow files, branch values main + other, push and pull_request,
    // success/failure/cancelled runs; job conclusions the same three.
    let teams = repos.div_ceil(4).min(TEAM_LABELS);
    let bound_open = worst_case(repos, 3, 2, 2, 3, 4 + teams, 1 + teams, 3, 11);
    let pools = POOLS.len() as u64 + 1;
    let coarse = COARSE_DURATION_BUCKETS.len() as u64;
    let bound_controlled = worst_case(repos, 3, 2, 2, 3, pools, 2, 3, coarse);
    println!(
        "cardinality ({repos} repos, every 4th with one of {TEAM_LABELS} team runner labels):"
    );
    for (what, (n, bytes, rss), bound) in [
        ("without cardinality controls", open, bound_open),
        (
            "with --runner-label-allow-list of 4 pools, --runner-group-allow-list Default, 5 --duration-buckets",
            controlled,
            bound_controlled,
        ),
    ] {
        println!(
            "  {what}: {n} samples (worst case {bound}), /metrics {} KiB, ledger + render RSS {:.1} MiB",
            bytes / 1024,
            mib(rss)
        );
        assert!(
            n <= bound,
            "{n} samples exceed the README's worst case {bound}"
        );
    }
    println!(
        "  after / before: samples {:.2}, /metrics bytes {:.2}, RSS {:.2}",
        controlled.0 as f64 / open.0 as f64,
        controlled.1 as f64 / open.1 as f64,
        controlled.2 as f64 / open.2.max(1) as f64
    );
}

fn main() {
    if let Ok(phase) = std::env::var(PHASE_ENV) {
        let repos = std::env::var("EXPORTER_BENCH_REPOS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(REPOS);
        cardinality_phase(repos, phase == "controlled");
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not, and gets a small smoke run.
    let full = std::env::args().any(|a| a == "--bench");
    let (repos, slice) = if full { (REPOS, SLICE_REPOS) } else { (10, 2) };
    in_process(repos);
    cardinality(repos);
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(through_fake_api(slice)),
        Err(e) => println!("no tokio runtime: {e}"),
    }
    println!("total process CPU {:.2} s", cpu_seconds());
}
