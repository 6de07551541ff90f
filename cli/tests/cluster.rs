//! A cluster on real processes (docs/SPEC.md R9.6, README "Run a cluster"): three
//! nats-server processes with JetStream (streams of three replicas) and three `presence node`
//! processes, on loopback ports, in temporary directories, all killed at the end. The tests
//! kill and pause nodes under load and check what the shard logs hold afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use presence_cluster::wire::NoticeOut;
use presence_cluster::{ClientError, ClusterClient, Notices};
use presence_engine::{Command, EventKind, GeneralStatus, Reply};
use presence_storage_nats::{shard_stream, NatsOptions, NatsStore};
use presence_testkit::process::wait_until;

use common::{user_on, Cluster, NODE_TIMEOUT_MS, SHARDS};

fn wait_for_notice(
    notices: &Notices,
    timeout: Duration,
    mut wanted: impl FnMut(&str, &NoticeOut) -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    while let Some(left) = timeout.checked_sub(started.elapsed()) {
        let (subject, batch) = notices.recv_timeout(left)?;
        if batch.notices.iter().any(|n| wanted(&subject, n)) {
            return Some(started.elapsed());
        }
    }
    None
}

fn offline_about(about: &str) -> impl FnMut(&str, &NoticeOut) -> bool + '_ {
    move |_, n| matches!(n, NoticeOut::Status { about: a, status: GeneralStatus::Offline, .. } if a == about)
}

