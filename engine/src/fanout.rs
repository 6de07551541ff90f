//! Who hears about a status change (R5.2, R5.3).

use crate::ids::UserKey;
use crate::notice::Recipient;
use crate::state::State;

/// Reusable scratch space: one mark per user, with a value, so that a user met several times
/// in one round (interested for several reasons, touched by several events) is found again
/// without allocating a set each round.
#[derive(Debug, Default)]
pub(crate) struct Marks<V: Copy + Default = ()> {
    marks: Vec<(u32, V)>,
    epoch: u32,
}

impl<V: Copy + Default> Marks<V> {
    /// Starts a new round over `users` users; every user is unmarked after it.
    pub(crate) fn start(&mut self, users: usize) {
        if self.marks.len() < users {
            self.marks.resize(users, (0, V::default()));
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| m.0 = 0);
            self.epoch = 1;
        }
    }

    /// Marks `user` with `value`, unless it is marked already in this round: then it keeps
    /// its value, which is returned.
    pub(crate) fn mark_with(&mut self, user: UserKey, value: V) -> Option<V> {
        if user.index() >= self.marks.len() {
            self.marks.resize(user.index() + 1, (0, V::default()));
        }
        let slot = &mut self.marks[user.index()];
        if slot.0 == self.epoch {
            return Some(slot.1);
        }
        *slot = (self.epoch, value);
        None
    }

    /// Marks `user`; returns false if it was marked already in this round.
    pub(crate) fn mark(&mut self, user: UserKey) -> bool {
        self.mark_with(user, V::default()).is_none()
    }
}

/// Pushes every connected device of every user interested in `about` onto `out`: `about`
/// itself, its subscribers, and its friends when `friends` is on, each user once (R5.2);
/// disconnected sessions hear nothing (R5.3).
pub(crate) fn recipients(
    state: &State,
    about: UserKey,
    friends: bool,
    marks: &mut Marks,
    out: &mut Vec<Recipient>,
) {
    let push_devices = |user: UserKey, out: &mut Vec<Recipient>| {
        for s in &state.user(user).sessions {
            if s.connected() {
                out.push(Recipient { user, device: s.device });
            }
        }
    };
    let target = state.user(about);
    // About one connected device each: one allocation, not three or four as it grows (and
    // none for a user nobody watches, such as most users whose sessions a tick expires).
    let others = target.subscribers().len() + if friends { target.friends().len() } else { 0 };
    if others > 0 {
        out.reserve(1 + others);
    }
    push_devices(about, out);
    if !friends || target.friends().is_empty() {
        // The subscriber set never holds `about` itself (R4.1), so no marks are needed.
        for &subscriber in target.subscribers() {
            push_devices(subscriber, out);
        }
        return;
    }
    marks.start(state.users.len());
    marks.mark(about);
    for &user in target.subscribers().iter().chain(target.friends().iter()) {
        if marks.mark(user) {
            push_devices(user, out);
        }
    }
}
