//! The gateway's configuration: the engine's rules, the runtime's batching and snapshots, and
//! the gateway's own limits, read from one TOML file (`presence serve --config FILE`). Every
//! key has a default; an unknown key is an error, so that a typo never passes silently.
//!
//! ```toml
//! [engine]                      # presence_engine::Config: docs/SPEC.md's table
//! heartbeat_timeout_ms = 400000
//! friend_notifications = true
//!
//! [runtime]                     # the engine thread
//! queue_capacity = 4096
//!
//! [gateway]                     # sockets
//! node_id = "gw-1"
//! max_frame_bytes = 65536
//! ```

use std::time::Duration;

use presence_engine::{Config, OWNER_BYTES_MAX};
use presence_runtime::{RuntimeConfig, SnapshotPolicy};
use serde::Deserialize;

/// The most bytes a request frame may be allowed to take (`max_frame_bytes`).
pub const FRAME_BYTES_LIMIT: usize = 1 << 20;
/// The fewest bytes `max_frame_bytes` may be: room for a login with the longest token.
pub const FRAME_BYTES_MIN: usize = 1 << 10;
/// A frame up to this many times `max_frame_bytes` is read whole and refused with a reply
/// (code 8003), the connection going on; a longer one closes the connection (1009), since
/// the transport would have to buffer it all first.
pub const FRAME_HARD_LIMIT_FACTOR: usize = 16;
/// The most messages an outbound queue may be configured to hold.
pub const OUTBOUND_QUEUE_LIMIT: usize = 1 << 20;
/// The most connections a gateway may be configured to serve at once.
pub const CONNECTIONS_LIMIT: usize = 1 << 20;
/// The longest `header_read_timeout_ms` and `http_idle_timeout_ms` may be: an hour.
pub const HTTP_TIMEOUT_MS_LIMIT: u64 = 3_600_000;
/// The most descriptors kept out of the connection cap when the process's limit on open
/// files is lower than `max_connections` ([`GatewayConfig::fit_descriptors`]): the store's
/// files, the listener, NATS and log files, and the evicted connections still closing (at
/// most 256 of them, the gateway's `EVICTING_MAX`). A small limit keeps a quarter of itself
/// instead ([`descriptors_reserved`]), so that a server started with a few hundred
/// descriptors still serves most of them.
pub const DESCRIPTORS_RESERVED: u64 = 512;

/// The descriptors kept out of the connection cap under a limit of `nofile` open files:
/// [`DESCRIPTORS_RESERVED`], or a quarter of `nofile` if that is less. The store needs few
/// (the sled store opens none per write); the rest of the reserve is for evicted sockets still
/// closing, and an accept that finds none left backs off and is counted.
pub fn descriptors_reserved(nofile: u64) -> u64 {
    DESCRIPTORS_RESERVED.min(nofile / 4)
}
/// The most `request_rate_per_s` and `request_burst` may be configured to.
pub const REQUEST_RATE_LIMIT: u32 = 1_000_000;
/// Heartbeats are coalesced over at most this fraction of the engine's
/// `heartbeat_timeout_ms` (1 / N), whatever `heartbeat_coalesce_ms` says, so that a session
/// whose socket pings never times out between two heartbeats the engine took.
pub const HEARTBEAT_COALESCE_DIVISOR: u64 = 4;

/// Everything `presence serve` can be told, in three sections.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// The engine's rules (docs/SPEC.md's configuration table).
    pub engine: Config,
    /// The runtime thread's batching, ticking and snapshots.
    pub runtime: RuntimeSettings,
    /// The gateway's own settings.
    pub gateway: GatewaySettings,
}

