//! `presence simulate`: the project's main job. A realistic load through the runtime on an
//! embedded sled store or a NATS JetStream stream, on a simulated clock that runs faster than real time, and a summary
//! of what happened.
//!
//! The load: users log in on one to three devices, send heartbeats every 30 to 120 s,
//! sometimes vanish without a logout (so heartbeat timeouts happen, R2.4) or log out, change
//! their custom status, query and subscribe (a few users are followed by thousands), and make
//! friends. The commands depend only on the seed and the options: same seed, same commands.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::Instant;

use crossbeam_channel::Receiver;
use indicatif::{ProgressBar, ProgressStyle};
use presence_engine::{
    Command, Config, Engine, EngineOptions, EventStore, HeapBytes, ShardMap, Stats, StoreError,
    StoreErrorKind, StoredBatch,
};
use presence_runtime::{
    default_threads, open_shards, DiscardSink, Handle, ManualClock, PendingReply, Runtime, RuntimeConfig,
    RuntimeStats, ShardedRuntime, SnapshotPolicy,
};
use presence_storage_sled::{is_deployment, open_deployment, Durability, MANIFEST_FILE};
use serde_json::json;

use crate::stores::{open_or_create, StoreAddress};

/// Durability of a sled store (see `presence_storage_sled::Durability`); a NATS store's
/// appends are durable once acknowledged.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum DurabilityArg {
    /// A flush per append.
    Sync,
    /// One append and one flush per runtime turn (group commit).
    Group,
    /// sled's background flush only (may lose the last 500 ms on a crash).
    Buffered,
}

/// Arguments of `presence simulate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The store, created or reopened and continued: a sled directory, or a NATS JetStream
    /// stream as nats://HOST:PORT/STREAM (the stream is created if missing).
    #[arg(long, default_value = "presence-data")]
    store: String,
    /// Replicas of a NATS stream this run creates (an existing stream keeps its own).
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// After each acknowledged turn (appended and synced, before its replies go out),
    /// replace this file's content with the last acknowledged sequence number: what a crash
    /// must not lose. With --durability buffered it promises nothing.
    #[arg(long)]
    acked_file: Option<PathBuf>,
    /// How many users.
    #[arg(long, default_value_t = 20_000)]
    users: u32,
    /// How long the simulated run lasts, in simulated seconds.
    #[arg(long = "duration-s", default_value_t = 3_600)]
    duration_s: u64,
    /// Seed of the load: the same seed gives the same commands.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How durable each runtime turn is.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Group)]
    durability: DurabilityArg,
    /// Snapshot the state every this many events (and compact the log it covers, unless
    /// --keep-log), so the store stays bounded however long the run.
    #[arg(long, default_value_t = 200_000)]
    snapshot_events: u64,
    /// Keep the whole log (no compaction), so `presence replay` can rebuild the state from it
    /// alone.
    #[arg(long)]
    keep_log: bool,
    /// Run a sharded deployment of this many shards (users placed by FNV-1a of their id,
    /// docs/FORMAT.md) in the sled directory, created with that count; an existing
    /// deployment must be opened with its own count (or without --shards).
    #[arg(long)]
    shards: Option<u32>,
    /// Engine threads of a sharded deployment (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `presence simulate`.
pub fn run(args: Args) -> ExitCode {
    match simulate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("presence simulate: {message}");
            ExitCode::from(2)
        }
    }
}

const KINDS: [&str; 10] = [
    "login",
    "logout",
    "heartbeat",
    "set_status",
    "get_status",
    "subscribe",
    "unsubscribe",
    "add_friend",
    "remove_friend",
    "disconnect",
];
const CELEBRITIES: u32 = 5;
const STATUSES: [&str; 6] = ["", "in a meeting", "gaming", "brb", "on a call", "🎧 focus"];

fn kind_index(command: &Command) -> usize {
    KINDS.iter().position(|k| *k == command.name()).unwrap_or(0)
}

/// xorshift64*: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1_000) < per_mille
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Login(u32),
    Heartbeat(u32, u8, u32),
    Status(u32, u32),
    Query(u32, u32),
}

#[derive(Clone, Debug, Default)]
struct SimUser {
    /// Bit d: device d is believed connected.
    devices: u8,
    /// Bumped at every logout or vanishing of the last device, to drop scheduled actions.
    generation: u32,
    seen: bool,
}

