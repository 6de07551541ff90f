//! Helpers shared by the integration tests: the seeded load and pre-encoded batches of
//! `presence_testkit::load`, and a raw open of a store's sled database.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub use presence_testkit::load::*;

/// Opens a store's sled database directly, to damage or inspect it behind the store's back.
/// sled 0.34 releases its file lock from a background thread a moment after a store is
/// dropped, so this waits for it as `SledStore::open` does.
pub fn open_raw(path: &std::path::Path) -> sled::Db {
    let started = std::time::Instant::now();
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(e) if started.elapsed() < std::time::Duration::from_secs(5) => {
                assert!(e.to_string().contains("could not acquire lock"), "{e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}
