//! Commands and replies in bincode's encoding, as [`Command`] and [`Reply`] would be if their
//! serde forms were externally tagged: the number of the variant (in declaration order), then
//! its fields. For carrying commands between processes (a cluster's nodes); a trace keeps the
//! JSON form.

use bincode::error::DecodeError;

use crate::codec::decode_prefix;
use crate::codec::wire::{Reader, Writer};
use crate::command::{Command, Reply, TargetStatus};
use crate::error::StoreError;
use crate::ids::{DeviceId, OwnerId, UserId};
use crate::status::{GeneralStatus, UserStatus};

impl Command {
    /// Appends the command's bytes to `out`: bincode's encoding of it as an externally tagged
    /// enum (the number of its variant in declaration order, then its fields, ids as
    /// strings). For carrying commands between processes, as a cluster's nodes do; a trace
    /// keeps the JSON form. Ids are checked when the command reaches an engine, not here.
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        encode_command(self, &mut Writer::new(out));
    }

    /// Reads one command written by [`Command::encode_to`] from the start of `bytes`;
    /// returns it and the bytes after it. Never panics; allocates at most
    /// [`BATCH_BYTES_MAX`](crate::BATCH_BYTES_MAX).
    pub fn decode_from(bytes: &[u8]) -> Result<(Command, &[u8]), StoreError> {
        decode_prefix(bytes, "a command", decode_command)
    }
}

impl Reply {
    /// Appends the reply's bytes to `out`, as [`Command::encode_to`] writes a command.
    pub fn encode_to(&self, out: &mut Vec<u8>) {
        encode_reply(self, &mut Writer::new(out));
    }

    /// Reads one reply written by [`Reply::encode_to`] from the start of `bytes`; returns it
    /// and the bytes after it.
    pub fn decode_from(bytes: &[u8]) -> Result<(Reply, &[u8]), StoreError> {
        decode_prefix(bytes, "a reply", decode_reply)
    }
}

const COMMAND_KINDS: u32 = 11;
const REPLY_KINDS: u32 = 3;

fn ids(w: &mut Writer<'_>, ids: &[UserId]) {
    w.len(ids.len());
    ids.iter().for_each(|id| w.str(id.as_str()));
}

fn encode_command(command: &Command, w: &mut Writer<'_>) {
    let user_device = |w: &mut Writer<'_>, number: u64, user: &UserId, device: &DeviceId| {
        w.varint(number);
        w.str(user.as_str());
        w.str(device.as_str());
    };
    match command {
        Command::Login { user, device, owner } => {
            user_device(w, 0, user, device);
            w.option(owner.is_some());
            if let Some(owner) = owner {
                w.str(owner.as_str());
            }
        }
        Command::Logout { user, device } => user_device(w, 1, user, device),
        Command::Disconnect { user, device } => user_device(w, 2, user, device),
        Command::Heartbeat { user, device } => user_device(w, 3, user, device),
        Command::SetStatus { user, device, custom } => {
            user_device(w, 4, user, device);
            w.str(custom);
        }
        Command::GetStatus { user, device, targets } => {
            user_device(w, 5, user, device);
            ids(w, targets);
        }
        Command::Subscribe { user, device, targets } => {
            user_device(w, 6, user, device);
            ids(w, targets);
        }
        Command::Unsubscribe { user, device, targets } => {
            user_device(w, 7, user, device);
            ids(w, targets);
        }
        Command::AddFriend { user, friend } => {
            w.varint(8);
            w.str(user.as_str());
            w.str(friend.as_str());
        }
        Command::RemoveFriend { user, friend } => {
            w.varint(9);
            w.str(user.as_str());
            w.str(friend.as_str());
        }
        Command::DisconnectSessions { owner } => {
            w.varint(10);
            w.option(owner.is_some());
            if let Some(owner) = owner {
                w.str(owner.as_str());
            }
        }
    }
}

fn decode_command(r: &mut Reader<'_>) -> Result<Command, DecodeError> {
    let user = |r: &mut Reader<'_>| r.str().map(UserId::from);
    let device = |r: &mut Reader<'_>| r.str().map(DeviceId::from);
    let owner = |r: &mut Reader<'_>| match r.option()? {
        true => r.str().map(|o| Some(OwnerId::from(o))),
        false => Ok(None),
    };
    let targets = |r: &mut Reader<'_>| r.seq(|r| r.str().map(UserId::from));
    Ok(match r.variant(COMMAND_KINDS)? {
        0 => Command::Login { user: user(r)?, device: device(r)?, owner: owner(r)? },
        1 => Command::Logout { user: user(r)?, device: device(r)? },
        2 => Command::Disconnect { user: user(r)?, device: device(r)? },
        3 => Command::Heartbeat { user: user(r)?, device: device(r)? },
        4 => Command::SetStatus { user: user(r)?, device: device(r)?, custom: r.str()?.to_string() },
        5 => Command::GetStatus { user: user(r)?, device: device(r)?, targets: targets(r)? },
        6 => Command::Subscribe { user: user(r)?, device: device(r)?, targets: targets(r)? },
        7 => Command::Unsubscribe { user: user(r)?, device: device(r)?, targets: targets(r)? },
        8 => Command::AddFriend { user: user(r)?, friend: user(r)? },
        9 => Command::RemoveFriend { user: user(r)?, friend: user(r)? },
        _ => Command::DisconnectSessions { owner: owner(r)? },
    })
}

