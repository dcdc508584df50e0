//! arc-hook command line (minimal until the full CLI lands): `arc-hook sim serve`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "arc-hook", version, about = "Kubernetes container hook for GitHub Actions runners")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The embedded Kubernetes API simulator.
    #[command(subcommand)]
    Sim(SimCmd),
}

#[derive(Subcommand)]
enum SimCmd {
    /// Serve the simulated Kubernetes API until interrupted.
    Serve(arc_hook::sim::cli::ServeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::Sim(SimCmd::Serve(args)) => arc_hook::sim::cli::serve(args).await,
    }
}