/// The deterministic load generator.
struct Load {
    rng: Rng,
    users: Vec<SimUser>,
    queue: BinaryHeap<Reverse<(u64, u64, Action)>>,
    order: u64,
}

fn user(u: u32) -> String {
    format!("user{u}")
}

fn device(d: u8) -> String {
    ["phone", "laptop", "tablet"][usize::from(d % 3)].to_string()
}

impl Load {
    fn new(seed: u64, users: u32, start_ms: u64, duration_ms: u64) -> Self {
        let mut load = Load {
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            users: vec![SimUser::default(); users as usize],
            queue: BinaryHeap::new(),
            order: 0,
        };
        let spread_ms = duration_ms.clamp(1, 600_000);
        for u in 0..users {
            let at = start_ms + load.rng.below(spread_ms);
            load.schedule(at, Action::Login(u));
        }
        load
    }

    fn schedule(&mut self, at_ms: u64, action: Action) {
        self.order += 1;
        self.queue.push(Reverse((at_ms, self.order, action)));
    }

    fn next_due(&mut self, end_ms: u64) -> Option<(u64, Action)> {
        let Reverse((at, _, action)) = self.queue.pop()?;
        (at <= end_ms).then_some((at, action))
    }

    fn connected_device(&self, u: u32) -> Option<u8> {
        let mask = self.users[u as usize].devices;
        (0..3).find(|d| mask & (1 << d) != 0)
    }

    /// The commands an action makes at `now`, with what it schedules next.
    fn act(&mut self, now: u64, action: Action, out: &mut Vec<Command>) {
        let users = self.users.len() as u64;
        match action {
            Action::Login(u) => {
                let count = self.rng.between(1, 3) as u8;
                let generation = self.users[u as usize].generation;
                for d in 0..count {
                    out.push(Command::login(user(u), device(d)));
                    self.users[u as usize].devices |= 1 << d;
                    let at = now + self.rng.between(30_000, 120_000);
                    self.schedule(at, Action::Heartbeat(u, d, generation));
                }
                if !std::mem::replace(&mut self.users[u as usize].seen, true) {
                    let mut targets: Vec<String> = (0..self.rng.between(5, 15))
                        .map(|_| self.rng.below(users) as u32)
                        .filter(|&t| t != u)
                        .map(user)
                        .collect();
                    targets.extend((0..CELEBRITIES).filter(|&c| c != u && self.rng.chance(500)).map(user));
                    if !targets.is_empty() {
                        out.push(Command::subscribe(user(u), device(0), targets));
                    }
                    for _ in 0..2 {
                        let friend = self.rng.below(users) as u32;
                        if friend != u {
                            out.push(Command::add_friend(user(u), user(friend)));
                        }
                    }
                }
                let at = now + self.rng.between(60_000, 1_200_000);
                self.schedule(at, Action::Status(u, generation));
                let at = now + self.rng.between(60_000, 600_000);
                self.schedule(at, Action::Query(u, generation));
            }
            Action::Heartbeat(u, d, generation) => {
                let state = &self.users[u as usize];
                if state.generation != generation || state.devices & (1 << d) == 0 {
                    return;
                }
                let roll = self.rng.below(1_000);
                if !(15..985).contains(&roll) {
                    // The device vanishes (app killed, network lost): no logout, no more
                    // heartbeats; a tick will disconnect it (R2.4). Or the user logs out.
                    if roll >= 985 {
                        out.push(Command::logout(user(u), device(d)));
                    } else if roll < 5 {
                        // The host saw the socket close (R2.2).
                        out.push(Command::disconnect(user(u), device(d)));
                    }
                    let state = &mut self.users[u as usize];
                    state.devices &= !(1 << d);
                    if state.devices == 0 {
                        state.generation += 1;
                        let at = now + self.rng.between(300_000, 3_600_000);
                        self.schedule(at, Action::Login(u));
                    }
                    return;
                }
                out.push(Command::heartbeat(user(u), device(d)));
                let at = now + self.rng.between(30_000, 120_000);
                self.schedule(at, Action::Heartbeat(u, d, generation));
            }
            Action::Status(u, generation) => {
                if self.users[u as usize].generation != generation {
                    return;
                }
                if let Some(d) = self.connected_device(u) {
                    let custom = STATUSES[self.rng.below(STATUSES.len() as u64) as usize];
                    out.push(Command::set_status(user(u), device(d), custom));
                }
                let at = now + self.rng.between(60_000, 1_200_000);
                self.schedule(at, Action::Status(u, generation));
            }
            Action::Query(u, generation) => {
                if self.users[u as usize].generation != generation {
                    return;
                }
                if let Some(d) = self.connected_device(u) {
                    let targets: Vec<String> = (0..3).map(|_| user(self.rng.below(users) as u32)).collect();
                    out.push(Command::get_status(user(u), device(d), targets));
                    if self.rng.chance(50) {
                        let target = user(self.rng.below(users) as u32);
                        out.push(Command::unsubscribe(user(u), device(d), [target]));
                    }
                }
                let at = now + self.rng.between(60_000, 600_000);
                self.schedule(at, Action::Query(u, generation));
            }
        }
    }
}

