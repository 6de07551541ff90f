//! Custom status (R3.1-R3.3): setting and clearing it, its length in UTF-8 bytes, the
//! connected session it needs, no gates or rate limits, no-op sets, and clearing when the
//! user stops being ONLINE.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{Command, Config, Edition, GeneralStatus::*};

// R3.1
#[test]
fn set_status_sets_and_the_empty_string_clears() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    let out = ok(&mut e, Command::set_status("alice", "phone", "in a meeting"), 10);
    assert_eq!(out.events, 1);
    assert_eq!(e.status("alice"), status(Online, "in a meeting"));
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "alice ONLINE in a meeting")]));
    let out = ok(&mut e, Command::set_status("alice", "phone", ""), 20);
    assert_eq!(e.status("alice"), status(Online, ""));
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "alice ONLINE ")]));
}

// R3.1
#[test]
fn set_status_needs_a_connected_session_on_that_device() {
    let mut e = engine();
    assert_eq!(code(&mut e, Command::set_status("alice", "phone", "x"), 0), 6014);
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("alice", "tablet"), 0);
    ok(&mut e, Command::disconnect("alice", "tablet"), 1);
    // alice is ONLINE, but not on the tablet.
    assert_eq!(code(&mut e, Command::set_status("alice", "tablet", "x"), 2), 6014);
    assert_eq!(code(&mut e, Command::set_status("alice", "pc", "x"), 2), 6014);
    assert_eq!(code(&mut e, Command::set_status("bob", "phone", "x"), 2), 6014);
    assert_eq!(custom(&e, "alice"), "");
}

// R3.1
#[test]
fn the_limit_is_fifty_bytes_of_ascii() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    let fifty = "a".repeat(50);
    ok(&mut e, Command::set_status("alice", "phone", fifty.as_str()), 1);
    assert_eq!(custom(&e, "alice"), fifty);
    let err = refused(&mut e, Command::set_status("alice", "phone", "b".repeat(51)), 2);
    assert_eq!(err.code(), 6017);
    assert_eq!(err.name(), "InvalidParameter");
    assert_eq!(custom(&e, "alice"), fifty);
}

// R3.1
#[test]
fn the_limit_counts_utf8_bytes_not_characters() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    let sixteen = "会".repeat(16);
    assert_eq!(sixteen.len(), 48);
    ok(&mut e, Command::set_status("alice", "phone", sixteen.as_str()), 1);
    assert_eq!(custom(&e, "alice"), sixteen);
    let seventeen = "会".repeat(17);
    assert_eq!(seventeen.len(), 51);
    assert_eq!(code(&mut e, Command::set_status("alice", "phone", seventeen), 2), 6017);
    // 25 two-byte characters are exactly 50 bytes.
    ok(&mut e, Command::set_status("alice", "phone", "é".repeat(25)), 3);
    assert_eq!(code(&mut e, Command::set_status("alice", "phone", "é".repeat(25) + "x"), 4), 6017);
    // 12 four-byte emoji are 48 bytes, plus two ASCII is 50.
    ok(&mut e, Command::set_status("alice", "phone", "🙂".repeat(12) + "ok"), 5);
    assert_eq!(code(&mut e, Command::set_status("alice", "phone", "🙂".repeat(13)), 6), 6017);
}

// R3.1
#[test]
fn a_configured_limit_is_used() {
    let mut e = engine_with(Config { max_custom_status_bytes: 3, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::set_status("alice", "phone", "abc"), 1);
    assert_eq!(code(&mut e, Command::set_status("alice", "phone", "é é"), 2), 6017);
    let mut off = engine_with(Config { max_custom_status_bytes: 0, ..Config::default() });
    ok(&mut off, Command::login("alice", "phone"), 0);
    assert_eq!(code(&mut off, Command::set_status("alice", "phone", "a"), 1), 6017);
    ok(&mut off, Command::set_status("alice", "phone", ""), 2);
}

// R3.1
#[test]
fn the_length_check_comes_before_the_session_check() {
    let mut e = engine();
    let err = refused(&mut e, Command::set_status("nobody", "phone", "x".repeat(51)), 0);
    assert_eq!(err.code(), 6017);
}

// R3.1
#[test]
fn a_custom_status_may_hold_control_characters() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::set_status("alice", "phone", "line 1\nline 2\t\u{7f}"), 1);
    assert_eq!(custom(&e, "alice"), "line 1\nline 2\t\u{7f}");
}

