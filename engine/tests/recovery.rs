//! Event sourcing and recovery (R8.1, R8.2): a pseudo-random workload replayed from the log
//! alone, from a snapshot plus the tail, and after compaction gives the same state and the
//! same reads as the running engine; what is not logged (heartbeats, queries, rate-limit
//! budgets) and how it is reset at recovery; unusable snapshots and gaps in the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{
    Command, Config, Engine, Error, EventStore, GeneralStatus::*, LastOnline, LogicalState,
};
use presence_storage_mem::MemStore;

const USERS: [&str; 6] = ["u0", "u1", "u2", "u3", "u4", "u5"];
const DEVICES: [&str; 3] = ["d0", "d1", "d2"];
const CUSTOMS: [&str; 4] = ["", "busy", "away", "会议中"];

/// Small limits, so that a few hundred steps reach kicks, evictions, timeouts, retention
/// expiries and rate limits.
fn workload_config() -> Config {
    Config {
        friend_notifications: true,
        heartbeat_timeout_ms: 5_000,
        max_devices_per_user: 2,
        max_subscriptions: 3,
        max_subscribe_batch: 4,
        max_query_batch: 4,
        rate_limit_calls: 2,
        rate_limit_window_ms: 3_000,
        subscription_retention_ms: 20_000,
        ..Config::default()
    }
}

fn targets(rng: &mut Rng, min: u64) -> Vec<&'static str> {
    let n = min + rng.below(5 - min);
    (0..n).map(|_| *rng.pick(&USERS)).collect()
}

/// A random command, or `None` for a tick. Commands that need a connected session mostly
/// pick one the user has, so that most of them are accepted.
fn random_command(rng: &mut Rng, e: &Engine<MemStore>) -> Option<Command> {
    let user = *rng.pick(&USERS);
    let mut device = *rng.pick(&DEVICES);
    let connected: Vec<String> =
        e.sessions(user).into_iter().filter(|s| s.connected).map(|s| s.device.to_string()).collect();
    if !connected.is_empty() && rng.chance(85) {
        let chosen = rng.pick(&connected).clone();
        device = DEVICES.iter().copied().find(|d| *d == chosen).unwrap();
    }
    let command = match rng.below(100) {
        0..=17 => Command::login(user, device),
        18..=23 => Command::logout(user, device),
        24..=31 => Command::disconnect(user, device),
        32..=43 => Command::heartbeat(user, device),
        44..=53 => Command::set_status(user, device, *rng.pick(&CUSTOMS)),
        54..=68 => Command::subscribe(user, device, targets(rng, 1)),
        69..=73 => Command::unsubscribe(user, device, targets(rng, 0)),
        74..=80 => Command::get_status(user, device, targets(rng, 1)),
        81..=86 => Command::add_friend(user, *rng.pick(&USERS)),
        87..=90 => Command::remove_friend(user, *rng.pick(&USERS)),
        _ => return None, // a tick
    };
    Some(command)
}

/// What the running engine showed at the end of a workload.
struct Ran {
    store: MemStore,
    state: LogicalState,
    reads: Vec<Reads>,
    users: Vec<String>,
    last_seq: u64,
    snapshots: Vec<u64>,
}

fn run_workload(seed: u64, steps: usize) -> Ran {
    let mut rng = Rng::new(seed);
    let mut e = engine_with(workload_config());
    let mut at_ms = 0u64;
    let (mut accepted, mut refused_count, mut ticks_with_events) = (0, 0, 0);
    for step in 0..steps {
        at_ms = match rng.below(100) {
            0..=4 => at_ms + 25_000,
            5..=9 => at_ms.saturating_sub(rng.below(4_000)),
            _ => at_ms + rng.below(700),
        };
        let seq = e.last_seq();
        match random_command(&mut rng, &e) {
            None => {
                let out = tick(&mut e, at_ms);
                assert_eq!(e.last_seq(), seq + out.events as u64);
                ticks_with_events += usize::from(out.events > 0);
            }
            Some(command) => {
                let state = e.logical_state();
                let what = format!("step {step}: {command:?}");
                match e.execute(command, at_ms) {
                    Ok(out) => {
                        accepted += 1;
                        assert_eq!(e.last_seq(), seq + out.events as u64, "{what}");
                    }
                    Err(err) => {
                        refused_count += 1;
                        assert_ne!(err.code(), 9000, "{what}");
                        assert_eq!(e.last_seq(), seq, "{what}");
                        assert_eq!(e.logical_state(), state, "{what}");
                    }
                }
            }
        }
        if rng.chance(3) {
            e.snapshot().unwrap();
        }
    }
    assert!(accepted > steps / 3 && refused_count > 10 && ticks_with_events > 3, "a dull workload");
    let mut users: Vec<String> = e.user_ids().map(|u| u.to_string()).collect();
    users.extend(USERS.iter().map(|u| u.to_string()));
    users.sort();
    users.dedup();
    let state = e.logical_state();
    let reads = all_reads(&e, &users);
    let last_seq = e.last_seq();
    let store = e.into_store();
    let snapshots = store.snapshots().unwrap();
    Ran { store, state, reads, users, last_seq, snapshots }
}

