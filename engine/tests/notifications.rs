//! Notifications (R5.1-R5.5): who hears about a status change, once per connected device,
//! computed on the state after the whole command or tick; friendships; kicked notices.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{Command, Config, Engine, GeneralStatus::*, Notice};
use presence_storage_mem::MemStore;

fn with_friend_notices() -> Engine<MemStore> {
    engine_with(Config { friend_notifications: true, ..Config::default() })
}

// R5.1
#[test]
fn one_notice_per_change_carries_the_new_pair() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::login("alice", "phone"), 1);
    let out = ok(&mut e, Command::set_status("alice", "phone", "busy"), 2);
    assert_eq!(out.notices.len(), 1);
    match &out.notices[0] {
        Notice::Status(n) => {
            assert_eq!(n.about, "alice");
            assert_eq!(n.status, status(Online, "busy"));
            assert_eq!(n.recipients.len(), 2);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(out.delivery_count(), 2);
    assert_eq!(
        told(&e, &out),
        expect(&[("alice", "phone", "alice ONLINE busy"), ("bob", "pc", "alice ONLINE busy")])
    );
}

// R5.1
#[test]
fn a_second_device_logging_in_changes_no_status() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::login("alice", "phone"), 1);
    let out = ok(&mut e, Command::login("alice", "tablet"), 2);
    assert_eq!(out.events, 1);
    assert!(out.notices.is_empty());
}

// R5.1
#[test]
fn a_kick_with_one_device_allowed_sends_only_the_kicked_notice() {
    let mut e =
        engine_with(Config { max_devices_per_user: 1, friend_notifications: true, ..Config::default() });
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::add_friend("alice", "carol"), 0);
    ok(&mut e, Command::login("carol", "pc"), 0);
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::set_status("alice", "phone", "busy"), 2);
    let out = ok(&mut e, Command::login("alice", "tablet"), 3);
    // The user goes phone -> tablet without passing through OFFLINE: nothing to tell.
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
    assert_eq!(e.status("alice"), status(Online, "busy"));
}

// R5.1
#[test]
fn friend_and_subscription_commands_never_notify() {
    let mut e = with_friend_notices();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 0);
    for out in [
        ok(&mut e, Command::add_friend("alice", "bob"), 1),
        ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 2),
        ok(&mut e, Command::unsubscribe("bob", "pc", ["alice"]), 3),
        ok(&mut e, Command::remove_friend("alice", "bob"), 4),
        ok(&mut e, Command::get_status("bob", "pc", ["alice"]), 5),
        ok(&mut e, Command::heartbeat("bob", "pc"), 6),
    ] {
        assert!(out.notices.is_empty(), "{out:?}");
    }
}

// R5.2
#[test]
fn all_of_the_users_own_connected_devices_hear_its_change() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("alice", "tablet"), 0);
    ok(&mut e, Command::login("alice", "pc"), 0);
    ok(&mut e, Command::disconnect("alice", "pc"), 0);
    let out = ok(&mut e, Command::set_status("alice", "tablet", "away"), 1);
    assert_eq!(
        told(&e, &out),
        expect(&[("alice", "phone", "alice ONLINE away"), ("alice", "tablet", "alice ONLINE away")])
    );
}

// R5.2
#[test]
fn friends_hear_only_when_friend_notifications_are_on() {
    for on in [false, true] {
        let mut e = engine_with(Config { friend_notifications: on, ..Config::default() });
        ok(&mut e, Command::add_friend("alice", "bob"), 0);
        ok(&mut e, Command::login("bob", "pc"), 0);
        ok(&mut e, Command::login("bob", "phone"), 0);
        let out = ok(&mut e, Command::login("alice", "phone"), 1);
        let mut want = vec![("alice", "phone", "alice ONLINE ")];
        if on {
            want.extend([("bob", "pc", "alice ONLINE "), ("bob", "phone", "alice ONLINE ")]);
        }
        assert_eq!(told(&e, &out), expect(&want), "friend_notifications = {on}");
        // Friendship is mutual: bob's changes reach alice the same way.
        let out = ok(&mut e, Command::set_status("bob", "pc", "hi"), 2);
        let mut want = vec![("bob", "pc", "bob ONLINE hi"), ("bob", "phone", "bob ONLINE hi")];
        if on {
            want.push(("alice", "phone", "bob ONLINE hi"));
        }
        assert_eq!(told(&e, &out), expect(&want), "friend_notifications = {on}");
    }
}

