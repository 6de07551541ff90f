//! Snapshots in bincode's encoding, by hand (formats 1 and 2): the bytes serde's derived
//! code writes and reads for the indexed snapshot of docs/FORMAT.md, read into a
//! [`SnapshotWire`] that borrows its strings from the bytes.
//!
//! Format 2: `last_seq`, `now_ms`, `ids`, `devices`, `owners`, then the users, each with its
//! sessions (device, connected, login time, owner), custom status, last-online time,
//! subscriptions, friends and version. Format 1 has no `owners`, sessions without an owner and
//! users without a version.

use bincode::error::DecodeError;

use super::wire::{Reader, Writer};
use crate::snapshot::{SessionWire, SnapshotWire, Span, UserWire};

pub(crate) fn encode_snapshot(wire: &SnapshotWire<'_>, w: &mut Writer<'_>) {
    w.varint(wire.last_seq);
    w.varint(wire.now_ms);
    for list in [&wire.ids, &wire.devices, &wire.owners] {
        w.len(list.len());
        list.iter().for_each(|s| w.str(s));
    }
    w.len(wire.users.len());
    for user in &wire.users {
        let sessions = wire.sessions_of(user);
        w.len(sessions.len());
        for s in sessions {
            w.varint(s.device.into());
            w.bool(s.connected);
            w.varint(s.login_at_ms);
            w.option(s.owner.is_some());
            if let Some(owner) = s.owner {
                w.varint(owner.into());
            }
        }
        w.str(user.custom);
        w.option(user.last_online_end_ms.is_some());
        if let Some(at_ms) = user.last_online_end_ms {
            w.varint(at_ms);
        }
        for list in [wire.subscriptions_of(user), wire.friends_of(user)] {
            w.len(list.len());
            list.iter().for_each(|&i| w.varint(i.into()));
        }
        w.varint(user.version);
    }
}

/// Reads the indexes of a list into `links`; returns where they are.
fn links(r: &mut Reader<'_>, links: &mut Vec<u32>) -> Result<Span, DecodeError> {
    let start = links.len();
    let len = r.len()?;
    for _ in 0..len {
        links.push(r.u32()?);
    }
    Ok(Span::since(start, links))
}

/// Reads a snapshot payload written in `version` (1 or 2).
pub(crate) fn decode_snapshot<'a>(r: &mut Reader<'a>, version: u8) -> Result<SnapshotWire<'a>, DecodeError> {
    let last_seq = r.u64()?;
    let now_ms = r.u64()?;
    let ids = r.seq(Reader::str)?;
    let devices = r.seq(Reader::str)?;
    let owners = if version >= 2 { r.seq(Reader::str)? } else { Vec::new() };
    let mut sessions = Vec::new();
    let mut all_links = Vec::new();
    let users = r.seq(|r| {
        let start = sessions.len();
        let len = r.len()?;
        for _ in 0..len {
            let device = r.u32()?;
            let connected = r.bool()?;
            let login_at_ms = r.u64()?;
            let owner = match version >= 2 && r.option()? {
                true => Some(r.u32()?),
                false => None,
            };
            sessions.push(SessionWire { device, connected, login_at_ms, owner });
        }
        let user_sessions = Span::since(start, &sessions);
        let custom = r.str()?;
        let last_online_end_ms = match r.option()? {
            true => Some(r.u64()?),
            false => None,
        };
        let subscriptions = links(r, &mut all_links)?;
        let friends = links(r, &mut all_links)?;
        // Format 1 has no versions: they restore as 0 (docs/FORMAT.md).
        let version = if version >= 2 { r.u64()? } else { 0 };
        Ok(UserWire { sessions: user_sessions, custom, last_online_end_ms, subscriptions, friends, version })
    })?;
    Ok(SnapshotWire { last_seq, now_ms, ids, devices, owners, users, sessions, links: all_links })
}
