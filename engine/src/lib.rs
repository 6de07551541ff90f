//! An event-sourced presence engine, after the "user status" feature of Tencent Cloud Chat.
//!
//! A chat or game server feeds the [`Engine`] commands ([`Command`]) and clock ticks, each
//! with the time; the engine answers with a result, appends the facts to an event log
//! ([`EventStore`]), keeps the derived state, and hands back the [`Notice`]s the host must
//! push to devices. The rules it follows are SPEC.md's, cited by number (`R4.3`) throughout.
//!
//! This crate is the pure core: commands, decide, apply, state, events, codec, the store
//! trait and the shard map. It imports no other presence crate (its tests may use
//! `presence-storage-mem`); it starts no thread, reads no clock (the host passes the time)
//! and does no I/O but through the [`EventStore`] the host gives it. Running engines on
//! threads (turns, group commit, the snapshot policy, the shards of a deployment in one
//! process) is `presence-runtime`'s job; the repository test `conformance/tests/repository.rs`
//! enforces the crate graph.
//!
//! ```
//! use presence_engine::{Command, Config, Engine, GeneralStatus};
//! use presence_storage_mem::MemStore;
//!
//! let mut engine = Engine::open(Config::default(), MemStore::new())?;
//! engine.execute(Command::login("alice", "phone"), 0)?;
//! engine.execute(Command::login("bob", "pc"), 10)?;
//! let out = engine.execute(Command::subscribe("bob", "pc", ["alice"]), 20)?;
//! assert_eq!(out.statuses()[0].status.general, GeneralStatus::Online);
//!
//! // Alice's phone goes quiet: 400 s later a tick disconnects it (R2.4) and bob hears.
//! let out = engine.tick(400_000)?;
//! let told: Vec<_> = engine.deliveries(&out).collect();
//! assert_eq!(told.len(), 1);
//! assert_eq!(engine.status("alice").general, GeneralStatus::Offline);
//! # Ok::<(), presence_engine::Error>(())
//! ```
//!
//! The core is split as event-sourcing libraries split it: `decide` validates a command
//! against the state and returns events or an error, without changing anything; the events
//! are appended to the store; `apply` folds them into the state, and is the same function
//! replay uses, so live state and replayed state cannot drift (R8.1).

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod change;
pub mod codec;
mod command;
mod command_wire;
mod config;
mod decide;
mod engine;
mod error;
mod event;
mod fanout;
mod ids;
mod limits;
mod notice;
mod read_only;
mod shard;
mod snapshot;
mod state;
mod status;
mod store;

pub use change::{Cause, CauseKind, StatusChange};
pub use command::{Command, Outcome, Reply, TargetStatus};
pub use config::{Config, Edition};
pub use engine::{
    CapturedSnapshot, EncodedSnapshot, Engine, EngineId, EngineOptions, EngineView, Group, Recovery,
    RemoteObserved, RestoredSessions, SessionHandle, SessionView, Stats, UserView,
};
pub use error::{Error, StoreError, StoreErrorKind};
pub use event::{CloseReason, DisconnectReason, Event, EventKind, UnsubscribeReason};
pub use ids::{check_user_id, DeviceId, DeviceKey, OwnerId, UserId, UserKey};
pub use limits::{
    BATCH_BYTES_MAX, CONFIG_LIMIT_MAX, DISCONNECT_SESSIONS_MAX, OWNER_BYTES_MAX, SNAPSHOT_BYTES_MAX,
    TICK_EVENTS_MAX, TICK_TARGETS_MAX, TIME_MS_MAX,
};
pub use notice::{deliveries, delivery_count, Delivery, Names, Notice, Recipient, StatusNotice};
pub use read_only::ReadOnlyStore;
pub use shard::{fnv1a64, Manifest, RemoteStatuses, ShardMap, ShardOf};
pub use snapshot::{LogicalState, SessionRecord, Snapshot, UserRecord};
pub use state::HeapBytes;
pub use status::{GeneralStatus, LastOnline, UserStatus};
pub use store::{check_contiguous, EventStore, StoredBatch};
