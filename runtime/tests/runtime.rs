//! The runtime thread: group commit, ticks from a manual clock, shutdown, store failures,
//! sink panics and many senders (docs/DESIGN.md: the runtime; R2.4, R7.1, R8.3).

use std::thread;

use std::sync::{Arc, Barrier, Mutex};

use presence_engine::{CauseKind, Command, Config, Engine, EventStore, GeneralStatus, Names, Notice, Reply};
use presence_runtime::{
    ChannelSink, DiscardSink, ManualClock, NoticeSink, OwnedDelivery, Runtime, RuntimeConfig, RuntimeError,
    RuntimeStop, SnapshotPolicy, TrySendError,
};
use presence_storage_mem::{FaultyStore, MemStore};

fn spawn_mem(clock: &ManualClock) -> (Runtime<MemStore>, presence_runtime::Handle) {
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    Runtime::spawn(engine, clock.clone(), DiscardSink, RuntimeConfig::default())
}

// R2.4: the runtime ticks at the clock's time; a silent session times out.
#[test]
fn heartbeat_timeouts_fire_from_the_runtime_ticks() {
    let clock = ManualClock::new(1_000);
    let (runtime, handle) = spawn_mem(&clock);
    handle.execute(Command::login("alice", "phone")).unwrap();
    handle.execute(Command::login("bob", "pc")).unwrap();
    clock.advance(399_999);
    handle.execute(Command::heartbeat("bob", "pc")).unwrap();
    handle.tick().unwrap();
    clock.advance(1);
    handle.tick().unwrap();
    let engine = runtime.shutdown().unwrap();
    assert_eq!(engine.status("alice").general, GeneralStatus::Offline);
    assert_eq!(engine.status("bob").general, GeneralStatus::Online);
}

// R8.3: replies come after the commit; statuses travel back to the caller.
#[test]
fn replies_carry_results_and_errors() {
    let clock = ManualClock::new(0);
    let (runtime, handle) = spawn_mem(&clock);
    handle.execute(Command::login("alice", "phone")).unwrap();
    let reply = handle.execute(Command::get_status("alice", "phone", ["alice"])).unwrap();
    let Reply::Statuses(statuses) = reply else { panic!("expected statuses") };
    assert_eq!(statuses[0].status.general, GeneralStatus::Online);
    let refused = handle.execute(Command::heartbeat("alice", "tablet")).unwrap_err();
    assert_eq!(refused.code(), Some(6014));
    drop(runtime);
}

// Shutdown runs what is queued, syncs, and hands back an engine whose store replays to it.
#[test]
fn shutdown_loses_nothing_that_was_queued() {
    let clock = ManualClock::new(0);
    let (runtime, handle) = spawn_mem(&clock);
    for i in 0..2_000 {
        handle.submit(Command::login(format!("user{i}"), "phone")).unwrap();
    }
    let engine = runtime.shutdown().unwrap();
    assert_eq!(engine.stats().sessions_connected, 2_000);
    assert!(matches!(handle.submit(Command::login("late", "phone")), Err(RuntimeError::Stopped)));
    let live = engine.logical_state();
    let reopened = Engine::open(Config::default(), engine.into_store()).unwrap();
    assert_eq!(reopened.logical_state(), live);
}

// R7.1: a store that refuses the turn fails every command of it, and changes nothing.
#[test]
fn a_failing_store_fails_the_commands_and_changes_nothing() {
    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    let engine = Engine::open(Config::default(), store).unwrap();
    let clock = ManualClock::new(0);
    let (runtime, handle) = Runtime::spawn(engine, clock, DiscardSink, RuntimeConfig::default());
    handle.execute(Command::login("alice", "phone")).unwrap();
    assert!(handle.takes_writes());
    faults.fail_appends(true);
    let refused = handle.execute(Command::set_status("alice", "phone", "away")).unwrap_err();
    assert_eq!(refused.code(), Some(9000));
    let refused = handle.execute(Command::login("bob", "pc")).unwrap_err();
    assert_eq!(refused.code(), Some(9000));
    // The log is intact: the runtime goes on, but says its store does not take writes.
    assert_eq!(handle.stop_reason(), None);
    assert!(!handle.takes_writes());
    faults.fail_appends(false);
    handle.execute(Command::login("carol", "pc")).unwrap();
    assert!(handle.takes_writes(), "a turn whose batch was stored and synced");
    let engine = runtime.shutdown().unwrap();
    assert_eq!(&*engine.status("alice").custom, "");
    assert_eq!(engine.status("bob").general, GeneralStatus::Unlogined);
    assert_eq!(engine.status("carol").general, GeneralStatus::Online);
    assert_eq!(engine.store().next_seq(), 3, "two events stored: alice's and carol's logins");
}

