//! The hand-written encoders and decoders against bincode 2.0.1's serde path, the reference
//! they replace: the same bytes for every value, and for every input (valid, cut short,
//! damaged byte by byte, or claiming more than the limit) the same value or the same error.
//!
//! The reference types are the serde-derived ones the codec used before: `EventRef` and the
//! format 1 `EventRefV1` (in `event.rs`, their derives compiled for tests only), and the
//! snapshot's owned wire types as they were, below.

use std::sync::Arc;

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::error::DecodeError;
use serde::{Deserialize, Serialize};

use super::events::{self, OutboxWire};
use super::snapshot;
use super::wire::{Reader, Writer};
use crate::event::legacy::{EventKindRefV1, EventRefV1, EventRefV2};
use crate::event::{CloseReason, DisconnectReason, Event, EventKind, EventRef, UnsubscribeReason};
use crate::ids::{DeviceId, OwnerId, UserId};
use crate::snapshot::{SessionWire, SnapshotWire, Span, UserWire};

/// The limit the tests give both decoders, small enough for claims to pass it.
const SMALL_LIMIT: usize = 1 << 12;

fn standard() -> Configuration<LittleEndian, Varint> {
    bincode::config::standard()
}

fn limited<const N: usize>() -> Configuration<LittleEndian, Varint, Limit<N>> {
    standard().with_limit::<N>()
}

/// xorshift64*: deterministic inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number around one of the varint boundaries, or anywhere.
    fn int(&mut self) -> u64 {
        let edges = [0, 1, 250, 251, 252, 255, 256, 65_535, 65_536, u32::MAX as u64, 1 << 32, u64::MAX];
        match self.below(3) {
            0 => edges[self.below(edges.len() as u64) as usize].wrapping_add(self.below(3)).wrapping_sub(1),
            1 => self.below(1_000),
            _ => self.next() >> self.below(64),
        }
    }

    fn string(&mut self) -> String {
        let pieces = ["", "a", "alice", "d0", "名字", "☕", "\u{7f}", "x"];
        let mut s = String::new();
        let n = match self.below(8) {
            0 => 260 + self.below(40),
            _ => self.below(4),
        };
        for _ in 0..n {
            s.push_str(pieces[self.below(pieces.len() as u64) as usize]);
        }
        s
    }

    fn ids(&mut self) -> Vec<UserId> {
        (0..self.below(4)).map(|_| UserId::from(self.string())).collect()
    }

    fn event(&mut self) -> Event {
        let (user, device) = (UserId::from(self.string()), DeviceId::from(self.string()));
        let kind = match self.below(8) {
            0 => EventKind::SessionOpened {
                user,
                device,
                owner: (self.below(2) == 0).then(|| OwnerId::from(self.string())),
            },
            1 => EventKind::SessionDisconnected {
                user,
                device,
                reason: [
                    DisconnectReason::Disconnect,
                    DisconnectReason::HeartbeatTimeout,
                    DisconnectReason::Restart,
                    DisconnectReason::OwnerGone,
                ][self.below(4) as usize],
            },
            2 => EventKind::SessionClosed {
                user,
                device,
                reason: [CloseReason::Logout, CloseReason::Kicked][self.below(2) as usize],
            },
            3 => EventKind::CustomStatusSet {
                user,
                custom: Arc::from(self.string()),
                device: (self.below(2) == 0).then_some(device),
            },
            4 => EventKind::Subscribed { user, targets: self.ids() },
            5 => EventKind::Unsubscribed {
                user,
                targets: self.ids(),
                reason: [
                    UnsubscribeReason::Unsubscribed,
                    UnsubscribeReason::Evicted,
                    UnsubscribeReason::Expired,
                ][self.below(3) as usize],
            },
            6 => EventKind::FriendAdded { user, friend: UserId::from(self.string()) },
            _ => EventKind::FriendRemoved { user, friend: UserId::from(self.string()) },
        };
        Event { at_ms: self.int(), kind }
    }

    fn events(&mut self) -> Vec<Event> {
        (0..self.below(6)).map(|_| self.event()).collect()
    }
}

