//! Commands in, outcomes out (the notices an outcome carries are in `notice.rs`).

use crate::change::StatusChange;
use crate::ids::{DeviceId, OwnerId, UserId};
use crate::notice::Notice;
use crate::shard::ShardMap;
use crate::status::UserStatus;

/// A command from the host. Time is not part of it: it comes with
/// [`Engine::execute`](crate::Engine::execute) (R1.3). Clock ticks are
/// [`Engine::tick`](crate::Engine::tick). On a wire it is an object tagged by `op`, as in a
/// trace: `{"op": "login", "user": "alice", "device": "phone", "owner": null}`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "op", rename_all = "snake_case"))]
pub enum Command {
    /// Creates a connected session, reconnects a disconnected one, or refreshes the heartbeat
    /// of a connected one (R2.1); may kick the oldest session (R2.5).
    Login {
        /// The user logging in.
        user: UserId,
        /// Its device.
        device: DeviceId,
        /// The connection owner to tag the session with (R8.5), usually the gateway node that
        /// holds the socket; `None` for none.
        owner: Option<OwnerId>,
    },
    /// Removes the session (R2.2).
    Logout {
        /// The user.
        user: UserId,
        /// Its device.
        device: DeviceId,
    },
    /// Marks the session disconnected; it stays logged in (R2.2).
    Disconnect {
        /// The user.
        user: UserId,
        /// Its device.
        device: DeviceId,
    },
    /// Refreshes a connected session's heartbeat (R2.4). Not logged (R8.2).
    Heartbeat {
        /// The user.
        user: UserId,
        /// Its device.
        device: DeviceId,
    },
    /// Sets (or, with `""`, clears) the user's custom status (R3.1).
    SetStatus {
        /// The user.
        user: UserId,
        /// A connected device of the user.
        device: DeviceId,
        /// The new custom status, at most `max_custom_status_bytes` bytes of UTF-8.
        custom: String,
    },
    /// Queries statuses (R6.1, R6.2).
    GetStatus {
        /// The asking user.
        user: UserId,
        /// A connected device of the asking user.
        device: DeviceId,
        /// The users asked about, in the order the answer keeps.
        targets: Vec<UserId>,
    },
    /// Adds targets to the user's subscription list (R4.1-R4.3, R4.6).
    Subscribe {
        /// The subscribing user.
        user: UserId,
        /// A connected device of the subscribing user.
        device: DeviceId,
        /// The users to watch.
        targets: Vec<UserId>,
    },
    /// Removes targets from the list; an empty list clears it (R4.4).
    Unsubscribe {
        /// The subscribing user.
        user: UserId,
        /// A connected device of the subscribing user.
        device: DeviceId,
        /// The users to stop watching; empty means all.
        targets: Vec<UserId>,
    },
    /// Makes two users friends (R5.4). Needs no session.
    AddFriend {
        /// One side.
        user: UserId,
        /// The other side.
        friend: UserId,
    },
    /// Ends a friendship (R5.4). Needs no session.
    RemoveFriend {
        /// One side.
        user: UserId,
        /// The other side.
        friend: UserId,
    },
    /// Disconnects the connected sessions of one connection owner, or every connected session
    /// (R8.5): the host's way to say that a gateway node, or the whole process before a
    /// restart, lost its sockets. At most [`DISCONNECT_SESSIONS_MAX`](crate::DISCONNECT_SESSIONS_MAX)
    /// sessions (and one batch of the store) per command; the reply says how many remain.
    DisconnectSessions {
        /// The owner whose sessions go; `None` for every connected session.
        owner: Option<OwnerId>,
    },
}

fn ids(list: impl IntoIterator<Item = impl Into<UserId>>) -> Vec<UserId> {
    list.into_iter().map(Into::into).collect()
}

impl Command {
    /// The user who issues the command (for a friendship, `user`); `None` for
    /// `disconnect_sessions`.
    pub fn user(&self) -> Option<&UserId> {
        match self {
            Command::DisconnectSessions { .. } => None,
            Command::Login { user, .. }
            | Command::Logout { user, .. }
            | Command::Disconnect { user, .. }
            | Command::Heartbeat { user, .. }
            | Command::SetStatus { user, .. }
            | Command::GetStatus { user, .. }
            | Command::Subscribe { user, .. }
            | Command::Unsubscribe { user, .. }
            | Command::AddFriend { user, .. }
            | Command::RemoveFriend { user, .. } => Some(user),
        }
    }