// A failed sync leaves durability unknown: the runtime fails the turn and stops.
#[test]
fn a_failed_sync_stops_the_runtime() {
    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    let engine = Engine::open(Config::default(), store).unwrap();
    let (runtime, handle) =
        Runtime::spawn(engine, ManualClock::new(0), DiscardSink, RuntimeConfig::default());
    let stopped = handle.stopped();
    assert_eq!(stopped.wait_timeout(std::time::Duration::ZERO), None, "it runs");
    faults.fail_syncs(true);
    assert_eq!(handle.execute(Command::login("alice", "phone")).unwrap_err().code(), Some(9000));
    // The host learns it at once, with the cause, whether it looks or waits.
    let reason = handle.stop_reason().expect("the runtime says it stopped");
    assert!(reason.failure().is_some_and(|cause| cause.contains("sync failed on purpose")), "{reason}");
    assert_eq!(stopped.wait(), reason);
    assert!(!handle.takes_writes());
    assert!(matches!(handle.execute(Command::login("bob", "pc")), Err(RuntimeError::Stopped)));
    assert_eq!(runtime.shutdown().err().map(|e| e.code()), Some(9000));
}

// The host's own shutdown is a stop too, without a failure; an awaiting task is woken.
#[tokio::test]
async fn a_shutdown_resolves_the_stopped_future_without_a_failure() {
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    let (runtime, handle) =
        Runtime::spawn(engine, ManualClock::new(0), DiscardSink, RuntimeConfig::default());
    let waiting = tokio::spawn(handle.stopped());
    tokio::task::yield_now().await;
    assert_eq!(handle.stop_reason(), None);
    tokio::task::spawn_blocking(move || runtime.shutdown().map(drop)).await.unwrap().unwrap();
    assert_eq!(waiting.await.unwrap(), RuntimeStop::Shutdown);
    assert_eq!(handle.stop_reason(), Some(RuntimeStop::Shutdown));
}

struct PanickingSink;

impl NoticeSink for PanickingSink {
    fn deliver(&mut self, _notices: &[Notice], _names: &Names<'_>) {
        panic!("the host's sink failed");
    }
}

// R8.3: a panic in the host's sink loses no acknowledged event; the runtime goes on.
#[test]
fn a_panicking_sink_loses_no_acknowledged_event() {
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    let (runtime, handle) =
        Runtime::spawn(engine, ManualClock::new(0), PanickingSink, RuntimeConfig::default());
    handle.execute(Command::login("alice", "phone")).unwrap();
    handle.execute(Command::set_status("alice", "phone", "here")).unwrap();
    assert!(runtime.stats().sink_panics >= 1);
    let engine = runtime.shutdown().unwrap();
    let reopened = Engine::open(Config::default(), engine.into_store()).unwrap();
    assert_eq!(&*reopened.status("alice").custom, "here");
}

// R5.2, R8.3: notices reach the host's channel with names resolved, after the reply.
#[test]
fn the_channel_sink_delivers_resolved_notices() {
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    let (sink, notices) = ChannelSink::bounded(16);
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), sink, RuntimeConfig::default());
    handle.execute(Command::login("bob", "pc")).unwrap();
    handle.execute(Command::subscribe("bob", "pc", ["alice"])).unwrap();
    let _ = notices.recv().unwrap(); // bob's own login
    handle.execute(Command::login("alice", "phone")).unwrap();
    let mut batch = notices.recv().unwrap();
    batch.sort_by_key(|d| format!("{d:?}"));
    let to: Vec<String> = batch
        .iter()
        .map(|d| match d {
            OwnedDelivery::Status { to, device, about, status, .. } => {
                format!("{to}/{device} {about} {}", status.general)
            }
            OwnedDelivery::Kicked { to, device } => format!("{to}/{device} kicked"),
        })
        .collect();
    assert_eq!(to, ["alice/phone alice ONLINE", "bob/pc alice ONLINE"]);
    drop(runtime);
}