fn assert_same(ran: &Ran, reopened: &Engine<MemStore>, how: &str) {
    assert_eq!(reopened.last_seq(), ran.last_seq, "{how}");
    assert_eq!(reopened.logical_state(), ran.state, "{how}");
    let mut users = ran.users.clone();
    users.extend(reopened.user_ids().map(|u| u.to_string()));
    users.sort();
    users.dedup();
    assert_eq!(users, ran.users, "{how}: the reopened engine knows other users");
    assert_eq!(all_reads(reopened, &ran.users), ran.reads, "{how}");
}

const SEEDS: [u64; 4] = [1, 0x5eed, 0xdead_beef, 20_240_601];

// R8.1
#[test]
fn replaying_the_whole_log_gives_the_running_state() {
    for seed in SEEDS {
        let ran = run_workload(seed, 400);
        assert!(ran.last_seq > 100, "seed {seed}: only {} events", ran.last_seq);
        let reopened = Engine::open(workload_config(), log_only(&ran.store)).unwrap();
        assert_eq!(reopened.recovery().snapshot_seq, 0);
        assert_eq!(reopened.recovery().events_replayed, ran.last_seq);
        assert_same(&ran, &reopened, &format!("seed {seed}, log only"));
    }
}

// R8.1
#[test]
fn a_snapshot_plus_the_tail_gives_the_running_state() {
    for seed in SEEDS {
        let ran = run_workload(seed, 400);
        let newest = *ran.snapshots.last().expect("the workload takes snapshots");
        let reopened = Engine::open(workload_config(), ran.store.clone()).unwrap();
        assert_eq!(reopened.recovery().snapshot_seq, newest);
        assert!(reopened.recovery().skipped_snapshots.is_empty());
        assert_eq!(reopened.recovery().events_replayed, ran.last_seq - newest);
        assert_same(&ran, &reopened, &format!("seed {seed}, snapshot {newest} + tail"));
        // Every older snapshot works as a starting point too.
        for &seq in &ran.snapshots {
            let mut store = log_only(&ran.store);
            store.save_snapshot(seq, &ran.store.load_snapshot(seq).unwrap().unwrap()).unwrap();
            let reopened = Engine::open(workload_config(), store).unwrap();
            assert_eq!(reopened.recovery().snapshot_seq, seq);
            assert_same(&ran, &reopened, &format!("seed {seed}, snapshot {seq} + tail"));
        }
    }
}

// R8.1
#[test]
fn compaction_keeps_the_state() {
    for seed in SEEDS {
        let ran = run_workload(seed, 400);
        let newest = *ran.snapshots.last().unwrap();
        let mut e = Engine::open(workload_config(), ran.store.clone()).unwrap();
        e.compact().unwrap();
        let store = e.into_store();
        assert_eq!(store.snapshots().unwrap(), vec![newest]);
        let first = store.read_from(1).unwrap().next().map(|b| b.unwrap().first_seq);
        assert!(first.is_none_or(|s| s > newest), "seed {seed}: batch {first:?} survived compaction");
        let reopened = Engine::open(workload_config(), store).unwrap();
        assert_same(&ran, &reopened, &format!("seed {seed}, compacted at {newest}"));
        // A snapshot at the very end, compacted: nothing left to replay.
        let mut e = reopened;
        assert_eq!(e.snapshot().unwrap(), ran.last_seq);
        e.compact().unwrap();
        let reopened = Engine::open(workload_config(), e.into_store()).unwrap();
        assert_eq!(reopened.recovery().snapshot_seq, ran.last_seq);
        assert_eq!(reopened.recovery().events_replayed, 0);
        assert_same(&ran, &reopened, &format!("seed {seed}, compacted at the end"));
    }
}

