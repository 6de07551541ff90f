//! What opening a NATS store checks and what it writes, on a real single-node nats-server:
//! an unreachable or silent server and a missing stream are clear errors within a bounded
//! time; a stream made by someone else is refused; the stream holds exactly the codec's
//! bytes under the documented subjects and headers; a batch over `batch_bytes_max` is
//! refused with `TooLarge` and nothing is stored; a snapshot over the 1 MiB message limit
//! round-trips through chunks; an incomplete snapshot (chunks without a commit record) is
//! never listed and compaction removes it; a foreign or corrupt message on the batch subject
//! is an error naming its sequence number, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use presence_engine::{codec, Command, Config, Engine, EventStore, StoreErrorKind};
use presence_storage_nats::{NatsOptions, NatsStore, HEADER_COUNT, HEADER_FIRST_SEQ, HEADROOM_BYTES};
use presence_testkit::load::{append_batch, encoded_batch, read_all};
use presence_testkit::process::free_ports;
use presence_testkit::{NatsClient, NatsServer};

fn options(server: &NatsServer, stream: &str, create: bool) -> NatsOptions {
    NatsOptions { create, ..NatsOptions::new(server.url(), stream) }
}

/// Runs `open` on a thread and waits at most `bound` for it: an open must come back with
/// an answer, never hang. (A liveness bound, far above the timeouts configured.)
fn open_within(bound: Duration, options: NatsOptions) -> Result<NatsStore, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(NatsStore::open(options).map_err(|e| e.to_string()));
    });
    rx.recv_timeout(bound).unwrap_or_else(|_| panic!("NatsStore::open hung for {bound:?}"))
}

#[test]
fn an_unreachable_or_silent_server_is_a_clear_error() {
    // Nothing listens on this port.
    let port = free_ports(1)[0];
    let quick = |url: String| NatsOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(2),
        ..NatsOptions::new(url, "presence")
    };
    let err = open_within(Duration::from_secs(30), quick(format!("nats://127.0.0.1:{port}"))).unwrap_err();
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("nats-server running"), "{err}");

    // Something accepts connections but never speaks NATS.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", silent.local_addr().unwrap());
    let err = open_within(Duration::from_secs(30), quick(url.clone())).unwrap_err();
    assert!(err.contains(url.trim_start_matches("nats://")), "{err}");

    let err = NatsStore::open(NatsOptions::new("http://[::1", "presence")).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Contract, "{err}");
}

#[test]
fn a_missing_stream_is_an_error_without_create_and_nothing_is_created() {
    let server = NatsServer::start();
    let err = NatsStore::open(options(&server, "missing", false)).unwrap_err();
    assert!(err.to_string().contains("stream missing does not exist"), "{err}");
    let client = NatsClient::connect(&server.url());
    let info = client.stream_info("missing").unwrap();
    assert_eq!(info["error"]["err_code"], 10059, "the failed open created the stream: {info}");
    // For a reader that waits for the stream: no error, nothing, and still nothing created.
    assert!(NatsStore::open_existing(options(&server, "missing", false)).unwrap().is_none());
    let info = client.stream_info("missing").unwrap();
    assert_eq!(info["error"]["err_code"], 10059, "open_existing created the stream: {info}");

    let store = NatsStore::open(options(&server, "missing", true)).unwrap();
    assert_eq!(store.next_seq(), 1);
    let existing = NatsStore::open_existing(options(&server, "missing", false)).unwrap();
    assert_eq!(existing.map(|s| s.next_seq()), Some(1), "the stream, once made");
    let info = client.stream_info("missing").unwrap();
    assert_eq!(info["config"]["num_replicas"], 1);
    assert_eq!(info["state"]["messages"], 0, "opening writes nothing");

    for bad in ["a.b", "", "has space"] {
        let err = NatsStore::open(options(&server, bad, true)).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Contract, "{bad}: {err}");
    }
}

#[test]
fn a_stream_made_by_someone_else_is_refused() {
    let server = NatsServer::start();
    let client = NatsClient::connect(&server.url());
    let config = serde_json::json!({"name": "orders", "subjects": ["orders.new"], "storage": "memory"});
    let created = client.request("$JS.API.STREAM.CREATE.orders", config.to_string().as_bytes()).unwrap();
    assert!(created.get("error").is_none(), "{created}");
    let err = NatsStore::open(options(&server, "orders", true)).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Contract, "{err}");
    assert!(err.to_string().contains("not made by presence-storage-nats"), "{err}");
}

