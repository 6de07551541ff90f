//! Shared set-ups for the criterion benchmarks in `benches/benches/`.
//!
//! Every set-up goes through the public API only, so the benchmarks measure what a host
//! gets. User and device names are short and deterministic (`u123`, `d0`).

use presence_engine::{Command, Config, Engine, EventStore};
use presence_storage_mem::MemStore;

/// The name of user `i`.
pub fn user(i: u64) -> String {
    format!("u{i}")
}

/// A configuration with room for the big lists the benchmarks build, and no rate limit in
/// the way of a hot loop.
pub fn bench_config() -> Config {
    Config { rate_limit_calls: u32::MAX >> 12, max_subscriptions: 1_000, ..Config::default() }
}

/// A small deterministic generator (xorshift64*), so runs are comparable.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Executes `commands` at `at_ms` in groups of 1 024, each committed as one batch. Refused
/// commands are skipped; a failed commit is a broken set-up and panics.
pub fn run_grouped<S: EventStore>(
    engine: &mut Engine<S>,
    commands: impl IntoIterator<Item = Command>,
    at_ms: u64,
) {
    let mut commands = commands.into_iter().peekable();
    while commands.peek().is_some() {
        let mut group = engine.group();
        for command in commands.by_ref().take(1_024) {
            let _ = group.execute(command, at_ms);
        }
        group.commit().unwrap_or_else(|e| panic!("set-up commit failed: {e}"));
    }
}

/// Logs in users `0..users` with one device each (`d0`).
pub fn login_users<S: EventStore>(engine: &mut Engine<S>, users: u64, at_ms: u64) {
    run_grouped(engine, (0..users).map(|i| Command::login(user(i), "d0")), at_ms);
}

/// An engine on the in-memory store with `users` users logged in on one device each.
pub fn engine_with_users(users: u64) -> Engine<MemStore> {
    let mut engine = Engine::open(bench_config(), MemStore::new()).unwrap_or_else(|e| panic!("{e}"));
    login_users(&mut engine, users, 0);
    engine
}

/// Makes each user in `subscribers` subscribe to `target`.
pub fn subscribe_all<S: EventStore>(
    engine: &mut Engine<S>,
    target: &str,
    subscribers: impl Iterator<Item = u64>,
) {
    run_grouped(engine, subscribers.map(|s| Command::subscribe(user(s), "d0", [target])), 0);
}

/// One group commit of `batch` status changes (each flips a user's custom status, so each
/// logs one event), appended as one batch and synced: the unit of the durable benchmarks.
/// `next` walks `names`; `flip` alternates the value.
pub fn commit_status_flips<S: EventStore>(
    engine: &mut Engine<S>,
    names: &[String],
    next: &mut usize,
    flip: &mut bool,
    batch: usize,
) {
    *flip = !*flip;
    let custom = if *flip { "busy" } else { "free" };
    let mut pending = engine.group();
    for _ in 0..batch {
        let _ = pending.execute(Command::set_status(names[*next].as_str(), "d0", custom), 1);
        *next = (*next + 1) % names.len();
    }
    pending.commit().unwrap_or_else(|e| panic!("set-up commit failed: {e}"));
    engine.sync().unwrap_or_else(|e| panic!("sync failed: {e}"));
}

/// The durations of `rounds` group commits of `batch` commands (appended and synced), as a
/// line: p50, p99 and max. Criterion reports means; a commit's latency needs percentiles.
pub fn commit_latencies<S: EventStore>(
    engine: &mut Engine<S>,
    names: &[String],
    batch: usize,
    rounds: usize,
) -> String {
    let (mut next, mut flip) = (0, false);
    let mut took: Vec<std::time::Duration> = (0..rounds)
        .map(|_| {
            let started = std::time::Instant::now();
            commit_status_flips(engine, names, &mut next, &mut flip, batch);
            started.elapsed()
        })
        .collect();
    took.sort_unstable();
    let at = |p: f64| took[((took.len() - 1) as f64 * p).round() as usize];
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {rounds} commits",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    )
}

/// The log the replay benchmarks recover from: `users` users log in, subscribe to five
/// others, change their status four times and reconnect twice (ten events each), with a
/// snapshot after eight and a half events a user.
pub fn replay_log<S: EventStore>(engine: &mut Engine<S>, users: u64) {
    login_users(engine, users, 0);
    let subscribes = (0..users).map(|s| {
        let targets: Vec<String> = (1..=5).map(|k| user((s + k * 7_919) % users)).collect();
        Command::subscribe(user(s), "d0", targets)
    });
    run_grouped(engine, subscribes, 1);
    for round in 0..4u64 {
        let custom = ["busy", "", "in a meeting", "gaming"][round as usize];
        run_grouped(engine, (0..users).map(|u| Command::set_status(user(u), "d0", custom)), 2 + round);
    }
    for round in 0..2u64 {
        if round == 1 {
            run_grouped(engine, (0..users / 2).map(|u| Command::disconnect(user(u), "d0")), 10);
            engine.snapshot().unwrap_or_else(|e| panic!("set-up snapshot failed: {e}"));
            run_grouped(engine, (users / 2..users).map(|u| Command::disconnect(user(u), "d0")), 10);
        } else {
            run_grouped(engine, (0..users).map(|u| Command::disconnect(user(u), "d0")), 10);
        }
        run_grouped(engine, (0..users).map(|u| Command::login(user(u), "d0")), 11 + round);
    }
}

/// The command mix of the `commands` benchmark, for `users` users who are all logged in at
/// the start: mostly heartbeats, some status changes and subscriptions, and users leaving and
/// coming back.
pub fn mix(rng: &mut Rng, users: u64, len: usize) -> Vec<Command> {
    let mut online = vec![true; users as usize];
    (0..len)
        .map(|_| {
            let u = rng.below(users);
            let name = user(u);
            if !online[u as usize] {
                online[u as usize] = true;
                return Command::login(name, "d0");
            }
            match rng.below(100) {
                0..=69 => Command::heartbeat(name, "d0"),
                70..=81 => Command::set_status(name, "d0", if rng.below(2) == 0 { "busy" } else { "" }),
                82..=89 => Command::subscribe(name, "d0", [user(rng.below(users))]),
                _ => {
                    online[u as usize] = false;
                    Command::logout(name, "d0")
                }
            }
        })
        .collect()
}

/// Makes every user of `0..users` subscribe to `fan_out` others drawn from as many random
/// permutations, so that every user has about `fan_out` subscribers scattered over the whole
/// id space (the spread fan-out benchmark). Returns the permutations.
pub fn spread_subscriptions<S: EventStore>(
    engine: &mut Engine<S>,
    users: u64,
    fan_out: u64,
) -> Vec<Vec<u64>> {
    let mut rng = Rng::new(7);
    let perms: Vec<Vec<u64>> = (0..fan_out)
        .map(|_| {
            let mut p: Vec<u64> = (0..users).collect();
            for i in (1..p.len()).rev() {
                p.swap(i, rng.below(i as u64 + 1) as usize);
            }
            p
        })
        .collect();
    let subscribes = (0..users).map(|s| {
        let targets: Vec<String> =
            perms.iter().map(|p| p[s as usize]).filter(|&t| t != s).map(user).collect();
        Command::subscribe(user(s), "d0", targets)
    });
    run_grouped(engine, subscribes, 0);
    perms
}
