//! [`SledStore`]: the [`EventStore`] on sled.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use presence_engine::{check_contiguous, EventStore, StoreError, StoreErrorKind, StoredBatch};

use crate::fsync::DurableFiles;
use crate::layout::{parse_seq_key, seq_key, sled_err, sled_error, stored_header, Trees, BATCHES_TREE};
use crate::options::{Durability, OpenOptions};
use crate::recover::{self, RepairReport};

/// A durable [`EventStore`] on sled: one key per batch, snapshots in their own tree.
///
/// Open it with a [`Durability`]; hand it to `Engine::open`, which recovers from the newest
/// usable snapshot and replays the batches after it. Dropping the store flushes everything
/// (sled flushes when its last handle goes), so a clean shutdown loses nothing in any mode.
/// Only one `SledStore` (in any process) may have a path open at a time; a second open
/// waits up to two seconds for the lock (sled releases it a moment after a store is
/// dropped), then fails with [`StoreErrorKind::Io`].
#[derive(Debug)]
pub struct SledStore {
    pub(crate) trees: Trees,
    durability: Durability,
    next_seq: u64,
    path: Option<PathBuf>,
}

impl SledStore {
    /// Opens (creating if needed) the store in directory `path` with `durability` and the
    /// other [`OpenOptions`] at their defaults (no repair).
    ///
    /// Fails with [`StoreErrorKind::UnsupportedVersion`] for a store or a newest batch
    /// written by a newer format, with [`StoreErrorKind::Corrupt`] naming the sequence number
    /// for a torn or corrupt newest batch (see [`OpenOptions::repair`]), and with
    /// [`StoreErrorKind::Io`] when sled cannot open the files (for example because another
    /// process holds them).
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<SledStore, StoreError> {
        Self::open_with(path, OpenOptions::new(durability)).map(|(store, _)| store)
    }

    /// Opens (creating if needed) the store in directory `path` with `options`, and reports
    /// what a repair dropped (an empty report without [`OpenOptions::repair`]).
    pub fn open_with(
        path: impl AsRef<Path>,
        options: OpenOptions,
    ) -> Result<(SledStore, RepairReport), StoreError> {
        let path = path.as_ref();
        let config = sled::Config::new().path(path);
        Self::open_config(config, &options, Some(path.to_path_buf()))
    }

    /// A store in sled's temporary mode: its files are deleted when it is dropped. For tests
    /// and benchmarks.
    pub fn temporary(durability: Durability) -> Result<SledStore, StoreError> {
        let config = sled::Config::new().temporary(true);
        Self::open_config(config, &OpenOptions::new(durability), None).map(|(store, _)| store)
    }

    fn open_config(
        config: sled::Config,
        options: &OpenOptions,
        path: Option<PathBuf>,
    ) -> Result<(SledStore, RepairReport), StoreError> {
        let config =
            config.flush_every_ms(options.flush_every_ms).cache_capacity(options.cache_capacity_bytes);
        let db = open_db(&config, path.as_deref())?;
        let files = match options.fsync {
            true => path.as_deref().map(DurableFiles::open).transpose()?.map(Box::new),
            false => None,
        };
        let trees = Trees::open(db, files)?;
        recover::check_format_version(&trees)?;
        let report = match options.repair {
            true => recover::repair(&trees)?,
            false => RepairReport::default(),
        };
        let next_seq = recover::find_next_seq(&trees)?;
        Ok((SledStore { trees, durability: options.durability, next_seq, path }, report))
    }

    /// The directory the store lives in (`None` for a [temporary](SledStore::temporary) one).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The durability the store was opened with.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The bytes sled's files take on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.trees.db.size_on_disk().map_err(sled_err("measure its size on disk"))
    }

    /// How many batches the log holds (an O(batches) scan).
    pub fn batch_count(&self) -> u64 {
        self.trees.batches.iter().keys().count() as u64
    }

    /// Flushes everything written so far to disk, whatever the [`Durability`]: sled's
    /// `flush()`, then (with [`OpenOptions::fsync`], the default) an fdatasync of its log
    /// file and an fsync of new blob files, which sled 0.34 leaves out: its flush survives a
    /// process crash, not a power loss.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.trees.flush()
    }

    fn stored_batch(key: &[u8], value: &[u8]) -> Result<StoredBatch, StoreError> {
        let first_seq = parse_seq_key(key, BATCHES_TREE)?;
        let header = stored_header(first_seq, value)?;
        Ok(StoredBatch { first_seq, count: header.count, bytes: value.to_vec() })
    }
}

