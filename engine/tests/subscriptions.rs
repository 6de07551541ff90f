//! Subscriptions (R4.1-R4.6): what subscribe needs, list order and re-subscription, the cap
//! and its eviction order, unsubscribe, retention of an absent subscriber's list, and the
//! statuses a subscribe returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{Command, Config, Edition, Engine, GeneralStatus::*};
use presence_storage_mem::MemStore;

fn capped(max_subscriptions: u32) -> Engine<MemStore> {
    let mut e = engine_with(Config { max_subscriptions, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    e
}

fn sub(e: &mut Engine<MemStore>, targets: &[&str], at_ms: u64) -> presence_engine::Outcome {
    ok(e, Command::subscribe("me", "pc", targets.iter().copied()), at_ms)
}

// R4.1
#[test]
fn subscribe_adds_targets_and_indexes_subscribers() {
    let mut e = capped(200);
    let out = sub(&mut e, &["a", "b", "c"], 1);
    assert_eq!(out.events, 1);
    assert_eq!(subs(&e, "me"), strings(&["a", "b", "c"]));
    assert_eq!(e.subscriber_count("a"), 1);
    assert_eq!(e.subscriber_count("me"), 0);
    ok(&mut e, Command::login("you", "phone"), 2);
    ok(&mut e, Command::subscribe("you", "phone", ["a"]), 2);
    assert_eq!(e.subscriber_count("a"), 2);
}

// R4.1
#[test]
fn subscribe_to_oneself_is_invalid() {
    let mut e = capped(200);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["me"]), 1), 6017);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["a", "me", "b"]), 1), 6017);
    assert!(e.subscriptions("me").is_empty(), "the whole call is refused");
}

// R4.1
#[test]
fn subscribe_batch_is_one_to_max_subscribe_batch_ids() {
    let mut e = capped(200);
    let none: [&str; 0] = [];
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", none), 1), 6017);
    let hundred: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let out = ok(&mut e, Command::subscribe("me", "pc", &hundred), 1);
    assert_eq!(out.statuses().len(), 100);
    let more: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", &more), 2), 6017);
    // Batch sizes count the targets as sent, duplicates included.
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", vec!["x"; 101]), 3), 6017);
    assert_eq!(e.subscriptions("me").len(), 100);
}

// R4.1
#[test]
fn subscribe_needs_a_connected_session() {
    let mut e = capped(200);
    assert_eq!(code(&mut e, Command::subscribe("me", "phone", ["a"]), 1), 6014);
    assert_eq!(code(&mut e, Command::subscribe("you", "pc", ["a"]), 1), 6014);
    ok(&mut e, Command::disconnect("me", "pc"), 2);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["a"]), 3), 6014);
}

// R4.1
#[test]
fn subscribe_needs_the_ultimate_edition_and_the_feature_switch() {
    let mut standard = engine_with(Config { edition: Edition::Standard, ..Config::default() });
    ok(&mut standard, Command::login("me", "pc"), 0);
    assert_eq!(code(&mut standard, Command::subscribe("me", "pc", ["a"]), 1), 7013);
    let mut off = engine_with(Config { status_feature: false, ..Config::default() });
    ok(&mut off, Command::login("me", "pc"), 0);
    let err = refused(&mut off, Command::subscribe("me", "pc", ["a"]), 1);
    assert_eq!((err.code(), err.name()), (72001, "FeatureNotEnabled"));
}

// R4.2
#[test]
fn resubscribing_moves_a_target_to_the_newest_position() {
    let mut e = capped(200);
    sub(&mut e, &["a", "b", "c"], 1);
    let out = sub(&mut e, &["a"], 2);
    assert_eq!(out.events, 1);
    assert_eq!(subs(&e, "me"), strings(&["b", "c", "a"]));
    sub(&mut e, &["b", "d"], 3);
    assert_eq!(subs(&e, "me"), strings(&["c", "a", "b", "d"]));
    assert_eq!(e.subscriber_count("a"), 1);
}

