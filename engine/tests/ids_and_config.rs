//! Identities, time and configuration (R1.1-R1.3, R2.7): what a valid user or device id is,
//! users the engine has never seen, time as an input, Tencent's status numbers, and the
//! configuration's defaults and validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use presence_engine::{
    Command, Config, Edition, Engine, Error, GeneralStatus, GeneralStatus::*, LastOnline, CONFIG_LIMIT_MAX,
    TIME_MS_MAX,
};
use presence_storage_mem::MemStore;

// R1.1
#[test]
fn a_user_id_is_one_to_32_bytes() {
    let mut e = engine();
    ok(&mut e, Command::login("u".repeat(32), "phone"), 0);
    assert_eq!(general(&e, &"u".repeat(32)), Online);
    let err = refused(&mut e, Command::login("u".repeat(33), "phone"), 0);
    assert!(matches!(err, Error::InvalidParameter(_)));
    assert_eq!(code(&mut e, Command::login("", "phone"), 0), 6017);
    // Bytes of UTF-8, not characters: 10 three-byte characters are 30 bytes, 11 are 33.
    ok(&mut e, Command::login("用".repeat(10) + "ab", "phone"), 0);
    assert_eq!(code(&mut e, Command::login("用".repeat(11), "phone"), 0), 6017);
}

// R1.1
#[test]
fn a_device_id_is_one_to_64_bytes() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "d".repeat(64)), 0);
    assert_eq!(code(&mut e, Command::login("alice", "d".repeat(65)), 0), 6017);
    assert_eq!(code(&mut e, Command::login("alice", ""), 0), 6017);
    assert_eq!(e.sessions("alice").len(), 1);
}

// R1.1
#[test]
fn ids_must_not_hold_control_characters() {
    let mut e = engine();
    for bad in ["a\nb", "tab\t", "\u{0}", "del\u{7f}", "c1\u{85}", "esc\u{1b}[0m"] {
        assert_eq!(code(&mut e, Command::login(bad, "phone"), 0), 6017, "user {bad:?}");
        assert_eq!(code(&mut e, Command::login("alice", bad), 0), 6017, "device {bad:?}");
    }
    // Spaces, punctuation, emoji and other scripts are fine.
    for good in ["a b", "名字", "🙂", "x-y_z.w@host", "\u{200b}zero-width"] {
        ok(&mut e, Command::login(good, good), 0);
    }
    assert_eq!(e.last_seq(), 5);
}

// R1.1
#[test]
fn every_id_in_a_command_is_checked_targets_included() {
    let mut e = engine();
    ok(&mut e, Command::login("me", "pc"), 0);
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["ok", ""]), 0), 6017);
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["x".repeat(33)]), 0), 6017);
    assert_eq!(code(&mut e, Command::subscribe("me", "pc", ["ok", "b\u{0}ad"]), 0), 6017);
    assert_eq!(code(&mut e, Command::unsubscribe("me", "pc", ["\n"]), 0), 6017);
    assert_eq!(code(&mut e, Command::add_friend("me", "x".repeat(33)), 0), 6017);
    assert_eq!(code(&mut e, Command::remove_friend("\r", "me"), 0), 6017);
    assert!(e.subscriptions("me").is_empty());
    // The self query is checked too.
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["m\u{1}e"]), 0), 6017);
}

// R1.1
#[test]
fn configured_id_limits_are_used() {
    let mut e = engine_with(Config { max_user_id_bytes: 4, max_device_id_bytes: 2, ..Config::default() });
    ok(&mut e, Command::login("abcd", "pc"), 0);
    assert_eq!(code(&mut e, Command::login("abcde", "pc"), 0), 6017);
    assert_eq!(code(&mut e, Command::login("abcd", "pcx"), 0), 6017);
    assert_eq!(code(&mut e, Command::get_status("abcd", "pc", ["toolong"]), 0), 6017);
}

// R1.1
#[test]
fn a_device_id_is_unique_within_its_user_only() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::login("bob", "phone"), 2);
    ok(&mut e, Command::disconnect("alice", "phone"), 3);
    assert_eq!(sessions(&e, "alice"), vec![("phone".to_string(), false, 1)]);
    assert_eq!(sessions(&e, "bob"), vec![("phone".to_string(), true, 2)]);
    assert_eq!((general(&e, "alice"), general(&e, "bob")), (Offline, Online));
}

// R1.2
#[test]
fn a_user_never_seen_is_unlogined_with_no_custom_status() {
    let mut e = engine();
    assert_eq!(e.status("stranger"), status(Unlogined, ""));
    assert_eq!(e.last_online("stranger"), LastOnline::Never);
    assert!(e.sessions("stranger").is_empty());
    assert!(e.subscriptions("stranger").is_empty());
    assert!(e.friends("stranger").is_empty());
    assert_eq!(e.subscriber_count("stranger"), 0);
    ok(&mut e, Command::login("me", "pc"), 0);
    let out = ok(&mut e, Command::get_status("me", "pc", ["stranger"]), 1);
    assert_eq!(out.statuses()[0].status, status(Unlogined, ""));
    // Reading does not register anybody.
    assert!(e.user_ids().all(|u| u != "stranger"));
}