/// The format 1 form of an event (format 2 fields dropped).
fn v1(event: &Event) -> EventRefV1<'_> {
    let kind = match &event.kind {
        EventKind::SessionOpened { user, device, .. } => EventKindRefV1::SessionOpened { user, device },
        EventKind::SessionDisconnected { user, device, reason } => {
            EventKindRefV1::SessionDisconnected { user, device, reason: *reason }
        }
        EventKind::SessionClosed { user, device, reason } => {
            EventKindRefV1::SessionClosed { user, device, reason: *reason }
        }
        EventKind::CustomStatusSet { user, custom, .. } => EventKindRefV1::CustomStatusSet { user, custom },
        EventKind::Subscribed { user, targets } => {
            EventKindRefV1::Subscribed { user, targets: targets.iter().map(UserId::as_str).collect() }
        }
        EventKind::Unsubscribed { user, targets, reason } => EventKindRefV1::Unsubscribed {
            user,
            targets: targets.iter().map(UserId::as_str).collect(),
            reason: *reason,
        },
        EventKind::FriendAdded { user, friend } => EventKindRefV1::FriendAdded { user, friend },
        EventKind::FriendRemoved { user, friend } => EventKindRefV1::FriendRemoved { user, friend },
    };
    EventRefV1 { at_ms: event.at_ms, kind }
}

/// What the reference read in format 2, as the codec's borrowed events.
fn as_refs((events, used): (Vec<EventRefV2<'_>>, usize)) -> (Vec<EventRef<'_>>, usize) {
    (events.into_iter().map(EventRefV2::into_ref).collect(), used)
}

/// Variations of `bytes`: every cut, bytes set to values that matter to the encoding (every
/// byte of a short input, the first and last and a sample of the others in a long one), and a
/// few random changes.
fn damaged(bytes: &[u8], rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..bytes.len()).map(|len| bytes[..len].to_vec()).collect();
    let positions: Vec<usize> = match bytes.len() {
        len if len <= 96 => (0..len).collect(),
        len => (0..32).chain(len - 32..len).chain((0..32).map(|_| rng.below(len as u64) as usize)).collect(),
    };
    for at in positions {
        for value in [0, 1, 2, 3, 4, 7, 8, 9, 0x80, 0xc3, 250, 251, 252, 253, 254, 255] {
            let mut changed = bytes.to_vec();
            changed[at] = value;
            out.push(changed);
        }
    }
    for _ in 0..64 {
        let mut changed = bytes.to_vec();
        for _ in 0..1 + rng.below(4) {
            if let Some(byte) = changed.get_mut(rng.below(bytes.len().max(1) as u64) as usize) {
                *byte = rng.next() as u8;
            }
        }
        changed.extend((0..rng.below(3)).map(|_| rng.next() as u8));
        out.push(changed);
    }
    out
}

/// The outcome of a decode, comparable across the two decoders: the value and the bytes it
/// took, or the error (bincode's `Debug` of it names its variant and fields).
fn outcome<T: std::fmt::Debug>(result: Result<(T, usize), DecodeError>) -> String {
    match result {
        Ok((value, used)) => format!("Ok({value:?}, {used})"),
        Err(e) => format!("Err({e:?})"),
    }
}

fn ours<'a, T>(
    bytes: &'a [u8],
    limit: usize,
    decode: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<(T, usize), DecodeError> {
    let mut r = Reader::new(bytes, limit);
    decode(&mut r).map(|value| (value, bytes.len() - r.rest().len()))
}

fn encoded(write: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut Writer::new(&mut out));
    out
}

#[test]
fn events_encode_to_bincodes_bytes() {
    let mut rng = Rng(1);
    for _ in 0..2_000 {
        let events = rng.events();
        let reference = bincode::serde::encode_to_vec(&events, standard()).unwrap();
        assert_eq!(encoded(|w| events::encode_events(&events, w)), reference, "{events:?}");
        for event in &events {
            let reference = bincode::serde::encode_to_vec(event, standard()).unwrap();
            assert_eq!(encoded(|w| events::encode_event(event, w)), reference, "{event:?}");
        }
    }
}

