//! Sessions and the general status (R2.1-R2.3, R2.5, R2.6): login, reconnect, logout,
//! disconnect, the status derived from sessions, and which session a login beyond
//! `max_devices_per_user` kicks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{Command, Config, Engine, GeneralStatus::*, LastOnline, SessionView};

fn capped(max_devices_per_user: u32) -> Engine<presence_storage_mem::MemStore> {
    engine_with(Config { max_devices_per_user, ..Config::default() })
}

// R2.1
#[test]
fn login_creates_a_connected_session() {
    let mut e = engine();
    let out = ok(&mut e, Command::login("alice", "phone"), 100);
    assert_eq!(out.events, 1);
    assert_eq!(
        e.sessions("alice"),
        vec![SessionView { device: "phone".into(), connected: true, login_at_ms: 100, heartbeat_at_ms: 100 }]
    );
    assert_eq!(general(&e, "alice"), Online);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "alice ONLINE ")]));
}

// R2.1
#[test]
fn login_of_a_connected_session_changes_only_its_heartbeat() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 100);
    let before = e.logical_state();
    let seq = e.last_seq();
    let out = ok(&mut e, Command::login("alice", "phone"), 500);
    assert_eq!(out.events, 0);
    assert!(out.notices.is_empty());
    assert_eq!(e.last_seq(), seq);
    assert_eq!(e.logical_state(), before);
    assert_eq!(
        e.sessions("alice"),
        vec![SessionView { device: "phone".into(), connected: true, login_at_ms: 100, heartbeat_at_ms: 500 }]
    );
}

// R2.1
#[test]
fn login_reconnects_a_disconnected_session() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::disconnect("alice", "phone"), 200);
    assert_eq!(general(&e, "alice"), Offline);
    let out = ok(&mut e, Command::login("alice", "phone"), 300);
    assert_eq!(out.events, 1);
    assert_eq!(sessions(&e, "alice"), vec![("phone".to_string(), true, 300)]);
    assert_eq!(general(&e, "alice"), Online);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "alice ONLINE ")]));
}

// R2.2
#[test]
fn logout_removes_the_session() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 110);
    let out = ok(&mut e, Command::logout("alice", "phone"), 200);
    assert_eq!(out.events, 1);
    assert_eq!(sessions(&e, "alice"), vec![("tablet".to_string(), true, 110)]);
    assert_eq!(general(&e, "alice"), Online);
    assert!(told(&e, &out).is_empty(), "the status did not change");
    let out = ok(&mut e, Command::logout("alice", "tablet"), 300);
    assert!(e.sessions("alice").is_empty());
    assert_eq!(general(&e, "alice"), Unlogined);
    assert!(told(&e, &out).is_empty(), "alice has no connected device left to tell");
}

// R2.2
#[test]
fn logout_of_a_disconnected_session_removes_it() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("bob", "pc"), 100);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 100);
    ok(&mut e, Command::disconnect("alice", "phone"), 200);
    let out = ok(&mut e, Command::logout("alice", "phone"), 300);
    assert_eq!(out.events, 1);
    assert!(e.sessions("alice").is_empty());
    assert_eq!(general(&e, "alice"), Unlogined);
    assert_eq!(told(&e, &out), expect(&[("bob", "pc", "alice UNLOGINED ")]));
}

// R2.2
#[test]
fn logout_and_disconnect_of_a_missing_session_fail_with_not_logged_in() {
    let mut e = engine();
    assert_eq!(code(&mut e, Command::logout("ghost", "phone"), 1), 6014);
    assert_eq!(code(&mut e, Command::disconnect("ghost", "phone"), 1), 6014);
    ok(&mut e, Command::login("alice", "phone"), 10);
    assert_eq!(code(&mut e, Command::logout("alice", "tablet"), 20), 6014);
    assert_eq!(code(&mut e, Command::disconnect("alice", "tablet"), 20), 6014);
    // Bob's "phone" is not alice's: devices are per user.
    assert_eq!(code(&mut e, Command::logout("bob", "phone"), 20), 6014);
    ok(&mut e, Command::logout("alice", "phone"), 30);
    assert_eq!(code(&mut e, Command::logout("alice", "phone"), 40), 6014);
    assert_eq!(code(&mut e, Command::disconnect("alice", "phone"), 40), 6014);
}

