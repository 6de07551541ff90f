//! The fsync sled 0.34 leaves out.
//!
//! sled's `flush()` writes its log with `sync_file_range` on Linux, which survives a crash of
//! the process but neither flushes the disk's write cache nor the file's metadata, so it does
//! not survive a power loss or a kernel crash (spacejam/sled#1452, #1351). Values larger than
//! about a quarter of a segment (some 128 KiB with the default 512 KiB segments) go to blob
//! files that sled never syncs at all. [`DurableFiles::sync`] runs after every flush the store
//! makes for durability: an `fsync` of each new blob file and of the blob directory, then an
//! `fdatasync` of the log file.
//!
//! An ordinary sync opens nothing: the log file and the blob directory are opened once, with
//! the store, and the directory is listed only when its modification time (read through the
//! open handle, `fstat`) says its entries may have changed since the last listing. Most
//! flushes write no blob, so a process that has run out of file descriptors (a flood of
//! sockets) still syncs; the runtime stops on a failed sync, so a sync that needed a new
//! descriptor for every write would let any client that can open sockets stop it for good.
//! When a blob was written and the process has no descriptor to spare for listing the
//! directory and opening the new files, the store gives back one it keeps in reserve for
//! exactly that, and takes it again afterwards.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use presence_engine::{StoreError, StoreErrorKind};

/// How old the blob directory's modification time must be, when it is listed, for an equal
/// time at a later sync to prove that no entry changed since. A file system stamps times at
/// some granularity (a few milliseconds on ext4, up to two seconds elsewhere), so a blob
/// written just after a listing, in the same tick as the change before it, leaves the time
/// unchanged; once the stamp is older than any granularity, a later change gets a later one.
/// (A wall clock set back by more than this could hide a change: the price of opening
/// nothing per sync.)
const BLOB_DIR_SETTLED: Duration = Duration::from_secs(3);

/// The files of an on-disk store that a durable flush must sync.
#[derive(Debug)]
pub(crate) struct DurableFiles {
    log: File,
    blobs: Mutex<BlobDir>,
}

/// sled's `blobs` directory as the syncs see it.
#[derive(Debug)]
struct BlobDir {
    path: PathBuf,
    /// The directory, open since the store opened (sled creates it when it opens); `None`
    /// only if it was missing then, and opened by the first sync that finds it.
    dir: Option<File>,
    /// A second handle on the directory that nothing uses: closed to free a descriptor when
    /// the process has none left and a new blob must be synced, then opened again.
    reserve: Option<File>,
    /// Blob files already synced; sled never rewrites a blob in place.
    synced: HashSet<OsString>,
    /// The directory's modification time when it was last listed, if that time had settled
    /// ([`BLOB_DIR_SETTLED`]); while it is the same, no blob was added.
    listed: Option<SystemTime>,
    /// How many times the directory was listed (each listing takes a descriptor).
    listings: u64,
}

fn io_error(what: String, e: std::io::Error) -> StoreError {
    StoreError::with_source(StoreErrorKind::Io, what, e)
}

/// Whether `e` says the process (or the system) has no file descriptor left.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE (24) is the process's limit, ENFILE (23) the system's; std has no kind for them.
    matches!(e.raw_os_error(), Some(23 | 24))
}

impl DurableFiles {
    /// Opens the log file of the sled database in `dir` (sled has created it by now) and its
    /// blob directory, and keeps them for every sync.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let log_path = dir.join("db");
        let log = File::open(&log_path)
            .map_err(|e| io_error(format!("cannot open {} to sync it", log_path.display()), e))?;
        let path = dir.join("blobs");
        let blob_dir = match File::open(&path) {
            Ok(handle) => Some(handle),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(io_error(format!("cannot open {} to sync it", path.display()), e)),
        };
        let reserve = match &blob_dir {
            Some(_) => Some(
                File::open(&path)
                    .map_err(|e| io_error(format!("cannot open {} to sync it", path.display()), e))?,
            ),
            None => None,
        };
        let blobs =
            BlobDir { path, dir: blob_dir, reserve, synced: HashSet::new(), listed: None, listings: 0 };
        Ok(Self { log, blobs: Mutex::new(blobs) })
    }

    /// Makes what sled's flush wrote durable: new blob files and the blob directory's
    /// entries, then the log's data and size (the log may point into the blobs, so they go
    /// first).
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.blobs.lock().unwrap_or_else(PoisonError::into_inner).sync()?;
        self.log.sync_data().map_err(|e| io_error("cannot fdatasync sled's log file".into(), e))
    }
}