/// A general status as serde names a unit variant: its number in declaration order, which is
/// Tencent's (R2.7).
fn general(r: &mut Reader<'_>) -> Result<GeneralStatus, DecodeError> {
    let number = r.variant(4)?;
    Ok(GeneralStatus::from_code(number as u8).unwrap_or(GeneralStatus::Unknown))
}

fn encode_reply(reply: &Reply, w: &mut Writer<'_>) {
    match reply {
        Reply::Done => w.varint(0),
        Reply::Statuses(statuses) => {
            w.varint(1);
            w.len(statuses.len());
            for target in statuses {
                w.str(target.user.as_str());
                w.varint(u64::from(target.status.general.code()));
                w.str(&target.status.custom);
                w.varint(target.version);
            }
        }
        Reply::Disconnected { sessions, remaining } => {
            w.varint(2);
            w.varint(*sessions as u64);
            w.varint(*remaining as u64);
        }
    }
}

fn decode_reply(r: &mut Reader<'_>) -> Result<Reply, DecodeError> {
    Ok(match r.variant(REPLY_KINDS)? {
        0 => Reply::Done,
        1 => Reply::Statuses(r.seq(|r| {
            let user = UserId::from(r.str()?);
            let general = general(r)?;
            let custom = r.str()?.into();
            Ok(TargetStatus { user, status: UserStatus { general, custom }, version: r.u64()? })
        })?),
        _ => Reply::Disconnected { sessions: r.u64()? as usize, remaining: r.u64()? as usize },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::command::{Command, Reply, TargetStatus};
    use crate::status::{GeneralStatus, UserStatus};

    fn every_command() -> Vec<Command> {
        vec![
            Command::login("alice", "phone"),
            Command::Login { user: "alice".into(), device: "pc".into(), owner: Some("node-1".into()) },
            Command::logout("alice", "phone"),
            Command::disconnect("alice", "phone"),
            Command::heartbeat("alice", "phone"),
            Command::set_status("alice", "phone", "in a meeting ☕"),
            Command::set_status("alice", "phone", ""),
            Command::get_status("alice", "phone", ["bob", "carol", "bob"]),
            Command::subscribe("alice", "phone", ["bob"]),
            Command::unsubscribe("alice", "phone", Vec::<&str>::new()),
            Command::add_friend("alice", "bob"),
            Command::remove_friend("alice", "bob"),
            Command::DisconnectSessions { owner: None },
            Command::DisconnectSessions { owner: Some("gw".into()) },
        ]
    }

    fn every_reply() -> Vec<Reply> {
        let status = |general, custom: &str| UserStatus { general, custom: Arc::from(custom) };
        vec![
            Reply::Done,
            Reply::Statuses(vec![]),
            Reply::Statuses(vec![
                TargetStatus {
                    user: "bob".into(),
                    status: status(GeneralStatus::Online, "busy"),
                    version: 7,
                },
                TargetStatus {
                    user: "carol".into(),
                    status: status(GeneralStatus::Unlogined, ""),
                    version: u64::MAX,
                },
                TargetStatus { user: "dan".into(), status: status(GeneralStatus::Offline, ""), version: 0 },
            ]),
            Reply::Disconnected { sessions: 300, remaining: 70_000 },
        ]
    }

    // Several in one buffer read back one after another, each as written, with nothing left.
    #[test]
    fn commands_and_replies_read_back_as_written() {
        let mut bytes = Vec::new();
        every_command().iter().for_each(|c| c.encode_to(&mut bytes));
        let mut rest = bytes.as_slice();
        for command in every_command() {
            let (read, after) = Command::decode_from(rest).unwrap();
            assert_eq!(read, command);
            rest = after;
        }
        assert!(rest.is_empty());

        let mut bytes = Vec::new();
        every_reply().iter().for_each(|r| r.encode_to(&mut bytes));
        let mut rest = bytes.as_slice();
        for reply in every_reply() {
            let (read, after) = Reply::decode_from(rest).unwrap();
            assert_eq!(read, reply);
            rest = after;
        }
        assert!(rest.is_empty());
    }

    // Bytes cut anywhere, or a variant number out of range, are an error, never a panic.
    #[test]
    fn cut_or_unknown_bytes_are_refused() {
        for command in every_command() {
            let mut bytes = Vec::new();
            command.encode_to(&mut bytes);
            for cut in 0..bytes.len() {
                assert!(Command::decode_from(&bytes[..cut]).is_err(), "{command:?} cut at {cut}");
            }
        }
        for reply in every_reply() {
            let mut bytes = Vec::new();
            reply.encode_to(&mut bytes);
            for cut in 0..bytes.len() {
                assert!(Reply::decode_from(&bytes[..cut]).is_err(), "{reply:?} cut at {cut}");
            }
        }
        assert!(Command::decode_from(&[11]).is_err());
        assert!(Reply::decode_from(&[3]).is_err());
        // A status number beyond Tencent's four.
        assert!(Reply::decode_from(&[1, 1, 1, b'b', 4, 0, 0]).is_err());
        // A target list that claims more than the limit allows is refused before it allocates.
        assert!(
            Command::decode_from(&[5, 1, b'a', 1, b'p', 253, 255, 255, 255, 255, 255, 255, 255, 0]).is_err()
        );
    }
}
