//! The backend contract suite: one set of generic functions over [`EventStore`], run by
//! every backend's tests (storage-mem, storage-sled, storage-nats) through
//! [`backend_suite!`](crate::backend_suite!). It checks the trait's contract (round trips,
//! contiguity, snapshots, compaction, reopening), that injected failures leave the engine's
//! state and reads unchanged (R7.1, R8.1), and that corrupt bytes give an error naming the
//! sequence number, never a panic.
//!
//! What only a backend knows (how to make a store, reopen it, and damage a stored batch
//! behind its back) is its [`Backend`] implementation, which lives in the backend's own test.

use presence_engine::{Command, Config, Engine, EventStore, LogicalState, StoreError, StoreErrorKind};
use presence_storage_mem::FaultyStore;

use crate::load::{append_batch, drive, encoded_batch, read_all, step, Rng};

/// What the suite needs from a backend beyond the trait: a fresh store, a reopen (a no-op
/// in memory), and a way to damage a stored batch behind the store's back.
pub trait Backend {
    /// The store under test.
    type Store: EventStore;
    /// A new, empty store.
    fn create(&mut self) -> Self::Store;
    /// The same log opened again (as after a restart), from `store`'s backing data alone.
    fn reopen(&mut self, store: Self::Store) -> Result<Self::Store, StoreError>;
    /// The log with the batch starting at `first_seq` passed through `damage`, opened again
    /// (the open may already fail, which the suite accepts when the error names the batch).
    fn tamper(
        &mut self,
        store: Self::Store,
        first_seq: u64,
        damage: &dyn Fn(&mut Vec<u8>),
    ) -> Result<Self::Store, StoreError>;
}

fn config() -> Config {
    Config::default()
}

/// An engine with some history: `steps` random steps from seed `seed`.
fn loaded<S: EventStore>(store: S, seed: u64, steps: usize) -> (Engine<S>, Rng, u64) {
    let mut engine = Engine::open(config(), store).unwrap();
    let mut rng = Rng::new(seed);
    let mut at_ms = 0;
    drive(&mut engine, &mut rng, &mut at_ms, steps);
    (engine, rng, at_ms)
}

/// The engine's state rebuilt from `store` alone.
fn replayed<S: EventStore>(store: S) -> (LogicalState, Engine<S>) {
    let engine = Engine::open(config(), store).unwrap();
    (engine.logical_state(), engine)
}

// ---- the contract ----

/// Appended batches read back unchanged, from any sequence number, before and after a reopen.
pub fn append_and_read_round_trip<B: Backend>(mut backend: B) {
    let mut store = backend.create();
    assert_eq!(store.next_seq(), 1);
    assert!(read_all(&store, 1).is_empty());
    let a = append_batch(&mut store, 3); // 1..=3
    let b = append_batch(&mut store, 1); // 4
    let c = append_batch(&mut store, 5); // 5..=9
    store.sync().unwrap();
    let check = |store: &B::Store| {
        assert_eq!(store.next_seq(), 10);
        let all = read_all(store, 1);
        assert_eq!(all.iter().map(|b| (b.first_seq, b.count)).collect::<Vec<_>>(), [(1, 3), (4, 1), (5, 5)]);
        assert_eq!([&all[0].bytes, &all[1].bytes, &all[2].bytes], [&a, &b, &c]);
        // A read from inside a batch starts with the batch holding it.
        let from_2: Vec<u64> = read_all(store, 2).iter().map(|b| b.first_seq).collect();
        assert_eq!(from_2, [1, 4, 5]);
        let from_7: Vec<u64> = read_all(store, 7).iter().map(|b| b.first_seq).collect();
        assert_eq!(from_7, [5]);
        assert!(read_all(store, 10).is_empty());
        assert_eq!(read_all(store, 0).len(), 3);
    };
    check(&store);
    let store = backend.reopen(store).unwrap();
    check(&store);
}

/// A non-contiguous or empty append is a contract error that stores nothing.
pub fn non_contiguous_append_is_refused<B: Backend>(mut backend: B) {
    let mut store = backend.create();
    append_batch(&mut store, 2); // 1..=2
    let before = read_all(&store, 1);
    for (first_seq, count) in [(2, 1), (4, 1), (1, 1), (0, 1), (3, 0)] {
        let bytes = encoded_batch(first_seq.max(1), count.max(1) as usize);
        let err = store.append(first_seq, count, &bytes).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Contract, "append({first_seq}, {count}): {err}");
        assert_eq!(store.next_seq(), 3);
        assert_eq!(read_all(&store, 1), before);
    }
    let store = backend.reopen(store).unwrap();
    assert_eq!(store.next_seq(), 3);
    assert_eq!(read_all(&store, 1), before);
    let mut store = store;
    append_batch(&mut store, 1);
    assert_eq!(store.next_seq(), 4);
}

