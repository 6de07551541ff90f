//! Crash test: guards against losing a batch that was acknowledged as durable, and against a
//! crash leaving a store that does not recover or recovers to a state the log does not define.
//!
//! The test re-executes its own binary as a child (`crash_child`, selected by an environment
//! variable) that runs a random load through the engine on a `SledStore` and prints
//! `@ack <seq>` once everything up to `seq` is durable: after `engine.sync()` in
//! `GroupCommit` mode, after each command's append in `Sync` mode (`@ack` and `@ready`
//! markers, since libtest may print on the same line). Now and then it saves a
//! snapshot and compacts, so kills also land inside those. Some rounds run `Buffered`, which
//! promises nothing durable but must still recover consistently. The parent kills the child
//! with SIGKILL (`Child::kill`) at seeded random moments (sometimes during recovery itself),
//! then reopens the same store and checks that
//! - the store opens and `Engine::open` recovers,
//! - every acknowledged sequence number is there, and
//! - the recovered state equals the one rebuilt from the log another way: a full replay while
//!   the log is whole, else the oldest snapshot and the longer tail after it.
//!
//! Set `PRESENCE_CRASH_SEED` to replay a failing run; the seed is printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Rng;
use presence_engine::{Config, Engine, EventStore, StoreError, StoredBatch};
use presence_storage_sled::{Durability, SledStore};

const CHILD_STORE_ENV: &str = "PRESENCE_CRASH_CHILD_STORE";
const CHILD_MODE_ENV: &str = "PRESENCE_CRASH_CHILD_MODE";
const CHILD_SEED_ENV: &str = "PRESENCE_CRASH_CHILD_SEED";
const KILLS: usize = 40;
/// A child that is never killed stops by itself after this long (and the parent fails).
const CHILD_RUN_MAX: Duration = Duration::from_secs(30);

fn durability_of(mode: &str) -> Durability {
    match mode {
        "sync" => Durability::Sync,
        "buffered" => Durability::Buffered,
        _ => Durability::GroupCommit,
    }
}

/// The child: a durable load that never ends by itself. Run only by the parent.
#[test]
#[ignore = "the child process of crash_kill9_keeps_every_acknowledged_batch"]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_STORE_ENV) else { return };
    let mode = std::env::var(CHILD_MODE_ENV).unwrap();
    let seed: u64 = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let durability = durability_of(&mode);
    let store = SledStore::open(&path, durability).unwrap();
    let mut engine = Engine::open(Config::default(), store).unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "@ready {}", engine.last_seq()).unwrap();
    out.flush().unwrap();
    let mut rng = Rng::new(seed);
    let mut at_ms = engine.now_ms();
    let started = Instant::now();
    let mut group = 0u64;
    while started.elapsed() < CHILD_RUN_MAX {
        let commands = 1 + rng.below(40);
        for _ in 0..commands {
            let appended = match common::step(&mut engine, &mut rng, &mut at_ms) {
                Ok(outcome) => outcome.events > 0,
                Err(e) if e.code() == 9000 => panic!("storage failed: {e}"),
                Err(_) => false,
            };
            if appended && durability == Durability::Sync {
                writeln!(out, "@ack {}", engine.last_seq()).unwrap();
                out.flush().unwrap();
            }
        }
        engine.sync().unwrap();
        if durability == Durability::GroupCommit {
            writeln!(out, "@ack {}", engine.last_seq()).unwrap();
            out.flush().unwrap();
        }
        group += 1;
        if group % 10 == 5 {
            engine.snapshot().unwrap();
        }
        if group % 50 == 45 {
            engine.compact().unwrap();
        }
    }
}

/// Shows only some snapshots of a store, to rebuild its state by a second path.
struct SomeSnapshots<S> {
    inner: S,
    shown: Vec<u64>,
}

impl<S: EventStore> EventStore for SomeSnapshots<S> {
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }
    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.append(first_seq, count, bytes)
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.inner.sync()
    }
    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        self.inner.read_from(from_seq)
    }
    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.save_snapshot(last_seq, bytes)
    }
    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.shown.clone())
    }
    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_snapshot(last_seq)
    }
    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError> {
        self.inner.compact(upto_seq)
    }
}

/// How a round's reference state was rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rebuilt {
    FullReplay,
    OlderSnapshot,
    SameSnapshot,
}

