//! Which shard a user lives on, in a deployment that splits users over several engines
//! (docs/SPEC.md R9; docs/FORMAT.md says the hash): every rule about a user is decided on its
//! shard, and the shards exchange only status changes, reads of other users' statuses, and
//! friendships.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{StoreError, StoreErrorKind};
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

/// What a sharded deployment stores beside its shards' logs (docs/FORMAT.md): how many
/// shards, and the hash that places users on them. Both are fixed when the deployment is
/// created: a user's shard must never change under its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// How many shards.
    pub shards: u32,
}

impl Manifest {
    /// The name of the only placement hash there is.
    pub const HASH: &'static str = "fnv1a64";

    /// The manifest as stored: a few `key = value` lines.
    pub fn to_text(&self) -> String {
        format!("presence deployment\nformat = 1\nshards = {}\nhash = {}\n", self.shards, Self::HASH)
    }

    /// Reads a stored manifest.
    pub fn parse(text: &str) -> Result<Manifest, StoreError> {
        let bad =
            |why: String| StoreError::new(StoreErrorKind::Corrupt, format!("deployment manifest: {why}"));
        let mut lines = text.lines();
        if lines.next() != Some("presence deployment") {
            return Err(bad("it does not start with `presence deployment`".into()));
        }
        let (mut format, mut shards, mut hash) = (None, None, None);
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let (key, value) =
                line.split_once('=').ok_or_else(|| bad(format!("`{line}` is not key = value")))?;
            let value = value.trim();
            match key.trim() {
                "format" => format = Some(value.to_string()),
                "shards" => shards = value.parse::<u32>().ok().filter(|&s| s >= 1),
                "hash" => hash = Some(value.to_string()),
                _ => {} // Later formats may add keys; what this build needs is checked below.
            }
        }
        match format.as_deref() {
            Some("1") => {}
            Some(other) => {
                return Err(StoreError::new(
                    StoreErrorKind::UnsupportedVersion,
                    format!("deployment manifest format {other}: this build reads format 1"),
                ))
            }
            None => return Err(bad("no format".into())),
        }
        if hash.as_deref() != Some(Self::HASH) {
            return Err(bad(format!("hash {hash:?}: this build places users by {}", Self::HASH)));
        }
        let shards = shards.ok_or_else(|| bad("no shard count of at least 1".into()))?;
        Ok(Manifest { shards })
    }

    /// Checks that a deployment opened with `shards` is this one.
    pub fn check(&self, shards: u32) -> Result<(), StoreError> {
        match self.shards == shards {
            true => Ok(()),
            false => Err(StoreError::new(
                StoreErrorKind::Contract,
                format!(
                    "this deployment has {} shards and cannot be opened with {shards}: a user's shard \
                     is fixed when a deployment is created",
                    self.shards
                ),
            )),
        }
    }
}

/// Statuses of users on other shards, with their versions, read for one command by the host
/// that runs the shards (R9.3): what a `get_status` or a `subscribe` answers for them.
pub type RemoteStatuses = HashMap<UserId, (UserStatus, u64)>;

/// No remote statuses, for a command outside a sharded deployment: made once, instead of an
/// empty map made and dropped per command (2 % of a heartbeat's instructions).
pub(crate) fn no_remote_statuses() -> &'static RemoteStatuses {
    static NONE: std::sync::OnceLock<RemoteStatuses> = std::sync::OnceLock::new();
    NONE.get_or_init(RemoteStatuses::new)
}

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
    fn a_manifest_reads_back_and_refuses_another_count_or_format() {
        let manifest = Manifest { shards: 8 };
        assert_eq!(Manifest::parse(&manifest.to_text()).unwrap(), manifest);
        assert!(manifest.check(8).is_ok());
        let other = manifest.check(4).unwrap_err();
        assert_eq!(other.kind(), StoreErrorKind::Contract);
        assert!(other.to_string().contains("has 8 shards"), "{other}");
        let newer = Manifest::parse("presence deployment\nformat = 2\nshards = 8\nhash = fnv1a64\n");
        assert_eq!(newer.unwrap_err().kind(), StoreErrorKind::UnsupportedVersion);
        for bad in [
            "",
            "shards = 8",
            "presence deployment\nformat = 1\nshards = 0\nhash = fnv1a64",
            "presence deployment\nformat = 1\nshards = 2\nhash = xxh3",
        ] {
            assert_eq!(Manifest::parse(bad).unwrap_err().kind(), StoreErrorKind::Corrupt, "{bad}");
        }
    }

    #[test]
    fn placement_overrides_the_hash_and_wraps() {
        let map = ShardMap::with_placement(3, [(UserId::from("alice"), 7)]);
        assert_eq!(map.shard_of("alice"), 1);
        assert_eq!(map.shard_of("bob"), (fnv1a64(b"bob") % 3) as u32);
        assert_eq!(ShardMap::new(0).count(), 1);
    }
}
