//! A driver for profilers: one benchmark's workload at a chosen scale, with the part to
//! measure in a function whose name starts with `measured_`, so that callgrind counts only
//! that part and prints the wall time of it:
//!
//! ```sh
//! cargo build --release -p presence-benches --example profile
//! valgrind --tool=callgrind --toggle-collect='*measured_*' \
//!     target/release/examples/profile mix 100000 100000
//! ```
//!
//! Workloads (USERS users, N commands):
//! - `replay-log USERS`, `replay-snapshot USERS`: recovery from a sled store holding the
//!   `replay` benchmark's log for USERS users (ten events each), kept in the system's
//!   temporary directory between runs; from the log alone, or from its snapshot and the tail.
//! - `mix USERS N`, `heartbeat USERS N`, `set-status USERS N`, `subscribe USERS N`: the
//!   `commands` benchmark's workloads, one `execute` each.
//! - `spread USERS N`: the `fanout` benchmark's spread fan-out 10, N status changes.
//! - `tick-expire USERS`: the `tick` benchmark's tick that disconnects USERS sessions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use presence_benches::{bench_config, engine_with_users, mix, replay_log, spread_subscriptions, user, Rng};
use presence_engine::{Command, Engine, ReadOnlyStore};
use presence_storage_mem::MemStore;
use presence_storage_sled::{Durability, OpenOptions, SledStore};

/// CPU seconds this process has used (user and system), from /proc (Linux), or 0: less
/// disturbed than the wall clock when other processes share the machine.
fn cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

/// With `PROFILE_WAIT` set, says `ready` on stderr and waits for a line on stdin before the
/// measured part, so that a sampling profiler can attach to it alone (`perf record -p`).
fn wait_if_asked() {
    if std::env::var_os("PROFILE_WAIT").is_some() {
        eprintln!("ready");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: profile replay-log|replay-snapshot USERS | mix|heartbeat|set-status|subscribe|spread USERS N"
    );
    std::process::exit(2)
}

fn arg(args: &[String], i: usize) -> u64 {
    args.get(i).and_then(|a| a.replace('_', "").parse().ok()).unwrap_or_else(|| usage())
}

/// The cached store of the replay benchmark's log for `users` users.
fn replay_store(users: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("presence-profile-replay-{users}"));
    let complete = dir.join("complete");
    if !complete.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let options = OpenOptions { fsync: false, ..OpenOptions::new(Durability::Buffered) };
        let (store, _) = SledStore::open_with(dir.join("store"), options).unwrap_or_else(|e| panic!("{e}"));
        let mut engine = Engine::open(bench_config(), store).unwrap_or_else(|e| panic!("{e}"));
        replay_log(&mut engine, users);
        engine.sync().unwrap_or_else(|e| panic!("{e}"));
        drop(engine);
        std::fs::write(&complete, b"").unwrap_or_else(|e| panic!("{e}"));
    }
    dir.join("store")
}

/// Recovery from `store`, from the log alone or from its snapshot and the tail; the engine
/// is handed back so that dropping it (a million users' state) is not measured.
#[inline(never)]
fn measured_replay(store: &SledStore, log_only: bool) -> Engine<ReadOnlyStore<'_, SledStore>> {
    let store = if log_only { ReadOnlyStore::log_only(store, None) } else { ReadOnlyStore::new(store) };
    Engine::open(bench_config(), store).unwrap_or_else(|e| panic!("{e}"))
}

#[inline(never)]
fn measured_commands(engine: &mut Engine<MemStore>, commands: &[Command]) -> usize {
    let mut told = 0;
    for (i, command) in commands.iter().enumerate() {
        if let Ok(out) = engine.execute(command.clone(), 1 + i as u64 / 1_000) {
            told += out.delivery_count();
        }
    }
    told
}

#[inline(never)]
fn measured_tick(engine: &mut Engine<MemStore>, at_ms: u64) -> u64 {
    engine.tick(at_ms).map_or(0, |out| out.events as u64)
}

/// Runs `measured` (after [`wait_if_asked`]) and returns what it returned, not dropped yet
/// (a recovered engine's drop is not what is measured), with the wall-clock time and the CPU
/// seconds it took.
fn timed<T>(measured: impl FnOnce() -> T) -> (T, Duration, f64) {
    wait_if_asked();
    let (started, cpu_started) = (Instant::now(), cpu_s());
    let result = measured();
    (result, started.elapsed(), cpu_s() - cpu_started)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or_else(|| usage());
    let users = arg(&args, 2);
    let mut rng = Rng::new(42);
    let (count, elapsed, cpu);
    match what {
        "replay-log" | "replay-snapshot" => {
            let path = replay_store(users);
            let store = SledStore::open(&path, Durability::Sync).unwrap_or_else(|e| panic!("{e}"));
            let engine;
            (engine, elapsed, cpu) = timed(|| measured_replay(&store, what == "replay-log"));
            count = engine.recovery().events_replayed;
        }
        "tick-expire" => {
            let mut engine = engine_with_users(users);
            (count, elapsed, cpu) = timed(|| measured_tick(&mut engine, bench_config().heartbeat_timeout_ms));
        }
        _ => {
            let n = arg(&args, 3) as usize;
            let mut engine = engine_with_users(users);
            let commands: Vec<Command> = match what {
                "mix" => mix(&mut rng, users, n),
                "heartbeat" => (0..n).map(|_| Command::heartbeat(user(rng.below(users)), "d0")).collect(),
                "set-status" => (0..n)
                    .map(|i| Command::set_status(user(rng.below(users)), "d0", ["busy", "free"][i % 2]))
                    .collect(),
                "subscribe" => (0..n)
                    .map(|_| {
                        let (s, t) = (rng.below(users), rng.below(users));
                        Command::subscribe(user(s), "d0", [user(if t == s { (t + 1) % users } else { t })])
                    })
                    .collect(),
                "spread" => {
                    let perms = spread_subscriptions(&mut engine, users, 10);
                    let changers = &perms[0][..1_000.min(users as usize)];
                    (0..n)
                        .map(|i| {
                            let custom = ["busy", "free"][i / changers.len() % 2];
                            Command::set_status(user(changers[i % changers.len()]), "d0", custom)
                        })
                        .collect()
                }
                _ => usage(),
            };
            (count, elapsed, cpu) = timed(|| measured_commands(&mut engine, &commands) as u64);
        }
    }
    eprintln!("{what}: {} in {:.3} s ({cpu:.2} s of CPU)", black_box(count), elapsed.as_secs_f64());
}