// R8.1
#[test]
fn sequence_numbers_are_contiguous() {
    let ran = run_workload(7, 300);
    let mut next = 1;
    for batch in ran.store.read_from(1).unwrap() {
        let batch = batch.unwrap();
        assert_eq!(batch.first_seq, next);
        assert!(batch.count >= 1);
        next = batch.last_seq() + 1;
    }
    assert_eq!(next, ran.last_seq + 1);
    assert_eq!(ran.store.next_seq(), ran.last_seq + 1);
}

// R8.1
#[test]
fn replay_does_not_depend_on_todays_configuration() {
    let mut e = engine_with(Config { max_devices_per_user: 3, max_subscriptions: 5, ..Config::default() });
    for device in ["a", "b", "c"] {
        ok(&mut e, Command::login("alice", device), 1);
    }
    ok(&mut e, Command::subscribe("alice", "a", ["v", "w", "x", "y", "z"]), 2);
    let state = e.logical_state();
    let tighter = Config { max_devices_per_user: 1, max_subscriptions: 1, ..Config::default() };
    let reopened = Engine::open(tighter, e.into_store()).unwrap();
    assert_eq!(reopened.logical_state(), state);
    assert_eq!(reopened.sessions("alice").len(), 3);
    assert_eq!(reopened.subscriptions("alice").len(), 5);
}

// R8.1
#[test]
fn an_unusable_snapshot_falls_back_to_an_older_one_or_the_log() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 2);
    let older = e.snapshot().unwrap();
    ok(&mut e, Command::login("bob", "pc"), 3);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 4);
    let newest = e.snapshot().unwrap();
    ok(&mut e, Command::add_friend("alice", "bob"), 5);
    let state = e.logical_state();
    let mut store = e.into_store();
    store.save_snapshot(newest, b"not a snapshot").unwrap();
    let reopened = Engine::open(Config::default(), store.clone()).unwrap();
    assert_eq!(reopened.recovery().snapshot_seq, older);
    assert_eq!(reopened.recovery().skipped_snapshots.len(), 1);
    assert_eq!(reopened.recovery().skipped_snapshots[0].0, newest);
    assert_eq!(reopened.logical_state(), state);
    store.save_snapshot(older, &[]).unwrap();
    let reopened = Engine::open(Config::default(), store).unwrap();
    assert_eq!(reopened.recovery().snapshot_seq, 0);
    assert_eq!(reopened.recovery().skipped_snapshots.len(), 2);
    assert_eq!(reopened.logical_state(), state);
}

// R8.1
#[test]
fn a_gap_in_the_log_fails_recovery_naming_the_missing_events() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::login("bob", "pc"), 2);
    let seq = e.snapshot().unwrap();
    ok(&mut e, Command::login("carol", "pc"), 3);
    e.compact().unwrap();
    let mut store = e.into_store();
    store.save_snapshot(seq, b"garbage").unwrap();
    let err = Engine::open(Config::default(), store).err().expect("events 1..2 are gone");
    assert_eq!(err.code(), 9000);
    assert!(err.to_string().contains("1..3"), "{err}");
}

// R8.2
#[test]
fn heartbeats_and_queries_are_not_logged() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 0);
    let seq = e.last_seq();
    let state = e.logical_state();
    for i in 1..50 {
        ok(&mut e, Command::heartbeat("alice", "phone"), i * 1_000);
        ok(&mut e, Command::login("bob", "pc"), i * 1_000);
        ok(&mut e, Command::get_status("bob", "pc", ["alice"]), i * 1_000);
        ok(&mut e, Command::get_status("alice", "phone", ["alice"]), i * 1_000);
    }
    assert_eq!(e.last_seq(), seq);
    assert_eq!(e.store().next_seq(), seq + 1);
    assert_eq!(e.logical_state(), state, "heartbeat times are not part of the logical state");
}

// R8.2
#[test]
fn after_recovery_connected_sessions_count_from_the_first_call() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 100);
    ok(&mut e, Command::disconnect("bob", "pc"), 200);
    ok(&mut e, Command::heartbeat("alice", "phone"), 300_000);
    let mut e = Engine::open(Config::default(), e.into_store()).unwrap();
    // Downtime far longer than the timeout: the first call after recovery is at 5 000 000.
    let out = tick(&mut e, 5_000_000);
    assert_eq!(out.events, 0, "a restart does not time out every session at once");
    assert_eq!(e.sessions("alice")[0].heartbeat_at_ms, 5_000_000);
    assert_eq!(e.sessions("alice")[0].login_at_ms, 0);
    tick(&mut e, 5_399_999);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 5_400_000);
    assert_eq!(general(&e, "alice"), Offline);
    assert_eq!(general(&e, "bob"), Offline);
}

