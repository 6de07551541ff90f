//! In-memory event store for `presence-engine`, and a wrapper that fails on demand.
//!
//! [`MemStore`] keeps the codec's bytes exactly as a durable backend would, so tests on it
//! exercise the same encoding as storage-sled. It is not durable: everything is gone with
//! the process. [`FaultyStore`] wraps any store and makes `append` or `sync` fail when told
//! to, for tests of R7.1 (a refused command changes nothing).
//!
//! ```
//! use presence_engine::{Command, Config, Engine};
//! use presence_storage_mem::{FaultyStore, MemStore};
//!
//! let store = FaultyStore::new(MemStore::new());
//! let faults = store.faults();
//! let mut engine = Engine::open(Config::default(), store)?;
//! faults.fail_appends(true);
//! let refused = engine.execute(Command::login("alice", "phone"), 0).unwrap_err();
//! assert_eq!(refused.code(), 9000);
//! assert_eq!(engine.status("alice").general.name(), "UNLOGINED");
//! # Ok::<(), presence_engine::Error>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use presence_engine::{check_contiguous, codec, EventStore, StoreError, StoreErrorKind, StoredBatch};

/// An in-memory [`EventStore`]: batches in a vector, snapshots in a map.
#[derive(Clone, Debug)]
pub struct MemStore {
    batches: Vec<StoredBatch>,
    snapshots: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    batch_bytes_max: usize,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        let batch_bytes_max = codec::BATCH_HEADER_BYTES + presence_engine::BATCH_BYTES_MAX;
        Self { batches: Vec::new(), snapshots: BTreeMap::new(), next_seq: 1, batch_bytes_max }
    }

    /// An empty store that refuses batches over `bytes` with
    /// [`StoreErrorKind::TooLarge`], as a network store with a message size limit does: for
    /// tests of what the engine does under such a limit.
    pub fn with_batch_bytes_max(bytes: usize) -> Self {
        Self { batch_bytes_max: bytes, ..Self::new() }
    }

    /// The stored batches, oldest first (for tests that tamper with them).
    pub fn batches_mut(&mut self) -> &mut Vec<StoredBatch> {
        &mut self.batches
    }

    /// Total bytes held in batches and snapshots.
    pub fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.bytes.len()).sum::<usize>()
            + self.snapshots.values().map(Vec::len).sum::<usize>()
    }
}

impl EventStore for MemStore {
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError> {
        check_contiguous(self.next_seq, first_seq, count)?;
        if bytes.len() > self.batch_bytes_max {
            return Err(StoreError::new(
                StoreErrorKind::TooLarge,
                format!(
                    "a batch of {} bytes is over this store's {}-byte limit",
                    bytes.len(),
                    self.batch_bytes_max
                ),
            ));
        }
        self.batches.push(StoredBatch { first_seq, count, bytes: bytes.to_vec() });
        self.next_seq += u64::from(count);
        Ok(())
    }

    fn batch_bytes_max(&self) -> usize {
        self.batch_bytes_max
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        let start = self.batches.partition_point(|b| b.last_seq() < from_seq);
        Ok(Box::new(self.batches[start..].iter().cloned().map(Ok)))
    }

    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.snapshots.insert(last_seq, bytes.to_vec());
        Ok(())
    }

    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.snapshots.keys().copied().collect())
    }

    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.snapshots.get(&last_seq).cloned())
    }

    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError> {
        self.batches.retain(|b| b.last_seq() > upto_seq);
        self.snapshots.retain(|&seq, _| seq >= upto_seq);
        Ok(())
    }
}

/// The switches of a [`FaultyStore`], shared with the test that holds them.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    fail_appends: Arc<AtomicBool>,
    fail_syncs: Arc<AtomicBool>,
    appends_before_failure: Arc<AtomicU64>,
}

impl Faults {
    /// Makes every `append` fail (true) or succeed (false) from now on. `false` also
    /// disarms a countdown set by [`fail_after_appends`](Faults::fail_after_appends), so that
    /// "from now on" holds: after `fail_appends(false)` no append fails until a switch is set
    /// again.
    pub fn fail_appends(&self, on: bool) {
        if !on {
            self.appends_before_failure.store(0, Ordering::SeqCst);
        }
        self.fail_appends.store(on, Ordering::SeqCst);
    }