/// How long an open waits for the file lock of a store that was just closed: sled 0.34
/// releases it from a background thread a moment after the last handle is dropped.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Opens sled, turning its panics into errors and waiting out a lock still held by a store
/// this process just closed.
fn open_db(config: &sled::Config, path: Option<&Path>) -> Result<sled::Db, StoreError> {
    let started = Instant::now();
    loop {
        // sled 0.34 asserts on some damage it finds while recovering its own files; a damaged
        // store must give an error, not take the host down with it.
        let opened = catch_unwind(AssertUnwindSafe(|| config.open())).map_err(|_| {
            StoreError::corrupt(format!(
                "sled panicked while opening {}: its files are damaged",
                path.map_or_else(|| "a temporary store".into(), |p| p.display().to_string())
            ))
        })?;
        match opened {
            Err(e) if is_lock_error(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if is_lock_error(&e) => {
                return Err(sled_error("open the store (another process is using it)", e));
            }
            other => return other.map_err(sled_err("open the store")),
        }
    }
}

impl EventStore for SledStore {
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Stores `bytes` under `first_seq`. Besides the trait's checks it refuses, with
    /// [`StoreErrorKind::Contract`], bytes whose codec header does not say `first_seq` and
    /// `count`: the header is how a reopened store finds `next_seq`.
    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError> {
        check_contiguous(self.next_seq, first_seq, count)?;
        match stored_header(first_seq, bytes) {
            Ok(header) if header.count == count => {}
            Ok(header) => {
                return Err(StoreError::new(
                    StoreErrorKind::Contract,
                    format!("append of {count} events at {first_seq} whose header says {}", header.count),
                ))
            }
            Err(e) => {
                return Err(StoreError::new(
                    StoreErrorKind::Contract,
                    format!("append at {first_seq} of bytes that are not a codec batch: {e}"),
                ))
            }
        }
        let key = seq_key(first_seq);
        self.trees.batches.insert(key, bytes).map_err(sled_err("append a batch"))?;
        if self.durability.flushes_on_append() {
            if let Err(e) = self.flush() {
                // The batch may or may not reach the disk; `next_seq` stays put, so the
                // caller's retry at the same sequence number overwrites this key.
                let _ = self.trees.batches.remove(key);
                return Err(e);
            }
        }
        self.next_seq = first_seq + u64::from(count);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        match self.durability.flushes_on_sync() {
            true => self.flush(),
            false => Ok(()),
        }
    }

    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        // The batch holding `from_seq` is the last one keyed at or before it.
        let start = match self.trees.batches.range(..=seq_key(from_seq)).next_back() {
            None => 0,
            Some(item) => parse_seq_key(&item.map_err(sled_err("read the log"))?.0, BATCHES_TREE)?,
        };
        let batches = self.trees.batches.range(seq_key(start)..).filter_map(move |item| {
            let batch = item
                .map_err(sled_err("read the log"))
                .and_then(|(key, value)| SledStore::stored_batch(&key, &value));
            match batch {
                Ok(batch) if batch.last_seq() < from_seq => None,
                other => Some(other),
            }
        });
        Ok(Box::new(batches))
    }

    /// Stores the snapshot and flushes (in every mode). On error it is not listed.
    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let key = seq_key(last_seq);
        self.trees.snapshots.insert(key, bytes).map_err(sled_err("save a snapshot"))?;
        if let Err(e) = self.flush() {
            let _ = self.trees.snapshots.remove(key);
            return Err(e);
        }
        Ok(())
    }

    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        self.trees.snapshot_seqs()
    }

    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.trees.snapshots.get(seq_key(last_seq)).map_err(sled_err("load a snapshot"))?;
        Ok(value.map(|v| v.to_vec()))
    }

    /// Removes what the trait says, in an order that keeps the store recoverable if the
    /// process dies midway, each step flushed before the next starts:
    /// 1. the compaction floor (`next_seq`) is written, so `next_seq` survives the removal of
    ///    every batch, and the snapshots older than `upto_seq` are removed, so no snapshot is
    ///    ever left in front of a gap;
    /// 2. the covered batches are removed oldest first, so what remains is a contiguous tail
    ///    after the snapshot at `upto_seq` (or later).
    ///
    /// Refuses with [`StoreErrorKind::Contract`] when no snapshot covers `upto_seq`, since
    /// the removed events would be lost.
    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError> {
        let covered = self.snapshots()?.last().is_some_and(|&newest| newest >= upto_seq);
        if !covered {
            return Err(StoreError::new(
                StoreErrorKind::Contract,
                format!("compaction up to {upto_seq} without a snapshot covering it would lose events"),
            ));
        }
        if self.trees.next_seq_floor()? < self.next_seq {
            self.trees.set_next_seq_floor(self.next_seq)?;
        }
        for key in self.trees.snapshots.range(..seq_key(upto_seq)).keys() {
            let key = key.map_err(sled_err("list snapshots"))?;
            self.trees.snapshots.remove(key).map_err(sled_err("remove an old snapshot"))?;
        }
        self.flush()?;
        // A batch is covered when the next one (or the end of the log) starts at or before
        // `upto_seq + 1`; keys alone tell, so a damaged value cannot stop a compaction.
        let mut keys = self.trees.batches.iter().keys();
        let mut current = keys.next().transpose().map_err(sled_err("read the log"))?;
        while let Some(key) = current {
            let next = keys.next().transpose().map_err(sled_err("read the log"))?;
            let next_first = match &next {
                Some(next_key) => parse_seq_key(next_key, BATCHES_TREE)?,
                None => self.next_seq,
            };
            if next_first > upto_seq.saturating_add(1) {
                break;
            }
            self.trees.batches.remove(&key).map_err(sled_err("remove a compacted batch"))?;
            current = next;
        }
        self.flush()
    }
}
