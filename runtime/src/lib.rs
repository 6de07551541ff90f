//! The presence runtime: the engine run on threads in one process. Where `presence-engine`
//! is the pure core (commands, decide, apply, state, events, codec, the store trait, the shard
//! map) and never starts a thread or reads a clock, this crate holds what a host that talks
//! to an engine from many threads or tasks needs: turns, group commit, the snapshot policy,
//! replies, statistics, and the shards of a deployment run together (docs/DESIGN.md: group
//! commit and the runtime).
//!
//! It imports `presence-engine` and no other presence crate: never the cluster, the gateway
//! or a storage backend, except as dev-dependencies of its tests (the repository test
//! `conformance/tests/repository.rs` enforces the crate graph).
//!
//! A [`Runtime`] is a thread that owns an [`Engine`] and its store; a [`ShardedRuntime`], the
//! threads that own the shards of a deployment.
//!
//! Each turn the thread runs the reads queued for it, then takes up to
//! [`RuntimeConfig::max_batch`] queued commands, decides and applies them in order as one
//! [`Group`](presence_engine::Group) with a tick at the turn's time, appends their events as
//! one batch and syncs once (group commit), and only then answers them and hands the notices
//! to the host's [`NoticeSink`] (R8.3). The queues are bounded: a slow engine or sink pushes
//! back on the senders, and the `try_` calls of the [`Handle`] let a host shed load instead.
//! By its [`SnapshotPolicy`] the runtime also snapshots and compacts the log as it goes, so
//! the log of a server that runs for months stays bounded.
//!
//! A reply is a [`PendingReply`]: awaited from any executor, or waited for on a thread.
//!
//! ```
//! use presence_engine::{Command, Config, Engine, GeneralStatus};
//! use presence_runtime::{DiscardSink, ManualClock, Runtime, RuntimeConfig};
//! use presence_storage_mem::MemStore;
//!
//! let engine = Engine::open(Config::default(), MemStore::new())?;
//! let clock = ManualClock::new(0);
//! let (runtime, handle) = Runtime::spawn(engine, clock.clone(), DiscardSink, RuntimeConfig::default());
//! handle.execute(Command::login("alice", "phone")).unwrap();
//! // A read between turns: it sees the login.
//! let online = handle.read(|engine| engine.status("alice").general).unwrap().wait().unwrap();
//! assert_eq!(online, GeneralStatus::Online);
//! clock.advance(400_000);
//! handle.tick().unwrap(); // R2.4: alice's phone timed out
//! let engine = runtime.shutdown()?;
//! assert_eq!(engine.status("alice").general, GeneralStatus::Offline);
//! # Ok::<(), presence_engine::Error>(())
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod clock;
mod handle;
mod peer;
mod reply;
mod sharded;
mod sink;
mod stats;
mod stop;
mod worker;

pub use clock::{Clock, ManualClock, SystemClock};
pub use handle::{Handle, RuntimeError, TrySendError};
pub use reply::PendingReply;
pub use sharded::{default_threads, open_shards, ShardedRuntime};
pub use sink::{ChannelSink, DiscardSink, NoticeSink, OwnedDelivery};
pub use stats::{
    Latency, LatencyHistogram, RuntimeHistograms, RuntimeStats, LATENCY_BUCKETS, LATENCY_BUCKET_BOUNDS_US,
};
pub use stop::{RuntimeStop, Stopped};

use presence_engine::{Engine, Error, EventStore, ShardMap, StoreError, StoreErrorKind};

/// How the runtime batches, ticks and snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Commands that may wait in the queue; `send` waits beyond it, `try_send` hands the
    /// command back.
    pub queue_capacity: usize,
    /// Reads that may wait for the next turn.
    pub read_queue_capacity: usize,
    /// The most commands decided and committed in one turn (one append, one sync).
    pub max_batch: usize,
    /// How long an idle runtime waits before it ticks anyway. Every turn also ticks.
    pub tick_interval_ms: u64,
    /// Whether the runtime ticks by itself (every turn, and when idle). Turn it off when the
    /// host sends every tick itself ([`Handle::tick_at`]), as a deterministic simulation does.
    pub auto_tick: bool,
    /// Whether each turn that logged something calls [`EventStore::sync`] before replying.
    /// Turn it off only for stores whose `append` is already durable.
    pub sync_each_turn: bool,
    /// When to snapshot and compact the log.
    pub snapshots: SnapshotPolicy,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4_096,
            read_queue_capacity: 1_024,
            max_batch: 1_024,
            tick_interval_ms: 1_000,
            auto_tick: true,
            sync_each_turn: true,
            snapshots: SnapshotPolicy::default(),
        }
    }
}

