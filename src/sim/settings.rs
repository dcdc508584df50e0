//! The simulator's settings as a job directory's `sim.json` and `sim serve --settings` write them: image commands, unpullable images, ARC's Role, node capacity and fault knobs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

use super::{Faults, SimConfig, arc_chart_default_role};

/// Simulator settings (`sim.json`, camelCase keys).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimSettings {
    /// What an image runs when a container names no command (its ENTRYPOINT/CMD).
    #[serde(default)]
    pub image_commands: HashMap<String, Vec<String>>,
    /// Image references that fail to pull (ErrImagePull, then ImagePullBackOff).
    #[serde(default)]
    pub unpullable_images: Vec<String>,
    /// Restrict the simulated service account to ARC's default Role.
    #[serde(default)]
    pub arc_default_role: bool,
    /// Restrict it to ARC's Role for `kubernetes-novolume` mode (the default one without Jobs);
    /// wins over `arcDefaultRole`.
    #[serde(default)]
    pub arc_novolume_role: bool,
    /// The simulated node's allocatable resources by name (`{"cpu": "8"}`); others keep their defaults.
    #[serde(default)]
    pub node_allocatable: BTreeMap<String, String>,
    /// Faults to inject, so a job can be replayed against a misbehaving API server.
    #[serde(default)]
    pub(crate) faults: FaultSettings,
    /// Pod and node addresses as in an IPv6-only cluster.
    #[serde(default)]
    pub ipv6_only: bool,
}

/// Fault knobs, each optional (`sim.json`'s `faults`, or `sim serve`'s flags of the same names).
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FaultSettings {
    /// Fraction (0..=1) of API calls answered with an error instead of being served.
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// The status of those errors: 500 (InternalError) or 429 (TooManyRequests, Retry-After: 1).
    #[arg(long)]
    pub error_status: Option<u16>,
    /// Milliseconds added before serving every API call.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Cut exec streams (socket closed without a status) after this many output bytes.
    #[arg(long)]
    pub exec_drop_after_bytes: Option<usize>,
    /// How many exec streams are cut that way (default: every one).
    #[arg(long)]
    pub exec_drops: Option<usize>,
    /// Cut exec streams after this many seconds without a frame either way (a proxy's idle timeout).
    #[arg(long)]
    pub exec_idle_timeout_seconds: Option<u64>,
    /// End watches after this many events (as on a server-side timeout).
    #[arg(long)]
    pub watch_close_after_events: Option<usize>,
    /// Cut followed log streams (connection dropped mid-body) after this many bytes.
    #[arg(long)]
    pub log_drop_after_bytes: Option<usize>,
    /// How many log streams are cut that way (default: every one).
    #[arg(long)]
    pub log_drops: Option<usize>,
    /// Seed of the generator deciding which calls fail, so failures repeat.
    #[arg(long)]
    pub fault_seed: Option<u64>,
}

impl FaultSettings {
    /// The knobs set here, on top of `base`.
    pub(crate) fn apply(&self, base: Faults) -> Result<Faults, String> {
        let mut f = base;
        if let Some(r) = self.error_rate {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("errorRate {r}: expected a fraction from 0 to 1"));
            }
            f.error_rate = r;
        }
        if let Some(s) = self.error_status {
            if s != 500 && s != 429 {
                return Err(format!("errorStatus {s}: expected 500 or 429"));
            }
            f.error_status = s;
        }
        if let Some(ms) = self.latency_ms {
            f.latency = Duration::from_millis(ms);
        }
        if self.exec_drop_after_bytes.is_some() {
            f.exec_drop_after_bytes = self.exec_drop_after_bytes;
        }
        if self.exec_drops.is_some() {
            f.exec_drops_left = self.exec_drops;
        }
        if let Some(s) = self.exec_idle_timeout_seconds {
            f.exec_idle_timeout = Some(Duration::from_secs(s));
        }
        if self.watch_close_after_events.is_some() {
            f.watch_close_after_events = self.watch_close_after_events;
        }
        if self.log_drop_after_bytes.is_some() {
            f.log_drop_after_bytes = self.log_drop_after_bytes;
        }
        if self.log_drops.is_some() {
            f.log_drops_left = self.log_drops;
        }
        if let Some(seed) = self.fault_seed {
            f.seed = seed;
        }
        Ok(f)
    }
}

impl SimSettings {
    /// Reads a `sim.json`.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// These settings on top of `cfg`.
    pub fn apply(&self, cfg: &mut SimConfig) -> Result<(), String> {
        cfg.image_commands.extend(self.image_commands.clone());
        cfg.unpullable_images
            .extend(self.unpullable_images.iter().cloned());
        if self.arc_default_role {
            cfg.rbac = Some(arc_chart_default_role());
        }
        if self.arc_novolume_role {
            cfg.rbac = Some(super::arc_chart_novolume_role());
        }
        cfg.node_allocatable.extend(self.node_allocatable.clone());
        cfg.ipv6_only |= self.ipv6_only;
        cfg.faults = self.faults.apply(cfg.faults.clone())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_from_sim_json() {
        let s = SimSettings::from_json(
            r#"{"faults": {"errorRate": 0.2, "errorStatus": 429, "latencyMs": 30, "execDropAfterBytes": 100, "execDrops": 2, "watchCloseAfterEvents": 1}}"#,
        )
        .expect("parses");
        let mut cfg = SimConfig::default();
        s.apply(&mut cfg).expect("valid");
        assert_eq!(cfg.faults.error_rate, 0.2);
        assert_eq!(cfg.faults.error_status, 429);
        assert_eq!(cfg.faults.latency, Duration::from_millis(30));
        assert_eq!(cfg.faults.exec_drop_after_bytes, Some(100));
        assert_eq!(cfg.faults.exec_drops_left, Some(2));
        assert_eq!(cfg.faults.watch_close_after_events, Some(1));
        assert!(
            SimSettings::from_json(r#"{"faults": {"errorRat": 1}}"#).is_err(),
            "typos are refused"
        );
        let bad = SimSettings::from_json(r#"{"faults": {"errorRate": 2}}"#).expect("parses");
        assert!(bad.apply(&mut SimConfig::default()).is_err());
    }
}
