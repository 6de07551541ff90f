//! Who should own each shard: rendezvous hashing over the nodes that are alive, so that a node
//! that leaves moves only its own shards, and one that joins takes about `1/n` of them; and
//! who is alive, from the heartbeats (pure: the times are given, nothing here reads a clock).

use std::collections::BTreeMap;

use presence_engine::fnv1a64;

/// The node that should own `shard` among `alive` (sorted or not): the one whose
/// `fnv1a64("node/shard")` is the largest, ties to the smaller id. `None` if nobody is alive.
pub fn owner_of<'a>(shard: u32, alive: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    alive
        .into_iter()
        .map(|node| (fnv1a64(format!("{node}/{shard}").as_bytes()), node))
        .max_by(|(ha, a), (hb, b)| ha.cmp(hb).then_with(|| b.cmp(a)))
        .map(|(_, node)| node)
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
    fn rendezvous_moves_only_the_shards_of_a_node_that_leaves() {
        let three = ["n1", "n2", "n3"];
        let two = ["n1", "n3"];
        let mut moved = 0;
        let mut counts = BTreeMap::new();
        for shard in 0..64 {
            let before = owner_of(shard, three).unwrap();
            let after = owner_of(shard, two).unwrap();
            *counts.entry(before).or_insert(0) += 1;
            if before != "n2" {
                assert_eq!(before, after, "shard {shard} moved though its owner stayed");
            } else {
                moved += 1;
            }
        }
        assert_eq!(moved, counts["n2"]);
        assert!(counts.values().all(|&n| n >= 10), "a fair share each: {counts:?}");
        assert_eq!(owner_of(0, []), None);
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
