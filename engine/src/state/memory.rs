//! An estimate of the heap the state holds, from the capacities of its containers, for the
//! memory figures of `presence simulate` (docs/DESIGN.md, performance bars: bytes per session and per subscription).
//! It counts what the containers reserve, not allocator overhead.

use std::mem::size_of;

use super::deadlines::HeartbeatDue;
use super::{Session, Social, State, UserState};
use crate::ids::UserKey;
use crate::status::UserStatus;

/// Heap bytes of the state, split by what they serve.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapBytes {
    /// Users, sessions, ids, custom statuses and the heartbeat queue.
    pub users_and_sessions: usize,
    /// Subscription lists and their reverse index, and the retention queue.
    pub subscriptions: usize,
    /// Friend sets.
    pub friends: usize,
    /// Rate-limit windows.
    pub rate_limits: usize,
}

/// Bytes a hashbrown table of `capacity` entries of `entry` bytes reserves (one control byte
/// per bucket, buckets a power of two at most 7/8 full).
pub(crate) fn table_bytes(capacity: usize, entry: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * (entry + 1)
}

fn arc_str_bytes(s: &str) -> usize {
    2 * size_of::<usize>() + s.len()
}

impl State {
    pub(crate) fn heap_bytes(&self) -> HeapBytes {
        let mut bytes = HeapBytes::default();
        let ids = self.user_ids.reserved_bytes()
            + self.user_ids.names().iter().map(|n| arc_str_bytes(n)).sum::<usize>()
            + self.device_ids.reserved_bytes()
            + self.device_ids.names().iter().map(|n| arc_str_bytes(n)).sum::<usize>();
        bytes.users_and_sessions = ids
            + self.users.capacity() * size_of::<UserState>()
            + self.deadlines.heartbeat_capacity() * size_of::<HeartbeatDue>();
        bytes.subscriptions = self.deadlines.retention_capacity() * size_of::<(u64, UserKey)>();
        for user in &self.users {
            if user.sessions.spilled() {
                bytes.users_and_sessions += user.sessions.capacity() * size_of::<Session>();
            }
            let Some(social) = user.social() else { continue };
            // The out-of-line part is charged to what it holds: subscriptions if any, else
            // the custom status or friends.
            let boxed = size_of::<Social>();
            let lists = social.subscriptions.capacity() * size_of::<UserKey>()
                + table_bytes(social.subscribers.capacity(), size_of::<UserKey>());
            let friends = table_bytes(social.friends.capacity(), size_of::<UserKey>());
            let custom = if social.custom.is_empty() { 0 } else { arc_str_bytes(&social.custom) };
            bytes.subscriptions += lists;
            bytes.friends += friends;
            bytes.users_and_sessions += custom;
            if lists > 0 {
                bytes.subscriptions += boxed;
            } else if friends > 0 {
                bytes.friends += boxed;
            } else {
                bytes.users_and_sessions += boxed;
            }
        }
        // The watch table of a shard (R9.5) is there for subscriptions and friendships.
        bytes.subscriptions += table_bytes(self.watch.capacity(), size_of::<(UserKey, (UserStatus, u64))>())
            + self
                .watch
                .values()
                .filter(|(s, _)| !s.custom.is_empty())
                .map(|(s, _)| arc_str_bytes(&s.custom))
                .sum::<usize>();
        bytes.rate_limits = self.rates.heap_bytes();
        bytes.users_and_sessions += self.owners.heap_bytes();
        bytes
    }
}
