//! Sessions follow sockets: a closed socket is a disconnect (R2.2), but never of a device that
//! logged in again elsewhere; pings are heartbeats (R2.4); a slow reader is closed without
//! holding up anyone; a full engine queue is answered `Busy`; shutdown and restart disconnect
//! the node's sessions (R8.4, R8.5); the host's endpoint needs its bearer.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, http, secret, start, status_of, Client, WAIT};
use presence_engine::{Command, Config, Engine, GeneralStatus};
use presence_gateway::{Gateway, GatewayConfig};
use presence_runtime::{Clock, SystemClock};
use presence_storage_sled::{Durability, SledStore};
use serde_json::json;
use tungstenite::Message;

#[test]
fn a_socket_that_vanishes_disconnects_its_session() {
    let gateway = start("");
    let alice = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    assert_eq!(bob.request(json!({"op": "subscribe", "targets": ["alice"]}))["ok"], true);
    alice.vanish();
    assert_eq!(
        bob.notice_about("alice"),
        json!({"user": "alice", "status": "OFFLINE", "custom": "", "version": 2})
    );
    let session = gateway.handle().read(|engine| engine.sessions("alice")).unwrap().wait().unwrap();
    assert_eq!(session.len(), 1, "a disconnect keeps the session (R2.2)");
    assert!(!session[0].connected);
}

#[test]
fn an_old_socket_never_disconnects_a_device_that_logged_in_again() {
    let gateway = start("");
    let mut first = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    assert_eq!(bob.request(json!({"op": "subscribe", "targets": ["alice"]}))["ok"], true);
    let mut second = Client::login(gateway.addr(), "alice", "phone");
    assert_eq!(first.close_code(), 4001, "the old socket is told it was replaced");
    first.vanish();
    // Once the old socket is gone, any disconnect it sent has been applied (it waits for the
    // reply before it lets go of its place).
    eventually("the old socket is gone", || gateway.stats().connections_open == 2);
    assert_eq!(status_of(&mut bob, "alice")["status"], "ONLINE");
    assert_eq!(second.request(json!({"op": "set_status", "custom": "still me"}))["ok"], true);
    assert_eq!(bob.notice_about("alice")["custom"], "still me");
}

#[test]
fn websocket_pings_are_heartbeats() {
    let gateway = start("[engine]\nheartbeat_timeout_ms = 3000\n[runtime]\ntick_interval_ms = 50\n[gateway]\nidle_timeout_ms = 60000\n");
    let mut alice = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    assert_eq!(bob.request(json!({"op": "subscribe", "targets": ["alice"]}))["ok"], true);
    // Twice the timeout with a ping every 200 ms: alice (and bob) stay online.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(6_000) {
        for client in [&mut alice, &mut bob] {
            client.send(Message::Ping(vec![1].into()));
            if let Some(frame) = client.read(Duration::from_millis(100)) {
                client.pushed.push_back(frame);
            }
        }
    }
    assert_eq!(status_of(&mut bob, "alice")["status"], "ONLINE");
    assert!(bob.pushed.is_empty(), "no notice about alice: {:?}", bob.pushed);
    // Silent, with the socket still open: the engine times the session out (R2.4).
    assert_eq!(bob.notice_about("alice")["status"], "OFFLINE");
}