// R8.2
#[test]
fn the_recovery_time_is_set_by_the_first_command_too() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    let seq = e.snapshot().unwrap();
    let mut e = Engine::open(Config::default(), e.into_store()).unwrap();
    assert_eq!(e.recovery().snapshot_seq, seq);
    ok(&mut e, Command::login("bob", "pc"), 1_000_000);
    assert_eq!(e.sessions("alice")[0].heartbeat_at_ms, 1_000_000);
    tick(&mut e, 1_399_999);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 1_400_000);
    assert_eq!((general(&e, "alice"), general(&e, "bob")), (Offline, Offline));
}

// R8.2
#[test]
fn rate_limit_windows_start_empty_after_recovery() {
    let mut e = engine();
    ok(&mut e, Command::login("me", "pc"), 0);
    for i in 0..20 {
        ok(&mut e, Command::subscribe("me", "pc", [format!("t{i}")]), 1_000);
    }
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["x"]), 1_000), 7008);
    let mut e = Engine::open(Config::default(), e.into_store()).unwrap();
    for i in 20..40 {
        ok(&mut e, Command::subscribe("me", "pc", [format!("t{i}")]), 1_000);
    }
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["x"]), 1_000), 7008);
}

// R8.1
#[test]
fn retention_and_last_online_survive_recovery() {
    let config = Config { subscription_retention_ms: 10_000, ..Config::default() };
    let mut e = engine_with(config.clone());
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::disconnect("bob", "pc"), 1_000);
    for snapshot in [false, true] {
        let mut store = e.store().clone();
        if snapshot {
            let mut with = Engine::open(config.clone(), store).unwrap();
            with.snapshot().unwrap();
            store = with.into_store();
        }
        let mut reopened = Engine::open(config.clone(), store).unwrap();
        assert_eq!(reopened.last_online("bob"), LastOnline::At(1_000));
        tick(&mut reopened, 10_999);
        assert_eq!(subs(&reopened, "bob"), strings(&["alice"]));
        tick(&mut reopened, 11_000);
        assert!(reopened.subscriptions("bob").is_empty(), "snapshot: {snapshot}");
    }
}

