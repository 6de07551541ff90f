//! `presence node`: one node of a cluster (docs/SPEC.md R9, README "Run a cluster"). It
//! joins the deployment through NATS, owns its share of the shards (their logs are JetStream
//! streams), serves their commands, and takes over the shards of nodes that are lost, until
//! SIGINT or SIGTERM, when it hands its shards over cleanly.

use std::path::PathBuf;
use std::process::ExitCode;

use presence_cluster::{run_node, NodeConfig, NodeOptions};

/// Arguments of `presence node`.
#[derive(clap::Args, Debug)]
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
}

/// Runs `presence node`.
pub fn run(args: Args) -> ExitCode {
    let config = match &args.config {
        Some(path) => match NodeConfig::load(path) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("presence node: {e}");
                return ExitCode::from(2);
            }
        },
        None => NodeConfig::default(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("presence node: cannot start its threads: {e}");
            return ExitCode::from(2);
        }
    };
    let options = NodeOptions { nats_url: args.nats, node_id: args.node_id, config };
    match runtime.block_on(run_node(options, stop_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presence node: {e}");
            ExitCode::from(2)
        }
    }
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