// R4.2
#[test]
fn duplicates_within_one_call_count_once_at_their_first_position() {
    let mut e = capped(200);
    let out = sub(&mut e, &["b", "a", "b", "a", "c"], 1);
    assert_eq!(subs(&e, "me"), strings(&["b", "a", "c"]));
    // The reply has one status per target as sent.
    let replied: Vec<String> = out.statuses().iter().map(|s| s.user.to_string()).collect();
    assert_eq!(replied, strings(&["b", "a", "b", "a", "c"]));
}

// R4.2
#[test]
fn resubscribing_the_newest_target_logs_nothing() {
    let mut e = capped(200);
    sub(&mut e, &["a", "b"], 1);
    let seq = e.last_seq();
    let out = sub(&mut e, &["b"], 2);
    assert_eq!(out.events, 0);
    assert_eq!(e.last_seq(), seq);
    assert_eq!(out.statuses().len(), 1);
    let out = sub(&mut e, &["a", "b"], 3);
    assert_eq!(out.events, 0, "the same targets in the same order leave the list as it was");
    assert_eq!(subs(&e, "me"), strings(&["a", "b"]));
}

// R4.3
#[test]
fn the_cap_evicts_the_oldest_targets() {
    let mut e = capped(3);
    sub(&mut e, &["a", "b", "c"], 1);
    let out = sub(&mut e, &["d"], 2);
    assert_eq!(subs(&e, "me"), strings(&["b", "c", "d"]));
    assert_eq!(e.subscriber_count("a"), 0);
    assert_eq!(out.statuses().len(), 1, "the call succeeds");
    sub(&mut e, &["e", "f"], 3);
    assert_eq!(subs(&e, "me"), strings(&["d", "e", "f"]));
}

// R4.3
#[test]
fn a_resubscribed_target_is_evicted_last() {
    let mut e = capped(3);
    sub(&mut e, &["a", "b", "c"], 1);
    sub(&mut e, &["a"], 2);
    assert_eq!(subs(&e, "me"), strings(&["b", "c", "a"]));
    sub(&mut e, &["d"], 3);
    assert_eq!(subs(&e, "me"), strings(&["c", "a", "d"]), "b is now the oldest, not a");
    sub(&mut e, &["e"], 4);
    assert_eq!(subs(&e, "me"), strings(&["a", "d", "e"]));
}

// R4.3
#[test]
fn duplicates_and_resubscriptions_in_a_batch_that_overflows() {
    let mut e = capped(3);
    sub(&mut e, &["a", "b", "c"], 1);
    // Batch [d, a] after dedup: b and c untouched, then d, a; one too many, b goes.
    sub(&mut e, &["d", "a", "d"], 2);
    assert_eq!(subs(&e, "me"), strings(&["c", "d", "a"]));
    assert_eq!(e.subscriber_count("b"), 0);
    assert_eq!(e.subscriber_count("a"), 1);
}

// R4.3
#[test]
fn more_new_targets_than_fit_evict_the_first_of_the_batch_too() {
    let mut e = capped(3);
    sub(&mut e, &["a", "b"], 1);
    let out = sub(&mut e, &["c", "d", "e", "f"], 2);
    assert_eq!(subs(&e, "me"), strings(&["d", "e", "f"]));
    assert_eq!(out.statuses().len(), 4);
    for gone in ["a", "b", "c"] {
        assert_eq!(e.subscriber_count(gone), 0, "{gone}");
    }
}

// R4.3
#[test]
fn a_resubscribed_target_can_be_evicted_in_the_same_call() {
    let mut e = capped(2);
    sub(&mut e, &["a", "b"], 1);
    sub(&mut e, &["a", "c", "d"], 2);
    assert_eq!(subs(&e, "me"), strings(&["c", "d"]));
    assert_eq!(e.subscriber_count("a"), 0);
    assert_eq!(e.subscriber_count("b"), 0);
}

// R4.3
#[test]
fn the_default_cap_is_two_hundred() {
    let mut e = capped(Config::default().max_subscriptions);
    for round in 0..3u64 {
        let batch: Vec<String> = (0..100).map(|i| format!("t{}", round * 100 + i)).collect();
        ok(&mut e, Command::subscribe("me", "pc", &batch), round);
    }
    let list = subs(&e, "me");
    assert_eq!(list.len(), 200);
    assert_eq!(list[0], "t100");
    assert_eq!(list[199], "t299");
}

