//! The one encoding of events, batches and snapshots, shared by every backend.
//!
//! The payloads are bincode 2.0.1's standard encoding (`=2.0.1`) of the events, the outbox
//! and the indexed snapshot, written and read by hand in `codec/` (`wire.rs` for bincode's
//! integers and strings, `events.rs`, `snapshot.rs`) rather than through serde's generic
//! dispatch: the same bytes, accepted and refused exactly as bincode's own decoder does, and
//! tested against it. This module is the only place that knows the encoding, so that it can
//! be swapped without touching a backend: every encoded value starts with a format version
//! byte, and a new format gets a new byte. Decoding never panics on any input and never
//! allocates beyond a fixed limit ([`BATCH_BYTES_MAX`], [`SNAPSHOT_BYTES_MAX`]).
//!
//! Batch layout (all integers little-endian):
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format version ([`FORMAT_VERSION`]) |
//! | 8 | first sequence number |
//! | 4 | event count |
//! | 4 | CRC-32 (IEEE) of the payload |
//! | rest | payload: bincode standard encoding of `Vec<Event>`, then (format 2) the outbox |
//!
//! The outbox lists the status changes the batch caused (user, status, version, cause), so
//! that a reader of the log learns them without folding the state (docs/FORMAT.md); replay
//! ignores it, and a batch written without one holds an empty list.
//!
//! Snapshot layout: version byte, CRC-32 of the payload, payload (bincode of the snapshot in
//! its indexed form). Format 1, written before status versions and session owners, is still
//! read: its events have no owner and no device for a custom status, its snapshots no
//! versions (docs/FORMAT.md says how each is upcast).

#[cfg(test)]
mod against_bincode;
mod events;
mod snapshot;
pub(crate) mod wire;

use bincode::error::DecodeError;

use crate::change::{Cause, CauseKind, StatusChange};
use crate::config::Config;
use crate::error::{StoreError, StoreErrorKind};
use crate::event::{Event, EventKind, EventRef};
use crate::ids::UserId;
pub use crate::limits::{BATCH_BYTES_MAX, SNAPSHOT_BYTES_MAX};
use crate::limits::{DECODE_BYTES_PER_PAYLOAD_BYTE_MAX, DECODE_SLACK_BYTES_MAX};
use crate::snapshot::{Snapshot, SnapshotWire, ValidWire};
use crate::status::{GeneralStatus, UserStatus};
use events::OutboxWire;
use wire::{Reader, Writer};

/// The format version written by this build: 2 (session owners, the device of a custom
/// status, status versions in snapshots, the outbox). Version 1 is read and upcast; a decoder
/// meeting a higher one refuses it with [`StoreErrorKind::UnsupportedVersion`].
pub const FORMAT_VERSION: u8 = 2;

/// The oldest format version this build reads.
pub const FORMAT_VERSION_MIN: u8 = 1;

// Where each field of a batch header starts (see the layout above).
const VERSION_AT: usize = 0;
const FIRST_SEQ_AT: usize = 1;
const COUNT_AT: usize = 9;
const CRC_AT: usize = 13;

/// Bytes before a batch's payload.
pub const BATCH_HEADER_BYTES: usize = 17;

const _: () = assert!(FIRST_SEQ_AT == VERSION_AT + 1);
const _: () = assert!(COUNT_AT == FIRST_SEQ_AT + 8);
const _: () = assert!(CRC_AT == COUNT_AT + 4);
const _: () = assert!(BATCH_HEADER_BYTES == CRC_AT + 4);

// Where each field of a snapshot header starts.
const SNAPSHOT_CRC_AT: usize = 1;
const SNAPSHOT_HEADER_BYTES: usize = 5;
const _: () = assert!(SNAPSHOT_HEADER_BYTES == SNAPSHOT_CRC_AT + 4);

/// The most bytes a varint takes in bincode's standard configuration (a tag byte and a
/// `u64`): the bound used for every integer in the size bounds below.
const VARINT_BYTES_MAX: usize = 9;

/// What a batch adds to its events' own bytes, at most: the header and the length of the
/// event list.
pub const BATCH_OVERHEAD_BYTES_MAX: usize = BATCH_HEADER_BYTES + 2 * VARINT_BYTES_MAX;

