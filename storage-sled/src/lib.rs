//! Durable event store for `presence-engine` on [sled](https://docs.rs/sled/0.34.7) `=0.34.7`.
//!
//! [`SledStore`] implements the engine's [`EventStore`] with one sled key per appended batch
//! (its first sequence number, big-endian) whose value is the batch exactly as the engine's
//! [`codec`](presence_engine::codec) encoded it. Storing a batch, not an event, per key is
//! what lets group commit reach a million commands per second where sled itself takes about
//! 100 000 inserts per second. Snapshots live in their own tree, keyed by the sequence number
//! they cover, and a small metadata tree holds the store's format version. `docs/FORMAT.md`
//! in the repository describes the layout byte by byte.
//!
//! How durable an acknowledged append is depends on the [`Durability`] the store was opened
//! with. Opening checks the format version and the newest batch; a torn or corrupt batch is
//! an error naming its sequence number, and [`OpenOptions::repair`] truncates such a tail,
//! reporting what it dropped in a [`RepairReport`].
//!
//! ```
//! use presence_engine::{Command, Config, Engine, GeneralStatus};
//! use presence_storage_sled::{Durability, SledStore};
//!
//! let dir = tempfile::tempdir()?;
//! let store = SledStore::open(dir.path().join("presence"), Durability::GroupCommit)?;
//! let mut engine = Engine::open(Config::default(), store)?;
//! engine.execute(Command::login("alice", "phone"), 0)?;
//! engine.sync()?; // group commit: one sync makes every earlier append durable
//! drop(engine);
//!
//! // Reopening replays the log.
//! let store = SledStore::open(dir.path().join("presence"), Durability::GroupCommit)?;
//! let engine = Engine::open(Config::default(), store)?;
//! assert_eq!(engine.status("alice").general, GeneralStatus::Online);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod deployment;
mod fsync;
mod layout;
mod options;
mod recover;
mod store;

pub use deployment::{is_deployment, open_deployment, shard_dir, MANIFEST_FILE};
pub use layout::{BATCHES_TREE, META_TREE, SNAPSHOTS_TREE, STORE_FORMAT_VERSION};
pub use options::{Durability, OpenOptions};
pub use recover::{DroppedBatch, RepairReport};
pub use store::SledStore;

#[doc(no_inline)]
pub use presence_engine::{EventStore, StoreError, StoreErrorKind, StoredBatch};
