//! `presence conform FILE_OR_DIR... [--store mem|sled]`: runs conformance traces.
//!
//! Prints `FILE:LINE: expected ..., got ...` for every failure and closes with
//! `N passed, M failed`. Exit status: 0 when none failed, 1 when one failed, 2 when a trace
//! could not be read or parsed (docs/TRACE-FORMAT.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;
use presence_conformance::trace::{run_paths, Target};

/// Arguments of `presence conform`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace files (`.jsonl`), or directories searched recursively for them.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    paths: Vec<PathBuf>,
    /// Where to run each trace; repeat for several. Default: every storage backend.
    /// `model` runs the reference model instead of the engine.
    #[arg(long, value_enum, value_name = "STORE")]
    store: Vec<StoreArg>,
}

/// The values of `--store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreArg {
    /// The engine over the in-memory store.
    Mem,
    /// The engine over a temporary sled store.
    Sled,
    /// The reference model of the conformance crate.
    Model,
}

impl StoreArg {
    fn target(self) -> Target {
        match self {
            StoreArg::Mem => Target::Mem,
            StoreArg::Sled => Target::Sled,
            StoreArg::Model => Target::Model,
        }
    }
}

/// Runs the traces and returns the exit status.
pub fn run(args: Args) -> ExitCode {
    let mut targets: Vec<Target> = Vec::new();
    for store in &args.store {
        if !targets.contains(&store.target()) {
            targets.push(store.target());
        }
    }
    if targets.is_empty() {
        targets = Target::stores().to_vec();
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let status = run_paths(&args.paths, &targets, &mut out);
    let _ = out.flush();
    ExitCode::from(u8::try_from(status).unwrap_or(2))
}