/// An upper bound of the bytes one id (or other string) takes in an encoded event.
pub(crate) fn id_bytes_bound(id: &str) -> usize {
    VARINT_BYTES_MAX + id.len()
}

/// An upper bound of the bytes an optional string takes (a tag byte, then the string).
fn option_bytes_bound(id: Option<&str>) -> usize {
    1 + id.map_or(0, id_bytes_bound)
}

/// An upper bound of the bytes `kind` takes in a batch (with its time): what the engine uses
/// to keep the batches it makes by itself under a store's limit without encoding twice.
pub fn event_bytes_bound(kind: &EventKind) -> usize {
    let list = |ids: &[UserId]| VARINT_BYTES_MAX + ids.iter().map(|t| id_bytes_bound(t)).sum::<usize>();
    EVENT_FIXED_BYTES_MAX
        + match kind {
            EventKind::SessionOpened { user, device, owner } => {
                id_bytes_bound(user) + id_bytes_bound(device) + option_bytes_bound(owner.as_deref())
            }
            EventKind::SessionDisconnected { user, device, .. }
            | EventKind::SessionClosed { user, device, .. } => id_bytes_bound(user) + id_bytes_bound(device),
            EventKind::CustomStatusSet { user, custom, device } => {
                id_bytes_bound(user) + id_bytes_bound(custom) + option_bytes_bound(device.as_deref())
            }
            EventKind::Subscribed { user, targets } | EventKind::Unsubscribed { user, targets, .. } => {
                id_bytes_bound(user) + list(targets)
            }
            EventKind::FriendAdded { user, friend } | EventKind::FriendRemoved { user, friend } => {
                id_bytes_bound(user) + id_bytes_bound(friend)
            }
        }
}

/// An upper bound of the bytes one status change takes in a batch's outbox.
pub(crate) fn change_bytes_bound(change: &StatusChange) -> usize {
    let device = change.cause.device.as_deref();
    id_bytes_bound(&change.user)
        + id_bytes_bound(&change.status.custom)
        + option_bytes_bound(device)
        + 4 * VARINT_BYTES_MAX
}

/// What an event takes besides its ids, at most: its time, its variant's number and a
/// reason.
const EVENT_FIXED_BYTES_MAX: usize = 3 * VARINT_BYTES_MAX;

/// An upper bound of the bytes of one session event (a login, a disconnect, a heartbeat
/// timeout) under `config`: a tick must be able to log one on its own, since, unlike a
/// subscription list, it cannot be split, so a store must take batches at least this large
/// ([`Engine::open`](crate::Engine::open) checks it).
pub fn session_event_bytes_bound(config: &Config) -> usize {
    EVENT_FIXED_BYTES_MAX
        + 3 * VARINT_BYTES_MAX
        + 1
        + config.max_user_id_bytes as usize
        + config.max_device_id_bytes as usize
        + crate::limits::OWNER_BYTES_MAX
}

/// A batch's header, readable without decoding its events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// The format version byte.
    pub version: u8,
    /// The first event's sequence number.
    pub first_seq: u64,
    /// How many events the batch holds.
    pub count: u32,
}

/// Encodes `events` as one batch starting at `first_seq`, with an empty outbox, appending
/// to `out`.
pub fn encode_batch(first_seq: u64, events: &[Event], out: &mut Vec<u8>) -> Result<(), StoreError> {
    encode_batch_with_outbox(first_seq, events, &[], out)
}

/// Encodes `events` as one batch starting at `first_seq`, with the status changes they caused
/// as its outbox, appending to `out`.
pub fn encode_batch_with_outbox(
    first_seq: u64,
    events: &[Event],
    outbox: &[StatusChange],
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let count = u32::try_from(events.len())
        .map_err(|_| StoreError::new(StoreErrorKind::Contract, "a batch holds too many events"))?;
    let start = out.len();
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    debug_assert_eq!(out.len() - start, BATCH_HEADER_BYTES);
    let mut w = Writer::new(out);
    events::encode_events(events, &mut w);
    let outbox: Vec<OutboxWire> = outbox.iter().map(OutboxWire::from_change).collect();
    events::encode_outbox(&outbox, &mut w);
    let payload = &out[start + BATCH_HEADER_BYTES..];
    if payload.len() > BATCH_BYTES_MAX {
        out.truncate(start);
        return Err(StoreError::new(
            StoreErrorKind::Contract,
            format!("a batch of {count} events encodes to more than {BATCH_BYTES_MAX} bytes"),
        ));
    }
    let crc = crc32fast::hash(payload).to_le_bytes();
    let crc_at = start + CRC_AT;
    out[crc_at..crc_at + 4].copy_from_slice(&crc);
    Ok(())
}

