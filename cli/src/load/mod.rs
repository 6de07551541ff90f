//! `presence load`: an end-to-end load test over real WebSockets. It starts the servers
//! itself (or drives one given by address), runs N simulated devices against each
//! (devices.rs), and reports requests answered per second, notices delivered per second,
//! notice latency (from the command's send to the notice's arrival at another device), and
//! the servers' CPU seconds per million notices (from /proc, servers.rs).
//!
//! `--against both` races the gateway (the engine on sled, each turn fsynced before its
//! replies and notices go out) and the usual Redis design (peers/redis-presence: SET EX,
//! PUBLISH, SUBSCRIBE, MGET on a redis-server that persists nothing) with the same devices,
//! the same seed and the same plan, one after the other.

mod devices;
mod servers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use presence_gateway::Secret;
use serde_json::{json, Value};

use devices::{Plan, Tally};
use servers::Server;

/// Which servers to race.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Against {
    /// `presence serve`: the engine on sled.
    Gateway,
    /// `presence redis-peer` on a redis-server.
    Redis,
    /// Both, one after the other.
    Both,
}

/// Arguments of `presence load`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The servers to drive.
    #[arg(long, value_enum, default_value_t = Against::Both)]
    against: Against,
    /// Simulated devices (one user each), each on its own WebSocket.
    #[arg(long, default_value_t = 1_000)]
    devices: usize,
    /// How long the measured window lasts, in seconds.
    #[arg(long = "duration-s", default_value_t = 20)]
    duration_s: u64,
    /// Seconds of logins and subscriptions before the window opens.
    #[arg(long = "warmup-s", default_value_t = 5)]
    warmup_s: u64,
    /// Mean milliseconds between two status changes of one device.
    #[arg(long = "status-every-ms", default_value_t = 2_000)]
    status_every_ms: u64,
    /// Milliseconds between two WebSocket pings (heartbeats) of one device.
    #[arg(long = "ping-every-ms", default_value_t = 5_000)]
    ping_every_ms: u64,
    /// Mean seconds a session lasts before the device logs out or vanishes and comes back.
    #[arg(long = "session-s", default_value_t = 30)]
    session_s: u64,
    /// Popular users (u0, u1, ...): every device follows each with even odds.
    #[arg(long, default_value_t = 3)]
    popular: usize,
    /// Other users each device follows, picked at random.
    #[arg(long, default_value_t = 5)]
    follows: usize,
    /// Seed of the devices' choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Drive a server already running here instead of starting one (with --against gateway
    /// or redis, and --secret-file).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// The secret of the server given by --addr.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// The process whose CPU time counts as the server's, for a server given by --addr.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print the results as one JSON object.
    #[arg(long)]
    json: bool,
}

/// The most devices one run drives (each holds a socket and a file descriptor).
const DEVICES_MAX: usize = 50_000;

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("presence load: {message}");
    ExitCode::from(2)
}

/// Runs `presence load`.
pub fn run(args: Args) -> ExitCode {
    if args.devices < 2 || args.devices > DEVICES_MAX {
        return fail(format!("--devices must be 2 to {DEVICES_MAX}"));
    }
    if args.duration_s == 0 || args.status_every_ms == 0 || args.ping_every_ms == 0 || args.session_s == 0 {
        return fail("--duration-s, --status-every-ms, --ping-every-ms and --session-s must be at least 1");
    }
    if args.addr.is_some() && (args.against == Against::Both || args.secret_file.is_none()) {
        return fail("--addr drives one server: give --against gateway or redis, and its --secret-file");
    }
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return fail(format!("no temporary directory: {e}")),
    };
    let secret_file = match &args.secret_file {
        Some(path) => path.clone(),
        None => {
            let path = dir.path().join("secret");
            if let Err(e) =
                std::fs::write(&path, format!("load-test-secret-{}-{}", args.seed, std::process::id()))
            {
                return fail(format!("{}: {e}", path.display()));
            }
            path
        }
    };
    let secret = match Secret::from_file(&secret_file) {
        Ok(secret) => secret,
        Err(e) => return fail(e),
    };
    let load_before = servers::load_average();
    let sides: Vec<Against> = match args.against {
        Against::Both => vec![Against::Gateway, Against::Redis],
        one => vec![one],
    };
    let mut results = Vec::new();
    for side in sides {
        if !args.json {
            eprintln!("presence load: {} devices against {} ...", args.devices, name(side));
        }
        match race(&args, side, dir.path(), &secret_file, &secret) {
            Ok(result) => results.push(result),
            Err(e) => return fail(format!("{}: {e}", name(side))),
        }
    }
    let report = json!({
        "devices": args.devices,
        "duration_s": args.duration_s,
        "warmup_s": args.warmup_s,
        "status_every_ms": args.status_every_ms,
        "ping_every_ms": args.ping_every_ms,
        "session_s": args.session_s,
        "popular": args.popular,
        "follows": args.follows,
        "seed": args.seed,
        "load_average_before": load_before,
        "results": results,
    });
    match args.json {
        true => println!("{report}"),
        false => print_table(&report),
    }
    ExitCode::SUCCESS
}