#[test]
fn events_decode_as_bincode_decodes_them_whatever_the_bytes() {
    let mut rng = Rng(2);
    for round in 0..60 {
        let events = rng.events();
        let v2 = bincode::serde::encode_to_vec(&events, standard()).unwrap();
        let v1: Vec<EventRefV1<'_>> = events.iter().map(v1).collect();
        let v1 = bincode::serde::encode_to_vec(&v1, standard()).unwrap();
        for bytes in std::iter::once(v2.clone()).chain(damaged(&v2, &mut rng)) {
            let reference =
                bincode::serde::borrow_decode_from_slice(&bytes, limited::<{ super::BATCH_BYTES_MAX }>())
                    .map(as_refs);
            let mine = ours(&bytes, super::BATCH_BYTES_MAX, |r| events::decode_events(r, 2));
            assert_eq!(outcome(mine), outcome(reference), "format 2, round {round}: {bytes:?}");
            let reference =
                bincode::serde::borrow_decode_from_slice(&bytes, limited::<SMALL_LIMIT>()).map(as_refs);
            let mine = ours(&bytes, SMALL_LIMIT, |r| events::decode_events(r, 2));
            assert_eq!(outcome(mine), outcome(reference), "format 2, small limit, round {round}: {bytes:?}");
        }
        for bytes in std::iter::once(v1.clone()).chain(damaged(&v1, &mut rng)) {
            let reference = bincode::serde::borrow_decode_from_slice::<Vec<EventRefV1<'_>>, _>(
                &bytes,
                limited::<{ super::BATCH_BYTES_MAX }>(),
            )
            .map(|(events, used)| (events.into_iter().map(EventRefV1::upcast).collect::<Vec<_>>(), used));
            let mine = ours(&bytes, super::BATCH_BYTES_MAX, |r| events::decode_events(r, 1));
            assert_eq!(outcome(mine), outcome(reference), "format 1, round {round}: {bytes:?}");
        }
    }
}

/// Claims pass the limit long before the bytes run out: both decoders stop at the same item.
#[test]
fn the_limit_counts_claims_as_bincode_does() {
    let events: Vec<Event> = (0..200)
        .map(|i| Event { at_ms: i, kind: EventKind::FriendAdded { user: "a".into(), friend: "b".into() } })
        .collect();
    let bytes = bincode::serde::encode_to_vec(&events, standard()).unwrap();
    let reference = bincode::serde::borrow_decode_from_slice(&bytes, limited::<SMALL_LIMIT>()).map(as_refs);
    assert!(matches!(reference, Err(DecodeError::LimitExceeded)), "{reference:?}");
    let mine = ours(&bytes, SMALL_LIMIT, |r| events::decode_events(r, 2));
    assert_eq!(outcome(mine), outcome(reference));
}

fn outbox_entry(rng: &mut Rng) -> OutboxWire {
    OutboxWire {
        user: rng.string().into(),
        general: rng.below(5) as u8,
        custom: rng.string().into(),
        version: rng.int(),
        cause: rng.below(9) as u8,
        device: (rng.below(2) == 0).then(|| rng.string().into()),
        changed: rng.below(2) == 0,
    }
}

#[test]
fn outboxes_match_bincode_both_ways() {
    let mut rng = Rng(3);
    for round in 0..60 {
        let outbox: Vec<OutboxWire> = (0..rng.below(4)).map(|_| outbox_entry(&mut rng)).collect();
        let reference = bincode::serde::encode_to_vec(&outbox, standard()).unwrap();
        assert_eq!(encoded(|w| events::encode_outbox(&outbox, w)), reference);
        for bytes in std::iter::once(reference.clone()).chain(damaged(&reference, &mut rng)) {
            let theirs =
                bincode::serde::decode_from_slice::<Vec<OutboxWire>, _>(&bytes, limited::<SMALL_LIMIT>());
            let mine = ours(&bytes, SMALL_LIMIT, events::decode_outbox);
            assert_eq!(outcome(mine), outcome(theirs), "round {round}: {bytes:?}");
        }
    }
}