// R2.2
#[test]
fn disconnect_keeps_the_session_logged_in() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 100);
    let out = ok(&mut e, Command::disconnect("alice", "phone"), 250);
    assert_eq!(out.events, 1);
    assert_eq!(sessions(&e, "alice"), vec![("phone".to_string(), false, 100)]);
    assert_eq!(general(&e, "alice"), Offline);
    assert_eq!(e.last_online("alice"), LastOnline::At(250));
}

// R2.2
#[test]
fn disconnect_of_a_disconnected_session_succeeds_and_changes_nothing() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::disconnect("alice", "phone"), 200);
    let state = e.logical_state();
    let seq = e.last_seq();
    let out = ok(&mut e, Command::disconnect("alice", "phone"), 300);
    assert_eq!(out.events, 0);
    assert!(out.notices.is_empty());
    assert_eq!(e.last_seq(), seq);
    assert_eq!(e.logical_state(), state);
    assert_eq!(e.last_online("alice"), LastOnline::At(200));
}

// R2.3
#[test]
fn general_status_follows_the_sessions() {
    let mut e = engine();
    assert_eq!(general(&e, "alice"), Unlogined);
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::login("alice", "tablet"), 2);
    assert_eq!(general(&e, "alice"), Online);
    ok(&mut e, Command::disconnect("alice", "phone"), 3);
    assert_eq!(general(&e, "alice"), Online, "one connected session is enough");
    ok(&mut e, Command::disconnect("alice", "tablet"), 4);
    assert_eq!(general(&e, "alice"), Offline, "sessions exist, all disconnected");
    ok(&mut e, Command::logout("alice", "phone"), 5);
    assert_eq!(general(&e, "alice"), Offline);
    ok(&mut e, Command::login("alice", "tablet"), 6);
    assert_eq!(general(&e, "alice"), Online);
    ok(&mut e, Command::logout("alice", "tablet"), 7);
    assert_eq!(general(&e, "alice"), Unlogined, "no session at all");
}

// R2.3
#[test]
fn status_changes_are_notified_only_at_the_transitions() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    let out = ok(&mut e, Command::login("alice", "phone"), 1);
    assert_eq!(
        told(&e, &out),
        expect(&[("alice", "phone", "alice ONLINE "), ("bob", "pc", "alice ONLINE ")])
    );
    let out = ok(&mut e, Command::login("alice", "tablet"), 2);
    assert!(told(&e, &out).is_empty());
    let out = ok(&mut e, Command::disconnect("alice", "phone"), 3);
    assert!(told(&e, &out).is_empty());
    let out = ok(&mut e, Command::disconnect("alice", "tablet"), 4);
    assert_eq!(told(&e, &out), expect(&[("bob", "pc", "alice OFFLINE ")]));
    let out = ok(&mut e, Command::logout("alice", "tablet"), 5);
    assert!(told(&e, &out).is_empty(), "still OFFLINE: the phone session exists");
    let out = ok(&mut e, Command::logout("alice", "phone"), 6);
    assert_eq!(told(&e, &out), expect(&[("bob", "pc", "alice UNLOGINED ")]));
}

