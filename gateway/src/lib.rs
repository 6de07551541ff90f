//! `presence serve`: a WebSocket gateway over the presence runtime.
//!
//! Its place in the crate graph: it imports `presence-engine` (commands, replies, ids) and
//! `presence-runtime` (the runtime of this process it serves over), and today also
//! `presence-cluster`, for the gateway inside a node, whose commands go to the shards' owners
//! through the cluster's async client and whose notices arrive in the cluster's wire format.
//! That last edge is to go: the goal is a backend trait the gateway owns (today the private
//! `Backend` enum, local runtime or cluster), implemented outside it. It never imports a
//! storage backend except as dev-dependencies: the host picks the store. The repository test
//! `conformance/tests/repository.rs` enforces the crate graph.
//!
//! Devices log in with a token the host signed (token.rs, like Tencent's UserSig), then
//! send JSON requests over a WebSocket at `/ws` and receive their replies and pushed
//! notices there (docs/PROTOCOL.md). A page at `/` does the same in a browser. The host
//! manages friendships over HTTP with a bearer derived from the same secret.
//!
//! ```no_run
//! use presence_gateway::{Gateway, GatewayConfig, Secret};
//! use presence_storage_sled::{Durability, SledStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = Secret::from_file("presence.secret".as_ref())?;
//! let store = SledStore::open("presence-data", Durability::GroupCommit)?;
//! let gateway = Gateway::open(store, GatewayConfig::default(), secret.clone())?;
//! println!("a token for alice: {}", secret.mint_for("alice", 3_600));
//! let running = gateway.spawn("127.0.0.1:7878".parse()?)?; // or `gateway.serve(listener, signal).await`
//! // ... until the host stops it: the sockets close, their sessions are disconnected, the
//! // engine drains and syncs.
//! running.stop()?;
//! # Ok(())
//! # }
//! ```
//!
//! How it is wired (docs/DESIGN.md, "The gateway"):
//! - **One socket** (`connection.rs`): a reader task answers requests in order, each queued
//!   on the runtime with `try_send` (a full queue is answered `Busy`, 8008, never waited
//!   for) and awaited without blocking a thread; a writer task drains the socket's bounded
//!   outbound queue. WebSocket pings are heartbeats by session handle (R2.4).
//! - **Notices** (`routes.rs`): the runtime's [`NoticeSink`](presence_runtime::NoticeSink)
//!   resolves each recipient to the socket registered for its (user, device) and queues the
//!   notice there without waiting; a socket whose queue is full is closed (4002).
//! - **Sessions follow sockets**: a socket that closes without `logout` disconnects its
//!   session (R2.2), unless the device has logged in again through another socket since;
//!   every session is logged in with the gateway's `node_id` as its connection owner (R8.5);
//!   at shutdown the node's sessions are disconnected, and at the next start whatever the log
//!   still says is connected is disconnected (R8.4).
//! - **In a cluster** ([`ClusterGateway`], `presence node --gateway-addr`): the same sockets,
//!   routes and rules, but each command goes to the node that owns its user's shard over NATS
//!   ([`presence_cluster::AsyncClusterClient`]), pings are heartbeats by ids, and the notices
//!   for this gateway's devices arrive on `{deployment}.node.{node_id}.notices`. A device's
//!   login, logout and disconnect each wait for the device's previous one, so that the shard's
//!   owner sees them in the order the routing table made them.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
mod connection;
mod health;
mod http;
mod listener;
mod metrics;
pub mod protocol;
mod rate_limit;
mod routes;
mod server;
mod shared;
mod stats;
pub mod token;
mod writer;

pub use config::{ConfigError, GatewayConfig, GatewaySettings, RuntimeSettings};
pub use server::{ClusterGateway, Gateway, GatewayError, RunningGateway, ServeReport};
pub use stats::GatewayStats;
pub use token::{Secret, TokenError};
