//! A seeded load for storage tests: a small generator, random commands, steps that drive an
//! engine, and pre-encoded batches to append.

use presence_engine::codec;
use presence_engine::{Command, DeviceId, Engine, Error, Event, EventKind, EventStore, Outcome, UserId};

/// splitmix64: small, seeded, good enough to pick commands and crash moments.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn user(rng: &mut Rng, users: u64) -> String {
    format!("u{}", rng.below(users))
}

fn device(rng: &mut Rng) -> String {
    ["phone", "pc", "pad"][rng.below(3) as usize].to_string()
}

/// A random command over `users` users; many are refused (not logged in, ...), which is fine.
pub fn random_command(rng: &mut Rng, users: u64) -> Command {
    let u = user(rng, users);
    let d = device(rng);
    match rng.below(10) {
        0..=2 => Command::login(u, d),
        3 => Command::logout(u, d),
        4 => Command::disconnect(u, d),
        5 => Command::set_status(u, d, format!("busy {}", rng.below(100))),
        6 => {
            let targets: Vec<String> = (0..1 + rng.below(3)).map(|_| user(rng, users)).collect();
            Command::subscribe(u, d, targets)
        }
        7 => Command::unsubscribe(u, d, [user(rng, users)]),
        8 => Command::AddFriend { user: u.into(), friend: user(rng, users).into() },
        _ => Command::RemoveFriend { user: u.into(), friend: user(rng, users).into() },
    }
}

/// One step of the load at `*at_ms`: a command, or now and then a tick. Advances the time.
pub fn step<S: EventStore>(engine: &mut Engine<S>, rng: &mut Rng, at_ms: &mut u64) -> Result<Outcome, Error> {
    *at_ms += 1 + rng.below(20_000);
    if rng.below(25) == 0 {
        return engine.tick(*at_ms);
    }
    engine.execute(random_command(rng, 40), *at_ms)
}

/// Runs `steps` steps, failing the test on a storage error (refusals are expected).
pub fn drive<S: EventStore>(engine: &mut Engine<S>, rng: &mut Rng, at_ms: &mut u64, steps: usize) {
    for _ in 0..steps {
        if let Err(e) = step(engine, rng, at_ms) {
            assert_ne!(e.code(), 9000, "storage failed under load: {e}");
        }
    }
}

/// `count` login events encoded as one batch starting at `first_seq`, one user per sequence
/// number, so any run of them replays.
pub fn encoded_batch(first_seq: u64, count: usize) -> Vec<u8> {
    let events: Vec<Event> = (0..count)
        .map(|i| Event {
            at_ms: first_seq + i as u64,
            kind: EventKind::SessionOpened {
                user: UserId::from(format!("user{}", first_seq + i as u64)),
                device: DeviceId::from("phone"),
                owner: None,
            },
        })
        .collect();
    let mut out = Vec::new();
    codec::encode_batch(first_seq, &events, &mut out).unwrap();
    out
}

/// Appends a batch of `count` events at the store's `next_seq`; returns its bytes.
pub fn append_batch<S: EventStore>(store: &mut S, count: usize) -> Vec<u8> {
    let first = store.next_seq();
    let bytes = encoded_batch(first, count);
    store.append(first, count as u32, &bytes).unwrap();
    bytes
}

/// Every batch from `from_seq`, panicking on an error.
pub fn read_all<S: EventStore>(store: &S, from_seq: u64) -> Vec<presence_engine::StoredBatch> {
    store.read_from(from_seq).unwrap().map(Result::unwrap).collect()
}