/// Snapshots are listed oldest first and load back; a second save at the same sequence replaces the first.
pub fn snapshots_round_trip<B: Backend>(mut backend: B) {
    let mut store = backend.create();
    assert!(store.snapshots().unwrap().is_empty());
    append_batch(&mut store, 5);
    store.save_snapshot(3, b"three").unwrap();
    store.save_snapshot(5, b"five").unwrap();
    store.save_snapshot(5, b"five again").unwrap();
    let store = backend.reopen(store).unwrap();
    assert_eq!(store.snapshots().unwrap(), [3, 5]);
    assert_eq!(store.load_snapshot(3).unwrap().as_deref(), Some(&b"three"[..]));
    assert_eq!(store.load_snapshot(5).unwrap().as_deref(), Some(&b"five again"[..]));
    assert_eq!(store.load_snapshot(4).unwrap(), None);
}

/// Compaction keeps the newest snapshot and a contiguous tail; the reopened log replays to the live state and goes on.
pub fn compaction_keeps_state_and_next_seq<B: Backend>(mut backend: B) {
    let (mut engine, mut rng, mut at_ms) = loaded(backend.create(), 7, 300);
    let snapshot_seq = engine.snapshot().unwrap();
    drive(&mut engine, &mut rng, &mut at_ms, 100);
    let older = engine.snapshot().unwrap();
    drive(&mut engine, &mut rng, &mut at_ms, 100);
    engine.compact().unwrap();
    let live = engine.logical_state();
    let last_seq = engine.last_seq();
    assert!(last_seq > older && older > snapshot_seq, "the load logged too little");
    let store = engine.into_store();
    assert_eq!(store.snapshots().unwrap(), [older]);
    let kept = read_all(&store, 0);
    assert!(kept[0].first_seq <= older + 1 && kept[0].last_seq() > older, "{:?}", kept[0]);
    let store = backend.reopen(store).unwrap();
    assert_eq!(store.next_seq(), last_seq + 1);
    let (state, mut engine) = replayed(store);
    assert_eq!(state, live);
    assert_eq!(engine.recovery().snapshot_seq, older);
    // The log goes on where it stopped.
    drive(&mut engine, &mut rng, &mut at_ms, 50);
    let live = engine.logical_state();
    let store = backend.reopen(engine.into_store()).unwrap();
    assert_eq!(replayed(store).0, live);
}

/// Compacting every batch away keeps `next_seq`, across a reopen.
pub fn compaction_of_every_batch_keeps_next_seq<B: Backend>(mut backend: B) {
    let (mut engine, mut rng, mut at_ms) = loaded(backend.create(), 11, 200);
    engine.snapshot().unwrap();
    engine.compact().unwrap();
    let next_seq = engine.last_seq() + 1;
    let live = engine.logical_state();
    let store = engine.into_store();
    assert!(read_all(&store, 0).is_empty(), "every batch was covered");
    let store = backend.reopen(store).unwrap();
    assert_eq!(store.next_seq(), next_seq);
    let (state, mut engine) = replayed(store);
    assert_eq!(state, live);
    drive(&mut engine, &mut rng, &mut at_ms, 50);
    assert!(engine.last_seq() >= next_seq);
    let live = engine.logical_state();
    assert_eq!(replayed(backend.reopen(engine.into_store()).unwrap()).0, live);
}

// ---- injected failures (R7.1, R8.1) ----