    /// Whether an `append` may fail: every append fails, or a countdown set by
    /// [`fail_after_appends`](Faults::fail_after_appends) is running. A test that needs an
    /// append to succeed (a reopening that must log disconnects, R8.4) asks this rather than
    /// keeping its own idea of which switches it set.
    pub fn appends_may_fail(&self) -> bool {
        self.fail_appends.load(Ordering::SeqCst) || self.appends_before_failure.load(Ordering::SeqCst) > 0
    }

    /// Makes every `sync` fail (true) or succeed (false) from now on.
    pub fn fail_syncs(&self, on: bool) {
        self.fail_syncs.store(on, Ordering::SeqCst);
    }

    /// Lets `n` more appends succeed, then fails every append until
    /// [`fail_appends(false)`](Faults::fail_appends), which also cancels a countdown still
    /// running.
    pub fn fail_after_appends(&self, n: u64) {
        self.appends_before_failure.store(n.saturating_add(1), Ordering::SeqCst);
    }

    fn append_fails(&self) -> bool {
        if self.fail_appends.load(Ordering::SeqCst) {
            return true;
        }
        let left = self.appends_before_failure.load(Ordering::SeqCst);
        match left {
            0 => false,
            1 => {
                self.fail_appends.store(true, Ordering::SeqCst);
                self.appends_before_failure.store(0, Ordering::SeqCst);
                true
            }
            n => {
                self.appends_before_failure.store(n - 1, Ordering::SeqCst);
                false
            }
        }
    }
}

/// Wraps a store and fails `append` or `sync` on demand, storing nothing when it fails.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Faults,
}

impl<S> FaultyStore<S> {
    /// Wraps `inner`; it behaves normally until told otherwise through [`FaultyStore::faults`].
    pub fn new(inner: S) -> Self {
        Self { inner, faults: Faults::default() }
    }

    /// A handle on the switches that stays usable after the store moves into an engine.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The wrapped store.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: EventStore> EventStore for FaultyStore<S> {
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError> {
        if self.faults.append_fails() {
            return Err(StoreError::new(StoreErrorKind::Injected, "append failed on purpose"));
        }
        self.inner.append(first_seq, count, bytes)
    }

    fn batch_bytes_max(&self) -> usize {
        self.inner.batch_bytes_max()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.faults.fail_syncs.load(Ordering::SeqCst) {
            return Err(StoreError::new(StoreErrorKind::Injected, "sync failed on purpose"));
        }
        self.inner.sync()
    }

    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        self.inner.read_from(from_seq)
    }

    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.save_snapshot(last_seq, bytes)
    }

    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        self.inner.snapshots()
    }

    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_snapshot(last_seq)
    }

    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError> {
        self.inner.compact(upto_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(store: &mut FaultyStore<MemStore>) -> Result<(), StoreError> {
        let seq = store.next_seq();
        store.append(seq, 1, &[seq as u8])
    }

    #[test]
    fn fail_appends_false_cancels_a_running_countdown() {
        let mut store = FaultyStore::new(MemStore::new());
        let faults = store.faults();
        faults.fail_after_appends(3);
        assert!(faults.appends_may_fail());
        append(&mut store).unwrap();
        faults.fail_appends(false);
        assert!(!faults.appends_may_fail());
        for _ in 0..10 {
            append(&mut store).unwrap();
        }
    }

    #[test]
    fn a_countdown_lets_n_appends_through_then_fails_until_switched_off() {
        let mut store = FaultyStore::new(MemStore::new());
        let faults = store.faults();
        faults.fail_after_appends(2);
        append(&mut store).unwrap();
        append(&mut store).unwrap();
        assert!(faults.appends_may_fail());
        assert!(append(&mut store).is_err());
        assert!(append(&mut store).is_err());
        assert!(faults.appends_may_fail());
        faults.fail_appends(false);
        append(&mut store).unwrap();
        assert!(!faults.appends_may_fail());
    }
}
