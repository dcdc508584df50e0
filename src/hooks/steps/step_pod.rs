//! A container step as a bare pod of its own (where the job pod cannot take it and a Job will not do: no Jobs granted, or no-volume mode): log streamed, exit code returned, the pod removed on every way out; in no-volume mode the step's files relayed from the job pod and its changes back.
//!
//! No-volume mode, in order: the runner's `_temp` and new actions are pushed into the job pod
//! (as before any step); the directories the step mounts are relayed from the job pod into the
//! step pod's init container, which then ends, so the step starts on them; after the step
//! ends, what it changed (by ctime, newer than the mark left when the files arrived) is
//! relayed back into the job pod, and `_temp` pulled to the runner through the same checks as
//! every other step's. The runner side never unpacks anything from the step pod.

use anyhow::Context;
use kube::api::DeleteParams;

use super::cancel::{Cancel, Cancelled};
use super::workspace::{self, POD_WORK, RunnerDirs};
use crate::config::Config;
use crate::hooks::HookResult;
use crate::k8s::Kube;
use crate::k8s::copy::{self, ChangedSince, CopyError};
use crate::k8s::exec::{ExecTarget, exec_capture};
use crate::k8s::owned::{create_once, create_secret_once};
use crate::k8s::rbac::{Extra, Granted};
use crate::k8s::wait::{wait_init_running, wait_running};
use crate::objects::JOB_CONTAINER_NAME;
use crate::objects::job::STEP_CONTAINER_NAME;
use crate::objects::step_pod::{
    FILES_IN_CONTAINER, FILES_OUT_CONTAINER, READY_FLAG, STEP_MARK_DIR,
};
use crate::plan::StepPodPlan;

/// No-volume mode: where the step's files come from and go back to.
pub(crate) struct StepFiles<'a> {
    /// The job pod, which holds the job's files between steps.
    pub job_pod: &'a str,
    pub dirs: &'a RunnerDirs,
    /// The top-level entries of `/__w` the step mounts (e.g. `_temp`, `repo`); empty: all.
    pub roots: Vec<String>,
}

/// The name of the mark the way back compares with.
const IN_MARK: &str = "in";

/// Runs the planned pod to its end and removes it (and its pull secret) whatever happened.
pub(crate) async fn run_as_pod(
    kube: &Kube,
    config: &Config,
    plan: &StepPodPlan,
    files: Option<&StepFiles<'_>>,
    granted: &Granted,
    cancel: &Cancel,
) -> HookResult {
    let name = plan.pod.metadata.name.clone().unwrap_or_default();
    let secret_name = plan.secret.as_ref().and_then(|s| s.metadata.name.clone());
    // A cancel ends the wait here; the pod is deleted below (grace 0), as on every path out.
    let result = tokio::select! {
        result = run_pod(kube, config, plan, &name, files, granted) => result,
        signal = cancel.cancelled() => Err(Cancelled {
            signal,
            stopped: format!("deleted the step's pod {name}, which stops it"),
        }
        .into()),
    };
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    crate::hooks::delete_or_warn(&kube.pods(), "pod", &name, &now).await;
    if let Some(s) = secret_name {
        crate::hooks::delete_or_warn(&kube.secrets(), "secret", &s, &DeleteParams::default()).await;
    }
    result
}

