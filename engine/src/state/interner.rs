//! Strings to dense integer keys and back: how the engine names users and devices inside.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use super::memory;
use crate::ids::same_bytes as same;

/// Strings to dense indexes and back. Nothing is ever removed, so a key stays valid for the
/// engine's lifetime. Each name is stored once: the hash table holds only the four-byte keys
/// and compares through `names`.
#[derive(Debug)]
pub(crate) struct Interner<T> {
    keys: HashTable<u32>,
    names: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self { keys: HashTable::new(), names: Vec::new() }
    }
}

/// A name's hash, from its bytes (the same as FxHash of the `str`, which hashes its bytes).
#[inline]
fn hash_name(name: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(name);
    hasher.finish()
}

impl<T: AsRef<str> + for<'a> From<&'a str>> Interner<T> {
    /// The key of the name whose bytes are `name`, if it is there.
    #[inline]
    pub(crate) fn get(&self, name: &[u8]) -> Option<u32> {
        let names = &self.names;
        self.keys.find(hash_name(name), |&k| same(names[k as usize].as_ref().as_bytes(), name)).copied()
    }

    /// Adds `name`, which the caller knows is not there yet (the ids of a validated snapshot
    /// are unique), without looking for it first; returns its key.
    pub(crate) fn insert_new(&mut self, name: &str) -> u32 {
        debug_assert!(self.get(name.as_bytes()).is_none(), "{name} is interned already");
        // More than u32::MAX distinct ids cannot fit in memory before this saturates.
        let key = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        let names = &self.names;
        self.keys.insert_unique(hash_name(name.as_bytes()), key, |&k| {
            hash_name(names[k as usize].as_ref().as_bytes())
        });
        self.names.push(T::from(name));
        key
    }

    /// Makes room for `more` names without rehashing.
    pub(crate) fn reserve(&mut self, more: usize) {
        let names = &self.names;
        self.keys.reserve(more, |&k| hash_name(names[k as usize].as_ref().as_bytes()));
        self.names.reserve(more);
    }

    pub(crate) fn name(&self, key: u32) -> &T {
        &self.names[key as usize]
    }

    /// Bytes reserved by the two containers (not the names' own allocations).
    pub(crate) fn reserved_bytes(&self) -> usize {
        memory::table_bytes(self.keys.capacity(), std::mem::size_of::<u32>())
            + self.names.capacity() * std::mem::size_of::<T>()
    }

    pub(crate) fn names(&self) -> &[T] {
        &self.names
    }
}
