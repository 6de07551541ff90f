//! Heartbeat timeouts (R2.4) and engine time (R1.3): the exact deadline, heartbeats and
//! repeated logins moving it, only ticks expiring anything, and commands sent with an
//! earlier time than the engine has seen.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{codec, Command, Config, EventKind, EventStore, GeneralStatus::*, LastOnline};

// R2.4
#[test]
fn the_session_times_out_at_exactly_h_plus_the_timeout() {
    let mut e = engine();
    let h = 1_000;
    ok(&mut e, Command::login("alice", "phone"), h);
    let out = tick(&mut e, h + 399_999);
    assert_eq!(out.events, 0);
    assert_eq!(sessions(&e, "alice"), vec![("phone".to_string(), true, h)]);
    assert_eq!(general(&e, "alice"), Online);
    let out = tick(&mut e, h + 400_000);
    assert_eq!(out.events, 1);
    assert_eq!(sessions(&e, "alice"), vec![("phone".to_string(), false, h)]);
    assert_eq!(general(&e, "alice"), Offline);
    assert_eq!(e.last_online("alice"), LastOnline::At(h + 400_000));
}

// R2.4
#[test]
fn a_late_tick_disconnects_at_the_tick_time() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    tick(&mut e, 1_234_567);
    assert_eq!(general(&e, "alice"), Offline);
    assert_eq!(e.last_online("alice"), LastOnline::At(1_234_567));
}

// R2.4
#[test]
fn a_heartbeat_moves_the_deadline() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    let out = ok(&mut e, Command::heartbeat("alice", "phone"), 300_000);
    assert_eq!(out.events, 0);
    assert_eq!(e.sessions("alice")[0].heartbeat_at_ms, 300_000);
    tick(&mut e, 400_000);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 699_999);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 700_000);
    assert_eq!(general(&e, "alice"), Offline);
}

// R2.4
#[test]
fn repeated_heartbeats_keep_a_session_alive_indefinitely() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    for i in 1..=20u64 {
        ok(&mut e, Command::heartbeat("alice", "phone"), i * 399_000);
        tick(&mut e, i * 399_000 + 1_000);
        assert_eq!(general(&e, "alice"), Online, "round {i}");
    }
    tick(&mut e, 20 * 399_000 + 400_000);
    assert_eq!(general(&e, "alice"), Offline);
}

// R2.4
#[test]
fn a_login_of_a_connected_session_moves_the_deadline_too() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("alice", "phone"), 300_000);
    tick(&mut e, 699_999);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 700_000);
    assert_eq!(general(&e, "alice"), Offline);
}

// R2.4
#[test]
fn heartbeat_of_a_missing_or_disconnected_session_is_not_logged_in() {
    let mut e = engine();
    assert_eq!(code(&mut e, Command::heartbeat("alice", "phone"), 0), 6014);
    ok(&mut e, Command::login("alice", "phone"), 0);
    assert_eq!(code(&mut e, Command::heartbeat("alice", "tablet"), 1), 6014);
    ok(&mut e, Command::disconnect("alice", "phone"), 2);
    assert_eq!(code(&mut e, Command::heartbeat("alice", "phone"), 3), 6014);
    tick(&mut e, 10_000_000);
    ok(&mut e, Command::login("alice", "phone"), 10_000_000);
    tick(&mut e, 10_400_000);
    assert_eq!(code(&mut e, Command::heartbeat("alice", "phone"), 10_400_001), 6014, "timed out");
}

// R2.4
#[test]
fn only_ticks_expire_sessions() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    // Long past the deadline, other commands do not expire anything.
    ok(&mut e, Command::login("bob", "pc"), 500_000);
    ok(&mut e, Command::get_status("bob", "pc", ["alice"]), 500_001);
    assert_eq!(general(&e, "alice"), Online);
    // So a heartbeat before the next tick still saves the session.
    ok(&mut e, Command::heartbeat("alice", "phone"), 600_000);
    tick(&mut e, 600_000);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 899_999);
    assert_eq!((general(&e, "alice"), general(&e, "bob")), (Online, Online));
    tick(&mut e, 900_000);
    assert_eq!((general(&e, "alice"), general(&e, "bob")), (Online, Offline), "bob's h is 500 000");
    tick(&mut e, 1_000_000);
    assert_eq!(general(&e, "alice"), Offline);
}

