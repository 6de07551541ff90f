//! What opening a sled store checks and what it writes: the metadata format version (a newer
//! store is refused), the key layout of FORMAT.md, each durability mode, temporary stores,
//! a second open of a held store, and compaction's order (a compaction cut short still
//! recovers, and none happens without a covering snapshot).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{append_batch, encoded_batch, read_all};
use presence_engine::{Command, Config, Engine, EventStore, StoreErrorKind};
use presence_storage_sled::{
    Durability, OpenOptions, SledStore, BATCHES_TREE, META_TREE, SNAPSHOTS_TREE, STORE_FORMAT_VERSION,
};

#[test]
fn layout_is_one_big_endian_key_per_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = SledStore::open(&path, Durability::GroupCommit).unwrap();
    let first = append_batch(&mut store, 300);
    append_batch(&mut store, 1);
    store.save_snapshot(301, b"snap").unwrap();
    assert_eq!(store.batch_count(), 2);
    assert_eq!(store.path(), Some(path.as_path()));
    drop(store);

    let db = common::open_raw(&path);
    let batches = db.open_tree(BATCHES_TREE).unwrap();
    let keys: Vec<Vec<u8>> = batches.iter().keys().map(|k| k.unwrap().to_vec()).collect();
    assert_eq!(keys, [1u64.to_be_bytes().to_vec(), 301u64.to_be_bytes().to_vec()]);
    assert_eq!(batches.get(1u64.to_be_bytes()).unwrap().unwrap().as_ref(), &first[..]);
    let snapshots = db.open_tree(SNAPSHOTS_TREE).unwrap();
    assert_eq!(snapshots.get(301u64.to_be_bytes()).unwrap().unwrap().as_ref(), b"snap");
    let meta = db.open_tree(META_TREE).unwrap();
    assert_eq!(meta.get("format_version").unwrap().unwrap().as_ref(), [STORE_FORMAT_VERSION]);
}

#[test]
fn a_newer_store_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    drop(SledStore::open(&path, Durability::Sync).unwrap());
    {
        let db = common::open_raw(&path);
        db.open_tree(META_TREE).unwrap().insert("format_version", &[STORE_FORMAT_VERSION + 1]).unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(&path, Durability::Sync).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::UnsupportedVersion);
    assert!(err.to_string().contains("format version 2"), "{err}");
}

#[test]
fn data_without_a_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let db = common::open_raw(&path);
        db.open_tree(BATCHES_TREE).unwrap().insert(1u64.to_be_bytes(), encoded_batch(1, 1)).unwrap();
        db.flush().unwrap();
    }
    let err = SledStore::open(&path, Durability::Sync).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt);
    assert!(err.to_string().contains("no format version"), "{err}");
}

#[test]
fn a_second_open_of_a_held_store_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let _held = SledStore::open(&path, Durability::Sync).unwrap();
    let err = SledStore::open(&path, Durability::Sync).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Io, "{err}");
}

#[test]
fn a_path_that_is_a_file_is_an_error_not_a_panic() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let err = SledStore::open(file.path(), Durability::Sync).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Io, "{err}");
}

#[test]
fn appends_whose_bytes_disagree_with_the_call_are_refused() {
    let mut store = SledStore::temporary(Durability::GroupCommit).unwrap();
    for (count, bytes) in [(2, encoded_batch(1, 3)), (1, encoded_batch(2, 1)), (1, b"short".to_vec())] {
        let err = store.append(1, count, &bytes).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Contract, "{err}");
    }
    assert_eq!(store.next_seq(), 1);
    assert_eq!(store.batch_count(), 0);
}

#[test]
fn every_durability_mode_survives_a_clean_reopen() {
    for durability in [Durability::Sync, Durability::GroupCommit, Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = SledStore::open(&path, durability).unwrap();
        assert_eq!(store.durability(), durability);
        let mut engine = Engine::open(Config::default(), store).unwrap();
        let mut rng = common::Rng::new(21);
        let mut at_ms = 0;
        common::drive(&mut engine, &mut rng, &mut at_ms, 200);
        engine.sync().unwrap();
        let live = engine.logical_state();
        drop(engine);
        let engine = Engine::open(Config::default(), SledStore::open(&path, durability).unwrap()).unwrap();
        assert_eq!(engine.logical_state(), live, "{durability:?}");
    }
}

