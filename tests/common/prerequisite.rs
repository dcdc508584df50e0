//! What a test needs from the machine (root, a program on PATH): under `CI=true` a missing
//! prerequisite fails the test, so CI cannot pass without running it; elsewhere the test says
//! what it lacks and does not run. Tests outside the simulator's harness (the exporter's)
//! include this file alone (`#[path = "common/prerequisite.rs"]`).
#![allow(dead_code)]

use std::path::PathBuf;

/// Whether the tests run in CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// `met`, or: under `CI=true` a panic naming `what`; elsewhere one printed line and `false`.
/// A test that gets `false` returns at once.
#[track_caller]
pub fn require(met: bool, what: &str) -> bool {
    if met {
        return true;
    }
    assert!(
        !in_ci(),
        "this test needs {what}; under CI=true a missing prerequisite is a failure"
    );
    eprintln!("\n!!! SKIPPED: this test needs {what} !!!\n");
    false
}

/// Root (mount and network namespaces, other users), as [`require`] says.
#[track_caller]
pub fn require_root(why: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    require(root, &format!("root ({why})"))
}

/// `program`'s path on PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// `program` on PATH, as [`require`] says.
#[track_caller]
pub fn require_program(program: &str, hint: &str) -> Option<PathBuf> {
    let found = on_path(program);
    if require(found.is_some(), &format!("`{program}` on PATH ({hint})")) {
        found
    } else {
        None
    }
}