// R2.4
#[test]
fn each_device_has_its_own_deadline() {
    let mut e = engine();
    ok(&mut e, Command::login("bob", "pc"), 0);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 0);
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("alice", "tablet"), 100_000);
    ok(&mut e, Command::heartbeat("bob", "pc"), 390_000);
    let out = tick(&mut e, 400_000);
    assert_eq!(
        sessions(&e, "alice"),
        vec![("phone".to_string(), false, 0), ("tablet".to_string(), true, 100_000)]
    );
    assert!(told(&e, &out).is_empty(), "alice is still ONLINE");
    let out = tick(&mut e, 500_000);
    assert_eq!(general(&e, "alice"), Offline);
    assert_eq!(told(&e, &out), expect(&[("bob", "pc", "alice OFFLINE ")]));
}

// R2.4
#[test]
fn a_stale_deadline_does_not_disconnect_a_reconnected_session() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::disconnect("alice", "phone"), 100);
    ok(&mut e, Command::login("alice", "phone"), 300_000);
    tick(&mut e, 400_000);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 699_999);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 700_000);
    assert_eq!(general(&e, "alice"), Offline);
}

// R2.4
#[test]
fn a_configured_timeout_is_used() {
    let mut e = engine_with(Config { heartbeat_timeout_ms: 10, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 5);
    tick(&mut e, 14);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 15);
    assert_eq!(general(&e, "alice"), Offline);
}

// R2.4
#[test]
fn a_timeout_is_logged_and_notified_to_subscribers() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    ok(&mut e, Command::login("bob", "pc"), 200_000);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice"]), 200_000);
    let seq = e.last_seq();
    let out = tick(&mut e, 400_000);
    assert_eq!(out.events, 1);
    assert_eq!(e.last_seq(), seq + 1);
    assert_eq!(told(&e, &out), expect(&[("bob", "pc", "alice OFFLINE ")]));
}

// R2.4
#[test]
fn a_tick_with_nothing_due_logs_nothing() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    let seq = e.last_seq();
    let out = tick(&mut e, 1_000);
    assert_eq!(out.events, 0);
    assert!(out.notices.is_empty());
    assert_eq!(e.last_seq(), seq);
    assert_eq!(e.now_ms(), 1_000);
}

// R1.3
#[test]
fn a_login_with_an_earlier_time_is_stamped_at_the_latest_time() {
    let mut e = engine();
    tick(&mut e, 100_000);
    ok(&mut e, Command::login("alice", "phone"), 0);
    assert_eq!(sessions(&e, "alice"), vec![("phone".to_string(), true, 100_000)]);
    assert_eq!(e.sessions("alice")[0].heartbeat_at_ms, 100_000);
    // Had the heartbeat been stamped at 0, the tick at 400 000 would disconnect it.
    tick(&mut e, 400_000);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 499_999);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 500_000);
    assert_eq!(general(&e, "alice"), Offline);
    assert_eq!(e.now_ms(), 500_000);
}

// R1.3
#[test]
fn a_heartbeat_with_an_earlier_time_is_stamped_at_the_latest_time() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    tick(&mut e, 300_000);
    ok(&mut e, Command::heartbeat("alice", "phone"), 10);
    assert_eq!(e.sessions("alice")[0].heartbeat_at_ms, 300_000);
    tick(&mut e, 699_999);
    assert_eq!(general(&e, "alice"), Online);
    tick(&mut e, 700_000);
    assert_eq!(general(&e, "alice"), Offline);
}

// R1.3
#[test]
fn a_tick_with_an_earlier_time_does_not_move_time_back() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    tick(&mut e, 399_000);
    let out = tick(&mut e, 5);
    assert_eq!(out.events, 0);
    assert_eq!(e.now_ms(), 399_000);
    // A backwards tick never expires more than the latest time allows, nor less.
    ok(&mut e, Command::disconnect("alice", "phone"), 1);
    assert_eq!(e.last_online("alice"), LastOnline::At(399_000));
}

