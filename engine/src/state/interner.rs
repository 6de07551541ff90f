//! Strings to dense integer keys and back: how the engine names users and devices inside.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::memory;

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

fn hash_name(name: &str) -> u64 {
    FxBuildHasher.hash_one(name)
}

impl<T: AsRef<str> + for<'a> From<&'a str>> Interner<T> {
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        let names = &self.names;
        self.keys.find(hash_name(name), |&k| names[k as usize].as_ref() == name).copied()
    }

    /// The key of `name`, adding it if new; the bool says whether it was added.
    pub(crate) fn intern(&mut self, name: &str) -> (u32, bool) {
        let hash = hash_name(name);
        let names = &self.names;
        if let Some(&key) = self.keys.find(hash, |&k| names[k as usize].as_ref() == name) {
            return (key, false);
        }
        // More than u32::MAX distinct ids cannot fit in memory before this saturates.
        let key = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.keys.insert_unique(hash, key, |&k| hash_name(names[k as usize].as_ref()));
        self.names.push(T::from(name));
        (key, true)
    }

    /// Makes room for `more` names without rehashing.
    pub(crate) fn reserve(&mut self, more: usize) {
        let names = &self.names;
        self.keys.reserve(more, |&k| hash_name(names[k as usize].as_ref()));
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
