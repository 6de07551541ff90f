//! The operator's commands on a NATS JetStream stream served by a real nats-server
//! (`nats://HOST:PORT/STREAM`): `simulate` creates and continues a stream that `inspect` and
//! `replay` agree on; an unreachable server, a missing stream or a bad address is a clear
//! error with exit status 2, and `inspect`/`replay` never create a stream; a `simulate`
//! killed with SIGKILL mid-run leaves a log that opens and verifies and still holds every
//! event it acknowledged.
//!
//! What "acknowledged" means here: `simulate --acked-file F` rewrites F with the last
//! sequence number after each turn's append and sync returned, before the turn's replies go
//! out. After a kill the test checks that the log reaches at least that number and is
//! contiguous from 1 (`inspect` and `replay` refuse a gap), so every acknowledged event is
//! there; it does not compare the events' contents with what the killed run decided.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

use presence_testkit::process::{free_ports, wait_until};
use presence_testkit::{NatsClient, NatsServer};

fn presence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_presence")).args(args).output().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}{}", String::from_utf8_lossy(&output.stderr)))
}

/// A short run that keeps the whole log, so `replay` can rebuild the state from it alone.
fn simulate(store: &str, seed: &str) -> serde_json::Value {
    let args = [
        "simulate",
        "--store",
        store,
        "--users",
        "300",
        "--duration-s",
        "900",
        "--seed",
        seed,
        "--json",
        "--keep-log",
    ];
    let output = presence(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    json(&output)
}

#[test]
fn simulate_creates_then_continues_a_stream_that_inspect_and_replay_agree_on() {
    let server = NatsServer::start();
    let store = format!("{}/sim", server.url());
    let first = simulate(&store, "5");
    assert!(first["commands"].as_u64().unwrap() > 1_000);
    assert_eq!(first["commands_by_kind"]["login"]["refused"], 0);
    let second = simulate(&store, "5");
    assert!(second["last_seq"].as_u64().unwrap() > first["last_seq"].as_u64().unwrap(), "the run continued");

    let inspected = json(&presence(&["inspect", &store, "--json"]));
    assert_eq!(inspected["path"], store.as_str());
    assert_eq!(inspected["last_seq"], second["last_seq"]);
    assert_eq!(inspected["snapshot_seq"], second["last_seq"], "simulate ends with a snapshot");
    assert_eq!(inspected["sessions_connected"], second["sessions_connected"]);
    assert!(inspected["bytes_on_disk"].as_u64().unwrap() > 0);

    let replayed = presence(&["replay", &store]);
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stdout));
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("equal"));
    let early = json(&presence(&["replay", &store, "--until", "3", "--json"]));
    let users = early["users"].as_array().unwrap();
    assert!(!users.is_empty() && users.len() <= 3, "three events touch at most three users: {early}");
    let one = json(&presence(&["inspect", &store, "--user", "user1", "--json"]));
    assert_eq!(one["user"], "user1");

    // The same seed on sled gives the same run: the store does not change the commands.
    let dir = tempfile::tempdir().unwrap();
    let on_sled = simulate(dir.path().join("data").to_str().unwrap(), "5");
    for key in ["commands", "commands_by_kind", "events", "subscriptions", "friendships"] {
        assert_eq!(on_sled[key], first[key], "{key}");
    }
}

#[test]
fn unreachable_servers_missing_streams_and_bad_addresses_are_clear_errors() {
    let server = NatsServer::start();
    let nobody = format!("nats://127.0.0.1:{}/presence", free_ports(1)[0]);
    let missing = format!("{}/missing", server.url());
    let cases: [(&[&str], &str); 7] = [
        (&["inspect", &nobody], "is nats-server running there"),
        (&["replay", &nobody], "is nats-server running there"),
        (
            &["simulate", "--store", &nobody, "--users", "10", "--duration-s", "1"],
            "is nats-server running there",
        ),
        (&["inspect", &missing], "stream missing does not exist"),
        (&["replay", &missing], "stream missing does not exist"),
        (&["inspect", "nats://127.0.0.1:4222"], "nats://HOST:PORT/STREAM"),
        (&["replay", "nats://127.0.0.1:4222/a.b"], "cannot name a presence stream"),
    ];
    for (args, expected) in cases {
        let output = presence(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let info = NatsClient::connect(&server.url()).stream_info("missing").unwrap();
    assert_eq!(info["error"]["err_code"], 10059, "inspect or replay created the stream: {info}");
}

fn acked(file: &Path) -> Option<u64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
fn a_killed_simulate_loses_nothing_it_acknowledged() {
    let server = NatsServer::start();
    let store = format!("{}/killed", server.url());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acked");
    let mut previous = 0;
    for (round, wait_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let _ = std::fs::remove_file(&file);
        let mut child = Command::new(env!("CARGO_BIN_EXE_presence"))
            .args(["simulate", "--store", &store, "--users", "5000", "--duration-s", "7200", "--json"])
            .arg("--acked-file")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it some time after it acknowledged its first turn.
        let started = wait_until(Duration::from_secs(60), "simulate's first acknowledged turn", || {
            acked(&file).is_some()
        });
        sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        started.unwrap();
        let acked = acked(&file).unwrap();
        assert!(acked > previous, "round {round}: the run did not continue the log ({acked} <= {previous})");
        previous = acked;

        let inspected = presence(&["inspect", &store, "--json"]);
        assert!(inspected.status.success(), "round {round}: {}", String::from_utf8_lossy(&inspected.stderr));
        let last_seq = json(&inspected)["last_seq"].as_u64().unwrap();
        assert!(last_seq >= acked, "round {round}: acknowledged up to {acked}, the log ends at {last_seq}");
        let replayed = presence(&["replay", &store]);
        assert!(
            replayed.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&replayed.stdout),
            String::from_utf8_lossy(&replayed.stderr)
        );
        let replayed = String::from_utf8_lossy(&replayed.stdout);
        assert!(replayed.contains(&format!("state after event {last_seq}")), "round {round}: {replayed}");
    }
}
