//! Streaming copy benchmark: a workspace of many small files and a few large ones pushed into a
//! pod (full, then incremental) and pulled back, with throughput and peak memory.
//!
//! `cargo bench --bench copy` runs it against the simulator (`arc-hook sim serve` in its own
//! process, so the peak memory printed is the hook side's alone): the same `k8s::copy::push`
//! and `pull` the hooks use, over the exec WebSocket, into a pod with an emptyDir.
//! `BENCH_COPY_TARGET=local` streams into a local `tar` process instead (no WebSocket).
//! Sizes in MiB come from `BENCH_COPY_MIB` (default `256,1024`): the peak must not grow with them.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arc_hook::archive::{unpack, write_archive};
use arc_hook::k8s::Kube;
use arc_hook::k8s::copy::{self, Manifest, PushOptions, Source, Stats};
use arc_hook::k8s::wait::{WaitOptions, wait_running};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;

const SMALL: usize = 4 * 1024;
const LARGE_FILES: usize = 4;
const POD: &str = "bench-copy";

fn peak_rss_mib(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Resets the kernel's peak-RSS mark, so each size's peak is its own.
fn reset_peak() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Half the bytes in 4 KiB files (in directories of 500), half in four large files.
fn make_tree(root: &Path, mib: usize) -> io::Result<usize> {
    let total = mib * 1024 * 1024;
    let small_count = total / 2 / SMALL;
    let large = (total / 2) / LARGE_FILES;
    let mut block = vec![0u8; 1024 * 1024];
    let mut x: u32 = 0x1234_5678;
    for b in block.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    for i in 0..small_count {
        let dir = root.join(format!("src/d{:04}", i / 500));
        if i % 500 == 0 {
            fs::create_dir_all(&dir)?;
        }
        let off = (i * 97) % (block.len() - SMALL);
        fs::write(dir.join(format!("f{i}.txt")), &block[off..off + SMALL])?;
    }
    fs::create_dir_all(root.join("data"))?;
    for i in 0..LARGE_FILES {
        let mut f = io::BufWriter::new(fs::File::create(root.join(format!("data/blob{i}.bin")))?);
        let mut left = large;
        while left > 0 {
            let n = left.min(block.len());
            f.write_all(&block[..n])?;
            left -= n;
        }
    }
    Ok(small_count + LARGE_FILES)
}

/// A typical step's change: 1% of the small files (a different 1% for each `round`).
fn touch_one_percent(work: &Path, files: usize, round: usize) -> io::Result<()> {
    for i in (round..files - LARGE_FILES).step_by(100) {
        let p = work.join(format!("src/d{:04}/f{i}.txt", i / 500));
        fs::write(p, b"changed by the step\n")?;
    }
    Ok(())
}

/// Where the bytes go: a pod through the exec API, or a local tar process.
enum Target {
    Sim { kube: Kube, sim_pid: u32 },
    Local { dir: PathBuf },
}

impl Target {
    async fn push(&self, sources: Vec<Source>, opts: PushOptions) -> io::Result<Stats> {
        match self {
            Target::Sim { kube, .. } => copy::push(kube, POD, "job", "/__w", sources, opts)
                .await
                .map(|(s, _)| s)
                .map_err(io::Error::other),
            Target::Local { dir } => {
                let mut child = Command::new("tar")
                    .args(["-x", "-o", "-f", "-", "-C"])
                    .arg(dir)
                    .stdin(Stdio::piped())
                    .spawn()?;
                let stdin = child.stdin.take().expect("stdin was piped");
                let stats = write_archive(
                    io::BufWriter::with_capacity(256 * 1024, stdin),
                    &sources,
                    &opts,
                    &mut Manifest::default(),
                )
                .map_err(io::Error::other)?;
                if !child.wait()?.success() {
                    return Err(io::Error::other("tar -x failed"));
                }
                Ok(stats)
            }
        }
    }

    async fn pull(&self, dest: &Path) -> io::Result<Stats> {
        match self {
            Target::Sim { kube, .. } => copy::pull(
                kube,
                POD,
                "job",
                "/__w/ws",
                &[],
                copy::PullInto {
                    dest: dest.to_path_buf(),
                    prefix: None,
                    max_bytes: u64::MAX,
                    known_links: Vec::new(),
                    changed: None,
                },
            )
            .await
            .map(|(s, _)| s)
            .map_err(io::Error::other),
            Target::Local { dir } => {
                let mut child = Command::new("tar")
                    .args(["-c", "-f", "-", "-C"])
                    .arg(dir.join("ws"))
                    .arg(".")
                    .stdout(Stdio::piped())
                    .spawn()?;
                let out = child.stdout.take().expect("stdout was piped");
                let mut input = io::BufReader::with_capacity(256 * 1024, out);
                let stats = unpack(&mut input, dest, "", None).map_err(io::Error::other)?;
                // tar pads past the end-of-archive marker; drain it so tar exits cleanly.
                io::copy(&mut input, &mut io::sink())?;
                if !child.wait()?.success() {
                    return Err(io::Error::other("tar -c failed"));
                }
                Ok(stats)
            }
        }
    }

    async fn clear(&self) -> io::Result<()> {
        match self {
            Target::Sim { kube, .. } => {
                let t = arc_hook::k8s::exec::ExecTarget {
                    pod: POD,
                    container: "job",
                    what: "rm",
                };
                let cmd = ["rm", "-rf", "/__w/ws"].map(String::from);
                arc_hook::k8s::exec::exec_capture(kube, t, &cmd)
                    .await
                    .map(|_| ())
                    .map_err(io::Error::other)
            }
            Target::Local { dir } => match fs::remove_dir_all(dir.join("ws")) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
    }
}

async fn run(target: &Target, mib: usize) -> io::Result<()> {
    target.clear().await?;
    let base = tempfile::tempdir()?;
    let work = base.path().join("work");
    let files = make_tree(&work, mib)?;
    let sources = || {
        vec![Source {
            local: work.clone(),
            name: "ws".into(),
        }]
    };
    reset_peak();
    let start = Instant::now();
    // As prepare_job pushes a workspace: nothing recorded, so memory does not grow with it.
    let full_opts = PushOptions {
        record_under: Some(Vec::new()),
        ..Default::default()
    };
    let full = target.push(sources(), full_opts).await?;
    let full_s = start.elapsed().as_secs_f64();

    let back = base.path().join("back");
    let start = Instant::now();
    let pulled = target.pull(&back).await?;
    let pull_s = start.elapsed().as_secs_f64();
    let streaming_peak = peak_rss_mib(None);
    fs::remove_dir_all(&back)?;

    // Incremental: the stamps of what the pod holds (what run_script_step keeps for `_temp`).
    let mut manifest = Manifest::default();
    write_archive(
        io::sink(),
        &sources(),
        &PushOptions::default(),
        &mut manifest,
    )
    .map_err(io::Error::other)?;
    let mut best = f64::INFINITY;
    let mut inc = Stats::default();
    for round in 0..3 {
        touch_one_percent(&work, files, round)?;
        let start = Instant::now();
        inc = target
            .push(
                sources(),
                PushOptions {
                    since: Some(manifest.clone()),
                    ..Default::default()
                },
            )
            .await?;
        best = best.min(start.elapsed().as_secs_f64());
        write_archive(
            io::sink(),
            &sources(),
            &PushOptions::default(),
            &mut manifest,
        )
        .map_err(io::Error::other)?;
    }
    let inc_s = best;
    let mb = |b: u64, s: f64| b as f64 / 1e6 / s;
    let sim = match target {
        Target::Sim { sim_pid, .. } => {
            format!(" | simulator peak {:.0} MiB", peak_rss_mib(Some(*sim_pid)))
        }
        Target::Local { .. } => String::new(),
    };
    println!(
        "{mib:>5} MiB, {files} files | full push {full_s:.2}s {:.0} MB/s | pull {pull_s:.2}s {:.0} MB/s | hook peak RSS {streaming_peak:.1} MiB | incremental push (1% of small files, best of 3) {inc_s:.3}s, {} entries, {} KB = {:.0}x faster than full{sim}",
        mb(full.bytes, full_s),
        mb(pulled.bytes, pull_s),
        inc.entries,
        inc.bytes / 1000,
        full_s / inc_s,
    );
    Ok(())
}

/// Starts `arc-hook sim serve` and a pod with an emptyDir at /__w.
async fn sim_target(
    dir: &Path,
) -> Result<(Target, std::process::Child), Box<dyn std::error::Error>> {
    let kubeconfig = dir.join("kubeconfig");
    let child = Command::new(env!("CARGO_BIN_EXE_arc-hook"))
        .args(["sim", "serve", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubeconfig.exists() {
        if Instant::now() > deadline {
            return Err("the simulator wrote no kubeconfig within 30s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let namespace = config.default_namespace.clone();
    let server = config.cluster_url.to_string();
    let kube = Kube {
        client: kube::Client::try_from(config)?,
        namespace,
        server,
    };
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": POD},
        "spec": {
            "containers": [{"name": "job", "image": "ubuntu:24.04", "command": ["sleep", "infinity"],
                            "volumeMounts": [{"name": "work", "mountPath": "/__w"}]}],
            "volumes": [{"name": "work", "emptyDir": {}}],
            "restartPolicy": "Never"
        }
    }))?;
    kube.pods().create(&PostParams::default(), &pod).await?;
    let opts = WaitOptions {
        timeout: Duration::from_secs(60),
        can_watch: true,
        can_list_events: true,
        unschedulable_grace: Duration::from_secs(60),
        waiting_notice: None,
        accept_finished: false,
        image_pull_wait: Duration::ZERO,
        progress: arc_hook::k8s::progress::silent,
    };
    wait_running(&kube, POD, opts)
        .await
        .map_err(|f| f.to_string())?;
    Ok((
        Target::Sim {
            kube,
            sim_pid: child.id(),
        },
        child,
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes = std::env::var("BENCH_COPY_MIB").unwrap_or_else(|_| "256,1024".into());
    let scratch = tempfile::tempdir()?;
    let (target, mut sim) = match std::env::var("BENCH_COPY_TARGET").as_deref() {
        Ok("local") => {
            let dir = scratch.path().join("pod");
            fs::create_dir_all(&dir)?;
            println!("target: a local tar process");
            (Target::Local { dir }, None)
        }
        _ => {
            let (t, child) = sim_target(scratch.path()).await?;
            println!("target: a simulator pod over the exec WebSocket");
            (t, Some(child))
        }
    };
    let mut result = Ok(());
    for s in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        if let Err(e) = run(&target, s).await {
            result = Err(e.into());
            break;
        }
    }
    if let Some(c) = sim.as_mut() {
        // SIGTERM lets the simulator kill its pod processes and remove its state.
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let _ = c.wait();
    }
    result
}
