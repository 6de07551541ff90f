//! `presence redis-peer`: the Redis design the load test races against
//! (peers/redis-presence), serving the gateway's protocol until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use presence_gateway::Secret;
use presence_redis_peer::{serve, PeerSettings};

/// Arguments of `presence redis-peer`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to listen for WebSockets (at /ws).
    #[arg(long, default_value = "127.0.0.1:7879")]
    addr: SocketAddr,
    /// The Redis server.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis: String,
    /// The secret file that signs login tokens (as `presence serve`'s).
    #[arg(long)]
    secret_file: PathBuf,
    /// The `EX` of status keys, in seconds (the engine's heartbeat timeout).
    #[arg(long = "heartbeat-ttl-s", default_value_t = 400)]
    heartbeat_ttl_s: u64,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("presence redis-peer: {message}");
    ExitCode::from(2)
}

/// Runs `presence redis-peer`.
pub fn run(args: Args) -> ExitCode {
    let secret = match Secret::from_file(&args.secret_file) {
        Ok(secret) => secret,
        Err(e) => return fail(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let listener = match runtime.block_on(tokio::net::TcpListener::bind(args.addr)) {
        Ok(listener) => listener,
        Err(e) => return fail(format!("cannot listen on {}: {e}", args.addr)),
    };
    println!("presence redis-peer: listening on ws://{}/ws, Redis at {}", args.addr, args.redis);
    let settings = PeerSettings { heartbeat_ttl_s: args.heartbeat_ttl_s, ..PeerSettings::default() };
    match runtime.block_on(serve(
        listener,
        &args.redis,
        secret,
        settings,
        crate::serve::stop_signal("presence redis-peer"),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
