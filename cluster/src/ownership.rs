//! Who should own each shard: rendezvous hashing over the nodes that are alive, so that a node
//! that leaves moves only its own shards, and one that joins takes about `1/n` of them; and
//! who is alive, from the heartbeats (pure: the times are given, nothing here reads a clock).

use std::collections::BTreeMap;

use presence_engine::fnv1a64;

/// The node that should own `shard` of `shards` among `alive`: rendezvous hashing with a
/// cap. Shards in order each go to the node with the highest score (the FNV-1a 64 hash of
/// `"node/shard"` mixed by MurmurHash3's finalizer, since FNV alone spreads short, similar ids
/// poorly) among those that hold fewer than `ceil(shards / nodes)`. So every node gets a fair
/// share even of a few shards, and a node that leaves or joins moves few shards besides its
/// own. `None` if nobody is alive.
pub fn owner_of<'a>(shard: u32, shards: u32, alive: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let assignment = assign(shards, alive);
    assignment.get(shard as usize).copied().flatten()
}

/// The owner of every shard of `shards` among `alive` (see [`owner_of`]).
pub fn assign<'a>(shards: u32, alive: impl IntoIterator<Item = &'a str>) -> Vec<Option<&'a str>> {
    let mut nodes: Vec<&str> = alive.into_iter().collect();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        return vec![None; shards as usize];
    }
    let cap = (shards as usize).div_ceil(nodes.len());
    let mut held = vec![0usize; nodes.len()];
    (0..shards)
        .map(|shard| {
            let best = (0..nodes.len()).filter(|&i| held[i] < cap).max_by(|&a, &b| {
                score(nodes[a], shard).cmp(&score(nodes[b], shard)).then_with(|| nodes[b].cmp(nodes[a]))
            })?;
            held[best] += 1;
            Some(nodes[best])
        })
        .collect()
}

fn score(node: &str, shard: u32) -> u64 {
    let mut h = fnv1a64(format!("{node}/{shard}").as_bytes());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// What a node knows of the others from their heartbeats.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    /// For each node heard: when it was last heard (ms of the node's own clock), and the
    /// shards it said it serves, with the stream sequence number of its claim.
    nodes: BTreeMap<String, (u64, Vec<(u32, u64)>)>,
}

impl Membership {
    /// A heartbeat from `node` heard at `now_ms`.
    pub fn heard(&mut self, node: &str, shards: Vec<(u32, u64)>, now_ms: u64) {
        self.nodes.insert(node.to_string(), (now_ms, shards));
    }

    /// The nodes heard within `timeout_ms` before `now_ms`, sorted.
    pub fn alive(&self, now_ms: u64, timeout_ms: u64) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, (at, _))| now_ms.saturating_sub(*at) < timeout_ms)
            .map(|(node, _)| node.clone())
            .collect()
    }

    /// The alive node other than `me` that says it serves `shard`, with its claim's stream
    /// sequence number (the newest claim, if several do).
    pub fn serving(&self, shard: u32, me: &str, now_ms: u64, timeout_ms: u64) -> Option<(String, u64)> {
        self.nodes
            .iter()
            .filter(|(node, (at, _))| node.as_str() != me && now_ms.saturating_sub(*at) < timeout_ms)
            .filter_map(|(node, (_, shards))| {
                shards.iter().find(|(s, _)| *s == shard).map(|(_, claim)| (node.clone(), *claim))
            })
            .max_by_key(|(_, claim)| *claim)
    }

    /// When `node` was last heard.
    pub fn last_heard(&self, node: &str) -> Option<u64> {
        self.nodes.get(node).map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_a_fair_share_and_a_node_that_leaves_moves_few_others() {
        for (shards, names) in [(6, vec!["a", "b", "c"]), (64, vec!["n1", "n2", "n3"]), (7, vec!["x", "y"])] {
            let before = assign(shards, names.iter().copied());
            let mut counts = BTreeMap::new();
            for owner in &before {
                *counts.entry(owner.unwrap()).or_insert(0usize) += 1;
            }
            let cap = (shards as usize).div_ceil(names.len());
            assert_eq!(counts.len(), names.len(), "{counts:?}");
            assert!(counts.values().all(|&n| n <= cap && n + 2 >= cap), "{counts:?}");
            let staying: Vec<&str> = names[1..].to_vec();
            let after = assign(shards, staying.iter().copied());
            let kept = (0..shards as usize)
                .filter(|&s| before[s] != Some(names[0]) && before[s] == after[s])
                .count();
            let others = before.iter().filter(|o| **o != Some(names[0])).count();
            assert!(kept * 10 >= others * 6, "{kept} of {others} kept their owner");
            assert!(after.iter().all(|o| *o != Some(names[0])));
            assert_eq!(owner_of(0, shards, names.iter().copied()), before[0]);
        }
        assert_eq!(owner_of(0, 4, []), None);
    }

    #[test]
    fn a_node_is_alive_until_its_timeout() {
        let mut m = Membership::default();
        m.heard("n1", vec![(3, 10)], 1_000);
        m.heard("n2", vec![(3, 12)], 1_500);
        assert_eq!(m.alive(3_999, 3_000), vec!["n1", "n2"]);
        assert_eq!(m.alive(4_000, 3_000), vec!["n2"]);
        assert_eq!(m.serving(3, "n9", 3_999, 3_000), Some(("n2".into(), 12)));
        assert_eq!(m.serving(3, "n2", 3_999, 3_000), Some(("n1".into(), 10)));
        assert_eq!(m.serving(3, "n9", 5_000, 3_000), None);
    }
}