#[test]
fn a_slow_reader_is_closed_while_the_others_get_every_notice() {
    let gateway = start("[engine]\nmax_custom_status_bytes = 8192\n[gateway]\noutbound_queue = 16\n");
    let addr = gateway.addr();
    let mut star = Client::login(addr, "star", "phone");
    let mut fan = Client::login(addr, "fan", "pc");
    let mut slow = Client::login(addr, "slow", "pc");
    assert_eq!(fan.request(json!({"op": "subscribe", "targets": ["star", "slow"]}))["ok"], true);
    assert_eq!(slow.request(json!({"op": "subscribe", "targets": ["star"]}))["ok"], true);
    // `slow` stops reading. Each change is an 8 KiB notice: a few hundred fill the socket's
    // buffers, then its queue.
    let fan_reader = std::thread::spawn(move || {
        let (mut versions, mut slow_statuses) = (Vec::new(), Vec::new());
        while versions.last() != Some(&1_001) {
            let notice = fan.pushed()["notice"].clone();
            match notice["user"].as_str() {
                Some("star") => versions.push(notice["version"].as_u64().unwrap()),
                _ => slow_statuses.push(notice["status"].clone()),
            }
        }
        (fan, versions, slow_statuses)
    });
    for i in 0..1_000 {
        let custom = format!("{i:08}{}", "x".repeat(8_000));
        let reply = star.request(json!({"op": "set_status", "custom": custom}));
        assert_eq!(reply["ok"], true, "{reply}");
        star.pushed.clear();
    }
    let (mut fan, versions, mut slow_statuses) = fan_reader.join().unwrap();
    assert_eq!(versions, (2..=1_001).collect::<Vec<u64>>(), "the fast reader got every notice, in order");
    assert_eq!(gateway.stats().slow_readers_closed, 1);
    // Its socket closed, its session is disconnected (R2.2).
    if slow_statuses.is_empty() {
        slow_statuses.push(fan.notice_about("slow")["status"].clone());
    }
    assert_eq!(slow_statuses, [json!("OFFLINE")]);
    drop(slow);
}

#[test]
fn a_full_engine_queue_is_answered_busy_and_nothing_changes() {
    let gateway = start("[runtime]\nqueue_capacity = 2\n");
    let addr = gateway.addr();
    let mut clients: Vec<Client> = ["a", "b", "c"].iter().map(|u| Client::login(addr, u, "d")).collect();
    // Hold the engine's thread in a read, so that nothing leaves its queue.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let handle = gateway.handle();
    let _hold = handle.read(move |_| held.recv_timeout(WAIT).is_ok()).unwrap();
    for client in &mut clients[..2] {
        client.send_text(r#"{"id": 100, "op": "set_status", "custom": "queued"}"#);
    }
    eventually("two commands queued", || handle.stats().queue_depth == 2);
    let busy = clients[2].request(json!({"op": "set_status", "custom": "shed"}));
    assert_eq!(
        (busy["ok"].as_bool(), busy["code"].as_u64(), busy["name"].as_str()),
        (Some(false), Some(8008), Some("Busy"))
    );
    release.send(()).unwrap();
    for client in &mut clients[..2] {
        assert_eq!(client.reply_to(Some(100))["ok"], true);
    }
    assert_eq!(status_of(&mut clients[0], "c")["custom"], "", "the shed command did nothing");
    assert_eq!(gateway.stats().requests_shed, 1);
}

#[test]
fn the_host_endpoint_needs_the_bearer_and_manages_friendships() {
    let gateway = start("[engine]\nfriend_notifications = true\n");
    let addr = gateway.addr();
    let bearer = secret().host_bearer();
    let wrong = presence_gateway::Secret::new(*b"someone else's secret, 32 bytes.").unwrap().host_bearer();
    for presented in [None, Some(wrong.as_str()), Some("")] {
        let (status, body) = http(addr, "PUT", "/friends/alice/bob", presented);
        assert_eq!((status, body["code"].as_u64()), (401, Some(8006)), "{body}");
    }
    let (status, body) = http(addr, "GET", "/friends/alice", None);
    assert_eq!(status, 401, "{body}");

    let (status, body) = http(addr, "PUT", "/friends/alice/alice", Some(&bearer));
    assert_eq!((status, body["code"].as_u64()), (400, Some(6017)), "{body}");
    let (status, body) = http(addr, "PUT", "/friends/alice/bob", Some(&bearer));
    assert_eq!((status, body), (200, json!({"ok": true})));
    assert_eq!(
        http(addr, "GET", "/friends/alice", Some(&bearer)).1,
        json!({"user": "alice", "friends": ["bob"]})
    );

    // With friend notifications on, bob hears alice without subscribing (R5.2, R5.4).
    let mut bob = Client::login(addr, "bob", "pc");
    let _alice = Client::login(addr, "alice", "phone");
    assert_eq!(bob.notice_about("alice")["status"], "ONLINE");

    assert_eq!(http(addr, "DELETE", "/friends/bob/alice", Some(&bearer)).0, 200);
    assert_eq!(http(addr, "GET", "/friends/alice", Some(&bearer)).1["friends"], json!([]));
    let (status, stats) = http(addr, "GET", "/stats", Some(&bearer));
    assert_eq!(status, 200);
    assert!(stats["runtime"]["commands"].as_u64().unwrap() >= 4, "{stats}");
    // The two sockets and the connection this request came on: connections count from accept
    // (an earlier request's connection may still be closing, so this waits until it has).
    eventually("three connections open", || {
        http(addr, "GET", "/stats", Some(&bearer)).1["gateway"]["connections_open"] == 3
    });
}

#[test]
fn connections_beyond_max_connections_are_refused_at_accept() {
    let gateway = start("[gateway]\nmax_connections = 2\n");
    // Logged in, neither can be evicted to make room.
    let _a = Client::login(gateway.addr(), "alice", "phone");
    let _b = Client::login(gateway.addr(), "bob", "pc");
    let stream = std::net::TcpStream::connect(gateway.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    // Refused at accept: a 503 if the client reads it before the socket is reset, else the
    // connection just ends; never an upgrade.
    match tungstenite::client(format!("ws://{}/ws", gateway.addr()), stream) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 503)
        }
        Err(tungstenite::HandshakeError::Failure(
            tungstenite::Error::Io(_) | tungstenite::Error::Protocol(_),
        )) => {}
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    assert_eq!(gateway.stats().connections_refused, 1);
}