// Many threads at once: every command is answered and applied exactly once.
#[test]
fn many_senders_at_once() {
    let clock = ManualClock::new(0);
    let config = RuntimeConfig { queue_capacity: 64, max_batch: 32, ..RuntimeConfig::default() };
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    let (runtime, handle) = Runtime::spawn(engine, clock, DiscardSink, config);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let handle = handle.clone();
            thread::spawn(move || {
                for i in 0..250 {
                    let user = format!("t{t}u{i}");
                    handle.execute(Command::login(user.as_str(), "phone")).unwrap();
                    handle.execute(Command::set_status(user.as_str(), "phone", "hi")).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let engine = runtime.shutdown().unwrap();
    assert_eq!(engine.stats().sessions_connected, 2_000);
    assert_eq!(engine.last_seq(), 4_000);
    assert_eq!(&*engine.status("t7u249").custom, "hi");
}

// A reply that can no longer come must not hang its waiter: commands queued behind a turn
// whose sync failed end with Stopped (or the turn's 9000), never block forever.
#[test]
fn waiting_on_a_stopped_runtime_never_hangs() {
    for _ in 0..50 {
        let store = FaultyStore::new(MemStore::new());
        let faults = store.faults();
        let engine = Engine::open(Config::default(), store).unwrap();
        let config = RuntimeConfig { max_batch: 2, ..RuntimeConfig::default() };
        let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), DiscardSink, config);
        faults.fail_syncs(true);
        let pending: Vec<_> =
            (0..20).filter_map(|i| handle.send(Command::login(format!("u{i}"), "phone")).ok()).collect();
        for reply in pending {
            match reply.wait() {
                Err(RuntimeError::Stopped) => {}
                Err(RuntimeError::Refused(e)) => assert_eq!(e.code(), 9000),
                other => panic!("a command after a failed sync succeeded: {other:?}"),
            }
        }
        assert!(runtime.shutdown().is_err());
    }
}

// An async host: 10 000 requests in flight at once from one single-threaded tokio runtime,
// each awaited, none on a blocking thread. The queue is smaller than the load, so the tasks
// that find it full are handed their command back and try again after yielding.
#[test]
fn ten_thousand_requests_awaited_from_one_async_thread() {
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    let config = RuntimeConfig { queue_capacity: 512, ..RuntimeConfig::default() };
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), DiscardSink, config);
    let executor = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let results = executor.block_on(async {
        let tasks: Vec<_> = (0..10_000)
            .map(|i| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    let mut command = Command::login(format!("user{i}"), "phone");
                    let pending = loop {
                        match handle.try_send(command) {
                            Ok(pending) => break pending,
                            Err(TrySendError::Full(back)) => {
                                command = back;
                                tokio::task::yield_now().await;
                            }
                            Err(TrySendError::Stopped) => panic!("the runtime stopped"),
                        }
                    };
                    pending.await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(results, 10_000);
    let stats = runtime.stats();
    assert_eq!(stats.commands, 10_000);
    assert!(stats.shed > 0, "the queue of 512 was full at times: {stats:?}");
    assert_eq!(stats.reply_latency.count, 10_000);
    let engine = runtime.shutdown().unwrap();
    assert_eq!(engine.stats().sessions_connected, 10_000);
}

/// A sink that holds the runtime on its first delivery until the test lets it go, so that
/// the test can queue requests behind a turn that is under way.
struct GateSink {
    gate: Arc<Barrier>,
    held: bool,
}

impl NoticeSink for GateSink {
    fn deliver(&mut self, _notices: &[Notice], _names: &Names<'_>) {
        if !self.held {
            self.held = true;
            self.gate.wait();
            self.gate.wait();
        }
    }
}

// Reads run between turns from their own queue: a read queued behind a full command queue
// is answered after the turn under way, before the commands queued ahead of it, and it sees
// that turn whole.
#[test]
fn a_read_does_not_wait_behind_queued_commands() {
    let gate = Arc::new(Barrier::new(2));
    let sink = GateSink { gate: Arc::clone(&gate), held: false };
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    let config = RuntimeConfig { max_batch: 10, queue_capacity: 1_000, ..RuntimeConfig::default() };
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), sink, config);
    // The first turn: ten logins, whose notices the sink holds.
    let first: Vec<_> = (0..10).map(|i| handle.send(Command::login(format!("a{i}"), "p")).unwrap()).collect();
    gate.wait();
    // The runtime is inside the first turn's delivery: queue 500 more logins, then a read.
    let rest: Vec<_> = (0..500).map(|i| handle.send(Command::login(format!("b{i}"), "p")).unwrap()).collect();
    let read = handle.read(|engine| engine.stats().sessions_connected).unwrap();
    gate.wait();
    assert_eq!(read.wait().unwrap(), 10, "the read saw the first turn whole and nothing after it");
    for reply in first.into_iter().chain(rest) {
        reply.wait().unwrap();
    }
    let after = handle.read(|engine| (engine.stats().sessions_connected, engine.last_seq())).unwrap();
    assert_eq!(after.wait().unwrap(), (510, 510));
    assert!(runtime.stats().reads >= 2);
    drop(runtime);
}

