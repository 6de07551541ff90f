//! `apply`: the only place the logged state changes (R8.1). Live execution and replay both
//! fold events through [`State::apply`], so they cannot drift.
//!
//! Every branch checks the event against the state before changing anything: an event that
//! does not fit (a disconnect of a session that does not exist, say) changes nothing and is
//! reported, which at replay means a corrupt log.

use super::journal::Undo;
use super::{no_custom, HeartbeatDue, Session, State};
use crate::event::{EventKindRef as EventKind, EventRef, Text};
use crate::ids::{DeviceKey, UserKey};

impl State {
    /// Applies one event. On `Err` the state is unchanged and the message says why the
    /// event does not fit. `u` is what [`State::user_key`] says of the event's user now
    /// (`None`: not interned yet): every caller has just looked it up, so it is not looked
    /// up twice.
    pub(crate) fn apply(&mut self, event: &EventRef<'_>, u: Option<UserKey>) -> Result<(), String> {
        debug_assert_eq!(u, self.user_key(event.kind.user()), "a stale key for the event's user");
        let at_ms = event.at_ms;
        match &event.kind {
            &EventKind::SessionOpened { user, device, owner } => {
                self.apply_session_opened((user, u), device, owner, at_ms)?
            }
            &EventKind::SessionDisconnected { user, device, .. } => {
                self.apply_session_disconnected((user, u), device, at_ms)?
            }
            &EventKind::SessionClosed { user, device, .. } => {
                self.apply_session_closed((user, u), device, at_ms)?
            }
            &EventKind::CustomStatusSet { user, custom, .. } => {
                self.apply_custom_status_set((user, u), custom)?
            }
            EventKind::Subscribed { user, targets } => self.apply_subscribed((*user, u), targets)?,
            EventKind::Unsubscribed { user, targets, .. } => self.apply_unsubscribed((*user, u), targets)?,
            &EventKind::FriendAdded { user, friend } => self.apply_friend_added((user, u), friend)?,
            &EventKind::FriendRemoved { user, friend } => self.apply_friend_removed((user, u), friend)?,
        }
        self.now_ms = self.now_ms.max(at_ms);
        Ok(())
    }