/// Reopens the store after a kill and checks it; returns its last sequence number and how
/// the reference state was rebuilt.
fn verify(path: &Path, acked: u64, round: usize) -> (u64, Rebuilt) {
    let store = SledStore::open(path, Durability::Sync)
        .unwrap_or_else(|e| panic!("round {round}: the store does not reopen after SIGKILL: {e}"));
    let engine = Engine::open(Config::default(), store)
        .unwrap_or_else(|e| panic!("round {round}: the engine does not recover after SIGKILL: {e}"));
    let last_seq = engine.last_seq();
    assert!(last_seq >= acked, "round {round}: acknowledged up to {acked}, recovered only up to {last_seq}");
    let recovered = engine.logical_state();
    let snapshot_used = engine.recovery().snapshot_seq;
    let store = engine.into_store();

    let snapshots = store.snapshots().unwrap();
    let first_batch = store.read_from(0).unwrap().next().transpose().unwrap();
    let log_whole = match first_batch {
        Some(batch) => batch.first_seq == 1,
        None => store.next_seq() == 1,
    };
    let shown = match log_whole {
        true => Vec::new(),
        false => snapshots.first().copied().into_iter().collect(),
    };
    let reference = Engine::open(Config::default(), SomeSnapshots { inner: store, shown: shown.clone() })
        .unwrap_or_else(|e| {
            panic!("round {round}: the log alone does not rebuild (snapshots {shown:?}): {e}")
        });
    assert_eq!(reference.last_seq(), last_seq, "round {round}");
    assert!(
        reference.logical_state() == recovered,
        "round {round}: recovered state differs from the log's (snapshots {snapshots:?}, rebuilt from {shown:?})"
    );
    let rebuilt = match shown.first() {
        None => Rebuilt::FullReplay,
        Some(&seq) if seq < snapshot_used => Rebuilt::OlderSnapshot,
        Some(_) => Rebuilt::SameSnapshot,
    };
    (last_seq, rebuilt)
}

#[test]
fn crash_kill9_keeps_every_acknowledged_batch() {
    let seed = std::env::var("PRESENCE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe);
    eprintln!("crash test seed {seed} (set PRESENCE_CRASH_SEED to replay)");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut acked = 0;
    let mut last_seq = 0;
    let mut acks_seen = 0;
    let mut rebuilt = Vec::new();
    for round in 0..KILLS {
        let mode = ["group", "group", "sync", "buffered"][round % 4];
        let stderr_path = dir.path().join(format!("child{round}.stderr"));
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_STORE_ENV, &path)
            .env(CHILD_MODE_ENV, mode)
            .env(CHILD_SEED_ENV, rng.next_u64().to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        // Mostly kill while the load runs; now and then while the child is still recovering.
        let during_recovery = rng.below(6) == 0;
        if !during_recovery {
            loop {
                let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) else {
                    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
                    panic!("round {round}: no ready line; stdout {seen:?}; stderr: {stderr}");
                };
                // libtest may print "test crash_child ... " on the same line first.
                let ready = line.contains("@ready ");
                seen.push(line);
                if ready {
                    break;
                }
            }
        }
        let delay_ms = if during_recovery { rng.below(40) } else { 10 + rng.below(250) };
        std::thread::sleep(Duration::from_millis(delay_ms));
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "round {round}: the child exited by itself ({status}); stderr: {}",
                std::fs::read_to_string(&stderr_path).unwrap()
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        seen.extend(lines.try_iter());
        for line in &seen {
            if let Some((_, seq)) = line.split_once("@ack ") {
                acked = acked.max(seq.trim().parse::<u64>().unwrap());
                acks_seen += 1;
            }
        }
        let (recovered, how) = verify(&path, acked, round);
        rebuilt.push(how);
        // What the previous round recovered was on disk before this child started.
        assert!(recovered >= last_seq, "round {round}: the log shrank from {last_seq} to {recovered}");
        last_seq = recovered;
    }
    let count = |how| rebuilt.iter().filter(|&&h| h == how).count();
    eprintln!(
        "{KILLS} kills in {:.1} s; {acks_seen} acknowledgements, log ends at {last_seq}; reference \
         states: {} full replays, {} from an older snapshot, {} from the same snapshot",
        started.elapsed().as_secs_f64(),
        count(Rebuilt::FullReplay),
        count(Rebuilt::OlderSnapshot),
        count(Rebuilt::SameSnapshot),
    );
    assert!(acks_seen > KILLS, "the children acknowledged too little for the test to mean anything");
}
