//! The undo journal of a group commit.
//!
//! A group decides and applies many commands before their events reach the store in one
//! append (docs/DESIGN.md: group commit). If that append fails, the state must be exactly as it
//! was before the group (R7.1): while a group is open, every change records how to undo it,
//! and a rollback plays the journal backwards. Outside a group nothing is recorded.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{Api, Session, State};
use crate::ids::{DeviceKey, UserKey};

#[derive(Debug)]
pub(crate) enum Undo {
    /// A user's own fields before an event changed them.
    User {
        user: UserKey,
        sessions: SmallVec<[Session; 1]>,
        custom: Option<Arc<str>>,
        last_online_end_ms: Option<u64>,
        subscriptions: Vec<UserKey>,
        version: u64,
    },
    /// A session's owner before an event changed it (R8.5).
    Owner {
        user: UserKey,
        device: DeviceKey,
        previous: Option<u32>,
    },
    SubscriberAdded {
        target: UserKey,
        subscriber: UserKey,
    },
    SubscriberRemoved {
        target: UserKey,
        subscriber: UserKey,
    },
    FriendsAdded(UserKey, UserKey),
    FriendsRemoved(UserKey, UserKey),
    Clock {
        now_ms: u64,
        last_seq: u64,
    },
    Heartbeat {
        user: UserKey,
        device: DeviceKey,
        heartbeat_at_ms: u64,
    },
    /// The recovery time was fixed by a call of the group (R8.2).
    RecoveryTime,
    RateLimitedCall {
        user: UserKey,
        api: Api,
        dropped: Option<u64>,
    },
}

impl State {
    /// Starts recording. Nested groups are not supported; a second call keeps the journal.
    pub(crate) fn begin_journal(&mut self) {
        if self.journal.is_none() {
            self.journal = Some(vec![Undo::Clock { now_ms: self.now_ms, last_seq: self.last_seq }]);
        }
    }

    /// Whether a group is open (its changes are being recorded).
    #[inline]
    pub(crate) fn journal_open(&self) -> bool {
        self.journal.is_some()
    }

    /// Stops recording and forgets the journal: the group's changes stay.
    pub(crate) fn end_journal(&mut self) {
        self.journal = None;
    }

    #[inline]
    pub(crate) fn record(&mut self, undo: Undo) {
        if let Some(journal) = &mut self.journal {
            journal.push(undo);
        }
    }

    /// Records a user's own fields before an event changes them.
    #[inline]
    pub(crate) fn backup_user(&mut self, user: UserKey) {
        if self.journal.is_some() {
            self.record_user(user);
        }
    }

    fn record_user(&mut self, user: UserKey) {
        let u = &self.users[user.index()];
        let undo = Undo::User {
            user,
            sessions: u.sessions.clone(),
            custom: u.social().map(|s| s.custom.clone()),
            last_online_end_ms: u.last_online_end_ms(),
            subscriptions: u.subscriptions().to_vec(),
            version: u.version,
        };
        self.record(undo);
    }

    /// Undoes everything recorded since [`State::begin_journal`], newest first, and stops
    /// recording.
    pub(crate) fn rollback(&mut self) {
        let Some(journal) = self.journal.take() else { return };
        for undo in journal.into_iter().rev() {
            match undo {
                Undo::User { user, sessions, custom, last_online_end_ms, subscriptions, version } => {
                    let u = &mut self.users[user.index()];
                    u.sessions = sessions;
                    u.version = version;
                    u.set_last_online_end_ms(last_online_end_ms);
                    if custom.is_some() || !subscriptions.is_empty() || u.social().is_some() {
                        let social = u.social_mut();
                        social.custom = custom.unwrap_or_else(super::no_custom);
                        social.subscriptions = subscriptions;
                    }
                }
                Undo::SubscriberAdded { target, subscriber } => {
                    self.users[target.index()].social_mut().subscribers.remove(&subscriber);
                }
                Undo::SubscriberRemoved { target, subscriber } => {
                    self.users[target.index()].social_mut().subscribers.insert(subscriber);
                }
                Undo::FriendsAdded(a, b) => {
                    self.users[a.index()].social_mut().friends.remove(&b);
                    self.users[b.index()].social_mut().friends.remove(&a);
                }
                Undo::FriendsRemoved(a, b) => {
                    self.users[a.index()].social_mut().friends.insert(b);
                    self.users[b.index()].social_mut().friends.insert(a);
                }
                Undo::Clock { now_ms, last_seq } => {
                    self.now_ms = now_ms;
                    self.last_seq = last_seq;
                }
                Undo::Heartbeat { user, device, heartbeat_at_ms } => {
                    if let Some(s) = self.users[user.index()].session_mut(device) {
                        s.heartbeat_at_ms = heartbeat_at_ms;
                    }
                }
                Undo::RateLimitedCall { user, api, dropped } => self.rates.uncount(user, api, dropped),
                Undo::RecoveryTime => self.recovered_at_ms = None,
                Undo::Owner { user, device, previous } => self.owners.restore(user, device, previous),
            }
        }
        // Sessions restored by the rollback may have lost their queued deadline to a newer
        // incarnation, or to a tick of the group; requeue everything once so none is lost.
        self.deadlines.rebuild(&mut self.users);
    }
}