    /// R2.1: a new connected session, or a disconnected one reconnected, with its owner (R8.5).
    fn apply_session_opened(
        &mut self,
        (user, known_user): (Text<'_>, Option<UserKey>),
        device: Text<'_>,
        owner: Option<Text<'_>>,
        at_ms: u64,
    ) -> Result<(), String> {
        let known_device = self.device_key(device);
        // A connected session is only opened again through another owner (R8.5).
        if let (Some(u), Some(d)) = (known_user, known_device) {
            if self.user(u).session(d).is_some_and(Session::connected)
                && self.owners.get(u, d).map(|o| Text::from(o.as_str())) == owner
            {
                return Err(format!("{user}/{device} is already connected through the same owner"));
            }
        }
        let u = known_user.unwrap_or_else(|| self.add_user(user));
        let d = known_device.unwrap_or_else(|| self.intern_device(device));
        let incarnation = self.take_incarnation();
        self.backup_user(u);
        let opened = Session { login_at_ms: at_ms, heartbeat_at_ms: at_ms, device: d, incarnation };
        let state = self.user_mut(u);
        state.version += 1;
        match state.session_mut(d) {
            Some(s) => *s = opened,
            None => state.sessions.push(opened),
        }
        self.set_owner(u, d, owner);
        let due = HeartbeatDue { heartbeat_at_ms: at_ms, user: u, incarnation };
        self.deadlines.push_heartbeat(due);
        Ok(())
    }

    /// R2.2, R2.4: a connected session becomes disconnected.
    fn apply_session_disconnected(
        &mut self,
        (user, u): (Text<'_>, Option<UserKey>),
        device: Text<'_>,
        at_ms: u64,
    ) -> Result<(), String> {
        let (u, d) = self.existing_session((user, u), device)?;
        if !self.user(u).session(d).is_some_and(Session::connected) {
            return Err(format!("{user}/{device} is not connected"));
        }
        self.backup_user(u);
        let floor_ms = self.recovered_at_ms;
        let state = self.user_mut(u);
        let was_online = state.is_online();
        state.version += 1;
        if let Some(s) = state.session_mut(d) {
            s.incarnation = 0;
            // The recovery time counts as a heartbeat (R8.2); a session that leaves the
            // deadline queue keeps it.
            if let Some(floor_ms) = floor_ms {
                s.heartbeat_at_ms = s.heartbeat_at_ms.max(floor_ms);
            }
        }
        self.set_owner(u, d, None);
        self.after_session_change(u, was_online, at_ms);
        Ok(())
    }

    /// R2.2, R2.5: a session is removed.
    fn apply_session_closed(
        &mut self,
        (user, u): (Text<'_>, Option<UserKey>),
        device: Text<'_>,
        at_ms: u64,
    ) -> Result<(), String> {
        let (u, d) = self.existing_session((user, u), device)?;
        self.backup_user(u);
        let state = self.user_mut(u);
        let was_online = state.is_online();
        state.version += 1;
        state.sessions.retain(|s| s.device != d);
        self.set_owner(u, d, None);
        self.after_session_change(u, was_online, at_ms);
        Ok(())
    }

    /// R3.1: the custom status is set (or cleared with `""`), only while `ONLINE` (R3.3).
    fn apply_custom_status_set(
        &mut self,
        (user, u): (Text<'_>, Option<UserKey>),
        custom: Text<'_>,
    ) -> Result<(), String> {
        let u = u.ok_or_else(|| format!("unknown user {user}"))?;
        if !custom.is_empty() && !self.user(u).is_online() {
            return Err(format!("custom status for {user}, who is not ONLINE (R3.3)"));
        }
        self.backup_user(u);
        let custom = self.customs.share(custom);
        let state = self.user_mut(u);
        state.version += 1;
        state.social_mut().custom = custom;
        Ok(())
    }

    /// R4.2: targets move to (or join) the newest end of the list, in order; the reverse
    /// index follows.
    fn apply_subscribed(
        &mut self,
        (user, u): (Text<'_>, Option<UserKey>),
        targets: &[Text<'_>],
    ) -> Result<(), String> {
        check_targets(user, targets)?;
        let u = u.unwrap_or_else(|| self.add_user(user));
        self.backup_user(u);
        for &target in targets {
            let t = self.intern_user(target);
            let list = &mut self.user_mut(u).social_mut().subscriptions;
            if let Some(pos) = list.iter().position(|&x| x == t) {
                list.remove(pos);
            }
            list.push(t);
            if self.user_mut(t).social_mut().subscribers.insert(u) {
                self.record(Undo::SubscriberAdded { target: t, subscriber: u });
            }
        }
        Ok(())
    }

    /// R4.3, R4.4, R4.5: targets leave the list; the reverse index follows.
    fn apply_unsubscribed(
        &mut self,
        (user, u): (Text<'_>, Option<UserKey>),
        targets: &[Text<'_>],
    ) -> Result<(), String> {
        let u = u.ok_or_else(|| format!("unknown user {user}"))?;
        let mut keys = Vec::with_capacity(targets.len());
        for target in targets {
            match self.user_key(target) {
                Some(t) if self.user(u).subscriptions().contains(&t) && !keys.contains(&t) => keys.push(t),
                _ => return Err(format!("{user} is not subscribed to {target} (or twice in one event)")),
            }
        }
        self.backup_user(u);
        self.user_mut(u).social_mut().subscriptions.retain(|t| !keys.contains(t));
        for t in keys {
            self.user_mut(t).social_mut().subscribers.remove(&u);
            self.record(Undo::SubscriberRemoved { target: t, subscriber: u });
        }
        Ok(())
    }

    /// R5.4: two users become friends, both ways.
    fn apply_friend_added(
        &mut self,
        (user, u): (Text<'_>, Option<UserKey>),
        friend: Text<'_>,
    ) -> Result<(), String> {
        if user == friend {
            return Err(format!("{user} cannot befriend itself"));
        }
        if let (Some(u), Some(f)) = (u, self.user_key(friend)) {
            if self.user(u).friends().contains(&f) {
                return Err(format!("{user} and {friend} are already friends"));
            }
        }
        let u = u.unwrap_or_else(|| self.add_user(user));
        let f = self.intern_user(friend);
        self.user_mut(u).social_mut().friends.insert(f);
        self.user_mut(f).social_mut().friends.insert(u);
        self.record(Undo::FriendsAdded(u, f));
        Ok(())
    }

    /// R5.4: a friendship ends, both ways.
    fn apply_friend_removed(
        &mut self,
        (user, u): (Text<'_>, Option<UserKey>),
        friend: Text<'_>,
    ) -> Result<(), String> {
        let (u, f) = match (u, self.user_key(friend)) {
            (Some(u), Some(f)) if self.user(u).friends().contains(&f) => (u, f),
            _ => return Err(format!("{user} and {friend} are not friends")),
        };
        self.user_mut(u).social_mut().friends.remove(&f);
        self.user_mut(f).social_mut().friends.remove(&u);
        self.record(Undo::FriendsRemoved(u, f));
        Ok(())
    }

    /// Sets (or, with `None`, forgets) a session's owner, recording the undo (R8.5).
    fn set_owner(&mut self, user: UserKey, device: DeviceKey, owner: Option<Text<'_>>) {
        let previous = self.owners.replace(user, device, owner);
        if previous.is_some() || owner.is_some() {
            self.record(Undo::Owner { user, device, previous });
        }
    }

    fn existing_session(
        &self,
        (user, u): (Text<'_>, Option<UserKey>),
        device: Text<'_>,
    ) -> Result<(UserKey, DeviceKey), String> {
        match (u, self.device_key(device)) {
            (Some(u), Some(d)) if self.user(u).session(d).is_some() => Ok((u, d)),
            _ => Err(format!("{user}/{device} has no session")),
        }
    }

    /// R3.3 and R4.5: when a user stops being ONLINE its custom status is cleared in the same
    /// step, and the retention countdown for its subscription list starts.
    fn after_session_change(&mut self, u: UserKey, was_online: bool, at_ms: u64) {
        let state = &mut self.users[u.index()];
        if !was_online || state.is_online() {
            return;
        }
        state.set_last_online_end_ms(Some(at_ms));
        if !state.custom().is_empty() {
            state.social_mut().custom = no_custom();
        }
        if !state.subscriptions().is_empty() {
            self.deadlines.push_retention(state, u, at_ms);
        }
    }
}

/// A subscription event never names the subscriber itself (R4.1) nor a target twice (R4.2).
fn check_targets(user: Text<'_>, targets: &[Text<'_>]) -> Result<(), String> {
    for (i, target) in targets.iter().enumerate() {
        if *target == user {
            return Err(format!("{user} subscribes to itself"));
        }
        if targets[..i].contains(target) {
            return Err(format!("{user} subscribes to {target} twice in one event"));
        }
    }
    Ok(())
}
