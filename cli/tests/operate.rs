//! The operator's commands on a real sled store: `simulate` runs and continues a store,
//! `inspect` and `replay` read it, bad paths give a clear error and exit 2, and a simulate
//! killed with SIGKILL at any moment leaves a store that both open and verify (R8.1, R8.3).

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread::sleep;
use std::time::Duration;

fn presence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_presence")).args(args).output().unwrap()
}

fn json(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A short run on `store` that keeps the whole log, so `replay` can rebuild it from the log
/// alone.
fn simulate(store: &Path, seed: &str) -> serde_json::Value {
    simulate_with(store, seed, &["--keep-log"])
}

fn simulate_with(store: &Path, seed: &str, extra: &[&str]) -> serde_json::Value {
    let store = store.to_str().unwrap();
    let mut args =
        vec!["simulate", "--store", store, "--users", "300", "--duration-s", "900", "--seed", seed, "--json"];
    args.extend_from_slice(extra);
    let output = presence(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    json(&output)
}

#[test]
fn simulate_creates_then_continues_a_store_that_inspect_and_replay_agree_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    let first = simulate(&store, "5");
    assert!(first["commands"].as_u64().unwrap() > 1_000);
    assert_eq!(first["commands_by_kind"]["login"]["refused"], 0);
    let second = simulate(&store, "5");
    assert!(second["last_seq"].as_u64().unwrap() > first["last_seq"].as_u64().unwrap(), "the run continued");

    let path = store.to_str().unwrap();
    let inspected = json(&presence(&["inspect", path, "--json"]));
    for key in
        ["last_seq", "snapshot_seq", "users", "sessions_connected", "sessions_disconnected", "subscriptions"]
    {
        assert!(inspected.get(key).is_some(), "inspect --json lacks {key}");
    }
    assert_eq!(inspected["last_seq"], second["last_seq"]);
    assert_eq!(inspected["sessions_connected"], second["sessions_connected"]);

    let replayed = presence(&["replay", path]);
    assert!(replayed.status.success(), "{}", String::from_utf8_lossy(&replayed.stdout));
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("equal"));

    let early = json(&presence(&["replay", path, "--until", "3", "--json"]));
    let users = early["users"].as_array().unwrap();
    assert!(!users.is_empty() && users.len() <= 3, "three events touch at most three users: {early}");

    let one = json(&presence(&["inspect", path, "--user", "user1", "--json"]));
    assert_eq!(one["user"], "user1");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = simulate(&dir.path().join("a"), "9");
    let b = simulate(&dir.path().join("b"), "9");
    for key in ["commands", "commands_by_kind", "events", "subscriptions", "friendships"] {
        assert_eq!(a[key], b[key], "{key}");
    }
}

#[test]
fn bad_paths_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for command in ["inspect", "replay"] {
        let output = presence(&[command, missing.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&output.stderr).contains("no such file"));
    }
    std::fs::write(dir.path().join("notes.txt"), "not a store").unwrap();
    let output = presence(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a presence store"));
    assert!(!dir.path().join("db").exists(), "inspect created nothing");
}

#[test]
fn a_killed_simulate_leaves_a_store_that_opens_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    let path = store.to_str().unwrap();
    for (round, wait_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_presence"))
            .args(["simulate", "--store", path, "--users", "5000", "--duration-s", "7200", "--json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill it at some moment after it has started writing (its store exists).
        for _ in 0..200 {
            if store.join("db").exists() {
                break;
            }
            sleep(Duration::from_millis(50));
        }
        sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let inspected = presence(&["inspect", path, "--json"]);
        assert!(inspected.status.success(), "round {round}: {}", String::from_utf8_lossy(&inspected.stderr));
        let replayed = presence(&["replay", path]);
        assert!(
            replayed.status.success(),
            "round {round}: {}{}",
            String::from_utf8_lossy(&replayed.stdout),
            String::from_utf8_lossy(&replayed.stderr)
        );
    }
}

#[test]
fn a_corrupt_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    simulate(&store, "2");
    let db = store.join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    for i in (0..bytes.len()).step_by(97) {
        bytes[i] ^= 0xa5;
    }
    std::fs::write(&db, bytes).unwrap();
    for command in ["inspect", "replay"] {
        let output = presence(&[command, store.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("cannot open the store") && !stderr.contains("panicked"),
            "{command}: {stderr}"
        );
    }
}

// A long-running store stays bounded: the runtime snapshots by its policy and compacts the log
// it covers; `replay` then says the log alone is gone and recovers snapshot + tail.
#[test]
fn simulate_snapshots_and_compacts_by_policy_and_replay_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    let run = simulate_with(&store, "9", &["--snapshot-events", "200"]);
    assert!(run["events"].as_u64().unwrap() > 1_000, "{run}");
    // At least one every 200 events (a turn logs many at once, so the count can fall short of
    // events / 200 by one a turn; the test asks for half), and one at the end.
    let expected = run["events"].as_u64().unwrap() / 400 + 1;
    assert!(run["snapshots"].as_u64().unwrap() >= expected, "{run}");
    assert_eq!(run["snapshot_failures"], 0);
    let path = store.to_str().unwrap();
    let inspected = json(&presence(&["inspect", path, "--json"]));
    assert_eq!(inspected["snapshot_seq"], run["last_seq"], "{inspected}");
    let replayed = presence(&["replay", path]);
    let text = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{text}");
    assert!(text.contains("compacted"), "{text}");
    // The next run continues from snapshot + tail.
    let second = simulate_with(&store, "9", &["--snapshot-events", "200"]);
    assert!(second["last_seq"].as_u64().unwrap() > run["last_seq"].as_u64().unwrap());
}
