//! The backend contract suite (`presence_testkit::backend_suite`) on `MemStore`: the same
//! contracts every backend keeps, with `tamper` editing the stored bytes in place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use presence_engine::StoreError;
use presence_storage_mem::MemStore;
use presence_testkit::backend_suite::Backend;

struct Mem;

impl Backend for Mem {
    type Store = MemStore;
    fn create(&mut self) -> MemStore {
        MemStore::new()
    }
    fn reopen(&mut self, store: MemStore) -> Result<MemStore, StoreError> {
        Ok(store)
    }
    fn tamper(
        &mut self,
        mut store: MemStore,
        first_seq: u64,
        damage: &dyn Fn(&mut Vec<u8>),
    ) -> Result<MemStore, StoreError> {
        let batch = store.batches_mut().iter_mut().find(|b| b.first_seq == first_seq).unwrap();
        damage(&mut batch.bytes);
        Ok(store)
    }
}

presence_testkit::backend_suite!(on_mem, Mem);