// R5.2
#[test]
fn a_user_interested_for_several_reasons_hears_once_per_device() {
    let mut e = with_friend_notices();
    ok(&mut e, Command::add_friend("alice", "bob"), 0);
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::login("bob", "phone"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    let out = ok(&mut e, Command::login("alice", "phone"), 1);
    assert_eq!(
        told(&e, &out),
        expect(&[
            ("alice", "phone", "alice ONLINE "),
            ("bob", "pc", "alice ONLINE "),
            ("bob", "phone", "alice ONLINE "),
        ])
    );
}

// R5.2
#[test]
fn several_subscribers_each_hear_on_every_connected_device() {
    let mut e = engine();
    for (user, device) in [("bob", "pc"), ("bob", "phone"), ("carol", "pc"), ("dave", "pc")] {
        ok(&mut e, Command::login(user, device), 0);
    }
    ok(&mut e, Command::subscribe("bob", "phone", ["alice"]), 0);
    ok(&mut e, Command::subscribe("carol", "pc", ["alice", "zoe"]), 0);
    ok(&mut e, Command::login("alice", "phone"), 1);
    let out = ok(&mut e, Command::logout("alice", "phone"), 2);
    assert_eq!(
        told(&e, &out),
        expect(&[
            ("bob", "pc", "alice UNLOGINED "),
            ("bob", "phone", "alice UNLOGINED "),
            ("carol", "pc", "alice UNLOGINED "),
        ])
    );
}

// R5.3
#[test]
fn nobody_else_hears_and_disconnected_sessions_hear_nothing() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::login("bob", "phone"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::disconnect("bob", "phone"), 0);
    ok(&mut e, Command::login("carol", "pc"), 0);
    ok(&mut e, Command::add_friend("alice", "carol"), 0);
    ok(&mut e, Command::login("alice", "phone"), 1);
    let out = ok(&mut e, Command::set_status("alice", "phone", "x"), 2);
    assert_eq!(
        told(&e, &out),
        expect(&[("alice", "phone", "alice ONLINE x"), ("bob", "pc", "alice ONLINE x")])
    );
}

// R5.3
#[test]
fn the_device_that_logs_in_hears_its_own_users_change() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::disconnect("alice", "phone"), 1);
    let out = ok(&mut e, Command::login("alice", "tablet"), 2);
    assert_eq!(told(&e, &out), expect(&[("alice", "tablet", "alice ONLINE ")]));
}

// R5.3
#[test]
fn a_session_that_times_out_in_the_same_tick_hears_nothing() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::login("bob", "tablet"), 100);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::login("carol", "pc"), 0);
    ok(&mut e, Command::subscribe("carol", "pc", ["alice"]), 0);
    ok(&mut e, Command::heartbeat("carol", "pc"), 300_000);
    // alice and bob's pc time out in this tick; bob's tablet and carol stay.
    let out = tick(&mut e, 400_050);
    assert_eq!(out.events, 2);
    assert_eq!(
        told(&e, &out),
        expect(&[("bob", "tablet", "alice OFFLINE "), ("carol", "pc", "alice OFFLINE ")])
    );
    // Both subscribers of alice time out with her: nobody hears.
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::subscribe("alice", "phone", ["bob"]), 0);
    let out = tick(&mut e, 400_000);
    assert_eq!(out.events, 2);
    assert!(told(&e, &out).is_empty());
}

// R5.3
#[test]
fn two_devices_timing_out_in_one_tick_make_one_notice() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::login("alice", "phone"), 10);
    ok(&mut e, Command::login("alice", "tablet"), 20);
    ok(&mut e, Command::heartbeat("bob", "pc"), 300_000);
    let out = tick(&mut e, 400_020);
    assert_eq!(out.events, 2);
    assert_eq!(out.notices.len(), 1);
    assert_eq!(told(&e, &out), expect(&[("bob", "pc", "alice OFFLINE ")]));
}

// R5.4
#[test]
fn friendship_is_mutual_and_needs_no_session() {
    let mut e = engine();
    let out = ok(&mut e, Command::add_friend("alice", "bob"), 0);
    assert_eq!(out.events, 1);
    ok(&mut e, Command::add_friend("carol", "alice"), 0);
    assert_eq!(friends(&e, "alice"), strings(&["bob", "carol"]));
    assert_eq!(friends(&e, "bob"), strings(&["alice"]));
    assert_eq!(friends(&e, "carol"), strings(&["alice"]));
    assert_eq!(general(&e, "alice"), Unlogined, "friendship is not a session");
    ok(&mut e, Command::remove_friend("bob", "alice"), 1);
    assert_eq!(friends(&e, "alice"), strings(&["carol"]));
    assert!(e.friends("bob").is_empty());
}

// R5.4
#[test]
fn repeated_friend_commands_succeed_and_change_nothing() {
    let mut e = engine();
    ok(&mut e, Command::add_friend("alice", "bob"), 0);
    let seq = e.last_seq();
    let out = ok(&mut e, Command::add_friend("bob", "alice"), 1);
    assert_eq!((out.events, e.last_seq()), (0, seq));
    let out = ok(&mut e, Command::remove_friend("alice", "carol"), 2);
    assert_eq!((out.events, e.last_seq()), (0, seq));
    ok(&mut e, Command::remove_friend("alice", "bob"), 3);
    let out = ok(&mut e, Command::remove_friend("alice", "bob"), 4);
    assert_eq!((out.events, e.last_seq()), (0, seq + 1));
}

