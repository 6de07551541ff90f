//! Replicated event store for `presence-engine` on NATS JetStream.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod api;
mod layout;
mod options;
mod read;
mod store;

pub use layout::{
    validate_stream_name, SnapshotCommit, Subjects, HEADER_CHUNK, HEADER_COUNT, HEADER_FIRST_SEQ,
    HEADER_FORMAT, HEADER_SNAPSHOT_ID, HEADROOM_BYTES, STORE_FORMAT_VERSION, STREAM_NAME_BYTES_MAX,
};
pub use options::NatsOptions;
pub use store::{NatsStore, StreamSummary};

#[doc(no_inline)]
pub use presence_engine::{EventStore, StoreError, StoreErrorKind, StoredBatch};
