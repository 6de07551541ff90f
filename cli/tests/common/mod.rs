//! A cluster on real processes, for the tests of `presence node`: three nats-server
//! processes with JetStream (streams of three replicas) and `presence node` processes (with a
//! gateway each, or none), on loopback ports, in temporary directories, all killed when the
//! cluster is dropped.

#![allow(dead_code)] // Each test binary uses its own part of it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use presence_cluster::{ClusterClient, NodeConfig};
use presence_engine::{codec, EventStore};
use presence_storage_nats::{shard_stream, NatsOptions, NatsStore};
use presence_testkit::process::{accepts, free_ports, wait_until, ServerProcess};
use presence_testkit::NatsCluster;

pub const SHARDS: u32 = 6;
pub const NODE_TIMEOUT_MS: u64 = 1_500;
/// How long a test waits for a reply, a notice or a gateway before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Cluster {
    pub nats: NatsCluster,
    dir: tempfile::TempDir,
    config: PathBuf,
    /// The gateways' secret file, when the nodes run gateways.
    secret: Option<PathBuf>,
    pub nodes: BTreeMap<String, ServerProcess>,
    /// Each node's gateway address, when the nodes run gateways.
    pub gateways: BTreeMap<String, SocketAddr>,
    pub deployment: String,
}

impl Cluster {
    /// Nodes without gateways.
    pub fn start(deployment: &str, nodes: &[&str], tick_interval_ms: u64) -> Cluster {
        Cluster::start_with(deployment, nodes, tick_interval_ms, None)
    }

    /// Nodes with a gateway each (`--gateway-addr`, `--secret-file` holding `secret`), started
    /// and accepting.
    pub fn start_with_gateways(deployment: &str, nodes: &[&str], secret: &[u8]) -> Cluster {
        Cluster::start_with(deployment, nodes, 1_000, Some(secret))
    }

    fn start_with(deployment: &str, nodes: &[&str], tick_interval_ms: u64, secret: Option<&[u8]>) -> Cluster {
        let nats = NatsCluster::start(3);
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig {
            deployment: deployment.into(),
            shards: SHARDS,
            replicas: 3,
            node_timeout_ms: NODE_TIMEOUT_MS,
            tick_interval_ms,
            ..NodeConfig::default()
        };
        let path = dir.path().join("node.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let secret = secret.map(|secret| {
            let file = dir.path().join("secret");
            std::fs::write(&file, secret).unwrap();
            file
        });
        let mut cluster = Cluster {
            nats,
            dir,
            config: path,
            secret,
            nodes: BTreeMap::new(),
            gateways: BTreeMap::new(),
            deployment: deployment.into(),
        };
        let ports = free_ports(nodes.len());
        for (node, port) in nodes.iter().zip(ports) {
            cluster.start_node(node, port);
        }
        for (node, addr) in &cluster.gateways {
            let ready = wait_until(WAIT, "a node's gateway accepting", || accepts(addr.port()));
            assert!(ready.is_ok(), "{node}'s gateway did not start:\n{}", cluster.log(node));
        }
        cluster
    }

    /// Starts node `id`, with its gateway on `port` if the nodes run gateways.
    fn start_node(&mut self, id: &str, port: u16) {
        let mut args = vec![
            "node".to_string(),
            "--nats".to_string(),
            self.nats.urls(),
            "--node-id".to_string(),
            id.to_string(),
            "--config".to_string(),
            self.config.display().to_string(),
        ];
        if let Some(secret) = &self.secret {
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            args.extend([
                "--gateway-addr".to_string(),
                addr.to_string(),
                "--secret-file".to_string(),
                secret.display().to_string(),
            ]);
            self.gateways.insert(id.to_string(), addr);
        }
        let log = self.dir.path().join(format!("{id}.log"));
        let process = ServerProcess::spawn(Path::new(env!("CARGO_BIN_EXE_presence")), &args, &log).unwrap();
        self.nodes.insert(id.to_string(), process);
    }

    pub fn kill(&mut self, id: &str) {
        self.nodes.remove(id).unwrap().kill();
    }

    pub fn signal(&self, id: &str, signal: &str) {
        let pid = self.nodes[id].id();
        let status = std::process::Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    pub fn client(&self) -> ClusterClient {
        ClusterClient::connect(&self.nats.urls(), &self.deployment, SHARDS).unwrap()
    }

    pub fn log(&self, id: &str) -> String {
        presence_testkit::process::log_tail(&self.dir.path().join(format!("{id}.log")), 40)
    }

    /// Waits until every shard is served by the node of `nodes` that should own it
    /// (`presence_cluster::assign`), and by no other.
    pub fn wait_served(
        &self,
        client: &ClusterClient,
        nodes: &[&str],
        timeout: Duration,
    ) -> BTreeMap<u32, String> {
        let mut owners = BTreeMap::new();
        let want: BTreeMap<u32, String> = presence_cluster::assign(SHARDS, nodes.iter().copied())
            .into_iter()
            .enumerate()
            .map(|(shard, node)| (shard as u32, node.unwrap().to_string()))
            .collect();
        let served = wait_until(timeout, "every shard served by its owner", || {
            owners.clear();
            let mut twice = false;
            for alive in client.nodes(Duration::from_millis(NODE_TIMEOUT_MS / 2)) {
                if !nodes.contains(&alive.node.as_str()) {
                    continue;
                }
                for (shard, _) in alive.shards {
                    twice |= owners.insert(shard, alive.node.clone()).is_some();
                }
            }
            !twice && owners == want
        });
        if let Err(e) = served {
            let logs: Vec<String> = nodes.iter().map(|n| format!("--- {n}:\n{}", self.log(n))).collect();
            panic!("{e}: {owners:?}\n{}", logs.join("\n"));
        }
        owners
    }

    /// Every event of every shard's log, by shard. Reading a stream just after its shard
    /// moved may time out once (its leader is busy with the claim); a read is tried three
    /// times, and a failure names the shard and every error.
    pub fn logs(&self) -> Vec<Vec<presence_engine::Event>> {
        let read = |shard: u32| -> Result<Vec<presence_engine::Event>, String> {
            let options = NatsOptions::new(self.nats.urls(), shard_stream(&self.deployment, shard));
            let store = NatsStore::open(options).map_err(|e| e.to_string())?;
            let mut events = Vec::new();
            for batch in store.read_from(1).map_err(|e| e.to_string())? {
                let batch = batch.map_err(|e| e.to_string())?;
                events.extend(codec::decode_batch(&batch.bytes).unwrap().1);
            }
            Ok(events)
        };
        (0..SHARDS)
            .map(|shard| {
                let mut errors = Vec::new();
                for _ in 0..3 {
                    match read(shard) {
                        Ok(events) => return events,
                        Err(e) => errors.push(e),
                    }
                }
                panic!("cannot read shard {shard}'s log: {errors:?}")
            })
            .collect()
    }
}

/// Users whose shards are owned by `node` and by other nodes.
pub fn user_on(
    client: &ClusterClient,
    owners: &BTreeMap<u32, String>,
    node: &str,
    want: bool,
    prefix: &str,
) -> String {
    (0..10_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|u| (owners[&client.shard_of(u)] == node) == want)
        .unwrap()
}