// R2.6
#[test]
fn status_is_per_user_not_per_device() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::login("alice", "tablet"), 2);
    let out = ok(&mut e, Command::set_status("alice", "phone", "busy"), 3);
    // Both devices hear the one user status; there is nothing per device.
    assert_eq!(
        told(&e, &out),
        expect(&[("alice", "phone", "alice ONLINE busy"), ("alice", "tablet", "alice ONLINE busy")])
    );
    ok(&mut e, Command::disconnect("alice", "phone"), 4);
    assert_eq!(e.status("alice"), status(Online, "busy"));
    let out = ok(&mut e, Command::get_status("alice", "tablet", ["alice"]), 5);
    assert_eq!(out.statuses().len(), 1);
    assert_eq!(out.statuses()[0].status, status(Online, "busy"));
    // The tablet can replace the status the phone set.
    ok(&mut e, Command::set_status("alice", "tablet", "free"), 6);
    assert_eq!(e.status("alice"), status(Online, "free"));
}

// R2.5
#[test]
fn a_login_beyond_the_cap_kicks_the_oldest_session() {
    let mut e = capped(2);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    let out = ok(&mut e, Command::login("alice", "pc"), 300);
    assert_eq!(out.events, 2);
    assert_eq!(sessions(&e, "alice"), vec![("pc".to_string(), true, 300), ("tablet".to_string(), true, 200)]);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
    assert_eq!(general(&e, "alice"), Online);
}

// R2.5
#[test]
fn the_default_cap_is_ten_devices() {
    let mut e = engine();
    for i in 0..10u64 {
        let out = ok(&mut e, Command::login("alice", format!("d{i}")), i);
        assert_eq!(out.events, 1, "no kick below the cap");
    }
    let out = ok(&mut e, Command::login("alice", "d10"), 10);
    assert_eq!(told(&e, &out), expect(&[("alice", "d0", "kicked")]));
    assert_eq!(e.sessions("alice").len(), 10);
}

// R2.5
#[test]
fn kick_ties_go_to_the_smaller_device_id_in_byte_order() {
    let mut e = capped(3);
    ok(&mut e, Command::login("alice", "b"), 100);
    ok(&mut e, Command::login("alice", "a"), 100);
    ok(&mut e, Command::login("alice", "B"), 100);
    // "B" (0x42) sorts before "a" (0x61) and "b" in byte order.
    let out = ok(&mut e, Command::login("alice", "c"), 100);
    assert_eq!(told(&e, &out), expect(&[("alice", "B", "kicked")]));
    let out = ok(&mut e, Command::login("alice", "d"), 200);
    assert_eq!(told(&e, &out), expect(&[("alice", "a", "kicked")]));
    let devices: Vec<String> = sessions(&e, "alice").into_iter().map(|s| s.0).collect();
    assert_eq!(devices, strings(&["b", "c", "d"]));
}

// R2.5
#[test]
fn a_disconnected_oldest_session_is_removed_without_a_kicked_notice() {
    let mut e = capped(2);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    ok(&mut e, Command::disconnect("alice", "phone"), 300);
    let out = ok(&mut e, Command::login("alice", "pc"), 400);
    assert_eq!(out.events, 2);
    assert!(told(&e, &out).is_empty(), "the kicked session was not connected; the status did not change");
    assert_eq!(sessions(&e, "alice"), vec![("pc".to_string(), true, 400), ("tablet".to_string(), true, 200)]);
}

// R2.5
#[test]
fn the_oldest_login_is_kicked_even_when_a_newer_session_is_disconnected() {
    let mut e = capped(2);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    ok(&mut e, Command::disconnect("alice", "tablet"), 250);
    let out = ok(&mut e, Command::login("alice", "pc"), 300);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
    assert_eq!(
        sessions(&e, "alice"),
        vec![("pc".to_string(), true, 300), ("tablet".to_string(), false, 200)]
    );
}

// R2.5
#[test]
fn a_reconnect_resets_the_login_time_used_for_kicks() {
    let mut e = capped(2);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    ok(&mut e, Command::disconnect("alice", "phone"), 300);
    ok(&mut e, Command::login("alice", "phone"), 400);
    assert_eq!(sessions(&e, "alice")[0], ("phone".to_string(), true, 400));
    let out = ok(&mut e, Command::login("alice", "pc"), 500);
    assert_eq!(told(&e, &out), expect(&[("alice", "tablet", "kicked")]));
    assert_eq!(sessions(&e, "alice"), vec![("pc".to_string(), true, 500), ("phone".to_string(), true, 400)]);
}

