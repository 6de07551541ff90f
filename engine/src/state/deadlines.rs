//! Deadlines for heartbeat timeouts (R2.4) and subscription retention (R4.5).
//!
//! Both are min-heaps keyed by the time the countdown started, so a tick with nothing due is
//! one peek, and a tick costs O(expired log n). A heartbeat only updates its session's `h`;
//! the queued entry is corrected lazily when it comes due (re-queued at the session's real
//! `h`), so heartbeats stay O(1) and each session is re-queued at most once per timeout
//! period. Entries whose session has gone or reconnected since are recognised by their
//! incarnation and dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{State, UserState};
use crate::event::{DisconnectReason, EventKind, UnsubscribeReason};
use crate::ids::{DeviceKey, UserKey};
use crate::limits::{TICK_EVENTS_MAX, TICK_TARGETS_MAX};

/// A queued heartbeat countdown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HeartbeatDue {
    pub heartbeat_at_ms: u64,
    pub user: UserKey,
    pub device: DeviceKey,
    pub incarnation: u32,
}

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heartbeats: BinaryHeap<Reverse<HeartbeatDue>>,
    /// (when the user stopped being ONLINE, user).
    retention: BinaryHeap<Reverse<(u64, UserKey)>>,
    /// Replay leaves the queues alone and rebuilds them once at the end.
    pub paused: bool,
}

/// What a tick took off the queues, so that a failed append can put it back.
#[derive(Debug, Default)]
pub(crate) struct Taken {
    heartbeats: Vec<HeartbeatDue>,
    retention: Vec<(u64, UserKey)>,
}

impl Deadlines {
    pub(crate) fn push_heartbeat(&mut self, due: HeartbeatDue) {
        if !self.paused {
            self.heartbeats.push(Reverse(due));
        }
    }

    /// Queues a retention countdown for `user`, unless one is queued already.
    pub(crate) fn push_retention(&mut self, user_state: &mut UserState, user: UserKey, since_ms: u64) {
        if !self.paused && !user_state.retention_queued() {
            user_state.set_retention_queued(true);
            self.retention.push(Reverse((since_ms, user)));
        }
    }

    /// Rebuilds both queues from the state (after replay or a rollback).
    pub(crate) fn rebuild(&mut self, users: &mut [UserState]) {
        self.heartbeats.clear();
        self.retention.clear();
        for (index, user) in users.iter().enumerate() {
            let key = UserKey(index as u32);
            for s in user.sessions.iter().filter(|s| s.connected()) {
                self.heartbeats.push(Reverse(HeartbeatDue {
                    heartbeat_at_ms: s.heartbeat_at_ms,
                    user: key,
                    device: s.device,
                    incarnation: s.incarnation,
                }));
            }
        }
        for (index, user) in users.iter_mut().enumerate() {
            user.set_retention_queued(false);
            if let (false, false, Some(since)) =
                (user.is_online(), user.subscriptions().is_empty(), user.last_online_end_ms())
            {
                user.set_retention_queued(true);
                self.retention.push(Reverse((since, UserKey(index as u32))));
            }
        }
    }

    /// Reserved entries of the heartbeat queue.
    pub(crate) fn heartbeat_capacity(&self) -> usize {
        self.heartbeats.capacity()
    }

    /// Reserved entries of the retention queue.
    pub(crate) fn retention_capacity(&self) -> usize {
        self.retention.capacity()
    }

    /// Number of queued heartbeat entries (live and stale), for memory reports.
    pub(crate) fn heartbeat_len(&self) -> usize {
        self.heartbeats.len()
    }
}

impl State {
    /// Takes the due deadlines off the queues and returns the events a tick at `at_ms` logs:
    /// heartbeat timeouts (R2.4), then retention expiries (R4.5), at most
    /// [`TICK_EVENTS_MAX`] events naming at most [`TICK_TARGETS_MAX`] list entries (the rest
    /// wait for the next tick). Mutates only the queues.
    pub(crate) fn take_due(
        &mut self,
        at_ms: u64,
        heartbeat_timeout_ms: u64,
        retention_ms: u64,
    ) -> (Vec<EventKind>, Taken) {
        let floor_ms = self.heartbeat_floor_ms(at_ms);
        let mut events = Vec::new();
        let mut taken = Taken::default();
        while let Some(&Reverse(due)) = self.deadlines.heartbeats.peek() {
            if due.heartbeat_at_ms.saturating_add(heartbeat_timeout_ms) > at_ms
                || events.len() >= TICK_EVENTS_MAX
            {
                break;
            }
            self.deadlines.heartbeats.pop();
            let user = &self.users[due.user.index()];
            let Some(session) = user.session(due.device) else { continue };
            if session.incarnation != due.incarnation {
                // Stale: the session disconnected (incarnation 0) or reconnected since.
                continue;
            }
            let heartbeat_at_ms = session.heartbeat_at_ms.max(floor_ms);
            if heartbeat_at_ms.saturating_add(heartbeat_timeout_ms) <= at_ms {
                events.push(EventKind::SessionDisconnected {
                    user: self.user_name(due.user).clone(),
                    device: self.device_name(due.device).clone(),
                    reason: DisconnectReason::HeartbeatTimeout,
                });
                taken.heartbeats.push(due);
            } else {
                self.deadlines.heartbeats.push(Reverse(HeartbeatDue { heartbeat_at_ms, ..due }));
            }
        }
        let mut targets_named = 0;
        while let Some(&Reverse((since, key))) = self.deadlines.retention.peek() {
            if since.saturating_add(retention_ms) > at_ms
                || events.len() >= TICK_EVENTS_MAX
                || targets_named >= TICK_TARGETS_MAX
            {
                break;
            }
            self.deadlines.retention.pop();
            let user = &mut self.users[key.index()];
            user.set_retention_queued(false);
            if user.is_online() || user.subscriptions().is_empty() {
                continue;
            }
            let Some(real_since) = user.last_online_end_ms() else { continue };
            if real_since.saturating_add(retention_ms) <= at_ms {
                let targets: Vec<_> =
                    user.subscriptions().iter().map(|&t| self.user_ids.name(t.0).clone()).collect();
                targets_named += targets.len();
                events.push(EventKind::Unsubscribed {
                    user: self.user_ids.name(key.0).clone(),
                    targets,
                    reason: UnsubscribeReason::Expired,
                });
                taken.retention.push((since, key));
            } else {
                user.set_retention_queued(true);
                self.deadlines.retention.push(Reverse((real_since, key)));
            }
        }
        (events, taken)
    }

    /// Puts back what [`State::take_due`] took, after the store refused the tick's events.
    pub(crate) fn restore_taken(&mut self, taken: Taken) {
        for due in taken.heartbeats {
            self.deadlines.heartbeats.push(Reverse(due));
        }
        for (since, key) in taken.retention {
            self.users[key.index()].set_retention_queued(true);
            self.deadlines.retention.push(Reverse((since, key)));
        }
    }
}
