//! Opening an existing store for `inspect` and `replay`, and read-only views of a store
//! that hide its snapshots or cut its log at a sequence number.

use std::path::Path;

use presence_engine::{codec, EventStore, StoreError, StoreErrorKind, StoredBatch};
use presence_storage_sled::{Durability, SledStore};

/// Opens the store at `path`, refusing a missing path or a directory that is not a sled
/// store (so that nothing is created where the operator pointed by mistake).
pub fn open_existing(path: &Path) -> Result<SledStore, String> {
    if !path.exists() {
        return Err(format!("{}: no such file or directory", path.display()));
    }
    if !path.is_dir() || !path.join("conf").is_file() || !path.join("db").is_file() {
        return Err(format!("{}: not a presence store (no sled database files there)", path.display()));
    }
    SledStore::open(path, Durability::Sync)
        .map_err(|e| format!("{}: cannot open the store: {e}", path.display()))
}

/// A read-only view of a store's log without its snapshots, optionally cut after
/// `until_seq` (a batch that straddles the cut is re-encoded with its first events only).
pub struct LogView<'a, S> {
    inner: &'a S,
    until_seq: Option<u64>,
}

impl<'a, S: EventStore> LogView<'a, S> {
    /// The whole log of `inner`, or the part up to and including `until_seq`.
    pub fn new(inner: &'a S, until_seq: Option<u64>) -> Self {
        Self { inner, until_seq }
    }
}

fn read_only() -> StoreError {
    StoreError::new(StoreErrorKind::Contract, "this view of the store is read-only")
}

/// Cuts `batch` so that it ends at `until_seq` (which it must straddle).
fn cut(batch: StoredBatch, until_seq: u64) -> Result<StoredBatch, StoreError> {
    let (_, events) = codec::decode_batch(&batch.bytes)?;
    let keep = (until_seq + 1 - batch.first_seq) as usize;
    let mut bytes = Vec::new();
    codec::encode_batch(batch.first_seq, &events[..keep.min(events.len())], &mut bytes)?;
    Ok(StoredBatch { first_seq: batch.first_seq, count: keep as u32, bytes })
}

impl<S: EventStore> EventStore for LogView<'_, S> {
    fn next_seq(&self) -> u64 {
        match self.until_seq {
            Some(until) => self.inner.next_seq().min(until + 1),
            None => self.inner.next_seq(),
        }
    }

    fn append(&mut self, _first_seq: u64, _count: u32, _bytes: &[u8]) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        let until = self.until_seq.unwrap_or(u64::MAX);
        let batches = self.inner.read_from(from_seq)?;
        Ok(Box::new(batches.map_while(move |batch| match batch {
            Ok(b) if b.first_seq > until => None,
            Ok(b) if b.last_seq() > until => Some(cut(b, until)),
            other => Some(other),
        })))
    }

    fn save_snapshot(&mut self, _last_seq: u64, _bytes: &[u8]) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        Ok(Vec::new())
    }

    fn load_snapshot(&self, _last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    fn compact(&mut self, _upto_seq: u64) -> Result<(), StoreError> {
        Err(read_only())
    }
}

/// The same store, by reference (so one open store can back several engines in turn).
pub struct Borrowed<'a, S>(pub &'a S);

impl<S: EventStore> EventStore for Borrowed<'_, S> {
    fn next_seq(&self) -> u64 {
        self.0.next_seq()
    }
    fn append(&mut self, _first_seq: u64, _count: u32, _bytes: &[u8]) -> Result<(), StoreError> {
        Err(read_only())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        self.0.read_from(from_seq)
    }
    fn save_snapshot(&mut self, _last_seq: u64, _bytes: &[u8]) -> Result<(), StoreError> {
        Err(read_only())
    }
    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        self.0.snapshots()
    }
    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.0.load_snapshot(last_seq)
    }
    fn compact(&mut self, _upto_seq: u64) -> Result<(), StoreError> {
        Err(read_only())
    }
}
