//! Queries and rate limits (R6.1-R6.5): get_status of oneself and of others, the sliding
//! rate-limit window and its exact boundary, separate budgets, and the host's direct reads
//! including "last seen".

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{Command, Config, Edition, Engine, GeneralStatus::*, LastOnline};
use presence_storage_mem::MemStore;

fn logged_in() -> Engine<MemStore> {
    let mut e = engine();
    ok(&mut e, Command::login("me", "pc"), 0);
    e
}

fn query(e: &mut Engine<MemStore>, at_ms: u64) -> Result<presence_engine::Outcome, presence_engine::Error> {
    e.execute(Command::get_status("me", "pc", ["other"]), at_ms)
}

// R6.1
#[test]
fn get_status_answers_in_request_order() {
    let mut e = logged_in();
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 1);
    ok(&mut e, Command::login("carol", "phone"), 1);
    ok(&mut e, Command::disconnect("carol", "phone"), 1);
    let out = ok(&mut e, Command::get_status("me", "pc", ["ghost", "alice", "me", "carol", "alice"]), 2);
    let got: Vec<(String, _)> =
        out.statuses().iter().map(|s| (s.user.to_string(), s.status.clone())).collect();
    assert_eq!(
        got,
        vec![
            ("ghost".to_string(), status(Unlogined, "")),
            ("alice".to_string(), status(Online, "busy")),
            ("me".to_string(), status(Online, "")),
            ("carol".to_string(), status(Offline, "")),
            ("alice".to_string(), status(Online, "busy")),
        ]
    );
    assert_eq!(out.events, 0);
    assert!(out.notices.is_empty());
}

// R6.1
#[test]
fn a_self_query_is_never_gated() {
    let config = Config { edition: Edition::Standard, status_feature: false, ..Config::default() };
    let mut e = engine_with(config);
    ok(&mut e, Command::login("me", "pc"), 0);
    ok(&mut e, Command::set_status("me", "pc", "here"), 0);
    let out = ok(&mut e, Command::get_status("me", "pc", ["me"]), 1);
    assert_eq!(out.statuses()[0].status, status(Online, "here"));
    // [me, me] is a query of others, and gated.
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["me", "me"]), 1), 7013);
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["other"]), 1), 7013);
}

// R6.1
#[test]
fn a_self_query_is_never_rate_limited_and_uses_no_budget() {
    let mut e = logged_in();
    for _ in 0..100 {
        ok(&mut e, Command::get_status("me", "pc", ["me"]), 10);
    }
    for i in 0..20 {
        assert!(query(&mut e, 10).is_ok(), "call {i}");
    }
    assert_eq!(query(&mut e, 10).unwrap_err().code(), 7008);
    // Even with the budget spent, the self query goes through.
    ok(&mut e, Command::get_status("me", "pc", ["me"]), 10);
}

// R6.1
#[test]
fn a_self_query_needs_a_connected_session_and_valid_ids() {
    let mut e = logged_in();
    assert_eq!(code(&mut e, Command::get_status("me", "phone", ["me"]), 1), 6014);
    assert_eq!(code(&mut e, Command::get_status("you", "pc", ["you"]), 1), 6014);
    assert_eq!(code(&mut e, Command::get_status("me", "p\u{0}c", ["me"]), 1), 6017);
    ok(&mut e, Command::disconnect("me", "pc"), 2);
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["me"]), 3), 6014);
}

// R6.2
#[test]
fn a_query_of_others_needs_the_edition_and_the_feature_switch() {
    let mut standard = engine_with(Config { edition: Edition::Standard, ..Config::default() });
    ok(&mut standard, Command::login("me", "pc"), 0);
    assert_eq!(code(&mut standard, Command::get_status("me", "pc", ["x"]), 1), 7013);
    let mut off = engine_with(Config { status_feature: false, ..Config::default() });
    ok(&mut off, Command::login("me", "pc"), 0);
    assert_eq!(code(&mut off, Command::get_status("me", "pc", ["x"]), 1), 72001);
    assert_eq!(code(&mut off, Command::get_status("me", "pc", ["me", "x"]), 1), 72001);
}

// R6.2
#[test]
fn a_query_takes_one_to_max_query_batch_ids() {
    let mut e = logged_in();
    let none: [&str; 0] = [];
    assert_eq!(code(&mut e, Command::get_status("me", "pc", none), 1), 6017);
    let five_hundred: Vec<String> = (0..500).map(|i| format!("u{i}")).collect();
    let out = ok(&mut e, Command::get_status("me", "pc", &five_hundred), 1);
    assert_eq!(out.statuses().len(), 500);
    let more: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    assert_eq!(code(&mut e, Command::get_status("me", "pc", &more), 1), 6017);
    assert_eq!(code(&mut e, Command::get_status("me", "pc", vec!["me"; 501]), 1), 6017);
    let mut small = engine_with(Config { max_query_batch: 2, ..Config::default() });
    ok(&mut small, Command::login("me", "pc"), 0);
    ok(&mut small, Command::get_status("me", "pc", ["a", "b"]), 1);
    assert_eq!(code(&mut small, Command::get_status("me", "pc", ["a", "b", "c"]), 1), 6017);
}

