//! Test helpers for presence, shared by every crate's tests.
//!
//! - [`nats`]: real nats-server processes with JetStream ([`NatsServer`], [`NatsCluster`])
//!   on free loopback ports with temporary directories, killed when dropped, and a small
//!   blocking [`NatsClient`] for what a test does by hand.
//! - [`process`]: what server helpers share: finding an installed program (failing with the
//!   install command when it is missing, never skipping), free ports, bounded waits, a child
//!   process killed on drop.
//! - [`redis`]: a real redis-server ([`RedisServer`]) on a free loopback port, persisting
//!   nothing, killed when dropped.
//! - [`chromium`]: headless Chromium ([`Chromium`]) driven over the DevTools protocol: pages,
//!   JavaScript, bounded waits, screenshots; killed with its children when dropped.
//! - [`backend_suite`](mod@backend_suite): the [`EventStore`](presence_engine::EventStore)
//!   contract suite every backend runs, through [`backend_suite!`](crate::backend_suite!).
//! - [`load`]: a seeded command load and pre-encoded batches.
//!
//! Later helpers (a cluster of presence nodes, other servers) go in their own modules. The
//! helpers fail a test by panicking with a message that says what went wrong, as test code
//! does.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers fail tests by panicking

pub mod backend_suite;
pub mod chromium;
pub mod load;
pub mod nats;
pub mod process;
pub mod redis;

pub use chromium::{Chromium, Page};
pub use nats::{NatsClient, NatsCluster, NatsServer, StoredMessage};
pub use redis::RedisServer;
