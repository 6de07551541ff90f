//! Strings to dense integer keys and back: how the engine names users and devices inside.
//!
//! The table is its own, not a general hash map, because a lookup among a million users is
//! a chain of cache misses (the table, the name to compare, the user's slot) and every link
//! of it shows in the throughput of commands and replay. Each probe reads one cache line: a
//! [`Group`] holds ten slots, each the key of a name and 16 bits of its hash, so the key
//! comes with the tag that all but rules it in or out, where a table keeping tags and keys
//! apart reads two lines. Groups are filled slot by slot and never emptied (nothing is ever
//! removed), so a group with a free slot ends a search. At most seven eighths of the slots
//! are used; a million names take 7.3 bytes each of table, less than a table of tags and
//! four-byte keys at the load a power-of-two size leaves it.

use std::hash::Hasher;

use rustc_hash::FxHasher;

use crate::ids::same_bytes as same;

/// Slots per group: ten tags of two bytes, ten keys of four and the count fill 64 bytes.
const GROUP_SLOTS: usize = 10;

/// One cache line of the table: the slots used, in order, and how many there are.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
struct Group {
    tags: [u16; GROUP_SLOTS],
    keys: [u32; GROUP_SLOTS],
    used: u32,
}

const _: () = assert!(size_of::<Group>() == 64);

impl Group {
    /// The used slots whose tag is `tag`, as a bit mask (slot `i` is bit `i`): all ten
    /// compared at once, without a branch per slot.
    #[inline]
    fn matching(&self, tag: u16) -> u32 {
        let mut mask = 0;
        for (i, &t) in self.tags.iter().enumerate() {
            mask |= u32::from(t == tag) << i;
        }
        let used = (self.used as usize).min(GROUP_SLOTS);
        mask & ((1 << used) - 1)
    }
}

/// The most names `groups` groups hold: seven eighths of their slots, so that a search
/// rarely goes past the group it starts in.
fn capacity_of(groups: usize) -> usize {
    groups * GROUP_SLOTS * 7 / 8
}

/// The fewest groups that hold `names` names.
fn groups_for(names: usize) -> usize {
    (names * 8).div_ceil(GROUP_SLOTS * 7).max(1)
}

/// A name's hash, from its bytes (the same as FxHash of the `str`, which hashes its bytes).
#[inline]
fn hash_name(name: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(name);
    hasher.finish()
}

/// The group a hash starts its search in: its top 32 bits scaled to the number of groups
/// (fewer than 2^32), so any number of groups works, not only powers of two.
#[inline]
fn home(hash: u64, groups: usize) -> usize {
    (((hash >> 32) * groups as u64) >> 32) as usize
}

/// The tag of a hash: 16 bits the group index did not use.
#[inline]
fn tag(hash: u64) -> u16 {
    hash as u16
}

/// Strings to dense indexes and back. Nothing is ever removed, so a key stays valid for the
/// engine's lifetime. Each name is stored once: the table holds only keys (and tags) and
/// compares through `names`.
#[derive(Debug)]
pub(crate) struct Interner<T> {
    groups: Vec<Group>,
    names: Vec<T>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self { groups: Vec::new(), names: Vec::new() }
    }
}

impl<T: AsRef<str> + for<'a> From<&'a str>> Interner<T> {
    /// The key of the name whose bytes are `name`, if it is there.
    #[inline]
    pub(crate) fn get(&self, name: &[u8]) -> Option<u32> {
        let groups = self.groups.len();
        if groups == 0 {
            return None;
        }
        let hash = hash_name(name);
        let (tag, mut at) = (tag(hash), home(hash, groups));
        // A search ends at a group with a free slot; the load factor leaves one, so this
        // visits each group at most once.
        for _ in 0..groups {
            let group = self.groups.get(at)?;
            let mut candidates = group.matching(tag);
            while candidates != 0 {
                let slot = candidates.trailing_zeros() as usize;
                candidates &= candidates - 1;
                let key = group.keys.get(slot).copied().unwrap_or(u32::MAX);
                if self.names.get(key as usize).is_some_and(|n| same(n.as_ref().as_bytes(), name)) {
                    return Some(key);
                }
            }
            if (group.used as usize) < GROUP_SLOTS {
                return None;
            }
            at = if at + 1 == groups { 0 } else { at + 1 };
        }
        None
    }