/// The store, writing to a file the last sequence number acknowledged as durable after each
/// successful `sync` (the runtime syncs each turn before it replies).
struct Acked<S> {
    inner: S,
    file: Option<PathBuf>,
    recorded: u64,
}

fn record(file: &Path, seq: u64) -> std::io::Result<()> {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{seq}\n"))?;
    std::fs::rename(&tmp, file)
}

impl<S: EventStore> EventStore for Acked<S> {
    fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }
    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.append(first_seq, count, bytes)
    }
    fn batch_bytes_max(&self) -> usize {
        self.inner.batch_bytes_max()
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        self.inner.sync()?;
        let acked = self.inner.next_seq().saturating_sub(1);
        if let Some(file) = self.file.as_deref().filter(|_| acked > self.recorded) {
            record(file, acked).map_err(|e| {
                StoreError::with_source(StoreErrorKind::Io, format!("cannot write {}", file.display()), e)
            })?;
            self.recorded = acked;
        }
        Ok(())
    }
    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        self.inner.read_from(from_seq)
    }
    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.inner.save_snapshot(last_seq, bytes)
    }
    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        self.inner.snapshots()
    }
    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.load_snapshot(last_seq)
    }
    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError> {
        self.inner.compact(upto_seq)
    }
}

/// What the reply collector saw.
#[derive(Default)]
struct Tally {
    sent: [u64; KINDS.len()],
    ok: [u64; KINDS.len()],
    refused: [u64; KINDS.len()],
    latencies_us: Vec<u32>,
}

type Pending = (usize, Instant, PendingReply);

fn collect(pending: Receiver<Pending>) -> Tally {
    let mut tally = Tally::default();
    for (kind, sent_at, reply) in pending {
        tally.sent[kind] += 1;
        match reply.wait() {
            Ok(_) => tally.ok[kind] += 1,
            Err(_) => tally.refused[kind] += 1,
        }
        tally.latencies_us.push(sent_at.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[index.min(sorted.len() - 1)]) / 1_000.0
}

/// The shard count in a deployment directory's manifest (0 if it cannot be read).
fn args_shards(dir: &Path) -> u32 {
    std::fs::read_to_string(dir.join(MANIFEST_FILE))
        .ok()
        .and_then(|text| presence_engine::Manifest::parse(&text).ok())
        .map_or(0, |m| m.shards)
}

/// What a run left behind, whether on one engine or on the shards of a deployment.
struct Ran {
    tally: Tally,
    elapsed: std::time::Duration,
    final_snapshot: u64,
    runtime: RuntimeStats,
    stats: Stats,
    heap: HeapBytes,
    events: u64,
    recovery_ms: f64,
    store_bytes: u64,
}

fn simulate(args: &Args) -> Result<(), String> {
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Group => Durability::GroupCommit,
        DurabilityArg::Buffered => Durability::Buffered,
    };
    let path = StoreAddress::parse(&args.store)?;
    let snapshots = SnapshotPolicy {
        every_events: Some(args.snapshot_events.max(1)),
        every_bytes: None,
        every_ms: None,
        compact: !args.keep_log,
    };
    // Every command and tick carries its simulated time and the runtime never ticks by
    // itself, so the run does not depend on how the runtime happens to batch: same seed,
    // same commands, same results.
    let runtime_config = RuntimeConfig { auto_tick: false, snapshots, ..RuntimeConfig::default() };
    let sharded = match &path {
        StoreAddress::Sled(dir) => args.shards.is_some() || is_deployment(dir),
        StoreAddress::Nats { .. } => false,
    };
    let ran = match (&path, sharded) {
        (StoreAddress::Sled(dir), true) => {
            if args.acked_file.is_some() {
                return Err("--acked-file records one log's sequence; a sharded run has one per shard".into());
            }
            run_sharded(args, dir, durability, runtime_config)?
        }
        (StoreAddress::Nats { .. }, _) if args.shards.is_some() => {
            return Err("--shards needs a sled directory: NATS deployments run as `presence node`".into())
        }
        _ => run_single(args, &path, durability, runtime_config)?,
    };
    report(args, &path, durability, ran)
}

