//! The runtime thread: group commit, ticks from a manual clock, shutdown, store failures,
//! sink panics and many senders (docs/DESIGN.md: the runtime; R2.4, R7.1, R8.3).

use std::thread;

use presence_engine::runtime::{
    ChannelSink, DiscardSink, ManualClock, NoticeSink, OwnedDelivery, Runtime, RuntimeConfig, RuntimeError,
};
use presence_engine::{Command, Config, Engine, EventStore, GeneralStatus, Names, Notice, Reply};
use presence_storage_mem::{FaultyStore, MemStore};

fn spawn_mem(clock: &ManualClock) -> (Runtime<MemStore>, presence_engine::runtime::Handle) {
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
    faults.fail_appends(true);
    let refused = handle.execute(Command::set_status("alice", "phone", "away")).unwrap_err();
    assert_eq!(refused.code(), Some(9000));
    let refused = handle.execute(Command::login("bob", "pc")).unwrap_err();
    assert_eq!(refused.code(), Some(9000));
    faults.fail_appends(false);
    handle.execute(Command::login("carol", "pc")).unwrap();
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
    faults.fail_syncs(true);
    assert_eq!(handle.execute(Command::login("alice", "phone")).unwrap_err().code(), Some(9000));
    assert!(matches!(handle.execute(Command::login("bob", "pc")), Err(RuntimeError::Stopped)));
    assert_eq!(runtime.shutdown().err().map(|e| e.code()), Some(9000));
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
    assert!(runtime.stats().sink_panics.load(std::sync::atomic::Ordering::Relaxed) >= 1);
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
