//! Throughput and size figures for the README, not a pass/fail test: ignored by default.
//! Run in release:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/targets/b cargo test --release -p presence-storage-sled \
//!     --test throughput -- --ignored --nocapture
//! ```
//!
//! It measures raw `append` of pre-encoded 1 000-event batches with a `sync` per batch (what
//! group commit does), the same in `Sync` mode and without syncs (`Buffered`), engine
//! commands with a flush each (`Sync` mode, one batch per command), engine commands with one
//! sync per 1 000 (one key per command, as the engine appends today), the bytes on disk per
//! event, and replay speed through `Engine::open`; the durable ones with and without
//! `OpenOptions::fsync` (an fdatasync after sled's flush).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use presence_engine::{Command, Config, Engine, EventStore};
use presence_storage_sled::{Durability, OpenOptions, SledStore};

const BATCH_EVENTS: usize = 1_000;
const BATCHES: u64 = 1_000;

fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Appends `BATCHES` pre-encoded batches, syncing after each when `sync` is set.
fn raw_appends(durability: Durability, sync: bool, fsync: bool) -> (SledStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let options = OpenOptions { fsync, ..OpenOptions::new(durability) };
    let (mut store, _) = SledStore::open_with(dir.path().join("store"), options).unwrap();
    let batches: Vec<(u64, Vec<u8>)> = (0..BATCHES)
        .map(|i| {
            let first = 1 + i * BATCH_EVENTS as u64;
            (first, common::encoded_batch(first, BATCH_EVENTS))
        })
        .collect();
    let encoded: usize = batches.iter().map(|(_, b)| b.len()).sum();
    let mut latencies = Vec::with_capacity(batches.len());
    let started = Instant::now();
    for (first, bytes) in &batches {
        let t = Instant::now();
        store.append(*first, BATCH_EVENTS as u32, bytes).unwrap();
        if sync {
            store.sync().unwrap();
        }
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let events = BATCHES * BATCH_EVENTS as u64;
    println!(
        "raw append, {durability:?}, fsync {fsync}, {} per batch of {BATCH_EVENTS}: {:.0} events/s \
         ({events} events in {:.2} s; per batch p50 {:.2} ms, p99 {:.2} ms; {:.1} encoded bytes/event)",
        if sync { "sync" } else { "no sync" },
        per_second(events, elapsed),
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        encoded as f64 / events as f64,
    );
    (store, dir)
}

fn engine_commands(durability: Durability, fsync: bool, commands: u64, sync_every: u64) {
    let dir = tempfile::tempdir().unwrap();
    let options = OpenOptions { fsync, ..OpenOptions::new(durability) };
    let (store, _) = SledStore::open_with(dir.path().join("store"), options).unwrap();
    let mut engine = Engine::open(Config::default(), store).unwrap();
    let started = Instant::now();
    for i in 0..commands {
        engine.execute(Command::login(format!("user{i}"), "phone"), i).unwrap();
        if (i + 1) % sync_every == 0 {
            engine.sync().unwrap();
        }
    }
    engine.sync().unwrap();
    let elapsed = started.elapsed();
    println!(
        "engine logins, {durability:?}, fsync {fsync}, sync every {sync_every}: {:.0} commands/s \
         ({commands} in {:.2} s)",
        per_second(commands, elapsed),
        elapsed.as_secs_f64()
    );
}

#[test]
#[ignore = "a measurement; run in release with --ignored --nocapture"]
fn measure_throughput_and_size() {
    let (store, dir) = raw_appends(Durability::GroupCommit, true, true);
    store.flush().unwrap();
    let events = BATCHES * BATCH_EVENTS as u64;
    let size = store.size_on_disk().unwrap();
    println!(
        "size on disk after {events} events in {BATCHES} batches: {size} bytes, {:.1} bytes/event",
        size as f64 / events as f64
    );
    drop(store);
    let store = SledStore::open(dir.path().join("store"), Durability::Sync).unwrap();
    let started = Instant::now();
    let read: usize = store.read_from(0).unwrap().map(|b| b.unwrap().bytes.len()).sum();
    let elapsed = started.elapsed();
    println!(
        "read_from over the log (no decoding): {:.0} events/s, {:.0} MB/s",
        per_second(events, elapsed),
        read as f64 / elapsed.as_secs_f64() / 1e6
    );
    let started = Instant::now();
    let mut decoded = 0;
    for batch in store.read_from(0).unwrap() {
        decoded += presence_engine::codec::decode_batch(&batch.unwrap().bytes).unwrap().1.len();
    }
    let elapsed = started.elapsed();
    println!("read_from and decode_batch: {:.0} events/s", per_second(decoded as u64, elapsed));
    drop(store);
    let started = Instant::now();
    let engine =
        Engine::open(Config::default(), SledStore::open(dir.path().join("store"), Durability::Sync).unwrap())
            .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(engine.last_seq(), events);
    println!(
        "replay through Engine::open: {:.0} events/s ({events} events in {:.2} s)",
        per_second(events, elapsed),
        elapsed.as_secs_f64()
    );
    drop(engine);

    raw_appends(Durability::GroupCommit, true, false);
    raw_appends(Durability::Sync, false, true);
    raw_appends(Durability::Sync, false, false);
    raw_appends(Durability::Buffered, false, true);
    engine_commands(Durability::Sync, true, 500, 1);
    engine_commands(Durability::Sync, false, 5_000, 1);
    engine_commands(Durability::GroupCommit, true, 100_000, 1_000);
    engine_commands(Durability::GroupCommit, false, 100_000, 1_000);
    engine_commands(Durability::Buffered, true, 100_000, 1_000);
}