/// The runtime's settings ([`RuntimeConfig`]). The gateway always ticks by itself and
/// always syncs each turn before it replies (R8.3), so those two are not settings here.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Commands that may wait for the engine; beyond it requests are answered `Busy` (8008).
    pub queue_capacity: usize,
    /// Reads (session handles, friend lists) that may wait for the next turn.
    pub read_queue_capacity: usize,
    /// The most commands in one turn (one append, one sync).
    pub max_batch: usize,
    /// How often an idle runtime ticks (expiring silent sessions, R2.4).
    pub tick_interval_ms: u64,
    /// Snapshot after this many events (0: never by count).
    pub snapshot_every_events: u64,
    /// Snapshot after this many bytes of log (0: never by size).
    pub snapshot_every_bytes: u64,
    /// Snapshot after this long, if anything was logged (0: never by time).
    pub snapshot_every_ms: u64,
    /// Remove the log a snapshot covers.
    pub compact: bool,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        let runtime = RuntimeConfig::default();
        let snapshots = SnapshotPolicy::default();
        Self {
            queue_capacity: runtime.queue_capacity,
            read_queue_capacity: runtime.read_queue_capacity,
            max_batch: runtime.max_batch,
            tick_interval_ms: runtime.tick_interval_ms,
            snapshot_every_events: snapshots.every_events.unwrap_or(0),
            snapshot_every_bytes: snapshots.every_bytes.unwrap_or(0),
            snapshot_every_ms: snapshots.every_ms.unwrap_or(0),
            compact: snapshots.compact,
        }
    }
}

impl RuntimeSettings {
    /// The runtime's configuration.
    pub fn runtime_config(&self) -> RuntimeConfig {
        let nonzero = |n: u64| (n > 0).then_some(n);
        RuntimeConfig {
            queue_capacity: self.queue_capacity,
            read_queue_capacity: self.read_queue_capacity,
            max_batch: self.max_batch,
            tick_interval_ms: self.tick_interval_ms,
            auto_tick: true,
            sync_each_turn: true,
            snapshots: SnapshotPolicy {
                every_events: nonzero(self.snapshot_every_events),
                every_bytes: nonzero(self.snapshot_every_bytes),
                every_ms: nonzero(self.snapshot_every_ms),
                compact: self.compact,
            },
        }
    }
}

/// The gateway's own settings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// This gateway's name, the connection owner of every session it logs in (R8.5): give
    /// each node of a cluster its own, so that a lost node's sessions can be disconnected.
    pub node_id: String,
    /// Connections (plain HTTP and WebSocket) served at once, each counted from accept until
    /// it closes; beyond it a connection is refused at accept (or an anonymous one evicted).
    pub max_connections: usize,
    /// Of `max_connections`, how many may be connections not logged in yet (plain HTTP ones
    /// included); beyond it the oldest of them is closed (1013) to make room. The rest of
    /// the cap only logged-in devices may use. 0 means three quarters of `max_connections`.
    pub max_anonymous_connections: usize,
    /// Connections open at once from one IP address; beyond it a connection is refused at
    /// accept. Load tests on loopback must raise it.
    pub max_connections_per_address: usize,
    /// The longest a connection may take to send a request's headers (counted from accept,
    /// or from the end of the previous response); then it is closed.
    pub header_read_timeout_ms: u64,
    /// A plain HTTP connection with no request in progress and nothing sent or received this
    /// long is closed (keep-alive and before the first request).
    pub http_idle_timeout_ms: u64,
    /// The longest frame (and message) a WebSocket may send before its login is answered:
    /// room for a login (capped by `max_frame_bytes`). A longer one closes the socket (1009)
    /// before it is read.
    pub max_login_frame_bytes: usize,
    /// The longest request frame, in bytes; longer ones are refused (8003, or close 1009).
    pub max_frame_bytes: usize,
    /// Messages (replies and notices) waiting to be written to one socket; a socket whose
    /// queue is full is closed (4002) rather than holding up anyone else.
    pub outbound_queue: usize,
    /// A socket that has not logged in this long after it opened is closed (4003).
    pub login_timeout_ms: u64,
    /// A socket silent this long (no frame, no ping) is closed (4004); 0 means the engine's
    /// `heartbeat_timeout_ms`, after which its session is disconnected anyway (R2.4).
    pub idle_timeout_ms: u64,
    /// How long the gateway waits to write a close frame, or for its sockets to end at
    /// shutdown, before it drops them.
    pub close_timeout_ms: u64,
    /// A WebSocket ping or a `heartbeat` request this soon after the last heartbeat the
    /// engine took for the socket's session is answered without reaching the engine's queue;
    /// never more than `heartbeat_timeout_ms / 4`; 0: every one reaches it.
    pub heartbeat_coalesce_ms: u64,
    /// Frames (requests, pings, any) one socket may send per second, on average; beyond it
    /// requests are answered `TooManyRequests` (8010), and a socket that goes on is closed
    /// (4005).
    pub request_rate_per_s: u32,
    /// Frames one socket may send at once above `request_rate_per_s` (the token bucket's
    /// size).
    pub request_burst: u32,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            node_id: "gateway".into(),
            max_connections: 10_000,
            max_anonymous_connections: 0,
            max_connections_per_address: 64,
            header_read_timeout_ms: 10_000,
            http_idle_timeout_ms: 5_000,
            max_login_frame_bytes: 4_096,
            max_frame_bytes: 64 << 10,
            outbound_queue: 256,
            login_timeout_ms: 10_000,
            idle_timeout_ms: 0,
            close_timeout_ms: 2_000,
            heartbeat_coalesce_ms: 1_000,
            request_rate_per_s: 100,
            request_burst: 1_000,
        }
    }
}

