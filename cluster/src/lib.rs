//! Presence over several machines (docs/SPEC.md R9, docs/DESIGN.md, the cluster): nodes that
//! connect to NATS, own the shards of a deployment whose logs are JetStream streams
//! (`presence-storage-nats`), serve their commands by request and reply, follow each other's
//! logs for status changes and friendships, and take the shards of a lost node over with a
//! fenced claim, disconnecting the sessions whose sockets it held.
//!
//! - [`run_node`]: a node, what `presence node` runs.
//! - [`ClusterClient`]: a host's side: commands routed to their shard's owner, the nodes'
//!   control requests, and the notices for a node's devices.
//! - [`AsyncClusterClient`]: the same commands for hosts that run tokio (the gateway inside
//!   a node, `presence node --gateway-addr`), never blocking a thread.
//! - [`wire`]: the subjects and what travels on them: commands and answers in binary
//!   batches, the rest JSON.
//!
//! Its place in the crate graph: it imports `presence-engine`, `presence-runtime` (each
//! shard a node claims runs on a runtime of its own) and `presence-storage-nats` (the shards'
//! logs), and never the gateway: the gateway depends on the cluster, not the other way round.
//! The repository test `conformance/tests/repository.rs` enforces the crate graph.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod batcher;
mod client;
mod config;
mod error;
mod node;
mod ownership;
pub mod wire;

pub use client::{AsyncClusterClient, ClientError, ClusterClient, Notices};
pub use config::NodeConfig;
pub use node::{run_node, NodeOptions};
pub use ownership::{assign, owner_of, Membership};
