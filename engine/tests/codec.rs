//! The codec (R8.1, R8.3): round trips of events, batches and snapshots; decoding truncated,
//! bit-flipped or arbitrary bytes returns an error and never panics; a newer format version
//! is refused as such; and a corrupt batch in a store makes recovery fail naming where.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use presence_engine::codec::{self, BATCH_HEADER_BYTES, FORMAT_VERSION};
use presence_engine::{
    CloseReason, Command, Config, DisconnectReason, Engine, Event, EventKind, EventStore, Snapshot,
    StoreErrorKind, UnsubscribeReason,
};
use presence_storage_mem::MemStore;

fn every_kind() -> Vec<Event> {
    let kinds = vec![
        EventKind::SessionOpened { user: "alice".into(), device: "phone".into(), owner: None },
        EventKind::SessionOpened { user: "alice".into(), device: "pad".into(), owner: Some("node-1".into()) },
        EventKind::SessionDisconnected {
            user: "alice".into(),
            device: "phone".into(),
            reason: DisconnectReason::HeartbeatTimeout,
        },
        EventKind::SessionDisconnected {
            user: "alice".into(),
            device: "phone".into(),
            reason: DisconnectReason::Disconnect,
        },
        EventKind::SessionClosed { user: "bob".into(), device: "pc".into(), reason: CloseReason::Kicked },
        EventKind::SessionClosed { user: "bob".into(), device: "pc".into(), reason: CloseReason::Logout },
        EventKind::CustomStatusSet {
            user: "名字".into(), custom: Arc::from("会议中 🙂\n"), device: None
        },
        EventKind::CustomStatusSet {
            user: "名字".into(),
            custom: Arc::from("busy"),
            device: Some("phone".into()),
        },
        EventKind::Subscribed { user: "bob".into(), targets: vec!["a".into(), "b".into()] },
        EventKind::Unsubscribed {
            user: "bob".into(),
            targets: vec!["a".into()],
            reason: UnsubscribeReason::Evicted,
        },
        EventKind::Unsubscribed { user: "bob".into(), targets: vec![], reason: UnsubscribeReason::Expired },
        EventKind::Unsubscribed {
            user: "bob".into(),
            targets: vec!["b".into()],
            reason: UnsubscribeReason::Unsubscribed,
        },
        EventKind::FriendAdded { user: "a".into(), friend: "b".into() },
        EventKind::FriendRemoved { user: "a".into(), friend: "b".into() },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Event { at_ms: (i as u64) << 40 | i as u64, kind })
        .collect()
}

fn encoded_batch(first_seq: u64, events: &[Event]) -> Vec<u8> {
    let mut out = Vec::new();
    codec::encode_batch(first_seq, events, &mut out).unwrap();
    out
}

