//! Two writers on one stream at once, on a real nats-server: for each position in the log
//! exactly one append wins (the stream-wide `Nats-Expected-Last-Sequence` fence), the other
//! gets `StoreErrorKind::Fenced` and stays fenced for every later write, and every batch
//! acknowledged to either writer is in the log, byte for byte, with event sequence numbers
//! exactly contiguous.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};
use std::thread;

use presence_engine::{codec, DeviceId, Event, EventKind, EventStore, StoreErrorKind, UserId};
use presence_storage_nats::{NatsOptions, NatsStore};
use presence_testkit::load::{append_batch, read_all};
use presence_testkit::NatsServer;

fn open(server: &NatsServer, stream: &str) -> NatsStore {
    NatsStore::open(NatsOptions { create: true, ..NatsOptions::new(server.url(), stream) }).unwrap()
}

/// `count` events from `first_seq` whose user names carry `writer`, so two writers' batches
/// at the same position differ.
fn batch_of(writer: &str, first_seq: u64, count: usize) -> Vec<u8> {
    let events: Vec<Event> = (0..count as u64)
        .map(|i| Event {
            at_ms: first_seq + i,
            kind: EventKind::SessionOpened {
                user: UserId::from(format!("{writer}-user{}", first_seq + i)),
                device: DeviceId::from("phone"),
                owner: None,
            },
        })
        .collect();
    let mut out = Vec::new();
    codec::encode_batch(first_seq, &events, &mut out).unwrap();
    out
}

/// The log's batches are exactly contiguous from its first one to `next_seq`.
fn assert_contiguous(store: &NatsStore) {
    let batches = read_all(store, 0);
    let mut expected = batches.first().map_or(1, |b| b.first_seq);
    for batch in &batches {
        assert_eq!(batch.first_seq, expected, "gap or duplicate at {}", batch.first_seq);
        expected = batch.last_seq() + 1;
    }
    assert_eq!(expected, store.next_seq());
}

#[test]
fn at_each_position_exactly_one_writer_wins_and_the_other_stays_fenced() {
    let server = NatsServer::start();
    let mut setup = open(&server, "race");
    append_batch(&mut setup, 2);
    drop(setup);
    let mut wins = [0, 0];
    for round in 0..10 {
        let writers = [open(&server, "race"), open(&server, "race")];
        let seq = writers[0].next_seq();
        assert_eq!(writers[1].next_seq(), seq);
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = writers
            .into_iter()
            .zip(["a", "b"])
            .map(|(mut store, name)| {
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let bytes = batch_of(name, seq, 3);
                    barrier.wait();
                    let result = store.append(seq, 3, &bytes);
                    (store, result, bytes)
                })
            })
            .collect();
        let outcomes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<usize> = (0..2).filter(|&i| outcomes[i].1.is_ok()).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {:?}",
            outcomes.iter().map(|o| &o.1).collect::<Vec<_>>()
        );
        let winner = winners[0];
        wins[winner] += 1;
        let (mut loser, result, _) = outcomes.into_iter().nth(1 - winner).unwrap();
        let err = result.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");
        assert!(err.to_string().contains("reopen the log"), "{err}");
        assert!(loser.fenced().is_some());
        // It stays fenced for every write, at any position.
        assert_eq!(loser.next_seq(), seq, "a fenced append stored nothing");
        for err in [
            loser.append(seq, 1, &batch_of("late", seq, 1)).unwrap_err(),
            loser.save_snapshot(seq - 1, b"snapshot").unwrap_err(),
            loser.compact(1).unwrap_err(),
        ] {
            assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");
        }
        let check = open(&server, "race");
        let batch = read_all(&check, seq).into_iter().next().unwrap();
        let name = ["a", "b"][winner];
        assert_eq!((batch.first_seq, batch.bytes), (seq, batch_of(name, seq, 3)), "round {round}");
        assert_contiguous(&check);
    }
    eprintln!("wins: a {}, b {}", wins[0], wins[1]);
}

#[test]
fn two_writers_appending_on_keep_every_acknowledged_batch_and_one_ends_fenced() {
    let server = NatsServer::start();
    drop(open(&server, "duel"));
    let handles: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let mut store = open(&server, "duel");
            thread::spawn(move || {
                let mut acked = Vec::new();
                for _ in 0..100 {
                    let seq = store.next_seq();
                    let bytes = batch_of(name, seq, 2);
                    match store.append(seq, 2, &bytes) {
                        Ok(()) => acked.push((seq, bytes)),
                        Err(e) => {
                            assert_eq!(e.kind(), StoreErrorKind::Fenced, "{e}");
                            return (acked, true);
                        }
                    }
                }
                (acked, false)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let check = open(&server, "duel");
    assert_contiguous(&check);
    let log = read_all(&check, 0);
    for (acked, _) in &results {
        for (seq, bytes) in acked {
            let batch = log.iter().find(|b| b.first_seq == *seq).unwrap();
            assert_eq!(&batch.bytes, bytes, "an acknowledged batch at {seq} is not in the log as written");
        }
    }
    let acked_total: usize = results.iter().map(|(acked, _)| acked.len()).sum();
    assert_eq!(acked_total, log.len(), "every batch in the log was acknowledged to exactly one writer");
    // Both started at the same position, so at least one met the other's batch there.
    assert!(results.iter().any(|(_, fenced)| *fenced), "nobody was fenced");
}
