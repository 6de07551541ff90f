//! Presence the usual way, on Redis, behind the gateway's WebSocket protocol
//! (docs/PROTOCOL.md), so that `presence load --against redis` drives it exactly as it
//! drives the gateway. It is the baseline of the load test, not a product.
//!
//! The design, as most chat backends write it:
//! - a user's status is one key, `presence:s:{user}`, holding the status as JSON, set with
//!   `SET ... EX` on login, on each heartbeat (a WebSocket ping or the `heartbeat` op) and on
//!   each custom status; `INCR presence:v:{user}` numbers the changes (the versions of R5.6);
//! - a change is `PUBLISH presence:{user}` of the notice; each peer process holds one
//!   `SUBSCRIBE` connection and fans the messages out to its local watchers (the device's
//!   own user, and the users it subscribed to); a channel, once subscribed, stays subscribed
//!   (messages nobody here watches any more are dropped locally), so that a SUBSCRIBE is never
//!   overtaken by an older UNSUBSCRIBE;
//! - reads are one `MGET` of the status and version keys of every target;
//! - a socket that closes without `logout` publishes OFFLINE and deletes the key.
//!
//! What it does not do, and the gateway does: nothing is durable (the server persists
//! nothing here, and pub/sub never stores a message: a watcher that is not connected at the
//! moment of a `PUBLISH` misses it for good); a device that goes silent without closing its
//! socket just lets its key expire, which nobody is told of (no keyspace notifications);
//! several devices of one user overwrite each other's key; there are no subscription lists
//! that outlive a socket, no caps, no rate limits, no friendships, no kicks.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod socket;
mod store;

use std::future::Future;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::StreamExt;
use presence_gateway::Secret;
use store::Store;
use tokio::net::TcpListener;

/// The peer's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSettings {
    /// The `EX` of a status key: a device silent this long is gone (the engine's
    /// `heartbeat_timeout_ms`, in seconds).
    pub heartbeat_ttl_s: u64,
    /// The longest request frame.
    pub max_frame_bytes: usize,
    /// Messages waiting to be written to one socket; a full queue closes it (4002).
    pub outbound_queue: usize,
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self { heartbeat_ttl_s: 400, max_frame_bytes: 64 << 10, outbound_queue: 256 }
    }
}

/// Why the peer could not start.
#[derive(Debug)]
pub enum PeerError {
    /// Redis could not be reached.
    Redis(redis::RedisError),
    /// The listener failed.
    Io(std::io::Error),
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Redis(e) => write!(f, "redis: {e}"),
            PeerError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PeerError {}

struct Shared {
    store: Store,
    secret: Secret,
    settings: PeerSettings,
}

/// Serves the protocol on `listener` with Redis at `redis_url` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    redis_url: &str,
    secret: Secret,
    settings: PeerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PeerError> {
    let (mut store, mut messages) = Store::connect(redis_url).await.map_err(PeerError::Redis)?;
    store.set_ttl_s(settings.heartbeat_ttl_s);
    let shared = Arc::new(Shared { store, secret, settings });
    // The one SUBSCRIBE connection's messages, fanned out to the local watchers.
    let fan_out = Arc::clone(&shared);
    let dispatcher = tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            fan_out.store.dispatch(&message);
        }
    });
    let router = Router::new().route("/ws", get(upgrade)).with_state(Arc::clone(&shared));
    let listener = listener.tap_io(|socket| {
        let _ = socket.set_nodelay(true);
    });
    let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
    dispatcher.abort();
    served.map_err(PeerError::Io)
}

async fn upgrade(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    let limit = shared.settings.max_frame_bytes.saturating_mul(16);
    ws.max_message_size(limit).max_frame_size(limit).on_upgrade(move |socket| socket::serve(socket, shared))
}
