//! Recovery from a sled store of 10 000 000 events (generated once into a cached directory
//! under the target folder): from the log alone, and from a snapshot + tail. Elements =
//! events replayed. Opening the sled files is part of what is measured; dropping the
//! opened engine (freeing a million users' state) is not, as recovery does not include it.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use presence_benches::{bench_config, replay_log};
use presence_engine::{Engine, ReadOnlyStore};
use presence_storage_sled::{Durability, OpenOptions, SledStore};

const USERS: u64 = 1_000_000;
const EVENTS: u64 = 10_000_000;
const SNAPSHOT_SEQ: u64 = 8_500_000;

/// Where the store is kept between runs (delete it to regenerate).
fn cached_store() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("replay-10m-events")
}

/// The log of [`replay_log`] for 1 000 000 users: 10 000 000 events, a snapshot after
/// 8 500 000.
fn generate(path: &Path) {
    let started = Instant::now();
    let options = OpenOptions { fsync: false, ..OpenOptions::new(Durability::Buffered) };
    let (store, _) = SledStore::open_with(path, options).unwrap();
    let mut engine = Engine::open(bench_config(), store).unwrap();
    replay_log(&mut engine, USERS);
    assert_eq!(engine.last_seq(), EVENTS, "the generator's arithmetic");
    engine.sync().unwrap();
    drop(engine);
    eprintln!("generated {EVENTS} events in {:.1} s at {}", started.elapsed().as_secs_f64(), path.display());
}

/// Whether the cached store still recovers from its snapshot with this build.
fn usable(store_path: &Path) -> bool {
    let Ok(store) = SledStore::open(store_path, Durability::Sync) else { return false };
    Engine::open(bench_config(), store).is_ok_and(|engine| engine.recovery().snapshot_seq == SNAPSHOT_SEQ)
}

fn replay(c: &mut Criterion) {
    let path = cached_store();
    let complete = path.join("complete");
    if complete.exists() && !usable(&path.join("store")) {
        eprintln!("the cached store at {} is from an older format: regenerating", path.display());
        let _ = std::fs::remove_file(&complete);
    }
    if !complete.exists() {
        let _ = std::fs::remove_dir_all(&path);
        generate(&path.join("store"));
        std::fs::write(&complete, b"").unwrap();
    }
    let store_path = path.join("store");
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("log_alone_10000000_events", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let store = SledStore::open(&store_path, Durability::Sync).unwrap();
                let engine = Engine::open(bench_config(), ReadOnlyStore::log_only(&store, None)).unwrap();
                took += started.elapsed();
                assert_eq!(engine.recovery().events_replayed, EVENTS);
            }
            took
        })
    });
    group.throughput(Throughput::Elements(USERS));
    group.bench_function("snapshot_and_tail_1000000_users", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let store = SledStore::open(&store_path, Durability::Sync).unwrap();
                let engine = Engine::open(bench_config(), store).unwrap();
                took += started.elapsed();
                assert_eq!(engine.recovery().events_replayed, EVENTS - SNAPSHOT_SEQ);
            }
            took
        })
    });
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
