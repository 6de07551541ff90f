//! A node's configuration: the JSON file `presence node --config` reads.

use std::path::Path;
use std::time::Duration;

use presence_engine::Config;
use serde::{Deserialize, Serialize};

use crate::wire::is_token;

/// What every node of a deployment must agree on, and how this one behaves. Every field has a
/// default; a file may give only what it changes:
///
/// ```json
/// {"deployment": "presence", "shards": 8, "replicas": 3, "node_timeout_ms": 3000}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The deployment's name: its streams are `<name>-000`, ... (default `presence`).
    pub deployment: String,
    /// Shards, fixed when the deployment is created (default 8).
    pub shards: u32,
    /// Replicas of each shard's stream, when a node creates it (default 3).
    pub replicas: usize,
    /// A node not heard for this long is lost: its shards are taken over and its devices'
    /// sessions disconnected (R9.6; default 3 000).
    pub node_timeout_ms: u64,
    /// How often the node ticks its shards (R2.4); 0: only when asked (`Control::Tick`), for
    /// tests and simulations that give every time (default 1 000).
    pub tick_interval_ms: u64,
    /// How often the node reads every shard's stream for batches whose announcement it missed
    /// (default 1 000): the bound on how late a change reaches this node when an announcement
    /// is lost and no later one shows the gap.
    pub follow_interval_ms: u64,
    /// How long a client request may take before the client asks again (default 5 000).
    pub request_timeout_ms: u64,
    /// The engine's configuration, the same on every node (docs/SPEC.md's defaults).
    pub engine: Config,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            deployment: "presence".into(),
            shards: 8,
            replicas: 3,
            node_timeout_ms: 3_000,
            tick_interval_ms: 1_000,
            follow_interval_ms: 1_000,
            request_timeout_ms: 5_000,
            engine: Config::default(),
        }
    }
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<NodeConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: NodeConfig = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a node configuration: {e}", path.display()))?;
        config.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if !is_token(&self.deployment) || self.deployment.len() > 100 {
            return Err(format!("deployment {:?}: 1 to 64 letters, digits, _ or -", self.deployment));
        }
        if !(1..=1_000).contains(&self.shards) {
            return Err(format!("shards = {}: from 1 to 1000", self.shards));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!("replicas = {}: from 1 to 5", self.replicas));
        }
        if !(200..=600_000).contains(&self.node_timeout_ms) {
            return Err(format!("node_timeout_ms = {}: from 200 to 600000", self.node_timeout_ms));
        }
        if !(1..=10_000).contains(&self.follow_interval_ms) {
            return Err(format!("follow_interval_ms = {}: from 1 to 10000", self.follow_interval_ms));
        }
        self.engine.validate().map_err(|e| e.to_string())
    }

    /// How often a node says it is alive: a quarter of the timeout.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis((self.node_timeout_ms / 4).max(50))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_gives_only_what_it_changes_and_bad_values_are_refused() {
        let config: NodeConfig = serde_json::from_str(r#"{"shards": 4, "node_timeout_ms": 1000}"#).unwrap();
        assert_eq!(config.shards, 4);
        assert_eq!(config.deployment, "presence");
        assert!(config.validate().is_ok());
        assert!(serde_json::from_str::<NodeConfig>(r#"{"shard": 4}"#).is_err(), "unknown fields are refused");
        for bad in [
            NodeConfig { shards: 0, ..NodeConfig::default() },
            NodeConfig { deployment: "a.b".into(), ..NodeConfig::default() },
            NodeConfig { node_timeout_ms: 10, ..NodeConfig::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
