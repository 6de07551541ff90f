//! The names, keys and value shapes the store writes into sled (docs/FORMAT.md), and the
//! mapping of sled's errors.

use presence_engine::codec::{self, BatchHeader};
use presence_engine::{StoreError, StoreErrorKind};

use crate::fsync::DurableFiles;

/// The tree holding one entry per appended batch: key the batch's first sequence number
/// (8 bytes, big-endian, so sled's byte order is sequence order), value the codec's bytes.
pub const BATCHES_TREE: &str = "batches";

/// The tree holding snapshots: key the last sequence number covered (8 bytes, big-endian),
/// value the codec's snapshot bytes.
pub const SNAPSHOTS_TREE: &str = "snapshots";

/// The tree holding the store's own metadata (format version, compaction floor).
pub const META_TREE: &str = "meta";

/// The version of the store's layout (trees and keys) written by this build. A store with a
/// higher version is refused with [`StoreErrorKind::UnsupportedVersion`]. The codec's
/// version byte inside every batch and snapshot is versioned separately.
pub const STORE_FORMAT_VERSION: u8 = 1;

/// Meta key: one byte, [`STORE_FORMAT_VERSION`] of the writer.
pub(crate) const META_FORMAT_VERSION: &[u8] = b"format_version";

/// Meta key: 8 bytes big-endian, a lower bound for `next_seq` written before compaction
/// removes batches, so that `next_seq` survives the removal of every batch.
pub(crate) const META_NEXT_SEQ_FLOOR: &[u8] = b"next_seq_floor";

/// The key of the batch or snapshot at `seq`.
pub(crate) fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Reads a sequence-number key; `tree` names the tree for the error.
pub(crate) fn parse_seq_key(key: &[u8], tree: &str) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| {
        StoreError::corrupt(format!(
            "tree {tree:?} holds a {}-byte key {key:02x?}; keys are 8-byte sequence numbers",
            key.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Reads the header of the batch stored under `seq` and checks that it agrees with its key.
/// The error names the sequence number and keeps the codec's kind (a newer version stays
/// [`StoreErrorKind::UnsupportedVersion`]).
pub(crate) fn stored_header(seq: u64, bytes: &[u8]) -> Result<BatchHeader, StoreError> {
    let header = codec::batch_header(bytes)
        .map_err(|e| StoreError::new(e.kind(), format!("batch at sequence {seq}: {}", e.message())))?;
    if header.first_seq != seq || header.count == 0 || seq.checked_add(u64::from(header.count)).is_none() {
        return Err(StoreError::corrupt(format!(
            "batch stored at sequence {seq} says it starts at {} with {} events",
            header.first_seq, header.count
        )));
    }
    Ok(header)
}

/// Wraps one of sled's errors. sled's own corruption report becomes
/// [`StoreErrorKind::Corrupt`]; everything else (I/O, a lock held by another process, an
/// unsupported use, a bug report) is [`StoreErrorKind::Io`].
pub(crate) fn sled_error(what: &str, e: sled::Error) -> StoreError {
    let kind = match e {
        sled::Error::Corruption { .. } => StoreErrorKind::Corrupt,
        _ => StoreErrorKind::Io,
    };
    StoreError::with_source(kind, format!("sled failed to {what}"), e)
}

/// A closure for `map_err` that wraps sled's error with what was being done.
pub(crate) fn sled_err(what: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| sled_error(what, e)
}

/// Reads the 8-byte big-endian value of a meta key.
pub(crate) fn parse_u64_value(value: &[u8], key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        StoreError::corrupt(format!(
            "meta key {:?} holds {} bytes, not 8",
            String::from_utf8_lossy(key),
            value.len()
        ))
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// The database and its three trees: what the store and its recovery both work on.
#[derive(Debug)]
pub(crate) struct Trees {
    pub db: sled::Db,
    pub batches: sled::Tree,
    pub snapshots: sled::Tree,
    pub meta: sled::Tree,
    /// What a durable flush syncs beyond sled's own flush (`None` for a temporary store or
    /// without `OpenOptions::fsync`). Boxed: a store handle stays small (hosts keep it in
    /// enums beside other stores).
    pub files: Option<Box<DurableFiles>>,
}

impl Trees {
    /// Opens the three trees of `db`.
    pub(crate) fn open(db: sled::Db, files: Option<Box<DurableFiles>>) -> Result<Self, StoreError> {
        let batches = db.open_tree(BATCHES_TREE).map_err(sled_err("open the batches tree"))?;
        let snapshots = db.open_tree(SNAPSHOTS_TREE).map_err(sled_err("open the snapshots tree"))?;
        let meta = db.open_tree(META_TREE).map_err(sled_err("open the meta tree"))?;
        Ok(Self { db, batches, snapshots, meta, files })
    }

    /// Flushes everything written so far to disk: sled's `flush()`, then the syncs it
    /// leaves out (see `fsync.rs`).
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(sled_err("flush to disk"))?;
        match &self.files {
            Some(files) => files.sync(),
            None => Ok(()),
        }
    }

    /// The compaction floor: `next_seq` as it was when batches were last removed (0: never).
    pub(crate) fn next_seq_floor(&self) -> Result<u64, StoreError> {
        match self.meta.get(META_NEXT_SEQ_FLOOR).map_err(sled_err("read the meta tree"))? {
            None => Ok(0),
            Some(value) => parse_u64_value(&value, META_NEXT_SEQ_FLOOR),
        }
    }

    pub(crate) fn set_next_seq_floor(&self, floor: u64) -> Result<(), StoreError> {
        self.meta
            .insert(META_NEXT_SEQ_FLOOR, &floor.to_be_bytes())
            .map(|_| ())
            .map_err(sled_err("write the meta tree"))
    }

    /// The sequence numbers of the stored snapshots, oldest first.
    pub(crate) fn snapshot_seqs(&self) -> Result<Vec<u64>, StoreError> {
        self.snapshots
            .iter()
            .keys()
            .map(|key| parse_seq_key(&key.map_err(sled_err("list snapshots"))?, SNAPSHOTS_TREE))
            .collect()
    }
}
