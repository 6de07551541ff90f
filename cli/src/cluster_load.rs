//! `presence cluster-load`: drives a running cluster (`presence node` processes over NATS)
//! from many client threads and says how fast it answered: the way to measure a cluster, and
//! to see it serve while nodes come and go (README "Run a cluster").
//!
//! Each client thread owns the users `u` with `u mod clients == thread` (so no two threads
//! race on one user), logs them in, then sends a mix until the time is up: 70 % heartbeats,
//! 20 % custom status changes, 10 % subscriptions to a random user. Every command waits for
//! its durable answer (`ClusterClient::execute`), so the cluster's throughput is what the
//! threads' concurrency lets its group commits gather.

use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use presence_cluster::{ClientError, ClusterClient};
use presence_engine::Command;
use presence_storage_nats::{open_nats_deployment, NatsOptions};
use serde_json::json;

/// Arguments of `presence cluster-load`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The NATS servers of the cluster, nats://HOST:PORT, several separated by commas.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// The deployment's name (the nodes' configuration's `deployment`).
    #[arg(long, default_value = "presence")]
    deployment: String,
    /// Users, each on one device.
    #[arg(long, default_value_t = 10_000)]
    users: u64,
    /// Client threads, each with one command in flight at a time.
    #[arg(long, default_value_t = 64)]
    clients: u64,
    /// Seconds of the command mix, after the logins.
    #[arg(long = "duration-s", default_value_t = 10)]
    duration_s: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// What one client thread saw.
struct Tally {
    logins: u64,
    commands: u64,
    refused: u64,
    unavailable: u64,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            logins: 0,
            commands: 0,
            refused: 0,
            unavailable: 0,
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
        }
    }

    /// Sends `command`, counting its outcome and its latency.
    fn send(&mut self, client: &ClusterClient, command: Command) -> bool {
        let started = Instant::now();
        let outcome = client.execute(command, None);
        let _ = self.latency_us.record(started.elapsed().as_micros().max(1) as u64);
        match outcome {
            Ok(_) => true,
            Err(ClientError::Refused { .. }) => {
                self.refused += 1;
                false
            }
            Err(_) => {
                self.unavailable += 1;
                false
            }
        }
    }

    fn add(&mut self, other: &Tally) {
        self.logins += other.logins;
        self.commands += other.commands;
        self.refused += other.refused;
        self.unavailable += other.unavailable;
        let _ = self.latency_us.add(&other.latency_us);
    }
}

/// splitmix64, seeded per thread: which user, which command.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

fn user(u: u64) -> String {
    format!("user{u}")
}

/// Runs `presence cluster-load`.
pub fn run(args: Args) -> ExitCode {
    if args.users == 0 || args.clients == 0 || args.clients > 10_000 {
        eprintln!("presence cluster-load: --users must be at least 1 and --clients from 1 to 10000");
        return ExitCode::from(2);
    }
    let options = NatsOptions::new(args.nats.clone(), format!("{}-deployment", args.deployment));
    let shards = match open_nats_deployment(&options, &args.deployment, None) {
        Ok(shards) => shards,
        Err(e) => {
            eprintln!("presence cluster-load: {e} (is a node of deployment {} running?)", args.deployment);
            return ExitCode::from(2);
        }
    };
    let client = match ClusterClient::connect(&args.nats, &args.deployment, shards) {
        Ok(client) => Arc::new(client),
        Err(e) => {
            eprintln!("presence cluster-load: {e}");
            return ExitCode::from(2);
        }
    };
    let nodes = client.nodes(Duration::from_millis(1_500)).len();

    // The logins, all threads at once.
    let started = Instant::now();
    let logins = spread(&args, &client, |tally, client, mine, _| {
        for &u in mine {
            if tally.send(client, Command::login(user(u), "d0")) {
                tally.logins += 1;
            }
        }
    });
    let login_s = started.elapsed().as_secs_f64();

    // The mix, until the time is up.
    let started = Instant::now();
    let until = started + Duration::from_secs(args.duration_s);
    let users = args.users;
    let mix = spread(&args, &client, move |tally, client, mine, rng| {
        if mine.is_empty() {
            return;
        }
        while Instant::now() < until {
            let name = user(mine[rng.below(mine.len() as u64) as usize]);
            let command = match rng.below(10) {
                0..=6 => Command::heartbeat(name, "d0"),
                7 | 8 => Command::set_status(name, "d0", if rng.below(2) == 0 { "busy" } else { "" }),
                _ => Command::subscribe(name, "d0", [user(rng.below(users))]),
            };
            if tally.send(client, command) {
                tally.commands += 1;
            }
        }
    });
    let mix_s = started.elapsed().as_secs_f64();

    let at = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    if args.json {
        println!(
            "{}",
            json!({
                "nodes": nodes, "shards": shards, "users": args.users, "clients": args.clients,
                "logins": logins.logins, "logins_per_s": logins.logins as f64 / login_s,
                "commands": mix.commands, "commands_per_s": mix.commands as f64 / mix_s,
                "refused": mix.refused + logins.refused, "unavailable": mix.unavailable + logins.unavailable,
                "latency_ms": {"p50": at(&mix.latency_us, 0.5), "p99": at(&mix.latency_us, 0.99), "max": at(&mix.latency_us, 1.0)},
            })
        );
    } else {
        println!(
            "cluster of {nodes} node(s), {shards} shards, {} users, {} clients",
            args.users, args.clients
        );
        println!("logins:  {} in {login_s:.2} s, {:.0} per s", logins.logins, logins.logins as f64 / login_s);
        println!(
            "mix:     {} in {mix_s:.2} s, {:.0} commands per s",
            mix.commands,
            mix.commands as f64 / mix_s
        );
        println!(
            "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (send to durable answer)",
            at(&mix.latency_us, 0.5),
            at(&mix.latency_us, 0.99),
            at(&mix.latency_us, 1.0)
        );
        println!(
            "refused: {}, unavailable or timed out: {}",
            mix.refused + logins.refused,
            mix.unavailable + logins.unavailable
        );
    }
    if logins.logins + mix.commands == 0 {
        eprintln!("presence cluster-load: nothing was answered (are the nodes serving every shard?)");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Runs `work` on `args.clients` threads, each with its own users and generator, and adds
/// up what they saw.
fn spread<F>(args: &Args, client: &Arc<ClusterClient>, work: F) -> Tally
where
    F: Fn(&mut Tally, &ClusterClient, &[u64], &mut Rng) + Send + Sync + Clone + 'static,
{
    let threads: Vec<_> = (0..args.clients)
        .map(|t| {
            let mine: Vec<u64> = (t..args.users).step_by(args.clients as usize).collect();
            let (client, work) = (Arc::clone(client), work.clone());
            thread::spawn(move || {
                let mut tally = Tally::new();
                work(&mut tally, &client, &mine, &mut Rng(t + 1));
                tally
            })
        })
        .collect();
    let mut total = Tally::new();
    for thread in threads {
        if let Ok(tally) = thread.join() {
            total.add(&tally);
        }
    }
    total
}
