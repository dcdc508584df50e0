//! `arc-hook replay`: plays the runner's part for a recorded job, invoking the hook exactly as the runner does, against the embedded simulator unless `--cluster` asks for the configured cluster.
//!
//! A job directory holds the runner's inputs in order (`NN-<anything>.json`, sorted by name:
//! prepare_job, the steps, cleanup_job), `work/` (the runner's `_work` as it was: step scripts
//! under `work/_temp`, sources under `work/<repo>/<repo>`), optionally `externals/`, `env`
//! (`KEY=VALUE` lines for the hook, `${JOB_DIR}` expanded) and `sim.json` (simulator settings:
//! `imageCommands`, `unpullableImages`, `arcDefaultRole`, `nodeAllocatable`, `faults`).

pub(crate) mod filecommands;
mod home;
mod job;
pub mod print;
mod report;
mod run;
mod runner;
pub(crate) mod target;

use std::path::PathBuf;

use crate::config::ReplayEnv;
use home::RunnerHome;
use job::RecordedJob;
use run::CommandContext;
use runner::{RunnerNames, RunnerPaths, RunnerState, hook_env};
use target::{ClusterInfo, Target};

pub(crate) use crate::sim::settings::SimSettings;
pub use report::{Event, FileCommandNote, Played, ReplayReport};

/// The wrapper the runner calls (the shipped `scripts/arc-hook.sh`).
pub(crate) const WRAPPER: &str = include_str!("../../scripts/arc-hook.sh");
/// The runner pod's name when neither the job's `env` nor `ACTIONS_RUNNER_POD_NAME` names one.
pub(crate) const DEFAULT_RUNNER_POD: &str = "arc-runner";

/// Options of one replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub job_dir: PathBuf,
    /// Where the runner's home is laid out (default: a temporary directory).
    pub workdir: Option<PathBuf>,
    /// The hook binary (default: this executable).
    pub hook_binary: Option<PathBuf>,
    /// What the replaying process's environment says (runner pod name, configured cluster).
    pub environment: ReplayEnv,
    /// `--cluster`: play against the configured cluster instead of the embedded simulator.
    pub use_cluster: bool,
    /// Where the hook's own stdout and stderr go.
    pub hook_output: HookOutput,
}

/// Where the hook's own stdout and stderr go while a replay runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOutput {
    /// This process's stdout and stderr, as a runner shows a step's log.
    Inherit,
    /// Nowhere: for callers that want only the report.
    Discard,
}

/// Why the embedded simulator cannot play a job here, if it cannot: its kubelet gives each pod
/// its own mount and network namespaces, where the job's `/__w`, `/__e` and volumes appear at
/// their paths as in a real pod; without them the first step finds no `/__w`.
pub(crate) fn simulator_refusal(is_root: bool, namespaces: bool) -> Option<String> {
    const WHY: &str = "the embedded simulator runs each pod in its own mount and network namespaces, so that the job's /__w, /__e and volumes appear at their paths as in a real pod";
    const INSTEAD: &str = "or play against a cluster with --cluster";
    if !is_root {
        Some(format!(
            "replay needs root: {WHY}; run it with sudo (or in a container run as root), {INSTEAD}"
        ))
    } else if !namespaces {
        Some(format!(
            "replay cannot create namespaces here (root, but without CAP_SYS_ADMIN): {WHY}; run it in a container started with --privileged (or on the host), {INSTEAD}"
        ))
    } else {
        None
    }
}

/// Replays the job: lays out the runner's home, chooses the cluster or the simulator, plays each
/// command, and reports. `events` is told what happens as it happens (the hook's own output goes
/// where [`ReplayOptions::hook_output`] says).
pub async fn replay(
    opts: &ReplayOptions,
    events: &mut dyn FnMut(Event),
) -> anyhow::Result<ReplayReport> {
    let job = RecordedJob::load(&opts.job_dir)?;
    // The cluster's configuration is read (and a missing one refused) before anything is laid out.
    let cluster = if opts.use_cluster {
        let namespace = job
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "ACTIONS_RUNNER_KUBERNETES_NAMESPACE")
            .map(|(_, v)| v.as_str())
            .or(opts.environment.namespace.as_deref());
        Some(ClusterInfo::read_with_config(opts.environment.cluster, namespace).await?)
    } else {
        if let Some(why) = simulator_refusal(
            nix::unistd::geteuid().is_root(),
            crate::sim::namespaces_available(),
        ) {
            anyhow::bail!(why);
        }
        None
    };
    let names = RunnerNames::choose(&job.env, opts.environment.runner_pod_name.as_deref());
    // Against a cluster whose runner pod says where its work claim is here, the job is laid out
    // there (the claim is what the workflow pod mounts); otherwise where asked, or a temporary home.
    let workdir = match (&opts.workdir, &cluster) {
        (None, Some((info, config))) => {
            target::annotated_runner_home(config.clone(), &info.namespace, &names.pod).await?
        }
        _ => opts.workdir.clone(),
    };
    let found_home = opts.workdir.is_none().then(|| workdir.clone()).flatten();
    let (cluster, cluster_config) = match cluster {
        Some((info, config)) => (Some(info), Some(config)),
        None => (None, None),
    };
    let home = RunnerHome::lay_out(
        &opts.job_dir,
        &job,
        workdir.as_deref(),
        opts.hook_binary.as_deref(),
    )?;
    let target = Target::choose(cluster, &names, &home, &job.sim_settings).await?;
    events(target.event());
    if let Some(dir) = found_home {
        events(Event::RunnerHome(dir));
    }
    let env = hook_env(
        &names.pod,
        RunnerPaths {
            work: &home.work,
            workspace: &home.workspace,
            hook_binary: &home.hook_binary,
            kubeconfig: target.kubeconfig(),
        },
        &job.env,
    );
    let job_pods = target.pods(cluster_config.as_ref()).await?;
    let ctx = CommandContext {
        home: &home,
        env: &env,
        hook_output: opts.hook_output,
        job_pods: &job_pods,
    };
    let mut runner = RunnerState::default();
    let mut played = Vec::with_capacity(job.commands.len());
    for (index, file) in job.commands.iter().enumerate() {
        played.push(run::play_command(index, file, &ctx, &mut runner, events).await?);
    }
    // The simulator stops before the home (its state directory) is removed.
    let injected = target.finish().await;
    drop(home);
    Ok(ReplayReport::summarise(played, injected))
}

#[cfg(test)]
mod tests {
    use super::simulator_refusal;

    #[test]
    fn the_simulator_needs_root_with_namespaces_and_says_why() {
        let not_root = simulator_refusal(false, false).expect("refused");
        assert!(not_root.starts_with("replay needs root: "), "{not_root}");
        assert!(not_root.contains("/__w") && not_root.contains("--cluster"));
        let no_cap = simulator_refusal(true, false).expect("refused");
        assert!(no_cap.contains("CAP_SYS_ADMIN") && no_cap.contains("--privileged"));
        assert_eq!(simulator_refusal(true, true), None);
    }
}