/// The snapshot's wire types as serde wrote and read them (format 2).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SnapshotV2 {
    last_seq: u64,
    now_ms: u64,
    ids: Vec<UserId>,
    devices: Vec<DeviceId>,
    owners: Vec<OwnerId>,
    users: Vec<UserV2>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct UserV2 {
    sessions: Vec<SessionV2>,
    custom: Arc<str>,
    last_online_end_ms: Option<u64>,
    subscriptions: Vec<u32>,
    friends: Vec<u32>,
    version: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SessionV2 {
    device: u32,
    connected: bool,
    login_at_ms: u64,
    owner: Option<u32>,
}

/// Format 1's.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct SnapshotV1 {
    last_seq: u64,
    now_ms: u64,
    ids: Vec<UserId>,
    devices: Vec<DeviceId>,
    users: Vec<UserV1>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct UserV1 {
    sessions: Vec<(u32, bool, u64)>,
    custom: Arc<str>,
    last_online_end_ms: Option<u64>,
    subscriptions: Vec<u32>,
    friends: Vec<u32>,
}

impl SnapshotV2 {
    fn random(rng: &mut Rng) -> Self {
        let strings = |rng: &mut Rng| (0..rng.below(4)).map(|_| rng.string()).collect::<Vec<_>>();
        let indexes = |rng: &mut Rng| (0..rng.below(4)).map(|_| rng.int() as u32).collect::<Vec<_>>();
        SnapshotV2 {
            last_seq: rng.int(),
            now_ms: rng.int(),
            ids: strings(rng).into_iter().map(UserId::from).collect(),
            devices: strings(rng).into_iter().map(DeviceId::from).collect(),
            owners: strings(rng).into_iter().map(OwnerId::from).collect(),
            users: (0..rng.below(4))
                .map(|_| UserV2 {
                    sessions: (0..rng.below(3))
                        .map(|_| SessionV2 {
                            device: rng.int() as u32,
                            connected: rng.below(2) == 0,
                            login_at_ms: rng.int(),
                            owner: (rng.below(2) == 0).then(|| rng.int() as u32),
                        })
                        .collect(),
                    custom: rng.string().into(),
                    last_online_end_ms: (rng.below(2) == 0).then(|| rng.int()),
                    subscriptions: indexes(rng),
                    friends: indexes(rng),
                    version: rng.int(),
                })
                .collect(),
        }
    }

    /// The in-memory form of the codec, borrowing this one's strings.
    fn wire(&self) -> SnapshotWire<'_> {
        let mut wire = SnapshotWire {
            last_seq: self.last_seq,
            now_ms: self.now_ms,
            ids: self.ids.iter().map(UserId::as_str).collect(),
            devices: self.devices.iter().map(DeviceId::as_str).collect(),
            owners: self.owners.iter().map(OwnerId::as_str).collect(),
            ..SnapshotWire::default()
        };
        for user in &self.users {
            let start = wire.sessions.len();
            wire.sessions.extend(user.sessions.iter().map(|s| SessionWire {
                device: s.device,
                connected: s.connected,
                login_at_ms: s.login_at_ms,
                owner: s.owner,
            }));
            let sessions = Span::since(start, &wire.sessions);
            let start = wire.links.len();
            wire.links.extend(&user.subscriptions);
            let subscriptions = Span::since(start, &wire.links);
            let start = wire.links.len();
            wire.links.extend(&user.friends);
            wire.users.push(UserWire {
                sessions,
                custom: &user.custom,
                last_online_end_ms: user.last_online_end_ms,
                subscriptions,
                friends: Span::since(start, &wire.links),
                version: user.version,
            });
        }
        wire
    }

    fn from_wire(wire: &SnapshotWire<'_>) -> Self {
        SnapshotV2 {
            last_seq: wire.last_seq,
            now_ms: wire.now_ms,
            ids: wire.ids.iter().map(|&s| s.into()).collect(),
            devices: wire.devices.iter().map(|&s| s.into()).collect(),
            owners: wire.owners.iter().map(|&s| s.into()).collect(),
            users: wire
                .users
                .iter()
                .map(|u| UserV2 {
                    sessions: wire
                        .sessions_of(u)
                        .iter()
                        .map(|s| SessionV2 {
                            device: s.device,
                            connected: s.connected,
                            login_at_ms: s.login_at_ms,
                            owner: s.owner,
                        })
                        .collect(),
                    custom: u.custom.into(),
                    last_online_end_ms: u.last_online_end_ms,
                    subscriptions: wire.subscriptions_of(u).to_vec(),
                    friends: wire.friends_of(u).to_vec(),
                    version: u.version,
                })
                .collect(),
        }
    }

    /// Format 1's form of it (owners, versions gone), and what format 1 reads as.
    fn v1(&self) -> (SnapshotV1, SnapshotV2) {
        let users = self.users.iter().map(|u| UserV1 {
            sessions: u.sessions.iter().map(|s| (s.device, s.connected, s.login_at_ms)).collect(),
            custom: u.custom.clone(),
            last_online_end_ms: u.last_online_end_ms,
            subscriptions: u.subscriptions.clone(),
            friends: u.friends.clone(),
        });
        let v1 = SnapshotV1 {
            last_seq: self.last_seq,
            now_ms: self.now_ms,
            ids: self.ids.clone(),
            devices: self.devices.clone(),
            users: users.collect(),
        };
        let upcast = SnapshotV2 {
            last_seq: self.last_seq,
            now_ms: self.now_ms,
            ids: self.ids.clone(),
            devices: self.devices.clone(),
            owners: Vec::new(),
            users: v1
                .users
                .iter()
                .map(|u| UserV2 {
                    sessions: u
                        .sessions
                        .iter()
                        .map(|&(device, connected, login_at_ms)| SessionV2 {
                            device,
                            connected,
                            login_at_ms,
                            owner: None,
                        })
                        .collect(),
                    custom: u.custom.clone(),
                    last_online_end_ms: u.last_online_end_ms,
                    subscriptions: u.subscriptions.clone(),
                    friends: u.friends.clone(),
                    version: 0,
                })
                .collect(),
        };
        (v1, upcast)
    }
}