/// A store with five batches (events 1, 2-3, 4, 5 and 6) from a small session.
fn store_with_batches() -> MemStore {
    let mut e = engine_with(Config { max_devices_per_user: 1, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::login("alice", "tablet"), 2);
    ok(&mut e, Command::set_status("alice", "tablet", "busy"), 3);
    ok(&mut e, Command::login("bob", "pc"), 4);
    ok(&mut e, Command::subscribe("bob", "pc", ["alice", "carol"]), 5);
    e.into_store()
}

// R8.1
#[test]
fn a_batch_round_trips() {
    let events = every_kind();
    let bytes = encoded_batch(42, &events);
    assert_eq!(bytes[0], FORMAT_VERSION);
    let header = codec::batch_header(&bytes).unwrap();
    assert_eq!((header.version, header.first_seq, header.count), (FORMAT_VERSION, 42, events.len() as u32));
    let (decoded_header, decoded) = codec::decode_batch(&bytes).unwrap();
    assert_eq!(decoded_header, header);
    assert_eq!(decoded, events);
}

// R8.1
#[test]
fn encode_batch_appends_to_the_buffer() {
    let events = every_kind();
    let mut out = b"prefix".to_vec();
    codec::encode_batch(7, &events, &mut out).unwrap();
    assert_eq!(&out[..6], b"prefix");
    assert_eq!(&out[6..], encoded_batch(7, &events).as_slice());
    let (_, decoded) = codec::decode_batch(&out[6..]).unwrap();
    assert_eq!(decoded, events);
}

// R8.1
#[test]
fn every_event_round_trips_alone() {
    for event in every_kind() {
        let bytes = codec::encode_event(&event).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(codec::decode_event(&bytes).unwrap(), event);
    }
}

// R8.1
#[test]
fn a_snapshot_round_trips() {
    let mut e = engine_with(Config { friend_notifications: true, ..Config::default() });
    ok(&mut e, Command::login("alice", "phone"), 1);
    ok(&mut e, Command::login("alice", "tablet"), 2);
    ok(&mut e, Command::disconnect("alice", "tablet"), 3);
    ok(&mut e, Command::set_status("alice", "phone", "✈ away"), 4);
    ok(&mut e, Command::login("bob", "pc"), 5);
    ok(&mut e, Command::subscribe("bob", "pc", ["zed", "alice"]), 6);
    ok(&mut e, Command::add_friend("bob", "carol"), 7);
    ok(&mut e, Command::logout("bob", "pc"), 8);
    let snapshot = Snapshot { last_seq: e.last_seq(), now_ms: e.now_ms(), state: e.logical_state() };
    let bytes = codec::encode_snapshot(&snapshot).unwrap();
    assert_eq!(codec::decode_snapshot(&bytes).unwrap(), snapshot);
    // What the engine saves is the same encoding.
    let seq = e.snapshot().unwrap();
    let saved = e.store().load_snapshot(seq).unwrap().unwrap();
    assert_eq!(codec::decode_snapshot(&saved).unwrap(), snapshot);
    let empty = Snapshot { last_seq: 0, now_ms: 0, state: Default::default() };
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&empty).unwrap()).unwrap(), empty);
}

// R8.1
#[test]
fn an_empty_batch_does_not_decode() {
    let bytes = encoded_batch(1, &[]);
    let err = codec::decode_batch(&bytes).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt);
}

// R8.3
#[test]
fn every_truncation_is_an_error() {
    let event_bytes = codec::encode_event(&every_kind()[5]).unwrap();
    let batch = encoded_batch(3, &every_kind());
    for len in 0..batch.len() {
        let err = codec::decode_batch(&batch[..len]).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Corrupt, "batch cut at {len}");
    }
    for len in 0..event_bytes.len() {
        assert!(codec::decode_event(&event_bytes[..len]).is_err(), "event cut at {len}");
    }
    let snapshot =
        codec::encode_snapshot(&Snapshot { last_seq: 9, now_ms: 9, state: Default::default() }).unwrap();
    for len in 0..snapshot.len() {
        assert!(codec::decode_snapshot(&snapshot[..len]).is_err(), "snapshot cut at {len}");
    }
}

// R8.3
#[test]
fn every_bit_flip_is_caught() {
    let events = every_kind();
    let batch = encoded_batch(3, &events);
    for bit in 0..batch.len() * 8 {
        let mut bytes = batch.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        match codec::decode_batch(&bytes) {
            Err(_) => {}
            // The checksum covers the payload; a flip in the header's sequence number decodes
            // but no longer matches where the batch is stored, which recovery checks.
            Ok((header, decoded)) => {
                assert!((1..9).contains(&(bit / 8)), "bit {bit} went unnoticed");
                assert_ne!(header.first_seq, 3);
                assert_eq!(decoded, events);
            }
        }
    }
    let snapshot =
        codec::encode_snapshot(&Snapshot { last_seq: 9, now_ms: 9, state: Default::default() }).unwrap();
    for bit in 0..snapshot.len() * 8 {
        let mut bytes = snapshot.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        assert!(codec::decode_snapshot(&bytes).is_err(), "snapshot bit {bit}");
    }
}

