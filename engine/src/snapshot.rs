//! The logical state: what the log defines, in a canonical order. Snapshots store it, and
//! two engines with equal logical states answer every read alike (R8.1).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, OwnerId, UserId};

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
    /// Its status version (R5.6).
    pub version: u64,
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
    /// Its connection owner, while connected (R8.5).
    pub owner: Option<OwnerId>,
}

/// How a snapshot is encoded: every user id once, and users, targets and friends as indexes
/// into that table, so that restoring a snapshot allocates and hashes each id once instead of
/// once per subscription and friendship that names it (docs/FORMAT.md).
///
/// In memory the strings are borrowed (from the state or snapshot being saved, or from the
/// bytes being read), and the sessions, subscriptions and friends of every user sit in two
/// shared lists, each user holding its [`Span`] of them: saving or reading a million users
/// allocates a few lists, not a few per user. `codec` writes and reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SnapshotWire<'a> {
    pub last_seq: u64,
    pub now_ms: u64,
    /// The users with state, sorted, then the users only named as targets, sorted.
    pub ids: Vec<&'a str>,
    /// Every device id a session uses, once, sorted.
    pub devices: Vec<&'a str>,
    /// Every connection owner a session has, once, sorted.
    pub owners: Vec<&'a str>,
    /// One per user with state: `users[i]` is `ids[i]`.
    pub users: Vec<UserWire<'a>>,
    /// The sessions of every user, user after user.
    pub sessions: Vec<SessionWire>,
    /// The subscriptions and friends of every user (indexes into `ids`), user after user.
    pub links: Vec<u32>,
}

/// Where one user's part of a shared list is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// The span from `start` to the end of `list` (after the caller pushed the items).
    pub(crate) fn since<T>(start: usize, list: &[T]) -> Self {
        Span { start, end: list.len() }
    }

    fn of<T>(self, list: &[T]) -> &[T] {
        // Every span is made by `since` over the list it indexes, so it is in range.
        list.get(self.start..self.end).unwrap_or_default()
    }
}

/// One user with state, by index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UserWire<'a> {
    /// In `sessions`, sorted by device id.
    pub sessions: Span,
    pub custom: &'a str,
    pub last_online_end_ms: Option<u64>,
    /// In `links`: indexes into `ids`, oldest first.
    pub subscriptions: Span,
    /// In `links`: indexes into `ids`, sorted by id.
    pub friends: Span,
    pub version: u64,
}

/// One session, by index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionWire {
    /// An index into `devices`.
    pub device: u32,
    pub connected: bool,
    pub login_at_ms: u64,
    /// An index into `owners`; only a connected session has one.
    pub owner: Option<u32>,
}

impl<'a> SnapshotWire<'a> {
    /// The sessions of `user`, sorted by device.
    pub(crate) fn sessions_of(&self, user: &UserWire<'_>) -> &[SessionWire] {
        user.sessions.of(&self.sessions)
    }

    /// The subscriptions of `user`, oldest first.
    pub(crate) fn subscriptions_of(&self, user: &UserWire<'_>) -> &[u32] {
        user.subscriptions.of(&self.links)
    }

    /// The friends of `user`, sorted by id.
    pub(crate) fn friends_of(&self, user: &UserWire<'_>) -> &[u32] {
        user.friends.of(&self.links)
    }

    /// The wire form of a snapshot given as a whole, borrowing its strings.
    pub(crate) fn from_snapshot(snapshot: &'a Snapshot) -> Self {
        let records = &snapshot.state.users;
        let mut ids: Vec<&str> = records.iter().map(|r| r.user.as_str()).collect();
        let mut extra: Vec<&str> = records
            .iter()
            .flat_map(|r| r.subscriptions.iter().chain(&r.friends))
            .filter(|t| records.binary_search_by(|r| r.user.cmp(t)).is_err())
            .map(UserId::as_str)
            .collect();
        extra.sort_unstable();
        extra.dedup();
        ids.extend(extra);
        // Every id a record names is in `ids` by construction (the records, then every other
        // target and friend), and every device in `devices`: a lookup that fails is a bug
        // here, not bad input, so it is asserted rather than turned into an error.
        let index = |id: &UserId| -> u32 {
            let found = match records.binary_search_by(|r| r.user.cmp(id)) {
                Ok(i) => i,
                Err(_) => match ids[records.len()..].binary_search(&id.as_str()) {
                    Ok(i) => records.len() + i,
                    Err(_) => unreachable!("{id} is named by a record but missing from the id table"),
                },
            };
            found as u32
        };
        let mut devices: Vec<&str> =
            records.iter().flat_map(|r| r.sessions.iter().map(|s| s.device.as_str())).collect();
        devices.sort_unstable();
        devices.dedup();
        let device = |d: &DeviceId| match devices.binary_search(&d.as_str()) {
            Ok(i) => i as u32,
            Err(_) => unreachable!("device {d} is used by a session but missing from the device table"),
        };
        let mut owners: Vec<&str> =
            records.iter().flat_map(|r| r.sessions.iter().filter_map(|s| s.owner.as_deref())).collect();
        owners.sort_unstable();
        owners.dedup();
        let owner = |o: &OwnerId| match owners.binary_search(&o.as_str()) {
            Ok(i) => i as u32,
            Err(_) => unreachable!("owner {o} is used by a session but missing from the owner table"),
        };
        let mut sessions = Vec::new();
        let mut links = Vec::new();
        let mut users = Vec::with_capacity(records.len());
        for r in records {
            let start = sessions.len();
            sessions.extend(r.sessions.iter().map(|s| SessionWire {
                device: device(&s.device),
                connected: s.connected,
                login_at_ms: s.login_at_ms,
                owner: s.owner.as_ref().map(owner),
            }));
            let user_sessions = Span::since(start, &sessions);
            let start = links.len();
            links.extend(r.subscriptions.iter().map(index));
            let subscriptions = Span::since(start, &links);
            let start = links.len();
            links.extend(r.friends.iter().map(index));
            let friends = Span::since(start, &links);
            users.push(UserWire {
                sessions: user_sessions,
                custom: &r.custom,
                last_online_end_ms: r.last_online_end_ms,
                subscriptions,
                friends,
                version: r.version,
            });
        }
        SnapshotWire {
            last_seq: snapshot.last_seq,
            now_ms: snapshot.now_ms,
            ids,
            devices,
            owners,
            users,
            sessions,
            links,
        }
    }