// R8.1
#[test]
fn a_snapshot_with_no_tail_recovers_everything() {
    let mut e = engine_with(Config { friend_notifications: true, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 10);
    ok(&mut e, Command::login("alice", "tablet"), 20);
    ok(&mut e, Command::set_status("alice", "tablet", "busy"), 30);
    ok(&mut e, Command::login("bob", "pc"), 40);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice", "ghost"]), 50);
    ok(&mut e, Command::add_friend("bob", "carol"), 60);
    ok(&mut e, Command::disconnect("bob", "pc"), 70);
    let users = strings(&["alice", "bob", "carol", "ghost"]);
    let reads = all_reads(&e, &users);
    let seq = e.snapshot().unwrap();
    assert_eq!(seq, e.last_seq());
    let reopened = Engine::open(Config::default(), e.into_store()).unwrap();
    assert_eq!(reopened.recovery().snapshot_seq, seq);
    assert_eq!(reopened.recovery().events_replayed, 0);
    assert_eq!(all_reads(&reopened, &users), reads);
    assert_eq!(reopened.status("alice"), status(Online, "busy"));
    assert_eq!(reopened.subscriber_count("ghost"), 1);
}

// R8.1: a snapshot may end inside a stored batch (a store's first batch for a sequence may
// start before it): replay skips that batch's events up to the snapshot and applies the rest.
#[test]
fn a_snapshot_that_ends_inside_a_batch_replays_the_rest_of_it() {
    let mut single = engine();
    let mut grouped = engine();
    let mut commands = Vec::new();
    for u in ["ann", "bob", "cid", "dee", "eve"] {
        commands.push(Command::login(u, "phone"));
        commands.push(Command::set_status(u, "phone", format!("{u} is busy")));
        commands.push(Command::subscribe(u, "phone", ["ann", "bob", "eve"].into_iter().filter(|t| *t != u)));
    }
    commands.push(Command::logout("bob", "phone"));
    // The same commands, one batch each in `single` (a snapshot after each) and seven to a
    // group commit in `grouped`.
    for (i, chunk) in commands.chunks(7).enumerate() {
        let at_ms = i as u64 * 1_000;
        for command in chunk {
            ok(&mut single, command.clone(), at_ms);
            single.snapshot().unwrap();
        }
        let mut group = grouped.group();
        for command in chunk {
            group.execute(command.clone(), at_ms).unwrap();
        }
        group.commit().unwrap();
    }
    assert_eq!(single.last_seq(), grouped.last_seq());
    let last = grouped.last_seq();
    let mut inside = 0;
    for seq in single.store().snapshots().unwrap() {
        let mut store = grouped.store().clone();
        store.save_snapshot(seq, &single.store().load_snapshot(seq).unwrap().unwrap()).unwrap();
        let starts_before =
            store.read_from(seq + 1).unwrap().next().is_some_and(|b| b.unwrap().first_seq <= seq);
        inside += usize::from(starts_before);
        let reopened = Engine::open(Config::default(), store).unwrap();
        assert_eq!(reopened.recovery().snapshot_seq, seq);
        assert_eq!(reopened.recovery().events_replayed, last - seq, "snapshot {seq}");
        assert_eq!(reopened.logical_state(), grouped.logical_state(), "snapshot {seq}");
    }
    assert!(inside > 5, "only {inside} snapshots end inside a batch");
}

// R8.1: a snapshot captured between commands, encoded apart from the engine (on another
// thread) and then saved is the snapshot `Engine::snapshot` saves; an engine refuses the
// snapshot of another.
#[test]
fn a_snapshot_taken_in_three_steps_is_the_one_taken_at_once() {
    let ran = run_workload(SEEDS[1], 400);
    let mut e = Engine::open(workload_config(), ran.store.clone()).unwrap();
    let captured = e.capture_snapshot();
    assert_eq!(captured.last_seq(), ran.last_seq);
    let encoded = std::thread::spawn(move || captured.encode()).join().unwrap().unwrap();
    assert_eq!(encoded.last_seq(), ran.last_seq);

    let mut at_once = Engine::open(workload_config(), ran.store.clone()).unwrap();
    assert_eq!(at_once.snapshot().unwrap(), ran.last_seq);
    let saved = at_once.store().load_snapshot(ran.last_seq).unwrap().unwrap();
    assert_eq!(encoded.bytes(), &saved[..], "the same bytes as Engine::snapshot");

    let before = at_once.store().snapshots().unwrap();
    let err = at_once.save_encoded_snapshot(&encoded, true).unwrap_err();
    assert!(matches!(err, Error::InvalidParameter(_)), "{err}");
    assert_eq!(at_once.store().snapshots().unwrap(), before, "nothing saved, nothing compacted");

    e.save_encoded_snapshot(&encoded, true).unwrap();
    let store = e.into_store();
    assert_eq!(store.snapshots().unwrap(), vec![ran.last_seq], "compacted");
    let reopened = Engine::open(workload_config(), store).unwrap();
    assert_eq!(reopened.recovery().snapshot_seq, ran.last_seq);
    assert_eq!(reopened.recovery().events_replayed, 0);
    assert_same(&ran, &reopened, "a snapshot taken in three steps");
}

// R8.4: the sessions a reopened engine kept can be disconnected once the host knows the time
// of the restart, as `RestoredSessions::Disconnect` does at open, and recovery counts them.
#[test]
fn restored_sessions_can_be_disconnected_after_the_open() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("alice", "pc"), 10);
    ok(&mut e, Command::login("bob", "pc"), 20);
    ok(&mut e, Command::disconnect("bob", "pc"), 30);
    let mut e = Engine::open(Config::default(), e.into_store()).unwrap();
    assert_eq!(e.recovery().sessions_disconnected, 0);
    assert_eq!(general(&e, "alice"), Online);
    assert_eq!(e.disconnect_restored(1_000).unwrap(), 2);
    assert_eq!(e.recovery().sessions_disconnected, 2);
    assert_eq!(general(&e, "alice"), Offline);
    assert_eq!(e.disconnect_restored(2_000).unwrap(), 0, "nobody is left connected");
    assert_eq!(e.recovery().sessions_disconnected, 2);
}