fn run_single(
    args: &Args,
    path: &StoreAddress,
    durability: Durability,
    runtime_config: RuntimeConfig,
) -> Result<Ran, String> {
    let store = open_or_create(path, durability, args.replicas)?;
    let store = Acked { inner: store, file: args.acked_file.clone(), recorded: 0 };
    let config = Config::default();
    let engine = Engine::open(config.clone(), store).map_err(|e| format!("{path}: {e}"))?;
    let resumed_at_seq = engine.last_seq();
    let start_ms = engine.now_ms() + 1_000;
    let clock = ManualClock::new(start_ms);
    let (runtime, handle) = Runtime::spawn(engine, clock.clone(), DiscardSink, runtime_config);
    let (tally, elapsed, final_snapshot) = drive(args, &handle, &clock, start_ms)?;
    let runtime_stats = runtime.stats();
    let engine = runtime.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    let (stats, heap) = (engine.stats(), engine.heap_bytes());
    let events = engine.last_seq() - resumed_at_seq;
    drop(engine);

    let reopen_started = Instant::now();
    let store = open_or_create(path, durability, args.replicas).map_err(|e| format!("reopen: {e}"))?;
    let reopened = Engine::open(config, store).map_err(|e| format!("reopen: {e}"))?;
    let recovery_ms = reopen_started.elapsed().as_secs_f64() * 1e3;
    let store_bytes = reopened.store().bytes()?;
    Ok(Ran {
        tally,
        elapsed,
        final_snapshot,
        runtime: runtime_stats,
        stats,
        heap,
        events,
        recovery_ms,
        store_bytes,
    })
}

fn run_sharded(
    args: &Args,
    dir: &Path,
    durability: Durability,
    runtime_config: RuntimeConfig,
) -> Result<Ran, String> {
    let (shards, stores) = open_deployment(dir, args.shards, durability).map_err(|e| e.to_string())?;
    let config = Config::default();
    let map = ShardMap::new(shards);
    let engines = open_shards(&config, stores, &map, &EngineOptions::default())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let resumed_at_seq: u64 = engines.iter().map(Engine::last_seq).sum();
    let start_ms = engines.iter().map(Engine::now_ms).max().unwrap_or(0) + 1_000;
    let clock = ManualClock::new(start_ms);
    let threads = args.threads.unwrap_or_else(default_threads);
    let (runtime, handle) =
        ShardedRuntime::spawn(engines, threads, clock.clone(), DiscardSink, runtime_config)
            .map_err(|e| e.to_string())?;
    let (tally, elapsed, final_snapshot) = drive(args, &handle, &clock, start_ms)?;
    let runtime_stats = runtime.stats();
    let engines = runtime.shutdown().map_err(|e| format!("shutdown: {e}"))?;
    let mut stats = Stats::default();
    let mut heap = HeapBytes::default();
    for engine in &engines {
        let (s, h) = (engine.stats(), engine.heap_bytes());
        stats.users += s.users;
        stats.sessions_connected += s.sessions_connected;
        stats.sessions_disconnected += s.sessions_disconnected;
        stats.subscriptions += s.subscriptions;
        stats.friendships += s.friendships;
        heap.users_and_sessions += h.users_and_sessions;
        heap.subscriptions += h.subscriptions;
        heap.friends += h.friends;
        heap.rate_limits += h.rate_limits;
    }
    let events = engines.iter().map(Engine::last_seq).sum::<u64>() - resumed_at_seq;
    drop(engines);

    let reopen_started = Instant::now();
    let (_, stores) = open_deployment(dir, Some(shards), durability).map_err(|e| format!("reopen: {e}"))?;
    let reopened =
        open_shards(&config, stores, &map, &EngineOptions::default()).map_err(|e| format!("reopen: {e}"))?;
    let recovery_ms = reopen_started.elapsed().as_secs_f64() * 1e3;
    let mut store_bytes = 0;
    for engine in &reopened {
        store_bytes += engine.store().size_on_disk().map_err(|e| e.to_string())?;
    }
    Ok(Ran {
        tally,
        elapsed,
        final_snapshot,
        runtime: runtime_stats,
        stats,
        heap,
        events,
        recovery_ms,
        store_bytes,
    })
}