// R8.3
#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = Rng::new(0xc0dec);
    for round in 0..3_000 {
        let len = rng.below(if round % 10 == 0 { 400 } else { 40 }) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if !bytes.is_empty() && rng.chance(70) {
            bytes[0] = FORMAT_VERSION;
        }
        let _ = codec::decode_event(&bytes);
        let _ = codec::decode_snapshot(&bytes);
        assert!(codec::decode_batch(&bytes).is_err() || bytes.len() >= BATCH_HEADER_BYTES);
    }
}

// R8.3
#[test]
fn garbage_behind_a_valid_checksum_never_panics() {
    // Past the checksum, the payload decoder itself meets hostile input: huge lengths,
    // bad enum tags, invalid UTF-8.
    let mut rng = Rng::new(0xbad5eed);
    let good = encoded_batch(1, &every_kind());
    let good_payload = &good[BATCH_HEADER_BYTES..];
    for round in 0..5_000 {
        let mut payload: Vec<u8> = if round % 2 == 0 {
            let mut p = good_payload.to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(p.len() as u64) as usize;
                p[at] = rng.next_u64() as u8;
            }
            p.truncate(rng.below(p.len() as u64 + 1) as usize);
            p
        } else {
            (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect()
        };
        if round % 7 == 0 {
            payload.splice(0..0, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let mut bytes = vec![FORMAT_VERSION];
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&12u32.to_le_bytes());
        bytes.extend_from_slice(&crc32(&payload).to_le_bytes());
        bytes.extend_from_slice(&payload);
        if let Ok((_, events)) = codec::decode_batch(&bytes) {
            assert_eq!(events.len(), 12);
        }
        let mut snapshot = vec![FORMAT_VERSION];
        snapshot.extend_from_slice(&crc32(&payload).to_le_bytes());
        snapshot.extend_from_slice(&payload);
        let _ = codec::decode_snapshot(&snapshot);
    }
}

// R8.3
#[test]
fn the_test_crc_matches_the_codec() {
    let batch = encoded_batch(5, &every_kind());
    assert_eq!(crc32(&batch[BATCH_HEADER_BYTES..]).to_le_bytes(), batch[13..17]);
    // Trailing bytes behind a valid checksum are refused.
    let mut payload = batch[BATCH_HEADER_BYTES..].to_vec();
    payload.push(0);
    let mut bytes = batch[..13].to_vec();
    bytes.extend_from_slice(&crc32(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    let err = codec::decode_batch(&bytes).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt);
    assert!(err.message().contains("trailing"), "{err}");
}

// R8.1
#[test]
fn a_newer_format_version_is_unsupported_and_an_older_unknown_one_corrupt() {
    let mut batch = encoded_batch(1, &every_kind());
    let mut event = codec::encode_event(&every_kind()[0]).unwrap();
    let mut snapshot =
        codec::encode_snapshot(&Snapshot { last_seq: 0, now_ms: 0, state: Default::default() }).unwrap();
    for version in [FORMAT_VERSION + 1, 0x7f, 0xff] {
        batch[0] = version;
        event[0] = version;
        snapshot[0] = version;
        assert_eq!(codec::decode_batch(&batch).unwrap_err().kind(), StoreErrorKind::UnsupportedVersion);
        assert_eq!(codec::batch_header(&batch).unwrap_err().kind(), StoreErrorKind::UnsupportedVersion);
        assert_eq!(codec::decode_event(&event).unwrap_err().kind(), StoreErrorKind::UnsupportedVersion);
        assert_eq!(codec::decode_snapshot(&snapshot).unwrap_err().kind(), StoreErrorKind::UnsupportedVersion);
    }
    batch[0] = 0;
    event[0] = 0;
    snapshot[0] = 0;
    assert_eq!(codec::decode_batch(&batch).unwrap_err().kind(), StoreErrorKind::Corrupt);
    assert_eq!(codec::decode_event(&event).unwrap_err().kind(), StoreErrorKind::Corrupt);
    assert_eq!(codec::decode_snapshot(&snapshot).unwrap_err().kind(), StoreErrorKind::Corrupt);
}

// R8.1
#[test]
fn a_corrupt_batch_fails_recovery_naming_its_sequence_number() {
    let store = store_with_batches();
    let batches: Vec<_> = store.read_from(1).unwrap().map(Result::unwrap).collect();
    assert_eq!(batches.len(), 5);
    // The second batch is the kick: events 2 and 3.
    assert_eq!((batches[1].first_seq, batches[1].count), (2, 2));
    let len = batches[1].bytes.len();
    for at in 0..len {
        let mut broken = store.clone();
        broken.batches_mut()[1].bytes[at] ^= 0x20;
        let err = Engine::open(Config::default(), broken)
            .err()
            .unwrap_or_else(|| panic!("byte {at} went unnoticed"));
        assert_eq!(err.code(), 9000, "byte {at}");
        let text = err.to_string();
        assert!(text.contains("sequence 2"), "byte {at}: {text}");
    }
    // A batch that is cut short.
    let mut torn = store.clone();
    let last = torn.batches_mut().last_mut().unwrap();
    last.bytes.truncate(last.bytes.len() - 1);
    let err = Engine::open(Config::default(), torn).err().unwrap();
    assert_eq!(err.code(), 9000);
    assert!(err.to_string().contains("sequence 6"), "{err}");
}

// R8.1
#[test]
fn a_batch_from_a_newer_format_fails_recovery_as_unsupported() {
    let mut store = store_with_batches();
    store.batches_mut()[3].bytes[0] = FORMAT_VERSION + 1;
    match Engine::open(Config::default(), store) {
        Err(presence_engine::Error::Storage(e)) => {
            assert_eq!(e.kind(), StoreErrorKind::UnsupportedVersion);
            assert!(e.to_string().contains("sequence 5"), "{e}");
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a newer format was read"),
    }
}

// R8.1
#[test]
fn a_batch_that_does_not_fit_the_state_fails_recovery() {
    let mut store = store_with_batches();
    // Replace batch 4 (bob logs in) with a disconnect of a session that does not exist.
    let bogus = Event {
        at_ms: 4,
        kind: EventKind::SessionDisconnected {
            user: "nobody".into(),
            device: "pc".into(),
            reason: DisconnectReason::Disconnect,
        },
    };
    let first_seq = store.batches_mut()[3].first_seq;
    store.batches_mut()[3].bytes = encoded_batch(first_seq, &[bogus]);
    let err = Engine::open(Config::default(), store).err().unwrap();
    assert_eq!(err.code(), 9000);
    assert!(err.to_string().contains(&format!("event {first_seq}")), "{err}");
}

// R8.1: a snapshot whose friend lists point out of range is refused, never a panic, even
// when an earlier user's mutual check would follow that list (found in review).
#[test]
fn a_snapshot_with_a_friend_index_out_of_range_is_an_error() {
    use presence_engine::{LogicalState, Snapshot, UserRecord};
    let record = |user: &str, friends: &[&str]| UserRecord {
        user: user.into(),
        sessions: vec![],
        custom: "".into(),
        last_online_end_ms: Some(1),
        subscriptions: vec![],
        friends: friends.iter().map(|f| (*f).into()).collect(),
        version: 0,
    };
    let snapshot = Snapshot {
        last_seq: 0,
        now_ms: 1,
        state: LogicalState { users: vec![record("a", &["b"]), record("b", &["a"])] },
    };
    let mut bytes = codec::encode_snapshot(&snapshot).unwrap();
    assert_eq!(codec::decode_snapshot(&bytes).unwrap(), snapshot);
    // The payload ends with b's friend list [0], then its version 0; make the list [5], then
    // fix the checksum.
    let last = bytes.len() - 2;
    assert_eq!(bytes[last], 0);
    bytes[last] = 5;
    let crc = crc32(&bytes[5..]).to_le_bytes();
    bytes[1..5].copy_from_slice(&crc);
    let err = codec::decode_snapshot(&bytes).unwrap_err();
    assert!(err.to_string().contains("snapshot"), "{err}");
}
