//! Between the live state and its canonical, logged form ([`LogicalState`]).

use super::{no_custom, Session, State, UserState};
use crate::ids::{DeviceKey, OwnerId, UserKey};
use crate::snapshot::{
    LogicalState, SessionRecord, SessionWire, SnapshotWire, Span, UserRecord, UserWire, ValidWire,
};

impl State {
    /// The state as the log defines it, canonically ordered.
    pub(crate) fn logical(&self) -> LogicalState {
        let mut state = self.logical_unsorted();
        canonicalize(&mut state);
        state
    }

    /// The state as the log defines it, in no particular order: the cheap part of a
    /// snapshot, which is all the engine has to stop for ([`canonicalize`] can happen
    /// elsewhere).
    pub(crate) fn logical_unsorted(&self) -> LogicalState {
        let users: Vec<UserRecord> = self
            .users
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.is_blank())
            .map(|(index, u)| {
                let sessions: Vec<SessionRecord> = u
                    .sessions
                    .iter()
                    .map(|s| SessionRecord {
                        device: self.device_name(s.device).clone(),
                        connected: s.connected(),
                        login_at_ms: s.login_at_ms,
                        owner: self.owners.get(UserKey(index as u32), s.device).cloned(),
                    })
                    .collect();
                let friends: Vec<_> = u.friends().iter().map(|&f| self.user_name(f).clone()).collect();
                UserRecord {
                    user: self.user_name(UserKey(index as u32)).clone(),
                    sessions,
                    custom: u.social().map_or_else(no_custom, |s| s.custom.clone()),
                    last_online_end_ms: u.last_online_end_ms(),
                    subscriptions: u.subscriptions().iter().map(|&t| self.user_name(t).clone()).collect(),
                    friends,
                    version: u.version,
                }
            })
            .collect();
        LogicalState { users }
    }

    /// The snapshot of this state in its encoded form (see [`SnapshotWire`]), borrowing the
    /// state's strings.
    pub(crate) fn to_wire(&self) -> SnapshotWire<'_> {
        let mut records: Vec<UserKey> =
            (0..self.users.len() as u32).map(UserKey).filter(|&u| !self.user(u).is_blank()).collect();
        records.sort_unstable_by(|&a, &b| self.user_name(a).cmp(self.user_name(b)));
        // Where each user lands in `ids`: records first, then targets without state.
        let mut index = vec![u32::MAX; self.users.len()];
        for (i, &u) in records.iter().enumerate() {
            index[u.index()] = i as u32;
        }
        let mut extra: Vec<UserKey> = records
            .iter()
            .flat_map(|&u| self.user(u).subscriptions().iter().chain(self.user(u).friends()))
            .copied()
            .filter(|t| index[t.index()] == u32::MAX)
            .collect();
        extra.sort_unstable_by(|&a, &b| self.user_name(a).cmp(self.user_name(b)));
        extra.dedup();
        for (i, &u) in extra.iter().enumerate() {
            index[u.index()] = (records.len() + i) as u32;
        }
        let mut devices: Vec<u32> =
            records.iter().flat_map(|&u| self.user(u).sessions.iter().map(|s| s.device.0)).collect();
        devices.sort_unstable_by(|&a, &b| self.device_ids.name(a).cmp(self.device_ids.name(b)));
        devices.dedup();
        let mut device_index = vec![u32::MAX; self.device_ids.names().len()];
        for (i, &d) in devices.iter().enumerate() {
            device_index[d as usize] = i as u32;
        }
        let owner_of = |u: UserKey, s: &Session| self.owners.get(u, s.device).map(OwnerId::as_str);
        let mut owners: Vec<&str> = records
            .iter()
            .flat_map(|&u| self.user(u).sessions.iter().filter_map(move |s| owner_of(u, s)))
            .collect();
        owners.sort_unstable();
        owners.dedup();
        // Every owner a session has is in the table by construction.
        let owner_index = |o: &str| match owners.binary_search(&o) {
            Ok(i) => i as u32,
            Err(_) => unreachable!("owner {o} of a session is missing from the owner table"),
        };
        let mut sessions = Vec::new();
        let mut links = Vec::new();
        let mut users = Vec::with_capacity(records.len());
        let mut friends: Vec<UserKey> = Vec::new();
        for &u in &records {
            let user = self.user(u);
            let start = sessions.len();
            sessions.extend(user.sessions.iter().map(|s| SessionWire {
                device: device_index[s.device.0 as usize],
                connected: s.connected(),
                login_at_ms: s.login_at_ms,
                owner: owner_of(u, s).map(owner_index),
            }));
            sessions[start..].sort_unstable_by_key(|s| s.device);
            let user_sessions = Span::since(start, &sessions);
            let start = links.len();
            links.extend(user.subscriptions().iter().map(|t| index[t.index()]));
            let subscriptions = Span::since(start, &links);
            friends.clear();
            friends.extend(user.friends().iter().copied());
            friends.sort_unstable_by(|&a, &b| self.user_name(a).cmp(self.user_name(b)));
            let start = links.len();
            links.extend(friends.iter().map(|f| index[f.index()]));
            users.push(UserWire {
                sessions: user_sessions,
                custom: user.custom(),
                last_online_end_ms: user.last_online_end_ms(),
                subscriptions,
                friends: Span::since(start, &links),
                version: user.version,
            });
        }
        SnapshotWire {
            last_seq: self.last_seq,
            now_ms: self.now_ms,
            ids: records.iter().chain(&extra).map(|&u| self.user_name(u).as_str()).collect(),
            devices: devices.iter().map(|&d| self.device_ids.name(d).as_str()).collect(),
            owners,
            users,
            sessions,
            links,
        }
    }

    /// Rebuilds a state from a validated snapshot ([`SnapshotWire::validate`]): ids become
    /// keys in order, so no id is looked up. Deadline queues are left paused; the caller
    /// rebuilds them.
    pub(crate) fn from_wire(wire: &ValidWire<'_>) -> State {
        let mut state = State { now_ms: wire.now_ms, last_seq: wire.last_seq, ..State::default() };
        state.deadlines.paused = true;
        state.users.reserve_exact(wire.ids.len());
        state.user_ids.reserve(wire.ids.len());
        // The ids are unique (validated), so each is added without looking for it first.
        for &id in &wire.ids {
            state.user_ids.insert_new(id);
            state.users.push(UserState::default());
        }
        let devices: Vec<DeviceKey> = wire.devices.iter().map(|&d| state.intern_device(d.into())).collect();
        // Room for each user's subscribers at once, instead of growing each set insert by insert.
        let mut subscribers = vec![0u32; wire.ids.len()];
        for user in &wire.users {
            for &t in wire.subscriptions_of(user) {
                subscribers[t as usize] += 1;
            }
        }
        for (t, &count) in subscribers.iter().enumerate() {
            if count > 0 {
                state.users[t].social_mut().subscribers.reserve(count as usize);
            }
        }
        for (i, user) in wire.users.iter().enumerate() {
            let u = UserKey(i as u32);
            for s in wire.sessions_of(user) {
                let incarnation = if s.connected { state.take_incarnation() } else { 0 };
                let device = devices[s.device as usize];
                let login_at_ms = s.login_at_ms;
                let session = Session { login_at_ms, heartbeat_at_ms: login_at_ms, device, incarnation };
                state.user_mut(u).sessions.push(session);
                if let Some(o) = s.owner {
                    state.owners.replace(u, device, Some(wire.owners[o as usize].into()));
                }
            }
            let custom = (!user.custom.is_empty()).then(|| state.customs.share(user.custom.into()));
            let state_user = state.user_mut(u);
            state_user.version = user.version;
            if let Some(custom) = custom {
                state_user.social_mut().custom = custom;
            }
            state_user.set_last_online_end_ms(user.last_online_end_ms);
            let subscriptions = wire.subscriptions_of(user);
            if !subscriptions.is_empty() {
                let list = &mut state.user_mut(u).social_mut().subscriptions;
                list.reserve_exact(subscriptions.len());
                list.extend(subscriptions.iter().map(|&t| UserKey(t)));
                for &t in subscriptions {
                    state.user_mut(UserKey(t)).social_mut().subscribers.insert(u);
                }
            }
            let friends = wire.friends_of(user);
            if !friends.is_empty() {
                state.user_mut(u).social_mut().friends.extend(friends.iter().map(|&f| UserKey(f)));
            }
        }
        state
    }
}

/// Puts a logical state in its canonical order: users by id, each user's sessions by device
/// and friends by id (subscriptions keep their order, oldest first).
pub(crate) fn canonicalize(state: &mut LogicalState) {
    for user in &mut state.users {
        user.sessions.sort_by(|a, b| a.device.cmp(&b.device));
        user.friends.sort();
    }
    state.users.sort_by(|a, b| a.user.cmp(&b.user));
}
