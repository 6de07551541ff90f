//! Events and outbox entries in bincode's encoding, by hand (formats 1 and 2): the same bytes
//! serde's derived code writes and reads for [`Event`], `EventRefV1` and the outbox, without
//! its generic dispatch (replay decodes every event of the log through here).
//!
//! An [`Event`] is its time, then its kind: the variant's number (its place in
//! [`EventKind`], from 0) and the variant's fields in order. Format 1 has no `owner` in
//! `SessionOpened` and no `device` in `CustomStatusSet`.

use std::sync::Arc;

use bincode::error::DecodeError;

use super::wire::{Reader, Writer};
use crate::event::{
    CloseReason, DisconnectReason, Event, EventKind, EventKindRef, EventRef, Text, UnsubscribeReason,
};
use crate::ids::UserId;

/// The variants of each enum, as numbered on disk.
const EVENT_KINDS: u32 = 8;
const DISCONNECT_REASONS: u32 = 4;
const CLOSE_REASONS: u32 = 2;
const UNSUBSCRIBE_REASONS: u32 = 3;

fn disconnect_number(reason: DisconnectReason) -> u32 {
    match reason {
        DisconnectReason::Disconnect => 0,
        DisconnectReason::HeartbeatTimeout => 1,
        DisconnectReason::Restart => 2,
        DisconnectReason::OwnerGone => 3,
    }
}

fn close_number(reason: CloseReason) -> u32 {
    match reason {
        CloseReason::Logout => 0,
        CloseReason::Kicked => 1,
    }
}

fn unsubscribe_number(reason: UnsubscribeReason) -> u32 {
    match reason {
        UnsubscribeReason::Unsubscribed => 0,
        UnsubscribeReason::Evicted => 1,
        UnsubscribeReason::Expired => 2,
    }
}

/// Writes events in the current format.
pub(crate) fn encode_events(events: &[Event], w: &mut Writer<'_>) {
    w.len(events.len());
    for event in events {
        encode_event(event, w);
    }
}

pub(crate) fn encode_event(event: &Event, w: &mut Writer<'_>) {
    w.varint(event.at_ms);
    let ids = |w: &mut Writer<'_>, ids: &[UserId]| {
        w.len(ids.len());
        ids.iter().for_each(|id| w.str(id));
    };
    match &event.kind {
        EventKind::SessionOpened { user, device, owner } => {
            w.varint(0);
            w.str(user);
            w.str(device);
            w.option(owner.is_some());
            if let Some(owner) = owner {
                w.str(owner);
            }
        }
        EventKind::SessionDisconnected { user, device, reason } => {
            w.varint(1);
            w.str(user);
            w.str(device);
            w.varint(disconnect_number(*reason).into());
        }
        EventKind::SessionClosed { user, device, reason } => {
            w.varint(2);
            w.str(user);
            w.str(device);
            w.varint(close_number(*reason).into());
        }
        EventKind::CustomStatusSet { user, custom, device } => {
            w.varint(3);
            w.str(user);
            w.str(custom);
            w.option(device.is_some());
            if let Some(device) = device {
                w.str(device);
            }
        }
        EventKind::Subscribed { user, targets } => {
            w.varint(4);
            w.str(user);
            ids(w, targets);
        }
        EventKind::Unsubscribed { user, targets, reason } => {
            w.varint(5);
            w.str(user);
            ids(w, targets);
            w.varint(unsubscribe_number(*reason).into());
        }
        EventKind::FriendAdded { user, friend } => {
            w.varint(6);
            w.str(user);
            w.str(friend);
        }
        EventKind::FriendRemoved { user, friend } => {
            w.varint(7);
            w.str(user);
            w.str(friend);
        }
    }
}

fn disconnect_reason(r: &mut Reader<'_>) -> Result<DisconnectReason, DecodeError> {
    Ok(match r.variant(DISCONNECT_REASONS)? {
        0 => DisconnectReason::Disconnect,
        1 => DisconnectReason::HeartbeatTimeout,
        2 => DisconnectReason::Restart,
        _ => DisconnectReason::OwnerGone,
    })
}

