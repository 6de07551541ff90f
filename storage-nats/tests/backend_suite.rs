//! The backend contract suite (`presence_testkit::backend_suite`) on a `NatsStore` over a
//! real single-node nats-server: the same contracts storage-mem and storage-sled keep
//! (round trips, contiguity, snapshots, compaction, reopening, injected failures, corrupt
//! bytes naming the sequence number).
//!
//! A stream's messages cannot be edited in place, so `tamper` copies the log into a new
//! stream message by message (same subjects under the new name, same headers but the
//! fence), damaging the one batch on the way, and opens the copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use presence_engine::StoreError;
use presence_storage_nats::{NatsOptions, NatsStore, HEADER_FIRST_SEQ};
use presence_testkit::backend_suite::Backend;
use presence_testkit::{NatsClient, NatsServer};

/// One server per test; each `create` makes a new stream on it.
struct Nats {
    server: NatsServer,
    streams: usize,
    current: String,
}

impl Nats {
    fn new() -> Self {
        Self { server: NatsServer::start(), streams: 0, current: String::new() }
    }

    fn open(&self, stream: &str, create: bool) -> Result<NatsStore, StoreError> {
        NatsStore::open(NatsOptions { create, ..NatsOptions::new(self.server.url(), stream) })
    }
}

impl Backend for Nats {
    type Store = NatsStore;

    fn create(&mut self) -> NatsStore {
        self.streams += 1;
        self.current = format!("suite{}", self.streams);
        self.open(&self.current, true).unwrap()
    }

    fn reopen(&mut self, store: NatsStore) -> Result<NatsStore, StoreError> {
        drop(store);
        self.open(&self.current, false)
    }

    fn tamper(
        &mut self,
        store: NatsStore,
        first_seq: u64,
        damage: &dyn Fn(&mut Vec<u8>),
    ) -> Result<NatsStore, StoreError> {
        drop(store);
        let from = self.current.clone();
        let to = format!("{from}t");
        drop(self.open(&to, true).unwrap()); // creates the stream, writes nothing
        let client = NatsClient::connect(&self.server.url());
        let info = client.stream_info(&from).unwrap();
        let last = info["state"]["last_seq"].as_u64().unwrap();
        let mut damaged = false;
        for seq in 1..=last {
            let Some(mut msg) = client.get(&from, seq).unwrap() else { continue };
            let suffix = msg.subject.strip_prefix(&from).unwrap().to_string();
            assert!(
                !suffix.starts_with(".snap."),
                "tamper copies batches and the format marker, not snapshots"
            );
            if suffix == ".batch" && msg.header(HEADER_FIRST_SEQ) == Some(first_seq.to_string().as_str()) {
                damage(&mut msg.payload);
                damaged = true;
            }
            let headers: Vec<(&str, &str)> = msg
                .headers
                .iter()
                .filter(|(name, _)| name != "Nats-Expected-Last-Sequence")
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let ack = client.publish(&format!("{to}{suffix}"), &headers, &msg.payload).unwrap();
            assert!(ack.get("error").is_none(), "{ack}");
        }
        assert!(damaged, "no batch at sequence {first_seq} to damage");
        self.current = to;
        self.open(&self.current, false)
    }
}

presence_testkit::backend_suite!(on_nats, Nats::new());
