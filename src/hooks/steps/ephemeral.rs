//! A container step as an ephemeral container of the job pod: it shares the pod's volumes and network (services at localhost), so nothing is copied for it.
//!
//! Ephemeral containers cannot be removed from a pod: each container step leaves a terminated
//! `step-xxxxxxxx` entry in the job pod's spec until cleanup_job deletes the pod.

use std::io;
use std::path::Path;

use super::workspace::{self, RunnerDirs};
use crate::config::Config;
use crate::k8s::Kube;
use crate::k8s::copy::Source;
use crate::k8s::ephemeral::{self, EphemeralError};
use crate::plan::EphemeralStepPlan;

/// What happened to a step offered to the job pod.
#[derive(Debug)]
pub enum Outcome {
    /// It ran; the step's result.
    Ran(anyhow::Result<i32>),
    /// The cluster would not take it; why (the caller runs it as a Job).
    Refused(String),
}

/// Creates (or re-points) the links at the work volume's root that make `/github/<name>`
/// resolve. An entry of that name that is not a link is left alone: the step then needs a Job.
pub fn ensure_links(work: &Path, links: &[(String, String)]) -> Result<(), String> {
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

/// Runs the planned step in `pod`. In no-volume mode (`dirs`), `_temp` and new actions are
/// pushed first and `_temp` pulled back after, also when the step failed.
pub async fn run_in_job_pod(
    kube: &Kube,
    config: &Config,
    pod: &str,
    plan: &EphemeralStepPlan,
    work: &Path,
    dirs: Option<&RunnerDirs>,
    can_watch: bool,
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
    let result = run_added(kube, config, pod, name, can_watch).await;
    let pulled = match dirs {
        Some(d) => Some(workspace::pull_step(kube, pod, d).await),
        None => None,
    };
    Outcome::Ran(workspace::step_outcome(result, pulled))
}

async fn run_added(
    kube: &Kube,
    config: &Config,
    pod: &str,
    name: &str,
    can_watch: bool,
) -> Result<i32, EphemeralError> {
    ephemeral::wait_started(kube, pod, name, config.prepare_timeout, can_watch).await?;
    ephemeral::follow_log(kube, pod, name, tokio::io::stdout()).await?;
    let (code, reason) =
        ephemeral::exit_code(kube, pod, name, super::job::EXIT_STATUS_TIMEOUT, can_watch).await?;
    if reason.as_deref() == Some("OOMKilled") {
        eprintln!(
            "arc-hook: the step's container was killed: OOMKilled (it shares the job pod's memory; raise the job container's limit in the worker-podspec template, `$job`)"
        );
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

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
