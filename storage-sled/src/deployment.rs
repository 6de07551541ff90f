//! A sharded deployment on sled (docs/FORMAT.md): one directory holding a manifest file,
//! `deployment`, that fixes the number of shards, and one sled store per shard in
//! `shard-000`, `shard-001`, ...

use std::path::{Path, PathBuf};

use presence_engine::{Manifest, StoreError, StoreErrorKind};

use crate::options::Durability;
use crate::store::SledStore;

/// The manifest's file name in a deployment directory.
pub const MANIFEST_FILE: &str = "deployment";

/// The directory of shard `index` in a deployment directory.
pub fn shard_dir(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("shard-{index:03}"))
}

/// Whether `dir` holds a sharded deployment (its manifest file).
pub fn is_deployment(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
}

/// Opens the deployment in `dir`, creating it with `shards` shards if `dir` is missing or
/// empty. Returns the shard count and one store per shard, in order, opened in parallel.
///
/// With `shards` given, an existing deployment must have that many (a user's shard is fixed
/// when the deployment is created: [`StoreErrorKind::Contract`] otherwise); with `None`, it
/// opens whatever count the manifest says, and creates nothing. A directory that holds
/// something else (a single store, other files) is refused.
pub fn open_deployment(
    dir: &Path,
    shards: Option<u32>,
    durability: Durability,
) -> Result<(u32, Vec<SledStore>), StoreError> {
    let io = |what: &str, e: std::io::Error| {
        StoreError::with_source(StoreErrorKind::Io, format!("{}: {what}", dir.display()), e)
    };
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = if manifest_path.is_file() {
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| io("cannot read the manifest", e))?;
        let manifest = Manifest::parse(&text).map_err(|e| {
            StoreError::new(e.kind(), format!("{}: {}", manifest_path.display(), e.message()))
        })?;
        if let Some(shards) = shards {
            manifest
                .check(shards)
                .map_err(|e| StoreError::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        manifest
    } else {
        let Some(shards) = shards.filter(|&s| s >= 1) else {
            return Err(StoreError::new(
                StoreErrorKind::Contract,
                format!("{}: not a sharded deployment (no {MANIFEST_FILE} file)", dir.display()),
            ));
        };
        let empty = match std::fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(io("cannot read the directory", e)),
        };
        if !empty {
            return Err(StoreError::new(
                StoreErrorKind::Contract,
                format!(
                    "{}: not empty and not a sharded deployment (a single store? other files?): \
                     refusing to create one there",
                    dir.display()
                ),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory", e))?;
        let manifest = Manifest { shards };
        // Written whole, then renamed: a crash leaves no half manifest.
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        std::fs::write(&tmp, manifest.to_text()).map_err(|e| io("cannot write the manifest", e))?;
        std::fs::rename(&tmp, &manifest_path).map_err(|e| io("cannot write the manifest", e))?;
        manifest
    };
    let stores = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..manifest.shards)
            .map(|index| scope.spawn(move || SledStore::open(shard_dir(dir, index), durability)))
            .collect();
        opening
            .into_iter()
            .enumerate()
            .map(|(index, thread)| match thread.join() {
                Ok(Ok(store)) => Ok(store),
                Ok(Err(e)) => Err(StoreError::new(e.kind(), format!("shard {index}: {e}"))),
                Err(_) => {
                    Err(StoreError::new(StoreErrorKind::Io, format!("shard {index}: opening panicked")))
                }
            })
            .collect::<Result<Vec<_>, _>>()
    })?;
    Ok((manifest.shards, stores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_engine::EventStore;

    #[test]
    fn a_deployment_is_created_once_and_reopened_only_with_its_shard_count() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("deployment");
        let (count, stores) = open_deployment(&dir, Some(3), Durability::GroupCommit).unwrap();
        assert_eq!((count, stores.len()), (3, 3));
        assert!(is_deployment(&dir));
        assert!(shard_dir(&dir, 2).join("db").is_file());
        drop(stores);
        let refused = open_deployment(&dir, Some(4), Durability::GroupCommit).unwrap_err();
        assert_eq!(refused.kind(), StoreErrorKind::Contract);
        assert!(refused.to_string().contains("has 3 shards and cannot be opened with 4"), "{refused}");
        let (count, stores) = open_deployment(&dir, None, Durability::GroupCommit).unwrap();
        assert_eq!(count, 3);
        assert_eq!(stores[0].next_seq(), 1);
    }

    #[test]
    fn a_directory_that_holds_something_else_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let single = tmp.path().join("single");
        drop(SledStore::open(&single, Durability::GroupCommit).unwrap());
        let refused = open_deployment(&single, Some(2), Durability::GroupCommit).unwrap_err();
        assert!(refused.to_string().contains("not empty and not a sharded deployment"), "{refused}");
        let missing = open_deployment(&tmp.path().join("none"), None, Durability::GroupCommit).unwrap_err();
        assert!(missing.to_string().contains("not a sharded deployment"), "{missing}");
        assert!(!tmp.path().join("none").exists(), "opening without a count creates nothing");
    }
}