fn sled_gateway(dir: &std::path::Path) -> presence_gateway::RunningGateway {
    let store = SledStore::open(dir, Durability::GroupCommit).unwrap();
    let config = GatewayConfig::from_toml("[gateway]\nnode_id = \"gw-test\"\n").unwrap();
    Gateway::open(store, config, secret()).unwrap().spawn("127.0.0.1:0".parse().unwrap()).unwrap()
}

#[test]
fn shutdown_closes_the_sockets_with_1001_and_disconnects_the_nodes_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = sled_gateway(dir.path());
    let mut alice = Client::login(gateway.addr(), "alice", "phone");
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    let owners = gateway
        .handle()
        .read(|engine| {
            engine
                .logical_state()
                .users
                .iter()
                .flat_map(|u| u.sessions.iter().map(|s| s.owner.clone()))
                .collect::<Vec<_>>()
        })
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(owners.len(), 2);
    assert!(
        owners.iter().all(|o| o.as_deref() == Some("gw-test")),
        "sessions carry the node id (R8.5): {owners:?}"
    );
    let report = gateway.stop().unwrap();
    assert_eq!(alice.close_code(), 1001);
    assert_eq!(bob.close_code(), 1001);
    assert_eq!(report.sessions_disconnected_at_shutdown, 2);

    let engine =
        Engine::open(Config::default(), SledStore::open(dir.path(), Durability::Sync).unwrap()).unwrap();
    assert_eq!(engine.status("alice").general, GeneralStatus::Offline, "durable before exit");
    assert_eq!(engine.status("bob").general, GeneralStatus::Offline);
}

#[test]
fn sessions_a_crash_left_connected_are_disconnected_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The previous process: it logged alice in and died without a word.
        let store = SledStore::open(dir.path(), Durability::Sync).unwrap();
        let mut engine = Engine::open(Config::default(), store).unwrap();
        engine.execute(Command::login_with_owner("alice", "phone", "gw-test"), SystemClock.now_ms()).unwrap();
    }
    let gateway = sled_gateway(dir.path());
    let mut bob = Client::login(gateway.addr(), "bob", "pc");
    assert_eq!(status_of(&mut bob, "alice")["status"], "OFFLINE", "R8.4: its socket died with the process");
    let report = gateway.stop().unwrap();
    assert_eq!(report.restored_sessions_disconnected, 1);
}
