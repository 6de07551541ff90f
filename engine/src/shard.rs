//! Which shard a user lives on, in a deployment that splits users over several engines
//! (docs/SPEC.md R9; docs/FORMAT.md says the hash): every rule about a user is decided on its
//! shard, and the shards exchange only status changes, reads of other users' statuses, and
//! friendships.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ids::UserId;
use crate::status::UserStatus;

/// FNV-1a, 64 bits, over the id's UTF-8 bytes: the fixed, documented hash that places users
/// on shards (docs/FORMAT.md). Not for hash tables: it only has to be stable and spread ids.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(PRIME))
}

/// How users map to `count` shards: `fnv1a64(user) % count`, except for users placed
/// explicitly (for tests that need subscribers and their targets on different shards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardMap {
    count: u32,
    placed: Arc<HashMap<UserId, u32>>,
}

impl ShardMap {
    /// `count` shards (at least 1), users placed by the hash.
    pub fn new(count: u32) -> Self {
        Self { count: count.max(1), placed: Arc::new(HashMap::new()) }
    }

    /// The same, with some users placed on given shards (each taken modulo `count`).
    pub fn with_placement(count: u32, placed: impl IntoIterator<Item = (UserId, u32)>) -> Self {
        let count = count.max(1);
        let placed = placed.into_iter().map(|(user, shard)| (user, shard % count)).collect();
        Self { count, placed: Arc::new(placed) }
    }

    /// How many shards.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard of `user`.
    pub fn shard_of(&self, user: &str) -> u32 {
        match self.placed.get(user) {
            Some(&shard) => shard,
            None => (fnv1a64(user.as_bytes()) % u64::from(self.count)) as u32,
        }
    }
}

/// One shard of a deployment: the map, and which shard this engine is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardOf {
    /// How users map to shards.
    pub map: ShardMap,
    /// This engine's shard.
    pub index: u32,
}

impl ShardOf {
    /// Whether `user` lives on another shard.
    pub fn is_remote(&self, user: &str) -> bool {
        self.map.shard_of(user) != self.index
    }
}

/// Statuses of users on other shards, with their versions, read for one command by the host
/// that runs the shards (R9.3): what a `get_status` or a `subscribe` answers for them.
pub type RemoteStatuses = HashMap<UserId, (UserStatus, u64)>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The published FNV-1a 64 test vectors, so that the placement of every user is what
    /// docs/FORMAT.md says and never changes by accident.
    #[test]
    fn fnv1a64_matches_its_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn placement_overrides_the_hash_and_wraps() {
        let map = ShardMap::with_placement(3, [(UserId::from("alice"), 7)]);
        assert_eq!(map.shard_of("alice"), 1);
        assert_eq!(map.shard_of("bob"), (fnv1a64(b"bob") % 3) as u32);
        assert_eq!(ShardMap::new(0).count(), 1);
    }
}