async fn run_pod(
    kube: &Kube,
    config: &Config,
    plan: &StepPodPlan,
    name: &str,
    files: Option<&StepFiles<'_>>,
    granted: &Granted,
) -> HookResult {
    if let Some(secret) = &plan.secret {
        create_secret_once(&kube.secrets(), "secret", secret, None).await?;
    }
    // Created first: its scheduling and image pulls overlap the push into the job pod.
    create_once(&kube.pods(), "pod", &plan.pod)
        .await
        .context("cannot create the step's pod")?;
    let opts = crate::hooks::pod_wait(config, granted, true);
    if let Some(f) = files {
        workspace::push_step(kube, f.job_pod, f.dirs, Vec::new())
            .await
            .context(
                "no-volume mode: copying _temp and new actions into the job pod before the step",
            )?;
        wait_init_running(kube, name, FILES_IN_CONTAINER, opts)
            .await
            .context("the step's pod did not start")?;
        let receiver = ExecTarget {
            pod: name,
            container: FILES_IN_CONTAINER,
            what: "tar (copying the step's files into its pod)",
        };
        let sent = copy::relay(
            kube,
            job_target(f.job_pod, "copying the step's files from the job pod"),
            &send_roots(&f.roots),
            receiver,
            &receive_files(true),
        )
        .await
        .context("no-volume mode: copying the step's files into its pod")?;
        if sent == 0 {
            // Nothing the step mounts exists yet: the mark and the flag alone.
            let (code, _, err) = exec_capture(kube, receiver, &receive_files(false))
                .await
                .context("no-volume mode: starting the step's pod")?;
            if code != 0 {
                anyhow::bail!(
                    "no-volume mode: starting the step's pod: exit code {code}: {}",
                    String::from_utf8_lossy(&err).trim()
                );
            }
        }
    }
    wait_running(kube, name, opts)
        .await
        .context("the step's container did not start")?;
    crate::k8s::logs::follow(kube, name, STEP_CONTAINER_NAME, tokio::io::stdout()).await?;
    let t = super::job::terminated(
        kube,
        name,
        STEP_CONTAINER_NAME,
        granted.has(Extra::WatchPods),
    )
    .await;
    let mut infra = None;
    let step = t.map_err(ResultUnknown).map(|t| {
        infra = super::job::infrastructure(&t);
        t.exit_code
    });
    let outcome = match files {
        None => step.map_err(|e| e.0),
        // Also after a failed step: its outputs and what it wrote are the job's.
        Some(f) => workspace::step_outcome(step, Some(return_changes(kube, name, f).await)),
    };
    match (outcome, infra) {
        (Ok(_), Some(infra)) => Err(infra.into()),
        (outcome, _) => outcome,
    }
}

/// The step's result could not be read from its pod.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct ResultUnknown(anyhow::Error);

/// Relays what the step changed back into the job pod, then pulls `_temp` to the runner.
async fn return_changes(
    kube: &Kube,
    name: &str,
    f: &StepFiles<'_>,
) -> Result<copy::Stats, CopyError> {
    let changed = ChangedSince {
        mark_dir: STEP_MARK_DIR.into(),
        since: Some(IN_MARK.into()),
        next: "out".into(),
    };
    copy::relay(
        kube,
        ExecTarget {
            pod: name,
            container: FILES_OUT_CONTAINER,
            what: "tar (copying the step's changes from its pod)",
        },
        &copy::archive_command(POD_WORK, &[STEP_MARK_DIR], Some(&changed)),
        job_target(f.job_pod, "copying the step's changes into the job pod"),
        &copy::extract_command(POD_WORK),
    )
    .await?;
    workspace::pull_step(kube, f.job_pod, f.dirs).await
}

fn job_target<'a>(pod: &'a str, what: &'a str) -> ExecTarget<'a> {
    ExecTarget {
        pod,
        container: JOB_CONTAINER_NAME,
        what,
    }
}

/// The job pod's side of the way in: the named entries of `/__w` that exist (nothing when none
/// does; all of `/__w` without names), without the hook's own directory in `_temp`, as one tar
/// stream.
fn send_roots(roots: &[String]) -> Vec<String> {
    let tar = "exec tar -c -f - --exclude=./_temp/_arc_hook --exclude=_temp/_arc_hook";
    let script = if roots.is_empty() {
        format!("cd \"$1\" || exit 1; {tar} .")
    } else {
        format!(
            concat!(
                "cd \"$1\" || exit 1; shift; n=$#; i=0; ",
                "while [ $i -lt $n ]; do e=$1; shift; i=$((i + 1)); ",
                "{{ [ -e \"$e\" ] || [ -L \"$e\" ]; }} && set -- \"$@\" \"$e\"; done; ",
                "[ $# -eq 0 ] && exit 0; {tar} -- \"$@\""
            ),
            tar = tar
        )
    };
    let mut command = vec![
        "sh".to_string(),
        "-c".to_string(),
        script,
        "arc-hook-send".to_string(),
        POD_WORK.to_string(),
    ];
    command.extend(roots.iter().cloned());
    command
}

