//! Commands in, outcomes out (the notices an outcome carries are in `notice.rs`).

use crate::ids::{DeviceId, UserId};
use crate::notice::Notice;
use crate::status::UserStatus;

/// A command from the host. Time is not part of it: it comes with
/// [`Engine::execute`](crate::Engine::execute) (R1.3). Clock ticks are
/// [`Engine::tick`](crate::Engine::tick).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Creates a connected session, reconnects a disconnected one, or refreshes the heartbeat
    /// of a connected one (R2.1); may kick the oldest session (R2.5).
    Login {
        /// The user logging in.
        user: UserId,
        /// Its device.
        device: DeviceId,
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
}

fn ids(list: impl IntoIterator<Item = impl Into<UserId>>) -> Vec<UserId> {
    list.into_iter().map(Into::into).collect()
}

impl Command {
    /// `login(user, device)`.
    pub fn login(user: impl Into<UserId>, device: impl Into<DeviceId>) -> Self {
        Self::Login { user: user.into(), device: device.into() }
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
        }
    }
}

/// The status of one target, as returned by `get_status` and `subscribe` (R4.6, R6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    /// The target.
    pub user: UserId,
    /// Its status.
    pub status: UserStatus,
}

/// The result of a command that succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Reply {
    /// The command succeeded and returns nothing.
    #[default]
    Done,
    /// `get_status` and `subscribe`: one status per requested target, in request order
    /// (duplicates included).
    Statuses(Vec<TargetStatus>),
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
}

impl Outcome {
    /// The statuses of a `get_status` or `subscribe`, or an empty slice.
    pub fn statuses(&self) -> &[TargetStatus] {
        match &self.reply {
            Reply::Statuses(list) => list,
            Reply::Done => &[],
        }
    }

    /// The number of individual deliveries (one per recipient device of each notice).
    pub fn delivery_count(&self) -> usize {
        crate::notice::delivery_count(&self.notices)
    }
}
