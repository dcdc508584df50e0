//! The hook's own overhead per command on the embedded simulator: wall time, CPU time and peak
//! memory of the `arc-hook` process for steps that do nothing, next to `kubectl exec` of the same
//! command as the baseline. Run with `cargo bench --bench hook_overhead`; figures go to the README.
//! `ARC_HOOK_BASELINE=path/to/older/arc-hook` also runs that binary, interleaved with this one on
//! the same simulator, and prints this build's cost as a ratio of it (before/after a change).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Runner, job_args, sim_config};
use serde_json::json;

const ROUNDS: usize = 20;

/// Wall seconds, CPU seconds and peak RSS (KiB) of one child process.
#[derive(Clone, Copy, Default)]
struct Sample {
    wall: f64,
    cpu: f64,
    max_rss_kib: i64,
}

fn run_measured(mut cmd: std::process::Command, stdin: &[u8]) -> Sample {
    use std::io::Write;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("stdin");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on our own child with valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "command failed"
    );
    let wall = start.elapsed().as_secs_f64();
    let cpu = usage.ru_utime.tv_sec as f64
        + usage.ru_utime.tv_usec as f64 / 1e6
        + usage.ru_stime.tv_sec as f64
        + usage.ru_stime.tv_usec as f64 / 1e6;
    std::mem::forget(child);
    Sample {
        wall,
        cpu,
        max_rss_kib: usage.ru_maxrss,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn hook_cmd(r: &Runner) -> std::process::Command {
    hook_cmd_of(r, std::path::Path::new(env!("CARGO_BIN_EXE_arc-hook")))
}

fn hook_cmd_of(r: &Runner, binary: &std::path::Path) -> std::process::Command {
    // The binary directly: the wrapper's bash start is the runner's cost either way.
    let mut c = std::process::Command::new(binary);
    c.envs(&r.env).env_remove("KUBERNETES_SERVICE_HOST");
    c
}

fn report(name: &str, samples: &[Sample]) -> f64 {
    let wall = median(samples.iter().map(|s| s.wall).collect());
    let cpu = median(samples.iter().map(|s| s.cpu).collect());
    let rss = samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
    println!(
        "{name:<34} wall {:>7.1} ms   cpu {:>6.1} ms   peak rss {:>6.1} MiB",
        wall * 1e3,
        cpu * 1e3,
        rss as f64 / 1024.0
    );
    wall
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut cfg = sim_config();
        cfg.start_delay = Duration::ZERO;
        let mut r = Runner::start(cfg).await;
        println!("arc-hook overhead on the embedded simulator, median of {ROUNDS} runs (steps do nothing)\n");

        let mut prepare = Vec::new();
        let mut cleanup = Vec::new();
        let response = r.work.join("_temp/bench-response.json");
        for _ in 0..5 {
            std::fs::write(&response, b"").expect("response file");
            let input = json!({"command": "prepare_job", "responseFile": response, "args": job_args("ubuntu:24.04", json!([]))});
            let cmd = hook_cmd(&r);
            prepare.push(tokio::task::spawn_blocking(move || run_measured(cmd, &serde_json::to_vec(&input).expect("json"))).await.expect("join"));
            let input = json!({"command": "cleanup_job", "args": {}});
            let cmd = hook_cmd(&r);
            cleanup.push(tokio::task::spawn_blocking(move || run_measured(cmd, &serde_json::to_vec(&input).expect("json"))).await.expect("join"));
        }
        let (run, _) = r.prepare(job_args("ubuntu:24.04", json!([]))).await;
        run.assert_ok();
        std::fs::write(r.work.join("_temp/noop.sh"), "true\n").expect("script");
        let step = json!({"command": "run_script_step", "state": r.state.clone(), "args": {
            "entryPoint": "sh", "entryPointArgs": ["-e", "/__w/_temp/noop.sh"], "environmentVariables": {"A": "1"},
            "prependPath": [], "workingDirectory": "/__w/repo/repo"}});
        let mut steps = Vec::new();
        let mut kubectl = Vec::new();
        for _ in 0..ROUNDS {
            let cmd = hook_cmd(&r);
            let input = serde_json::to_vec(&step).expect("json");
            steps.push(tokio::task::spawn_blocking(move || run_measured(cmd, &input)).await.expect("join"));
            let mut k = std::process::Command::new("kubectl");
            k.env("KUBECONFIG", &r.kubeconfig).args(["exec", "arc-runner-test-workflow", "-c", "job", "--", "sh", "-e", "/__w/_temp/noop.sh"]);
            kubectl.push(tokio::task::spawn_blocking(move || run_measured(k, b"")).await.expect("join"));
        }
        report("prepare_job (pod start included)", &prepare);
        let hook = report("run_script_step (no-op step)", &steps);
        let base = report("kubectl exec (same no-op)", &kubectl);
        report("cleanup_job", &cleanup);
        println!("\nrun_script_step / kubectl exec wall-time ratio: {:.2}", hook / base);
        if let Some(baseline) = std::env::var_os("ARC_HOOK_BASELINE") {
            compare(&r, std::path::Path::new(&baseline), &step).await;
        }
        r.cleanup().await.assert_ok();
        r.sim.shutdown().await;
    });
}

/// This build against `baseline`, interleaved round by round on the same simulator: a no-op
/// script step (the start-up plus one exec) and a cleanup_job with nothing to remove (the
/// start-up plus the label lists).
async fn compare(r: &Runner, baseline: &std::path::Path, step: &serde_json::Value) {
    let cleanup = json!({"command": "cleanup_job", "args": {}});
    // cleanup_job is measured after the step rounds: it removes the job pod the steps run in.
    for (what, input) in [
        ("run_script_step (no-op)", step),
        ("cleanup_job (nothing left)", &cleanup),
    ] {
        let (mut new, mut old) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            for (binary, into) in [
                (
                    std::path::PathBuf::from(env!("CARGO_BIN_EXE_arc-hook")),
                    &mut new,
                ),
                (baseline.to_path_buf(), &mut old),
            ] {
                let cmd = hook_cmd_of(r, &binary);
                let bytes = serde_json::to_vec(input).expect("json");
                into.push(
                    tokio::task::spawn_blocking(move || run_measured(cmd, &bytes))
                        .await
                        .expect("join"),
                );
            }
        }
        println!("\n{what}, this build vs {}:", baseline.display());
        let a = report("  this build", &new);
        let b = report("  baseline", &old);
        let cpu = |v: &[Sample]| median(v.iter().map(|s| s.cpu).collect());
        println!(
            "  ratio (this / baseline): wall {:.2}, cpu {:.2}",
            a / b,
            cpu(&new) / cpu(&old)
        );
    }
}
