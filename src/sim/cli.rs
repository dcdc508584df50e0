//! `arc-hook sim serve`: runs the simulator until interrupted, with a kubeconfig for clients.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::{SimConfig, Simulator, arc_chart_default_role};

/// Options of `arc-hook sim serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Port on 127.0.0.1 to serve the Kubernetes API on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Where to write the kubeconfig pointing at the simulator.
    #[arg(long, default_value = "arc-hook-sim.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Delay between a pod's scheduling and its containers starting.
    #[arg(long, default_value_t = 200)]
    pub start_delay_ms: u64,
    /// Image reference that fails to pull (ErrImagePull, then ImagePullBackOff); repeatable.
    #[arg(long = "unpullable", value_name = "IMAGE")]
    pub unpullable: Vec<String>,
    /// Enforce the actions-runner-controller chart's runner Role instead of allowing everything.
    #[arg(long)]
    pub default_role: bool,
    /// Default namespace (written into the kubeconfig).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Keep pod sandboxes here instead of a temporary directory removed on exit.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The node's allocatable amount of a resource, e.g. `cpu=8`, `memory=32Gi`,
    /// `nvidia.com/gpu=1` (repeatable; unnamed resources keep cpu 64, memory 256Gi, pods 110).
    #[arg(long = "node-allocatable", value_name = "RESOURCE=QUANTITY", value_parser = parse_resource)]
    pub node_allocatable: Vec<(String, String)>,
    /// What an image runs when a container names no command (stands in for its ENTRYPOINT), as
    /// `IMAGE=JSON_ARRAY`: the words as a JSON array of strings, the shape of sim.json's
    /// `imageCommands`, so no shell quoting rules apply, e.g.
    /// `--image-command 'redis:7=["sh","-c","echo ready; exec sleep infinity"]'`. IMAGE is an
    /// exact reference or a repository (`redis` matches every tag); repeatable; on top of
    /// --settings.
    #[arg(long = "image-command", value_name = "IMAGE=JSON_ARRAY", value_parser = parse_image_command)]
    pub image_commands: Vec<(String, Vec<String>)>,
    /// A job directory's sim.json (image commands, unpullable images, ARC's Role, node
    /// capacity, faults): serve a job's simulator standalone, e.g. for kubectl or upstream's hook.
    #[arg(long, value_name = "SIM_JSON")]
    pub settings: Option<PathBuf>,
    /// Faults to inject (on top of --settings).
    #[command(flatten)]
    pub(crate) faults: super::settings::FaultSettings,
    /// Serve exec with `v4.channel.k8s.io` only, as an API server before 1.30 does (no stdin
    /// close signal).
    #[arg(long)]
    pub exec_v4_only: bool,
    /// Answer SelfSubjectRulesReviews as incomplete, with no rules (a webhook authorizer after
    /// RBAC): clients must ask SelfSubjectAccessReviews one by one
    #[arg(long)]
    pub rules_review_incomplete: bool,
    /// Give pods and the node IPv6 addresses only, as an IPv6-only cluster does.
    #[arg(long)]
    pub ipv6_only: bool,
}

/// `cpu=8` -> ("cpu", "8"), with the quantity checked.
fn parse_resource(s: &str) -> Result<(String, String), String> {
    let (name, qty) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected RESOURCE=QUANTITY, e.g. cpu=8"))?;
    if name.is_empty() || crate::quantity::parse(qty).is_none() {
        return Err(format!(
            "{s:?}: expected RESOURCE=QUANTITY, e.g. cpu=8 or memory=32Gi"
        ));
    }
    Ok((name.to_string(), qty.to_string()))
}

/// `redis:7=["redis-server","--port","6379"]` -> ("redis:7", ["redis-server", ...]).
fn parse_image_command(s: &str) -> Result<(String, Vec<String>), String> {
    let example = r#"e.g. 'redis:7=["redis-server","--port","6379"]'"#;
    let (image, words) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected IMAGE=JSON_ARRAY, {example}"))?;
    if image.is_empty() {
        return Err(format!("{s:?}: the image is missing before '=', {example}"));
    }
    let command: Vec<String> = serde_json::from_str(words).map_err(|e| {
        format!("{words:?}: the command must be a JSON array of strings ({e}), {example}")
    })?;
    if command.is_empty() {
        return Err(format!("{s:?}: the command is empty, {example}"));
    }
    Ok((image.to_string(), command))
}