// R1.2
#[test]
fn there_is_no_registration_step() {
    let mut e = engine();
    let out = ok(&mut e, Command::login("brand-new", "phone"), 0);
    assert_eq!(out.events, 1);
    assert_eq!(general(&e, "brand-new"), Online);
    ok(&mut e, Command::add_friend("x", "y"), 1);
    assert_eq!(friends(&e, "x"), strings(&["y"]));
}

// R1.3
#[test]
fn time_is_only_what_commands_bring() {
    let mut e = engine();
    assert_eq!(e.now_ms(), 0);
    ok(&mut e, Command::login("alice", "phone"), 1_700_000_000_000);
    assert_eq!(e.now_ms(), 1_700_000_000_000);
    assert_eq!(sessions(&e, "alice"), vec![("phone".to_string(), true, 1_700_000_000_000)]);
    tick(&mut e, 5);
    assert_eq!(e.now_ms(), 1_700_000_000_000);
    assert_eq!(general(&e, "alice"), Online);
}

// R1.3
#[test]
fn the_time_of_a_refused_command_is_not_adopted() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 1_000);
    assert_eq!(code(&mut e, Command::heartbeat("alice", "tablet"), 900_000), 6014);
    assert_eq!(e.now_ms(), 1_000);
    ok(&mut e, Command::login("bob", "pc"), 2_000);
    assert_eq!(sessions(&e, "bob"), vec![("pc".to_string(), true, 2_000)]);
    tick(&mut e, 400_999);
    assert_eq!(general(&e, "alice"), Online);
}

// R1.3
#[test]
fn times_near_the_end_of_u64_do_not_break_the_engine() {
    let mut e = engine();
    let late = u64::MAX - 1_000_000;
    ok(&mut e, Command::login("me", "pc"), late);
    for _ in 0..20 {
        ok(&mut e, Command::get_status("me", "pc", ["x"]), late);
    }
    assert_eq!(code(&mut e, Command::get_status("me", "pc", ["x"]), late + 4_999), 7008);
    ok(&mut e, Command::get_status("me", "pc", ["x"]), late + 5_000);
    ok(&mut e, Command::heartbeat("me", "pc"), late + 500_000);
    tick(&mut e, late + 899_999);
    assert_eq!(general(&e, "me"), Online);
    tick(&mut e, late + 900_000);
    assert_eq!(general(&e, "me"), Offline);
    assert_eq!(e.last_online("me"), LastOnline::At(late + 900_000));
    // At the very end, time stops at TIME_MS_MAX (u64::MAX counts as it) and deadlines
    // saturate rather than wrap around: a session that logs in there never times out, and
    // "last online" keeps a real time.
    ok(&mut e, Command::login("me", "pc"), u64::MAX);
    assert_eq!(e.now_ms(), TIME_MS_MAX);
    ok(&mut e, Command::get_status("me", "pc", ["x"]), u64::MAX);
    tick(&mut e, u64::MAX);
    assert_eq!(general(&e, "me"), Online);
    ok(&mut e, Command::disconnect("me", "pc"), u64::MAX);
    assert_eq!(e.last_online("me"), LastOnline::At(TIME_MS_MAX));
    tick(&mut e, 0);
    assert_eq!(e.now_ms(), TIME_MS_MAX);
}

// R2.7
#[test]
fn general_status_numbers_are_tencents() {
    let table = [
        (Unknown, 0, "UNKNOWN"),
        (Online, 1, "ONLINE"),
        (Offline, 2, "OFFLINE"),
        (Unlogined, 3, "UNLOGINED"),
    ];
    for (status, number, name) in table {
        assert_eq!(status.code(), number);
        assert_eq!(GeneralStatus::from_code(number), Some(status));
        assert_eq!(status.name(), name);
        assert_eq!(status.to_string(), name);
        assert_eq!(GeneralStatus::from_name(name), Some(status));
    }
    assert_eq!(GeneralStatus::from_code(4), None);
    assert_eq!(GeneralStatus::from_name("online"), None);
}

// R2.7
#[test]
fn the_engine_never_produces_unknown() {
    let mut e = engine();
    let mut seen = vec![general(&e, "a")];
    ok(&mut e, Command::login("a", "d"), 0);
    seen.push(general(&e, "a"));
    ok(&mut e, Command::disconnect("a", "d"), 1);
    seen.push(general(&e, "a"));
    ok(&mut e, Command::logout("a", "d"), 2);
    seen.push(general(&e, "a"));
    let codes: Vec<u8> = seen.into_iter().map(GeneralStatus::code).collect();
    assert_eq!(codes, vec![3, 1, 2, 3]);
}

