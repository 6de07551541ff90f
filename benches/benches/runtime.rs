//! The runtime's snapshot on 1 000 000 users: how long it stops between turns to capture the
//! state (the encoding and writing happen on another thread while it goes on), against a
//! whole `Engine::snapshot` that does everything in place. Criterion times the whole
//! `Handle::snapshot` round trip; the pause itself is the runtime's `snapshot_pause`
//! distribution, printed after the group.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, Criterion};
use presence_benches::engine_with_users;
use presence_runtime::{DiscardSink, ManualClock, Runtime, RuntimeConfig, SnapshotPolicy};

fn snapshots(c: &mut Criterion) {
    let mut engine = engine_with_users(1_000_000);
    let mut group = c.benchmark_group("runtime");
    group.sample_size(10);
    group.bench_function("engine_snapshot_in_place_1000000_users", |b| {
        b.iter(|| engine.snapshot().unwrap_or_else(|e| panic!("{e}")))
    });
    let config = RuntimeConfig {
        snapshots: SnapshotPolicy { compact: true, ..SnapshotPolicy::never() },
        ..RuntimeConfig::default()
    };
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), DiscardSink, config);
    group.bench_function("runtime_snapshot_round_trip_1000000_users", |b| {
        b.iter(|| handle.snapshot().and_then(|reply| reply.wait()).unwrap_or_else(|e| panic!("{e}")))
    });
    group.finish();
    let pause = runtime.stats().snapshot_pause;
    println!(
        "runtime/snapshot_pause_1000000_users: p50 {:.1} ms, max {:.1} ms over {} snapshots",
        pause.p50_us as f64 / 1e3,
        pause.max_us as f64 / 1e3,
        pause.count
    );
}

criterion_group!(benches, snapshots);
criterion_main!(benches);