// R6.3
#[test]
fn the_window_boundary_is_exact() {
    let mut e = logged_in();
    let t = 10_000;
    for i in 0..20 {
        assert!(query(&mut e, t).is_ok(), "call {i}");
    }
    let err = query(&mut e, t + 4_999).unwrap_err();
    assert_eq!((err.code(), err.name()), (7008, "RateLimited"));
    assert!(query(&mut e, t + 5_000).is_ok());
    for i in 1..20 {
        assert!(query(&mut e, t + 5_000).is_ok(), "call {i} of the second window");
    }
    assert_eq!(query(&mut e, t + 9_999).unwrap_err().code(), 7008);
}

// R6.3
#[test]
fn the_window_slides() {
    let mut e = logged_in();
    for _ in 0..10 {
        query(&mut e, 0).unwrap();
    }
    for _ in 0..10 {
        query(&mut e, 3_000).unwrap();
    }
    assert_eq!(query(&mut e, 4_999).unwrap_err().code(), 7008);
    // (0, 5000] holds the 10 calls at 3000 only.
    for _ in 0..10 {
        query(&mut e, 5_000).unwrap();
    }
    assert_eq!(query(&mut e, 5_000).unwrap_err().code(), 7008);
    assert_eq!(query(&mut e, 7_999).unwrap_err().code(), 7008);
    query(&mut e, 8_000).unwrap();
}

// R6.3
#[test]
fn refused_calls_do_not_use_budget() {
    let mut e = logged_in();
    for _ in 0..20 {
        query(&mut e, 0).unwrap();
    }
    for at in [1_000, 2_000, 3_000, 4_000, 4_999] {
        for _ in 0..10 {
            assert_eq!(query(&mut e, at).unwrap_err().code(), 7008);
        }
    }
    // Had refused calls counted, the window (0, 5000] would be full.
    for i in 0..20 {
        assert!(query(&mut e, 5_000).is_ok(), "call {i}");
    }
    // Calls refused for other reasons use no budget either.
    let mut e = logged_in();
    for _ in 0..30 {
        assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["me"]), 0), 6017);
        assert_eq!(code(&mut e, Command::get_status("me", "pc", [""]), 0), 6017);
    }
    for i in 0..20 {
        ok(&mut e, Command::subscribe("me", "pc", [format!("t{i}")]), 0);
        query(&mut e, 0).unwrap();
    }
}

// R6.3
#[test]
fn budgets_are_per_user_and_per_api() {
    let mut e = logged_in();
    ok(&mut e, Command::login("you", "pc"), 0);
    for _ in 0..20 {
        query(&mut e, 0).unwrap();
    }
    assert_eq!(query(&mut e, 0).unwrap_err().code(), 7008);
    for i in 0..20 {
        ok(&mut e, Command::subscribe("me", "pc", [format!("t{i}")]), 0);
        ok(&mut e, Command::unsubscribe("me", "pc", ["nobody"]), 0);
        ok(&mut e, Command::get_status("you", "pc", ["me"]), 0);
    }
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["t0"]), 0), 7008);
    assert_eq!(code(&mut e, Command::unsubscribe("me", "pc", ["t0"]), 0), 7008);
    assert_eq!(code(&mut e, Command::get_status("you", "pc", ["me"]), 0), 7008);
}

// R6.3
#[test]
fn the_budget_is_per_user_not_per_device() {
    let mut e = logged_in();
    ok(&mut e, Command::login("me", "phone"), 0);
    for _ in 0..10 {
        ok(&mut e, Command::get_status("me", "pc", ["x"]), 0);
        ok(&mut e, Command::get_status("me", "phone", ["x"]), 0);
    }
    assert_eq!(code(&mut e, Command::get_status("me", "phone", ["x"]), 0), 7008);
}

// R6.3
#[test]
fn unsubscribe_counts_even_when_it_removes_nothing() {
    let mut e = logged_in();
    let none: [&str; 0] = [];
    for _ in 0..20 {
        ok(&mut e, Command::unsubscribe("me", "pc", none), 0);
    }
    assert_eq!(code(&mut e, Command::unsubscribe("me", "pc", ["x"]), 4_999), 7008);
    ok(&mut e, Command::unsubscribe("me", "pc", ["x"]), 5_000);
}