/// When the runtime snapshots the state and compacts the log it covers, so that the log, and
/// the next open's replay, stay bounded. A snapshot is due when any of the thresholds that
/// are set is reached since the last one; the state is captured between turns and encoded and
/// written while the runtime goes on (see [`Handle::snapshot`] to take one now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Events logged since the last snapshot.
    pub every_events: Option<u64>,
    /// Bytes of batches appended since the last snapshot.
    pub every_bytes: Option<u64>,
    /// Milliseconds of the runtime's clock since the last snapshot.
    pub every_ms: Option<u64>,
    /// Whether to compact (remove the batches a new snapshot covers, and older snapshots).
    pub compact: bool,
}

impl SnapshotPolicy {
    /// Never snapshot by itself (a host may still ask, [`Handle::snapshot`]).
    pub fn never() -> Self {
        Self { every_events: None, every_bytes: None, every_ms: None, compact: false }
    }

    fn due(&self, events: u64, bytes: u64, elapsed_ms: u64) -> bool {
        self.every_events.is_some_and(|n| events >= n)
            || self.every_bytes.is_some_and(|n| bytes >= n)
            || self.every_ms.is_some_and(|n| elapsed_ms >= n && events > 0)
    }
}

impl Default for SnapshotPolicy {
    /// Every million events or 64 MiB of log, compacting: a replay of at most that much.
    fn default() -> Self {
        Self { every_events: Some(1_000_000), every_bytes: Some(64 << 20), every_ms: None, compact: true }
    }
}

/// The running engine thread. [`Runtime::shutdown`] stops it and hands the engine back.
pub struct Runtime<S> {
    inner: ShardedRuntime<S>,
}

impl<S: EventStore + Send + 'static> Runtime<S> {
    /// Starts the engine thread.
    ///
    /// # Panics
    /// If the operating system cannot start a thread.
    pub fn spawn(
        engine: Engine<S>,
        clock: impl Clock,
        sink: impl NoticeSink,
        config: RuntimeConfig,
    ) -> (Runtime<S>, Handle) {
        let mut parts = Some((clock, sink));
        let (inner, handle) = ShardedRuntime::start(
            vec![engine],
            ShardMap::new(1),
            1,
            // One thread: asked once.
            |_| parts.take().unwrap_or_else(|| unreachable!("one thread takes the clock and sink")),
            config,
        );
        (Runtime { inner }, handle)
    }

    /// A handle for sending requests (as many as wanted: they are cheap to clone).
    pub fn handle(&self) -> Handle {
        self.inner.handle()
    }

    /// What the runtime has done so far.
    pub fn stats(&self) -> RuntimeStats {
        self.inner.stats()
    }

    /// Stops taking requests, runs every command already queued, syncs, and returns the
    /// engine (and through [`Engine::into_store`], the store). Fails with the store's error
    /// if the runtime had stopped after a failed sync.
    pub fn shutdown(self) -> Result<Engine<S>, Error> {
        let mut engines = self.inner.shutdown()?;
        engines.pop().ok_or_else(|| stopped("the runtime thread returned no engine"))
    }
}

fn stopped(message: &str) -> Error {
    Error::Storage(StoreError::new(StoreErrorKind::Io, message))
}

#[cfg(test)]
mod tests {
    use super::SnapshotPolicy;

    #[test]
    fn a_snapshot_is_due_at_any_threshold_and_not_before() {
        let policy = SnapshotPolicy {
            every_events: Some(10),
            every_bytes: Some(100),
            every_ms: Some(1_000),
            compact: true,
        };
        assert!(!policy.due(9, 99, 999));
        assert!(policy.due(10, 0, 0));
        assert!(policy.due(0, 100, 0));
        assert!(policy.due(1, 0, 1_000));
        assert!(!policy.due(0, 0, 5_000), "time alone with nothing logged is not a reason");
        assert!(!SnapshotPolicy::never().due(u64::MAX, u64::MAX, u64::MAX));
    }
}