#[test]
fn snapshots_match_bincode_both_ways() {
    let mut rng = Rng(4);
    for round in 0..60 {
        let snapshot = SnapshotV2::random(&mut rng);
        let v2 = bincode::serde::encode_to_vec(&snapshot, standard()).unwrap();
        assert_eq!(encoded(|w| snapshot::encode_snapshot(&snapshot.wire(), w)), v2);
        for bytes in std::iter::once(v2.clone()).chain(damaged(&v2, &mut rng)) {
            let theirs = bincode::serde::decode_from_slice::<SnapshotV2, _>(&bytes, limited::<SMALL_LIMIT>());
            let mine = ours(&bytes, SMALL_LIMIT, |r| {
                snapshot::decode_snapshot(r, 2).map(|w| SnapshotV2::from_wire(&w))
            });
            assert_eq!(outcome(mine), outcome(theirs), "format 2, round {round}: {bytes:?}");
        }
        let (v1, upcast) = snapshot.v1();
        let v1 = bincode::serde::encode_to_vec(&v1, standard()).unwrap();
        let read =
            ours(&v1, SMALL_LIMIT, |r| snapshot::decode_snapshot(r, 1).map(|w| SnapshotV2::from_wire(&w)));
        assert_eq!(read.map(|(s, _)| s).ok(), Some(upcast));
        for bytes in damaged(&v1, &mut rng) {
            let theirs = bincode::serde::decode_from_slice::<SnapshotV1, _>(&bytes, limited::<SMALL_LIMIT>())
                .map(|(_, used)| used);
            let mine = ours(&bytes, SMALL_LIMIT, |r| snapshot::decode_snapshot(r, 1)).map(|(_, used)| used);
            assert_eq!(format!("{:?}", mine), format!("{:?}", theirs), "format 1, round {round}: {bytes:?}");
        }
    }
}