// R9.1, R9.2 across machines: a command goes to its shard's owner, a change reaches a
// subscriber whose shard another node owns, on the subject of the node holding its socket.
#[test]
fn commands_and_notices_cross_nodes() {
    let cluster = Cluster::start("cross", &["a", "b", "c"], 1_000);
    let client = cluster.client();
    let owners = cluster.wait_served(&client, &["a", "b", "c"], Duration::from_secs(60));
    let alice = user_on(&client, &owners, "a", true, "alice");
    let bob = user_on(&client, &owners, "a", false, "bob");
    let notices = client.notices().unwrap();
    client.execute(Command::login_with_owner(alice.as_str(), "phone", "gw-alice"), None).unwrap();
    client.execute(Command::login_with_owner(bob.as_str(), "pc", "gw-bob"), None).unwrap();
    let reply = client.execute(Command::subscribe(alice.as_str(), "phone", [bob.as_str()]), None).unwrap();
    let Reply::Statuses(statuses) = reply else { panic!("{reply:?}") };
    assert_eq!((statuses[0].status.general, statuses[0].version), (GeneralStatus::Online, 1), "R9.3");
    client.execute(Command::set_status(bob.as_str(), "pc", "busy"), None).unwrap();
    let heard = wait_for_notice(&notices, Duration::from_secs(10), |subject, n| {
        subject.ends_with(".node.gw-alice.notices")
            && matches!(n, NoticeOut::Status { to, about, custom, version: 2, .. } if *to == alice && *about == bob && custom == "busy")
    });
    assert!(heard.is_some(), "alice's gateway hears bob's custom status");
    // A friendship made on one shard is on both (R9.1).
    client.execute(Command::add_friend(bob.as_str(), alice.as_str()), None).unwrap();
    let friends = wait_until(Duration::from_secs(10), "the friendship on both shards", || {
        client.view(&alice).unwrap().friends.iter().any(|f| **f == *bob)
            && client.view(&bob).unwrap().friends.iter().any(|f| **f == *alice)
    });
    assert!(friends.is_ok());

    // presence cluster-load on the same cluster: every user logged in, commands answered,
    // and what it reports is in the shards' state.
    let presence = env!("CARGO_BIN_EXE_presence");
    let urls = cluster.nats.urls();
    let args = ["cluster-load", "--nats", &urls, "--deployment", "cross", "--users", "60", "--clients", "4"];
    let out = std::process::Command::new(presence)
        .args(args)
        .args(["--duration-s", "1", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["nodes"].as_u64(), report["shards"].as_u64()),
        (Some(3), Some(SHARDS as u64)),
        "{report}"
    );
    assert_eq!(report["logins"].as_u64(), Some(60), "{report}");
    assert!(report["commands"].as_u64().unwrap() > 0, "{report}");
    for u in [0, 17, 59] {
        let view = client.view(&format!("user{u}")).unwrap();
        assert!(view.sessions.iter().any(|s| s.device == "d0"), "user{u}: {view:?}");
    }
    // A deployment nobody created is a clear error, exit 2.
    let out = std::process::Command::new(presence)
        .args(["cluster-load", "--nats", &urls, "--deployment", "nosuch", "--duration-s", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nosuch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// R9.6: a node killed with SIGKILL under load: no acknowledged command is lost, its shards
// are served again, and the subscribers of the devices it held hear OFFLINE.
#[test]
fn a_killed_node_loses_nothing_acknowledged_and_its_devices_go_offline() {
    let mut cluster = Cluster::start("failover", &["a", "b", "c"], 1_000);
    let client = cluster.client();
    let owners = cluster.wait_served(&client, &["a", "b", "c"], Duration::from_secs(60));
    // A watcher on a node that stays, subscribed to a device held by node b.
    let watcher = user_on(&client, &owners, "b", false, "watcher");
    let target = user_on(&client, &owners, "b", false, "target");
    client.execute(Command::login_with_owner(watcher.as_str(), "phone", "a"), None).unwrap();
    client.execute(Command::login_with_owner(target.as_str(), "pc", "b"), None).unwrap();
    client.execute(Command::subscribe(watcher.as_str(), "phone", [target.as_str()]), None).unwrap();
    let notices = client.notices().unwrap();
    // The load: logins of new devices, each acknowledged one recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let urls = cluster.nats.urls();
        std::thread::spawn(move || {
            let client = ClusterClient::connect(&urls, "failover", SHARDS).unwrap();
            let mut acked = Vec::new();
            let mut unknown = 0;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let (user, device) = (format!("load{}", i % 200), format!("d{i}"));
                match client.execute(Command::login(user.as_str(), device.as_str()), None) {
                    Ok(_) => acked.push((user, device)),
                    Err(ClientError::Unknown(_) | ClientError::Unavailable(_)) => unknown += 1,
                    Err(e) => panic!("{e}"),
                }
                i += 1;
            }
            (acked, unknown)
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let killed_at = Instant::now();
    cluster.kill("b");
    let offline = wait_for_notice(&notices, Duration::from_secs(20), offline_about(&target));
    let served = cluster.wait_served(&client, &["a", "c"], Duration::from_secs(30));
    let failover = killed_at.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    let (acked, unknown) = load.join().unwrap();
    assert!(acked.len() > 50, "the load ran: {} acknowledged", acked.len());
    let heard = offline.unwrap_or_else(|| panic!("no OFFLINE about {target}:\n{}", cluster.log("a")));
    assert!(
        heard < Duration::from_millis(NODE_TIMEOUT_MS) * 4 + Duration::from_secs(2),
        "OFFLINE after {heard:?}"
    );
    assert!(served.values().all(|n| n != "b"));
    eprintln!("failover: OFFLINE heard after {heard:?}, every shard served again after {failover:?}; {} acknowledged, {unknown} unknown", acked.len());
    // Every acknowledged login is in its shard's log.
    let logs = cluster.logs();
    let mut logged = BTreeSet::new();
    for events in &logs {
        for event in events {
            if let EventKind::SessionOpened { user, device, .. } = &event.kind {
                logged.insert((user.to_string(), device.to_string()));
            }
        }
    }
    let lost: Vec<_> = acked.iter().filter(|(u, d)| !logged.contains(&(u.clone(), d.clone()))).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged logins are not in the logs: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

// R9.6: a paused node whose shards moved meanwhile is fenced when it wakes: it writes nothing
// more to them, and rejoins.
#[test]
fn a_paused_node_is_fenced_and_rejoins_without_writing() {
    let cluster = Cluster::start("paused", &["a", "b", "c"], 1_000);
    let client = cluster.client();
    let owners = cluster.wait_served(&client, &["a", "b", "c"], Duration::from_secs(60));
    let b_shards: Vec<u32> = owners.iter().filter(|(_, n)| *n == "b").map(|(s, _)| *s).collect();
    assert!(!b_shards.is_empty());
    cluster.signal("b", "-STOP");
    let moved = cluster.wait_served(&client, &["a", "c"], Duration::from_secs(30));
    // Writes on b's old shards by their new owners.
    for shard in &b_shards {
        let user = (0..10_000).map(|i| format!("p{i}")).find(|u| client.shard_of(u) == *shard).unwrap();
        client.execute(Command::login(user.as_str(), "phone"), None).unwrap();
    }
    let before: Vec<u64> = b_shards.iter().map(|&s| stream_last_seq(&cluster, s)).collect();
    cluster.signal("b", "-CONT");
    // It wakes, hears that its shards moved, stops serving them, and rejoins.
    std::thread::sleep(Duration::from_millis(NODE_TIMEOUT_MS * 2));
    let after: Vec<u64> = b_shards.iter().map(|&s| stream_last_seq(&cluster, s)).collect();
    let rejoined = wait_until(Duration::from_secs(30), "b alive again", || {
        client.nodes(Duration::from_millis(NODE_TIMEOUT_MS / 2)).iter().any(|n| n.node == "b")
    });
    assert!(rejoined.is_ok(), "{}", cluster.log("b"));
    assert!(moved.values().all(|n| n != "b"));
    // Only the new owners (and a clean hand-off back to b, which claims first) wrote.
    for (i, &shard) in b_shards.iter().enumerate() {
        let options = NatsOptions::new(cluster.nats.urls(), shard_stream("paused", shard));
        let store = NatsStore::open(options).unwrap();
        let owner = store.owner().unwrap().map(|(o, _)| o);
        if after[i] != before[i] {
            assert_eq!(
                owner.as_deref(),
                Some("b"),
                "shard {shard} was written after b woke, but not by a claim of b"
            );
        }
    }
    let served = cluster.wait_served(&client, &["a", "b", "c"], Duration::from_secs(60));
    assert_eq!(served.len(), SHARDS as usize);
}

fn stream_last_seq(cluster: &Cluster, shard: u32) -> u64 {
    let options = NatsOptions::new(cluster.nats.urls(), shard_stream(&cluster.deployment, shard));
    NatsStore::open(options).unwrap().stream_state().unwrap().last_stream_seq
}

// A nats-server killed with SIGKILL under load: nothing acknowledged is lost (streams of
// three replicas keep a quorum).
#[test]
fn a_killed_nats_server_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start("natskill", &["a", "b"], 1_000);
    let client = cluster.client();
    cluster.wait_served(&client, &["a", "b"], Duration::from_secs(60));
    let mut acked = Vec::new();
    let started = Instant::now();
    let mut killed = false;
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(8) {
        if !killed && started.elapsed() > Duration::from_secs(2) {
            cluster.nats.kill(1);
            killed = true;
        }
        let (user, device) = (format!("n{}", i % 100), format!("d{i}"));
        if client.execute(Command::login(user.as_str(), device.as_str()), None).is_ok() {
            acked.push((user, device));
        }
        i += 1;
    }
    assert!(acked.len() > 50, "{} acknowledged", acked.len());
    let logs = cluster.logs();
    let logged: BTreeSet<(String, String)> = logs
        .iter()
        .flatten()
        .filter_map(|e| match &e.kind {
            EventKind::SessionOpened { user, device, .. } => Some((user.to_string(), device.to_string())),
            _ => None,
        })
        .collect();
    let lost = acked.iter().filter(|a| !logged.contains(a)).count();
    assert_eq!(lost, 0, "{lost} of {} acknowledged logins lost", acked.len());
}
