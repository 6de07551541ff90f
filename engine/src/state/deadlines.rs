//! Deadlines for heartbeat timeouts (R2.4) and subscription retention (R4.5).
//!
//! Both are min-heaps keyed by the time the countdown started, so a tick with nothing due is
//! one peek, and a tick costs O(expired log n). A heartbeat only updates its session's `h`;
//! the queued entry is corrected lazily when it comes due (re-queued at the session's real
//! `h`), so heartbeats stay O(1) and each session is re-queued at most once per timeout
//! period. Entries whose session has gone or reconnected since are recognised by their
//! incarnation and dropped.
//!
//! An entry names its session by user and incarnation, not by device: incarnations come
//! from one counter for the whole state, so they tell a user's sessions apart, and an entry
//! is 16 bytes instead of 24 (one per connected session: docs/DESIGN.md, the memory bar).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use smallvec::SmallVec;

use super::{State, UserState};
use crate::codec;
use crate::event::{DisconnectReason, EventKind, UnsubscribeReason};
use crate::ids::{DeviceKey, UserKey};
use crate::limits::{TICK_EVENTS_MAX, TICK_TARGETS_MAX};

/// Reorders, among the positions each user's events hold in `events`, that user's events by
/// device. `several` lists (user, position) in position order, for the users that may have
/// more than one: a user with one session has one timeout a tick, and nothing moves for it.
fn order_by_device(events: &mut [EventKind], several: &mut [(UserKey, usize)]) {
    several.sort_unstable();
    for group in several.chunk_by(|a, b| a.0 == b.0).filter(|g| g.len() > 1) {
        let mut own: Vec<EventKind> = group.iter().map(|&(_, at)| events[at].clone()).collect();
        own.sort_by(|a, b| a.device().cmp(&b.device()));
        for (&(_, at), event) in group.iter().zip(own) {
            events[at] = event;
        }
    }
}

/// A queued heartbeat countdown: the session of `user` whose incarnation is `incarnation`,
/// if it is still there and connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HeartbeatDue {
    pub heartbeat_at_ms: u64,
    pub user: UserKey,
    pub incarnation: u32,
}

const _: () = assert!(std::mem::size_of::<HeartbeatDue>() == 16);

#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    heartbeats: BinaryHeap<Reverse<HeartbeatDue>>,
    /// (when the user stopped being ONLINE, user).
    retention: BinaryHeap<Reverse<(u64, UserKey)>>,
    /// Replay leaves the queues alone and rebuilds them once at the end.
    pub paused: bool,
}

/// What a tick found due: the events it logs, and what it took off the queues for them, so
/// that a failed append can put it back ([`State::put_back_due`]).
#[derive(Debug, Default)]
pub(crate) struct Due {
    pub events: Vec<EventKind>,
    pub taken: Taken,
}

