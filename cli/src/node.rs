//! `presence node`: one node of a cluster (docs/SPEC.md R9, README "Run a cluster"). It
//! joins the deployment through NATS, owns its share of the shards (their logs are JetStream
//! streams), serves their commands, and takes over the shards of nodes that are lost, until
//! SIGINT or SIGTERM, when it hands its shards over cleanly. With `--gateway-addr` it also
//! serves devices over WebSockets (docs/PROTOCOL.md, "In a cluster").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use presence_cluster::{run_node, AsyncClusterClient, NodeConfig, NodeOptions};
use presence_gateway::{ClusterGateway, GatewayConfig, GatewaySettings, Secret};

/// Arguments of `presence node`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
With --gateway-addr the node also runs the WebSocket gateway of `presence serve` (the page at /, \
the socket at /ws, the host's /friends endpoints; docs/PROTOCOL.md). A device may connect to any \
node: each request goes over NATS to the node that owns its user's shard, and notices come back \
to the node that holds the socket. Sessions are tagged with the node's id as their owner, so if \
the node is lost (killed, cut off for node_timeout_ms) the other nodes disconnect them and their \
watchers hear OFFLINE. On SIGINT or SIGTERM the gateway closes its sockets (1001) and \
disconnects its sessions before the node hands its shards over.")]
pub struct Args {
    /// The NATS servers (with JetStream), nats://HOST:PORT, several separated by commas.
    #[arg(long, value_name = "URL")]
    nats: String,
    /// This node's id: 1 to 64 letters, digits, _ or -, unique in the deployment. Devices
    /// whose sockets this node holds log in with it as their owner.
    #[arg(long, value_name = "ID")]
    node_id: String,
    /// The deployment's configuration (JSON; every field has a default): name, shards,
    /// replicas, node_timeout_ms, tick_interval_ms, the engine's configuration.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Also serve devices over WebSockets here (HTTP: the page at /, the socket at /ws),
    /// as `presence serve` does, with this node's id as the gateway's node_id.
    #[arg(long, value_name = "ADDR", requires = "secret_file")]
    gateway_addr: Option<SocketAddr>,
    /// The file holding the secret that signs login tokens and the host's bearer (as for
    /// `presence serve`); needed with --gateway-addr.
    #[arg(long, value_name = "FILE", requires = "gateway_addr")]
    secret_file: Option<PathBuf>,
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("presence node: {message}");
    ExitCode::from(2)
}

/// Runs `presence node`.
pub fn run(args: Args) -> ExitCode {
    let config = match &args.config {
        Some(path) => match NodeConfig::load(path) {
            Ok(config) => config,
            Err(e) => return fail(e),
        },
        None => NodeConfig::default(),
    };
    let secret = match &args.secret_file {
        Some(path) => match Secret::from_file(path) {
            Ok(secret) => Some(secret),
            Err(e) => return fail(e),
        },
        None => None,
    };
    crate::logging::init("presence node");
    let nofile = crate::descriptors::raise_nofile_limit("presence node");
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format!("cannot start its threads: {e}")),
    };
    let options = NodeOptions { nats_url: args.nats.clone(), node_id: args.node_id.clone(), config };
    let result = runtime.block_on(async move {
        match (args.gateway_addr, secret) {
            (Some(addr), Some(secret)) => {
                let stop = start_gateway(&options, addr, secret, nofile).await?;
                run_node(options, stop).await
            }
            _ => run_node(options, stop_signal()).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// Starts the gateway inside the node; returns what the node waits for before it hands its
/// shards over: a signal, then the gateway's sockets closed and its sessions disconnected.
async fn start_gateway(
    options: &NodeOptions,
    addr: SocketAddr,
    secret: Secret,
    nofile: Option<u64>,
) -> Result<impl std::future::Future<Output = ()>, String> {
    let node = &options.config;
    let mut config = GatewayConfig {
        engine: node.engine.clone(),
        gateway: GatewaySettings { node_id: options.node_id.clone(), ..GatewaySettings::default() },
        ..GatewayConfig::default()
    };
    crate::descriptors::fit_connections(&mut config, nofile, "presence node");
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let name = format!("presence-gateway-{}", options.node_id);
    let mut client =
        AsyncClusterClient::connect(&options.nats_url, &node.deployment, node.shards, &name).await?;
    client.request_timeout = Duration::from_millis(node.request_timeout_ms);
    // A request waits this long for a shard that moves (a lost node's, two timeouts and a
    // claim) before it is answered Unavailable (8009).
    client.retry_for =
        Duration::from_millis(node.node_timeout_ms.saturating_mul(4)).max(Duration::from_secs(10));
    let gateway = ClusterGateway::new(client, config, secret).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
    println!("presence node: gateway listening on http://{local} (node {})", options.node_id);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    Ok(async move {
        stop_signal().await;
        eprintln!("presence node: stopping: closing the gateway's sockets and disconnecting its sessions");
        let _ = stop.send(());
        match served.await {
            Ok(Ok(report)) => println!(
                "presence node: gateway stopped; {} sessions disconnected at shutdown; {} sockets served",
                report.sessions_disconnected_at_shutdown, report.stats.connections_total
            ),
            Ok(Err(e)) => eprintln!("presence node: the gateway stopped with an error: {e}"),
            Err(e) => eprintln!("presence node: the gateway's task failed: {e}"),
        }
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(terminate) => {
                terminate.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminated => {},
    }
}