// R4.4
#[test]
fn unsubscribe_removes_the_listed_targets_and_ignores_others() {
    let mut e = capped(200);
    sub(&mut e, &["a", "b", "c", "d"], 1);
    let out = ok(&mut e, Command::unsubscribe("me", "pc", ["b", "zed", "me", "b", "d"]), 2);
    assert_eq!(out.events, 1);
    assert!(out.notices.is_empty());
    assert_eq!(subs(&e, "me"), strings(&["a", "c"]));
    assert_eq!(e.subscriber_count("b"), 0);
    let seq = e.last_seq();
    let out = ok(&mut e, Command::unsubscribe("me", "pc", ["zed"]), 3);
    assert_eq!((out.events, e.last_seq()), (0, seq));
}

// R4.4
#[test]
fn unsubscribe_with_no_targets_clears_the_list() {
    let mut e = capped(200);
    sub(&mut e, &["a", "b", "c"], 1);
    let none: [&str; 0] = [];
    ok(&mut e, Command::unsubscribe("me", "pc", none), 2);
    assert!(e.subscriptions("me").is_empty());
    assert_eq!(e.subscriber_count("a") + e.subscriber_count("b") + e.subscriber_count("c"), 0);
    let out = ok(&mut e, Command::unsubscribe("me", "pc", none), 3);
    assert_eq!(out.events, 0);
}

// R4.4
#[test]
fn unsubscribe_has_the_same_needs_and_batch_limit() {
    let mut e = capped(200);
    let many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    assert_eq!(code(&mut e, Command::unsubscribe("me", "pc", &many), 1), 6017);
    ok(&mut e, Command::unsubscribe("me", "pc", &many[..100]), 1);
    assert_eq!(code(&mut e, Command::unsubscribe("me", "pc", [""]), 1), 6017);
    assert_eq!(code(&mut e, Command::unsubscribe("me", "phone", ["a"]), 1), 6014);
    let mut standard = engine_with(Config { edition: Edition::Standard, ..Config::default() });
    ok(&mut standard, Command::login("me", "pc"), 0);
    assert_eq!(code(&mut standard, Command::unsubscribe("me", "pc", ["a"]), 1), 7013);
    let mut off = engine_with(Config { status_feature: false, ..Config::default() });
    ok(&mut off, Command::login("me", "pc"), 0);
    assert_eq!(code(&mut off, Command::unsubscribe("me", "pc", ["a"]), 1), 72001);
}

