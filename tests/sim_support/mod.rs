//! Helpers shared by the simulator's integration tests: starting a simulator, building pods,
//! and bounded, event-driven waits.
#![allow(dead_code)]

use std::time::Duration;

use arc_hook::sim::{SimConfig, Simulator};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::wait::{Condition, await_condition};

/// Upper bound for any wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn start(cfg: SimConfig) -> Simulator {
    Simulator::start(SimConfig {
        start_delay: Duration::from_millis(50),
        ..cfg
    })
    .await
    .expect("simulator starts")
}

/// A pod with one container running `command` (no command: the image's keep-alive).
pub fn pod(name: &str, image: &str, command: &[&str]) -> Pod {
    let mut c = serde_json::json!({"name": "main", "image": image});
    if !command.is_empty() {
        c["command"] = serde_json::json!(command);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"test": name}},
        "spec": {"containers": [c], "restartPolicy": "Never"},
    }))
    .expect("valid pod")
}

/// Waits until `cond` holds for the named object, or fails naming what was awaited.
pub async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, cond: impl Condition<K>) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{name} was deleted while waiting until {what}"),
        Ok(Err(e)) => panic!("watching {name} until {what} failed: {e}"),
        Err(_) => panic!("{name} did not become {what} within {WAIT:?}"),
    }
}

/// Pod phase condition.
pub fn phase_is(phase: &'static str) -> impl Condition<Pod> {
    move |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref())
            .and_then(|s| s.phase.as_deref())
            == Some(phase)
    }
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Waits until the named object is gone.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let gone = |o: Option<&K>| o.is_none();
    match tokio::time::timeout(WAIT, await_condition(api.clone(), name, gone)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("watching {name} until deleted failed: {e}"),
        Err(_) => panic!("{name} was not deleted within {WAIT:?}"),
    }
}
