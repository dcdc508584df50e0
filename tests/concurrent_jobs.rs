//! Twenty copies of a recorded job, each with its own runner, at the same moment against one simulator: none fails, nothing is left behind, and no two live jobs on the node hold one cache slot.

mod common;
#[path = "concurrent_support/mod.rs"]
mod concurrent_support;

use concurrent_support::{Outcome, Scenario, run};

const JOBS: usize = 20;

/// Whether the simulator can give each pod a network of its own (root): without it, twenty
/// service containers share the host's and all but one fail to bind :8080.
fn pods_get_own_networks() -> bool {
    common::require_root("per-pod network namespaces for twenty jobs' services")
}

async fn play(scenario: Scenario) -> Option<Outcome> {
    if !pods_get_own_networks() {
        return None;
    }
    let o = run(
        std::path::Path::new(env!("CARGO_BIN_EXE_arc-hook")),
        scenario,
        None,
    )
    .await;
    let failed: Vec<String> = o
        .failures()
        .iter()
        .map(|f| format!("{} (exit {}): {}", f.runner, f.code, f.error))
        .collect();
    assert!(
        failed.is_empty(),
        "{} (pods in namespaces of their own: {:?}): {failed:#?}\nthe first failed replay:\n{}",
        scenario.label(),
        o.pod_namespaces,
        o.failures()
            .first()
            .map(|f| f.output.as_str())
            .unwrap_or_default()
    );
    assert!(
        o.leftovers.is_empty(),
        "{}: left behind {:?}",
        scenario.label(),
        o.leftovers
    );
    assert!(
        o.shared_slots.is_empty(),
        "{}: {:?}",
        scenario.label(),
        o.shared_slots
    );
    assert_eq!(
        o.results.len(),
        JOBS + 1,
        "every job and the single one ran"
    );
    Some(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_with_slot_leases_take_distinct_slots() {
    let Some(o) = play(Scenario {
        jobs: JOBS,
        no_volume: false,
        slot_template: true,
        without_leases: false,
    })
    .await
    else {
        return;
    };
    // The jobs did overlap (else distinct slots prove nothing), and no slot was wasted beyond one per job.
    assert!(
        (2..=JOBS as u32 + 1).contains(&o.slots_used),
        "slots used: {}",
        o.slots_used
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_take_secret_locks_where_the_role_lacks_leases() {
    let Some(o) = play(Scenario {
        jobs: JOBS,
        no_volume: false,
        slot_template: true,
        without_leases: true,
    })
    .await
    else {
        return;
    };
    assert!(
        (2..=JOBS as u32 + 1).contains(&o.slots_used),
        "slots used: {}",
        o.slots_used
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_no_volume_jobs_without_a_slot_template_take_no_slot() {
    let Some(o) = play(Scenario {
        jobs: JOBS,
        no_volume: true,
        slot_template: false,
        without_leases: false,
    })
    .await
    else {
        return;
    };
    assert_eq!(o.slots_used, 0, "no job took a slot");
}