/// The step pod's side of the way in: unpack (with `unpack`), then leave the mark the way back
/// compares with, and the flag that ends the init container.
fn receive_files(unpack: bool) -> Vec<String> {
    let script = format!(
        "{}mkdir -p \"$1/$2\" && touch \"$1/$2/pull-$3\" && : > \"$1/$2/$4\"",
        if unpack {
            "tar -x -o -f - -C \"$1\" || exit $?; "
        } else {
            ""
        }
    );
    let mut command: Vec<String> = vec!["sh".into(), "-c".into(), script];
    command.extend(
        [
            "arc-hook-receive",
            POD_WORK,
            STEP_MARK_DIR,
            IN_MARK,
            READY_FLAG,
        ]
        .map(String::from),
    );
    command
}

/// The top-level entries of the work volume that `sub_paths` (the step's mounts) lie in;
/// empty when one is the volume's root (then all of it is sent).
pub(crate) fn mounted_roots<'a>(sub_paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut roots: Vec<String> = Vec::new();
    for sub in sub_paths {
        let Some(first) = sub.split('/').find(|c| !c.is_empty() && *c != ".") else {
            return Vec::new();
        };
        if !roots.iter().any(|r| r == first) {
            roots.push(first.to_string());
        }
    }
    roots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_are_what_the_step_mounts() {
        assert_eq!(
            mounted_roots(["_temp", "_temp/_github_home", "repo/repo"]),
            ["_temp", "repo"]
        );
        assert!(mounted_roots(["_temp", ""]).is_empty());
    }

    /// The two ends of the way in, run here with the host's sh and tar: only the named roots
    /// that exist arrive, the hook's directory stays behind, and the mark and flag are left.
    #[test]
    fn the_way_in_sends_the_roots_and_leaves_mark_and_flag() {
        let from = tempfile::tempdir().expect("tempdir");
        let to = tempfile::tempdir().expect("tempdir");
        for d in [
            "_temp/_arc_hook",
            "_temp/_runner_file_commands",
            "repo/repo",
            "_tool/big",
        ] {
            std::fs::create_dir_all(from.path().join(d)).expect("mkdir");
        }
        std::fs::write(from.path().join("repo/repo/a"), "a").expect("write");
        std::fs::write(from.path().join("_temp/_arc_hook/pushed.json"), "{}").expect("write");
        let mut send = send_roots(&["_temp".into(), "repo".into(), "missing".into()]);
        send[4] = from.path().to_string_lossy().to_string();
        let archive = std::process::Command::new(&send[0])
            .args(&send[1..])
            .output()
            .expect("sh runs");
        assert!(
            archive.status.success(),
            "{}",
            String::from_utf8_lossy(&archive.stderr)
        );
        let mut recv = receive_files(true);
        recv[4] = to.path().to_string_lossy().to_string();
        let mut child = std::process::Command::new(&recv[0])
            .args(&recv[1..])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh runs");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&archive.stdout)
            .expect("fed");
        assert!(child.wait().expect("waited").success());
        let t = to.path();
        assert_eq!(
            std::fs::read_to_string(t.join("repo/repo/a")).expect("a"),
            "a"
        );
        assert!(t.join("_temp/_runner_file_commands").is_dir());
        assert!(
            !t.join("_temp/_arc_hook").exists(),
            "the hook's directory stays"
        );
        assert!(!t.join("_tool").exists(), "only what the step mounts");
        assert!(t.join(STEP_MARK_DIR).join("pull-in").is_file());
        assert!(t.join(STEP_MARK_DIR).join(READY_FLAG).is_file());

        // Named roots that do not exist send nothing (not all of `/__w`); the flag alone follows.
        let mut none = send_roots(&["missing".into()]);
        none[4] = from.path().to_string_lossy().to_string();
        let empty = std::process::Command::new(&none[0])
            .args(&none[1..])
            .output()
            .expect("sh runs");
        assert!(empty.status.success() && empty.stdout.is_empty());
        let bare = tempfile::tempdir().expect("tempdir");
        let mut flag = receive_files(false);
        flag[4] = bare.path().to_string_lossy().to_string();
        let st = std::process::Command::new(&flag[0])
            .args(&flag[1..])
            .status()
            .expect("sh runs");
        assert!(st.success());
        assert!(bare.path().join(STEP_MARK_DIR).join(READY_FLAG).is_file());
    }
}
