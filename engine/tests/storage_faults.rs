//! Storage failures (R7.1, R8.3) with `FaultyStore`: a failed append refuses the command or
//! tick with code 9000 and leaves state, reads and rate-limit budgets as they were; the same
//! command succeeds once the store works again; a batch is in the store before its notices
//! are handed out, and a command's events are one batch.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{codec, Command, Config, Engine, Error, EventStore, GeneralStatus::*, StoreErrorKind};
use presence_storage_mem::{Faults, FaultyStore, MemStore};

type Faulty = Engine<FaultyStore<MemStore>>;

fn faulty(config: Config) -> (Faulty, Faults) {
    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    (Engine::open(config, store).unwrap(), faults)
}

fn populated() -> (Faulty, Faults) {
    let (mut e, faults) =
        faulty(Config { friend_notifications: true, max_devices_per_user: 2, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("alice", "tablet"), 0);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 0);
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice", "carol"]), 0);
    ok(&mut e, Command::add_friend("alice", "carol"), 0);
    ok(&mut e, Command::login("carol", "pc"), 0);
    ok(&mut e, Command::disconnect("carol", "pc"), 0);
    (e, faults)
}

fn storage_error(err: &Error) -> StoreErrorKind {
    match err {
        Error::Storage(e) => e.kind(),
        other => panic!("expected a storage error, got {other:?}"),
    }
}

// R7.1
#[test]
fn a_failed_append_refuses_every_kind_of_command_and_changes_nothing() {
    let (mut e, faults) = populated();
    let users = strings(&["alice", "bob", "carol", "dave"]);
    let state = e.logical_state();
    let before = all_reads(&e, &users);
    let seq = e.last_seq();
    let next = e.store().next_seq();
    let commands = vec![
        Command::login("dave", "pc"),
        Command::login("carol", "pc"),
        Command::set_status("alice", "tablet", "free"),
        Command::subscribe("bob", "pc", ["dave"]),
        Command::unsubscribe("bob", "pc", ["alice"]),
        Command::add_friend("bob", "dave"),
        Command::remove_friend("alice", "carol"),
        Command::logout("alice", "phone"),
        Command::login("alice", "pc"),
        Command::disconnect("bob", "pc"),
    ];
    faults.fail_appends(true);
    for command in commands.clone() {
        let err = refused(&mut e, command, 10);
        assert_eq!(err.code(), 9000);
        assert_eq!(storage_error(&err), StoreErrorKind::Injected);
        assert_eq!(e.last_seq(), seq);
        assert_eq!(e.store().next_seq(), next);
    }
    assert_eq!(e.logical_state(), state);
    assert_eq!(all_reads(&e, &users), before);
    assert_eq!(e.now_ms(), 0, "a refused command's time is not adopted");
    faults.fail_appends(false);
    for command in commands {
        let what = format!("{command:?}");
        let out = ok(&mut e, command, 10);
        assert!(out.events > 0, "{what}");
    }
    assert_eq!(e.store().next_seq(), e.last_seq() + 1);
}

// R7.1
#[test]
fn the_same_command_succeeds_after_the_store_recovers_with_its_notices() {
    let (mut e, faults) = populated();
    faults.fail_appends(true);
    assert_eq!(refused(&mut e, Command::logout("alice", "phone"), 5).code(), 9000);
    assert_eq!(refused(&mut e, Command::logout("alice", "tablet"), 5).code(), 9000);
    faults.fail_appends(false);
    ok(&mut e, Command::logout("alice", "phone"), 5);
    let out = ok(&mut e, Command::logout("alice", "tablet"), 5);
    assert_eq!(
        told(&e, &out),
        expect(&[("bob", "pc", "alice UNLOGINED ")]),
        "carol is a friend but disconnected"
    );
}