fn check_version(version: u8, what: &str) -> Result<(), StoreError> {
    match version {
        FORMAT_VERSION_MIN..=FORMAT_VERSION => Ok(()),
        v if v > FORMAT_VERSION => Err(StoreError::new(
            StoreErrorKind::UnsupportedVersion,
            format!("{what} has format version {v}; this build reads up to {FORMAT_VERSION}"),
        )),
        v => Err(StoreError::corrupt(format!("{what} has unknown format version {v}"))),
    }
}

/// The `N` bytes of `header` at `AT`, checked when the crate compiles to lie inside it.
fn field<const AT: usize, const N: usize, const H: usize>(header: &[u8; H]) -> [u8; N] {
    const { assert!(AT + N <= H) };
    let mut word = [0; N];
    word.copy_from_slice(&header[AT..AT + N]);
    word
}

/// The first `N` bytes of `bytes` as a header, or the corrupt-data error `what` is short.
fn header<const N: usize>(bytes: &[u8], what: &str) -> Result<[u8; N], StoreError> {
    bytes.get(..N).and_then(|h| <[u8; N]>::try_from(h).ok()).ok_or_else(|| {
        StoreError::corrupt(format!("{what} is {} bytes, shorter than its {N}-byte header", bytes.len()))
    })
}

/// Reads a batch's header. Fails on a short buffer or a version this build does not read.
pub fn batch_header(bytes: &[u8]) -> Result<BatchHeader, StoreError> {
    batch_header_and_crc(bytes).map(|(header, _)| header)
}

/// A batch's header and the checksum it records for its payload.
fn batch_header_and_crc(bytes: &[u8]) -> Result<(BatchHeader, u32), StoreError> {
    let raw: [u8; BATCH_HEADER_BYTES] = header(bytes, "batch")?;
    let version = raw[VERSION_AT];
    check_version(version, "batch")?;
    let first_seq = u64::from_le_bytes(field::<FIRST_SEQ_AT, 8, BATCH_HEADER_BYTES>(&raw));
    let count = u32::from_le_bytes(field::<COUNT_AT, 4, BATCH_HEADER_BYTES>(&raw));
    let crc = u32::from_le_bytes(field::<CRC_AT, 4, BATCH_HEADER_BYTES>(&raw));
    Ok((BatchHeader { version, first_seq, count }, crc))
}

/// How much a decode of `payload` may allocate: never more than `max`, and never more than
/// a generous multiple of the payload itself (see the limits).
fn allocation_budget(payload: &[u8], max: usize) -> usize {
    payload
        .len()
        .saturating_mul(DECODE_BYTES_PER_PAYLOAD_BYTE_MAX)
        .saturating_add(DECODE_SLACK_BYTES_MAX)
        .min(max)
}

/// The limit bincode's decoder was given for a decode that may allocate `budget` bytes:
/// the smallest of a few fixed sizes that covers it (bincode's limits are constants).
fn limit_for(budget: usize) -> usize {
    match budget {
        b if b <= 1 << 16 => 1 << 16,
        b if b <= 1 << 20 => 1 << 20,
        b if b <= 1 << 24 => 1 << 24,
        b if b <= BATCH_BYTES_MAX => BATCH_BYTES_MAX,
        b if b <= 1 << 28 => 1 << 28,
        _ => SNAPSHOT_BYTES_MAX,
    }
}