/// A failed append changes nothing: state, `next_seq` and the log stay as they were (R7.1).
pub fn failed_append_changes_nothing<B: Backend>(mut backend: B) {
    let (engine, mut rng, mut at_ms) = loaded(FaultyStore::new(backend.create()), 3, 200);
    let mut engine = engine;
    engine.execute(Command::login("alice", "phone"), at_ms).unwrap();
    let faults = engine.store().faults();
    let state = engine.logical_state();
    let alice = engine.user("alice");
    let next_seq = engine.store().next_seq();
    let batches = read_all(engine.store(), 0).len();
    faults.fail_appends(true);
    for _ in 0..50 {
        // Every command that would log something fails with code 9000 and changes nothing.
        let _ = step(&mut engine, &mut rng, &mut at_ms);
    }
    let refused = engine.execute(Command::logout("alice", "phone"), at_ms).unwrap_err();
    assert_eq!(refused.code(), 9000);
    // A tick that would disconnect every session fails whole and keeps them.
    let refused = engine.tick(at_ms + 10_000_000).unwrap_err();
    assert_eq!(refused.code(), 9000);
    assert_eq!(engine.logical_state(), state);
    assert_eq!(engine.user("alice"), alice);
    assert_eq!(engine.store().next_seq(), next_seq);
    assert_eq!(read_all(engine.store(), 0).len(), batches);
    faults.fail_appends(false);
    let out = engine.tick(at_ms + 10_000_000).unwrap();
    assert!(out.events > 0, "the tick expires what the failed one could not");
    let live = engine.logical_state();
    let store = backend.reopen(engine.into_store().into_inner()).unwrap();
    assert_eq!(replayed(store).0, live);
}

/// Appends failing from some point on keep the log a replayable prefix of the live state.
pub fn failed_after_some_appends_keeps_the_prefix<B: Backend>(mut backend: B) {
    let store = FaultyStore::new(backend.create());
    let faults = store.faults();
    let mut engine = Engine::open(config(), store).unwrap();
    faults.fail_after_appends(40);
    let mut rng = Rng::new(5);
    let mut at_ms = 0;
    let mut failures = 0;
    for _ in 0..300 {
        let before = engine.logical_state();
        match step(&mut engine, &mut rng, &mut at_ms) {
            Err(e) if e.code() == 9000 => {
                failures += 1;
                assert_eq!(engine.logical_state(), before, "a failed append changed the state");
            }
            _ => {}
        }
    }
    assert!(failures > 0);
    let live = engine.logical_state();
    let store = backend.reopen(engine.into_store().into_inner()).unwrap();
    assert_eq!(replayed(store).0, live);
}

/// A failed sync is reported (code 9000) and a later one recovers.
pub fn failed_sync_is_reported_and_a_later_sync_recovers<B: Backend>(mut backend: B) {
    let (mut engine, mut rng, mut at_ms) = loaded(FaultyStore::new(backend.create()), 9, 100);
    let faults = engine.store().faults();
    faults.fail_syncs(true);
    drive(&mut engine, &mut rng, &mut at_ms, 50);
    let err = engine.sync().unwrap_err();
    assert_eq!(err.code(), 9000);
    faults.fail_syncs(false);
    engine.sync().unwrap();
    let live = engine.logical_state();
    let store = backend.reopen(engine.into_store().into_inner()).unwrap();
    assert_eq!(replayed(store).0, live);
}

/// Snapshot plus tail, reopened, gives the live state and statistics (R8.1).
pub fn replay_equals_live<B: Backend>(mut backend: B) {
    let (mut engine, mut rng, mut at_ms) = loaded(backend.create(), 13, 400);
    engine.snapshot().unwrap();
    drive(&mut engine, &mut rng, &mut at_ms, 400);
    engine.sync().unwrap();
    let live = engine.logical_state();
    let stats = engine.stats();
    let store = backend.reopen(engine.into_store()).unwrap();
    let (state, engine) = replayed(store);
    assert_eq!(state, live);
    assert_eq!(engine.stats(), stats);
    assert!(engine.recovery().snapshot_seq > 0 && engine.recovery().events_replayed > 0);
}

// ---- corrupt bytes: an error naming the sequence number, never a panic ----

/// The first sequence number of the `index`-th stored batch.
fn batch_seq<S: EventStore>(store: &S, index: usize) -> u64 {
    read_all(store, 0)[index].first_seq
}

/// Opens an engine over a damaged store (if the store itself opened) and returns the
/// error's text: either the store or the engine must refuse.
fn open_error<S: EventStore>(store: Result<S, StoreError>) -> String {
    match store {
        Err(e) => e.to_string(),
        Ok(store) => match Engine::open(config(), store) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a damaged store opened without an error"),
        },
    }
}

/// A corrupt payload fails the open or the replay with an error naming the sequence number.
pub fn corrupt_payload_names_the_sequence<B: Backend>(mut backend: B) {
    let (mut engine, ..) = loaded(backend.create(), 17, 100);
    engine.sync().unwrap();
    let store = engine.into_store();
    let seq = batch_seq(&store, 3);
    let store = backend.tamper(store, seq, &|bytes| {
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
    });
    let message = open_error(store);
    assert!(message.contains(&format!("sequence {seq}")), "{message}");
}

