//! The Redis peer on a real redis-server speaks the gateway's protocol: logins with tokens,
//! subscriptions answered with statuses and versions, notices by PUBLISH, a closed socket
//! published as OFFLINE, and the protocol's errors.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use presence_gateway::Secret;
use presence_redis_peer::{serve, PeerSettings};
use presence_testkit::RedisServer;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

fn secret() -> Secret {
    Secret::new(*b"the peer's test secret, 32 bytes").unwrap()
}

struct Peer {
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    addr: SocketAddr,
}

impl Peer {
    fn start(redis: &RedisServer) -> Peer {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url = redis.url();
        runtime.spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve(listener, &url, secret(), PeerSettings::default(), shutdown).await.unwrap();
        });
        Peer { runtime, stop: Some(stop), addr }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = &self.runtime;
    }
}

struct Client {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    pushed: Vec<Value>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let (socket, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
        Client { socket, next_id: 1, pushed: Vec::new() }
    }

    fn login(addr: SocketAddr, user: &str) -> Client {
        let mut client = Client::connect(addr);
        let reply =
            client.request(json!({"op": "login", "token": secret().mint_for(user, 600), "device": "d"}));
        assert_eq!(reply, json!({"id": 1, "ok": true, "user": user, "device": "d"}));
        client
    }

    fn read(&mut self) -> Value {
        loop {
            match self.socket.read().unwrap() {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    fn request(&mut self, mut request: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.socket.send(Message::text(request.to_string())).unwrap();
        loop {
            let frame = self.read();
            if frame.get("notice").is_some() {
                self.pushed.push(frame);
            } else {
                assert_eq!(frame["id"], id, "{frame}");
                return frame;
            }
        }
    }

    fn notice_about(&mut self, user: &str) -> Value {
        if let Some(at) = self.pushed.iter().position(|n| n["notice"]["user"] == user) {
            return self.pushed.remove(at)["notice"].clone();
        }
        loop {
            let frame = self.read();
            if frame["notice"]["user"] == user {
                return frame["notice"].clone();
            }
        }
    }
}

#[test]
fn the_redis_peer_speaks_the_gateways_protocol() {
    let redis = RedisServer::start();
    let peer = Peer::start(&redis);
    let mut alice = Client::login(peer.addr, "alice");
    assert_eq!(alice.notice_about("alice")["status"], "ONLINE", "its own login, as the engine does");
    let mut bob = Client::login(peer.addr, "bob");

    let reply = bob.request(json!({"op": "subscribe", "targets": ["alice", "carol"]}));
    assert_eq!(
        reply["statuses"],
        json!([
            {"user": "alice", "status": "ONLINE", "custom": "", "version": 1},
            {"user": "carol", "status": "UNLOGINED", "custom": "", "version": 0},
        ])
    );
    assert_eq!(alice.request(json!({"op": "set_status", "custom": "busy"}))["ok"], true);
    assert_eq!(
        bob.notice_about("alice"),
        json!({"user": "alice", "status": "ONLINE", "custom": "busy", "version": 2})
    );
    assert_eq!(alice.request(json!({"op": "heartbeat"}))["ok"], true);
    let status = bob.request(json!({"op": "get_status", "targets": ["alice"]}));
    assert_eq!(status["statuses"][0]["custom"], "busy");

    for (request, code) in [
        (json!({"op": "set_status", "custom": "x".repeat(51)}), 6017),
        (json!({"op": "subscribe", "targets": ["bob"]}), 6017),
        (json!({"op": "dance"}), 8002),
    ] {
        assert_eq!(bob.request(request)["code"], code);
    }
    let mut mallory = Client::connect(peer.addr);
    let forged = Secret::new(*b"another secret that is 32 bytes.").unwrap().mint_for("alice", 600);
    assert_eq!(mallory.request(json!({"op": "login", "token": forged, "device": "d"}))["code"], 8006);

    drop(alice);
    assert_eq!(
        bob.notice_about("alice"),
        json!({"user": "alice", "status": "OFFLINE", "custom": "", "version": 3})
    );
}
