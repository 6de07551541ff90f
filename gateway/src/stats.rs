//! What the gateway has done: counters shared by its sockets and its notice sink, readable
//! while it runs (`GET /stats`, [`Gateway::stats`](crate::Gateway::stats)).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;

use crate::protocol::CloseReason;

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
    pub tallies: Tallies,
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

/// The `code` label of a request that succeeded.
const CODE_OK: u32 = 0;

/// The counts that carry labels: requests answered, by op and result code, and sockets
/// closed, by close reason. A small map under a lock each: the labels' values are a fixed
/// set (ops, codes, reasons), and one request takes the lock once, for an add.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    requests: Mutex<BTreeMap<(&'static str, u32), u64>>,
    closes: Mutex<HashMap<CloseReason, u64>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held leaves a map of plain numbers, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Tallies {
    /// Counts one answered request: `op` (from `metrics::op_label`, or `metrics::OP_INVALID`) and the
    /// reply's code (0: it succeeded).
    pub(crate) fn answered(&self, op: &'static str, code: u32) {
        *lock(&self.requests).entry((op, code)).or_insert(0) += 1;
    }

    /// Counts a successful reply to `op`.
    pub(crate) fn succeeded(&self, op: &'static str) {
        self.answered(op, CODE_OK);
    }

    /// Counts one socket closed for `reason`.
    pub(crate) fn closed(&self, reason: CloseReason) {
        *lock(&self.closes).entry(reason).or_insert(0) += 1;
    }

    pub(crate) fn requests(&self) -> BTreeMap<(&'static str, u32), u64> {
        lock(&self.requests).clone()
    }

    /// The closes, by code, then reason's name.
    pub(crate) fn closes(&self) -> Vec<(u16, String, u64)> {
        let mut closes: Vec<(u16, String, u64)> =
            lock(&self.closes).iter().map(|(reason, n)| (reason.code(), reason_name(*reason), *n)).collect();
        closes.sort();
        closes
    }
}

/// A close reason's name as a label value: `SlowReader` -> `slow_reader`. Derived from the
/// variant's name, so that a new reason is counted under its own name without a table here.
pub(crate) fn reason_name(reason: CloseReason) -> String {
    let mut name = String::new();
    for (i, c) in format!("{reason:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_snake_case() {
        assert_eq!(reason_name(CloseReason::SlowReader), "slow_reader");
        assert_eq!(reason_name(CloseReason::GoingAway), "going_away");
        assert_eq!(reason_name(CloseReason::TooBig), "too_big");
    }
}
