//! The runtime's policy for a failing store, seen from the gateway (docs/DESIGN.md, "When the
//! store fails"; docs/PROTOCOL.md, "Health"): a refused append fails the turn's commands
//! (9000) and the gateway goes on; a failed sync stops the runtime, and the gateway closes
//! its sockets and its listener and ends with the cause, for its host to exit.

mod common;

use std::net::TcpStream;

use common::{eventually, http, secret, Client, WAIT};
use presence_gateway::{Gateway, GatewayConfig, GatewayError};
use presence_storage_mem::{FaultyStore, MemStore};
use serde_json::json;

#[test]
fn a_refused_append_fails_the_commands_and_the_gateway_goes_on() {
    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    let gateway = Gateway::open(store, GatewayConfig::default(), secret()).unwrap();
    let running = gateway.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = running.addr();
    assert_eq!(http(addr, "GET", "/healthz", None), (200, json!({"status": "ok"})));
    assert_eq!(http(addr, "GET", "/readyz", None), (200, json!({"ready": true})));
    let mut alice = Client::login(addr, "alice", "phone");

    faults.fail_appends(true);
    let refused = alice.request(json!({"op": "set_status", "custom": "lunch"}));
    assert_eq!(refused["code"], 9000, "{refused}");
    assert_eq!(http(addr, "GET", "/healthz", None).0, 200, "the log is intact: the runtime runs");
    let (status, body) = http(addr, "GET", "/readyz", None);
    assert_eq!((status, &body["ready"]), (503, &json!(false)), "{body}");

    faults.fail_appends(false);
    let done = alice.request(json!({"op": "set_status", "custom": "back"}));
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(http(addr, "GET", "/readyz", None).0, 200);
    assert!(running.handle().stop_reason().is_none());
    running.stop().unwrap();
}

#[test]
fn a_failed_sync_stops_the_gateway_with_the_cause() {
    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    let gateway = Gateway::open(store, GatewayConfig::default(), secret()).unwrap();
    let running = gateway.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = running.addr();
    let mut alice = Client::login(addr, "alice", "phone");

    faults.fail_syncs(true);
    alice.send_text(&json!({"op": "set_status", "custom": "lunch", "id": 99}).to_string());
    // The 9000 reply comes before the close: a socket that ends still writes what was
    // queued, and a reply that finds its socket ending is queued if there is room.
    let failed = alice.read(WAIT).expect("the failed turn's reply, before the close");
    assert_eq!((&failed["id"], &failed["code"]), (&json!(99), &json!(9000)), "{failed}");
    let reason = running.handle().stop_reason().expect("the handle says the runtime stopped");
    assert!(reason.failure().is_some_and(|cause| cause.contains("sync failed on purpose")), "{reason}");

    // The gateway stops by itself: its sockets are closed and nothing listens any more.
    assert_eq!(alice.close_code(), 1001);
    eventually("the listener closes", || TcpStream::connect(addr).is_err());
    match running.stop() {
        Err(GatewayError::Engine(e)) => {
            assert_eq!(e.code(), 9000);
            assert!(e.to_string().contains("sync failed on purpose"), "{e}");
        }
        other => panic!("serving ends with the runtime's failure, not {other:?}"),
    }
}