// R1.3
#[test]
fn events_carry_the_clamped_engine_time() {
    let mut e = engine();
    tick(&mut e, 7_000);
    ok(&mut e, Command::login("alice", "phone"), 3_000);
    ok(&mut e, Command::set_status("alice", "phone", "x"), 9_000);
    ok(&mut e, Command::disconnect("alice", "phone"), 8_000);
    let mut stamped = Vec::new();
    for batch in e.store().read_from(1).unwrap() {
        let (_, events) = codec::decode_batch(&batch.unwrap().bytes).unwrap();
        stamped.extend(events.into_iter().map(|ev| (ev.at_ms, ev.kind)));
    }
    assert_eq!(stamped.len(), 3);
    assert_eq!(stamped[0].0, 7_000);
    assert!(matches!(stamped[0].1, EventKind::SessionOpened { .. }));
    assert_eq!(stamped[1].0, 9_000);
    assert_eq!(stamped[2].0, 9_000);
    assert_eq!(e.last_online("alice"), LastOnline::At(9_000));
}

// R2.4, R8.2: a heartbeat by session handle is the same heartbeat, without the ids' strings.
#[test]
fn a_heartbeat_by_handle_moves_the_deadline_like_a_heartbeat_by_ids() {
    let mut e =
        presence_engine::Engine::open(Config::default(), presence_storage_mem::MemStore::new()).unwrap();
    e.execute(Command::login("alice", "phone"), 0).unwrap();
    assert!(e.session_handle("alice", "tablet").is_none());
    let handle = e.session_handle("alice", "phone").unwrap();
    let seq = e.last_seq();
    e.heartbeat(handle, 300_000).unwrap();
    assert_eq!(e.last_seq(), seq, "R8.2: not logged");
    assert_eq!(e.sessions("alice")[0].heartbeat_at_ms, 300_000);
    e.tick(699_999).unwrap();
    assert_eq!(e.status("alice").general, Online);
    e.tick(700_000).unwrap();
    assert_eq!(e.status("alice").general, Offline);
    // A disconnected session refuses it, as heartbeat(user, device) does; a reconnect makes
    // the same handle work again.
    assert_eq!(e.heartbeat(handle, 700_001).unwrap_err().code(), 6014);
    e.execute(Command::login("alice", "phone"), 700_002).unwrap();
    e.heartbeat(handle, 700_003).unwrap();
}

// R2.4, R8.2: a handle from an engine opened before a restart is refused, not applied to
// whatever session now has its numbers.
#[test]
fn a_session_handle_of_another_engine_is_refused() {
    let mut e =
        presence_engine::Engine::open(Config::default(), presence_storage_mem::MemStore::new()).unwrap();
    e.execute(Command::login("alice", "phone"), 0).unwrap();
    let handle = e.session_handle("alice", "phone").unwrap();
    assert_eq!(handle.engine(), e.id(), "a handle names its engine");
    let mut reopened = presence_engine::Engine::open(Config::default(), e.into_store()).unwrap();
    assert_ne!(reopened.id(), handle.engine());
    assert_eq!(reopened.heartbeat(handle, 10).unwrap_err().code(), 6017);
    let fresh = reopened.session_handle("alice", "phone").unwrap();
    assert_eq!(fresh.engine(), reopened.id());
    reopened.heartbeat(fresh, 10).unwrap();
}

// R2.4: one tick logs at most TICK_EVENTS_MAX events (one batch must stay within the codec's
// limit); what is left is expired by the next tick.
#[test]
fn a_tick_with_more_timeouts_than_fit_in_a_batch_finishes_at_the_next_tick() {
    use presence_engine::TICK_EVENTS_MAX;
    let mut e =
        presence_engine::Engine::open(Config::default(), presence_storage_mem::MemStore::new()).unwrap();
    let users = TICK_EVENTS_MAX + 100;
    let mut group = e.group();
    for i in 0..users {
        group.execute(Command::login(format!("u{i}"), "d"), 0).unwrap();
    }
    group.commit().unwrap();
    assert_eq!(e.tick(400_000).unwrap().events, TICK_EVENTS_MAX);
    assert_eq!(e.stats().sessions_connected, 100);
    assert_eq!(e.tick(400_001).unwrap().events, 100);
    assert_eq!(e.stats().sessions_connected, 0);
}