/// A torn newest batch, cut anywhere, is an error naming its sequence number.
pub fn torn_newest_batch_is_an_error<B: Backend>(mut backend: B) {
    for keep in [0, 5, 16, 17, 30] {
        let mut store = backend.create();
        append_batch(&mut store, 3);
        append_batch(&mut store, 40); // 4..=43
        let store = backend.tamper(store, 4, &|bytes| bytes.truncate(keep));
        let message = open_error(store);
        assert!(message.contains("sequence 4"), "keeping {keep} bytes: {message}");
    }
}

/// A batch of a newer codec version is refused as `UnsupportedVersion`.
pub fn newer_batch_version_is_refused<B: Backend>(mut backend: B) {
    let mut store = backend.create();
    append_batch(&mut store, 3);
    append_batch(&mut store, 3);
    let newer = presence_engine::codec::FORMAT_VERSION + 1;
    let result = backend.tamper(store, 1, &|bytes| bytes[0] = newer).and_then(|store| {
        Engine::open(config(), store).map(|_| ()).map_err(|e| match e {
            presence_engine::Error::Storage(e) => e,
            other => panic!("{other}"),
        })
    });
    let err = result.unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::UnsupportedVersion, "{err}");
}

/// Random damage anywhere in a batch gives an error naming its sequence number, never a panic.
pub fn random_damage_never_panics<B: Backend>(mut backend: B) {
    let mut rng = Rng::new(0xdead_beef);
    for round in 0..12 {
        let mut store = backend.create();
        for _ in 0..4 {
            append_batch(&mut store, 1 + rng.below(20) as usize);
        }
        let seq = batch_seq(&store, rng.below(4) as usize);
        let cut = rng.next_u64();
        let flip = rng.next_u64();
        let store = backend.tamper(store, seq, &|bytes| {
            match round % 3 {
                0 => {
                    bytes.truncate(cut as usize % bytes.len());
                }
                1 => {
                    // Now and then the version byte, else anywhere after it.
                    let at = if flip.is_multiple_of(4) { 0 } else { 1 + flip as usize % (bytes.len() - 1) };
                    bytes[at] ^= 1 << (flip % 8);
                }
                _ => bytes.extend_from_slice(&cut.to_le_bytes()),
            };
        });
        let message = open_error(store);
        // Wherever the damage is, even in the header, the error names the batch (the engine
        // names where a batch is stored when its own header cannot be read).
        assert!(message.contains(&format!("sequence {seq}")), "round {round}: {message}");
    }
}

/// A snapshot that does not decode is skipped for the one before it.
pub fn undecodable_snapshot_falls_back<B: Backend>(mut backend: B) {
    let (mut engine, mut rng, mut at_ms) = loaded(backend.create(), 19, 150);
    let good = engine.snapshot().unwrap();
    drive(&mut engine, &mut rng, &mut at_ms, 150);
    let live = engine.logical_state();
    let bad = engine.last_seq();
    let mut store = engine.into_store();
    store.save_snapshot(bad, b"\x01 not a snapshot").unwrap();
    let store = backend.reopen(store).unwrap();
    let (state, engine) = replayed(store);
    assert_eq!(state, live);
    assert_eq!(engine.recovery().snapshot_seq, good);
    assert_eq!(engine.recovery().skipped_snapshots[0].0, bad);
}

/// Generates one `#[test]` per contract in module `$module`, each calling the contract with
/// a fresh `$backend` (an expression evaluated per test, in the scope of the calling
/// file):
///
/// ```text
/// presence_testkit::backend_suite!(on_sled, Sled::new());
/// ```
#[macro_export]
macro_rules! backend_suite {
    ($module:ident, $backend:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $crate::backend_suite!(@tests $backend;
                append_and_read_round_trip,
                non_contiguous_append_is_refused,
                snapshots_round_trip,
                compaction_keeps_state_and_next_seq,
                compaction_of_every_batch_keeps_next_seq,
                failed_append_changes_nothing,
                failed_after_some_appends_keeps_the_prefix,
                failed_sync_is_reported_and_a_later_sync_recovers,
                replay_equals_live,
                corrupt_payload_names_the_sequence,
                torn_newest_batch_is_an_error,
                newer_batch_version_is_refused,
                random_damage_never_panics,
                undecodable_snapshot_falls_back
            );
        }
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::backend_suite::$name($backend)
            }
        )*
    };
}
