//! `presence replay STORE`: rebuild the state from the log alone and check it against
//! snapshot + tail (R8.1), or show the state as of a past sequence number.

use std::process::ExitCode;
use std::time::Instant;

use presence_engine::{Config, Engine, EventStore, LogicalState, ReadOnlyStore};

use crate::stores::{open_existing, StoreAddress};

/// Arguments of `presence replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store: a sled directory, or a NATS stream as nats://HOST:PORT/STREAM.
    path: String,
    /// Show the state as of this sequence number instead of checking (the log is the
    /// history).
    #[arg(long)]
    until: Option<u64>,
    /// With --until, print the whole state as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `presence replay`: exit 0 when the states agree, 1 when they differ, 2 when the
/// store cannot be read.
pub fn run(args: Args) -> ExitCode {
    match replay(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("presence replay: {message}");
            ExitCode::from(2)
        }
    }
}

fn replay(args: &Args) -> Result<bool, String> {
    let store = open_existing(&StoreAddress::parse(&args.path)?)?;
    let config = Config::default();
    if let Some(until) = args.until {
        let engine = Engine::open(config, ReadOnlyStore::log_only(&store, Some(until)))
            .map_err(|e| format!("cannot replay the log up to {until}: {e}"))?;
        let state = engine.logical_state();
        if args.json {
            let value = serde_json::to_string(&state).map_err(|e| e.to_string())?;
            println!("{value}");
        } else {
            println!("state after event {} (engine time {} ms):", engine.last_seq(), engine.now_ms());
            print_state(&state);
        }
        return Ok(true);
    }
    // Compacted: the log starts after event 1, or holds nothing while the store counts events.
    let first =
        store.read_from(1).map_err(|e| e.to_string())?.next().transpose().map_err(|e| e.to_string())?;
    let log_starts_at = first.map_or(store.next_seq(), |b| b.first_seq);
    if log_starts_at > 1 {
        // Compacted: the events before the newest snapshot are gone, so there is no second way
        // to the state to compare with. Recover it the one way there is, and say so.
        let started = Instant::now();
        let recovered = Engine::open(config, ReadOnlyStore::new(&store))
            .map_err(|e| format!("cannot recover snapshot + tail: {e}"))?;
        println!(
                        "log alone:       not available: the log was compacted up to event {} (the snapshot stands for it)",
            log_starts_at - 1
        );
        println!(
            "snapshot + tail: snapshot at {}, {} events replayed in {:.1} ms: {} users, state after event {}",
            recovered.recovery().snapshot_seq,
            recovered.recovery().events_replayed,
            started.elapsed().as_secs_f64() * 1e3,
            recovered.logical_state().users.len(),
            recovered.last_seq()
        );
        println!("nothing to compare: run `presence simulate --keep-log` to keep a log that replays alone");
        return Ok(true);
    }
    let started = Instant::now();
    let from_log = Engine::open(config.clone(), ReadOnlyStore::log_only(&store, None))
        .map_err(|e| format!("cannot rebuild the state from the log alone: {e}"))?;
    let log_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let recovered = Engine::open(config, ReadOnlyStore::new(&store))
        .map_err(|e| format!("cannot recover snapshot + tail: {e}"))?;
    let recovered_ms = started.elapsed().as_secs_f64() * 1e3;
    println!("log alone:       {} events replayed in {log_ms:.1} ms", from_log.recovery().events_replayed);
    println!(
        "snapshot + tail: snapshot at {}, {} events replayed in {recovered_ms:.1} ms",
        recovered.recovery().snapshot_seq,
        recovered.recovery().events_replayed
    );
    let (a, b) = (from_log.logical_state(), recovered.logical_state());
    if a == b {
        println!("equal: {} users, state after event {}", a.users.len(), from_log.last_seq());
        return Ok(true);
    }
    println!("DIFFERENT: the log alone and snapshot + tail disagree");
    for (x, y) in a.users.iter().zip(&b.users).filter(|(x, y)| x != y).take(5) {
        println!("  log alone:       {x:?}");
        println!("  snapshot + tail: {y:?}");
    }
    if a.users.len() != b.users.len() {
        println!("  users: {} from the log alone, {} from snapshot + tail", a.users.len(), b.users.len());
    }
    Ok(false)
}

fn print_state(state: &LogicalState) {
    for user in &state.users {
        let sessions: Vec<String> = user
            .sessions
            .iter()
            .map(|s| format!("{}({})", s.device, if s.connected { "connected" } else { "disconnected" }))
            .collect();
        let subscriptions: Vec<&str> = user.subscriptions.iter().map(|u| u.as_str()).collect();
        let friends: Vec<&str> = user.friends.iter().map(|u| u.as_str()).collect();
        println!(
            "{} {:?} sessions=[{}] subscriptions=[{}] friends=[{}]",
            user.user,
            &*user.custom,
            sessions.join(" "),
            subscriptions.join(" "),
            friends.join(" ")
        );
    }
}