/// Serves until SIGINT or SIGTERM, then kills pod processes and removes temporary state.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let settings = match &args.settings {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --settings {}", path.display()))?;
            let settings = super::settings::SimSettings::from_json(&text)
                .with_context(|| format!("--settings {}", path.display()))?;
            Some((path.clone(), settings))
        }
        None => None,
    };
    let cfg = serve_config(&args, settings.as_ref())?;
    let sim = Simulator::start_on(cfg, args.port)
        .await
        .context("cannot start the Kubernetes simulator")?;
    sim.write_kubeconfig(&args.kubeconfig).with_context(|| {
        format!(
            "cannot write the kubeconfig to {}",
            args.kubeconfig.display()
        )
    })?;
    let path = std::fs::canonicalize(&args.kubeconfig).unwrap_or_else(|_| args.kubeconfig.clone());
    println!("export KUBECONFIG={}", path.display());
    eprintln!("arc-hook simulator serving {} (Ctrl-C to stop)", sim.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot listen for SIGINT")?,
        _ = term.recv() => {}
    }
    eprintln!("stopping the simulator");
    sim.shutdown().await;
    Ok(())
}

/// The simulator `sim serve` runs: the flags, a `--settings` file over them, and the flags that
/// name a value again (node capacity, image commands, faults) over the file: a flag given on the
/// command line always wins.
pub(crate) fn serve_config(
    args: &ServeArgs,
    settings: Option<&(std::path::PathBuf, super::settings::SimSettings)>,
) -> anyhow::Result<SimConfig> {
    let mut cfg = SimConfig {
        node_allocatable: super::kubelet::default_allocatable(),
        namespace: args.namespace.clone(),
        start_delay: Duration::from_millis(args.start_delay_ms),
        unpullable_images: args.unpullable.clone(),
        rbac: args.default_role.then(arc_chart_default_role),
        state_dir: args.state_dir.clone(),
        exec_v4_only: args.exec_v4_only,
        rules_review_incomplete: args.rules_review_incomplete,
        ipv6_only: args.ipv6_only,
        ..SimConfig::default()
    };
    if let Some((path, settings)) = settings {
        settings
            .apply(&mut cfg)
            .map_err(|e| anyhow::anyhow!("--settings {}: {e}", path.display()))?;
    }
    cfg.node_allocatable
        .extend(args.node_allocatable.iter().cloned());
    cfg.image_commands
        .extend(args.image_commands.iter().cloned());
    cfg.faults = args
        .faults
        .apply(cfg.faults.clone())
        .map_err(|e| anyhow::anyhow!("fault flags: {e}"))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn a_flag_wins_over_the_settings_file() {
        let args = Serve::try_parse_from([
            "serve",
            "--node-allocatable",
            "cpu=2",
            "--image-command",
            r#"redis:7=["redis-server"]"#,
        ])
        .expect("flags")
        .args;
        let settings = super::super::settings::SimSettings::from_json(
            r#"{"nodeAllocatable": {"cpu": "8", "memory": "4Gi"}, "imageCommands": {"redis:7": ["sleep", "1"], "nginx:1": ["nginx"]}}"#,
        )
        .expect("settings");
        let cfg = serve_config(&args, Some(&("sim.json".into(), settings))).expect("config");
        assert_eq!(cfg.node_allocatable["cpu"], "2", "the flag wins");
        assert_eq!(
            cfg.node_allocatable["memory"], "4Gi",
            "the file fills in the rest"
        );
        assert_eq!(cfg.image_commands["redis:7"], ["redis-server"]);
        assert_eq!(cfg.image_commands["nginx:1"], ["nginx"]);
    }

    #[test]
    fn image_command_is_an_image_and_a_json_array() {
        assert_eq!(
            parse_image_command(r#"redis:7=["sh","-c","echo ready; exec sleep infinity"]"#),
            Ok((
                "redis:7".to_string(),
                vec![
                    "sh".to_string(),
                    "-c".to_string(),
                    "echo ready; exec sleep infinity".to_string()
                ]
            ))
        );
        let digest = format!("alpine@sha256:{}", "a".repeat(64));
        assert_eq!(
            parse_image_command(&format!(r#"{digest}=["true"]"#)).map(|(i, _)| i),
            Ok(digest)
        );
        for bad in [
            "redis:7",
            r#"=["x"]"#,
            "redis:7=redis-server --port 6379",
            r#"redis:7=[]"#,
            r#"redis:7=["a", 1]"#,
        ] {
            let e = parse_image_command(bad).expect_err(bad);
            assert!(e.contains("e.g. 'redis:7="), "{bad}: {e}");
        }
    }
}