/// Decodes the whole of `payload` with `decode`, under the limit of [`allocation_budget`].
fn decode_payload<'a, T>(
    payload: &'a [u8],
    max: usize,
    what: &str,
    decode: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<T, StoreError> {
    if payload.len() > max {
        return Err(StoreError::corrupt(format!("{what} is larger than the {max}-byte limit")));
    }
    let mut reader = Reader::new(payload, limit_for(allocation_budget(payload, max)));
    match decode(&mut reader) {
        Ok(value) if reader.rest().is_empty() => Ok(value),
        Ok(_) => Err(StoreError::corrupt(format!("{what} has {} trailing bytes", reader.rest().len()))),
        Err(e) => Err(StoreError::with_source(StoreErrorKind::Corrupt, format!("{what} does not decode"), e)),
    }
}

/// Checks a batch's header and checksum; returns the header, a name for errors, and the
/// payload.
fn checked_batch(bytes: &[u8]) -> Result<(BatchHeader, String, &[u8]), StoreError> {
    let (header, crc) = batch_header_and_crc(bytes)?;
    let what = format!("batch at sequence {}", header.first_seq);
    // The header is whole, so the payload is what follows it (possibly nothing).
    let payload = &bytes[BATCH_HEADER_BYTES..];
    if crc32fast::hash(payload) != crc {
        return Err(StoreError::corrupt(format!("{what} fails its checksum (torn or corrupt)")));
    }
    Ok((header, what, payload))
}

fn check_count(header: &BatchHeader, what: &str, decoded: usize) -> Result<(), StoreError> {
    if decoded != header.count as usize || decoded == 0 {
        return Err(StoreError::corrupt(format!("{what} says {} events but holds {decoded}", header.count)));
    }
    Ok(())
}

/// Decodes a whole batch: header, checksum and events. The error names the batch's sequence
/// number where the header could be read.
pub fn decode_batch(bytes: &[u8]) -> Result<(BatchHeader, Vec<Event>), StoreError> {
    let (header, events, outbox) = decode_batch_parts(bytes)?;
    outbox_changes(&header, outbox)?;
    Ok((header, events.into_iter().map(|e| e.to_owned_event()).collect()))
}

/// Decodes a batch into borrowed events (ids point into `bytes`), for replay: the same
/// checks as [`decode_batch`], without allocating a string per id. The outbox is not read.
pub(crate) fn decode_batch_ref(bytes: &[u8]) -> Result<(BatchHeader, Vec<EventRef<'_>>), StoreError> {
    let (header, events, _) = decode_batch_parts(bytes)?;
    Ok((header, events))
}

/// The status changes a batch records in its outbox, in order (none for format 1): what a
/// reader of another shard's log needs, without folding its state.
pub fn decode_outbox(bytes: &[u8]) -> Result<Vec<StatusChange>, StoreError> {
    let (header, _, outbox) = decode_batch_parts(bytes)?;
    outbox_changes(&header, outbox)
}

/// The status changes in the outbox bytes of the batch `header` heads (none for format 1).
fn outbox_changes(header: &BatchHeader, outbox: &[u8]) -> Result<Vec<StatusChange>, StoreError> {
    if header.version == 1 {
        return Ok(Vec::new());
    }
    let what = format!("outbox of the batch at sequence {}", header.first_seq);
    let wire = decode_payload(outbox, BATCH_BYTES_MAX, &what, events::decode_outbox)?;
    wire.into_iter().map(|w| w.into_change(&what)).collect()
}

/// A batch's header, its events, and the bytes of its outbox (empty for format 1).
fn decode_batch_parts(bytes: &[u8]) -> Result<(BatchHeader, Vec<EventRef<'_>>, &[u8]), StoreError> {
    let (header, what, payload) = checked_batch(bytes)?;
    if payload.len() > BATCH_BYTES_MAX {
        return Err(StoreError::corrupt(format!("{what} is larger than the {BATCH_BYTES_MAX}-byte limit")));
    }
    let (events, rest) = decode_prefix(payload, &what, |r| events::decode_events(r, header.version))?;
    if header.version == 1 && !rest.is_empty() {
        return Err(StoreError::corrupt(format!("{what} has {} trailing bytes", rest.len())));
    }
    if header.version > 1 && rest.is_empty() {
        return Err(StoreError::corrupt(format!("{what} has no outbox")));
    }
    check_count(&header, &what, events.len())?;
    Ok((header, events, rest))
}

