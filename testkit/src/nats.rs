//! Real nats-server processes with JetStream for tests: [`NatsServer`] (one node) and
//! [`NatsCluster`] (three or more nodes with routes on loopback), plus [`NatsClient`], a
//! small blocking client for what a test does by hand (publish a foreign message, ask the
//! JetStream API who leads a stream).
//!
//! Every server listens on 127.0.0.1 only, on ports picked by binding port 0, keeps its
//! JetStream files in its own temporary directory, and is killed when its owner is dropped.
//! When nats-server is not installed, starting fails with a message naming
//! `scripts/install-programs.sh`: these tests never skip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::Value;

use crate::process::{accepts, find_program, free_ports, log_tail, wait_until, ServerProcess};

/// How long a server may take to accept clients after it starts (it recovers its streams
/// from disk first).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a cluster may take to elect a JetStream meta leader or a stream leader.
pub const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

fn program() -> Result<PathBuf, String> {
    find_program("nats-server")
}

/// One nats-server node's fixed identity: its name, ports, directory and configuration
/// file, so that it restarts exactly as it was.
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    dir: PathBuf,
    config: PathBuf,
    process: Option<ServerProcess>,
}

impl Node {
    fn new(root: &Path, name: &str, port: u16, cluster: Option<(u16, &[u16])>) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let store = dir.join("jetstream");
        let mut config = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: {:?}\n}}\n",
            store.display().to_string()
        );
        if let Some((cluster_port, all)) = cluster {
            let routes: Vec<String> = all
                .iter()
                .filter(|&&p| p != cluster_port)
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            config.push_str(&format!(
                "cluster {{\n  name: presence-test\n  listen: 127.0.0.1:{cluster_port}\n  routes: [{}]\n}}\n",
                routes.join(", ")
            ));
        }
        let path = dir.join("nats-server.conf");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        Node { name: name.to_string(), port, dir, config: path, process: None }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    /// Starts the process and waits until it accepts clients.
    fn start(&mut self) {
        self.try_start().unwrap_or_else(|e| panic!("{e}"));
    }

    /// As [`Node::start`], with an error instead of a panic.
    fn try_start(&mut self) -> Result<(), String> {
        if self.process.is_some() {
            return Err(format!("{} is already running", self.name));
        }
        let args = vec!["-c".to_string(), self.config.display().to_string()];
        let mut process = ServerProcess::spawn(&program()?, &args, &self.log())?;
        let port = self.port;
        let ready = wait_until(START_TIMEOUT, &format!("nats-server {} on port {port}", self.name), || {
            accepts(port) || !process.is_running()
        });
        if ready.is_err() || !process.is_running() {
            return Err(format!(
                "nats-server {} did not start on 127.0.0.1:{port}; its log ends:\n{}",
                self.name,
                process.log_tail(30)
            ));
        }
        self.process = Some(process);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(process) = self.process.take() {
            process.kill();
        }
    }
}

/// One nats-server with JetStream on, on a free loopback port, in its own temporary
/// directory; killed when dropped.
///
/// ```no_run
/// let server = presence_testkit::NatsServer::start();
/// let url = server.url(); // nats://127.0.0.1:PORT
/// # drop(url);
/// ```
#[derive(Debug)]
pub struct NatsServer {
    node: Node,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts the server and waits (at most [`START_TIMEOUT`]) until it accepts clients.
    /// Panics, naming `scripts/install-programs.sh`, when nats-server is not installed.
    pub fn start() -> NatsServer {
        NatsServer::try_start().unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`NatsServer::start`], with an error instead of a panic (for tools: `presence
    /// conform --store cluster:N` starts one of its own).
    pub fn try_start() -> Result<NatsServer, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
        let port = free_ports(1)[0];
        let mut node = Node::new(dir.path(), "solo", port, None);
        node.try_start()?;
        Ok(NatsServer { node, _dir: dir })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Kills it with SIGKILL.
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Starts it again on the same port with the same directory (its streams survive).
    pub fn restart(&mut self) {
        self.node.kill();
        self.node.start();
    }

    /// The end of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.node.log(), lines)
    }
}

