//! Ticks: with 1 000 000 connected sessions and nothing due (must be O(1)), and ticks that
//! expire k sessions (must be O(k)).
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use presence_benches::{bench_config, engine_with_users, login_users};
use presence_engine::Engine;
use presence_storage_mem::MemStore;

fn nothing_due(c: &mut Criterion) {
    let mut engine = engine_with_users(1_000_000);
    let mut group = c.benchmark_group("tick");
    group.throughput(Throughput::Elements(1));
    let mut at_ms = 1;
    group.bench_function("nothing_due_1000000_sessions", |b| {
        b.iter(|| {
            // Always before the first deadline (400 000 ms after the logins at 0).
            at_ms = (at_ms + 1) % 399_000;
            black_box(engine.tick(at_ms).unwrap().events)
        })
    });
    group.finish();
}

fn expiring(c: &mut Criterion) {
    let timeout = bench_config().heartbeat_timeout_ms;
    let mut group = c.benchmark_group("tick");
    group.sample_size(20);
    for k in [1_000u64, 10_000] {
        group.throughput(Throughput::Elements(k));
        group.bench_with_input(BenchmarkId::new("expire", k), &k, |b, &k| {
            let mut engine = Engine::open(bench_config(), MemStore::new()).unwrap();
            let mut at_ms = 0;
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: k sessions log in (or reconnect) now ...
                    login_users(&mut engine, k, at_ms);
                    at_ms += timeout;
                    // ... timed: one tick a timeout later disconnects exactly those k.
                    let started = Instant::now();
                    let events = engine.tick(at_ms).unwrap().events;
                    spent += started.elapsed();
                    assert_eq!(events as u64, k);
                    at_ms += 1;
                }
                spent
            })
        });
    }
    group.finish();
}

criterion_group!(benches, nothing_due, expiring);
criterion_main!(benches);