#[test]
fn the_stream_holds_the_codec_bytes_under_the_documented_layout() {
    let server = NatsServer::start();
    let mut store = NatsStore::open(options(&server, "layout", true)).unwrap();
    let first = append_batch(&mut store, 300);
    let second = append_batch(&mut store, 1);
    store.save_snapshot(301, b"snap").unwrap();
    let last_stream_seq = store.last_stream_seq();
    drop(store);

    let client = NatsClient::connect(&server.url());
    let messages: Vec<_> =
        (1..=last_stream_seq).map(|seq| client.get("layout", seq).unwrap().unwrap()).collect();
    let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["layout.meta", "layout.batch", "layout.batch", "layout.snap.301.chunk", "layout.snap.301.commit"]
    );
    assert_eq!(messages[0].header("Presence-Format"), Some("1"));
    assert_eq!(messages[1].payload, first);
    assert_eq!(messages[2].payload, second);
    assert_eq!(messages[1].header(HEADER_FIRST_SEQ), Some("1"));
    assert_eq!(messages[1].header(HEADER_COUNT), Some("300"));
    assert_eq!(messages[2].header(HEADER_FIRST_SEQ), Some("301"));
    // Every publish carries the stream-wide fence: the stream's last sequence before it.
    for (i, message) in messages.iter().enumerate() {
        assert_eq!(
            message.header("Nats-Expected-Last-Sequence"),
            Some(i.to_string().as_str()),
            "{message:?}"
        );
        assert!(message.header("Nats-Msg-Id").unwrap().starts_with("layout-"));
    }
    let ids: std::collections::BTreeSet<_> = messages.iter().map(|m| m.header("Nats-Msg-Id")).collect();
    assert_eq!(ids.len(), messages.len(), "one message id per publish");
    assert_eq!(messages[3].payload, b"snap");
    let commit: serde_json::Value = serde_json::from_slice(&messages[4].payload).unwrap();
    assert_eq!(commit["last_seq"], 301);
    assert_eq!(commit["chunks"], 1);
    assert_eq!(commit["first_chunk"], 4);
    assert_eq!(commit["crc32"], crc32fast::hash(b"snap"));

    // `next_seq` comes from the stream, in a new store.
    let store = NatsStore::open(options(&server, "layout", false)).unwrap();
    assert_eq!(store.next_seq(), 302);
    assert_eq!(store.snapshots().unwrap(), [301]);
}

#[test]
fn a_batch_over_the_limit_is_too_large_and_stores_nothing() {
    let server = NatsServer::start();
    let mut store = NatsStore::open(options(&server, "limits", true)).unwrap();
    assert_eq!(store.max_payload(), 1 << 20, "nats-server's default max_payload");
    assert_eq!(store.batch_bytes_max(), (1 << 20) - HEADROOM_BYTES);
    append_batch(&mut store, 10);
    let before = store.stream_state().unwrap();

    let mut count = 20_000;
    let bytes = loop {
        let bytes = encoded_batch(11, count);
        if bytes.len() > store.batch_bytes_max() {
            break bytes;
        }
        count *= 2;
    };
    let err = store.append(11, count as u32, &bytes).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::TooLarge, "{err}");
    assert!(err.to_string().contains(&store.batch_bytes_max().to_string()), "{err}");
    assert_eq!(store.next_seq(), 11);
    assert_eq!(store.stream_state().unwrap(), before, "nothing was sent");

    // The engine keeps its own batches under the limit: a tick's are cut by size.
    let mut engine = Engine::open(Config::default(), store).unwrap();
    engine.execute(Command::login("alice", "phone"), 1).unwrap();
    assert_eq!(engine.last_seq(), 11);
}

#[test]
fn a_snapshot_over_the_message_limit_round_trips_in_chunks() {
    let server = NatsServer::start();
    let store = NatsStore::open(options(&server, "big", true)).unwrap();
    let config = Config { rate_limit_calls: u32::MAX >> 12, ..Config::default() };
    let mut engine = Engine::open(config.clone(), store).unwrap();
    for chunk in (0..100_000u64).collect::<Vec<_>>().chunks(5_000) {
        let mut group = engine.group();
        for &u in chunk {
            group.execute(Command::login(format!("user{u}"), "phone"), 1).unwrap();
            group.execute(Command::set_status(format!("user{u}"), "phone", "in a meeting"), 1).unwrap();
        }
        group.commit().unwrap();
    }
    let seq = engine.snapshot().unwrap();
    let live = engine.logical_state();
    let max = engine.store().batch_bytes_max();
    drop(engine);

    let client = NatsClient::connect(&server.url());
    let filter = serde_json::json!({"subjects_filter": "big.snap.>"}).to_string();
    let info = client.request("$JS.API.STREAM.INFO.big", filter.as_bytes()).unwrap();
    let chunks = info["state"]["subjects"][format!("big.snap.{seq}.chunk")].as_u64().unwrap();
    assert!(chunks >= 2, "a snapshot of 100 000 users fits one message? {info}");

    let store = NatsStore::open(options(&server, "big", false)).unwrap();
    let bytes = store.load_snapshot(seq).unwrap().unwrap();
    assert!(bytes.len() > max, "the snapshot is {} bytes", bytes.len());
    assert!(codec::decode_snapshot(&bytes).is_ok());
    let engine = Engine::open(config, store).unwrap();
    assert_eq!(engine.recovery().snapshot_seq, seq);
    assert_eq!(engine.recovery().events_replayed, 0);
    assert_eq!(engine.logical_state(), live);
}