/// A cluster of nats-server nodes with JetStream, routed to each other on loopback, each
/// with its own ports and directory; every node is killed when the cluster is dropped.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes (`n0`, `n1`, ...) and waits until each accepts clients and the
    /// cluster has elected its JetStream meta leader.
    pub fn start(size: usize) -> NatsCluster {
        assert!(size >= 1, "a cluster needs a node");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temporary directory: {e}"));
        let ports = free_ports(2 * size);
        let (client_ports, cluster_ports) = ports.split_at(size);
        let nodes = (0..size)
            .map(|i| {
                Node::new(
                    dir.path(),
                    &format!("n{i}"),
                    client_ports[i],
                    Some((cluster_ports[i], cluster_ports)),
                )
            })
            .collect();
        let mut cluster = NatsCluster { nodes, _dir: dir };
        cluster.start_all();
        cluster
    }

    /// How many nodes.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's URL, comma-separated (what a client is given).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(Node::url).collect::<Vec<_>>().join(",")
    }

    /// Node `i`'s URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Node `i`'s server name (`n<i>`), as JetStream reports leaders.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Whether node `i` is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].process.is_some()
    }

    /// Kills node `i` with SIGKILL (`kill -9`).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on the same ports with the same directory.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        self.nodes[i].start();
    }

    /// Kills every node with SIGKILL.
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every stopped node and waits until the cluster has a JetStream meta leader.
    pub fn start_all(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| n.process.is_none()) {
            node.start();
        }
        self.wait_for_jetstream();
    }

    /// A running node's index.
    fn running(&self) -> usize {
        (0..self.nodes.len()).find(|&i| self.is_running(i)).unwrap_or_else(|| panic!("no node is running"))
    }

    /// Waits until JetStream answers its account information request without an error
    /// (the meta leader is elected).
    pub fn wait_for_jetstream(&self) {
        let client = NatsClient::connect(&self.url(self.running()));
        let ready = wait_until(ELECTION_TIMEOUT, "the JetStream meta leader", || {
            client.request("$JS.API.INFO", b"").is_ok_and(|answer| answer.get("error").is_none())
        });
        if let Err(e) = ready {
            panic!("{e}; the log of {} ends:\n{}", self.nodes[0].name, log_tail(&self.nodes[0].log(), 30));
        }
    }

    /// The index of the node leading `stream` now, from `$JS.API.STREAM.INFO.<stream>`
    /// asked of a running node (`None` while there is no leader).
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        let client = NatsClient::try_connect(&self.url(self.running())).ok()?;
        let info = client.request(&format!("$JS.API.STREAM.INFO.{stream}"), b"").ok()?;
        let leader = info.get("cluster")?.get("leader")?.as_str()?.to_string();
        self.nodes.iter().position(|n| n.name == leader)
    }

    /// Waits (at most [`ELECTION_TIMEOUT`]) until `stream` has a leader among the running
    /// nodes, and returns it.
    pub fn wait_for_stream_leader(&self, stream: &str) -> usize {
        let mut leader = None;
        let found = wait_until(ELECTION_TIMEOUT, &format!("a leader for stream {stream}"), || {
            leader = self.stream_leader(stream).filter(|&i| self.is_running(i));
            leader.is_some()
        });
        match (found, leader) {
            (Ok(()), Some(i)) => i,
            (result, _) => panic!("{result:?}"),
        }
    }
}

/// A small blocking NATS client for tests (a current-thread runtime of its own).
#[derive(Debug)]
pub struct NatsClient {
    runtime: tokio::runtime::Runtime,
    client: async_nats::Client,
}

impl NatsClient {
    /// Connects to `url`, panicking if it cannot within 5 s.
    pub fn connect(url: &str) -> NatsClient {
        Self::try_connect(url).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Connects to `url` (bounded: 5 s).
    pub fn try_connect(url: &str) -> Result<NatsClient, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| format!("no runtime: {e}"))?;
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(5)));
        let client = runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(6), async_nats::connect_with_options(url, options))
                    .await
            })
            .map_err(|_| format!("connecting to {url} timed out"))?
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(NatsClient { runtime, client })
    }

    /// A request whose answer is JSON (the JetStream API).
    pub fn request(&self, subject: &str, body: &[u8]) -> Result<Value, String> {
        let body = Bytes::copy_from_slice(body);
        let answer = self
            .runtime
            .block_on(self.client.request(subject.to_string(), body))
            .map_err(|e| format!("{subject}: {e}"))?;
        serde_json::from_slice(&answer.payload).map_err(|e| format!("{subject}: not JSON: {e}"))
    }

    /// Publishes `payload` with `headers` to a subject a stream captures and returns
    /// JetStream's acknowledgement (or error) as JSON.
    pub fn publish(&self, subject: &str, headers: &[(&str, &str)], payload: &[u8]) -> Result<Value, String> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, *value);
        }
        let request = async_nats::Request::new().headers(map).payload(Bytes::copy_from_slice(payload));
        let answer = self
            .runtime
            .block_on(self.client.send_request(subject.to_string(), request))
            .map_err(|e| format!("publish to {subject}: {e}"))?;
        serde_json::from_slice(&answer.payload).map_err(|e| format!("{subject}: not JSON: {e}"))
    }

    /// `$JS.API.STREAM.INFO.<stream>`'s answer.
    pub fn stream_info(&self, stream: &str) -> Result<Value, String> {
        self.request(&format!("$JS.API.STREAM.INFO.{stream}"), b"")
    }

    /// The message at stream sequence `seq` of `stream`, or `None` when there is none.
    pub fn get(&self, stream: &str, seq: u64) -> Result<Option<StoredMessage>, String> {
        let body = serde_json::json!({ "seq": seq }).to_string();
        let answer = self.request(&format!("$JS.API.STREAM.MSG.GET.{stream}"), body.as_bytes())?;
        if answer.get("error").is_some() {
            return Ok(None);
        }
        let message = answer.get("message").ok_or("no message in the answer")?;
        let field = |name: &str| -> Result<Vec<u8>, String> {
            match message.get(name).and_then(Value::as_str) {
                None => Ok(Vec::new()),
                Some(text) => {
                    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| e.to_string())
                }
            }
        };
        let headers = String::from_utf8_lossy(&field("hdrs")?)
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok(Some(StoredMessage {
            subject: message.get("subject").and_then(Value::as_str).unwrap_or_default().to_string(),
            seq: message.get("seq").and_then(Value::as_u64).unwrap_or_default(),
            headers,
            payload: field("data")?,
        }))
    }
}

/// A message as a stream stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its subject.
    pub subject: String,
    /// Its stream sequence number.
    pub seq: u64,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl StoredMessage {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}
