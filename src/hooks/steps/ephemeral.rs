//! A container step as an ephemeral container of the job pod: it shares the pod's volumes and network (services at localhost), so nothing is copied for it.
//!
//! Ephemeral containers cannot be removed from a pod: each container step leaves a terminated
//! `step-xxxxxxxx` entry in the job pod's spec until cleanup_job deletes the pod.

use std::io;
use std::path::Path;

use super::cancel::{Cancel, Cancelled, STOP_DEADLINE, TERM_GRACE};
use super::detached::Stopped;
use super::workspace::{self, RunnerDirs};
use crate::config::Config;
use crate::k8s::Kube;
use crate::k8s::copy::Source;
use crate::k8s::ephemeral::{self, EphemeralError};
use crate::k8s::exec::{ExecTarget, exec_capture};
use crate::plan::EphemeralStepPlan;

/// What happened to a step offered to the job pod.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// It ran; the step's result.
    Ran(anyhow::Result<i32>),
    /// The cluster would not take it; why (the caller runs it as a Job).
    Refused(String),
}

/// Creates (or re-points) the links at the work volume's root that make `/github/<name>`
/// resolve. An entry of that name that is not a link is left alone: the step then needs a Job.
pub(crate) fn ensure_links(work: &Path, links: &[(String, String)]) -> Result<(), String> {
    for (name, target) in links {
        let path = work.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&path).ok().as_deref() == Some(Path::new(target)) {
                    continue;
                }
                std::fs::remove_file(&path)
                    .map_err(|e| format!("cannot replace the link {}: {e}", path.display()))?;
            }
            Ok(_) => {
                return Err(format!(
                    "{} exists and is not arc-hook's link (a repository named {name}?), so /github/{name} cannot be provided in the job pod",
                    path.display()
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        std::os::unix::fs::symlink(target, &path)
            .map_err(|e| format!("cannot create the link {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The program that stops a container step from inside its container
/// (`sh -c STOP_CONTAINER arc-hook-stop GRACE_SECONDS`): every process that shares this exec's
/// mount namespace (the container's), but the exec itself and its subshells, gets TERM, and KILL
/// after the grace; it refuses to run where its parent shares that namespace (no container). A container's PID 1 takes only the signals it handles from inside its own
/// PID namespace: a step whose main process ignores TERM is left to cleanup_job, which deletes
/// the pod. Prints `gone` or `ended N K` as the script step's stop does; exits 1 if any survived.
/// In `stop_container.sh` after `stop_lib.sh`, which it shares with the script step's stop.
const STOP_CONTAINER: &str = concat!(
    include_str!("stop_lib.sh"),
    include_str!("stop_container.sh")
);

/// Stops the step running in ephemeral container `name` (it cannot be removed from the pod),
/// within [`STOP_DEADLINE`], and says what became of it.
async fn stop_in_container(kube: &Kube, pod: &str, name: &str) -> String {
    let target = ExecTarget {
        pod,
        container: name,
        what: "stopping the step",
    };
    let command = vec![
        "sh".to_string(),
        "-c".to_string(),
        STOP_CONTAINER.to_string(),
        "arc-hook-stop".to_string(),
        TERM_GRACE.as_secs().to_string(),
    ];
    let cleanup = "cleanup_job deletes the pod, which stops it";
    match tokio::time::timeout(STOP_DEADLINE, exec_capture(kube, target, &command)).await {
        Ok(Ok((0, out, _))) => match Stopped::parse(&String::from_utf8_lossy(&out)) {
            Some(stopped) => format!("{} in container {name} of pod {pod}", stopped.describe()),
            None => format!("could not read what stopping container {name} did; {cleanup}"),
        },
        Ok(Ok((code, out, err))) => format!(
            "could not stop container {name} of pod {pod} (exit code {code}: {}{}); {cleanup}",
            String::from_utf8_lossy(&out).trim(),
            String::from_utf8_lossy(&err).trim()
        ),
        Ok(Err(e)) => format!("could not stop container {name} ({e}); {cleanup}"),
        Err(_) => format!(
            "could not stop container {name} of pod {pod} within {}s; {cleanup}",
            STOP_DEADLINE.as_secs()
        ),
    }
}

/// Runs the planned step in `pod`. In no-volume mode (`dirs`), `_temp` and new actions are
/// pushed first and `_temp` pulled back after, also when the step failed. A cancel stops the
/// step's processes in its container.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_in_job_pod(
    kube: &Kube,
    config: &Config,
    pod: &str,
    plan: &EphemeralStepPlan,
    work: &Path,
    dirs: Option<&RunnerDirs>,
    can_watch: bool,
    cancel: &Cancel,
) -> Outcome {
    if let Err(why) = ensure_links(work, &plan.links) {
        return Outcome::Refused(why);
    }
    if let Some(d) = dirs {
        let links = plan
            .links
            .iter()
            .map(|(name, _)| Source {
                local: work.join(name),
                name: (*name).to_string(),
            })
            .collect();
        if let Err(e) = workspace::push_step(kube, pod, d, links).await {
            return Outcome::Ran(Err(anyhow::Error::new(e).context(
                "no-volume mode: copying _temp and new actions into the job pod before the step",
            )));
        }
    }
    let name = plan.container.name.as_str();
    match ephemeral::add(kube, pod, &plan.container).await {
        Ok(()) => {}
        Err(EphemeralError::NotAllowed { code, message }) => {
            return Outcome::Refused(format!(
                "the API server refused an ephemeral container in pod {pod} ({code}: {message})"
            ));
        }
        Err(e) => return Outcome::Ran(Err(e.into())),
    }
    let mut infra = None;
    let result = tokio::select! {
        result = run_added(kube, config, pod, name, can_watch) => result.map(|(code, reason)| {
            infra = infrastructure(code, reason.as_deref(), OOM_HINT);
            code
        }),
        signal = cancel.cancelled() => {
            let stopped = stop_in_container(kube, pod, name).await;
            return Outcome::Ran(Err(Cancelled { signal, stopped }.into()));
        }
    };
    let pulled = match dirs {
        Some(d) => Some(workspace::pull_step(kube, pod, d).await),
        None => None,
    };
    let outcome = workspace::step_outcome(result, pulled);
    Outcome::Ran(match (outcome, infra) {
        (Ok(_), Some(infra)) => Err(infra.into()),
        (outcome, _) => outcome,
    })
}

/// The job log's hint for a step container killed for memory.
const OOM_HINT: &str = "it shares the job pod's memory; raise the job container's limit in the worker-podspec template, `$job`";

/// The infrastructure's part in a container step's end (pure): an out-of-memory kill, or a
/// container the runtime could not start; `None` when the step's own command decided its code.
pub(crate) fn infrastructure(
    code: i32,
    reason: Option<&str>,
    oom_hint: &str,
) -> Option<crate::hooks::step_end::Infrastructure> {
    let cause = match reason? {
        "OOMKilled" => {
            format!("the step's container was killed: OOMKilled (exit code {code}; {oom_hint})")
        }
        "StartError" | "ContainerCannotRun" => format!(
            "the step's container could not start ({}: its entrypoint or working directory is missing from the image; the pod's events say which)",
            reason.unwrap_or_default()
        ),
        _ => return None,
    };
    Some(crate::hooks::step_end::Infrastructure { code, cause })
}

async fn run_added(
    kube: &Kube,
    config: &Config,
    pod: &str,
    name: &str,
    can_watch: bool,
) -> Result<(i32, Option<String>), EphemeralError> {
    ephemeral::wait_started(
        kube,
        pod,
        name,
        config.prepare_timeout,
        config.image_pull_wait,
        can_watch,
        crate::hooks::wait_progress,
    )
    .await?;
    ephemeral::follow_log(kube, pod, name, tokio::io::stdout()).await?;
    let (code, reason) =
        ephemeral::exit_code(kube, pod, name, super::job::EXIT_STATUS_TIMEOUT, can_watch).await?;
    tracing::debug!(code, ?reason, "the step's container ended");
    Ok((code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_and_start_errors_are_the_infrastructures() {
        let oom = infrastructure(137, Some("OOMKilled"), "raise it").expect("infrastructure");
        assert_eq!(oom.code, 137);
        assert_eq!(
            oom.cause,
            "the step's container was killed: OOMKilled (exit code 137; raise it)"
        );
        let start = infrastructure(128, Some("StartError"), "").expect("infrastructure");
        assert!(
            start.cause.contains("could not start (StartError"),
            "{}",
            start.cause
        );
        assert!(infrastructure(1, Some("Error"), "").is_none());
        assert!(infrastructure(0, Some("Completed"), "").is_none());
        assert!(infrastructure(3, None, "").is_none());
    }

    #[test]
    fn the_container_stop_refuses_to_run_outside_a_container() {
        // Here the parent (the test) shares the mount namespace: "every process in this
        // namespace" would be the host's, so the stop must refuse before signalling anything.
        let out = std::process::Command::new("sh")
            .args(["-c", STOP_CONTAINER, "arc-hook-stop", "1"])
            .output()
            .expect("sh runs");
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not in a container of its own"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn links_are_created_repointed_and_never_clobber_a_directory() {
        let work = tempfile::tempdir().expect("tempdir");
        let links = vec![
            ("workspace".to_string(), "repo/repo".to_string()),
            ("home".to_string(), "_temp/_github_home".to_string()),
        ];
        ensure_links(work.path(), &links).expect("created");
        assert_eq!(
            std::fs::read_link(work.path().join("workspace")).expect("link"),
            Path::new("repo/repo")
        );
        let moved = vec![("workspace".to_string(), "other/other".to_string())];
        ensure_links(work.path(), &moved).expect("re-pointed");
        assert_eq!(
            std::fs::read_link(work.path().join("workspace")).expect("link"),
            Path::new("other/other")
        );
        std::fs::remove_file(work.path().join("home")).expect("rm");
        std::fs::create_dir(work.path().join("home")).expect("a repository named home");
        let e = ensure_links(work.path(), &links).expect_err("refused");
        assert!(e.contains("a repository named home?"), "{e}");
        assert!(work.path().join("home").is_dir());
    }
}
