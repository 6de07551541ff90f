//! What the runtime did, readable while it runs: counters, the queue's depth, and latencies
//! as distributions (p50, p99, max), for a host to export; and the same latencies as
//! histograms of fixed buckets that only ever grow ([`LatencyHistogram`]), for an exporter
//! whose reader computes rates (Prometheus).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency the distributions tell apart (longer ones count as this), in
/// microseconds: an hour.
const LATENCY_US_MAX: u64 = 3_600_000_000;

/// The upper bounds of the latency histograms' buckets, in microseconds, from 50 µs to 10 s
/// (a bucket counts the latencies up to its bound; one more bucket counts those beyond the
/// last). Fixed, so that recording is a few compares and two adds, with no allocation.
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// How many buckets a latency histogram has: one per bound, and one beyond the last.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

/// A histogram of latencies as of one moment, counted since the runtime started (never
/// reset, unlike [`Latency`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// How many latencies fell in each bucket (not cumulative): `counts[i]`, for `i` below
    /// [`LATENCY_BUCKET_BOUNDS_US`]'s length, those above the bound before `i` and at most
    /// bound `i`; the last, those above every bound.
    pub counts: [u64; LATENCY_BUCKETS],
    /// The sum of the latencies, in microseconds.
    pub sum_us: u64,
}

impl LatencyHistogram {
    /// Counts a latency of `us` microseconds in the bucket of the first bound at or above it
    /// (Prometheus's `le`).
    fn record(&mut self, us: u64) {
        // From the smallest bound up: most latencies are short, and those of one turn alike,
        // so this stops after a few well-predicted compares.
        let bucket =
            LATENCY_BUCKET_BOUNDS_US.iter().position(|&bound| us <= bound).unwrap_or(LATENCY_BUCKETS - 1);
        if let Some(count) = self.counts.get_mut(bucket) {
            *count += 1;
        }
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The runtime's latency histograms ([`Handle::histograms`](super::Handle::histograms)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeHistograms {
    /// How long a turn took, from taking its first request to handing out its notices.
    pub turn: LatencyHistogram,
    /// How long the store's sync took, per turn that synced.
    pub sync: LatencyHistogram,
    /// How long a request waited for its reply, from being queued to being answered.
    pub reply: LatencyHistogram,
    /// How long the runtime stopped between turns to capture the state for a snapshot.
    pub snapshot_pause: LatencyHistogram,
}

/// A distribution of latencies, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Latency {
    /// How many were recorded.
    pub count: u64,
    /// The median.
    pub p50_us: u64,
    /// The 99th percentile.
    pub p99_us: u64,
    /// The largest.
    pub max_us: u64,
}

/// What the runtime has done, as of the moment it was read ([`Runtime::stats`](super::Runtime::stats),
/// [`Handle::stats`](super::Handle::stats)). Counters count since the runtime started;
/// latencies since it started or since the last [`Handle::reset_latencies`](super::Handle::reset_latencies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RuntimeStats {
    /// Turns run (each one group commit, or a few when a turn outgrows a batch of the store).
    pub turns: u64,
    /// Commands (and heartbeats by handle) that succeeded.
    pub commands: u64,
    /// Commands refused by the engine or failed by the store.
    pub refused: u64,
    /// Requests a `try_` call could not queue because the queue was full (load shed).
    pub shed: u64,
    /// Reads run between turns.
    pub reads: u64,
    /// Events appended.
    pub events: u64,
    /// Bytes of batches appended.
    pub bytes_appended: u64,
    /// Single deliveries handed to the sink (one per device per notice).
    pub deliveries: u64,
    /// Appends the store refused (their turn's commands were failed and rolled back).
    pub store_failures: u64,
    /// Panics caught from the sink.
    pub sink_panics: u64,
    /// Snapshots saved (by the policy or on request).
    pub snapshots: u64,
    /// Snapshots or compactions that failed (the log is intact; the next one tries again).
    pub snapshot_failures: u64,
    /// The sequence number the newest snapshot this runtime saved covers (0: none).
    pub snapshot_seq: u64,
    /// Requests waiting in the queue now.
    pub queue_depth: usize,
    /// How many requests the queue holds at most.
    pub queue_capacity: usize,
    /// How long a turn took, from taking its first request to handing out its notices.
    pub turn_latency: Latency,
    /// How long the store's sync took, per turn that logged something.
    pub sync_latency: Latency,
    /// How long a request waited for its reply, from being queued to being answered.
    pub reply_latency: Latency,
    /// How long the runtime stopped between turns to capture the state for a snapshot (the
    /// encoding and writing happen while it goes on).
    pub snapshot_pause: Latency,
}

/// The counters and distributions, shared by the runtime's thread and every handle.
#[derive(Debug, Default)]
pub(crate) struct SharedStats {
    pub turns: AtomicU64,
    pub commands: AtomicU64,
    pub refused: AtomicU64,
    pub shed: AtomicU64,
    pub reads: AtomicU64,
    pub events: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub deliveries: AtomicU64,
    pub store_failures: AtomicU64,
    pub sink_panics: AtomicU64,
    pub snapshots: AtomicU64,
    pub snapshot_failures: AtomicU64,
    pub snapshot_seq: AtomicU64,
    latencies: Mutex<Latencies>,
}

#[derive(Debug)]
struct Latencies {
    turn: Histogram<u64>,
    sync: Histogram<u64>,
    reply: Histogram<u64>,
    snapshot_pause: Histogram<u64>,
    /// The same latencies in fixed buckets, never reset. Plain counters under the lock the
    /// turn takes anyway: an add each, where atomics cost a locked instruction each (measured
    /// in a timed loop: recording a turn of 64 replies took about 3.5 times as long with two
    /// atomic adds per latency, and about 1 ns more per latency this way).
    histograms: RuntimeHistograms,
}