    /// Reads the line of the table where a search for `name` starts and returns a value from
    /// it, changing nothing. Reading the lines of many names in one pass, before looking any
    /// of them up, lets their cache misses overlap instead of queueing one behind the other.
    #[inline]
    pub(crate) fn touch(&self, name: &[u8]) -> u32 {
        let groups = self.groups.len();
        if groups == 0 {
            return 0;
        }
        self.groups.get(home(hash_name(name), groups)).map_or(0, |group| group.used)
    }

    /// Adds `name`, which the caller knows is not there yet (the ids of a validated snapshot
    /// are unique; otherwise the caller just looked), without looking for it; returns its
    /// key.
    pub(crate) fn insert_new(&mut self, name: &str) -> u32 {
        debug_assert!(self.get(name.as_bytes()).is_none(), "{name} is interned already");
        if self.names.len() >= capacity_of(self.groups.len()) {
            self.grow(self.names.len() + 1);
        }
        // More than u32::MAX distinct ids cannot fit in memory before this saturates.
        let key = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.place(hash_name(name.as_bytes()), key);
        self.names.push(T::from(name));
        key
    }

    /// Puts `key` in the first free slot from its hash's group on (there is one: the table
    /// is never full).
    fn place(&mut self, hash: u64, key: u32) {
        let groups = self.groups.len();
        let mut at = home(hash, groups);
        for _ in 0..groups {
            if let Some(group) = self.groups.get_mut(at) {
                let used = group.used as usize;
                if used < GROUP_SLOTS {
                    group.tags[used] = tag(hash);
                    group.keys[used] = key;
                    group.used += 1;
                    return;
                }
            }
            at = if at + 1 == groups { 0 } else { at + 1 };
        }
        unreachable!("the interner's table is full: it grows before it is");
    }

    /// Makes the table hold `names` names: a new table, with every key placed again.
    fn grow(&mut self, names: usize) {
        let groups = groups_for(names).max(2 * self.groups.len());
        let old = std::mem::replace(&mut self.groups, vec![Group::default(); groups]);
        for group in &old {
            for &key in group.keys.iter().take(group.used as usize) {
                let hash = hash_name(self.names[key as usize].as_ref().as_bytes());
                self.place(hash, key);
            }
        }
    }

    /// Makes room for `more` names without growing the table again.
    pub(crate) fn reserve(&mut self, more: usize) {
        let names = self.names.len() + more;
        if names > capacity_of(self.groups.len()) {
            self.grow(names);
        }
        self.names.reserve(more);
    }

    pub(crate) fn name(&self, key: u32) -> &T {
        &self.names[key as usize]
    }

    /// Bytes reserved by the two containers (not the names' own allocations).
    pub(crate) fn reserved_bytes(&self) -> usize {
        self.groups.capacity() * size_of::<Group>() + self.names.capacity() * size_of::<T>()
    }

    pub(crate) fn names(&self) -> &[T] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;

    /// Every name added is found under its own key, through growth and through a table
    /// reserved up front; names never added are not found.
    #[test]
    fn names_come_back_with_their_keys() {
        for reserve in [0, 5_000] {
            let mut interner = Interner::<UserId>::default();
            interner.reserve(reserve);
            for i in 0..5_000u32 {
                let name = format!("u{i}");
                assert_eq!(interner.get(name.as_bytes()), None);
                assert_eq!(interner.insert_new(&name), i);
                assert_eq!(interner.get(name.as_bytes()), Some(i));
            }
            for i in 0..5_000u32 {
                assert_eq!(interner.get(format!("u{i}").as_bytes()), Some(i));
                assert_eq!(interner.name(i).as_str(), format!("u{i}"));
                assert_eq!(interner.get(format!("v{i}").as_bytes()), None);
            }
            assert!(interner.names.len() <= capacity_of(interner.groups.len()));
        }
    }

    /// Names whose hashes start in the same group spill into the next ones and are found.
    #[test]
    fn a_crowded_group_spills_over() {
        let mut interner = Interner::<UserId>::default();
        interner.reserve(1_000);
        let groups = interner.groups.len();
        let crowd: Vec<String> = (0..100_000)
            .map(|i| format!("n{i}"))
            .filter(|n| home(hash_name(n.as_bytes()), groups) == 0)
            .take(3 * GROUP_SLOTS)
            .collect();
        for (key, name) in crowd.iter().enumerate() {
            assert_eq!(interner.insert_new(name), key as u32);
        }
        for (key, name) in crowd.iter().enumerate() {
            assert_eq!(interner.get(name.as_bytes()), Some(key as u32));
        }
    }
}