#[test]
fn temporary_store_works_and_measures_its_size() {
    let mut store = SledStore::temporary(Durability::Sync).unwrap();
    assert_eq!(store.path(), None);
    append_batch(&mut store, 1000);
    store.sync().unwrap();
    assert!(store.size_on_disk().unwrap() > 0);
    let mut engine = Engine::open(Config::default(), store).unwrap();
    engine.execute(Command::login("alice", "phone"), 0).unwrap();
    assert_eq!(engine.last_seq(), 1001);
}

#[test]
fn compaction_without_a_covering_snapshot_is_refused() {
    let mut store = SledStore::temporary(Durability::GroupCommit).unwrap();
    append_batch(&mut store, 5);
    append_batch(&mut store, 5);
    let err = store.compact(5).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Contract);
    store.save_snapshot(3, b"x").unwrap();
    assert_eq!(store.compact(5).unwrap_err().kind(), StoreErrorKind::Contract);
    assert_eq!(store.batch_count(), 2);
    store.save_snapshot(5, b"x").unwrap();
    store.compact(5).unwrap();
    assert_eq!(read_all(&store, 0).iter().map(|b| b.first_seq).collect::<Vec<_>>(), [6]);
    assert_eq!(store.snapshots().unwrap(), [5]);
}

/// A compaction cut short leaves some covered batches: the oldest ones are gone, a
/// contiguous run remains before the snapshot, and recovery still gives the same state.
#[test]
fn compaction_cut_short_still_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = SledStore::open(&path, Durability::GroupCommit).unwrap();
    let mut engine = Engine::open(Config::default(), store).unwrap();
    let mut rng = common::Rng::new(23);
    let mut at_ms = 0;
    common::drive(&mut engine, &mut rng, &mut at_ms, 300);
    let covered = engine.snapshot().unwrap();
    common::drive(&mut engine, &mut rng, &mut at_ms, 100);
    engine.sync().unwrap();
    let live = engine.logical_state();
    drop(engine);
    {
        // What `compact` does, stopped after removing half of the covered batches.
        let db = common::open_raw(&path);
        let batches = db.open_tree(BATCHES_TREE).unwrap();
        let keys: Vec<_> = batches.range(..covered.to_be_bytes()).keys().map(Result::unwrap).collect();
        for key in &keys[..keys.len() / 2] {
            batches.remove(key).unwrap();
        }
        db.flush().unwrap();
    }
    let engine = Engine::open(Config::default(), SledStore::open(&path, Durability::Sync).unwrap()).unwrap();
    assert_eq!(engine.logical_state(), live);
    assert_eq!(engine.recovery().snapshot_seq, covered);
}

#[test]
fn options_default_to_group_commit_and_sleds_flush_period() {
    let options = OpenOptions::default();
    assert_eq!(options.durability, Durability::GroupCommit);
    assert_eq!(options.flush_every_ms, Some(500));
    assert!(!options.repair);
    assert!(Durability::Sync.flushes_on_append() && Durability::Sync.flushes_on_sync());
    assert!(!Durability::GroupCommit.flushes_on_append() && Durability::GroupCommit.flushes_on_sync());
    assert!(!Durability::Buffered.flushes_on_append() && !Durability::Buffered.flushes_on_sync());
}

/// Batches above sled's blob threshold (about 128 KiB) live in blob files, which the store
/// syncs itself; they must read back and reopen like any other.
#[test]
fn a_batch_stored_as_a_blob_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = SledStore::open(&path, Durability::Sync).unwrap();
    append_batch(&mut store, 10);
    let big = append_batch(&mut store, 20_000);
    assert!(big.len() > 256 << 10, "the batch is {} bytes", big.len());
    append_batch(&mut store, 10);
    assert!(path.join("blobs").read_dir().unwrap().count() > 0, "sled kept the batch inline");
    drop(store);
    let store = SledStore::open(&path, Durability::Sync).unwrap();
    assert_eq!(read_all(&store, 11)[0].bytes, big);
    assert_eq!(Engine::open(Config::default(), store).unwrap().last_seq(), 20_020);
}