/// Sends the load through `handle` at simulated times from `start_ms`, ticking once a
/// simulated second; returns what the replies were, how long it took, and what a last
/// snapshot covers.
fn drive(
    args: &Args,
    handle: &Handle,
    clock: &ManualClock,
    start_ms: u64,
) -> Result<(Tally, std::time::Duration, u64), String> {
    let duration_ms = args.duration_s.saturating_mul(1_000);
    let end_ms = start_ms + duration_ms;
    let (pending_tx, pending_rx) = crossbeam_channel::bounded::<Pending>(8_192);
    let collector = thread::spawn(move || collect(pending_rx));

    let progress = if std::io::stderr().is_terminal() && !args.json {
        ProgressBar::new(args.duration_s)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} simulated s, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let started = Instant::now();
    let mut load = Load::new(args.seed, args.users.max(1), start_ms, duration_ms);
    let mut commands = Vec::new();
    let mut sent = 0u64;
    let mut next_tick_ms = start_ms + 1_000;
    while let Some((at_ms, action)) = load.next_due(end_ms) {
        // The host's clock ticks once a simulated second (R2.4, R4.5: only ticks expire).
        while next_tick_ms <= at_ms {
            handle.submit_tick_at(next_tick_ms).map_err(|e| e.to_string())?;
            next_tick_ms += 1_000;
        }
        clock.set(at_ms);
        load.act(at_ms, action, &mut commands);
        for command in commands.drain(..) {
            let kind = kind_index(&command);
            let reply = handle.send_at(command, at_ms).map_err(|e| e.to_string())?;
            pending_tx.send((kind, Instant::now(), reply)).map_err(|e| e.to_string())?;
            sent += 1;
        }
        let simulated_s = (at_ms - start_ms) / 1_000;
        if simulated_s != progress.position() {
            progress.set_position(simulated_s);
            progress.set_message(format!("{sent} commands"));
        }
    }
    clock.set(end_ms);
    handle.tick_at(end_ms).map_err(|e| e.to_string())?;
    drop(pending_tx);
    let tally = collector.join().map_err(|_| "the reply collector panicked".to_string())?;
    let elapsed = started.elapsed();
    // A last snapshot makes the next open fast (compacting as the run did).
    let final_snapshot =
        handle.snapshot().map_err(|e| e.to_string())?.wait().map_err(|e| format!("snapshot: {e}"))?;
    progress.finish_and_clear();
    Ok((tally, elapsed, final_snapshot))
}