/// Decodes a value from the start of `payload` (with bincode's limit for batches), borrowing
/// strings from it; returns it and the bytes after it.
pub(crate) fn decode_prefix<'a, T>(
    payload: &'a [u8],
    what: &str,
    decode: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<(T, &'a [u8]), StoreError> {
    let mut reader = Reader::new(payload, BATCH_BYTES_MAX);
    decode(&mut reader)
        .map(|value| (value, reader.rest()))
        .map_err(|e| StoreError::with_source(StoreErrorKind::Corrupt, format!("{what} does not decode"), e))
}

/// The number of a cause in an outbox: its place in [`CauseKind::ALL`].
fn cause_number(kind: CauseKind) -> u8 {
    match kind {
        CauseKind::Login => 0,
        CauseKind::Logout => 1,
        CauseKind::Disconnect => 2,
        CauseKind::HeartbeatTimeout => 3,
        CauseKind::Kicked => 4,
        CauseKind::CustomStatus => 5,
        CauseKind::Restart => 6,
        CauseKind::OwnerGone => 7,
    }
}

impl OutboxWire {
    fn from_change(change: &StatusChange) -> Self {
        OutboxWire {
            user: change.user.clone(),
            general: change.status.general.code(),
            custom: change.status.custom.clone(),
            version: change.version,
            cause: cause_number(change.cause.kind),
            device: change.cause.device.clone(),
            changed: change.changed,
        }
    }

    fn into_change(self, what: &str) -> Result<StatusChange, StoreError> {
        let general = GeneralStatus::from_code(self.general)
            .ok_or_else(|| StoreError::corrupt(format!("{what} has status number {}", self.general)))?;
        let kind = *CauseKind::ALL
            .get(usize::from(self.cause))
            .ok_or_else(|| StoreError::corrupt(format!("{what} has cause number {}", self.cause)))?;
        Ok(StatusChange {
            user: self.user,
            status: UserStatus { general, custom: self.custom },
            version: self.version,
            cause: Cause { kind, device: self.device },
            changed: self.changed,
        })
    }
}

/// Encodes one event on its own (version byte, then bincode), for tools and tests.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_VERSION];
    events::encode_event(event, &mut Writer::new(&mut out));
    Ok(out)
}

/// Decodes what [`encode_event`] wrote.
pub fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    let (&version, payload) = bytes.split_first().ok_or_else(|| StoreError::corrupt("event is empty"))?;
    check_version(version, "event")?;
    let (event, rest) = decode_prefix(payload, "event", |r| events::decode_event(r, version))?;
    if !rest.is_empty() {
        return Err(StoreError::corrupt(format!("event has {} trailing bytes", rest.len())));
    }
    Ok(event.to_owned_event())
}

/// Encodes a snapshot (ids once, references by index: docs/FORMAT.md).
/// The snapshot must be canonical, as [`Engine::snapshot`](crate::Engine::snapshot) and
/// `logical_state` make it: users sorted and unique.
pub fn encode_snapshot(snapshot: &Snapshot) -> Result<Vec<u8>, StoreError> {
    if snapshot.state.users.windows(2).any(|w| w[0].user >= w[1].user) {
        return Err(StoreError::new(StoreErrorKind::Contract, "snapshot users are not sorted and unique"));
    }
    encode_snapshot_wire(&SnapshotWire::from_snapshot(snapshot))
}

pub(crate) fn encode_snapshot_wire(wire: &SnapshotWire<'_>) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![0; SNAPSHOT_HEADER_BYTES];
    out[VERSION_AT] = FORMAT_VERSION;
    snapshot::encode_snapshot(wire, &mut Writer::new(&mut out));
    let crc = crc32fast::hash(&out[SNAPSHOT_HEADER_BYTES..]).to_le_bytes();
    out[SNAPSHOT_CRC_AT..SNAPSHOT_HEADER_BYTES].copy_from_slice(&crc);
    Ok(out)
}

/// Decodes a snapshot, checking its version, checksum and consistency.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, StoreError> {
    decode_snapshot_wire(bytes)?
        .to_snapshot()
        .ok_or_else(|| StoreError::corrupt("snapshot refers to an id it does not hold"))
}