// R2.5
#[test]
fn a_heartbeat_or_repeated_login_does_not_reset_the_login_time() {
    let mut e = capped(2);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    ok(&mut e, Command::heartbeat("alice", "phone"), 300);
    ok(&mut e, Command::login("alice", "phone"), 350);
    let out = ok(&mut e, Command::login("alice", "pc"), 400);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
}

// R2.5
#[test]
fn a_reconnect_adds_no_session_and_kicks_nobody() {
    let mut e = capped(2);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    ok(&mut e, Command::disconnect("alice", "tablet"), 300);
    let out = ok(&mut e, Command::login("alice", "tablet"), 400);
    assert_eq!(out.events, 1);
    assert!(told(&e, &out).is_empty());
    assert_eq!(
        sessions(&e, "alice"),
        vec![("phone".to_string(), true, 100), ("tablet".to_string(), true, 400)]
    );
}

// R2.5
#[test]
fn single_device_login_keeps_the_user_online_with_its_custom_status() {
    let mut e = capped(1);
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 150);
    let out = ok(&mut e, Command::login("alice", "pc"), 200);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
    assert_eq!(e.status("alice"), status(Online, "busy"));
    assert_eq!(sessions(&e, "alice"), vec![("pc".to_string(), true, 200)]);
    assert_eq!(e.last_online("alice"), LastOnline::Now);
}

// R2.5
#[test]
fn single_device_login_over_a_disconnected_session_brings_the_user_online() {
    let mut e = capped(1);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::disconnect("alice", "phone"), 200);
    let out = ok(&mut e, Command::login("alice", "pc"), 300);
    assert_eq!(told(&e, &out), expect(&[("alice", "pc", "alice ONLINE ")]));
    assert_eq!(sessions(&e, "alice"), vec![("pc".to_string(), true, 300)]);
}

// R2.5
#[test]
fn a_lowered_cap_kicks_as_many_of_the_oldest_as_needed() {
    let mut e = capped(3);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    ok(&mut e, Command::login("alice", "pc"), 300);
    ok(&mut e, Command::disconnect("alice", "tablet"), 350);
    let store = e.into_store();
    let mut e = Engine::open(Config { max_devices_per_user: 2, ..Config::default() }, store).unwrap();
    let out = ok(&mut e, Command::login("alice", "watch"), 400);
    // 3 + 1 sessions, 2 allowed: the two oldest go, phone (connected) and tablet (not).
    assert_eq!(out.events, 3);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
    assert_eq!(sessions(&e, "alice"), vec![("pc".to_string(), true, 300), ("watch".to_string(), true, 400)]);
}

// R2.5
#[test]
fn a_lowered_cap_to_one_kicks_every_old_session() {
    let mut e = capped(3);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    ok(&mut e, Command::login("alice", "pc"), 300);
    let store = e.into_store();
    let mut e = Engine::open(Config { max_devices_per_user: 1, ..Config::default() }, store).unwrap();
    let out = ok(&mut e, Command::login("alice", "watch"), 400);
    assert_eq!(
        told(&e, &out),
        expect(&[("alice", "pc", "kicked"), ("alice", "phone", "kicked"), ("alice", "tablet", "kicked")])
    );
    assert_eq!(sessions(&e, "alice"), vec![("watch".to_string(), true, 400)]);
}

// R2.5
#[test]
fn kicks_only_touch_the_user_who_logs_in() {
    let mut e = capped(1);
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("bob", "phone"), 100);
    let out = ok(&mut e, Command::login("alice", "pc"), 200);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
    assert_eq!(sessions(&e, "bob"), vec![("phone".to_string(), true, 100)]);
}
