//! The `arc-hook` command line: the hook itself (stdin JSON), `render`, `replay`, and the simulator and exporter.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use arc_hook::config::Config;
use arc_hook::render::{RenderOptions, render};
use arc_hook::replay::{ReplayOptions, replay};

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
    /// Play the runner's part for a recorded job (see fixtures/jobs/), against the embedded
    /// simulator unless a cluster is configured. Exits with the first failing command's code.
    Replay {
        /// A job directory: NN-*.json runner inputs in order, work/ (the runner's _work), env, sim.json.
        job_dir: PathBuf,
        /// Lay the runner's home out here and keep it (default: a temporary directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
    },
    /// The embedded Kubernetes API simulator (the default target of `replay` and the tests).
    #[command(subcommand)]
    Sim(SimCmd),
    /// Serve GitHub Actions metrics for Prometheus (see src/exporter/README.md).
    Exporter(arc_hook::exporter::ExporterArgs),
}

#[derive(Subcommand)]
enum SimCmd {
    /// Serve the simulated Kubernetes API on 127.0.0.1 until interrupted, and write a kubeconfig.
    Serve(arc_hook::sim::cli::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command.unwrap_or(Cmd::Hook) {
        Cmd::Hook => arc_hook::hooks::main_from_stdin(),
        Cmd::Replay { job_dir, workdir } => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let opts = ReplayOptions {
                job_dir,
                workdir,
                hook_binary: None,
            };
            match runtime.block_on(replay(&opts)) {
                Ok(report) => {
                    ExitCode::from(u8::try_from(report.exit_code.clamp(0, 255)).unwrap_or(1))
                }
                Err(e) => {
                    eprintln!("error: replay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Sim(SimCmd::Serve(args)) => {
            let result = tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(arc_hook::sim::cli::serve(args)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: sim: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Exporter(args) => {
            let result = tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(arc_hook::exporter::run(args)));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: exporter: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Render {
            fixture,
            template,
            node_name,
            namespace,
            show_secrets,
        } => {
            let result = Config::from_env()
                .map_err(anyhow::Error::from)
                .and_then(|config| {
                    render(
                        &fixture,
                        &config,
                        &RenderOptions {
                            template,
                            node_name,
                            namespace,
                            show_secrets,
                        },
                    )
                });
            match result {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Internal logs go to stderr at `ARC_HOOK_LOG` (default: warnings only), never into stdout.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARC_HOOK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}
