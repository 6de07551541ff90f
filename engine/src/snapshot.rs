//! The logical state: what the log defines, in a canonical order. Snapshots store it, and
//! two engines with equal logical states answer every read alike (R8.1).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, UserId};

/// A snapshot: the logical state after every event up to `last_seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last event the snapshot covers (0: none).
    pub last_seq: u64,
    /// The latest engine time any covered event carried (R1.3).
    pub now_ms: u64,
    /// The state.
    pub state: LogicalState,
}

/// Everything the log determines, canonically ordered: users sorted by id, sessions by
/// device, friends by id; subscriptions oldest first. Heartbeat times and rate-limit budgets
/// are not part of it (R8.2).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogicalState {
    /// Every user with any state at all.
    pub users: Vec<UserRecord>,
}

/// One user's logged state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user.
    pub user: UserId,
    /// Its sessions, sorted by device id.
    pub sessions: Vec<SessionRecord>,
    /// Its custom status (`""`: none).
    pub custom: Arc<str>,
    /// When it last stopped being `ONLINE`, if it ever did (R6.5).
    pub last_online_end_ms: Option<u64>,
    /// Its subscription list, oldest first (R4.2).
    pub subscriptions: Vec<UserId>,
    /// Its friends, sorted (R5.4).
    pub friends: Vec<UserId>,
}

/// One session's logged state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The device.
    pub device: DeviceId,
    /// Connected or disconnected (R2.1).
    pub connected: bool,
    /// When it was created or last reconnected (R2.5).
    pub login_at_ms: u64,
}
