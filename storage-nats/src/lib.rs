//! Replicated event store for `presence-engine` on NATS JetStream (nats-server 2.9.10 and
//! later).
//!
//! [`NatsStore`] implements the engine's [`EventStore`] on one JetStream stream per log,
//! named by the caller. Each appended batch is one message on `<stream>.batch` whose payload
//! is exactly the engine's encoded batch ([`codec`](presence_engine::codec)); snapshots are
//! split into chunks under the server's message size limit and become visible only when a
//! small commit record follows them. `docs/FORMAT.md` in the repository describes the
//! subjects, headers and message ids.
//!
//! **One writer, fenced.** Every publish carries `Nats-Expected-Last-Sequence`, the stream's
//! last sequence number as the store last saw it, and a `Nats-Msg-Id` unique to that
//! publish. A publish whose acknowledgement is lost is retried with the same id and fence,
//! so JetStream's de-duplication answers it instead of storing it twice; a writer that finds
//! the stream moved under it (another writer appended) fails with
//! [`StoreErrorKind::Fenced`] and never writes again. The per-subject fence
//! (`Nats-Expected-Last-Subject-Sequence`) is not used: nats-server 2.9.10 checks it before
//! proposing to its replicas, so two writers can both pass it.
//!
//! **Durable means replicated.** An append returns once JetStream acknowledged it: on a
//! stream of R replicas, a quorum of them stored the message. nats-server 2.9 writes its
//! files at once but fsyncs them only every 60 seconds (2.10's `sync_interval` makes that
//! configurable), so an acknowledged batch survives the loss of a minority of replicas,
//! process crashes included, but with one replica a crash of the machine can lose the last
//! minute of acknowledged batches. [`EventStore::sync`] has nothing to add.
//!
//! **Event sequence numbers are not stream sequence numbers.** The stream also holds
//! snapshot chunks, commit records and a format marker, so the store never computes one from
//! the other: a batch's first event sequence number is in its `Presence-First-Seq` header
//! (and in the codec header of its bytes); `next_seq` on open comes from the newest batch
//! message; [`EventStore::read_from`] finds the batch holding an event by a binary search
//! over stream sequence numbers, then streams from there a few messages at a time.
//!
//! The store is synchronous: it owns a small tokio runtime (one worker thread that keeps the
//! connection alive) and blocks on each request, so call it from a plain thread.
//!
//! ```no_run
//! use presence_engine::{Command, Config, Engine, GeneralStatus};
//! use presence_storage_nats::{NatsOptions, NatsStore};
//!
//! let options = NatsOptions {
//!     replicas: 3,  // when the stream is created
//!     create: true, // create the stream if it is missing
//!     ..NatsOptions::new("nats://127.0.0.1:4222,nats://127.0.0.1:4223", "presence")
//! };
//! let store = NatsStore::open(options.clone())?;
//! let mut engine = Engine::open(Config::default(), store)?;
//! engine.execute(Command::login("alice", "phone"), 0)?; // acknowledged by a quorum
//! drop(engine);
//!
//! // Any process can reopen the log and replay it.
//! let engine = Engine::open(Config::default(), NatsStore::open(options)?)?;
//! assert_eq!(engine.status("alice").general, GeneralStatus::Online);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod announce;
mod api;
mod deployment;
mod layout;
mod options;
mod read;
mod store;

pub use announce::{Announced, HEADER_PREV_STREAM_SEQ, HEADER_STREAM_SEQ};
pub use deployment::{manifest_stream, open_nats_deployment, shard_stream};
pub use layout::{
    validate_stream_name, SnapshotCommit, Subjects, HEADER_CHUNK, HEADER_COUNT, HEADER_FIRST_SEQ,
    HEADER_FORMAT, HEADER_SNAPSHOT_ID, HEADROOM_BYTES, STORE_FORMAT_VERSION, STREAM_NAME_BYTES_MAX,
};
pub use options::NatsOptions;
pub use store::{NatsStore, StreamSummary};

#[doc(no_inline)]
pub use presence_engine::{EventStore, StoreError, StoreErrorKind, StoredBatch};
