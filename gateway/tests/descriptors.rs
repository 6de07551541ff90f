//! An accept that fails for want of descriptors (EMFILE) is counted and backed off, and the
//! gateway serves again once descriptors are free. Alone in its binary: it lowers the test
//! process's own open-files limit.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::{eventually, start, Client};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use serde_json::json;

fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

#[test]
fn accepts_without_descriptors_back_off_are_counted_and_recover() {
    let gateway = start("[gateway]\nmax_connections_per_address = 1000\n");
    let addr = gateway.addr();
    let limit = getrlimit(Resource::Nofile);
    // Room for a few connections only: clients and the gateway share this process's limit.
    let low = open_descriptors() + 16;
    setrlimit(Resource::Nofile, Rlimit { current: Some(low), maximum: limit.maximum }).unwrap();
    let mut clients = Vec::new();
    for _ in 0..64 {
        if let Ok(stream) = TcpStream::connect(addr) {
            clients.push(stream);
        }
    }
    // The kernel completed handshakes the gateway cannot accept: its accepts fail (EMFILE).
    eventually("an accept failed and was counted", || gateway.stats().accept_errors > 0);
    // It backs off (100 ms) instead of spinning: a spinning loop would fail thousands of times.
    let before = gateway.stats().accept_errors;
    std::thread::sleep(Duration::from_millis(1_000));
    let during = gateway.stats().accept_errors - before;
    assert!(during <= 30, "{during} failed accepts in a second: it spins");
    drop(clients);
    setrlimit(Resource::Nofile, limit).unwrap();
    // Nothing else broke: a fresh device connects, logs in and is answered.
    let mut alice = Client::login(addr, "alice", "phone");
    assert_eq!(alice.request(json!({"op": "set_status", "custom": "back"}))["ok"], true);
}
