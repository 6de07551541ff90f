//! What opening checks: the store's format version, the newest batch, and with
//! [`OpenOptions::repair`](crate::OpenOptions::repair) every batch.

use std::fmt;

use presence_engine::codec;
use presence_engine::{StoreError, StoreErrorKind};

use crate::layout::{
    parse_seq_key, sled_err, stored_header, Trees, BATCHES_TREE, META_FORMAT_VERSION, STORE_FORMAT_VERSION,
};

/// What a repair found and dropped. Empty when the store was sound or opened without
/// [`OpenOptions::repair`](crate::OpenOptions::repair).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Batches checked (decoded, checksummed, checked for contiguity) before stopping.
    pub batches_checked: u64,
    /// The batches deleted, oldest first: the first bad one and every one after it.
    pub dropped: Vec<DroppedBatch>,
}

/// One batch a repair deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedBatch {
    /// Its first sequence number, from its key (`None` when the key itself was damaged).
    pub first_seq: Option<u64>,
    /// How many events its header claimed, when the header was readable.
    pub events: Option<u32>,
    /// Its size in bytes.
    pub bytes_len: usize,
    /// Why it was dropped: what was wrong with it, or that it followed a bad batch.
    pub reason: String,
}

impl RepairReport {
    /// Whether nothing was dropped.
    pub fn is_clean(&self) -> bool {
        self.dropped.is_empty()
    }

    /// The events the dropped batches claimed to hold (unreadable headers count 0).
    pub fn dropped_events(&self) -> u64 {
        self.dropped.iter().filter_map(|d| d.events).map(u64::from).sum()
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "{} batches checked, nothing dropped", self.batches_checked);
        }
        writeln!(
            f,
            "{} batches checked; dropped {} batches ({} events):",
            self.batches_checked,
            self.dropped.len(),
            self.dropped_events()
        )?;
        for d in &self.dropped {
            let seq = d.first_seq.map_or_else(|| "?".to_string(), |s| s.to_string());
            writeln!(f, "  batch at sequence {seq}, {} bytes: {}", d.bytes_len, d.reason)?;
        }
        Ok(())
    }
}

/// Checks the store's format version, writing this build's into a new, empty store.
pub(crate) fn check_format_version(store: &Trees) -> Result<(), StoreError> {
    let stored = store.meta.get(META_FORMAT_VERSION).map_err(sled_err("read the meta tree"))?;
    match stored.as_deref() {
        Some([version]) if *version == STORE_FORMAT_VERSION => Ok(()),
        Some([version]) if *version > STORE_FORMAT_VERSION => Err(StoreError::new(
            StoreErrorKind::UnsupportedVersion,
            format!(
                "the store has format version {version}; this build reads up to {STORE_FORMAT_VERSION} \
                 (open it with a newer build)"
            ),
        )),
        Some(other) => {
            Err(StoreError::corrupt(format!("the store's format version is unknown: {other:02x?}")))
        }
        None => {
            let empty = store.batches.first().map_err(sled_err("read the log"))?.is_none()
                && store.snapshots.first().map_err(sled_err("list snapshots"))?.is_none();
            if !empty {
                return Err(StoreError::corrupt(
                    "the store holds batches or snapshots but no format version (not written by \
                     presence-storage-sled?)",
                ));
            }
            store
                .meta
                .insert(META_FORMAT_VERSION, &[STORE_FORMAT_VERSION])
                .map_err(sled_err("write the meta tree"))?;
            store.flush()
        }
    }
}

/// `next_seq` of an opened store: one past the newest batch, or the compaction floor when
/// that is higher. The newest batch is checked whole (header, checksum, events), since a
/// crash tears the tail if anything.
pub(crate) fn find_next_seq(store: &Trees) -> Result<u64, StoreError> {
    let floor = store.next_seq_floor()?.max(1);
    let Some((key, value)) = store.batches.last().map_err(sled_err("read the log"))? else {
        return Ok(floor);
    };
    let first_seq = parse_seq_key(&key, BATCHES_TREE)?;
    let header = stored_header(first_seq, &value)?;
    codec::decode_batch(&value).map_err(|e| match e.kind() {
        StoreErrorKind::Corrupt => StoreError::corrupt(format!(
            "the newest batch, at sequence {first_seq}, is torn or corrupt ({}); open with \
             OpenOptions::repair to drop it",
            e.message()
        )),
        _ => e,
    })?;
    // `stored_header` checked that this cannot overflow.
    Ok((first_seq + u64::from(header.count)).max(floor))
}

/// Checks one batch whole. A newer version is an error to pass up, not a reason to drop.
fn check_batch(key: &[u8], value: &[u8], expected: Option<u64>) -> Result<u64, (StoreError, Option<u32>)> {
    let first_seq = parse_seq_key(key, BATCHES_TREE).map_err(|e| (e, None))?;
    let header = stored_header(first_seq, value).map_err(|e| (e, None))?;
    let events = Some(header.count);
    if let Some(expected) = expected {
        if first_seq != expected {
            let gap = StoreError::corrupt(format!(
                "batch at sequence {first_seq} does not follow the previous batch, which ends at {}",
                expected.saturating_sub(1)
            ));
            return Err((gap, events));
        }
    }
    codec::decode_batch(value).map_err(|e| (e, events))?;
    Ok(first_seq + u64::from(header.count))
}

/// Checks every batch in order; deletes the first bad one and all after it (newest first, so
/// a crash midway leaves a shorter bad tail that the next repair finishes), and sets the
/// compaction floor to where the log now continues.
pub(crate) fn repair(store: &Trees) -> Result<RepairReport, StoreError> {
    let mut report = RepairReport::default();
    let mut expected: Option<u64> = None;
    let mut bad: Vec<sled::IVec> = Vec::new();
    for item in store.batches.iter() {
        let (key, value) = item.map_err(sled_err("read the log"))?;
        if bad.is_empty() {
            match check_batch(&key, &value, expected) {
                Ok(end) => {
                    expected = Some(end);
                    report.batches_checked += 1;
                    continue;
                }
                Err((e, _)) if e.kind() == StoreErrorKind::UnsupportedVersion => return Err(e),
                Err((e, events)) => {
                    report.batches_checked += 1;
                    report.dropped.push(dropped(&key, value.len(), events, e.to_string()));
                }
            }
        } else {
            let events = codec::batch_header(&value).ok().map(|h| h.count);
            report.dropped.push(dropped(&key, value.len(), events, "follows a dropped batch".into()));
        }
        bad.push(key);
    }
    if bad.is_empty() {
        return Ok(report);
    }
    // Where the log continues: after the last sound batch, else at the first dropped batch
    // (the events before it were compacted), and never inside the newest snapshot.
    let continues_at = expected.or_else(|| report.dropped.first().and_then(|d| d.first_seq)).unwrap_or(1);
    let after_snapshot = store.snapshot_seqs()?.last().map_or(1, |&s| s.saturating_add(1));
    for key in bad.iter().rev() {
        store.batches.remove(key).map_err(sled_err("drop a bad batch"))?;
    }
    store.set_next_seq_floor(continues_at.max(after_snapshot))?;
    store.flush()?;
    Ok(report)
}

fn dropped(key: &[u8], bytes_len: usize, events: Option<u32>, reason: String) -> DroppedBatch {
    let first_seq = parse_seq_key(key, BATCHES_TREE).ok();
    DroppedBatch { first_seq, events, bytes_len, reason }
}
