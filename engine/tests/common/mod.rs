//! Helpers shared by the integration tests: engines on the in-memory store, notices as
//! sorted string tuples, error codes, the host's reads of a user, and a small PRNG.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use presence_engine::{
    Command, Config, Delivery, Engine, Error, EventStore, GeneralStatus, LastOnline, Outcome, UserStatus,
};
use presence_storage_mem::MemStore;

/// An engine with the default configuration on an empty in-memory store.
pub fn engine() -> Engine<MemStore> {
    engine_with(Config::default())
}

/// An engine with `config` on an empty in-memory store.
pub fn engine_with(config: Config) -> Engine<MemStore> {
    Engine::open(config, MemStore::new()).expect("a valid configuration opens")
}

/// Runs a command that must succeed.
pub fn ok<S: EventStore>(engine: &mut Engine<S>, command: Command, at_ms: u64) -> Outcome {
    let what = format!("{command:?} at {at_ms}");
    match engine.execute(command, at_ms) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{what} was refused: {e}"),
    }
}

/// Runs a tick that must succeed.
pub fn tick<S: EventStore>(engine: &mut Engine<S>, at_ms: u64) -> Outcome {
    match engine.tick(at_ms) {
        Ok(outcome) => outcome,
        Err(e) => panic!("tick at {at_ms} failed: {e}"),
    }
}

/// Runs a command that must be refused and returns the error.
pub fn refused<S: EventStore>(engine: &mut Engine<S>, command: Command, at_ms: u64) -> Error {
    let what = format!("{command:?} at {at_ms}");
    match engine.execute(command, at_ms) {
        Ok(outcome) => panic!("{what} was accepted: {outcome:?}"),
        Err(e) => e,
    }
}

/// The code of the error a command must be refused with.
pub fn code<S: EventStore>(engine: &mut Engine<S>, command: Command, at_ms: u64) -> u32 {
    refused(engine, command, at_ms).code()
}

/// One delivery as strings: (recipient user, recipient device, what), where `what` is
/// `"kicked"` or `"<about> <GENERAL> <custom>"` (e.g. `"alice ONLINE busy"`, `"bob OFFLINE "`).
pub type Told = (String, String, String);

/// Every delivery of `outcome`, sorted.
pub fn told<S: EventStore>(engine: &Engine<S>, outcome: &Outcome) -> Vec<Told> {
    let mut list: Vec<Told> = engine
        .deliveries(outcome)
        .map(|d| match d {
            Delivery::Status { to, device, about, status, .. } => (
                to.to_string(),
                device.to_string(),
                format!("{about} {} {}", status.general.name(), status.custom),
            ),
            Delivery::Kicked { to, device } => (to.to_string(), device.to_string(), "kicked".to_string()),
        })
        .collect();
    list.sort();
    list
}

/// The expected deliveries, sorted, for comparison with [`told`].
pub fn expect(list: &[(&str, &str, &str)]) -> Vec<Told> {
    let mut list: Vec<Told> =
        list.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    list.sort();
    list
}

/// A status pair.
pub fn status(general: GeneralStatus, custom: &str) -> UserStatus {
    UserStatus { general, custom: Arc::from(custom) }
}

/// The general status of `user` as the host reads it.
pub fn general<S: EventStore>(engine: &Engine<S>, user: &str) -> GeneralStatus {
    engine.status(user).general
}

/// The custom status of `user` as the host reads it.
pub fn custom<S: EventStore>(engine: &Engine<S>, user: &str) -> String {
    engine.status(user).custom.to_string()
}

/// The sessions of `user` as (device, connected, login_at_ms).
pub fn sessions<S: EventStore>(engine: &Engine<S>, user: &str) -> Vec<(String, bool, u64)> {
    engine.sessions(user).into_iter().map(|s| (s.device.to_string(), s.connected, s.login_at_ms)).collect()
}

/// The subscription list of `user`, oldest first, as strings.
pub fn subs<S: EventStore>(engine: &Engine<S>, user: &str) -> Vec<String> {
    engine.subscriptions(user).into_iter().map(|u| u.to_string()).collect()
}

/// The friends of `user`, sorted, as strings.
pub fn friends<S: EventStore>(engine: &Engine<S>, user: &str) -> Vec<String> {
    engine.friends(user).into_iter().map(|u| u.to_string()).collect()
}

/// Strings from string slices.
pub fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Everything the host may read about one user, except heartbeat times (reset by R8.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reads {
    pub user: String,
    pub status: UserStatus,
    pub last_online: LastOnline,
    pub sessions: Vec<(String, bool, u64)>,
    pub subscriptions: Vec<String>,
    pub subscriber_count: usize,
    pub friends: Vec<String>,
}

/// The reads of one user.
pub fn reads<S: EventStore>(engine: &Engine<S>, user: &str) -> Reads {
    Reads {
        user: user.to_string(),
        status: engine.status(user),
        last_online: engine.last_online(user),
        sessions: sessions(engine, user),
        subscriptions: subs(engine, user),
        subscriber_count: engine.subscriber_count(user),
        friends: friends(engine, user),
    }
}

/// The reads of every user in `users`.
pub fn all_reads<S: EventStore>(engine: &Engine<S>, users: &[String]) -> Vec<Reads> {
    users.iter().map(|u| reads(engine, u)).collect()
}

/// A copy of `store` holding its batches only (no snapshots), for a replay of the whole log.
pub fn log_only(store: &MemStore) -> MemStore {
    let mut copy = MemStore::new();
    for batch in store.read_from(1).unwrap() {
        let batch = batch.unwrap();
        copy.append(batch.first_seq, batch.count, &batch.bytes).unwrap();
    }
    copy
}

/// A small deterministic PRNG (xorshift64*), so that tests need no dependency and replay
/// identically.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// CRC-32 (IEEE), bit by bit: lets tests build payloads with a valid checksum.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
