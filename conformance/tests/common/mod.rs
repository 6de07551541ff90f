//! Strategies shared by the model-based tests: commands over a small id space, so that users,
//! devices and friends collide, small random configurations, and timed step lists.

#![allow(dead_code)]

use presence_conformance::lockstep::Step;
use presence_engine::{Command, Config, Edition, UserId};
use proptest::prelude::*;
use proptest::sample::select;

/// The valid users of the id space; every read is compared for each of them.
pub const USERS: &[&str] = &["a", "b", "c", "d"];
const BAD_USERS: &[&str] = &["", "e\u{7}", "eeeee", "éé"];
const DEVICES: &[&str] = &["p", "q", "r"];
const BAD_DEVICES: &[&str] = &["", "\n", "ssss"];
const CUSTOMS: &[&str] = &["", "x", "y", "xy", "héé", "\u{0}"];
/// Connection owners (R8.5), one of them invalid (a control character).
const OWNERS: &[&str] = &["gw1", "gw2", "bad\u{1}"];

/// Cases per property: `PROPTEST_CASES` when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn user() -> impl Strategy<Value = String> {
    prop_oneof![12 => select(USERS), 1 => select(BAD_USERS)].prop_map(String::from)
}

fn device() -> impl Strategy<Value = String> {
    prop_oneof![12 => select(DEVICES), 1 => select(BAD_DEVICES)].prop_map(String::from)
}

fn targets() -> impl Strategy<Value = Vec<UserId>> {
    prop::collection::vec(user().prop_map(UserId::from), 0..5)
}

/// Any command, login-heavy so that sessions exist.
pub fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
                5 => (user(), device()).prop_map(|(u, d)| Command::login(u, d)),
        2 => (user(), device(), select(OWNERS)).prop_map(|(u, d, o)| Command::login_with_owner(u, d, o)),
        1 => prop_oneof![select(OWNERS).prop_map(Command::disconnect_owner), Just(Command::disconnect_all())],
        1 => (user(), device()).prop_map(|(u, d)| Command::logout(u, d)),
        2 => (user(), device()).prop_map(|(u, d)| Command::disconnect(u, d)),
        2 => (user(), device()).prop_map(|(u, d)| Command::heartbeat(u, d)),
        3 => (user(), device(), select(CUSTOMS)).prop_map(|(u, d, c)| Command::set_status(u, d, c)),
        2 => (user(), device(), targets()).prop_map(|(u, d, t)| Command::get_status(u, d, t)),
        1 => (user(), device()).prop_map(|(u, d)| Command::get_status(u.clone(), d, [u])),
        4 => (user(), device(), targets()).prop_map(|(u, d, t)| Command::subscribe(u, d, t)),
        1 => (user(), device(), targets()).prop_map(|(u, d, t)| Command::unsubscribe(u, d, t)),
        2 => (user(), user()).prop_map(|(u, f)| Command::add_friend(u, f)),
        1 => (user(), user()).prop_map(|(u, f)| Command::remove_friend(u, f)),
    ]
}

/// A configuration with both editions, both switches, and every cap, batch, limit and
/// timeout small, so that each is reached often.
pub fn config() -> impl Strategy<Value = Config> {
    let gates = (
        prop_oneof![4 => Just(Edition::Ultimate), 1 => Just(Edition::Standard)],
        prop::bool::weighted(0.85),
        any::<bool>(),
    );
    let caps = (1..=3u32, 1..=4u32, 1..=4u32, 1..=4u32, 1..=4u32);
    let times = (1..=40u64, 1..=30u64, 1..=80u64);
    let sizes = (0..=4u32, prop_oneof![1..=5u32, Just(32)], prop_oneof![1..=3u32, Just(64)]);
    (gates, caps, times, sizes).prop_map(
        |(
            (edition, status_feature, friend_notifications),
            (devices, subscriptions, subscribe_batch, query_batch, calls),
            (heartbeat, window, retention),
            (custom_bytes, user_bytes, device_bytes),
        )| Config {
            edition,
            status_feature,
            friend_notifications,
            heartbeat_timeout_ms: heartbeat,
            max_devices_per_user: devices,
            max_subscriptions: subscriptions,
            max_subscribe_batch: subscribe_batch,
            max_query_batch: query_batch,
            rate_limit_calls: calls,
            rate_limit_window_ms: window,
            subscription_retention_ms: retention,
            max_custom_status_bytes: custom_bytes,
            max_user_id_bytes: user_bytes,
            max_device_id_bytes: device_bytes,
        },
    )
}

/// A step before its time is fixed.
#[derive(Clone, Debug)]
enum Draft {
    Execute(Command),
    Tick,
    Snapshot(bool),
    Reopen,
    ReopenDisconnecting,
}

/// How far the clock moves before a step: often not at all, sometimes backwards (R1.3).
fn delta_ms() -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(0i64), 6 => 1..=10i64, 3 => 10..=60i64, 1 => -30..0i64]
}

/// Step lists of up to `max_len` steps with increasing (sometimes decreasing) times, with
/// snapshots, compactions and reopenings mixed in.
pub fn steps(max_len: usize) -> impl Strategy<Value = Vec<Step>> {
    let draft = prop_oneof![
        24 => command().prop_map(Draft::Execute),
        5 => Just(Draft::Tick),
        1 => any::<bool>().prop_map(Draft::Snapshot),
                1 => Just(Draft::Reopen),
        1 => Just(Draft::ReopenDisconnecting),
    ];
    prop::collection::vec((delta_ms(), draft), 1..max_len).prop_map(|drafts| {
        let mut clock: i64 = 0;
        drafts
            .into_iter()
            .map(|(delta, draft)| {
                clock = (clock + delta).max(0);
                let at_ms = clock as u64;
                match draft {
                    Draft::Execute(command) => Step::Execute { command, at_ms },
                    Draft::Tick => Step::Tick { at_ms },
                    Draft::Snapshot(compact) => Step::Snapshot { compact },
                    Draft::Reopen => Step::Reopen,
                    Draft::ReopenDisconnecting => Step::ReopenDisconnecting { at_ms },
                }
            })
            .collect()
    })
}
