//! `presence serve`: the WebSocket gateway (presence-gateway) on a sled store or a NATS
//! stream, until SIGINT or SIGTERM; then it closes the sockets, disconnects their sessions,
//! drains the engine's queue, syncs and exits. Should the runtime stop by itself (its store
//! could not make a turn durable), it closes the sockets and exits with status 1 and the
//! cause on stderr; a bad configuration exits with status 2.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use presence_gateway::{Gateway, GatewayConfig, GatewayError, Secret};
use presence_storage_sled::Durability;

use crate::stores::{open_or_create, StoreAddress};

/// Arguments of `presence serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to listen for HTTP and WebSockets (the page at /, the socket at /ws).
    #[arg(long, default_value = "127.0.0.1:7878")]
    addr: SocketAddr,
    /// The store, created if missing: a sled directory, or nats://HOST:PORT/STREAM.
    #[arg(long, default_value = "presence-data")]
    store: String,
    /// The file holding the secret that signs login tokens and the host's bearer (at least
    /// 16 bytes; `head -c 32 /dev/urandom | base64 > FILE` makes one).
    #[arg(long)]
    secret_file: PathBuf,
    /// A TOML file of `[engine]`, `[runtime]` and `[gateway]` settings (docs/PROTOCOL.md lists every
    /// key); unknown keys are an error.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("presence serve: {message}");
    ExitCode::from(2)
}

/// Runs `presence serve`.
pub fn run(args: Args) -> ExitCode {
    let mut config = match &args.config {
        None => GatewayConfig::default(),
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => match GatewayConfig::from_toml(&text) {
                Ok(config) => config,
                Err(e) => return fail(format!("{}: {e}", path.display())),
            },
            Err(e) => return fail(format!("{}: {e}", path.display())),
        },
    };
    crate::logging::init("presence serve");
    let nofile = crate::descriptors::raise_nofile_limit("presence serve");
    crate::descriptors::fit_connections(&mut config, nofile, "presence serve");
    let secret = match Secret::from_file(&args.secret_file) {
        Ok(secret) => secret,
        Err(e) => return fail(e),
    };
    let address = match StoreAddress::parse(&args.store) {
        Ok(address) => address,
        Err(e) => return fail(e),
    };
    // The runtime syncs once per turn, before it replies (R8.3).
    let store = match open_or_create(&address, Durability::GroupCommit, 1) {
        Ok(store) => store,
        Err(e) => return fail(e),
    };
    let node = config.gateway.node_id.clone();
    // Opened before any async runtime exists: the NATS store refuses calls from inside one.
    let gateway = match Gateway::open(store, config, secret) {
        Ok(gateway) => gateway,
        Err(e) => return fail(format!("{address}: {e}")),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let listener = match runtime.block_on(tokio::net::TcpListener::bind(args.addr)) {
        Ok(listener) => listener,
        Err(e) => return fail(format!("cannot listen on {}: {e}", args.addr)),
    };
    let local = listener.local_addr().map_or_else(|_| args.addr.to_string(), |a| a.to_string());
    println!("presence serve: listening on http://{local} (node {node}, store {address})");
    let served = runtime.block_on(gateway.serve(listener, stop_signal("presence serve")));
    match served {
        Ok(report) => {
            println!(
                "presence serve: stopped; {} sessions of the previous process were disconnected at start, \
                 {} at shutdown; {} sockets served",
                report.restored_sessions_disconnected,
                report.sessions_disconnected_at_shutdown,
                report.stats.connections_total
            );
            ExitCode::SUCCESS
        }
        // The runtime stopped by itself (a store that could not make a turn durable): exit
        // with the cause, so that a supervisor restarts the server and the next start
        // disconnects the sessions this one held (R8.4).
        Err(GatewayError::Engine(e)) => {
            eprintln!("presence serve: the presence runtime stopped, so the server stops: {e}");
            ExitCode::from(1)
        }
        Err(e) => fail(e),
    }
}

/// SIGINT (Ctrl-C) or SIGTERM; `name` says who stops.
pub(crate) async fn stop_signal(name: &'static str) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let term = async {
        match terminate.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    eprintln!("{name}: stopping: closing sockets, draining and syncing");
}
