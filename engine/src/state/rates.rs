//! The rate limiter of R6.3: per user and per API, at most `rate_limit_calls` accepted calls
//! in any window of `rate_limit_window_ms`. Not logged (R8.2).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use crate::ids::UserKey;

/// Which rate-limited API a call is (R6.3): each has its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Api {
    GetStatus,
    Subscribe,
    Unsubscribe,
}

/// The times of the accepted calls, per user and API, newest last; only the newest
/// `rate_limit_calls` are kept, since older ones can never be in a window that holds that
/// many newer ones.
#[derive(Debug, Default)]
pub(crate) struct RateLimits {
    accepted: FxHashMap<(UserKey, Api), VecDeque<u64>>,
}

impl RateLimits {
    /// Whether `user` may make another call of `api` at `at_ms`: fewer than `calls`
    /// accepted in `(at_ms - window_ms, at_ms]`. O(1): the window holds `calls` accepted
    /// calls exactly when it holds the oldest one kept.
    pub(crate) fn allows(&self, user: UserKey, api: Api, at_ms: u64, calls: u32, window_ms: u64) -> bool {
        let Some(accepted) = self.accepted.get(&(user, api)) else { return true };
        accepted.len() < calls as usize
            || accepted.front().is_none_or(|&t| t.saturating_add(window_ms) <= at_ms)
    }

    /// Records an accepted call at `at_ms`; returns the time it pushed out of the kept
    /// window, for [`RateLimits::uncount`].
    pub(crate) fn count(&mut self, user: UserKey, api: Api, at_ms: u64, calls: u32) -> Option<u64> {
        let accepted = self.accepted.entry((user, api)).or_default();
        accepted.push_back(at_ms);
        let mut dropped = None;
        while accepted.len() > calls as usize {
            dropped = accepted.pop_front();
        }
        dropped
    }

    /// Takes back the newest accepted call (a rolled-back group), restoring what it pushed
    /// out.
    pub(crate) fn uncount(&mut self, user: UserKey, api: Api, dropped: Option<u64>) {
        if let Some(accepted) = self.accepted.get_mut(&(user, api)) {
            accepted.pop_back();
            if let Some(at_ms) = dropped {
                accepted.push_front(at_ms);
            }
        }
    }

    /// Bytes reserved by the windows.
    pub(crate) fn heap_bytes(&self) -> usize {
        super::memory::table_bytes(
            self.accepted.capacity(),
            std::mem::size_of::<((UserKey, Api), VecDeque<u64>)>(),
        ) + self.accepted.values().map(|w| w.capacity() * std::mem::size_of::<u64>()).sum::<usize>()
    }
}
