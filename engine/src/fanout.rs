//! Who hears about a status change (R5.2, R5.3).

use crate::ids::UserKey;
use crate::notice::Recipient;
use crate::state::State;

/// Reusable scratch space for fan-out: one mark per user, so that a user interested for
/// several reasons is listed once without allocating a set per notice.
#[derive(Debug, Default)]
pub(crate) struct Marks {
    marks: Vec<u32>,
    epoch: u32,
}

impl Marks {
    /// Starts a new round over `users` users; every user is unmarked after it.
    pub(crate) fn start(&mut self, users: usize) {
        if self.marks.len() < users {
            self.marks.resize(users, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// Marks `user`; returns false if it was marked already in this round.
    pub(crate) fn mark(&mut self, user: UserKey) -> bool {
        if user.index() >= self.marks.len() {
            self.marks.resize(user.index() + 1, 0);
        }
        let slot = &mut self.marks[user.index()];
        let fresh = *slot != self.epoch;
        *slot = self.epoch;
        fresh
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
