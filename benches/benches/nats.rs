//! The NATS JetStream store against sled, in one run, on servers this benchmark starts itself
//! (presence-testkit: a single nats-server, and a three-node cluster, all on loopback):
//! - durable group commit: 1 000 commands decided as one group, appended as one batch and
//!   synced, on one NATS node (replicas 1), on three replicas, and on sled with an fdatasync
//!   per batch (`benches/benches/durable.rs`'s set-up). Elements = commands.
//! - replay of a 1 000 000-event log from the stream, log alone. Elements = events.
//! - append latency: per-append durations measured here (not by criterion) for batches of 1
//!   and of 1 000 commands, printed as p50/p99 after the criterion groups.
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use presence_benches::{bench_config, commit_latencies, commit_status_flips, login_users, run_grouped, user};
use presence_engine::{Command, Engine, EventStore, ReadOnlyStore};
use presence_storage_nats::{NatsOptions, NatsStore};
use presence_storage_sled::{Durability, SledStore};
use presence_testkit::{NatsCluster, NatsServer};

const USERS: u64 = 100_000;

fn nats(url: &str, stream: &str, replicas: usize) -> NatsStore {
    let options = NatsOptions { replicas, create: true, ..NatsOptions::new(url, stream) };
    NatsStore::open(options).unwrap_or_else(|e| panic!("{e}"))
}

/// An engine over `store` with `USERS` users logged in.
fn loaded<S: EventStore>(store: S) -> Engine<S> {
    let mut engine = Engine::open(bench_config(), store).unwrap_or_else(|e| panic!("{e}"));
    login_users(&mut engine, USERS, 0);
    engine.sync().unwrap_or_else(|e| panic!("{e}"));
    engine
}

fn throughput_on<S: EventStore>(c: &mut Criterion, name: &str, store: S) {
    let mut engine = loaded(store);
    let names: Vec<String> = (0..USERS).map(user).collect();
    let (mut next, mut flip) = (0, false);
    let mut group = c.benchmark_group("nats");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1_000));
    group.bench_function(BenchmarkId::new("group_commit_1000", name), |b| {
        b.iter(|| commit_status_flips(&mut engine, &names, &mut next, &mut flip, 1_000))
    });
    group.finish();
}

/// Per-append durations of `rounds` group commits of `batch` commands.
fn latencies<S: EventStore>(store: S, batch: usize, rounds: usize) -> String {
    let mut engine = loaded(store);
    let names: Vec<String> = (0..USERS).map(user).collect();
    commit_latencies(&mut engine, &names, batch, rounds)
}

fn benches(c: &mut Criterion) {
    let server = NatsServer::start();
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));

    throughput_on(c, "nats_1_node", nats(&server.url(), "throughput", 1));
    throughput_on(c, "nats_3_replicas", nats(&cluster.urls(), "throughput", 3));
    let sled =
        SledStore::open(dir.path().join("sled"), Durability::GroupCommit).unwrap_or_else(|e| panic!("{e}"));
    throughput_on(c, "sled_fdatasync", sled);

    // Replay: 1 000 000 users log in (one event each), in batches of 1 024.
    const EVENTS: u64 = 1_000_000;
    let mut engine =
        Engine::open(bench_config(), nats(&server.url(), "replay", 1)).unwrap_or_else(|e| panic!("{e}"));
    run_grouped(&mut engine, (0..EVENTS).map(|u| Command::login(user(u), "d0")), 1);
    assert_eq!(engine.last_seq(), EVENTS);
    let store = engine.into_store();
    let mut group = c.benchmark_group("nats");
    group.sample_size(10);
    group.throughput(Throughput::Elements(EVENTS));
    group.bench_function("replay_log_alone_1000000_events", |b| {
        b.iter(|| {
            let engine = Engine::open(bench_config(), ReadOnlyStore::log_only(&store, None))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(engine.last_seq(), EVENTS);
        })
    });
    group.finish();
    drop(store);

    let mut report = Vec::new();
    for batch in [1, 1_000] {
        let rounds = if batch == 1 { 2_000 } else { 300 };
        let one = latencies(nats(&server.url(), &format!("latency{batch}"), 1), batch, rounds);
        report.push(format!("append latency, batch {batch:>5}, nats 1 node:     {one}"));
        let three = latencies(nats(&cluster.urls(), &format!("latency{batch}"), 3), batch, rounds);
        report.push(format!("append latency, batch {batch:>5}, nats 3 replicas: {three}"));
        let path = dir.path().join(format!("latency{batch}"));
        let sled = SledStore::open(path, Durability::GroupCommit).unwrap_or_else(|e| panic!("{e}"));
        report.push(format!(
            "append latency, batch {batch:>5}, sled fdatasync:  {}",
            latencies(sled, batch, rounds)
        ));
    }
    for line in report {
        println!("{line}");
    }
}

criterion_group!(nats_benches, benches);
criterion_main!(nats_benches);
