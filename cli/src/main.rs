//! `presence`: the command-line front of the presence engine.

use clap::Parser;

/// Run, inspect and check the presence engine.
#[derive(Parser, Debug)]
#[command(name = "presence", version, about)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
}
