//! A node follows the other shards' streams from before it serves anything (R9.2): a change
//! made on another node just after this one starts serving reaches its watchers. It comes as
//! the owner announces the batch, not at the follower's next pass over the streams.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use presence_cluster::wire::NoticeOut;
use presence_cluster::{assign, run_node, ClusterClient, NodeConfig, NodeOptions};
use presence_engine::{Command, Config};
use presence_testkit::process::wait_until;
use presence_testkit::NatsServer;

const SHARDS: u32 = 2;
const NODES: [&str; 2] = ["f1", "f2"];
/// The longest the configuration allows, far longer than the test takes: the followers read
/// each stream when they start and then only every ten seconds, so a change heard sooner
/// came by its announcement.
const FOLLOW_INTERVAL_MS: u64 = 10_000;

#[test]
fn a_change_just_after_the_nodes_start_reaches_watchers_on_the_other_node() {
    let nats = NatsServer::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config = NodeConfig {
        deployment: "follow".into(),
        shards: SHARDS,
        replicas: 1,
        node_timeout_ms: 500,
        tick_interval_ms: 0,
        follow_interval_ms: FOLLOW_INTERVAL_MS,
        engine: Config { friend_notifications: true, ..Config::default() },
        ..NodeConfig::default()
    };
    let mut stops = Vec::new();
    let mut nodes = Vec::new();
    for id in NODES {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = NodeOptions { nats_url: nats.url(), node_id: id.into(), config: config.clone() };
        nodes.push(runtime.spawn(run_node(options, async move {
            let _ = stopped.await;
        })));
        stops.push(stop);
    }
    let client = ClusterClient::connect(&nats.url(), "follow", SHARDS).unwrap();
    let want: Vec<Option<&str>> = assign(SHARDS, NODES);
    wait_until(Duration::from_secs(30), "every shard served by its owner", || {
        let mut owners = vec![None; SHARDS as usize];
        for alive in client.nodes(Duration::from_millis(300)) {
            for (shard, _) in &alive.shards {
                owners[*shard as usize] = NODES.iter().copied().find(|n| *n == alive.node);
            }
        }
        owners == want
    })
    .unwrap();
    assert_ne!(want[0], want[1], "each node owns one shard");
    let on = |shard: u32, prefix: &str| {
        (0..10_000).map(|i| format!("{prefix}{i}")).find(|u| client.shard_of(u) == shard).unwrap()
    };
    let notices = client.notices().unwrap();
    let started = Instant::now();

    // A watcher on shard 1 subscribes to a target on shard 0, which then sets a custom status.
    let (watcher, target) = (on(1, "watcher"), on(0, "target"));
    client.execute(Command::login(watcher.as_str(), "pc"), None).unwrap();
    client.execute(Command::login(target.as_str(), "phone"), None).unwrap();
    client.execute(Command::subscribe(watcher.as_str(), "pc", [target.as_str()]), None).unwrap();
    client.execute(Command::set_status(target.as_str(), "phone", "on a train"), None).unwrap();
    // A friendship between the shards, ordered by the lower one (R9.1): shard 1 takes it in
    // from shard 0's stream.
    let (low, high) = (on(0, "low"), on(1, "high"));
    client.execute(Command::add_friend(low.as_str(), high.as_str()), None).unwrap();
    let made_in = started.elapsed();
    assert!(
        made_in < Duration::from_millis(FOLLOW_INTERVAL_MS),
        "the changes were made before the followers looked again ({made_in:?}), or this test \
         checks nothing"
    );

    let bound = Duration::from_millis(FOLLOW_INTERVAL_MS / 2);
    let heard = std::iter::from_fn(|| notices.recv_timeout(bound.saturating_sub(started.elapsed())))
        .flat_map(|(_, batch)| batch.notices)
        .any(|n| {
            matches!(&n, NoticeOut::Status { to, about, custom, .. }
                if *to == watcher && *about == target && custom == "on a train")
        });
    assert!(heard, "the watcher on the other node hears the custom status within {bound:?}");
    let friends = wait_until(bound, "the friendship taken in by shard 1", || {
        client.view(&high).is_ok_and(|v| v.friends.iter().any(|f| f.as_str() == low))
    });
    assert!(friends.is_ok(), "{friends:?}: {:?}", client.view(&high));

    for stop in stops {
        let _ = stop.send(());
    }
    for node in nodes {
        runtime.block_on(node).unwrap().unwrap();
    }
}
