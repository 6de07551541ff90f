//! The backend contract suite (`presence_testkit::backend_suite`) on storage-sled's
//! `SledStore`: round trips, contiguity, snapshots, compaction, reopening, injected failures
//! (R7.1, R8.1), and corrupt bytes giving an error naming the sequence number, never a
//! panic. `tamper` damages a batch in sled's batches tree directly. (storage-mem runs the
//! same suite in its own tests, storage-nats on a real nats-server.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use presence_engine::StoreError;
use presence_storage_sled::{Durability, SledStore, BATCHES_TREE};
use presence_testkit::backend_suite::Backend;

/// Each `create` makes a new store in its own directory under `dir`.
struct Sled {
    dir: tempfile::TempDir,
    stores: usize,
}

impl Sled {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), stores: 0 }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join(format!("store{}", self.stores))
    }
}

impl Backend for Sled {
    type Store = SledStore;
    fn create(&mut self) -> SledStore {
        self.stores += 1;
        SledStore::open(self.path(), Durability::GroupCommit).unwrap()
    }
    fn reopen(&mut self, store: SledStore) -> Result<SledStore, StoreError> {
        drop(store);
        SledStore::open(self.path(), Durability::GroupCommit)
    }
    fn tamper(
        &mut self,
        store: SledStore,
        first_seq: u64,
        damage: &dyn Fn(&mut Vec<u8>),
    ) -> Result<SledStore, StoreError> {
        drop(store);
        {
            let db = common::open_raw(&self.path());
            let batches = db.open_tree(BATCHES_TREE).unwrap();
            let mut bytes = batches.get(first_seq.to_be_bytes()).unwrap().unwrap().to_vec();
            damage(&mut bytes);
            batches.insert(first_seq.to_be_bytes(), bytes).unwrap();
            db.flush().unwrap();
        }
        SledStore::open(self.path(), Durability::GroupCommit)
    }
}

presence_testkit::backend_suite!(on_sled, Sled::new());
