//! A replicated log on a real three-node nats-server cluster (stream replicas = 3):
//! - kill -9 the stream's leader during appends: the store carries on once a new leader is
//!   elected (or fails an append with a clear error, and the caller retries), and a new
//!   store instance reopening the log finds every acknowledged batch, byte for byte, with
//!   event sequence numbers exactly contiguous (nothing duplicated, nothing forked);
//! - kill -9 a follower: every append goes on succeeding;
//! - kill -9 the whole cluster and restart it on the same directories: the log reopens and
//!   an engine replays it to the same `logical_state()`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use presence_engine::{
    codec, Config, DeviceId, Engine, Event, EventKind, EventStore, StoreErrorKind, UserId,
};
use presence_storage_nats::{NatsOptions, NatsStore};
use presence_testkit::load::{drive, read_all, Rng};
use presence_testkit::NatsCluster;

fn options(cluster: &NatsCluster, stream: &str) -> NatsOptions {
    NatsOptions {
        replicas: 3,
        create: true,
        request_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(30),
        ..NatsOptions::new(cluster.urls(), stream)
    }
}

/// A batch of `count` events from `first_seq`, tagged with `tag` (a different tag per try,
/// as an engine that rolled back a failed append would write different events).
fn batch_of(tag: &str, first_seq: u64, count: usize) -> Vec<u8> {
    let events: Vec<Event> = (0..count as u64)
        .map(|i| Event {
            at_ms: first_seq + i,
            kind: EventKind::SessionOpened {
                user: UserId::from(format!("{tag}-{}", first_seq + i)),
                device: DeviceId::from("phone"),
                owner: None,
            },
        })
        .collect();
    let mut out = Vec::new();
    codec::encode_batch(first_seq, &events, &mut out).unwrap();
    out
}

/// Reopens the log in a new store and checks that its event sequence numbers are exactly
/// contiguous and that every acknowledged batch is there as written.
fn check_log(cluster: &NatsCluster, stream: &str, acked: &[(u64, Vec<u8>)]) {
    let store = NatsStore::open(NatsOptions { create: false, ..options(cluster, stream) }).unwrap();
    let log = read_all(&store, 0);
    let mut expected = 1;
    for batch in &log {
        assert_eq!(batch.first_seq, expected, "gap or duplicate at event {}", batch.first_seq);
        expected = batch.last_seq() + 1;
    }
    assert_eq!(store.next_seq(), expected);
    for (seq, bytes) in acked {
        let batch = log.iter().find(|b| b.first_seq == *seq);
        assert_eq!(batch.map(|b| &b.bytes), Some(bytes), "acknowledged batch at {seq} lost or changed");
    }
}

/// Appends `total` tagged batches of 3 events, as a host would: an append that fails with an
/// error is retried (with new bytes) at the same position, and a store fenced by an
/// earlier append that was stored after all is reopened. Returns the acknowledged batches
/// and the errors seen. After `signal_after` acknowledgements it tells `signal`.
fn appender(
    mut store: NatsStore,
    options: NatsOptions,
    total: usize,
    signal_after: usize,
    signal: mpsc::Sender<()>,
) -> (Vec<(u64, Vec<u8>)>, Vec<String>) {
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    let mut tries = 0;
    while acked.len() < total && errors.len() < 20 {
        tries += 1;
        let seq = store.next_seq();
        let bytes = batch_of(&format!("t{tries}"), seq, 3);
        match store.append(seq, 3, &bytes) {
            Ok(()) => {
                acked.push((seq, bytes));
                if acked.len() == signal_after {
                    let _ = signal.send(());
                }
            }
            Err(e) if e.kind() == StoreErrorKind::Fenced => {
                errors.push(e.to_string());
                store = NatsStore::open(options.clone()).unwrap();
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    (acked, errors)
}

#[test]
fn killing_the_leader_during_appends_loses_no_acknowledged_batch() {
    let mut cluster = NatsCluster::start(3);
    let options = options(&cluster, "elect");
    let store = NatsStore::open(options.clone()).unwrap();
    let leader = cluster.wait_for_stream_leader("elect");
    let (tx, rx) = mpsc::channel();
    let writer = {
        let options = options.clone();
        thread::spawn(move || appender(store, options, 150, 30, tx))
    };
    rx.recv_timeout(Duration::from_secs(120)).expect("the first 30 appends never finished");
    cluster.kill(leader);
    let (acked, errors) = writer.join().unwrap();
    eprintln!("{} batches acknowledged; errors on the way: {errors:?}", acked.len());
    for error in &errors {
        // Clear errors: what happened and what to do.
        assert!(error.contains("leader") || error.contains("reopen the log"), "unclear error: {error}");
    }
    assert_eq!(acked.len(), 150, "the store did not carry on after the election: {errors:?}");
    let new_leader = cluster.wait_for_stream_leader("elect");
    assert_ne!(new_leader, leader);
    check_log(&cluster, "elect", &acked);
    // The old leader comes back as a follower and catches up; the log is the same.
    cluster.restart(leader);
    check_log(&cluster, "elect", &acked);
}

#[test]
fn killing_a_follower_does_not_stop_appends() {
    let mut cluster = NatsCluster::start(3);
    let options = options(&cluster, "follow");
    let mut store = NatsStore::open(options.clone()).unwrap();
    let leader = cluster.wait_for_stream_leader("follow");
    let follower = (leader + 1) % cluster.size();
    let mut acked = Vec::new();
    for round in 0..80 {
        if round == 20 {
            cluster.kill(follower);
        }
        let seq = store.next_seq();
        let bytes = batch_of("f", seq, 3);
        store.append(seq, 3, &bytes).unwrap_or_else(|e| panic!("append {round} failed: {e}"));
        acked.push((seq, bytes));
    }
    assert_eq!(cluster.stream_leader("follow"), Some(leader));
    check_log(&cluster, "follow", &acked);
}

#[test]
fn the_whole_cluster_restarted_replays_to_the_same_state() {
    let mut cluster = NatsCluster::start(3);
    let options = options(&cluster, "restart");
    let store = NatsStore::open(options.clone()).unwrap();
    let mut engine = Engine::open(Config::default(), store).unwrap();
    let mut rng = Rng::new(42);
    let mut at_ms = 0;
    drive(&mut engine, &mut rng, &mut at_ms, 300);
    engine.snapshot().unwrap();
    drive(&mut engine, &mut rng, &mut at_ms, 300);
    let snapshot = engine.snapshot().unwrap();
    drive(&mut engine, &mut rng, &mut at_ms, 100);
    engine.compact().unwrap();
    let oldest = read_all(engine.store(), 0)[0].first_seq;
    assert!(oldest > 1 && oldest <= snapshot + 1, "the compaction removed nothing, or too much: {oldest}");
    drive(&mut engine, &mut rng, &mut at_ms, 300);
    engine.sync().unwrap();
    let live = engine.logical_state();
    let last_seq = engine.last_seq();
    drop(engine);

    cluster.kill_all();
    cluster.start_all();
    cluster.wait_for_stream_leader("restart");
    let store = NatsStore::open(NatsOptions { create: false, ..options }).unwrap();
    assert_eq!(store.next_seq(), last_seq + 1);
    let engine = Engine::open(Config::default(), store).unwrap();
    assert!(engine.recovery().snapshot_seq > 0);
    assert_eq!(engine.last_seq(), last_seq);
    assert_eq!(engine.logical_state(), live);
    assert_eq!(
        read_all(engine.store(), 0)[0].first_seq,
        oldest,
        "the restart undid or extended the compaction"
    );
}