// R7.1
#[test]
fn a_failed_tick_changes_nothing_and_the_same_tick_works_later() {
    let (mut e, faults) = faulty(Config { subscription_retention_ms: 1_000, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 100);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 100);
    let state = e.logical_state();
    faults.fail_appends(true);
    let err = e.tick(400_000).unwrap_err();
    assert_eq!(err.code(), 9000);
    assert_eq!(e.logical_state(), state);
    assert_eq!(general(&e, "alice"), Online);
    assert_eq!(e.now_ms(), 100);
    // The due deadlines were put back: a later tick still finds them.
    assert_eq!(e.tick(400_100).unwrap_err().code(), 9000);
    faults.fail_appends(false);
    let out = tick(&mut e, 400_100);
    assert_eq!(out.events, 2);
    assert_eq!((general(&e, "alice"), general(&e, "bob")), (Offline, Offline));
    // Now the retention countdown of bob's list, with a failing store first.
    faults.fail_appends(true);
    assert_eq!(e.tick(401_100).unwrap_err().code(), 9000);
    assert_eq!(subs(&e, "bob"), strings(&["alice"]));
    faults.fail_appends(false);
    let out = tick(&mut e, 401_100);
    assert_eq!(out.events, 1);
    assert!(e.subscriptions("bob").is_empty());
}

// R7.1
#[test]
fn a_failed_append_uses_no_rate_limit_budget() {
    let (mut e, faults) = faulty(Config::default());
    ok(&mut e, Command::login("me", "pc"), 0);
    for i in 0..19 {
        ok(&mut e, Command::subscribe("me", "pc", [format!("t{i}")]), 10);
    }
    faults.fail_appends(true);
    for _ in 0..5 {
        assert_eq!(refused(&mut e, Command::subscribe("me", "pc", ["new"]), 10).code(), 9000);
    }
    faults.fail_appends(false);
    ok(&mut e, Command::subscribe("me", "pc", ["new"]), 10);
    assert_eq!(refused(&mut e, Command::subscribe("me", "pc", ["t0"]), 10).code(), 7008);
}

// R8.2
#[test]
fn commands_that_log_nothing_do_not_touch_the_store() {
    let (mut e, faults) = populated();
    faults.fail_appends(true);
    ok(&mut e, Command::heartbeat("alice", "phone"), 10);
    ok(&mut e, Command::login("alice", "phone"), 10);
    ok(&mut e, Command::get_status("bob", "pc", ["alice"]), 10);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 10);
    ok(&mut e, Command::add_friend("carol", "alice"), 10);
    tick(&mut e, 20);
}

// R8.3
#[test]
fn a_failed_sync_is_reported_as_a_storage_error() {
    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    let mut e = Engine::open(Config::default(), store).unwrap();
    ok(&mut e, Command::login("alice", "phone"), 0);
    e.sync().unwrap();
    faults.fail_syncs(true);
    let err = e.sync().unwrap_err();
    assert_eq!(err.code(), 9000);
    assert_eq!(storage_error(&err), StoreErrorKind::Injected);
    faults.fail_syncs(false);
    e.sync().unwrap();
}

// R8.3
#[test]
fn the_batch_is_in_the_store_when_the_notices_are_handed_out() {
    let (mut e, _faults) = faulty(Config { max_devices_per_user: 1, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 0);
    let out = ok(&mut e, Command::login("alice", "tablet"), 1);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
    // The kick is two events, written as one batch, already in the store.
    assert_eq!(out.events, 2);
    assert_eq!(e.store().next_seq(), e.last_seq() + 1);
    let batches: Vec<_> = e.store().read_from(1).unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!((batches[1].first_seq, batches[1].count), (2, 2));
    let (header, events) = codec::decode_batch(&batches[1].bytes).unwrap();
    assert_eq!((header.first_seq, header.count, events.len()), (2, 2, 2));
}

// R8.3
#[test]
fn a_crash_loses_only_unacknowledged_commands() {
    let (mut e, faults) = faulty(Config::default());
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 1);
    faults.fail_after_appends(2);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 2);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 3);
    assert_eq!(refused(&mut e, Command::logout("alice", "phone"), 4).code(), 9000);
    assert_eq!(refused(&mut e, Command::login("carol", "pc"), 5).code(), 9000);
    let acknowledged = e.logical_state();
    let users = strings(&["alice", "bob", "carol"]);
    let reads = all_reads(&e, &users);
    // "Crash": reopen from what the store holds.
    let store = e.into_store().into_inner();
    let reopened = Engine::open(Config::default(), store).unwrap();
    assert_eq!(reopened.logical_state(), acknowledged);
    assert_eq!(all_reads(&reopened, &users), reads);
    assert_eq!(reopened.status("alice"), status(Online, "busy"));
    assert_eq!(general(&reopened, "carol"), Unlogined);
}