    /// Every user the command names: its user, then its targets or friend.
    pub(crate) fn users(&self) -> impl Iterator<Item = &UserId> + Clone {
        let others: &[UserId] = match self {
            Command::GetStatus { targets, .. }
            | Command::Subscribe { targets, .. }
            | Command::Unsubscribe { targets, .. } => targets,
            Command::AddFriend { friend, .. } | Command::RemoveFriend { friend, .. } => {
                std::slice::from_ref(friend)
            }
            _ => &[],
        };
        self.user().into_iter().chain(others)
    }

    /// The shard of `map` that orders this command: its user's; for a friendship the lower
    /// of the two users' shards, which records it and hands it to the other (R9.1); `None`
    /// for `disconnect_sessions`, which every shard runs on its own sessions.
    pub fn shard(&self, map: &ShardMap) -> Option<u32> {
        match self {
            Command::AddFriend { user, friend } | Command::RemoveFriend { user, friend } => {
                Some(map.shard_of(user).min(map.shard_of(friend)))
            }
            _ => self.user().map(|user| map.shard_of(user)),
        }
    }

    /// `login(user, device)`, without a connection owner.
    pub fn login(user: impl Into<UserId>, device: impl Into<DeviceId>) -> Self {
        Self::Login { user: user.into(), device: device.into(), owner: None }
    }
    /// `login(user, device)` through a connection owner (R8.5), such as a gateway node.
    pub fn login_with_owner(
        user: impl Into<UserId>,
        device: impl Into<DeviceId>,
        owner: impl Into<OwnerId>,
    ) -> Self {
        Self::Login { user: user.into(), device: device.into(), owner: Some(owner.into()) }
    }
    /// `disconnect_sessions(owner)`: the connected sessions of `owner` (R8.5).
    pub fn disconnect_owner(owner: impl Into<OwnerId>) -> Self {
        Self::DisconnectSessions { owner: Some(owner.into()) }
    }
    /// `disconnect_sessions()`: every connected session (R8.5).
    pub fn disconnect_all() -> Self {
        Self::DisconnectSessions { owner: None }
    }
    /// `logout(user, device)`.
    pub fn logout(user: impl Into<UserId>, device: impl Into<DeviceId>) -> Self {
        Self::Logout { user: user.into(), device: device.into() }
    }
    /// `disconnect(user, device)`.
    pub fn disconnect(user: impl Into<UserId>, device: impl Into<DeviceId>) -> Self {
        Self::Disconnect { user: user.into(), device: device.into() }
    }
    /// `heartbeat(user, device)`.
    pub fn heartbeat(user: impl Into<UserId>, device: impl Into<DeviceId>) -> Self {
        Self::Heartbeat { user: user.into(), device: device.into() }
    }
    /// `set_status(user, device, custom)`.
    pub fn set_status(
        user: impl Into<UserId>,
        device: impl Into<DeviceId>,
        custom: impl Into<String>,
    ) -> Self {
        Self::SetStatus { user: user.into(), device: device.into(), custom: custom.into() }
    }
    /// `get_status(user, device, targets)`.
    pub fn get_status(
        user: impl Into<UserId>,
        device: impl Into<DeviceId>,
        targets: impl IntoIterator<Item = impl Into<UserId>>,
    ) -> Self {
        Self::GetStatus { user: user.into(), device: device.into(), targets: ids(targets) }
    }
    /// `subscribe(user, device, targets)`.
    pub fn subscribe(
        user: impl Into<UserId>,
        device: impl Into<DeviceId>,
        targets: impl IntoIterator<Item = impl Into<UserId>>,
    ) -> Self {
        Self::Subscribe { user: user.into(), device: device.into(), targets: ids(targets) }
    }
    /// `unsubscribe(user, device, targets)`; empty `targets` clears the list.
    pub fn unsubscribe(
        user: impl Into<UserId>,
        device: impl Into<DeviceId>,
        targets: impl IntoIterator<Item = impl Into<UserId>>,
    ) -> Self {
        Self::Unsubscribe { user: user.into(), device: device.into(), targets: ids(targets) }
    }
    /// `add_friend(user, friend)`.
    pub fn add_friend(user: impl Into<UserId>, friend: impl Into<UserId>) -> Self {
        Self::AddFriend { user: user.into(), friend: friend.into() }
    }
    /// `remove_friend(user, friend)`.
    pub fn remove_friend(user: impl Into<UserId>, friend: impl Into<UserId>) -> Self {
        Self::RemoveFriend { user: user.into(), friend: friend.into() }
    }