// R2.4: the fast heartbeat by session handle, through the runtime.
#[test]
fn a_heartbeat_by_session_handle_through_the_runtime() {
    let clock = ManualClock::new(0);
    let (runtime, handle) = spawn_mem(&clock);
    handle.execute(Command::login("alice", "phone")).unwrap();
    let session = handle.session_handle("alice", "phone").unwrap().wait().unwrap().unwrap();
    assert!(handle.session_handle("alice", "pad").unwrap().wait().unwrap().is_none());
    clock.advance(300_000);
    handle.heartbeat(session).unwrap().wait().unwrap();
    clock.advance(200_000);
    handle.tick().unwrap();
    let status = handle.read(|engine| engine.status("alice").general).unwrap().wait().unwrap();
    assert_eq!(status, GeneralStatus::Online, "the heartbeat at 300 000 moved the deadline");
    handle.try_submit_heartbeat(session).unwrap();
    handle.execute(Command::logout("alice", "phone")).unwrap();
    let refused = handle.heartbeat(session).unwrap().wait().unwrap_err();
    assert_eq!(refused.code(), Some(6014));
    drop(runtime);
}

// A long-running runtime bounds its log: by its policy it snapshots and compacts, while it
// goes on answering; a host can also ask for a snapshot.
#[test]
fn the_runtime_snapshots_and_compacts_by_policy() {
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    let snapshots =
        SnapshotPolicy { every_events: Some(100), every_bytes: None, every_ms: None, compact: true };
    let config = RuntimeConfig { max_batch: 16, snapshots, ..RuntimeConfig::default() };
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), DiscardSink, config);
    for i in 0..1_000 {
        handle.execute(Command::login(format!("user{i}"), "phone")).unwrap();
    }
    let asked = handle.snapshot().unwrap().wait().unwrap();
    assert_eq!(asked, 1_000);
    let stats = runtime.stats();
    assert!(stats.snapshots >= 5, "{stats:?}");
    assert_eq!((stats.snapshot_failures, stats.snapshot_seq), (0, 1_000));
    let engine = runtime.shutdown().unwrap();
    let store = engine.into_store();
    assert_eq!(store.snapshots().unwrap(), [1_000], "older snapshots were compacted away");
    assert_eq!(store.read_from(1).unwrap().count(), 0, "the log the snapshot covers is gone");
    let reopened = Engine::open(Config::default(), store).unwrap();
    assert_eq!(reopened.recovery().snapshot_seq, 1_000);
    assert_eq!(reopened.stats().sessions_connected, 1_000);
}