// R3.1
#[test]
fn set_status_is_never_rate_limited() {
    let mut e = engine_with(Config { rate_limit_calls: 1, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 0);
    for i in 0..100u32 {
        ok(&mut e, Command::set_status("alice", "phone", format!("s{i}")), 5);
    }
    assert_eq!(custom(&e, "alice"), "s99");
}

// R3.1
#[test]
fn set_status_is_never_gated_by_edition_or_feature_switch() {
    let config = Config { edition: Edition::Standard, status_feature: false, ..Config::default() };
    let mut e = engine_with(config);
    ok(&mut e, Command::login("alice", "phone"), 0);
    let out = ok(&mut e, Command::set_status("alice", "phone", "gated?"), 1);
    assert_eq!(e.status("alice"), status(Online, "gated?"));
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "alice ONLINE gated?")]));
}

// R3.2
#[test]
fn setting_the_same_value_changes_nothing_and_notifies_nobody() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::login("alice", "phone"), 0);
    // Clearing a status that is not set.
    let seq = e.last_seq();
    let out = ok(&mut e, Command::set_status("alice", "phone", ""), 1);
    assert_eq!((out.events, out.notices.len(), e.last_seq()), (0, 0, seq));
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 2);
    let seq = e.last_seq();
    let state = e.logical_state();
    let out = ok(&mut e, Command::set_status("alice", "phone", "busy"), 3);
    assert_eq!((out.events, out.notices.len(), e.last_seq()), (0, 0, seq));
    assert_eq!(e.logical_state(), state);
}

// R3.3
#[test]
fn disconnecting_the_last_device_clears_the_custom_status() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 1);
    let out = ok(&mut e, Command::disconnect("alice", "phone"), 2);
    assert_eq!(e.status("alice"), status(Offline, ""));
    // One notice with the new pair, not one for the general status and one for the custom.
    assert_eq!(told(&e, &out), expect(&[("bob", "pc", "alice OFFLINE ")]));
    // Reconnecting does not bring the old status back.
    ok(&mut e, Command::login("alice", "phone"), 3);
    assert_eq!(e.status("alice"), status(Online, ""));
}

// R3.3
#[test]
fn logging_out_clears_the_custom_status() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 1);
    ok(&mut e, Command::logout("alice", "phone"), 2);
    assert_eq!(e.status("alice"), status(Unlogined, ""));
    ok(&mut e, Command::login("alice", "phone"), 3);
    assert_eq!(custom(&e, "alice"), "");
}

// R3.3
#[test]
fn a_heartbeat_timeout_clears_the_custom_status() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 1);
    tick(&mut e, 400_000);
    assert_eq!(e.status("alice"), status(Offline, ""));
}

// R3.3
#[test]
fn the_custom_status_stays_while_another_device_is_connected() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("alice", "tablet"), 0);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 1);
    let out = ok(&mut e, Command::disconnect("alice", "phone"), 2);
    assert!(out.notices.is_empty());
    assert_eq!(e.status("alice"), status(Online, "busy"));
    ok(&mut e, Command::logout("alice", "tablet"), 3);
    assert_eq!(e.status("alice"), status(Offline, ""));
}

// R3.3
#[test]
fn a_non_empty_custom_status_implies_online_in_every_record() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::set_status("alice", "phone", "a"), 1);
    ok(&mut e, Command::login("bob", "pc"), 1);
    ok(&mut e, Command::set_status("bob", "pc", "b"), 2);
    ok(&mut e, Command::disconnect("bob", "pc"), 3);
    for record in e.logical_state().users {
        if !record.custom.is_empty() {
            assert!(
                record.sessions.iter().any(|s| s.connected),
                "{} has a custom status offline",
                record.user
            );
        }
    }
    assert_eq!(e.status("alice"), status(Online, "a"));
    assert_eq!(e.status("bob"), status(Offline, ""));
}
