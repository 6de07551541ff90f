//! Errors (R7.1, R7.2): every error's stable code, the order in which checks run (a command
//! failing several checks gets the first), and that a refused command changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{Command, Config, Edition, Engine, Error};
use presence_storage_mem::{FaultyStore, MemStore};

fn message(err: &Error) -> String {
    match err {
        Error::InvalidParameter(m) => m.clone(),
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
}

fn gated(edition: Edition, status_feature: bool) -> Engine<MemStore> {
    let mut e = engine_with(Config { edition, status_feature, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    ok(&mut e, Command::login("me", "off"), 0);
    ok(&mut e, Command::disconnect("me", "off"), 0);
    e
}

// R7.1
#[test]
fn every_error_has_its_stable_code_and_name() {
    let mut e = engine_with(Config { rate_limit_calls: 1, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    let invalid = refused(&mut e, Command::login("", "pc"), 0);
    assert!(matches!(invalid, Error::InvalidParameter(_)));
    assert_eq!((invalid.code(), invalid.name()), (6017, "InvalidParameter"));
    let not_logged_in = refused(&mut e, Command::heartbeat("you", "pc"), 0);
    assert!(matches!(not_logged_in, Error::NotLoggedIn(_)));
    assert_eq!((not_logged_in.code(), not_logged_in.name()), (6014, "NotLoggedIn"));
    ok(&mut e, Command::get_status("me", "pc", ["x"]), 0);
    let limited = refused(&mut e, Command::get_status("me", "pc", ["x"]), 0);
    assert!(matches!(limited, Error::RateLimited(_)));
    assert_eq!((limited.code(), limited.name()), (7008, "RateLimited"));

    let edition = refused(&mut gated(Edition::Standard, true), Command::subscribe("me", "pc", ["x"]), 1);
    assert!(matches!(edition, Error::EditionNotSupported(_)));
    assert_eq!((edition.code(), edition.name()), (7013, "EditionNotSupported"));
    let feature = refused(&mut gated(Edition::Ultimate, false), Command::subscribe("me", "pc", ["x"]), 1);
    assert!(matches!(feature, Error::FeatureNotEnabled(_)));
    assert_eq!((feature.code(), feature.name()), (72001, "FeatureNotEnabled"));

    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    let mut faulty = Engine::open(Config::default(), store).unwrap();
    faults.fail_appends(true);
    let storage = faulty.execute(Command::login("me", "pc"), 0).unwrap_err();
    assert!(matches!(storage, Error::Storage(_)));
    assert_eq!((storage.code(), storage.name()), (9000, "Storage"));

    let config = Engine::open(Config { max_subscriptions: 0, ..Config::default() }, MemStore::new());
    let config = config.err().expect("a zero cap is refused");
    assert!(matches!(config, Error::InvalidConfig(_)));
    assert_eq!(config.code(), 6017);
}

// R7.1
#[test]
fn every_error_displays_its_name_code_and_a_message() {
    let mut e = engine();
    let err = refused(&mut e, Command::set_status("me", "pc", "x"), 0);
    let shown = err.to_string();
    assert!(shown.starts_with("NotLoggedIn (6014): "), "{shown}");
    assert!(shown.len() > "NotLoggedIn (6014): ".len());
    let err = refused(&mut e, Command::login("me", "x".repeat(65)), 0);
    assert!(err.to_string().starts_with("InvalidParameter (6017): "), "{err}");
}

// R7.1
#[test]
fn a_refused_command_changes_nothing() {
    let mut e = engine_with(Config { rate_limit_calls: 1, max_devices_per_user: 1, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 100);
    ok(&mut e, Command::login("me", "old"), 100);
    ok(&mut e, Command::login("you", "pc"), 100);
    ok(&mut e, Command::subscribe("you", "pc", ["me"]), 100);
    ok(&mut e, Command::get_status("you", "pc", ["x"]), 100);
    ok(&mut e, Command::set_status("me", "old", "busy"), 100);
    let state = e.logical_state();
    let users = strings(&["me", "you", "x"]);
    let before = all_reads(&e, &users);
    let seq = e.last_seq();
    let attempts = vec![
        Command::login("me", ""),
        Command::login("m\u{1b}e", "pc"),
        Command::logout("me", "pc"),
        Command::disconnect("you", "phone"),
        Command::heartbeat("me", "pc"),
        Command::set_status("me", "pc", "x"),
        Command::set_status("me", "old", "y".repeat(51)),
        Command::subscribe("you", "pc", ["you"]),
        Command::subscribe("you", "pc", ["a"]),
        Command::unsubscribe("you", "pc", vec!["me"; 101]),
        Command::unsubscribe("you", "tablet", ["me"]),
        Command::get_status("you", "pc", ["me"]),
        Command::add_friend("me", "me"),
        Command::remove_friend("", "me"),
    ];
    let count = attempts.len();
    for (i, command) in attempts.into_iter().enumerate() {
        let err = refused(&mut e, command, 1_000 + i as u64);
        assert_ne!(err.code(), 9000);
        assert_eq!(e.last_seq(), seq, "attempt {i} logged an event");
        assert_eq!(e.now_ms(), 100, "attempt {i}: the time of a refused command is not adopted");
    }
    assert_eq!(count, 14);
    assert_eq!(e.logical_state(), state);
    assert_eq!(all_reads(&e, &users), before);
    // The rate-limit budget is as it was: you spent 1 of 1 subscribe calls; unsubscribe
    // still has its own single call.
    ok(&mut e, Command::unsubscribe("you", "pc", ["me"]), 100);
    assert!(e.subscriptions("you").is_empty());
}

// R7.2
#[test]
fn ids_are_checked_before_the_batch_shape() {
    let mut e = engine();
    let none: [&str; 0] = [];
    let err = refused(&mut e, Command::subscribe("", "pc", none), 0);
    assert!(message(&err).contains("user id"), "{err}");
    let err = refused(&mut e, Command::get_status("me", "p\nc", none), 0);
    assert!(message(&err).contains("device id"), "{err}");
    let err = refused(&mut e, Command::unsubscribe("me", "", vec!["x"; 101]), 0);
    assert!(message(&err).contains("device id"), "{err}");
}

// R7.2
#[test]
fn the_batch_shape_is_checked_before_self_subscription() {
    let mut e = engine();
    ok(&mut e, Command::login("me", "pc"), 0);
    let err = refused(&mut e, Command::subscribe("me", "pc", vec!["me"; 101]), 0);
    let text = message(&err);
    assert!(text.contains("101") && !text.contains("itself"), "{err}");
    // A bad target id is reported rather than the self-subscription.
    let err = refused(&mut e, Command::subscribe("me", "pc", ["me", "bad\u{7}id"]), 0);
    assert!(message(&err).contains("target"), "{err}");
    let err = refused(&mut e, Command::subscribe("me", "pc", ["x", "me"]), 0);
    assert!(message(&err).contains("itself"), "{err}");
}

// R7.2
#[test]
fn parameter_checks_come_before_the_session_check() {
    let mut e = engine();
    // No session at all, and a parameter is bad: InvalidParameter wins.
    assert_eq!(code(&mut e, Command::subscribe("nobody", "pc", ["nobody"]), 0), 6017);
    let none: [&str; 0] = [];
    assert_eq!(code(&mut e, Command::subscribe("nobody", "pc", none), 0), 6017);
    assert_eq!(code(&mut e, Command::get_status("nobody", "pc", [""]), 0), 6017);
    assert_eq!(code(&mut e, Command::get_status("nobody", "pc", vec!["a"; 501]), 0), 6017);
    assert_eq!(code(&mut e, Command::unsubscribe("nobody", "pc", vec!["a"; 101]), 0), 6017);
    assert_eq!(code(&mut e, Command::set_status("nobody", "pc", "x".repeat(51)), 0), 6017);
    assert_eq!(code(&mut e, Command::heartbeat("nobody", "x".repeat(65)), 0), 6017);
    assert_eq!(code(&mut e, Command::logout("n\u{0}body", "pc"), 0), 6017);
}

// R7.2
#[test]
fn the_session_is_checked_before_edition_and_feature() {
    let mut e = gated(Edition::Standard, false);
    assert_eq!(code(&mut e, Command::subscribe("me", "tablet", ["x"]), 1), 6014);
    assert_eq!(code(&mut e, Command::subscribe("me", "off", ["x"]), 1), 6014);
    assert_eq!(code(&mut e, Command::unsubscribe("me", "off", ["x"]), 1), 6014);
    assert_eq!(code(&mut e, Command::get_status("nobody", "pc", ["x"]), 1), 6014);
    assert_eq!(code(&mut e, Command::get_status("me", "off", ["x"]), 1), 6014);
}

// R7.2
#[test]
fn the_edition_is_checked_before_the_feature_switch() {
    let mut e = gated(Edition::Standard, false);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["x"]), 1), 7013);
    assert_eq!(code(&mut e, Command::unsubscribe("me", "pc", ["x"]), 1), 7013);
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["x"]), 1), 7013);
    let mut e = gated(Edition::Ultimate, false);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["x"]), 1), 72001);
    assert_eq!(code(&mut e, Command::unsubscribe("me", "pc", ["x"]), 1), 72001);
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["x"]), 1), 72001);
}

