//! The sharded runtime (docs/SPEC.md R9) on the command mix over 1 000 000 users logged in,
//! storage-mem under each shard: commands per second with the same 8 shards on 1 and on 2
//! engine threads (`sharded/threads/1`, `sharded/threads/2`), and the single runtime for
//! reference (`sharded/single_runtime`). Each iteration queues 20 000 commands through the
//! handle from one sender and waits until the deployment is at rest. Elements = commands.
//!
//! After the group it prints the heap per session of the shards against the single engine
//! (1 000 000 users logged in, no lists), and how long opening the 8 shards takes in
//! parallel against one engine, both over a log of those logins.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presence_benches::{bench_config, mix, user, Rng};
use presence_engine::{Command, Engine, EngineOptions, EventStore, ShardMap};
use presence_runtime::{
    open_shards, DiscardSink, Handle, ManualClock, Runtime, RuntimeConfig, ShardedRuntime,
};
use presence_storage_mem::MemStore;

const USERS: u64 = 1_000_000;
const SHARDS: u32 = 8;
const PER_ITER: usize = 20_000;

fn logins() -> impl Iterator<Item = Command> {
    (0..USERS).map(|i| Command::login(user(i), "d0"))
}

fn config() -> RuntimeConfig {
    RuntimeConfig { auto_tick: false, ..RuntimeConfig::default() }
}

/// The shards of a deployment over fresh stores, every user logged in.
fn shards_with_users() -> Vec<Engine<MemStore>> {
    let map = ShardMap::new(SHARDS);
    let stores = (0..SHARDS).map(|_| MemStore::new()).collect();
    let engines = open_shards(&bench_config(), stores, &map, &EngineOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let (runtime, handle) = ShardedRuntime::spawn(engines, 2, ManualClock::new(0), DiscardSink, config())
        .unwrap_or_else(|e| panic!("{e}"));
    for command in logins() {
        handle.submit(command).unwrap_or_else(|e| panic!("{e}"));
    }
    runtime.shutdown().unwrap_or_else(|e| panic!("{e}"))
}

/// Queues every command, then waits until the deployment is at rest.
fn run(handle: &Handle, commands: Vec<Command>) {
    for command in commands {
        handle.submit(command).unwrap_or_else(|e| panic!("{e}"));
    }
    handle.quiesce(Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
}

fn bench_threads(c: &mut Criterion) {
    let mut rng = Rng::new(42);
    let commands = mix(&mut rng, USERS, 2_000_000);
    let mut group = c.benchmark_group("sharded");
    group.sample_size(10);
    group.throughput(Throughput::Elements(PER_ITER as u64));

    let mut engine = Engine::open(bench_config(), MemStore::new()).unwrap_or_else(|e| panic!("{e}"));
    presence_benches::run_grouped(&mut engine, logins(), 0);
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), DiscardSink, config());
    let mut next = 0;
    group.bench_function("single_runtime", |b| {
        b.iter_batched(|| slice(&commands, &mut next), |batch| run(&handle, batch), BatchSize::LargeInput)
    });
    drop(runtime);

    for threads in [1, 2] {
        let (runtime, handle) =
            ShardedRuntime::spawn(shards_with_users(), threads, ManualClock::new(0), DiscardSink, config())
                .unwrap_or_else(|e| panic!("{e}"));
        let mut next = 0;
        group.bench_function(format!("threads/{threads}"), |b| {
            b.iter_batched(|| slice(&commands, &mut next), |batch| run(&handle, batch), BatchSize::LargeInput)
        });
        drop(runtime);
    }
    group.finish();
    memory_and_recovery();
}

/// The next `PER_ITER` commands of `commands`, cycling.
fn slice(commands: &[Command], next: &mut usize) -> Vec<Command> {
    let batch: Vec<Command> = commands.iter().cycle().skip(*next).take(PER_ITER).cloned().collect();
    *next = (*next + PER_ITER) % commands.len();
    batch
}

fn memory_and_recovery() {
    let mut engine = Engine::open(bench_config(), MemStore::new()).unwrap_or_else(|e| panic!("{e}"));
    presence_benches::run_grouped(&mut engine, logins(), 0);
    let single = engine.heap_bytes().users_and_sessions as f64 / USERS as f64;
    let store = engine.into_store();
    let started = Instant::now();
    let engine = Engine::open(bench_config(), store).unwrap_or_else(|e| panic!("{e}"));
    let single_open = started.elapsed();
    drop(engine);

    let shards = shards_with_users();
    let sharded =
        shards.iter().map(|e| e.heap_bytes().users_and_sessions).sum::<usize>() as f64 / USERS as f64;
    let stores: Vec<MemStore> = shards.into_iter().map(Engine::into_store).collect();
    let batches: usize = stores.iter().map(|s| s.next_seq() as usize).sum();
    let started = Instant::now();
    let reopened = open_shards(&bench_config(), stores, &ShardMap::new(SHARDS), &EngineOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let sharded_open = started.elapsed();
    assert_eq!(reopened.iter().map(|e| e.stats().sessions_connected).sum::<usize>(), USERS as usize);
    println!(
        "sharded/memory_per_session: single {single:.1} B, {SHARDS} shards {sharded:.1} B ({:+.1} %)",
        (sharded / single - 1.0) * 100.0
    );
    println!(
        "sharded/open_1000000_sessions: single {:.0} ms, {SHARDS} shards in parallel {:.0} ms ({batches} events)",
        single_open.as_secs_f64() * 1e3,
        sharded_open.as_secs_f64() * 1e3
    );
}

criterion_group!(benches, bench_threads);
criterion_main!(benches);
