//! What a command or tick did to the status of each user it touched (R5.6, R5.7): the record
//! a notice is made from, that a batch's outbox keeps, and that another shard's watch table
//! follows. A leaf module: the codec, the notices and the engine all use it.

use crate::ids::{DeviceId, UserId};
use crate::status::UserStatus;

/// What a command or tick did to the status of one user it touched (R5.6): its status and
/// version afterwards, why, and whether the status pair changed (and was notified, R5.1).
/// Every change of a version has one, so a party that keeps other users' statuses (another
/// shard's watch table) can follow each user's version exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StatusChange {
    /// The user.
    pub user: UserId,
    /// Its status after the command.
    pub status: UserStatus,
    /// Its version after the command.
    pub version: u64,
    /// The last event of the command that touched it.
    pub cause: Cause,
    /// Whether the status pair differs from before the command (R5.1): only then is it
    /// notified.
    pub changed: bool,
}

/// Why a user's status version moved (R5.7), as Tencent's state-change callbacks report it:
/// the kind of the last event of the command that touched the user, and its device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Cause {
    /// What happened.
    pub kind: CauseKind,
    /// The device it happened on (`None` only for a custom status read from a log written
    /// before devices were recorded with it).
    pub device: Option<DeviceId>,
}

/// The kinds of [`Cause`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum CauseKind {
    /// A session opened or reconnected (R2.1).
    Login,
    /// A session was removed by a logout (R2.2).
    Logout,
    /// The host saw the connection close (R2.2).
    Disconnect,
    /// No heartbeat in time (R2.4).
    HeartbeatTimeout,
    /// A login on another device removed the session (R2.5).
    Kicked,
    /// The custom status was set (R3.1).
    CustomStatus,
    /// The engine was reopened and disconnected its restored sessions (R8.4).
    Restart,
    /// The host disconnected the sessions of a connection owner (R8.5).
    OwnerGone,
}

impl CauseKind {
    /// Every kind, in the order of their numbers in a batch's outbox.
    pub const ALL: [CauseKind; 8] = [
        CauseKind::Login,
        CauseKind::Logout,
        CauseKind::Disconnect,
        CauseKind::HeartbeatTimeout,
        CauseKind::Kicked,
        CauseKind::CustomStatus,
        CauseKind::Restart,
        CauseKind::OwnerGone,
    ];

    /// The kind named `name` (as [`CauseKind::name`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The name used in JSON and logs: `login`, `heartbeat_timeout`, ...
    pub fn name(self) -> &'static str {
        match self {
            CauseKind::Login => "login",
            CauseKind::Logout => "logout",
            CauseKind::Disconnect => "disconnect",
            CauseKind::HeartbeatTimeout => "heartbeat_timeout",
            CauseKind::Kicked => "kicked",
            CauseKind::CustomStatus => "custom_status",
            CauseKind::Restart => "restart",
            CauseKind::OwnerGone => "owner_gone",
        }
    }
}
