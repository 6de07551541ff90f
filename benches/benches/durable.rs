//! Durable group commit on storage-sled: commands decided as one group, appended as one
//! batch and synced once per batch (an fdatasync, sled's default here), batch sizes 1, 100,
//! 1 000 and 4 096. Elements = commands. Each command logs one event (a custom status
//! that flips), so the store grows as it would under load. After the criterion groups it
//! prints each batch size's commit latency as p50, p99 and max over 2 000 commits (criterion
//! reports means; the bar is on the p99).
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use presence_benches::{bench_config, commit_latencies, commit_status_flips, login_users, user};
use presence_engine::Engine;
use presence_storage_sled::{Durability, SledStore};

fn group_commit(c: &mut Criterion) {
    const USERS: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let store = SledStore::open(dir.path().join("store"), Durability::GroupCommit).unwrap();
    let mut engine = Engine::open(bench_config(), store).unwrap();
    login_users(&mut engine, USERS, 0);
    engine.sync().unwrap();
    let names: Vec<String> = (0..USERS).map(user).collect();
    let mut group = c.benchmark_group("durable");
    group.sample_size(20);
    let mut next = 0usize;
    let mut flip = false;
    for batch in [1usize, 100, 1_000, 4_096] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(
            BenchmarkId::new("group_commit_sync_per_batch", batch),
            &batch,
            |b, &batch| b.iter(|| commit_status_flips(&mut engine, &names, &mut next, &mut flip, batch)),
        );
    }
    group.finish();
    for batch in [1usize, 100, 1_000, 4_096] {
        let rounds = if batch == 4_096 { 500 } else { 2_000 };
        println!("durable/commit_latency/{batch}: {}", commit_latencies(&mut engine, &names, batch, rounds));
    }
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