// R7.2
#[test]
fn the_rate_limit_is_checked_last() {
    let mut e = engine();
    ok(&mut e, Command::login("me", "pc"), 0);
    ok(&mut e, Command::login("me", "tablet"), 0);
    for i in 0..20 {
        ok(&mut e, Command::subscribe("me", "pc", [format!("t{i}")]), 0);
    }
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["x"]), 0), 7008);
    // Every earlier check still wins over the spent budget.
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["me"]), 0), 6017);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", vec!["x"; 101]), 0), 6017);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", [""]), 0), 6017);
    assert_eq!(code(&mut e, Command::subscribe("me", "phone", ["x"]), 0), 6014);
    ok(&mut e, Command::disconnect("me", "tablet"), 0);
    assert_eq!(code(&mut e, Command::subscribe("me", "tablet", ["x"]), 0), 6014);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["x"]), 0), 7008);
}

// R7.2
#[test]
fn a_command_failing_every_check_reports_the_id() {
    let mut e = gated(Edition::Standard, false);
    let err = refused(&mut e, Command::subscribe("m\u{85}e", "nodevice", vec!["m\u{85}e"; 101]), 1);
    let text = message(&err);
    assert!(text.contains("user id") && text.contains("control"), "{err}");
}

// R7.1: on a wire (the serde feature) an error is its code, its name and its message; the
// types a host sends, a command, a reply with versions, round-trip through JSON (a delivery,
// the runtime's `OwnedDelivery`, in runtime/tests/runtime.rs).
#[test]
fn wire_types_serialize_as_documented() {
    use presence_engine::{GeneralStatus, LastOnline, Reply, TargetStatus, UserStatus};
    let mut e = common::engine();
    let err = e.execute(Command::heartbeat("alice", "phone"), 0).unwrap_err();
    let json = serde_json::to_value(&err).unwrap();
    assert_eq!(json["code"], 6014);
    assert_eq!(json["name"], "NotLoggedIn");
    assert!(json["message"].as_str().unwrap().contains("alice"));

    let command = Command::login_with_owner("alice", "phone", "gw1");
    let json = serde_json::to_value(&command).unwrap();
    assert_eq!(json, serde_json::json!({"op": "login", "user": "alice", "device": "phone", "owner": "gw1"}));
    assert_eq!(serde_json::from_value::<Command>(json).unwrap(), command);

    let status = UserStatus { general: GeneralStatus::Online, custom: "busy".into() };
    let reply = Reply::Statuses(vec![TargetStatus { user: "bob".into(), status, version: 7 }]);
    let json = serde_json::to_value(&reply).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"statuses": [{"user": "bob", "status": "ONLINE", "custom": "busy", "version": 7}]})
    );
    assert_eq!(serde_json::from_value::<Reply>(json).unwrap(), reply);

    assert_eq!(serde_json::to_value(LastOnline::At(5)).unwrap(), serde_json::json!({"at": 5}));
    assert_eq!(serde_json::to_value(LastOnline::Never).unwrap(), serde_json::json!("never"));
}

// R9: a host that runs several shards names the shard an error came from; its kind, code and
// source stay.
#[test]
fn an_error_in_a_shard_keeps_its_code_and_names_the_shard() {
    use presence_engine::{StoreError, StoreErrorKind};
    let err = Error::NotLoggedIn("no session".into()).in_shard(2);
    assert_eq!((err.code(), err.name()), (6014, "NotLoggedIn"));
    assert!(err.to_string().ends_with("shard 2: no session"), "{err}");
    let err = Error::Storage(StoreError::new(StoreErrorKind::Io, "disk full")).in_shard(1);
    assert!(matches!(&err, Error::Storage(e) if e.kind() == StoreErrorKind::Io), "{err}");
    assert!(err.to_string().contains("shard 1: disk full"), "{err}");
}
