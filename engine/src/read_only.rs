//! Read-only views of a store, for tools that open an engine over a store they must not
//! change: inspection, replay from the log alone, the state as of a past event.

use crate::codec;
use crate::error::{StoreError, StoreErrorKind};
use crate::store::{EventStore, StoredBatch};

/// A read-only view of another store. Every write fails with
/// [`StoreErrorKind::Contract`]; `sync` does nothing.
///
/// ```
/// use presence_engine::{Command, Config, Engine, ReadOnlyStore};
/// use presence_storage_mem::MemStore;
///
/// let mut engine = Engine::open(Config::default(), MemStore::new())?;
/// engine.execute(Command::login("alice", "phone"), 10)?;
/// engine.execute(Command::logout("alice", "phone"), 20)?;
/// engine.snapshot()?;
/// let store = engine.into_store();
/// // The state as of event 1, from the log alone: alice was online.
/// let past = Engine::open(Config::default(), ReadOnlyStore::log_only(&store, Some(1)))?;
/// assert_eq!(past.status("alice").general.name(), "ONLINE");
/// # Ok::<(), presence_engine::Error>(())
/// ```
#[derive(Debug)]
pub struct ReadOnlyStore<'a, S> {
    inner: &'a S,
    snapshots: bool,
    until_seq: Option<u64>,
}

impl<'a, S: EventStore> ReadOnlyStore<'a, S> {
    /// The whole store, snapshots included.
    pub fn new(inner: &'a S) -> Self {
        Self { inner, snapshots: true, until_seq: None }
    }

    /// The log without its snapshots (so an engine opened on it replays every event), cut
    /// after `until_seq` if given. A batch that straddles the cut is re-encoded with its
    /// first events only.
    pub fn log_only(inner: &'a S, until_seq: Option<u64>) -> Self {
        Self { inner, snapshots: false, until_seq }
    }
}

fn read_only() -> StoreError {
    StoreError::new(StoreErrorKind::Contract, "this view of the store is read-only")
}

/// Cuts `batch` so that it ends at `until_seq` (which it must straddle).
fn cut(batch: StoredBatch, until_seq: u64) -> Result<StoredBatch, StoreError> {
    let (_, events) = codec::decode_batch(&batch.bytes)?;
    let keep = until_seq.saturating_sub(batch.first_seq).saturating_add(1).min(events.len() as u64) as usize;
    let mut bytes = Vec::new();
    codec::encode_batch(batch.first_seq, events.get(..keep).unwrap_or_default(), &mut bytes)?;
    Ok(StoredBatch { first_seq: batch.first_seq, count: keep as u32, bytes })
}

impl<S: EventStore> EventStore for ReadOnlyStore<'_, S> {
    fn next_seq(&self) -> u64 {
        match self.until_seq {
            Some(until) => self.inner.next_seq().min(until.saturating_add(1)),
            None => self.inner.next_seq(),
        }
    }

    fn append(&mut self, _first_seq: u64, _count: u32, _bytes: &[u8]) -> Result<(), StoreError> {
        Err(read_only())
    }

    fn batch_bytes_max(&self) -> usize {
        self.inner.batch_bytes_max()
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
        match self.snapshots {
            true => self.inner.snapshots(),
            false => Ok(Vec::new()),
        }
    }

    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.snapshots {
            true => self.inner.load_snapshot(last_seq),
            false => Ok(None),
        }
    }

    fn compact(&mut self, _upto_seq: u64) -> Result<(), StoreError> {
        Err(read_only())
    }
}
