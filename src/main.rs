use clap::Parser;

#[derive(Parser)]
#[command(name = "arc-hook", version, about = "GitHub Actions runner container hook for Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve GitHub Actions metrics for Prometheus.
    Exporter(arc_hook::exporter::ExporterArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Exporter(args) => arc_hook::exporter::run(args).await,
    }
}