fn close_reason(r: &mut Reader<'_>) -> Result<CloseReason, DecodeError> {
    Ok(match r.variant(CLOSE_REASONS)? {
        0 => CloseReason::Logout,
        _ => CloseReason::Kicked,
    })
}

fn unsubscribe_reason(r: &mut Reader<'_>) -> Result<UnsubscribeReason, DecodeError> {
    Ok(match r.variant(UNSUBSCRIBE_REASONS)? {
        0 => UnsubscribeReason::Unsubscribed,
        1 => UnsubscribeReason::Evicted,
        _ => UnsubscribeReason::Expired,
    })
}

fn optional_text<'a>(r: &mut Reader<'a>) -> Result<Option<Text<'a>>, DecodeError> {
    match r.option()? {
        true => r.text().map(Some),
        false => Ok(None),
    }
}

/// Reads a list of events written in `version` (1 or 2), borrowing their ids.
pub(crate) fn decode_events<'a>(r: &mut Reader<'a>, version: u8) -> Result<Vec<EventRef<'a>>, DecodeError> {
    r.seq(|r| decode_event(r, version))
}

/// Reads one event written in `version` (1 or 2).
pub(crate) fn decode_event<'a>(r: &mut Reader<'a>, version: u8) -> Result<EventRef<'a>, DecodeError> {
    // Format 1 lacks the optional fields format 2 added; they read as none.
    let since_2 = |r: &mut Reader<'a>| if version >= 2 { optional_text(r) } else { Ok(None) };
    let at_ms = r.u64()?;
    let kind = match r.variant(EVENT_KINDS)? {
        0 => EventKindRef::SessionOpened { user: r.text()?, device: r.text()?, owner: since_2(r)? },
        1 => EventKindRef::SessionDisconnected {
            user: r.text()?,
            device: r.text()?,
            reason: disconnect_reason(r)?,
        },
        2 => EventKindRef::SessionClosed { user: r.text()?, device: r.text()?, reason: close_reason(r)? },
        3 => EventKindRef::CustomStatusSet { user: r.text()?, custom: r.text()?, device: since_2(r)? },
        4 => EventKindRef::Subscribed { user: r.text()?, targets: r.seq(Reader::text)? },
        5 => EventKindRef::Unsubscribed {
            user: r.text()?,
            targets: r.seq(Reader::text)?,
            reason: unsubscribe_reason(r)?,
        },
        6 => EventKindRef::FriendAdded { user: r.text()?, friend: r.text()? },
        _ => EventKindRef::FriendRemoved { user: r.text()?, friend: r.text()? },
    };
    Ok(EventRef { at_ms, kind })
}

/// One entry of a batch's outbox as encoded: the public
/// [`StatusChange`](crate::StatusChange) with its enums as numbers, so that the encoding does
/// not depend on the `serde` feature's wire names.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct OutboxWire {
    pub user: UserId,
    pub general: u8,
    pub custom: Arc<str>,
    pub version: u64,
    pub cause: u8,
    pub device: Option<crate::ids::DeviceId>,
    pub changed: bool,
}

pub(crate) fn encode_outbox(outbox: &[OutboxWire], w: &mut Writer<'_>) {
    w.len(outbox.len());
    for entry in outbox {
        w.str(&entry.user);
        w.u8(entry.general);
        w.str(&entry.custom);
        w.varint(entry.version);
        w.u8(entry.cause);
        w.option(entry.device.is_some());
        if let Some(device) = &entry.device {
            w.str(device);
        }
        w.bool(entry.changed);
    }
}

pub(crate) fn decode_outbox(r: &mut Reader<'_>) -> Result<Vec<OutboxWire>, DecodeError> {
    r.seq(|r| {
        Ok(OutboxWire {
            user: r.str()?.into(),
            general: r.u8()?,
            custom: r.str()?.into(),
            version: r.u64()?,
            cause: r.u8()?,
            device: match r.option()? {
                true => Some(r.str()?.into()),
                false => None,
            },
            changed: r.bool()?,
        })
    })
}