// A turn that outgrows one batch of the store (a network store takes about 1 MiB) is
// appended as several; every command of it succeeds.
#[test]
fn a_turn_larger_than_a_store_batch_is_split() {
    let store = MemStore::with_batch_bytes_max(2_048);
    let engine = Engine::open(Config::default(), store).unwrap();
    let config = RuntimeConfig { max_batch: 1_000, ..RuntimeConfig::default() };
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), DiscardSink, config);
    let replies: Vec<_> = (0..1_000)
        .map(|i| handle.send(Command::login(format!("a-rather-long-user-name-{i:04}"), "phone")).unwrap())
        .collect();
    for reply in replies {
        reply.wait().unwrap();
    }
    let stats = runtime.stats();
    assert_eq!((stats.commands, stats.store_failures), (1_000, 0));
    let engine = runtime.shutdown().unwrap();
    let batches: Vec<usize> = engine.store().read_from(1).unwrap().map(|b| b.unwrap().bytes.len()).collect();
    assert!(batches.iter().all(|&len| len <= 2_048), "{batches:?}");
    assert!(batches.len() > 20, "{} batches", batches.len());
}

/// Who changed, why, and on which device.
type Seen = Vec<(String, CauseKind, Option<String>)>;

/// A sink that records what a server-side hook would see.
struct CauseSink(Arc<Mutex<Seen>>);

impl NoticeSink for CauseSink {
    fn deliver(&mut self, notices: &[Notice], _names: &Names<'_>) {
        for notice in notices {
            if let Notice::Status(n) = notice {
                let device = n.cause.device.as_ref().map(|d| d.to_string());
                self.0.lock().unwrap().push((n.about.to_string(), n.cause.kind, device));
            }
        }
    }
}

// R5.7: a server-side sink sees the cause and the device of each status change.
#[test]
fn a_sink_sees_why_each_status_changed() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let engine = Engine::open(Config::default(), MemStore::new()).unwrap();
    let clock = ManualClock::new(0);
    let sink = CauseSink(Arc::clone(&seen));
    let config = RuntimeConfig { auto_tick: false, ..RuntimeConfig::default() };
    let (runtime, handle) = Runtime::spawn(engine, clock.clone(), sink, config);
    handle.execute(Command::login("alice", "phone")).unwrap();
    handle.execute(Command::set_status("alice", "phone", "busy")).unwrap();
    handle.execute(Command::disconnect("alice", "phone")).unwrap();
    handle.execute(Command::login("alice", "pad")).unwrap();
    handle.tick_at(400_000).unwrap();
    drop(runtime);
    let seen = seen.lock().unwrap().clone();
    let expected = [
        ("alice", CauseKind::Login, "phone"),
        ("alice", CauseKind::CustomStatus, "phone"),
        ("alice", CauseKind::Disconnect, "phone"),
        ("alice", CauseKind::Login, "pad"),
        ("alice", CauseKind::HeartbeatTimeout, "pad"),
    ];
    let expected: Vec<_> =
        expected.iter().map(|(u, k, d)| (u.to_string(), *k, Some(d.to_string()))).collect();
    assert_eq!(seen, expected);
}

