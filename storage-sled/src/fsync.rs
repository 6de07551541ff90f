//! The fsync sled 0.34 leaves out.
//!
//! sled's `flush()` writes its log with `sync_file_range` on Linux, which survives a crash of
//! the process but neither flushes the disk's write cache nor the file's metadata, so it does
//! not survive a power loss or a kernel crash (spacejam/sled#1452, #1351). Values larger than
//! about a quarter of a segment (some 128 KiB with the default 512 KiB segments) go to blob
//! files that sled never syncs at all. [`DurableFiles::sync`] runs after every flush the store
//! makes for durability: an `fdatasync` of the log file, and an `fsync` of each new blob file
//! and of the blob directory.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use presence_engine::{StoreError, StoreErrorKind};

/// The files of an on-disk store that a durable flush must sync.
#[derive(Debug)]
pub(crate) struct DurableFiles {
    log: File,
    blobs_dir: PathBuf,
    /// Blob files already synced; sled never rewrites a blob in place.
    synced_blobs: Mutex<HashSet<OsString>>,
}

fn io_error(what: String, e: std::io::Error) -> StoreError {
    StoreError::with_source(StoreErrorKind::Io, what, e)
}

impl DurableFiles {
    /// Opens the log file of the sled database in `dir` (sled has created it by now).
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| io_error(format!("cannot open {} to sync it", log_path.display()), e))?;
        Ok(Self { log, blobs_dir: dir.join("blobs"), synced_blobs: Mutex::new(HashSet::new()) })
    }

    /// Makes what sled's flush wrote durable: the log's data and size, new blob files and the
    /// blob directory's entries.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.log.sync_data().map_err(|e| io_error("cannot fdatasync sled's log file".into(), e))?;
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(format!("cannot list {}", self.blobs_dir.display()), e)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut present = HashSet::new();
        let mut new_blobs = false;
        for entry in entries {
            let entry =
                entry.map_err(|e| io_error(format!("cannot list {}", self.blobs_dir.display()), e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                File::open(&path)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_error(format!("cannot fsync {}", path.display()), e))?;
                new_blobs = true;
            }
            present.insert(name);
        }
        *synced = present;
        if new_blobs {
            File::open(&self.blobs_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(format!("cannot fsync {}", self.blobs_dir.display()), e))?;
        }
        Ok(())
    }
}