fn report(args: &Args, path: &StoreAddress, durability: Durability, ran: Ran) -> Result<(), String> {
    let Ran {
        mut tally,
        elapsed,
        final_snapshot,
        runtime: runtime_stats,
        stats,
        heap,
        events,
        recovery_ms,
        store_bytes,
    } = ran;
    let (deliveries, turns) = (runtime_stats.deliveries, runtime_stats.turns);
    let snapshot_seq = final_snapshot;
    tally.latencies_us.sort_unstable();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let total: u64 = tally.sent.iter().sum();
    let sessions = stats.sessions_connected + stats.sessions_disconnected;
    let per_session = heap.users_and_sessions as f64 / sessions.max(1) as f64;
    let per_subscription = heap.subscriptions as f64 / stats.subscriptions.max(1) as f64;
    let summary = json!({
        "store": path.to_string(),
        "seed": args.seed,
        "users": args.users,
        "simulated_s": args.duration_s,
        "wall_s": seconds,
        "commands": total,
        "commands_by_kind": KINDS.iter().enumerate().map(|(i, k)| (k.to_string(), json!({
            "sent": tally.sent[i], "ok": tally.ok[i], "refused": tally.refused[i]}))).collect::<serde_json::Map<_, _>>(),
        "events": events,
        "turns": turns,
        "notices": deliveries,
        "commands_per_s": total as f64 / seconds,
        "notices_per_s": deliveries as f64 / seconds,
        "latency_p50_ms": percentile(&tally.latencies_us, 0.50),
        "latency_p99_ms": percentile(&tally.latencies_us, 0.99),
        "last_seq": snapshot_seq,
        "sessions_connected": stats.sessions_connected,
        "sessions_disconnected": stats.sessions_disconnected,
        "subscriptions": stats.subscriptions,
        "friendships": stats.friendships,
                "store_bytes": store_bytes,
        "snapshots": runtime_stats.snapshots,
        "snapshot_failures": runtime_stats.snapshot_failures,
        "log_compacted": !args.keep_log,
        "turn_latency_us": runtime_stats.turn_latency,
        "sync_latency_us": runtime_stats.sync_latency,
        "bytes_per_session": per_session,
        "bytes_per_subscription": per_subscription,
        "recovery_ms": recovery_ms,
    });
    if args.json {
        println!("{summary}");
        return Ok(());
    }
    let mode = match path {
        StoreAddress::Sled(dir) if is_deployment(dir) => {
            format!(
                "{durability:?}, {} shards on {} threads",
                args_shards(dir),
                args.threads.unwrap_or_else(default_threads)
            )
        }
        StoreAddress::Sled(_) => format!("{durability:?}"),
        StoreAddress::Nats { .. } => "JetStream: durable once acknowledged".to_string(),
    };
    println!(
        "simulated {} s of {} users in {:.1} s on {path} ({mode})",
        args.duration_s, args.users, seconds
    );
    println!("{:<14} {:>10} {:>10} {:>10}", "command", "sent", "ok", "refused");
    for (i, kind) in KINDS.iter().enumerate().filter(|(i, _)| tally.sent[*i] > 0) {
        println!("{kind:<14} {:>10} {:>10} {:>10}", tally.sent[i], tally.ok[i], tally.refused[i]);
    }
    let rows = [
        ("commands", format!("{total} ({:.0}/s)", total as f64 / seconds)),
        ("events logged", format!("{events} in {turns} group commits")),
        ("notices", format!("{deliveries} ({:.0}/s)", deliveries as f64 / seconds)),
        (
            "latency",
            format!(
                "p50 {:.2} ms, p99 {:.2} ms (queueing included)",
                percentile(&tally.latencies_us, 0.5),
                percentile(&tally.latencies_us, 0.99)
            ),
        ),
        (
            "sessions",
            format!("{} connected, {} disconnected", stats.sessions_connected, stats.sessions_disconnected),
        ),
        ("subscriptions", format!("{} ({} friendships)", stats.subscriptions, stats.friendships)),
        (
            "store",
            format!(
                "{:.1} MiB stored, last sequence {snapshot_seq}, {} snapshots{}",
                store_bytes as f64 / 1_048_576.0,
                runtime_stats.snapshots,
                if args.keep_log { ", whole log kept" } else { ", log compacted" }
            ),
        ),
        (
            "turns",
            format!(
                "p50 {:.2} ms, p99 {:.2} ms; sync p50 {:.2} ms, p99 {:.2} ms",
                runtime_stats.turn_latency.p50_us as f64 / 1e3,
                runtime_stats.turn_latency.p99_us as f64 / 1e3,
                runtime_stats.sync_latency.p50_us as f64 / 1e3,
                runtime_stats.sync_latency.p99_us as f64 / 1e3
            ),
        ),
        ("memory", format!("{per_session:.0} B per session, {per_subscription:.0} B per subscription")),
        ("next open", format!("{recovery_ms:.0} ms to recover (snapshot + tail)")),
    ];
    println!();
    for (name, value) in rows {
        println!("{name:<14} {value}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(seed: u64) -> Vec<Command> {
        let mut load = Load::new(seed, 50, 1_000, 600_000);
        let mut out = Vec::new();
        while let Some((at, action)) = load.next_due(601_000) {
            load.act(at, action, &mut out);
        }
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_commands() {
        assert_eq!(commands(7), commands(7));
        assert_ne!(commands(7), commands(8));
    }

    #[test]
    fn the_load_has_every_kind_of_traffic_it_promises() {
        let all = commands(3);
        for kind in ["login", "heartbeat", "set_status", "get_status", "subscribe", "add_friend"] {
            assert!(all.iter().any(|c| c.name() == kind), "no {kind}");
        }
    }
}