// R5.6: replies go out before the turn's notices, so a client can get a notice and a reply
// about the same user in either order. One that keeps the status with the highest version it
// has seen never ends on a stale one, however they interleave.
#[test]
fn a_client_that_keeps_the_newest_version_never_ends_stale() {
    let config = Config { rate_limit_calls: 1_000, ..Config::default() };
    let engine = Engine::open(config, MemStore::new()).unwrap();
    let (sink, notices) = ChannelSink::bounded(10_000);
    let config = RuntimeConfig { max_batch: 8, ..RuntimeConfig::default() };
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), sink, config);
    handle.execute(Command::login("watcher", "pc")).unwrap();
    handle.execute(Command::login("star", "phone")).unwrap();
    handle.execute(Command::subscribe("watcher", "pc", ["star"])).unwrap();
    // The star changes its status while the watcher asks for it, from two threads.
    let changer = {
        let handle = handle.clone();
        thread::spawn(move || {
            for i in 0..300 {
                handle.execute(Command::set_status("star", "phone", format!("s{i}"))).unwrap();
            }
        })
    };
    let mut replies = Vec::new();
    for _ in 0..300 {
        let reply = handle.execute(Command::get_status("watcher", "pc", ["star"])).unwrap();
        if let Reply::Statuses(list) = reply {
            replies.push((list[0].status.clone(), list[0].version));
        }
    }
    changer.join().unwrap();
    let truth = handle.read(|engine| engine.versioned_status("star")).unwrap().wait().unwrap();
    drop(runtime);
    let mut pushed = Vec::new();
    while let Ok(batch) = notices.try_recv() {
        for delivery in batch {
            if let OwnedDelivery::Status { to, about, status, version, .. } = delivery {
                if to.as_str() == "watcher" && about.as_str() == "star" {
                    pushed.push((status, version));
                }
            }
        }
    }
    // Worst orders for the client: every reply after every notice, and the other way round,
    // and interleaved backwards.
    let orders: [Vec<(presence_engine::UserStatus, u64)>; 3] = [
        pushed.iter().chain(&replies).cloned().collect(),
        replies.iter().chain(&pushed).cloned().collect(),
        replies.iter().rev().chain(pushed.iter().rev()).cloned().collect(),
    ];
    for order in &orders {
        let mut shown: Option<(presence_engine::UserStatus, u64)> = None;
        for (status, version) in order {
            if shown.as_ref().is_none_or(|(_, v)| version > v) {
                shown = Some((status.clone(), *version));
            }
        }
        assert_eq!(shown, Some(truth.clone()), "the client ends on the newest status");
    }
    // A client that kept whatever came last would end stale in the backwards order.
    assert!(pushed.len() > 1 && replies.len() > 1);
    assert_ne!(orders[2].last(), Some(&truth), "the test's worst order really is stale for a naive client");
}

// The histograms a Prometheus exporter serves count what the distributions count, every reply
// refused or not, and go on across a reset of the distributions (their counters never go down).
#[test]
fn the_latency_histograms_count_every_reply_and_outlive_a_reset() {
    let clock = ManualClock::new(0);
    let (runtime, handle) = spawn_mem(&clock);
    handle.execute(Command::login("alice", "phone")).unwrap();
    handle.execute(Command::set_status("alice", "phone", "busy")).unwrap();
    let too_long = "x".repeat(51);
    assert!(handle.execute(Command::set_status("alice", "phone", too_long)).is_err(), "R3.1");
    // A turn is recorded after its replies are sent: wait for the turn to be over.
    handle.quiesce(std::time::Duration::from_secs(10)).unwrap();
    let (stats, histograms) = (handle.stats(), handle.histograms());
    assert_eq!(histograms.reply.count(), 3);
    assert_eq!(histograms.reply.count(), stats.reply_latency.count);
    assert_eq!(histograms.turn.count(), stats.turn_latency.count);
    assert_eq!(histograms.sync.count(), stats.sync_latency.count);
    assert!(histograms.turn.count() >= 1 && histograms.turn.sum_us >= 1);
    handle.reset_latencies();
    assert_eq!(handle.stats().reply_latency.count, 0);
    assert_eq!(handle.histograms(), histograms, "the histograms are never reset");
    runtime.shutdown().unwrap();
}

// R7.1: on a wire (the serde feature) a delivery a host hands on round-trips through JSON,
// the status under its own key with its version (the engine's wire types are tested in
// engine/tests/errors_and_check_order.rs).
#[test]
fn an_owned_delivery_serializes_as_documented() {
    use presence_engine::UserStatus;
    let status = UserStatus { general: GeneralStatus::Online, custom: "busy".into() };
    let delivery = OwnedDelivery::Status {
        to: "ann".into(),
        device: "pc".into(),
        about: "bob".into(),
        status,
        version: 7,
    };
    let json = serde_json::to_value(&delivery).unwrap();
    assert_eq!(json["status"]["about"], "bob");
    assert_eq!(json["status"]["version"], 7);
    assert_eq!(serde_json::from_value::<OwnedDelivery>(json).unwrap(), delivery);
}