fn name(side: Against) -> &'static str {
    match side {
        Against::Gateway => "gateway",
        Against::Redis => "redis",
        Against::Both => "both",
    }
}

/// Starts one side's servers (unless given one), runs the devices, measures, stops.
fn race(
    args: &Args,
    side: Against,
    dir: &Path,
    secret_file: &Path,
    secret: &Secret,
) -> Result<Value, String> {
    let side_dir = dir.join(name(side));
    std::fs::create_dir_all(&side_dir).map_err(|e| format!("{}: {e}", side_dir.display()))?;
    let mut server = match args.addr {
        Some(addr) => Server { addr, processes: Vec::new() },
        None => match side {
            Against::Redis => servers::start_redis(&side_dir, secret_file)?,
            _ => servers::start_gateway(&side_dir, secret_file, args.devices)?,
        },
    };
    let mut pids: Vec<(String, u32)> =
        server.processes.iter().map(|p| (p.name.to_string(), p.pid())).collect();
    if let Some(pid) = args.server_pid {
        pids.push(("server".into(), pid));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let tokens: Vec<String> = (0..args.devices).map(|i| secret.mint_for(&format!("u{i}"), 3_600)).collect();
    let (tally, cpu, rss) = runtime.block_on(async {
        let epoch = tokio::time::Instant::now();
        let measure_from = epoch + Duration::from_secs(args.warmup_s);
        let measure_until = measure_from + Duration::from_secs(args.duration_s);
        let plan = Arc::new(Plan {
            url: format!("ws://{}/ws", server.addr),
            devices: args.devices,
            popular: args.popular.min(args.devices),
            follows: args.follows,
            status_every: Duration::from_millis(args.status_every_ms),
            ping_every: Duration::from_millis(args.ping_every_ms),
            session: Duration::from_secs(args.session_s),
            epoch,
            measure_from,
            measure_until,
            seed: args.seed,
            tokens,
        });
        let tasks: Vec<_> =
            (0..args.devices).map(|i| tokio::spawn(devices::run(i, Arc::clone(&plan)))).collect();
        tokio::time::sleep_until(measure_from).await;
        let cpu_before = cpu_of(&pids);
        tokio::time::sleep_until(measure_until).await;
        let cpu_after = cpu_of(&pids);
        let rss: Vec<(String, Option<u64>)> =
            pids.iter().map(|(n, p)| (n.clone(), servers::resident_bytes(*p))).collect();
        let mut tally = Tally::empty();
        for task in tasks {
            if let Ok(device) = task.await {
                tally.add(&device);
            }
        }
        let cpu: Vec<(String, f64)> = cpu_before
            .iter()
            .zip(&cpu_after)
            .map(|((name, before), (_, after))| (name.clone(), after - before))
            .collect();
        (tally, cpu, rss)
    });
    for process in &mut server.processes {
        process.stop();
    }
    Ok(summarize(args, side, &tally, &cpu, &rss))
}

/// CPU seconds used so far by each process (0 for one that cannot be read).
fn cpu_of(pids: &[(String, u32)]) -> Vec<(String, f64)> {
    pids.iter().map(|(name, pid)| (name.clone(), servers::cpu_seconds(*pid).unwrap_or(0.0))).collect()
}

fn summarize(
    args: &Args,
    side: Against,
    tally: &Tally,
    cpu: &[(String, f64)],
    rss: &[(String, Option<u64>)],
) -> Value {
    let seconds = args.duration_s as f64;
    let cpu_total: f64 = cpu.iter().map(|(_, s)| s).sum();
    let per_million = match tally.notices {
        0 => Value::Null,
        n => json!(cpu_total / (n as f64 / 1e6)),
    };
    let latency = &tally.latency_us;
    let refused: serde_json::Map<String, Value> =
        tally.refused_codes.iter().map(|(code, n)| (code.to_string(), json!(n))).collect();
    json!({
        "server": name(side),
        "requests_answered": tally.answered,
        "requests_per_s": tally.answered as f64 / seconds,
        "busy": tally.busy,
        "refused": tally.refused,
        "refused_by_code": refused,
        "notices": tally.notices,
        "notices_per_s": tally.notices as f64 / seconds,
        "pings": tally.pings,
        "sessions_started": tally.sessions,
        "connect_failures": tally.connect_failures,
        "latency_samples": latency.len(),
        "latency_p50_ms": latency.value_at_quantile(0.50) as f64 / 1_000.0,
        "latency_p99_ms": latency.value_at_quantile(0.99) as f64 / 1_000.0,
        "latency_max_ms": latency.max() as f64 / 1_000.0,
        "cpu_s": cpu.iter().map(|(n, s)| (n.clone(), json!(s))).collect::<serde_json::Map<String, Value>>(),
        "cpu_s_total": cpu_total,
        "cpu_s_per_million_notices": per_million,
        "cpu_share": cpu_total / seconds,
        "rss_bytes": rss.iter().map(|(n, b)| (n.clone(), json!(b))).collect::<serde_json::Map<String, Value>>(),
    })
}

/// How one row of the table shows one server's result.
type Cell = Box<dyn Fn(&Value) -> String>;

fn print_table(report: &Value) {
    let empty = Vec::new();
    let results = report["results"].as_array().unwrap_or(&empty);
    println!(
        "presence load: {} devices, {} s measured after {} s of logins, status change every {} ms, \
         ping every {} ms, sessions of {} s (seed {}); load average before: {}",
        report["devices"],
        report["duration_s"],
        report["warmup_s"],
        report["status_every_ms"],
        report["ping_every_ms"],
        report["session_s"],
        report["seed"],
        report["load_average_before"].as_str().unwrap_or("?"),
    );
    let number = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let rows: [(&str, Cell); 8] = [
        ("requests answered/s", Box::new(move |r| format!("{:.0}", number(&r["requests_per_s"])))),
        ("refused: busy / other", Box::new(|r| format!("{} / {}", r["busy"], r["refused"]))),
        ("notices delivered/s", Box::new(move |r| format!("{:.0}", number(&r["notices_per_s"])))),
        (
            "notice latency p50 / p99",
            Box::new(move |r| {
                format!("{:.2} / {:.2} ms", number(&r["latency_p50_ms"]), number(&r["latency_p99_ms"]))
            }),
        ),
        ("latency samples", Box::new(|r| r["latency_samples"].to_string())),
        (
            "server CPU-s per M notices",
            Box::new(move |r| format!("{:.1}", number(&r["cpu_s_per_million_notices"]))),
        ),
        (
            "server CPU (share of a core)",
            Box::new(move |r| format!("{:.0} %", 100.0 * number(&r["cpu_share"]))),
        ),
        (
            "server CPU-s by process",
            Box::new(move |r| {
                let Some(cpu) = r["cpu_s"].as_object() else { return String::new() };
                cpu.iter().map(|(n, s)| format!("{n} {:.1}", number(s))).collect::<Vec<_>>().join(", ")
            }),
        ),
    ];
    print!("{:<32}", "");
    for result in results {
        print!("{:<34}", result["server"].as_str().unwrap_or("?"));
    }
    println!();
    for (label, cell) in rows.iter() {
        print!("{label:<32}");
        for result in results {
            print!("{:<34}", cell(result));
        }
        println!();
    }
}
