//! The connection owners of sessions (R8.5): an opaque tag a host gives at login, usually the
//! gateway node holding the device's socket, so that all the sessions of a node that is gone
//! can be disconnected at once.
//!
//! Only connected sessions have an owner: a disconnect forgets it, a reconnect gives a new one.
//! The tags are interned; most sessions have none, so the map holds only those that do.

use rustc_hash::FxHashMap;

use super::Interner;
use crate::event::Text;
use crate::ids::{DeviceKey, OwnerId, UserKey};

/// The owner of each connected session that has one.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    names: Interner<OwnerId>,
    by_session: FxHashMap<(UserKey, DeviceKey), u32>,
}

impl Owners {
    /// Sets the owner of a session (none: forgets it); returns the one it replaced, for
    /// [`Owners::restore`].
    pub(crate) fn replace(
        &mut self,
        user: UserKey,
        device: DeviceKey,
        owner: Option<Text<'_>>,
    ) -> Option<u32> {
        match owner {
            Some(owner) => {
                let key = match self.names.get(owner.as_bytes()) {
                    Some(key) => key,
                    None => self.names.insert_new(owner.as_str()),
                };
                self.by_session.insert((user, device), key)
            }
            None => self.by_session.remove(&(user, device)),
        }
    }

    /// Puts back what [`Owners::replace`] returned (a rolled-back group).
    pub(crate) fn restore(&mut self, user: UserKey, device: DeviceKey, previous: Option<u32>) {
        match previous {
            Some(key) => self.by_session.insert((user, device), key),
            None => self.by_session.remove(&(user, device)),
        };
    }

    /// The owner of a session.
    pub(crate) fn get(&self, user: UserKey, device: DeviceKey) -> Option<&OwnerId> {
        self.by_session.get(&(user, device)).map(|&key| self.names.name(key))
    }

    /// The sessions of `owner`, or of every owner, in no particular order.
    pub(crate) fn sessions_of<'a>(&'a self, owner: &str) -> impl Iterator<Item = (UserKey, DeviceKey)> + 'a {
        let key = self.names.get(owner.as_bytes());
        self.by_session.iter().filter(move |(_, k)| Some(**k) == key).map(|(&session, _)| session)
    }

    /// The owners of at least one session, each once, sorted.
    pub(crate) fn names_in_use(&self) -> Vec<OwnerId> {
        let mut keys: Vec<u32> = self.by_session.values().copied().collect();
        keys.sort_unstable();
        keys.dedup();
        let mut names: Vec<OwnerId> = keys.into_iter().map(|k| self.names.name(k).clone()).collect();
        names.sort();
        names
    }

    /// Bytes reserved by the map and the tags.
    pub(crate) fn heap_bytes(&self) -> usize {
        super::memory::table_bytes(
            self.by_session.capacity(),
            std::mem::size_of::<((UserKey, DeviceKey), u32)>(),
        ) + self.names.reserved_bytes()
    }
}
