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

/// How a snapshot is encoded: every user id once, and users, targets and friends as indexes
/// into that table, so that restoring a snapshot allocates and hashes each id once instead of
/// once per subscription and friendship that names it (docs/FORMAT.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotWire {
    pub last_seq: u64,
    pub now_ms: u64,
    /// The users with state, sorted, then the users only named as targets, sorted.
    pub ids: Vec<UserId>,
    /// Every device id a session uses, once.
    pub devices: Vec<DeviceId>,
    /// One per user with state: `users[i]` is `ids[i]`.
    pub users: Vec<UserWire>,
}

/// One user with state, by index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserWire {
    /// (device index, connected, login time), sorted by device id.
    pub sessions: Vec<(u32, bool, u64)>,
    pub custom: Arc<str>,
    pub last_online_end_ms: Option<u64>,
    /// Indexes into `ids`, oldest first.
    pub subscriptions: Vec<u32>,
    /// Indexes into `ids`, sorted by id.
    pub friends: Vec<u32>,
}

impl SnapshotWire {
    /// The wire form of a snapshot given as a whole.
    pub(crate) fn from_snapshot(snapshot: &Snapshot) -> Self {
        let records = &snapshot.state.users;
        let mut ids: Vec<UserId> = records.iter().map(|r| r.user.clone()).collect();
        let mut extra: Vec<UserId> = records
            .iter()
            .flat_map(|r| r.subscriptions.iter().chain(&r.friends))
            .filter(|t| records.binary_search_by(|r| r.user.cmp(t)).is_err())
            .cloned()
            .collect();
        extra.sort();
        extra.dedup();
        ids.extend(extra);
        // Every id a record names is in `ids` by construction (the records, then every other
        // target and friend), and every device in `devices`: a lookup that fails is a bug
        // here, not bad input, so it is asserted rather than turned into an error.
        let index = |id: &UserId| -> u32 {
            let found = match records.binary_search_by(|r| r.user.cmp(id)) {
                Ok(i) => i,
                Err(_) => match ids[records.len()..].binary_search(id) {
                    Ok(i) => records.len() + i,
                    Err(_) => unreachable!("{id} is named by a record but missing from the id table"),
                },
            };
            found as u32
        };
        let mut devices: Vec<DeviceId> =
            records.iter().flat_map(|r| r.sessions.iter().map(|s| s.device.clone())).collect();
        devices.sort();
        devices.dedup();
        let device = |d: &DeviceId| match devices.binary_search(d) {
            Ok(i) => i as u32,
            Err(_) => unreachable!("device {d} is used by a session but missing from the device table"),
        };
        let users = records
            .iter()
            .map(|r| UserWire {
                sessions: r
                    .sessions
                    .iter()
                    .map(|s| (device(&s.device), s.connected, s.login_at_ms))
                    .collect(),
                custom: r.custom.clone(),
                last_online_end_ms: r.last_online_end_ms,
                subscriptions: r.subscriptions.iter().map(index).collect(),
                friends: r.friends.iter().map(index).collect(),
            })
            .collect();
        SnapshotWire { last_seq: snapshot.last_seq, now_ms: snapshot.now_ms, ids, devices, users }
    }

    /// The snapshot as a whole; `None` if an index is out of range.
    pub(crate) fn to_snapshot(&self) -> Option<Snapshot> {
        let id = |i: &u32| self.ids.get(*i as usize).cloned();
        let mut users = Vec::with_capacity(self.users.len());
        for (user, wire) in self.ids.iter().zip(&self.users) {
            let sessions = wire
                .sessions
                .iter()
                .map(|&(d, connected, login_at_ms)| {
                    let device = self.devices.get(d as usize)?.clone();
                    Some(SessionRecord { device, connected, login_at_ms })
                })
                .collect::<Option<Vec<_>>>()?;
            users.push(UserRecord {
                user: user.clone(),
                sessions,
                custom: wire.custom.clone(),
                last_online_end_ms: wire.last_online_end_ms,
                subscriptions: wire.subscriptions.iter().map(id).collect::<Option<Vec<_>>>()?,
                friends: wire.friends.iter().map(id).collect::<Option<Vec<_>>>()?,
            });
        }
        if users.len() != self.users.len() {
            return None;
        }
        Some(Snapshot { last_seq: self.last_seq, now_ms: self.now_ms, state: LogicalState { users } })
    }
}

fn strictly_increasing<T: Ord>(items: impl IntoIterator<Item = T>) -> bool {
    let mut items = items.into_iter();
    let Some(mut last) = items.next() else { return true };
    for item in items {
        if item <= last {
            return false;
        }
        last = item;
    }
    true
}

impl SnapshotWire {
    /// Checks everything a snapshot must be, so that restoring it needs no lookups: ids,
    /// devices and sessions sorted and unique, indexes in range, no self-subscription or
    /// self-friendship (R4.1, R5.4), friendships mutual, a custom status only while ONLINE
    /// (R3.3).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let n = self.users.len();
        if self.ids.len() < n {
            return Err(format!("{} users but only {} ids", n, self.ids.len()));
        }
        let (records, extra) = self.ids.split_at(n);
        if !strictly_increasing(records) || !strictly_increasing(extra) {
            return Err("user ids are not sorted and unique".into());
        }
        if extra.iter().any(|id| records.binary_search(id).is_ok()) {
            return Err("a user id is listed twice".into());
        }
        if !strictly_increasing(&self.devices) {
            return Err("device ids are not sorted and unique".into());
        }
        let ids = self.ids.len();
        for (i, (user, wire)) in records.iter().zip(&self.users).enumerate() {
            let i = i as u32;
            let devices = wire.sessions.iter().map(|s| s.0);
            if !strictly_increasing(devices)
                || wire.sessions.iter().any(|s| s.0 as usize >= self.devices.len())
            {
                return Err(format!("sessions of {user} are not sorted and unique"));
            }
            if !wire.custom.is_empty() && !wire.sessions.iter().any(|s| s.1) {
                return Err(format!("{user} has a custom status but is not ONLINE (R3.3)"));
            }
            let mut seen = wire.subscriptions.clone();
            seen.sort_unstable();
            if !strictly_increasing(&seen) || seen.iter().any(|&t| t == i || t as usize >= ids) {
                return Err(format!("subscriptions of {user} repeat, include itself or are out of range"));
            }
            if wire.friends.iter().any(|&f| f == i || f as usize >= ids)
                || !strictly_increasing(wire.friends.iter().map(|&f| &self.ids[f as usize]))
            {
                return Err(format!("friends of {user} are not sorted and unique, or include itself"));
            }
        }
        // Every index is in range now, so the mutual check may follow any list.
        for (user, wire) in records.iter().zip(&self.users) {
            for &f in &wire.friends {
                let mutual = self.users.get(f as usize).is_some_and(|other| {
                    other.friends.binary_search_by(|&x| self.ids[x as usize].cmp(user)).is_ok()
                });
                if !mutual {
                    return Err(format!("friendship of {user} is not mutual"));
                }
            }
        }
        Ok(())
    }
}