/// A configuration that does not parse or holds a value out of range.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl GatewayConfig {
    /// Reads a TOML configuration (every key optional, none unknown) and checks it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: GatewayConfig = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value: the engine's (as [`Config::validate`] does) and the gateway's.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate().map_err(|e| ConfigError(format!("[engine] {e}")))?;
        let r = &self.runtime;
        for (name, value) in [
            ("queue_capacity", r.queue_capacity),
            ("read_queue_capacity", r.read_queue_capacity),
            ("max_batch", r.max_batch),
        ] {
            if value == 0 || value > OUTBOUND_QUEUE_LIMIT {
                return Err(ConfigError(format!("[runtime] {name} must be 1 to {OUTBOUND_QUEUE_LIMIT}")));
            }
        }
        if r.tick_interval_ms == 0 {
            return Err(ConfigError("[runtime] tick_interval_ms must be at least 1".into()));
        }
        let g = &self.gateway;
        let node = &g.node_id;
        if node.is_empty() || node.len() > OWNER_BYTES_MAX || node.chars().any(char::is_control) {
            return Err(ConfigError(format!(
                "[gateway] node_id must be 1 to {OWNER_BYTES_MAX} bytes of UTF-8 without control characters"
            )));
        }
        if !(FRAME_BYTES_MIN..=FRAME_BYTES_LIMIT).contains(&g.max_frame_bytes) {
            return Err(ConfigError(format!(
                "[gateway] max_frame_bytes must be {FRAME_BYTES_MIN} to {FRAME_BYTES_LIMIT}"
            )));
        }
        if g.outbound_queue == 0 || g.outbound_queue > OUTBOUND_QUEUE_LIMIT {
            return Err(ConfigError(format!("[gateway] outbound_queue must be 1 to {OUTBOUND_QUEUE_LIMIT}")));
        }
        if g.max_connections == 0 || g.max_connections > CONNECTIONS_LIMIT {
            return Err(ConfigError(format!("[gateway] max_connections must be 1 to {CONNECTIONS_LIMIT}")));
        }
        for (name, value) in
            [("login_timeout_ms", g.login_timeout_ms), ("close_timeout_ms", g.close_timeout_ms)]
        {
            if value == 0 {
                return Err(ConfigError(format!("[gateway] {name} must be at least 1")));
            }
        }
        if g.max_anonymous_connections > g.max_connections {
            return Err(ConfigError(
                "[gateway] max_anonymous_connections must be at most max_connections".into(),
            ));
        }
        if g.max_connections_per_address == 0 || g.max_connections_per_address > CONNECTIONS_LIMIT {
            return Err(ConfigError(format!(
                "[gateway] max_connections_per_address must be 1 to {CONNECTIONS_LIMIT}"
            )));
        }
        for (name, value) in [
            ("header_read_timeout_ms", g.header_read_timeout_ms),
            ("http_idle_timeout_ms", g.http_idle_timeout_ms),
        ] {
            if value == 0 || value > HTTP_TIMEOUT_MS_LIMIT {
                return Err(ConfigError(format!("[gateway] {name} must be 1 to {HTTP_TIMEOUT_MS_LIMIT}")));
            }
        }
        if !(FRAME_BYTES_MIN..=FRAME_BYTES_LIMIT).contains(&g.max_login_frame_bytes) {
            return Err(ConfigError(format!(
                "[gateway] max_login_frame_bytes must be {FRAME_BYTES_MIN} to {FRAME_BYTES_LIMIT}"
            )));
        }
        for (name, value) in
            [("request_rate_per_s", g.request_rate_per_s), ("request_burst", g.request_burst)]
        {
            if value == 0 || value > REQUEST_RATE_LIMIT {
                return Err(ConfigError(format!("[gateway] {name} must be 1 to {REQUEST_RATE_LIMIT}")));
            }
        }
        Ok(())
    }

    /// How long a socket may stay silent: `idle_timeout_ms`, or the engine's heartbeat timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(match self.gateway.idle_timeout_ms {
            0 => self.engine.heartbeat_timeout_ms,
            ms => ms,
        })
    }

    /// The longest frame a socket may send before it logs in: `max_login_frame_bytes`, or
    /// `max_frame_bytes` if that is smaller.
    pub fn login_frame_bytes_max(&self) -> usize {
        self.gateway.max_login_frame_bytes.min(self.gateway.max_frame_bytes)
    }

    /// How many connections not logged in may be open: `max_anonymous_connections`, or three
    /// quarters of `max_connections` (at least one).
    pub fn anonymous_connections_max(&self) -> usize {
        match self.gateway.max_anonymous_connections {
            0 => (self.gateway.max_connections - self.gateway.max_connections / 4).max(1),
            n => n,
        }
    }

    /// Lowers `max_connections` (and `max_anonymous_connections` with it) to fit a process
    /// that may open `nofile` descriptors, keeping [`descriptors_reserved`] for everything
    /// else; returns the new cap when it lowered it.
    pub fn fit_descriptors(&mut self, nofile: u64) -> Option<usize> {
        let room =
            usize::try_from(nofile.saturating_sub(descriptors_reserved(nofile))).unwrap_or(usize::MAX).max(1);
        let g = &mut self.gateway;
        if g.max_connections <= room {
            return None;
        }
        g.max_connections = room;
        // An explicit share shrinks with the cap, and never past the default share of the
        // lower cap, so that logged-in devices keep a part of it (0 already means that).
        g.max_anonymous_connections = g.max_anonymous_connections.min(room - room / 4);
        Some(room)
    }

    /// How long after a heartbeat the engine took another is not sent: `heartbeat_coalesce_ms`,
    /// at most a quarter of the engine's `heartbeat_timeout_ms`.
    pub fn heartbeat_coalesce(&self) -> Duration {
        let most = self.engine.heartbeat_timeout_ms / HEARTBEAT_COALESCE_DIVISOR;
        Duration::from_millis(self.gateway.heartbeat_coalesce_ms.min(most))
    }

    /// The longest frame the transport reads before it gives up on the connection.
    pub fn frame_hard_limit(&self) -> usize {
        self.gateway.max_frame_bytes.saturating_mul(FRAME_HARD_LIMIT_FACTOR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(GatewayConfig::from_toml("").unwrap(), GatewayConfig::default());
    }

    #[test]
    fn every_section_reads_and_unknown_keys_are_errors() {
        let config = GatewayConfig::from_toml(
            "[engine]\nheartbeat_timeout_ms = 5000\nedition = \"standard\"\n\
             [runtime]\nqueue_capacity = 8\nsnapshot_every_events = 0\n\
             [gateway]\nnode_id = \"gw-7\"\noutbound_queue = 3\n",
        )
        .unwrap();
        assert_eq!(config.engine.heartbeat_timeout_ms, 5_000);
        assert_eq!(config.runtime.queue_capacity, 8);
        assert_eq!(config.runtime.runtime_config().snapshots.every_events, None);
        assert_eq!(config.gateway.node_id, "gw-7");
        assert_eq!(config.gateway.outbound_queue, 3);
        assert_eq!(config.idle_timeout(), Duration::from_millis(5_000));
        assert_eq!(config.heartbeat_coalesce(), Duration::from_millis(1_000));
        let short = GatewayConfig::from_toml("[engine]\nheartbeat_timeout_ms = 2000\n").unwrap();
        assert_eq!(
            short.heartbeat_coalesce(),
            Duration::from_millis(500),
            "at most a quarter of the timeout"
        );

        for bad in [
            "[engine]\nheartbeat_timeout = 5\n",
            "[gateway]\nnode = \"x\"\n",
            "[runtime]\nqueue = 1\n",
            "[other]\n",
            "top = 1\n",
        ] {
            let error = GatewayConfig::from_toml(bad).unwrap_err().to_string();
            assert!(error.contains("unknown"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn values_out_of_range_are_errors_naming_the_key() {
        for (bad, key) in [
            ("[engine]\nmax_subscriptions = 0\n", "max_subscriptions"),
            ("[runtime]\nqueue_capacity = 0\n", "queue_capacity"),
            ("[gateway]\nnode_id = \"\"\n", "node_id"),
            ("[gateway]\nmax_frame_bytes = 10\n", "max_frame_bytes"),
            ("[gateway]\noutbound_queue = 0\n", "outbound_queue"),
            ("[gateway]\nmax_connections = 0\n", "max_connections"),
            ("[gateway]\nlogin_timeout_ms = 0\n", "login_timeout_ms"),
            ("[gateway]\nmax_frame_bytes = \"big\"\n", "max_frame_bytes"),
            ("[gateway]\nmax_connections = 5\nmax_anonymous_connections = 6\n", "max_anonymous_connections"),
            ("[gateway]\nmax_connections_per_address = 0\n", "max_connections_per_address"),
            ("[gateway]\nheader_read_timeout_ms = 0\n", "header_read_timeout_ms"),
            ("[gateway]\nhttp_idle_timeout_ms = 0\n", "http_idle_timeout_ms"),
            ("[gateway]\nmax_login_frame_bytes = 100\n", "max_login_frame_bytes"),
            ("[gateway]\nrequest_rate_per_s = 0\n", "request_rate_per_s"),
            ("[gateway]\nrequest_burst = 1000001\n", "request_burst"),
        ] {
            let error = GatewayConfig::from_toml(bad).unwrap_err().to_string();
            assert!(error.contains(key), "{bad:?}: {error}");
        }
    }

    #[test]
    fn the_cap_fits_the_descriptors_and_the_anonymous_share_follows() {
        let mut config = GatewayConfig::from_toml("[gateway]\nmax_connections = 10000\n").unwrap();
        assert_eq!(config.anonymous_connections_max(), 7_500);
        assert_eq!(config.fit_descriptors(1_000_000), None, "room enough: unchanged");
        assert_eq!(config.fit_descriptors(4_096), Some(4_096 - DESCRIPTORS_RESERVED as usize));
        assert_eq!(config.gateway.max_connections, 3_584);
        assert_eq!(config.anonymous_connections_max(), 2_688);
        // A small limit keeps a quarter of itself, not 512.
        assert_eq!(config.fit_descriptors(1_024), Some(768));
        assert_eq!(config.fit_descriptors(256), Some(192));
        assert_eq!(config.anonymous_connections_max(), 144);
        let mut explicit =
            GatewayConfig::from_toml("[gateway]\nmax_connections = 900\nmax_anonymous_connections = 800\n")
                .unwrap();
        assert_eq!(explicit.fit_descriptors(612), Some(459));
        assert_eq!(
            explicit.anonymous_connections_max(),
            345,
            "a quarter of the cap stays the logged-in devices'"
        );
        assert!(explicit.validate().is_ok());
        assert_eq!(config.fit_descriptors(1), Some(1), "never below one connection");
    }
}