fn histogram() -> Histogram<u64> {
    // Two significant digits are plenty for percentiles, and keep each histogram small.
    #[allow(clippy::expect_used)] // Constant bounds that hdrhistogram accepts (a test checks).
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 2).expect("valid histogram bounds")
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            turn: histogram(),
            sync: histogram(),
            reply: histogram(),
            snapshot_pause: histogram(),
            histograms: RuntimeHistograms::default(),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX).clamp(1, LATENCY_US_MAX)
}

fn summary(histogram: &Histogram<u64>) -> Latency {
    Latency {
        count: histogram.len(),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
    }
}

impl SharedStats {
    pub(crate) fn add(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }

    fn latencies(&self) -> std::sync::MutexGuard<'_, Latencies> {
        self.latencies.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one turn: its duration, its sync's if it synced, and each reply's wait.
    pub(crate) fn record_turn(&self, turn: Duration, sync: Option<Duration>, replies: &[Duration]) {
        let mut latencies = self.latencies();
        let turn = micros(turn);
        let _ = latencies.turn.record(turn);
        latencies.histograms.turn.record(turn);
        if let Some(sync) = sync {
            let sync = micros(sync);
            let _ = latencies.sync.record(sync);
            latencies.histograms.sync.record(sync);
        }
        for &reply in replies {
            let reply = micros(reply);
            let _ = latencies.reply.record(reply);
            latencies.histograms.reply.record(reply);
        }
    }

    pub(crate) fn record_snapshot_pause(&self, pause: Duration) {
        let mut latencies = self.latencies();
        let pause = micros(pause);
        let _ = latencies.snapshot_pause.record(pause);
        latencies.histograms.snapshot_pause.record(pause);
    }

    /// Starts the distributions afresh; the histograms go on (a Prometheus counter never
    /// goes down).
    pub(crate) fn reset_latencies(&self) {
        let mut latencies = self.latencies();
        let histograms = latencies.histograms;
        *latencies = Latencies { histograms, ..Latencies::default() };
    }

    pub(crate) fn histograms(&self) -> RuntimeHistograms {
        self.latencies().histograms
    }

    pub(crate) fn read(&self, queue_depth: usize, queue_capacity: usize) -> RuntimeStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let latencies = self.latencies();
        RuntimeStats {
            turns: load(&self.turns),
            commands: load(&self.commands),
            refused: load(&self.refused),
            shed: load(&self.shed),
            reads: load(&self.reads),
            events: load(&self.events),
            bytes_appended: load(&self.bytes_appended),
            deliveries: load(&self.deliveries),
            store_failures: load(&self.store_failures),
            sink_panics: load(&self.sink_panics),
            snapshots: load(&self.snapshots),
            snapshot_failures: load(&self.snapshot_failures),
            snapshot_seq: load(&self.snapshot_seq),
            queue_depth,
            queue_capacity,
            turn_latency: summary(&latencies.turn),
            sync_latency: summary(&latencies.sync),
            reply_latency: summary(&latencies.reply),
            snapshot_pause: summary(&latencies.snapshot_pause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_summarised_as_percentiles() {
        let stats = SharedStats::default();
        let replies: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        stats.record_turn(Duration::from_millis(5), Some(Duration::from_micros(400)), &replies);
        let read = stats.read(3, 10);
        assert_eq!(read.reply_latency.count, 100);
        // Two significant digits: within 1 %.
        assert!((49_000..=51_000).contains(&read.reply_latency.p50_us), "{:?}", read.reply_latency);
        assert!((98_000..=100_500).contains(&read.reply_latency.p99_us), "{:?}", read.reply_latency);
        assert!((99_000..=100_500).contains(&read.reply_latency.max_us), "{:?}", read.reply_latency);
        assert_eq!(read.sync_latency.count, 1);
        assert_eq!((read.queue_depth, read.queue_capacity), (3, 10));
        stats.reset_latencies();
        assert_eq!(stats.read(0, 10).reply_latency, Latency::default());
    }

    #[test]
    fn histograms_count_each_latency_in_the_bucket_of_the_first_bound_at_or_above_it() {
        let stats = SharedStats::default();
        let replies = [
            Duration::ZERO,
            Duration::from_micros(50),
            Duration::from_micros(51),
            Duration::from_millis(1),
            Duration::from_secs(10),
            Duration::from_secs(11),
        ];
        stats.record_turn(Duration::from_micros(700), None, &replies);
        stats.record_snapshot_pause(Duration::from_micros(99));
        // The latency distributions start afresh; the histograms never do.
        stats.reset_latencies();
        let histograms = stats.histograms();
        let reply = histograms.reply;
        let mut expected = [0u64; LATENCY_BUCKETS];
        expected[0] = 2; // 0 and 50 µs: up to 50.
        expected[1] = 1; // 51 µs: up to 100.
        expected[4] = 1; // 1 ms: up to 1 000.
        expected[16] = 1; // 10 s: up to the last bound.
        expected[17] = 1; // 11 s: beyond it.
        assert_eq!(reply.counts, expected);
        assert_eq!(reply.count(), 6);
        // As the distributions do, a latency counts as at least 1 µs.
        assert_eq!(reply.sum_us, 1 + 50 + 51 + 1_000 + 10_000_000 + 11_000_000);
        assert_eq!((histograms.turn.count(), histograms.turn.counts[4], histograms.turn.sum_us), (1, 1, 700));
        assert_eq!(histograms.sync, LatencyHistogram::default(), "the turn did not sync");
        assert_eq!((histograms.snapshot_pause.counts[1], histograms.snapshot_pause.sum_us), (1, 99));
    }
}