    /// The command's name as in SPEC.md and traces (`login`, `set_status`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Login { .. } => "login",
            Self::Logout { .. } => "logout",
            Self::Disconnect { .. } => "disconnect",
            Self::Heartbeat { .. } => "heartbeat",
            Self::SetStatus { .. } => "set_status",
            Self::GetStatus { .. } => "get_status",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::AddFriend { .. } => "add_friend",
            Self::RemoveFriend { .. } => "remove_friend",
            Self::DisconnectSessions { .. } => "disconnect_sessions",
        }
    }
}

/// The status of one target, as returned by `get_status` and `subscribe` (R4.6, R6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TargetStatus {
    /// The target.
    pub user: UserId,
    /// Its status (on a wire, its two fields sit beside `user` and `version`).
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub status: UserStatus,
    /// Its status version (R5.6); a device keeps the newest it has seen.
    pub version: u64,
}

/// The result of a command that succeeded. On a wire: `"done"`, `{"statuses": [...]}` or
/// `{"disconnected": {"sessions": N, "remaining": M}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Reply {
    /// The command succeeded and returns nothing.
    #[default]
    Done,
    /// `get_status` and `subscribe`: one status per requested target, in request order
    /// (duplicates included).
    Statuses(Vec<TargetStatus>),
    /// `disconnect_sessions`: how many sessions it disconnected, and how many of those it
    /// was asked for are still connected (send it again while this is not 0).
    Disconnected {
        /// Sessions disconnected by this command.
        sessions: usize,
        /// Matching sessions left connected, for the next command.
        remaining: usize,
    },
}

/// What a successful command or tick produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The command's result.
    pub reply: Reply,
    /// The notices to push; empty when nothing observable changed.
    pub notices: Vec<Notice>,
    /// How many events the command appended to the log (0 for heartbeats and queries).
    pub events: usize,
    /// The status changes that notified nothing (their pair stayed as it was), each with the
    /// number of status notices that come before it in the order first touched: the notified
    /// ones are the status notices themselves, so that a change is not made twice
    /// ([`Outcome::changes`] puts them together).
    pub(crate) unnotified: Vec<(u32, StatusChange)>,
}

impl Outcome {
    /// The statuses of a `get_status` or `subscribe`, or an empty slice.
    pub fn statuses(&self) -> &[TargetStatus] {
        match &self.reply {
            Reply::Statuses(list) => list,
            Reply::Done | Reply::Disconnected { .. } => &[],
        }
    }

    /// Every user whose status version moved, in the order first touched (R5.6): the
    /// notified changes (one per status notice, made from it) and the ones that left the
    /// status pair as it was. Made on each call from [`Outcome::notices`], so call it before
    /// taking the notices away; a host that needs no changes pays nothing for them.
    pub fn changes(&self) -> Vec<StatusChange> {
        let statuses = self.notices.iter().filter_map(|n| match n {
            Notice::Status(status) => Some(status),
            Notice::Kicked(_) => None,
        });
        let mut changes = Vec::with_capacity(self.notices.len() + self.unnotified.len());
        let mut unnotified = self.unnotified.iter().peekable();
        for (before, notice) in statuses.enumerate() {
            while let Some((_, change)) = unnotified.next_if(|(at, _)| *at as usize <= before) {
                changes.push(change.clone());
            }
            changes.push(StatusChange {
                user: notice.about.clone(),
                status: notice.status.clone(),
                version: notice.version,
                cause: notice.cause.clone(),
                changed: true,
            });
        }
        changes.extend(unnotified.map(|(_, change)| change.clone()));
        changes
    }

    /// The number of individual deliveries (one per recipient device of each notice).
    pub fn delivery_count(&self) -> usize {
        crate::notice::delivery_count(&self.notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command goes to its user's shard, a friendship to the lower of the two (whichever
    /// user names it), and `disconnect_sessions` to none in particular.
    #[test]
    fn commands_go_to_their_users_shard_and_friendships_to_the_lower() {
        // docs/FORMAT.md: alice is on shard 7 of 8, bob on shard 4.
        let map = ShardMap::new(8);
        assert_eq!(Command::login("alice", "phone").shard(&map), Some(7));
        assert_eq!(Command::subscribe("bob", "pc", ["alice"]).shard(&map), Some(4));
        assert_eq!(Command::add_friend("alice", "bob").shard(&map), Some(4));
        assert_eq!(Command::remove_friend("bob", "alice").shard(&map), Some(4));
        assert_eq!(Command::disconnect_owner("node-1").shard(&map), None);
    }
}