// R5.4
#[test]
fn a_user_cannot_befriend_itself() {
    let mut e = engine();
    assert_eq!(code(&mut e, Command::add_friend("alice", "alice"), 0), 6017);
    assert_eq!(code(&mut e, Command::remove_friend("alice", "alice"), 0), 6017);
    assert_eq!(code(&mut e, Command::add_friend("alice", ""), 0), 6017);
    assert!(e.friends("alice").is_empty());
    assert_eq!(e.last_seq(), 0);
}

// R5.4
#[test]
fn friends_use_no_subscription_quota_unless_subscribed() {
    let mut e = engine_with(Config { max_subscriptions: 2, friend_notifications: true, ..Config::default() });
    ok(&mut e, Command::login("bob", "pc"), 0);
    for friend in ["f1", "f2", "f3"] {
        ok(&mut e, Command::add_friend("bob", friend), 0);
    }
    ok(&mut e, Command::subscribe("bob", "pc", ["x", "y"]), 1);
    assert_eq!(subs(&e, "bob"), strings(&["x", "y"]), "three friends take none of the two places");
    ok(&mut e, Command::subscribe("bob", "pc", ["f1"]), 2);
    assert_eq!(subs(&e, "bob"), strings(&["y", "f1"]), "a subscribed friend takes a place");
    ok(&mut e, Command::subscribe("bob", "pc", ["z"]), 3);
    assert_eq!(subs(&e, "bob"), strings(&["f1", "z"]));
}

// R5.4
#[test]
fn a_removed_friend_or_unsubscribed_user_stops_hearing() {
    let mut e = with_friend_notices();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::login("carol", "pc"), 0);
    ok(&mut e, Command::add_friend("alice", "bob"), 0);
    ok(&mut e, Command::subscribe("carol", "pc", ["alice"]), 0);
    let out = ok(&mut e, Command::set_status("alice", "phone", "1"), 1);
    assert_eq!(told(&e, &out).len(), 3);
    ok(&mut e, Command::remove_friend("alice", "bob"), 2);
    ok(&mut e, Command::unsubscribe("carol", "pc", ["alice"]), 2);
    let out = ok(&mut e, Command::set_status("alice", "phone", "2"), 3);
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "alice ONLINE 2")]));
}

// R5.5
#[test]
fn a_kicked_notice_goes_only_to_a_connected_kicked_session() {
    let mut e = engine_with(Config { max_devices_per_user: 2, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "tablet"), 200);
    let out = ok(&mut e, Command::login("alice", "pc"), 300);
    assert_eq!(out.notices.len(), 1);
    assert!(matches!(out.notices[0], Notice::Kicked(_)));
    assert_eq!(told(&e, &out), expect(&[("alice", "phone", "kicked")]));
    ok(&mut e, Command::disconnect("alice", "tablet"), 400);
    let out = ok(&mut e, Command::login("alice", "watch"), 500);
    assert!(out.notices.is_empty(), "the kicked tablet was disconnected");
    assert_eq!(sessions(&e, "alice"), vec![("pc".to_string(), true, 300), ("watch".to_string(), true, 500)]);
}

// R5.5
#[test]
fn a_kicked_device_hears_only_its_kicked_notice() {
    let mut e = engine_with(Config { max_devices_per_user: 1, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::disconnect("alice", "phone"), 0);
    ok(&mut e, Command::login("alice", "tablet"), 1);
    ok(&mut e, Command::disconnect("alice", "tablet"), 2);
    ok(&mut e, Command::login("bob", "pc"), 2);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 2);
    // OFFLINE -> ONLINE through a login that removes the (disconnected) tablet.
    let out = ok(&mut e, Command::login("alice", "phone"), 3);
    assert_eq!(
        told(&e, &out),
        expect(&[("alice", "phone", "alice ONLINE "), ("bob", "pc", "alice ONLINE ")])
    );
}

// R5.6: a step's changes list every user whose version moved, in the order first touched,
// the notified ones (made from their notices) and the unnotified ones before, between and
// after them.
#[test]
fn a_steps_changes_list_every_touched_user_in_order() {
    for alice_at in 0..3 {
        let mut engine = engine();
        let mut order = vec!["carol", "bob"];
        order.insert(alice_at, "alice");
        for (at_ms, user) in order.iter().enumerate() {
            ok(&mut engine, Command::login(*user, "phone"), at_ms as u64);
        }
        ok(&mut engine, Command::login("alice", "pad"), 300_000);
        // All three phones time out in login order; alice stays ONLINE on her pad.
        let outcome = tick(&mut engine, 400_002);
        let changes: Vec<_> = outcome
            .changes()
            .into_iter()
            .map(|c| (c.user.to_string(), c.status.general, c.version, c.changed))
            .collect();
        let expected: Vec<_> = order
            .iter()
            .map(|&u| match u {
                "alice" => (u.to_string(), Online, 3, false),
                _ => (u.to_string(), Offline, 2, true),
            })
            .collect();
        assert_eq!(changes, expected, "alice's phone logged in {alice_at}th");
        let notified: Vec<_> = outcome
            .notices
            .iter()
            .filter_map(|n| if let Notice::Status(s) = n { Some(s.about.to_string()) } else { None })
            .collect();
        assert_eq!(notified, ["carol", "bob"]);
    }
}
