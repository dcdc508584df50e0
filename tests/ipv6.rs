//! An IPv6-only cluster: the simulator gives pods and the node only IPv6 addresses; a job with a
//! health-checked service and a step reaching it over IPv6 loopback runs through the real binary.

mod common;

use std::collections::HashMap;

use common::{Runner, job_args, sim_config};
use serde_json::json;

/// A web service listening on IPv6 only (`[::1]:8080`), checked with a probe that connects there.
fn web_service() -> serde_json::Value {
    json!([{
        "image": "nginx:1.27",
        "createOptions": "--health-cmd \"python3 -c 'import urllib.request; urllib.request.urlopen(\\\"http://[::1]:8080/\\\", timeout=1)'\" --health-interval 1s --health-timeout 1s --health-retries 5",
        "entryPoint": null,
        "entryPointArgs": [],
        "environmentVariables": {},
        "userMountVolumes": [],
        "systemMountVolumes": [],
        "registry": null,
        "portMappings": ["[::1]:8080:8080"]
    }])
}

/// Whether the simulator gives each pod a network of its own (root), so the service's port is
/// the pod's and not the host's.
fn pods_get_own_networks() -> bool {
    common::require_root("a per-pod network namespace for the IPv6 job's service")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_where_pods_have_only_ipv6_addresses() {
    if !pods_get_own_networks() {
        return;
    }
    let mut cfg = sim_config();
    cfg.ipv6_only = true;
    cfg.image_commands = HashMap::from([(
        "nginx:1.27".to_string(),
        ["python3", "-m", "http.server", "8080", "--bind", "::1"]
            .map(String::from)
            .to_vec(),
    )]);
    let mut r = Runner::start(cfg).await;
    assert!(r.sim.uses_namespaces(), "root, yet no pod namespaces");
    let (run, resp) = r.prepare(job_args("ubuntu:24.04", web_service())).await;
    run.assert_ok();
    assert!(
        run.stdout.contains("arc-hook: service nginx is healthy"),
        "{}",
        run.stdout
    );
    let resp = resp.expect("response");
    assert_eq!(resp["context"]["services"][0]["ports"]["8080"], "8080");

    let pod = r.job_pod().await;
    let status = pod.status.expect("status");
    let ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .collect();
    assert_eq!(ips.len(), 1, "{ips:?}");
    assert!(
        ips[0].parse::<std::net::Ipv6Addr>().is_ok(),
        "the pod has an IPv6 address only: {ips:?}"
    );
    assert_eq!(status.host_ip.as_deref(), Some("::1"));

    let s = r.step_ok("python3 -c 'import urllib.request; print(\"service answered\", urllib.request.urlopen(\"http://[::1]:8080/\", timeout=5).status)'\n").await;
    assert!(s.stdout.contains("service answered 200"), "{}", s.stdout);
    r.clean_up().await;
}
