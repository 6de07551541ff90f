//! `presence`: the command-line front of the presence engine.
//!
//! Each subcommand lives in its own module; this file only dispatches.

mod cluster_load;
mod conform;
mod descriptors;

mod inspect;
mod load;
mod logging;
mod node;
mod redis_peer;
mod replay;
mod serve;
mod shell;
mod simulate;
mod stores;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run, inspect and check the presence engine.
#[derive(Parser, Debug)]
#[command(name = "presence", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
enum Commands {
    /// Run conformance traces (docs/TRACE-FORMAT.md) on the engine, or traces and random cases
    /// on any implementation behind an adapter program (--exec); or generate traces.
    Conform(conform::Args),
    /// Drive the engine in memory with text requests at explicit times (`at 100 login alice
    /// phone`, `at 500 tick`, `check status alice`), one a line; `help` lists them.
    Shell(shell::Args),
    /// Run a simulated load through the runtime on a sled store or a NATS stream and print what
    /// happened.
    Simulate(simulate::Args),
    /// Show what a store holds (recovering it as the engine would).
    Inspect(inspect::Args),
    /// Rebuild the state from the log alone and check it against snapshot + tail.
    Replay(replay::Args),
    /// Run one node of a cluster over NATS JetStream: it owns a share of the shards and takes
    /// over those of nodes that are lost, until SIGINT or SIGTERM.
    Node(node::Args),
    /// Drive a running cluster from many client threads and say how fast it answered.
    ClusterLoad(cluster_load::Args),

    /// Serve devices over WebSockets (the page at /, the socket at /ws) until SIGINT or SIGTERM.
    Serve(serve::Args),
    /// Print a signed login token for a user, or the host's bearer.
    Token(token::Args),
    /// Drive simulated devices over WebSockets against the gateway and the Redis design, and
    /// compare throughput, notice latency and server CPU.
    Load(load::Args),
    /// Serve the gateway's protocol the usual Redis way (the load test's baseline).
    RedisPeer(redis_peer::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Commands::Conform(args) => conform::run(args),
        Commands::Node(args) => node::run(args),
        Commands::ClusterLoad(args) => cluster_load::run(args),

        Commands::Shell(args) => shell::run(args),
        Commands::Simulate(args) => simulate::run(args),
        Commands::Inspect(args) => inspect::run(args),
        Commands::Replay(args) => replay::run(args),
        Commands::Serve(args) => serve::run(args),
        Commands::Token(args) => token::run(args),
        Commands::Load(args) => load::run(args),
        Commands::RedisPeer(args) => redis_peer::run(args),
    }
}