// R4.5
#[test]
fn an_absent_subscriber_loses_its_list_after_retention() {
    let mut e = engine_with(Config { subscription_retention_ms: 10_000, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    sub(&mut e, &["a", "b"], 0);
    ok(&mut e, Command::disconnect("me", "pc"), 1_000);
    let out = tick(&mut e, 10_999);
    assert_eq!(out.events, 0);
    assert_eq!(subs(&e, "me"), strings(&["a", "b"]));
    let out = tick(&mut e, 11_000);
    assert_eq!(out.events, 1);
    assert!(out.notices.is_empty(), "an expiry changes no status");
    assert!(e.subscriptions("me").is_empty());
    assert_eq!(e.subscriber_count("a"), 0);
}

// R4.5
#[test]
fn the_default_retention_is_one_day() {
    let mut e = engine();
    ok(&mut e, Command::login("me", "pc"), 0);
    sub(&mut e, &["a"], 0);
    ok(&mut e, Command::logout("me", "pc"), 1_000);
    tick(&mut e, 86_400_999);
    assert_eq!(subs(&e, "me"), strings(&["a"]), "an UNLOGINED user's list is kept until retention");
    tick(&mut e, 86_401_000);
    assert!(e.subscriptions("me").is_empty());
}

// R4.5
#[test]
fn coming_back_online_before_retention_keeps_the_list() {
    let mut e = engine_with(Config { subscription_retention_ms: 10_000, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    sub(&mut e, &["a"], 0);
    ok(&mut e, Command::disconnect("me", "pc"), 1_000);
    ok(&mut e, Command::login("me", "pc"), 5_000);
    tick(&mut e, 11_000);
    assert_eq!(subs(&e, "me"), strings(&["a"]));
    ok(&mut e, Command::heartbeat("me", "pc"), 20_000);
    ok(&mut e, Command::disconnect("me", "pc"), 20_000);
    // The countdown restarts when the user stops being ONLINE again.
    tick(&mut e, 29_999);
    assert_eq!(subs(&e, "me"), strings(&["a"]));
    tick(&mut e, 30_000);
    assert!(e.subscriptions("me").is_empty());
}

// R4.5
#[test]
fn retention_starts_at_a_heartbeat_timeout() {
    let mut e = engine_with(Config { subscription_retention_ms: 10_000, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    sub(&mut e, &["a"], 0);
    tick(&mut e, 400_000);
    assert_eq!(general(&e, "me"), Offline);
    tick(&mut e, 409_999);
    assert_eq!(subs(&e, "me"), strings(&["a"]));
    tick(&mut e, 410_000);
    assert!(e.subscriptions("me").is_empty());
}

// R4.5
#[test]
fn a_single_late_tick_times_out_but_does_not_expire_in_one_go() {
    // The countdown starts at the tick that disconnects, so the same tick cannot also expire.
    let mut e = engine_with(Config { subscription_retention_ms: 10_000, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    sub(&mut e, &["a"], 0);
    tick(&mut e, 5_000_000);
    assert_eq!(general(&e, "me"), Offline);
    assert_eq!(subs(&e, "me"), strings(&["a"]));
    tick(&mut e, 5_010_000);
    assert!(e.subscriptions("me").is_empty());
}

// R4.5
#[test]
fn only_ticks_expire_lists() {
    let mut e = engine_with(Config { subscription_retention_ms: 10_000, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    sub(&mut e, &["a"], 0);
    ok(&mut e, Command::disconnect("me", "pc"), 1_000);
    ok(&mut e, Command::login("me", "pc"), 50_000);
    tick(&mut e, 60_000);
    assert_eq!(subs(&e, "me"), strings(&["a"]), "back ONLINE before any tick came");
}

// R4.6
#[test]
fn subscribe_returns_each_targets_status_in_order() {
    let mut e = capped(200);
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 1);
    ok(&mut e, Command::login("carol", "phone"), 1);
    ok(&mut e, Command::disconnect("carol", "phone"), 1);
    let out = sub(&mut e, &["carol", "ghost", "alice", "carol"], 2);
    let got: Vec<(String, _)> =
        out.statuses().iter().map(|s| (s.user.to_string(), s.status.clone())).collect();
    assert_eq!(
        got,
        vec![
            ("carol".to_string(), status(Offline, "")),
            ("ghost".to_string(), status(Unlogined, "")),
            ("alice".to_string(), status(Online, "busy")),
            ("carol".to_string(), status(Offline, "")),
        ]
    );
}

// R4.6
#[test]
fn subscribe_costs_no_query_budget() {
    let mut e = engine_with(Config { rate_limit_calls: 2, ..Config::default() });
    ok(&mut e, Command::login("me", "pc"), 0);
    sub(&mut e, &["a"], 0);
    sub(&mut e, &["b"], 0);
    ok(&mut e, Command::get_status("me", "pc", ["a"]), 0);
    ok(&mut e, Command::get_status("me", "pc", ["b"]), 0);
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["a"]), 0), 7008);
}

// R4.6
#[test]
fn a_subscriber_hears_about_a_target_it_subscribed_to_before_it_existed() {
    let mut e = capped(200);
    let out = sub(&mut e, &["newcomer"], 1);
    assert_eq!(out.statuses()[0].status, status(Unlogined, ""));
    assert!(out.notices.is_empty(), "subscribing changes no status");
    let out = ok(&mut e, Command::login("newcomer", "phone"), 2);
    assert_eq!(
        told(&e, &out),
        expect(&[("me", "pc", "newcomer ONLINE "), ("newcomer", "phone", "newcomer ONLINE ")])
    );
}