// R6.3
#[test]
fn a_configured_limit_and_window_are_used() {
    let mut e = engine_with(Config { rate_limit_calls: 2, rate_limit_window_ms: 100, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    query(&mut e, 0).unwrap();
    query(&mut e, 50).unwrap();
    assert_eq!(query(&mut e, 99).unwrap_err().code(), 7008);
    query(&mut e, 100).unwrap();
    assert_eq!(query(&mut e, 149).unwrap_err().code(), 7008);
    query(&mut e, 150).unwrap();
}

// R6.3
#[test]
fn calls_sent_with_an_earlier_time_count_at_the_latest_time() {
    let mut e = logged_in();
    tick(&mut e, 10_000);
    for _ in 0..20 {
        query(&mut e, 0).unwrap();
    }
    // Had they counted at 0, the window at 14 999 would be empty.
    assert_eq!(query(&mut e, 14_999).unwrap_err().code(), 7008);
    query(&mut e, 15_000).unwrap();
}

// R6.4
#[test]
fn the_host_reads_any_user_without_a_session_gate_or_limit() {
    let config = Config { edition: Edition::Standard, status_feature: false, ..Config::default() };
    let mut e = engine_with(config);
    ok(&mut e, Command::login("alice", "phone"), 5);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 6);
    ok(&mut e, Command::add_friend("alice", "bob"), 7);
    for _ in 0..1_000 {
        assert_eq!(e.status("alice"), status(Online, "busy"));
    }
    assert_eq!(sessions(&e, "alice"), vec![("phone".to_string(), true, 5)]);
    assert_eq!(friends(&e, "bob"), strings(&["alice"]));
    assert!(e.subscriptions("alice").is_empty());
    let view = e.user("alice");
    assert_eq!(view.user, "alice");
    assert_eq!(view.status, status(Online, "busy"));
    assert_eq!(view.last_online, LastOnline::Now);
    assert_eq!(view.sessions, e.sessions("alice"));
    assert_eq!(view.friends, e.friends("alice"));
    assert_eq!(view.subscriber_count, 0);
}

// R6.4
#[test]
fn the_host_lists_sessions_subscriptions_and_friends() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "tablet"), 1);
    ok(&mut e, Command::login("bob", "pc"), 2);
    ok(&mut e, Command::disconnect("bob", "tablet"), 3);
    ok(&mut e, Command::subscribe("bob", "pc", ["zed", "amy"]), 4);
    ok(&mut e, Command::add_friend("bob", "zoe"), 5);
    ok(&mut e, Command::add_friend("bob", "al"), 5);
    assert_eq!(sessions(&e, "bob"), vec![("pc".to_string(), true, 2), ("tablet".to_string(), false, 1)]);
    assert_eq!(subs(&e, "bob"), strings(&["zed", "amy"]), "oldest first, not sorted");
    assert_eq!(friends(&e, "bob"), strings(&["al", "zoe"]), "sorted");
    assert_eq!(e.subscriber_count("amy"), 1);
    let stats = e.stats();
    assert_eq!((stats.sessions_connected, stats.sessions_disconnected), (1, 1));
    assert_eq!((stats.subscriptions, stats.friendships), (2, 2));
}

// R6.5
#[test]
fn last_online_follows_the_general_status() {
    let mut e = engine();
    assert_eq!(e.last_online("alice"), LastOnline::Never);
    ok(&mut e, Command::add_friend("alice", "bob"), 50);
    assert_eq!(e.last_online("alice"), LastOnline::Never);
    ok(&mut e, Command::login("alice", "phone"), 100);
    assert_eq!(e.last_online("alice"), LastOnline::Now);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    ok(&mut e, Command::disconnect("alice", "phone"), 300);
    assert_eq!(e.last_online("alice"), LastOnline::Now);
    ok(&mut e, Command::disconnect("alice", "tablet"), 500);
    assert_eq!(e.last_online("alice"), LastOnline::At(500));
    ok(&mut e, Command::logout("alice", "tablet"), 600);
    assert_eq!(e.last_online("alice"), LastOnline::At(500), "OFFLINE to OFFLINE is no new end");
    ok(&mut e, Command::login("alice", "phone"), 900);
    assert_eq!(e.last_online("alice"), LastOnline::Now);
    ok(&mut e, Command::logout("alice", "phone"), 1_200);
    assert_eq!(e.last_online("alice"), LastOnline::At(1_200));
    ok(&mut e, Command::login("alice", "pc"), 2_000);
    tick(&mut e, 500_000);
    assert_eq!(e.last_online("alice"), LastOnline::At(500_000));
    assert_eq!(e.user("alice").last_online, LastOnline::At(500_000));
}