/// Decodes a snapshot in its encoded form and validates it.
pub(crate) fn decode_snapshot_wire(bytes: &[u8]) -> Result<ValidWire<'_>, StoreError> {
    decode_snapshot_wire_and_version(bytes).map(|(wire, _)| wire)
}

/// Decodes and validates a snapshot in its encoded form; also says which format version it
/// was written in (format 1 has no status versions, which the engine restores as 0).
pub(crate) fn decode_snapshot_wire_and_version(bytes: &[u8]) -> Result<(ValidWire<'_>, u8), StoreError> {
    let raw: [u8; SNAPSHOT_HEADER_BYTES] = header(bytes, "snapshot")?;
    let version = raw[VERSION_AT];
    check_version(version, "snapshot")?;
    let crc = u32::from_le_bytes(field::<SNAPSHOT_CRC_AT, 4, SNAPSHOT_HEADER_BYTES>(&raw));
    let payload = &bytes[SNAPSHOT_HEADER_BYTES..];
    if crc32fast::hash(payload) != crc {
        return Err(StoreError::corrupt("snapshot fails its checksum"));
    }
    let wire =
        decode_payload(payload, SNAPSHOT_BYTES_MAX, "snapshot", |r| snapshot::decode_snapshot(r, version))?;
    let wire =
        wire.validated().map_err(|why| StoreError::corrupt(format!("snapshot is inconsistent: {why}")))?;
    Ok((wire, version))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::{CloseReason, DisconnectReason, EventKind, UnsubscribeReason};
    use crate::ids::{DeviceId, UserId};

    /// An outbox numbers causes by their place in `CauseKind::ALL`, both ways.
    #[test]
    fn cause_numbers_are_places_in_the_list() {
        for (i, kind) in CauseKind::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(cause_number(kind)), i, "{kind:?}");
        }
    }

    /// The borrowed view used by replay must decode exactly what `encode_batch` writes for
    /// every variant: it is a hand-kept twin of `EventKind`.
    #[test]
    fn the_borrowed_view_decodes_every_variant_as_written() {
        let (u, f) = (UserId::from("alice"), UserId::from("bob"));
        let d = DeviceId::from("phone");
        let kinds = vec![
            EventKind::SessionOpened { user: u.clone(), device: d.clone(), owner: None },
            EventKind::SessionOpened { user: u.clone(), device: d.clone(), owner: Some("gateway-7".into()) },
            EventKind::SessionDisconnected {
                user: u.clone(),
                device: d.clone(),
                reason: DisconnectReason::Disconnect,
            },
            EventKind::SessionDisconnected {
                user: u.clone(),
                device: d.clone(),
                reason: DisconnectReason::HeartbeatTimeout,
            },
            EventKind::SessionClosed { user: u.clone(), device: d.clone(), reason: CloseReason::Logout },
            EventKind::SessionClosed { user: u.clone(), device: d.clone(), reason: CloseReason::Kicked },
            EventKind::CustomStatusSet {
                user: u.clone(),
                custom: Arc::from("in a meeting ☕"),
                device: None,
            },
            EventKind::CustomStatusSet {
                user: u.clone(),
                custom: Arc::from("in a meeting ☕"),
                device: Some(d.clone()),
            },
            EventKind::Subscribed { user: u.clone(), targets: vec![f.clone(), UserId::from("carol")] },
            EventKind::Unsubscribed {
                user: u.clone(),
                targets: vec![f.clone()],
                reason: UnsubscribeReason::Evicted,
            },
            EventKind::Unsubscribed { user: u.clone(), targets: vec![], reason: UnsubscribeReason::Expired },
            EventKind::FriendAdded { user: u.clone(), friend: f.clone() },
            EventKind::FriendRemoved { user: u, friend: f },
        ];
        let events: Vec<Event> =
            kinds.into_iter().enumerate().map(|(i, kind)| Event { at_ms: 1_000 * i as u64, kind }).collect();
        let mut bytes = Vec::new();
        encode_batch(7, &events, &mut bytes).unwrap();
        let (header, borrowed) = decode_batch_ref(&bytes).unwrap();
        assert_eq!(header.first_seq, 7);
        let expected: Vec<EventRef<'_>> = events.iter().map(Event::as_ref).collect();
        assert_eq!(borrowed, expected);
    }
}
