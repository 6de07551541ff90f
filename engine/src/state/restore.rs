//! Between the live state and its canonical, logged form ([`LogicalState`]).

use super::{no_custom, Session, State};
use crate::ids::UserKey;
use crate::snapshot::{LogicalState, SessionRecord, Snapshot, UserRecord};

impl State {
    /// The state as the log defines it, canonically ordered.
    pub(crate) fn logical(&self) -> LogicalState {
        let mut users: Vec<UserRecord> = self
            .users
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.is_blank())
            .map(|(index, u)| {
                let mut sessions: Vec<SessionRecord> = u
                    .sessions
                    .iter()
                    .map(|s| SessionRecord {
                        device: self.device_name(s.device).clone(),
                        connected: s.connected(),
                        login_at_ms: s.login_at_ms,
                    })
                    .collect();
                sessions.sort_by(|a, b| a.device.cmp(&b.device));
                let mut friends: Vec<_> = u.friends().iter().map(|&f| self.user_name(f).clone()).collect();
                friends.sort();
                UserRecord {
                    user: self.user_name(UserKey(index as u32)).clone(),
                    sessions,
                    custom: u.social().map_or_else(no_custom, |s| s.custom.clone()),
                    last_online_end_ms: u.last_online_end_ms(),
                    subscriptions: u.subscriptions().iter().map(|&t| self.user_name(t).clone()).collect(),
                    friends,
                }
            })
            .collect();
        users.sort_by(|a, b| a.user.cmp(&b.user));
        LogicalState { users }
    }

    /// Rebuilds a state from a snapshot, checking that it is consistent (sorted, no
    /// duplicates, the invariants of R3.3, R4.1 and R5.4). Deadline queues are left paused;
    /// the caller rebuilds them.
    pub(crate) fn from_snapshot(snapshot: &Snapshot) -> Result<State, String> {
        let mut state = State { now_ms: snapshot.now_ms, last_seq: snapshot.last_seq, ..State::default() };
        state.deadlines.paused = true;
        let records = &snapshot.state.users;
        if records.windows(2).any(|w| w[0].user >= w[1].user) {
            return Err("users are not sorted and unique".into());
        }
        state.users.reserve_exact(records.len());
        state.user_ids.reserve(records.len());
        // Records are interned first and in order, so record i is user key i below.
        for record in records {
            let u = state.intern_user(&record.user);
            if record.sessions.windows(2).any(|w| w[0].device >= w[1].device) {
                return Err(format!("sessions of {} are not sorted and unique", record.user));
            }
            for s in &record.sessions {
                let device = state.intern_device(&s.device);
                let incarnation = if s.connected { state.take_incarnation() } else { 0 };
                let login_at_ms = s.login_at_ms;
                let session = Session { login_at_ms, heartbeat_at_ms: login_at_ms, device, incarnation };
                state.user_mut(u).sessions.push(session);
            }
            let user = state.user_mut(u);
            if !record.custom.is_empty() {
                if !user.is_online() {
                    return Err(format!("{} has a custom status but is not ONLINE (R3.3)", record.user));
                }
                user.social_mut().custom = record.custom.clone();
            }
            user.set_last_online_end_ms(record.last_online_end_ms);
        }
        for (index, record) in records.iter().enumerate() {
            let u = UserKey(index as u32);
            for target in &record.subscriptions {
                let t = state.intern_user(target);
                if t == u || state.user(u).subscriptions().contains(&t) {
                    return Err(format!("subscriptions of {} repeat or include itself", record.user));
                }
                state.user_mut(u).social_mut().subscriptions.push(t);
                state.user_mut(t).social_mut().subscribers.insert(u);
            }
            if record.friends.windows(2).any(|w| w[0] >= w[1]) {
                return Err(format!("friends of {} are not sorted and unique", record.user));
            }
            for friend in &record.friends {
                let f = state.intern_user(friend);
                if f == u {
                    return Err(format!("{} is its own friend", record.user));
                }
                state.user_mut(u).social_mut().friends.insert(f);
            }
        }
        for index in 0..records.len() {
            let u = UserKey(index as u32);
            for &f in state.user(u).friends() {
                if !state.user(f).friends().contains(&u) {
                    return Err(format!("friendship of {} is not mutual", state.user_name(u)));
                }
            }
        }
        Ok(state)
    }
}
