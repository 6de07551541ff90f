//! What the gateway has done: counters shared by its sockets and its notice sink, readable
//! while it runs (`GET /stats`, [`Gateway::stats`](crate::Gateway::stats)).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The gateway's counters as of one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GatewayStats {
    /// Connections open now (plain HTTP and WebSocket, counted from accept).
    pub connections_open: u64,
    /// Connections accepted since the gateway started.
    pub connections_total: u64,
    /// Connections refused at accept: `max_connections` open and none of them anonymous,
    /// `max_connections_per_address` open from its address, or shutting down.
    pub connections_refused: u64,
    /// Of `connections_refused`, those refused by `max_connections_per_address`.
    pub connections_refused_address: u64,
    /// Connections not logged in closed (1013) to make room for a newer one
    /// (`max_anonymous_connections`, or `max_connections` reached).
    pub connections_evicted: u64,
    /// Accepts that failed (for lack of descriptors the listener backs off a little).
    pub accept_errors: u64,
    /// Status notices and kicks queued onto sockets.
    pub notices_queued: u64,
    /// Notices for a device that no socket of this gateway serves (a session restored from
    /// the log, or one whose socket closed while its notice was on the way).
    pub notices_unrouted: u64,
    /// Sockets closed because their outbound queue was full (4002).
    pub slow_readers_closed: u64,
    /// Notices not queued because their socket's queue was full (the socket is closed as a
    /// slow reader) or the socket was closing.
    pub notices_dropped: u64,
    /// Requests answered `Busy` (8008) because the engine's queue was full.
    pub requests_shed: u64,
    /// WebSocket pings whose heartbeat was dropped because the engine's queue was full (the
    /// next one will do, well within the timeout).
    pub heartbeats_shed: u64,
    /// Logins refused for a bad or expired token.
    pub bad_tokens: u64,
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub connections_refused_address: AtomicU64,
    pub connections_evicted: AtomicU64,
    pub accept_errors: AtomicU64,
    pub notices_queued: AtomicU64,
    pub notices_unrouted: AtomicU64,
    pub slow_readers_closed: AtomicU64,
    pub notices_dropped: AtomicU64,
    pub requests_shed: AtomicU64,
    pub heartbeats_shed: AtomicU64,
    pub bad_tokens: AtomicU64,
    /// Requests by op and code, closes by reason: the counts `GET /metrics` labels.
    pub tallies: crate::metrics::Tallies,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> GatewayStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GatewayStats {
            connections_open: load(&self.connections_open),
            connections_total: load(&self.connections_total),
            connections_refused: load(&self.connections_refused),
            connections_refused_address: load(&self.connections_refused_address),
            connections_evicted: load(&self.connections_evicted),
            accept_errors: load(&self.accept_errors),
            notices_queued: load(&self.notices_queued),
            notices_unrouted: load(&self.notices_unrouted),
            slow_readers_closed: load(&self.slow_readers_closed),
            notices_dropped: load(&self.notices_dropped),
            requests_shed: load(&self.requests_shed),
            heartbeats_shed: load(&self.heartbeats_shed),
            bad_tokens: load(&self.bad_tokens),
        }
    }
}
