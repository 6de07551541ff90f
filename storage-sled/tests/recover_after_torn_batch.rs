//! Recovery from a torn or corrupt tail: without repair the open fails naming the sequence
//! number; with `OpenOptions::repair` the bad batch and everything after it are dropped and
//! reported, the store opens, and the engine recovers every batch before it. A batch of a
//! newer format version is never dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{append_batch, read_all};
use presence_engine::{Command, Config, Engine, EventStore, StoreErrorKind};
use presence_storage_sled::{Durability, OpenOptions, SledStore, BATCHES_TREE};

fn repair_options() -> OpenOptions {
    OpenOptions { repair: true, ..OpenOptions::new(Durability::Sync) }
}

/// Rewrites the value of the batch at `seq` with sled directly.
fn damage(path: &Path, seq: u64, change: impl FnOnce(&mut Vec<u8>)) {
    let db = common::open_raw(path);
    let batches = db.open_tree(BATCHES_TREE).unwrap();
    let mut bytes = batches.get(seq.to_be_bytes()).unwrap().unwrap().to_vec();
    change(&mut bytes);
    batches.insert(seq.to_be_bytes(), bytes).unwrap();
    db.flush().unwrap();
}

/// A store with batches at 1 (3 events), 4 (4 events), 8 (5 events): next_seq 13.
fn three_batches(path: &Path) {
    let mut store = SledStore::open(path, Durability::Sync).unwrap();
    for count in [3, 4, 5] {
        append_batch(&mut store, count);
    }
}

#[test]
fn torn_tail_fails_the_open_and_repair_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    three_batches(&path);
    damage(&path, 8, |bytes| bytes.truncate(bytes.len() / 2));

    let err = SledStore::open(&path, Durability::Sync).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt);
    assert!(err.to_string().contains("sequence 8"), "{err}");
    assert!(err.to_string().contains("repair"), "the error says what to do: {err}");

    let (mut store, report) = SledStore::open_with(&path, repair_options()).unwrap();
    assert_eq!(report.batches_checked, 3);
    assert_eq!(report.dropped.len(), 1);
    assert_eq!(report.dropped[0].first_seq, Some(8));
    assert_eq!(report.dropped[0].events, Some(5));
    assert_eq!(report.dropped_events(), 5);
    assert!(report.to_string().contains("batch at sequence 8"), "{report}");
    assert_eq!(store.next_seq(), 8);
    assert_eq!(read_all(&store, 0).len(), 2);
    // The log continues where the dropped batch started.
    append_batch(&mut store, 2);
    drop(store);

    let (store, report) = SledStore::open_with(&path, repair_options()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(store.next_seq(), 10);
    let engine = Engine::open(Config::default(), store).unwrap();
    assert_eq!(engine.last_seq(), 9);
}

#[test]
fn corrupt_middle_batch_fails_replay_and_repair_drops_it_and_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    three_batches(&path);
    damage(&path, 4, |bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
    });

    // The newest batch is sound, so the store opens; the engine's replay finds the damage.
    let store = SledStore::open(&path, Durability::Sync).unwrap();
    let err = Engine::open(Config::default(), store).err().unwrap();
    assert!(err.to_string().contains("sequence 4"), "{err}");

    let (store, report) = SledStore::open_with(&path, repair_options()).unwrap();
    let dropped: Vec<_> = report.dropped.iter().map(|d| (d.first_seq, d.reason.clone())).collect();
    assert_eq!(dropped.len(), 2, "{report}");
    assert_eq!(dropped[0].0, Some(4));
    assert!(dropped[0].1.contains("checksum"), "{report}");
    assert_eq!(dropped[1], (Some(8), "follows a dropped batch".to_string()));
    assert_eq!(store.next_seq(), 4);
    let engine = Engine::open(Config::default(), store).unwrap();
    assert_eq!(engine.last_seq(), 3);
}

#[test]
fn repair_never_drops_a_newer_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    three_batches(&path);
    damage(&path, 8, |bytes| bytes[0] = presence_engine::codec::FORMAT_VERSION + 1);
    for options in [OpenOptions::new(Durability::Sync), repair_options()] {
        let err = SledStore::open_with(&path, options).err().unwrap();
        assert_eq!(err.kind(), StoreErrorKind::UnsupportedVersion, "{err}");
        assert!(err.to_string().contains("sequence 8"), "{err}");
    }
    let db = common::open_raw(&path);
    assert_eq!(db.open_tree(BATCHES_TREE).unwrap().len(), 3, "nothing was dropped");
}

#[test]
fn repair_of_a_sound_store_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = SledStore::open(&path, Durability::GroupCommit).unwrap();
    let mut engine = Engine::open(Config::default(), store).unwrap();
    let mut rng = common::Rng::new(1);
    let mut at_ms = 0;
    common::drive(&mut engine, &mut rng, &mut at_ms, 300);
    engine.snapshot().unwrap();
    engine.compact().unwrap();
    common::drive(&mut engine, &mut rng, &mut at_ms, 100);
    let live = engine.logical_state();
    let batches = engine.store().batch_count();
    drop(engine);

    let (store, report) = SledStore::open_with(&path, repair_options()).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.batches_checked, batches);
    assert_eq!(Engine::open(Config::default(), store).unwrap().logical_state(), live);
}

#[test]
fn torn_tail_after_compacting_everything_keeps_next_seq() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = SledStore::open(&path, Durability::Sync).unwrap();
    let mut engine = Engine::open(Config::default(), store).unwrap();
    engine.execute(Command::login("alice", "phone"), 0).unwrap();
    engine.execute(Command::login("bob", "phone"), 1).unwrap();
    let covered = engine.snapshot().unwrap();
    engine.compact().unwrap();
    engine.execute(Command::login("carol", "phone"), 2).unwrap();
    drop(engine);
    damage(&path, covered + 1, |bytes| bytes.truncate(3));

    let (store, report) = SledStore::open_with(&path, repair_options()).unwrap();
    assert_eq!(report.dropped.len(), 1);
    assert_eq!(store.next_seq(), covered + 1);
    let engine = Engine::open(Config::default(), store).unwrap();
    assert_eq!(engine.last_seq(), covered);
    assert_eq!(engine.status("bob").general.name(), "ONLINE");
    assert_eq!(engine.status("carol").general.name(), "UNLOGINED");
}