// R2.4: a tick's batch also fits the store's own limit (a network store takes about 1 MiB):
// what does not fit waits for the next tick, in deadline order.
#[test]
fn a_tick_stays_under_the_store_batch_limit() {
    use presence_engine::EventStore;
    let store = presence_storage_mem::MemStore::with_batch_bytes_max(4_096);
    let mut e = presence_engine::Engine::open(Config::default(), store).unwrap();
    for i in 0..500 {
        e.execute(Command::login(format!("user-{i:04}"), "device"), i).unwrap();
    }
    let mut expired = 0;
    let mut ticks = 0;
    while e.stats().sessions_connected > 0 {
        let outcome = e.tick(1_000_000 + ticks).unwrap();
        assert!(outcome.events > 0, "every tick makes progress");
        expired += outcome.events;
        if ticks == 0 {
            // Oldest first: the first tick expired the first users to log in.
            assert!(!e.sessions("user-0000")[0].connected);
            assert!(e.sessions("user-0499")[0].connected);
        }
        ticks += 1;
    }
    assert_eq!(expired, 500);
    assert!(ticks > 1, "500 timeouts do not fit in 4 KiB");
    let largest = e.store().read_from(1).unwrap().map(|b| b.unwrap().bytes.len()).max().unwrap();
    assert!(largest <= 4_096, "a batch of {largest} bytes");
}

// R4.5: a subscription list too long for one batch of the store on its own is expired over
// several ticks, oldest targets first, and nothing else is stuck behind it.
#[test]
fn a_list_longer_than_a_store_batch_expires_over_several_ticks() {
    let store = presence_storage_mem::MemStore::with_batch_bytes_max(2_048);
    let config = Config { max_subscriptions: 1_000, max_subscribe_batch: 100, ..Config::default() };
    let retention = config.subscription_retention_ms;
    let mut e = presence_engine::Engine::open(config, store).unwrap();
    e.execute(Command::login("fan", "phone"), 0).unwrap();
    for batch in 0..5 {
        let targets: Vec<String> = (0..100).map(|i| format!("star-{:03}", batch * 100 + i)).collect();
        e.execute(Command::subscribe("fan", "phone", targets), 0).unwrap();
    }
    e.execute(Command::logout("fan", "phone"), 1).unwrap();
    let mut ticks = 0;
    while !e.subscriptions("fan").is_empty() {
        let outcome = e.tick(1 + retention + ticks).unwrap();
        assert!(outcome.events > 0, "every tick makes progress");
        if ticks == 0 {
            assert_eq!(
                e.subscriptions("fan")[0].as_str(),
                format!("star-{:03}", 500 - e.subscriptions("fan").len())
            );
        }
        ticks += 1;
    }
    assert!(ticks > 1, "500 targets do not fit in 2 KiB");
}

// R2.4: when a tick is full in the middle of one user's sessions that time out together,
// which of them wait for the next tick does not depend on the order they connected in: the
// sessions are taken in the order of their devices (first seen by the engine first), as
// before deadlines named sessions by incarnation.
#[test]
fn a_full_tick_stops_at_the_same_sessions_whatever_order_they_connected_in() {
    let config = Config { max_user_id_bytes: 8, max_device_id_bytes: 8, ..Config::default() };
    // Room for two timeouts of alice's but not three (about 55 bytes each).
    let store = presence_storage_mem::MemStore::with_batch_bytes_max(170);
    let mut e = presence_engine::Engine::open(config, store).unwrap();
    // The engine meets the devices in this order ...
    for device in ["tab", "phone", "pc"] {
        e.execute(Command::login("bob", device), 0).unwrap();
        e.execute(Command::logout("bob", device), 0).unwrap();
    }
    // ... and alice's sessions connect in the other order, all at once.
    for device in ["pc", "phone", "tab"] {
        e.execute(Command::login("alice", device), 10).unwrap();
    }
    assert_eq!(e.tick(10 + Config::default().heartbeat_timeout_ms).unwrap().events, 2);
    let connected: Vec<_> =
        e.sessions("alice").into_iter().filter(|s| s.connected).map(|s| s.device).collect();
    assert_eq!(connected, vec!["pc".into()] as Vec<presence_engine::DeviceId>);
    assert_eq!(e.tick(11 + Config::default().heartbeat_timeout_ms).unwrap().events, 1);
}