    /// The snapshot as a whole; `None` if an index is out of range.
    pub(crate) fn to_snapshot(&self) -> Option<Snapshot> {
        let id = |i: &u32| self.ids.get(*i as usize).map(|&id| UserId::from(id));
        let mut users = Vec::with_capacity(self.users.len());
        for (&user, wire) in self.ids.iter().zip(&self.users) {
            let sessions = self
                .sessions_of(wire)
                .iter()
                .map(|s| {
                    let device = DeviceId::from(*self.devices.get(s.device as usize)?);
                    let owner = match s.owner {
                        Some(o) => Some(OwnerId::from(*self.owners.get(o as usize)?)),
                        None => None,
                    };
                    Some(SessionRecord { device, connected: s.connected, login_at_ms: s.login_at_ms, owner })
                })
                .collect::<Option<Vec<_>>>()?;
            users.push(UserRecord {
                user: user.into(),
                sessions,
                custom: Arc::from(wire.custom),
                last_online_end_ms: wire.last_online_end_ms,
                subscriptions: self.subscriptions_of(wire).iter().map(id).collect::<Option<Vec<_>>>()?,
                friends: self.friends_of(wire).iter().map(id).collect::<Option<Vec<_>>>()?,
                version: wire.version,
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

/// A [`SnapshotWire`] that passed [`SnapshotWire::validate`]. Only
/// [`SnapshotWire::validated`] makes one, so that a state is never rebuilt from a wire
/// nobody checked, and none is checked twice (a check is about 6 % of restoring a million
/// users and replaying a tail).
#[derive(Debug)]
pub(crate) struct ValidWire<'a>(SnapshotWire<'a>);

impl<'a> std::ops::Deref for ValidWire<'a> {
    type Target = SnapshotWire<'a>;

    fn deref(&self) -> &SnapshotWire<'a> {
        &self.0
    }
}

impl<'a> SnapshotWire<'a> {
    /// The wire, once [`SnapshotWire::validate`] has found it sound.
    pub(crate) fn validated(self) -> Result<ValidWire<'a>, String> {
        self.validate()?;
        Ok(ValidWire(self))
    }
}

impl SnapshotWire<'_> {
    /// Checks everything a snapshot must be, so that restoring it needs no lookups: ids,
    /// devices and sessions sorted and unique, indexes in range, no self-subscription or
    /// self-friendship (R4.1, R5.4), friendships mutual, a custom status only while ONLINE
    /// (R3.3).
    fn validate(&self) -> Result<(), String> {
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
        if !strictly_increasing(&self.owners) {
            return Err("owner tags are not sorted and unique".into());
        }
        let ids = self.ids.len();
        // Reused for each user's subscriptions, sorted to find repeats.
        let mut seen = Vec::new();
        for (i, (user, wire)) in records.iter().zip(&self.users).enumerate() {
            let i = i as u32;
            let sessions = self.sessions_of(wire);
            let devices = sessions.iter().map(|s| s.device);
            if !strictly_increasing(devices)
                || sessions.iter().any(|s| s.device as usize >= self.devices.len())
            {
                return Err(format!("sessions of {user} are not sorted and unique"));
            }
            let owner_in_range =
                |s: &SessionWire| s.owner.is_none_or(|o| s.connected && (o as usize) < self.owners.len());
            if !sessions.iter().all(owner_in_range) {
                return Err(format!("a session of {user} has an owner out of range, or while disconnected"));
            }
            if !wire.custom.is_empty() && !sessions.iter().any(|s| s.connected) {
                return Err(format!("{user} has a custom status but is not ONLINE (R3.3)"));
            }
            seen.clear();
            seen.extend_from_slice(self.subscriptions_of(wire));
            seen.sort_unstable();
            if !strictly_increasing(&seen) || seen.iter().any(|&t| t == i || t as usize >= ids) {
                return Err(format!("subscriptions of {user} repeat, include itself or are out of range"));
            }
            let friends = self.friends_of(wire);
            if friends.iter().any(|&f| f == i || f as usize >= ids)
                || !strictly_increasing(friends.iter().map(|&f| self.ids[f as usize]))
            {
                return Err(format!("friends of {user} are not sorted and unique, or include itself"));
            }
        }
        // Every index is in range now, so the mutual check may follow any list.
        for (user, wire) in records.iter().zip(&self.users) {
            for &f in self.friends_of(wire) {
                let mutual = self.users.get(f as usize).is_some_and(|other| {
                    self.friends_of(other).binary_search_by(|&x| self.ids[x as usize].cmp(user)).is_ok()
                });
                if !mutual {
                    return Err(format!("friendship of {user} is not mutual"));
                }
            }
        }
        Ok(())
    }
}
