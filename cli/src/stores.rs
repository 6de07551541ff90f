//! Opening an existing store for `inspect` and `replay`.

use std::path::Path;

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