#[test]
fn an_incomplete_snapshot_is_not_listed_and_compaction_removes_it() {
    let server = NatsServer::start();
    let store = NatsStore::open(options(&server, "partial", true)).unwrap();
    let mut engine = Engine::open(Config::default(), store).unwrap();
    for u in 0..50 {
        engine.execute(Command::login(format!("u{u}"), "phone"), 1).unwrap();
    }
    let good = engine.snapshot().unwrap();
    let mut store = engine.into_store();
    // A save that died after its chunks: chunks by hand, no commit record. One below the
    // good snapshot (compaction removes it), one above (kept until a compaction passes it).
    let client = NatsClient::connect(&server.url());
    for seq in [good - 10, good + 5] {
        for chunk in 0..2 {
            let headers =
                [("Presence-Snapshot-Id", "dead-1"), ("Presence-Chunk", if chunk == 0 { "0" } else { "1" })];
            let ack =
                client.publish(&format!("partial.snap.{seq}.chunk"), &headers, b"half a snapshot").unwrap();
            assert!(ack.get("error").is_none(), "{ack}");
        }
    }
    assert_eq!(store.snapshots().unwrap(), [good]);
    assert_eq!(store.load_snapshot(good - 10).unwrap(), None);
    let reopened = NatsStore::open(options(&server, "partial", false)).unwrap();
    assert_eq!(reopened.snapshots().unwrap(), [good]);
    assert_eq!(reopened.next_seq(), good + 1);

    // The hand-published chunks moved the stream: this store is fenced, a new one compacts.
    let err = store.compact(good).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");
    let mut store = reopened;
    store.compact(good).unwrap();
    let filter = serde_json::json!({"subjects_filter": "partial.snap.>"}).to_string();
    let info = client.request("$JS.API.STREAM.INFO.partial", filter.as_bytes()).unwrap();
    let subjects = info["state"]["subjects"].as_object().unwrap();
    let mut names: Vec<&String> = subjects.keys().collect();
    names.sort();
    let expected = [
        format!("partial.snap.{}.chunk", good + 5),
        format!("partial.snap.{good}.chunk"),
        format!("partial.snap.{good}.commit"),
    ];
    let mut expected: Vec<&String> = expected.iter().collect();
    expected.sort();
    assert_eq!(names, expected);
    assert!(read_all(&store, 0).is_empty(), "every batch was covered");
    let engine = Engine::open(Config::default(), store).unwrap();
    assert_eq!(engine.recovery().snapshot_seq, good);
}

#[test]
fn a_foreign_or_corrupt_message_on_the_batch_subject_names_its_sequence() {
    let server = NatsServer::start();
    let mut store = NatsStore::open(options(&server, "foreign", true)).unwrap();
    append_batch(&mut store, 3);
    let client = NatsClient::connect(&server.url());

    // Published by hand, without the store's headers.
    let ack = client.publish("foreign.batch", &[], b"{\"hello\":\"world\"}").unwrap();
    let foreign = ack["seq"].as_u64().unwrap();
    let err = NatsStore::open(options(&server, "foreign", false)).unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), StoreErrorKind::Corrupt, "{text}");
    assert!(text.contains(&format!("stream sequence {foreign}")), "{text}");
    // The store that was writing sees the stream moved under it.
    let err = store.append(4, 1, &encoded_batch(4, 1)).unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Fenced, "{err}");

    // With the store's headers but bytes that are not a batch, at any size.
    for (i, payload) in [&b""[..], b"\x01", &[0xff; 40], &encoded_batch(4, 2)[..20]].into_iter().enumerate() {
        let stream = format!("corrupt{i}");
        let mut store = NatsStore::open(options(&server, &stream, true)).unwrap();
        append_batch(&mut store, 3);
        let headers = [(HEADER_FIRST_SEQ, "4"), (HEADER_COUNT, "2")];
        let ack = client.publish(&format!("{stream}.batch"), &headers, payload).unwrap();
        let seq = ack["seq"].as_u64().unwrap();
        let err = NatsStore::open(options(&server, &stream, false)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sequence 4") && text.contains(&format!("stream sequence {seq}")), "{text}");
        // Replayed as part of the log by the store that was open before it came, the same
        // message fails the replay, naming the batch (the store checks the header, the
        // engine's decode the rest).
        let err = Engine::open(Config::default(), store).err().unwrap().to_string();
        assert!(err.contains("sequence 4"), "{err}");
    }
}

#[test]
fn inside_an_async_runtime_the_store_refuses_instead_of_blocking_or_panicking() {
    let server = NatsServer::start();
    let store = NatsStore::open(options(&server, "async", true)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (err, store) = runtime.block_on(async {
        let err = NatsStore::open(options(&server, "async", true)).unwrap_err();
        let read = store.read_from(1).err().unwrap();
        assert_eq!(read.kind(), StoreErrorKind::Contract, "{read}");
        (err, store)
    });
    assert_eq!(err.kind(), StoreErrorKind::Contract, "{err}");
    assert!(err.to_string().contains("spawn_blocking"), "{err}");
    let mut store = runtime.block_on(async move {
        let mut store = store;
        let err = store.append(1, 1, &encoded_batch(1, 1)).unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Contract, "{err}");
        store
    });
    // Outside again, it works; and dropping it inside a runtime does not panic.
    append_batch(&mut store, 1);
    runtime.block_on(async move { drop(store) });
}