/// The queue entries behind a tick's events.
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

    /// Rebuilds both queues from the state (after replay or a rollback), each with room for
    /// exactly what it holds: a rebuilt queue of a million sessions does not keep the slack of
    /// a million pushes.
    pub(crate) fn rebuild(&mut self, users: &mut [UserState]) {
        let connected = users.iter().map(|u| u.sessions.iter().filter(|s| s.connected()).count()).sum();
        let mut heartbeats = Vec::with_capacity(connected);
        for (index, user) in users.iter().enumerate() {
            let key = UserKey(index as u32);
            for s in user.sessions.iter().filter(|s| s.connected()) {
                heartbeats.push(Reverse(HeartbeatDue {
                    heartbeat_at_ms: s.heartbeat_at_ms,
                    user: key,
                    incarnation: s.incarnation,
                }));
            }
        }
        self.heartbeats = BinaryHeap::from(heartbeats);
        let mut retention = Vec::new();
        for (index, user) in users.iter_mut().enumerate() {
            user.set_retention_queued(false);
            if let (false, false, Some(since)) =
                (user.is_online(), user.subscriptions().is_empty(), user.last_online_end_ms())
            {
                user.set_retention_queued(true);
                retention.push(Reverse((since, UserKey(index as u32))));
            }
        }
        retention.shrink_to_fit();
        self.retention = BinaryHeap::from(retention);
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
    /// [`TICK_EVENTS_MAX`] events naming at most [`TICK_TARGETS_MAX`] list entries and
    /// encoding to at most `bytes_budget` bytes (the rest wait for the next tick). Mutates
    /// only the queues.
    pub(crate) fn take_due(
        &mut self,
        at_ms: u64,
        heartbeat_timeout_ms: u64,
        retention_ms: u64,
        bytes_budget: usize,
    ) -> Due {
        let floor_ms = self.heartbeat_floor_ms(at_ms);
        let mut events = Vec::new();
        let mut taken = Taken::default();
        let mut bytes_left = bytes_budget;
        // The entries of one user due at one time come off the queue together, and its live
        // sessions among them are handled in device order: where a full tick stops must not
        // depend on the order the sessions connected in.
        let mut same_time: SmallVec<[(DeviceKey, HeartbeatDue, u64); 2]> = SmallVec::new();
        // (user, position in `events`) of the timeouts of users with more than one session.
        let mut several: Vec<(UserKey, usize)> = Vec::new();
        'queue: while let Some(&Reverse(first)) = self.deadlines.heartbeats.peek() {
            if first.heartbeat_at_ms.saturating_add(heartbeat_timeout_ms) > at_ms
                || events.len() >= TICK_EVENTS_MAX
            {
                break;
            }
            same_time.clear();
            while let Some(&Reverse(due)) = self.deadlines.heartbeats.peek() {
                if (due.heartbeat_at_ms, due.user) != (first.heartbeat_at_ms, first.user) {
                    break;
                }
                self.deadlines.heartbeats.pop();
                debug_assert!(due.incarnation != 0, "a queued deadline of a disconnected session");
                // None: stale (the session is gone, disconnected, or reconnected since).
                let user = &self.users[due.user.index()];
                if let Some(s) = user.sessions.iter().find(|s| s.incarnation == due.incarnation) {
                    same_time.push((s.device, due, s.heartbeat_at_ms));
                }
            }
            same_time.sort_unstable();
            for (i, &(device, due, session_heartbeat_at_ms)) in same_time.iter().enumerate() {
                let heartbeat_at_ms = session_heartbeat_at_ms.max(floor_ms);
                let event = if events.len() >= TICK_EVENTS_MAX {
                    None
                } else if heartbeat_at_ms.saturating_add(heartbeat_timeout_ms) > at_ms {
                    // A heartbeat came since the entry was queued: queue it at the real time.
                    self.deadlines.heartbeats.push(Reverse(HeartbeatDue { heartbeat_at_ms, ..due }));
                    continue;
                } else {
                    Some(EventKind::SessionDisconnected {
                        user: self.user_name(due.user).clone(),
                        device: self.device_name(device).clone(),
                        reason: DisconnectReason::HeartbeatTimeout,
                    })
                };
                let bytes = event.as_ref().map_or(usize::MAX, codec::event_bytes_bound);
                let Some(event) = event.filter(|_| bytes <= bytes_left) else {
                    // The tick is full: what is left waits for the next one.
                    for &(_, rest, _) in &same_time[i..] {
                        self.deadlines.heartbeats.push(Reverse(rest));
                    }
                    break 'queue;
                };
                bytes_left -= bytes;
                if self.users[due.user.index()].sessions.len() > 1 {
                    several.push((due.user, events.len()));
                }
                events.push(event);
                taken.heartbeats.push(due);
            }
        }
        // Deadline order chose which timeouts this tick logs; a user's own are logged by
        // device, so that the last of its sessions to time out in one tick is its greatest
        // device (R5.7), whatever the order the queue held them in.
        order_by_device(&mut events, &mut several);
        let mut targets_named = 0;
        while let Some(&Reverse((since, key))) = self.deadlines.retention.peek() {
            if since.saturating_add(retention_ms) > at_ms || events.len() >= TICK_EVENTS_MAX {
                break;
            }
            let user = &self.users[key.index()];
            let real_since = match user.last_online_end_ms() {
                Some(since) if !user.is_online() && !user.subscriptions().is_empty() => since,
                // Back ONLINE, or nothing left to expire: the countdown is void.
                _ => {
                    self.deadlines.retention.pop();
                    self.users[key.index()].set_retention_queued(false);
                    continue;
                }
            };
            if real_since.saturating_add(retention_ms) > at_ms {
                // The user went offline again later: queue it at the real time.
                self.deadlines.retention.pop();
                self.deadlines.retention.push(Reverse((real_since, key)));
                continue;
            }
            // The oldest targets that fit what is left of the batch.
            let name = self.user_ids.name(key.0).clone();
            let mut bytes = codec::event_bytes_bound(&EventKind::Unsubscribed {
                user: name.clone(),
                targets: Vec::new(),
                reason: UnsubscribeReason::Expired,
            });
            let mut targets = Vec::new();
            for &t in user.subscriptions() {
                let target = self.user_ids.name(t.0);
                bytes += codec::id_bytes_bound(target);
                if bytes > bytes_left || targets_named + targets.len() >= TICK_TARGETS_MAX {
                    break;
                }
                targets.push(target.clone());
            }
            let whole = targets.len() == user.subscriptions().len();
            if !whole && !events.is_empty() {
                // It waits for a tick of its own.
                break;
            }
            if targets.is_empty() {
                break;
            }
            bytes_left -= bytes.min(bytes_left);
            targets_named += targets.len();
            events.push(EventKind::Unsubscribed { user: name, targets, reason: UnsubscribeReason::Expired });
            if !whole {
                // A list too long for one batch of this store: as much of it as fits,
                // oldest first, now; the user stays queued for the rest.
                break;
            }
            self.deadlines.retention.pop();
            self.users[key.index()].set_retention_queued(false);
            taken.retention.push((since, key));
        }
        Due { events, taken }
    }

    /// Puts back what [`State::take_due`] took, after the store refused the tick's events.
    pub(crate) fn put_back_due(&mut self, taken: Taken) {
        if self.recovered_at_ms.is_none() {
            // The queue was corrected with this tick's time as the recovery time (R8.2),
            // which the failure leaves unfixed: queue every deadline at its own time again.
            self.deadlines.rebuild(&mut self.users);
            return;
        }
        for due in taken.heartbeats {
            self.deadlines.heartbeats.push(Reverse(due));
        }
        for (since, key) in taken.retention {
            self.users[key.index()].set_retention_queued(true);
            self.deadlines.retention.push(Reverse((since, key)));
        }
    }
}
