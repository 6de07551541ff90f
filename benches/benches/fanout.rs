//! Fan-out: one status change of a user with N subscribers, each with one connected device;
//! elements = notices produced (deliveries). And fan-out 10 with subscribers spread over
//! 1 000 000 users, where every notice is a cache miss (docs/DESIGN.md, performance bars).
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use presence_benches::{engine_with_users, spread_subscriptions, subscribe_all, user};
use presence_engine::Command;

fn one_star(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    group.sample_size(20);
    for n in [100u64, 10_000, 100_000] {
        // u0 is the star; u1..=n subscribe to it.
        let mut engine = engine_with_users(n + 1);
        subscribe_all(&mut engine, &user(0), 1..=n);
        let star = user(0);
        // Every set_status flips the custom status, so every call notifies all n
        // subscribers and the star's own device (R5.2).
        group.throughput(Throughput::Elements(n + 1));
        group.bench_with_input(BenchmarkId::new("subscribers", n), &n, |b, _| {
            let mut flip = false;
            b.iter(|| {
                flip = !flip;
                let custom = if flip { "busy" } else { "free" };
                let out = engine.execute(Command::set_status(star.as_str(), "d0", custom), 1).unwrap();
                black_box(out.delivery_count())
            })
        });
    }
    group.finish();
}

fn spread(c: &mut Criterion) {
    const USERS: u64 = 1_000_000;
    const FAN_OUT: u64 = 10;
    const PER_ITER: usize = 1_000;
    let mut engine = engine_with_users(USERS);
    // Subscriber s watches perm_k(s) for k in 0..10, so every user has about ten subscribers
    // scattered over the whole id space.
    let perms = spread_subscriptions(&mut engine, USERS, FAN_OUT);
    // The users whose status changes, in random order, with their exact delivery counts.
    let changers: Vec<String> = perms[0][..PER_ITER].iter().map(|&u| user(u)).collect();
    let deliveries: u64 = changers.iter().map(|u| engine.subscriber_count(u) as u64 + 1).sum();
    let mut c = c.benchmark_group("fanout");
    c.sample_size(20);
    c.throughput(Throughput::Elements(deliveries));
    c.bench_function("spread_fanout_10_over_1000000_users", |b| {
        let mut flip = false;
        b.iter(|| {
            flip = !flip;
            let custom = if flip { "busy" } else { "free" };
            let mut told = 0;
            for u in &changers {
                told += engine
                    .execute(Command::set_status(u.as_str(), "d0", custom), 1)
                    .unwrap()
                    .delivery_count();
            }
            black_box(told)
        })
    });
    c.finish();
}

criterion_group!(benches, one_star, spread);
criterion_main!(benches);
