//! The gateway inside `presence node` on real processes: three nats-server processes with
//! JetStream and `presence node --gateway-addr` processes, on loopback ports, in temporary
//! directories, all killed at the end. A device's socket and its user's shard are on different
//! nodes; a watcher on a third node hears its custom status with versions, and hears it go
//! OFFLINE when the node holding its socket is killed (R9.6) or stopped (R8.5).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use presence_cluster::ClusterClient;
use presence_gateway::Secret;
use presence_testkit::process::http_status;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use common::{user_on, Cluster, NODE_TIMEOUT_MS, WAIT};

const SECRET: &[u8; 32] = b"the cluster gateway test secret!";

/// One socket, read with a short timeout so that every wait is bounded; keeps the notices it
/// reads on the way to a reply.
struct Socket {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    pushed: Vec<Value>,
    closed: Option<u16>,
}

impl Socket {
    fn login(addr: SocketAddr, user: &str, device: &str) -> Socket {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let (socket, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
        let mut socket = Socket { socket, next_id: 1, pushed: Vec::new(), closed: None };
        let token = Secret::new(*SECRET).unwrap().mint_for(user, 600);
        let reply = socket.request(json!({"op": "login", "token": token, "device": device}));
        assert_eq!(reply["ok"], true, "{reply}");
        socket
    }

    /// The next text frame within `wait`, or `None` (the socket may have closed meanwhile).
    fn read(&mut self, wait: Duration) -> Option<Value> {
        let started = Instant::now();
        while self.closed.is_none() && started.elapsed() < wait {
            match self.socket.read() {
                Ok(Message::Text(text)) => return Some(serde_json::from_str(text.as_str()).unwrap()),
                Ok(Message::Close(frame)) => self.closed = Some(frame.map_or(1005, |f| u16::from(f.code))),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => self.closed = Some(1006),
            }
        }
        None
    }

    fn request(&mut self, mut request: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.socket.send(Message::text(request.to_string())).unwrap();
        let started = Instant::now();
        while let Some(left) = WAIT.checked_sub(started.elapsed()) {
            let Some(frame) = self.read(left) else { break };
            if frame.get("notice").is_some() || frame.get("kicked").is_some() {
                self.pushed.push(frame);
                continue;
            }
            assert_eq!(frame["id"].as_u64(), Some(id), "replies come in order: {frame}");
            return frame;
        }
        panic!("no reply to {request} within {WAIT:?} (closed: {:?})", self.closed);
    }

    /// The first notice about `user` (kept or newly read) that `wanted` accepts, within
    /// `wait`; the notices before it are dropped.
    fn notice(&mut self, user: &str, wait: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        let matches = |frame: &Value| frame["notice"]["user"] == user && wanted(&frame["notice"]);
        if let Some(at) = self.pushed.iter().position(matches) {
            let frame = self.pushed.remove(at);
            self.pushed.drain(..at);
            return Some(frame["notice"].clone());
        }
        self.pushed.clear();
        let started = Instant::now();
        while let Some(left) = wait.checked_sub(started.elapsed()) {
            let frame = self.read(left)?;
            if matches(&frame) {
                return Some(frame["notice"].clone());
            }
        }
        None
    }

    /// Reads until the server closes, within `WAIT`: the close code.
    fn close_code(&mut self) -> Option<u16> {
        let started = Instant::now();
        while self.closed.is_none() && started.elapsed() < WAIT {
            self.read(WAIT);
        }
        self.closed
    }
}

/// Logs `target` in on `device_node`'s gateway (its shard owned by `shard_node`) and a
/// watcher on `watcher_node`'s (its shard owned by `watcher_node`), which subscribes and
/// hears the target's custom status with versions. Returns both sockets, the target's user
/// and the version of its custom status.
fn watch_across(
    cluster: &Cluster,
    client: &ClusterClient,
    owners: &BTreeMap<u32, String>,
    (device_node, shard_node, watcher_node): (&str, &str, &str),
) -> (Socket, Socket, String, u64) {
    let target = user_on(client, owners, shard_node, true, "target");
    let watcher = user_on(client, owners, watcher_node, true, "watcher");
    let mut device = Socket::login(cluster.gateways[device_node], &target, "phone");
    let mut watching = Socket::login(cluster.gateways[watcher_node], &watcher, "pc");
    // The device hears its own login (R5.3), from the owner of its shard on another node.
    let own = device.notice(&target, WAIT, |n| n["status"] == "ONLINE");
    assert!(own.is_some(), "the device hears its own login across nodes:\n{}", cluster.log(device_node));
    let reply = watching.request(json!({"op": "subscribe", "targets": [target]}));
    assert_eq!(reply["ok"], true, "{reply}");
    let subscribed = &reply["statuses"][0];
    assert_eq!(subscribed["status"], "ONLINE", "R9.3: {reply}");
    let before = subscribed["version"].as_u64().unwrap();
    let set = device.request(json!({"op": "set_status", "custom": "on a train"}));
    assert_eq!(set["ok"], true, "{set}");
    let heard = watching.notice(&target, WAIT, |n| n["custom"] == "on a train");
    let heard = heard.unwrap_or_else(|| panic!("no custom status notice:\n{}", cluster.log(watcher_node)));
    assert_eq!(heard["status"], "ONLINE", "{heard}");
    let version = heard["version"].as_u64().unwrap();
    assert!(version > before, "R5.6: the notice's version {version} follows the subscribe's {before}");
    // The engine refuses what it refuses locally, with the same codes (R7.1).
    let refused = device.request(json!({"op": "subscribe", "targets": [target]}));
    assert_eq!((refused["ok"].clone(), refused["code"].clone()), (json!(false), json!(6017)), "{refused}");
    // A WebSocket ping is a heartbeat by ids; the socket goes on.
    device.socket.send(Message::Ping(Vec::new().into())).unwrap();
    assert_eq!(device.request(json!({"op": "heartbeat"}))["ok"], true);
    (device, watching, target, version)
}

// The case: a device on node a, its user's shard on node b, a watcher on node c.
// a is killed with SIGKILL: b finds it lost within the node timeout and disconnects the
// sessions a held, and the watcher hears OFFLINE (R9.6).
#[test]
fn a_device_on_a_killed_node_goes_offline_for_a_watcher_on_another_node() {
    let mut cluster = Cluster::start_with_gateways("gwkill", &["a", "b", "c"], SECRET);
    let client = cluster.client();
    let owners = cluster.wait_served(&client, &["a", "b", "c"], Duration::from_secs(60));
    let (_device, mut watching, target, version) = watch_across(&cluster, &client, &owners, ("a", "b", "c"));
    let killed_at = Instant::now();
    cluster.kill("a");
    let bound = Duration::from_millis(NODE_TIMEOUT_MS * 4) + Duration::from_secs(2);
    let offline = watching.notice(&target, bound, |n| n["status"] == "OFFLINE");
    let heard = killed_at.elapsed();
    let offline =
        offline.unwrap_or_else(|| panic!("no OFFLINE within {bound:?}:\n--- b:\n{}", cluster.log("b")));
    assert_eq!(offline["custom"], "", "R3.3: {offline}");
    assert!(offline["version"].as_u64().unwrap() > version, "R5.6: {offline}");
    eprintln!(
        "gateway in a node: OFFLINE heard on node c {heard:?} after node a was killed \
         (node timeout {NODE_TIMEOUT_MS} ms, bound {bound:?})"
    );
    // The watcher's node still serves it.
    let reply = watching.request(json!({"op": "get_status", "targets": [target]}));
    assert_eq!(reply["statuses"][0]["status"], "OFFLINE", "{reply}");
}

// SIGTERM on the node holding the device's socket: the gateway closes it (1001) and
// disconnects its session on the shard's owner before the node hands its shards over; the
// watcher hears OFFLINE without waiting for the node timeout, and the node exits 0.
#[test]
fn a_stopped_node_closes_its_sockets_and_disconnects_their_sessions_first() {
    let mut cluster = Cluster::start_with_gateways("gwstop", &["a", "b"], SECRET);
    let client = cluster.client();
    let owners = cluster.wait_served(&client, &["a", "b"], Duration::from_secs(60));
    let (mut device, mut watching, target, _) = watch_across(&cluster, &client, &owners, ("a", "b", "b"));
    // No runtime of its own: alive while it serves, ready while its NATS connection is up.
    assert_eq!(http_status(cluster.gateways["a"], "/healthz", WAIT), 200);
    assert_eq!(http_status(cluster.gateways["a"], "/readyz", WAIT), 200);
    let stopped_at = Instant::now();
    let exit = cluster.nodes.get_mut("a").unwrap().terminate(WAIT);
    let exit = exit.unwrap_or_else(|| panic!("node a did not exit after SIGTERM:\n{}", cluster.log("a")));
    assert!(exit.success(), "{exit:?}:\n{}", cluster.log("a"));
    assert_eq!(device.close_code(), Some(1001), "the gateway closed the socket as going away");
    let offline = watching.notice(&target, WAIT, |n| n["status"] == "OFFLINE");
    let heard = stopped_at.elapsed();
    assert!(offline.is_some(), "no OFFLINE:\n--- b:\n{}", cluster.log("b"));
    let log = cluster.log("a");
    assert!(log.contains("1 sessions disconnected at shutdown"), "R8.5, by the gateway itself:\n{log}");
    eprintln!("gateway in a node: OFFLINE heard {heard:?} after SIGTERM of the device's node");
}

// The gateway's arguments come together, and a bad secret stops the node before it starts
// (exit 2), as `presence serve` does.
#[test]
fn a_gateway_needs_its_secret_and_a_bad_one_is_refused_with_exit_2() {
    let presence = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_presence")).args(args).output().unwrap()
    };
    let base = ["node", "--nats", "nats://127.0.0.1:1", "--node-id", "a"];
    let without_secret = presence(&[&base[..], &["--gateway-addr", "127.0.0.1:0"]].concat());
    assert_eq!(without_secret.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without_secret.stderr).contains("--secret-file"), "{without_secret:?}");
    let without_addr = presence(&[&base[..], &["--secret-file", "/nonexistent"]].concat());
    assert_eq!(without_addr.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without_addr.stderr).contains("--gateway-addr"), "{without_addr:?}");
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "too short").unwrap();
    let short = short.display().to_string();
    let bad_secret =
        presence(&[&base[..], &["--gateway-addr", "127.0.0.1:0", "--secret-file", &short]].concat());
    assert_eq!(bad_secret.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_secret.stderr).contains("secret"), "{bad_secret:?}");
}
