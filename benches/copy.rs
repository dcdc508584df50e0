//! Streaming copy benchmark: a workspace of many small files and a few large ones pushed (full,
//! then incremental) and pulled back, with throughput and the process's peak memory.
//!
//! `cargo bench --bench copy` runs it locally: the archive streams into a `tar -x` process, as
//! it would into the pod's (the exec WebSocket is the only part left out). Sizes in MiB come
//! from `BENCH_COPY_MIB` (default `256,1024`): peak memory must not grow with the workspace.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use arc_hook::k8s::copy::{Manifest, PushOptions, Source, unpack, write_archive};

const SMALL: usize = 4 * 1024;
const LARGE_FILES: usize = 4;

fn peak_rss_mib() -> f64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Half the bytes in 4 KiB files (in directories of 500), half in four large files.
fn make_tree(root: &Path, mib: usize) -> io::Result<(usize, u64)> {
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
    Ok((small_count + LARGE_FILES, total as u64))
}

fn push_into_tar(
    sources: &[Source],
    opts: &PushOptions,
    dest: &Path,
) -> io::Result<(u64, Manifest, f64)> {
    let start = Instant::now();
    let mut child = Command::new("tar")
        .args(["-x", "-o", "-f", "-", "-C"])
        .arg(dest)
        .stdin(Stdio::piped())
        .spawn()?;
    let stdin = child.stdin.take().expect("stdin was piped");
    let mut record = Manifest::default();
    let stats = write_archive(
        io::BufWriter::with_capacity(256 * 1024, stdin),
        sources,
        opts,
        &mut record,
    )
    .map_err(io::Error::other)?;
    if !child.wait()?.success() {
        return Err(io::Error::other("tar -x failed"));
    }
    Ok((stats.bytes, record, start.elapsed().as_secs_f64()))
}

fn pull_from_tar(src: &Path, dest: &Path) -> io::Result<(u64, f64)> {
    let start = Instant::now();
    let mut child = Command::new("tar")
        .args(["-c", "-f", "-", "-C"])
        .arg(src)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().expect("stdout was piped");
    let stats = unpack(
        io::BufReader::with_capacity(256 * 1024, out),
        dest,
        "",
        &mut Manifest::default(),
    )
    .map_err(io::Error::other)?;
    if !child.wait()?.success() {
        return Err(io::Error::other("tar -c failed"));
    }
    Ok((stats.bytes, start.elapsed().as_secs_f64()))
}

fn run(mib: usize) -> io::Result<()> {
    let base = tempfile::tempdir()?;
    let work = base.path().join("work");
    let (files, bytes) = make_tree(&work, mib)?;
    let sources = [Source {
        local: work.clone(),
        name: "ws".into(),
    }];
    let pod = base.path().join("pod");
    fs::create_dir_all(&pod)?;
    let (sent, manifest, full_s) = push_into_tar(&sources, &PushOptions::default(), &pod)?;

    // A typical step's change: 1% of the small files and nothing else.
    for i in (0..files - LARGE_FILES).step_by(100) {
        let p = work.join(format!("src/d{:04}/f{i}.txt", i / 500));
        fs::write(p, b"changed by the step\n")?;
    }
    let opts = PushOptions {
        since: Some(manifest),
        exclude: Vec::new(),
    };
    let (inc_sent, _, inc_s) = push_into_tar(&sources, &opts, &pod)?;
    let back = base.path().join("back");
    let (pulled, pull_s) = pull_from_tar(&pod.join("ws"), &back)?;
    let mb = |b: u64, s: f64| b as f64 / 1e6 / s;
    println!(
        "{mib:>5} MiB, {files} files | full push {:.2}s {:.0} MB/s | incremental push {:.3}s ({} KB sent) = {:.0}x faster | pull {:.2}s {:.0} MB/s | peak RSS {:.1} MiB",
        full_s,
        mb(sent, full_s),
        inc_s,
        inc_sent / 1000,
        full_s / inc_s,
        pull_s,
        mb(pulled, pull_s),
        peak_rss_mib()
    );
    assert_eq!(sent, bytes);
    Ok(())
}

fn main() -> io::Result<()> {
    let sizes = std::env::var("BENCH_COPY_MIB").unwrap_or_else(|_| "256,1024".into());
    for s in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        run(s)?;
    }
    Ok(())
}