#[test]
fn the_default_configuration_is_the_spec_table() {
    let c = Config::default();
    assert_eq!(c.edition, Edition::Ultimate);
    assert!(c.status_feature);
    assert!(!c.friend_notifications);
    assert_eq!(c.heartbeat_timeout_ms, 400_000);
    assert_eq!(c.max_devices_per_user, 10);
    assert_eq!(c.max_subscriptions, 200);
    assert_eq!(c.max_subscribe_batch, 100);
    assert_eq!(c.max_query_batch, 500);
    assert_eq!(c.rate_limit_calls, 20);
    assert_eq!(c.rate_limit_window_ms, 5_000);
    assert_eq!(c.subscription_retention_ms, 86_400_000);
    assert_eq!(c.max_custom_status_bytes, 50);
    assert_eq!(c.max_user_id_bytes, 32);
    assert_eq!(c.max_device_id_bytes, 64);
    assert!(c.validate().is_ok());
}

fn open(config: Config) -> Result<Engine<MemStore>, Error> {
    Engine::open(config, MemStore::new())
}

#[test]
fn a_zero_cap_batch_limit_or_duration_is_an_invalid_configuration() {
    let zeroed: Vec<(&str, Config)> = vec![
        ("max_devices_per_user", Config { max_devices_per_user: 0, ..Config::default() }),
        ("max_subscriptions", Config { max_subscriptions: 0, ..Config::default() }),
        ("max_subscribe_batch", Config { max_subscribe_batch: 0, ..Config::default() }),
        ("max_query_batch", Config { max_query_batch: 0, ..Config::default() }),
        ("rate_limit_calls", Config { rate_limit_calls: 0, ..Config::default() }),
        ("max_user_id_bytes", Config { max_user_id_bytes: 0, ..Config::default() }),
        ("max_device_id_bytes", Config { max_device_id_bytes: 0, ..Config::default() }),
        ("heartbeat_timeout_ms", Config { heartbeat_timeout_ms: 0, ..Config::default() }),
        ("rate_limit_window_ms", Config { rate_limit_window_ms: 0, ..Config::default() }),
        ("subscription_retention_ms", Config { subscription_retention_ms: 0, ..Config::default() }),
    ];
    for (field, config) in zeroed {
        match open(config) {
            Err(Error::InvalidConfig(message)) => assert!(message.contains(field), "{field}: {message}"),
            Err(other) => panic!("{field}: {other}"),
            Ok(_) => panic!("{field} = 0 was accepted"),
        }
    }
}

#[test]
fn size_limits_above_the_maximum_are_refused_and_zero_custom_bytes_is_allowed() {
    let err = open(Config { max_subscriptions: CONFIG_LIMIT_MAX + 1, ..Config::default() }).err().unwrap();
    assert!(matches!(err, Error::InvalidConfig(_)));
    let err =
        open(Config { max_custom_status_bytes: CONFIG_LIMIT_MAX + 1, ..Config::default() }).err().unwrap();
    assert!(matches!(err, Error::InvalidConfig(_)));
    assert!(open(Config { max_subscriptions: CONFIG_LIMIT_MAX, ..Config::default() }).is_ok());
    assert!(open(Config { max_custom_status_bytes: 0, ..Config::default() }).is_ok());
    let minimal = Config {
        max_devices_per_user: 1,
        max_subscriptions: 1,
        max_subscribe_batch: 1,
        max_query_batch: 1,
        rate_limit_calls: 1,
        rate_limit_window_ms: 1,
        heartbeat_timeout_ms: 1,
        subscription_retention_ms: 1,
        max_user_id_bytes: 1,
        max_device_id_bytes: 1,
        ..Config::default()
    };
    let mut e = open(minimal.clone()).unwrap();
    assert_eq!(e.config(), &minimal);
    ok(&mut e, Command::login("a", "b"), 0);
}

#[test]
fn an_invalid_configuration_is_refused_even_over_a_good_store() {
    let mut e = engine();
    ok(&mut e, Command::login("alice", "phone"), 0);
    let store = e.into_store();
    let err = Engine::open(Config { max_query_batch: 0, ..Config::default() }, store.clone()).err().unwrap();
    assert_eq!(err.code(), 6017);
    let reopened = Engine::open(Config::default(), store).unwrap();
    assert_eq!(general(&reopened, "alice"), Online);
}

// R1.1: ids so long that one session event would not fit a batch of the store could never
// be expired by a tick: such a configuration is refused when the engine opens.
#[test]
fn ids_longer_than_a_store_batch_are_refused_at_open() {
    let store = presence_storage_mem::MemStore::with_batch_bytes_max(1_024);
    let config = Config { max_user_id_bytes: 600, max_device_id_bytes: 600, ..Config::default() };
    let err = presence_engine::Engine::open(config, store).err().unwrap();
    assert_eq!(err.code(), 6017);
    assert!(err.to_string().contains("max_user_id_bytes"), "{err}");
    let store = presence_storage_mem::MemStore::with_batch_bytes_max(1_024);
    assert!(presence_engine::Engine::open(Config::default(), store).is_ok());
}
