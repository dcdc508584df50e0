//! The `arc-hook` command line: the hook itself (stdin JSON), `render`, `replay`, and the simulator and exporter.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use arc_hook::config::Config;
use arc_hook::render::{RenderOptions, render};

/// A Kubernetes container hook for GitHub Actions runners (ARC Kubernetes mode).
///
/// With no subcommand, arc-hook is the hook: it reads the runner's JSON from stdin
/// (ACTIONS_RUNNER_CONTAINER_HOOKS points at a wrapper script that execs it).
#[derive(Parser)]
#[command(name = "arc-hook", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one hook command from the runner's JSON on stdin (the default).
    Hook,
    /// Check this runner's set-up as prepare_job would, creating nothing: configuration,
    /// template, cluster, permissions, node, and a server-side dry run (dryRun=All) of the
    /// workflow pod and pull secret a typical job gets. One line per check (ok, FAIL with the
    /// fix, skip); exits 1 if any check fails.
    ///
    /// Run it in a runner pod (kubectl exec), where it uses the pod's service account and
    /// environment, or anywhere with KUBECONFIG (or ~/.kube/config) and the runner's variables
    /// set, e.g. ACTIONS_RUNNER_POD_NAME and ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE.
    Check,
    /// Print, as YAML, every object a runner input would create (no cluster needed).
    Render {
        /// A runner input (JSON), e.g. fixtures/prepare_job.json.
        fixture: PathBuf,
        /// Worker-podspec template to merge (default: $ACTIONS_RUNNER_CONTAINER_HOOK_TEMPLATE).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Node name to pin pods to (a real run uses the runner pod's node).
        #[arg(long, default_value = "runner-node")]
        node_name: String,
        /// Namespace to put objects in.
        #[arg(long, default_value = "arc-runners")]
        namespace: String,
        /// Print registry credentials instead of redacting them.
        #[arg(long)]
        show_secrets: bool,
    },
    #[cfg(feature = "sim")]
    /// Play the runner's part for a recorded job (see fixtures/jobs/), against the embedded
    /// simulator (or, with --cluster, your cluster). Exits with the first failing command's code.
    Replay {
        /// A job directory: NN-*.json runner inputs in order, work/ (the runner's _work), env, sim.json.
        job_dir: PathBuf,
        /// Lay the runner's home out here and keep it (default: a temporary directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// The hook binary the runner calls (through scripts/arc-hook.sh), e.g. the runner
        /// image's static build (default: this binary).
        #[arg(long)]
        hook_binary: Option<PathBuf>,
        /// Play against the configured cluster (KUBECONFIG, ~/.kube/config or the pod's service
        /// account, as kubectl would) instead of the embedded simulator; its context, server and
        /// namespace are printed before anything is created.
        #[arg(long)]
        cluster: bool,
    },
    #[cfg(feature = "sim")]
    /// The embedded Kubernetes API simulator (the default target of `replay` and the tests).
    #[command(subcommand)]
    Sim(SimCmd),
    #[cfg(feature = "exporter")]
    /// Serve GitHub Actions metrics for Prometheus (see src/exporter/README.md).
    Exporter(arc_hook::exporter::ExporterArgs),
}

#[cfg(feature = "sim")]
#[derive(Subcommand)]
enum SimCmd {
    /// Serve the simulated Kubernetes API on 127.0.0.1 until interrupted, and write a kubeconfig.
    Serve(arc_hook::sim::cli::ServeArgs),
    /// Run a real cluster's pods bound to one Node here, with the simulator's kubelet (see README).
    Node(arc_hook::sim::node::NodeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli.command.unwrap_or(Cmd::Hook)) {
        Ok(code) => code,
        // The one place errors are printed: each command's context says which part failed.
        Err(e) => {
            arc_hook::joblog::error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand to its exit code.
fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Hook => {
            let code = runtime(Flavour::Hook)?.block_on(arc_hook::hooks::run_from_stdin())?;
            Ok(exit_code(code))
        }
        Cmd::Check => {
            let passed = runtime(Flavour::Hook)?.block_on(arc_hook::check::run(&mut |f| {
                arc_hook::joblog::line(f.line());
            }));
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Render {
            fixture,
            template,
            node_name,
            namespace,
            show_secrets,
        } => {
            let config = Config::from_env().context("error")?;
            let yaml = render(
                &fixture,
                &config,
                &RenderOptions {
                    template,
                    node_name,
                    namespace,
                    show_secrets,
                },
            )
            .context("error")?;
            print!("{yaml}");
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Cmd::Replay {
            job_dir,
            workdir,
            hook_binary,
            cluster,
        } => {
            use arc_hook::replay::{self, HookOutput, ReplayOptions};
            let opts = ReplayOptions {
                job_dir,
                workdir,
                hook_binary,
                environment: arc_hook::config::ReplayEnv::from_env(),
                use_cluster: cluster,
                hook_output: HookOutput::Inherit,
            };
            // Progress is shown best effort: a closed stdout must not stop the replay before
            // cleanup_job has run.
            let mut show = |event: replay::Event| {
                let _ = replay::print::event(&mut std::io::stdout(), &event);
            };
            let report = runtime(Flavour::Server)?
                .block_on(replay::replay(&opts, &mut show))
                .context("error: replay")?;
            replay::print::summary(&mut std::io::stdout(), &report)
                .context("error: replay: writing the summary")?;
            Ok(exit_code(report.exit_code))
        }
        #[cfg(feature = "sim")]
        Cmd::Sim(SimCmd::Serve(args)) => {
            runtime(Flavour::Server)?
                .block_on(arc_hook::sim::cli::serve(args))
                .context("error: sim")?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "sim")]
        Cmd::Sim(SimCmd::Node(args)) => {
            runtime(Flavour::Server)?
                .block_on(arc_hook::sim::node::run(args))
                .context("error: sim node")?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "exporter")]
        Cmd::Exporter(args) => {
            let env = arc_hook::config::ExporterEnv::from_env()
                .context("error: exporter: reading exporter credentials from the environment")?;
            runtime(Flavour::Server)?
                .block_on(arc_hook::exporter::run(args, env))
                .context("error: exporter")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Which runtime a command needs.
enum Flavour {
    /// One hook command: a single thread is enough and starts fastest.
    Hook,
    /// Servers (simulator, exporter) and replay, which runs a simulator beside the hook.
    #[cfg_attr(not(any(feature = "sim", feature = "exporter")), allow(dead_code))]
    Server,
}

fn runtime(flavour: Flavour) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match flavour {
        Flavour::Hook => tokio::runtime::Builder::new_current_thread(),
        Flavour::Server => tokio::runtime::Builder::new_multi_thread(),
    };
    builder
        .enable_all()
        .build()
        .context("arc-hook: cannot start")
}

/// The process exit code for a command's code (0-255; anything else fails).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

/// Internal logs go to stderr at `ARC_HOOK_LOG` (default: arc-hook's warnings only).
fn init_tracing() {
    arc_hook::logging::init(arc_hook::config::log_filter());
}
