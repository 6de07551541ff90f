//! The storage plugin boundary.
//!
//! A backend stores opaque, already-encoded batches and snapshots; the engine's
//! [`codec`](crate::codec) is the only thing that knows what is inside them, so every backend
//! holds the same bytes.

use crate::error::StoreError;

/// One appended batch as a backend hands it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBatch {
    /// The sequence number of the batch's first event.
    pub first_seq: u64,
    /// How many events it holds (at least 1).
    pub count: u32,
    /// The bytes given to [`EventStore::append`], unchanged.
    pub bytes: Vec<u8>,
}

impl StoredBatch {
    /// The sequence number of the batch's last event.
    pub fn last_seq(&self) -> u64 {
        self.first_seq.saturating_add(u64::from(self.count)).saturating_sub(1)
    }
}

/// The contiguity check of [`EventStore::append`], for backends: `first_seq` must continue
/// the log at `next_seq`, and a batch holds at least one event.
pub fn check_contiguous(next_seq: u64, first_seq: u64, count: u32) -> Result<(), StoreError> {
    if first_seq != next_seq || count == 0 {
        return Err(StoreError::new(
            crate::StoreErrorKind::Contract,
            format!("append of {count} events at {first_seq}, but the log continues at {next_seq}"),
        ));
    }
    Ok(())
}

/// An append-only log of event batches with snapshots: the contract every backend keeps.
///
/// Sequence numbers start at 1 and are contiguous: a batch of `count` events starting at `s`
/// covers `s..s + count`, and the next batch starts at `s + count`. `0` means "nothing".
pub trait EventStore {
    /// One past the sequence number of the last stored event (1 for an empty store). After
    /// [`compact`](EventStore::compact) it still counts the removed events.
    fn next_seq(&self) -> u64;

    /// Appends one batch atomically: after a crash either the whole batch is there or none of
    /// it. `first_seq` must equal [`next_seq`](EventStore::next_seq) and `count` must be at
    /// least 1, else the call fails with [`StoreErrorKind::Contract`](crate::StoreErrorKind)
    /// and stores nothing. On any error nothing was stored and `next_seq` is unchanged.
    ///
    /// `bytes` is a batch as [`codec::encode_batch`](crate::codec::encode_batch) writes it; a
    /// backend may read its header (for example to find `next_seq` again after a restart) and
    /// refuse bytes whose header does not match `first_seq` and `count`.
    ///
    /// How durable an acknowledged append is depends on the backend's configured mode; in
    /// its durable modes it is durable at the latest after the next successful
    /// [`sync`](EventStore::sync).
    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError>;

    /// The most bytes one appended batch may take in this store; a larger one is refused
    /// with [`StoreErrorKind::TooLarge`](crate::StoreErrorKind) before anything is stored.
    /// The engine keeps the batches it makes by itself (a tick's) under it. The default is
    /// the codec's own limit, [`BATCH_BYTES_MAX`](crate::BATCH_BYTES_MAX) plus the header.
    fn batch_bytes_max(&self) -> usize {
        crate::codec::BATCH_HEADER_BYTES + crate::BATCH_BYTES_MAX
    }

    /// Makes every batch appended so far durable (for example an fsync). In the backend's
    /// durable modes a successful return means no acknowledged batch is lost by a crash; a
    /// backend may offer a mode that relaxes this and must say so. An error means nothing
    /// about earlier batches is promised until a later `sync` succeeds.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Reads the batches that hold events `>= from_seq`, in order: the first one returned may
    /// start before `from_seq` (the batch containing it). Events removed by compaction are
    /// not returned; the caller checks contiguity.
    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError>;

    /// Stores a snapshot that covers every event up to and including `last_seq`. A snapshot
    /// at the same `last_seq` is replaced. The snapshot must be durable when this returns
    /// without error.
    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError>;

    /// The `last_seq` of every stored snapshot, oldest first.
    fn snapshots(&self) -> Result<Vec<u64>, StoreError>;

    /// The bytes of the snapshot at `last_seq`, if there is one.
    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes the batches whose every event is `<= upto_seq`, and the snapshots older than
    /// `upto_seq`. The caller only compacts up to a snapshot it has saved. A crash midway
    /// leaves a store that still recovers: batches are removed oldest first, so what remains
    /// is a contiguous tail after the snapshot.
    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError>;
}

impl<S: EventStore + ?Sized> EventStore for Box<S> {
    fn next_seq(&self) -> u64 {
        (**self).next_seq()
    }
    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError> {
        (**self).append(first_seq, count, bytes)
    }
    fn batch_bytes_max(&self) -> usize {
        (**self).batch_bytes_max()
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        (**self).sync()
    }
    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        (**self).read_from(from_seq)
    }
    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        (**self).save_snapshot(last_seq, bytes)
    }
    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        (**self).snapshots()
    }
    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).load_snapshot(last_seq)
    }
    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError> {
        (**self).compact(upto_seq)
    }
}
