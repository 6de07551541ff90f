//! Commands in memory over 1 000 000 users on storage-mem: the mix, heartbeat alone,
//! login + logout, set_status, subscribe. Elements = commands.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presence_benches::{engine_with_users, mix, user, Rng};
use presence_engine::{Command, Engine, SessionHandle};
use presence_storage_mem::MemStore;

const USERS: u64 = 1_000_000;
const PER_ITER: usize = 1_000;

/// Runs `commands` in order, `PER_ITER` per iteration, cycling, with the time moving 1 ms
/// per iteration.
fn run(c: &mut Criterion, name: &str, engine: &mut Engine<MemStore>, commands: &[Command]) {
    let mut group = c.benchmark_group("commands");
    group.sample_size(20);
    group.throughput(Throughput::Elements(PER_ITER as u64));
    let mut next = 0;
    let mut at_ms = 1;
    group.bench_function(name, |b| {
        b.iter(|| {
            at_ms += 1;
            for _ in 0..PER_ITER {
                let command = commands[next].clone();
                next = (next + 1) % commands.len();
                let _ = black_box(engine.execute(command, at_ms));
            }
        })
    });
    group.finish();
}

/// `commands` in batches of 64 by value, `PER_ITER` per iteration, with or without
/// [`Engine::prefetch`] before each batch, as `{what}_batches_of_64[_prefetched]`. Making
/// the batches is not measured.
fn batches(
    c: &mut Criterion,
    what: &str,
    engine: &mut Engine<MemStore>,
    commands: &[Command],
    prefetch: bool,
) {
    const BATCH: usize = 64;
    let mut group = c.benchmark_group("commands");
    group.sample_size(20);
    group.throughput(Throughput::Elements((PER_ITER / BATCH * BATCH) as u64));
    let name = format!("{what}_batches_of_64{}", if prefetch { "_prefetched" } else { "" });
    let mut next = 0;
    let mut at_ms = 1;
    group.bench_function(&name, |b| {
        b.iter_batched(
            || {
                let batches: Vec<Vec<Command>> = (0..PER_ITER / BATCH)
                    .map(|_| {
                        let batch =
                            (0..BATCH).map(|i| commands[(next + i) % commands.len()].clone()).collect();
                        next = (next + BATCH) % commands.len();
                        batch
                    })
                    .collect();
                batches
            },
            |batches| {
                at_ms += 1;
                for batch in batches {
                    if prefetch {
                        engine.prefetch(&batch);
                    }
                    for command in batch {
                        let _ = black_box(engine.execute(command, at_ms));
                    }
                }
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let mut rng = Rng::new(42);
    let mut engine = engine_with_users(USERS);

    let commands = mix(&mut rng, USERS, 2_000_000);
    run(c, "mix_over_1000000_users", &mut engine, &commands);
    // The mix as the runtime's turns run it: in batches by value, each prefetched.
    for prefetch in [false, true] {
        batches(c, "mix", &mut engine, &commands, prefetch);
    }

    let mut engine = engine_with_users(USERS);
    let commands: Vec<Command> =
        (0..1_000_000).map(|_| Command::heartbeat(user(rng.below(USERS)), "d0")).collect();
    run(c, "heartbeat", &mut engine, &commands);
    // The same heartbeats in batches of 64 handed over by value (as the runtime's turns hold
    // them: no copy of each command in the measured part), executed one by one, and after
    // `Engine::prefetch` on each batch.
    for prefetch in [false, true] {
        batches(c, "heartbeat", &mut engine, &commands, prefetch);
    }

    // The same heartbeats by session handle (what a connection that keeps its handle sends).
    let handles: Vec<SessionHandle> = (0..1_000_000)
        .map(|_| engine.session_handle(&user(rng.below(USERS)), "d0").unwrap_or_else(|| panic!("no session")))
        .collect();
    let mut group = c.benchmark_group("commands");
    group.sample_size(20);
    group.throughput(Throughput::Elements(PER_ITER as u64));
    let mut next = 0;
    group.bench_function("heartbeat_by_handle", |b| {
        b.iter(|| {
            for _ in 0..PER_ITER {
                let _ = black_box(engine.heartbeat(handles[next], 2));
                next = (next + 1) % handles.len();
            }
        })
    });
    group.finish();

    let commands: Vec<Command> = (0..500_000)
        .flat_map(|_| {
            let u = user(rng.below(USERS));
            [Command::logout(u.as_str(), "d0"), Command::login(u.as_str(), "d0")]
        })
        .collect();
    run(c, "login_logout", &mut engine, &commands);

    let commands: Vec<Command> = (0..1_000_000)
        .map(|i| Command::set_status(user(rng.below(USERS)), "d0", if i % 2 == 0 { "busy" } else { "free" }))
        .collect();
    run(c, "set_status", &mut engine, &commands);

    let commands: Vec<Command> = (0..1_000_000)
        .map(|_| {
            let (s, t) = (rng.below(USERS), rng.below(USERS));
            Command::subscribe(user(s), "d0", [user(if t == s { (t + 1) % USERS } else { t })])
        })
        .collect();
    run(c, "subscribe", &mut engine, &commands);
}

criterion_group!(group, benches);
criterion_main!(group);
