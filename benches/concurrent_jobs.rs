//! `cargo bench --bench concurrent_jobs`: N copies of fixtures/jobs/build-and-test (default 100, `ARC_HOOK_CONCURRENT_JOBS`), each with its own runner, at the same moment against one simulator, in both volume modes, with and without a `${CACHE_SLOT}` template.
//!
//! Prints one row per scenario: failures, wall time for all, prepare_job's median and worst
//! against a single job in the same run, cache slots used, what was left behind, and how often
//! two live workflow pods on one node held the same slot (watched during the run). Exits 1 if
//! anything failed, was left behind or shared a slot.
//! `ARC_HOOK_CONCURRENT_KUBECONFIG=path`: play against that cluster instead (no-volume
//! scenarios only: claim mode needs runner pods sharing each job's work volume).
//! `ARC_HOOK_CONCURRENT_WITHOUT_LEASES=1` adds the scenario of a Role without leases.

#[path = "../tests/concurrent_support/mod.rs"]
mod concurrent_support;

use std::path::{Path, PathBuf};

use concurrent_support::{HEADER, Scenario, run};

fn main() {
    let jobs: usize = match std::env::var("ARC_HOOK_CONCURRENT_JOBS") {
        Ok(n) => n
            .parse()
            .unwrap_or_else(|_| panic!("ARC_HOOK_CONCURRENT_JOBS={n:?} is not a number of jobs")),
        Err(_) => 100,
    };
    let cluster = std::env::var_os("ARC_HOOK_CONCURRENT_KUBECONFIG").map(PathBuf::from);
    let mut scenarios = Vec::new();
    for no_volume in [false, true] {
        if cluster.is_some() && !no_volume {
            continue;
        }
        for slot_template in [false, true] {
            scenarios.push(Scenario {
                jobs,
                no_volume,
                slot_template,
                without_leases: false,
            });
        }
    }
    if std::env::var_os("ARC_HOOK_CONCURRENT_WITHOUT_LEASES").is_some() && cluster.is_none() {
        scenarios.push(Scenario {
            jobs,
            no_volume: false,
            slot_template: true,
            without_leases: true,
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let hook = Path::new(env!("CARGO_BIN_EXE_arc-hook"));
    match &cluster {
        Some(k) => println!(
            "{jobs} concurrent jobs against the cluster of {}\n",
            k.display()
        ),
        None => println!("{jobs} concurrent jobs against one simulator per scenario\n"),
    }
    println!("{HEADER}");
    let mut bad = false;
    for s in scenarios {
        let o = runtime.block_on(run(hook, s, cluster.as_deref()));
        println!("{}", o.row());
        for f in o.failures().iter().take(5) {
            eprintln!("  failed: {} (exit {}): {}", f.runner, f.code, f.error);
        }
        for l in o.leftovers.iter().take(5) {
            eprintln!("  left behind: {l}");
        }
        for x in o.shared_slots.iter().take(5) {
            eprintln!("  shared: {x}");
        }
        bad |= !o.failures().is_empty() || !o.leftovers.is_empty() || !o.shared_slots.is_empty();
    }
    if bad {
        std::process::exit(1);
    }
}