impl BlobDir {
    /// Syncs the blob files written since the last sync and the directory that lists them.
    fn sync(&mut self) -> Result<(), StoreError> {
        if self.dir.is_none() {
            match self.with_descriptor(|path| File::open(path)) {
                Ok(handle) => self.dir = Some(handle),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_error(format!("cannot open {}", self.path.display()), e)),
            }
        }
        let Some(dir) = &self.dir else { return Ok(()) };
        // `fstat` on the open handle: no descriptor needed.
        let modified = dir
            .metadata()
            .and_then(|m| m.modified())
            .map_err(|e| io_error(format!("cannot stat {}", self.path.display()), e))?;
        if self.listed == Some(modified) {
            return Ok(());
        }
        let now = SystemTime::now();
        self.listings += 1;
        let names = self
            .with_descriptor(|path| {
                let mut names = Vec::new();
                for entry in std::fs::read_dir(path)? {
                    let entry = entry?;
                    // sled writes only plain files there; anything else is not a blob.
                    if entry.file_type()?.is_file() {
                        names.push(entry.file_name());
                    }
                }
                Ok(names)
            })
            .map_err(|e| io_error(format!("cannot list {}", self.path.display()), e))?;
        let mut new_blobs = false;
        for name in &names {
            if self.synced.contains(name) {
                continue;
            }
            let path = self.path.join(name);
            self.with_descriptor(|_| File::open(&path).and_then(|blob| blob.sync_all()))
                .map_err(|e| io_error(format!("cannot fsync {}", path.display()), e))?;
            self.synced.insert(name.clone());
            new_blobs = true;
        }
        if new_blobs {
            if let Some(dir) = &self.dir {
                dir.sync_all().map_err(|e| io_error(format!("cannot fsync {}", self.path.display()), e))?;
            }
        }
        // sled removes blobs it no longer needs; forget them.
        let present: HashSet<&OsString> = names.iter().collect();
        self.synced.retain(|name| present.contains(name));
        let settled = now.duration_since(modified).is_ok_and(|age| age >= BLOB_DIR_SETTLED);
        self.listed = settled.then_some(modified);
        Ok(())
    }

    /// Runs `open` (which opens, uses and closes one descriptor at a time); if the process
    /// has no descriptor left, closes the reserve, runs it again, and opens the reserve
    /// anew (later, if the process still has none).
    fn with_descriptor<T>(
        &mut self,
        mut open: impl FnMut(&Path) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        if self.reserve.is_none() && self.dir.is_some() {
            self.reserve = File::open(&self.path).ok();
        }
        match open(&self.path) {
            Err(e) if out_of_descriptors(&e) && self.reserve.is_some() => {
                self.reserve = None;
                let result = open(&self.path);
                self.reserve = File::open(&self.path).ok();
                result
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What sled leaves in a store's directory: its log file and the blob directory.
    fn store_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        dir
    }

    fn listings(files: &DurableFiles) -> u64 {
        files.blobs.lock().unwrap().listings
    }

    fn synced(files: &DurableFiles) -> Vec<OsString> {
        let mut names: Vec<_> = files.blobs.lock().unwrap().synced.iter().cloned().collect();
        names.sort();
        names
    }

    /// Dates the blob directory's last change back past `BLOB_DIR_SETTLED`, as if the last
    /// blob had been written a while ago.
    fn settle(dir: &Path) {
        let blobs = File::open(dir.join("blobs")).unwrap();
        blobs.set_modified(SystemTime::now() - BLOB_DIR_SETTLED * 2).unwrap();
    }

    #[test]
    fn a_sync_lists_the_blob_directory_only_when_it_changed() {
        let dir = store_dir();
        std::fs::write(dir.path().join("blobs/100"), b"old blob").unwrap();
        settle(dir.path());
        let files = DurableFiles::open(dir.path()).unwrap();
        files.sync().unwrap();
        assert_eq!(listings(&files), 1, "the first sync lists what is there");
        assert_eq!(synced(&files), vec![OsString::from("100")]);
        for _ in 0..10 {
            files.sync().unwrap();
        }
        assert_eq!(listings(&files), 1, "nothing changed: no listing, no descriptor");

        std::fs::write(dir.path().join("blobs/200"), b"new blob").unwrap();
        files.sync().unwrap();
        assert_eq!(listings(&files), 2, "a new blob changes the directory's time");
        assert_eq!(synced(&files), vec![OsString::from("100"), OsString::from("200")]);
        files.sync().unwrap();
        assert_eq!(listings(&files), 3, "a fresh time may hide a change in the same tick: listed again");

        std::fs::remove_file(dir.path().join("blobs/100")).unwrap();
        settle(dir.path());
        files.sync().unwrap();
        assert_eq!(synced(&files), vec![OsString::from("200")], "a removed blob is forgotten");
        files.sync().unwrap();
        assert_eq!(listings(&files), 4, "settled again: no more listings");
    }

    #[test]
    fn a_store_without_a_blob_directory_syncs_and_finds_it_later() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"log").unwrap();
        let files = DurableFiles::open(dir.path()).unwrap();
        files.sync().unwrap();
        std::fs::create_dir(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/7"), b"blob").unwrap();
        files.sync().unwrap();
        assert_eq!(synced(&files), vec![OsString::from("7")]);
    }

    #[test]
    fn a_value_sled_puts_in_a_blob_file_is_synced_with_the_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let store = crate::SledStore::open(&path, crate::Durability::GroupCommit).unwrap();
        // Far over a quarter of sled's 512 KiB segment: sled writes it to a file of its own.
        store.trees.batches.insert(b"big", vec![7u8; 300 << 10]).unwrap();
        store.flush().unwrap();
        let on_disk: Vec<OsString> =
            std::fs::read_dir(path.join("blobs")).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert!(!on_disk.is_empty(), "sled wrote no blob file");
        let files = store.trees.files.as_ref().unwrap();
        for name in on_disk {
            assert!(synced(files).contains(&name), "blob {name:?} not synced");
        }
    }
}
