//! `presence conform`: conformance traces on the engine or the model, the same traces or
//! random cases on any implementation behind an adapter program, and generated traces.
//!
//! - `presence conform FILE_OR_DIR... [--store mem|sled|model|sharded:N]`: the traces on this engine.
//! - `presence conform --store cluster:N [--nats URL] FILE_OR_DIR...`: the traces on a cluster
//!   of N nodes in this process over NATS (a nats-server of its own unless `--nats` names
//!   one), each trace on a deployment of its own, every step followed by the nodes' quiescence.
//! - `presence conform --exec CMD FILE_OR_DIR...`: the traces on the adapter `CMD`.
//! - `presence conform --exec CMD [--cases N] [--seed S] [--ops LIST] [--out DIR]`: random
//!   cases on the adapter against the reference model; the first failure is shrunk and saved
//!   as a trace in `DIR`.
//! - `presence conform --generate N --out DIR [--seed S] [--ops LIST]`: N traces with every
//!   expectation computed by the reference model.
//!
//! Every run that checks something closes with `N passed, M failed`. Exit status: 0 when none
//! failed, 1 when one failed, 2 when a trace could not be read, the arguments are wrong, or
//! the adapter misbehaved (docs/TRACE-FORMAT.md, docs/CONFORMANCE-PROTOCOL.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use presence_cli::cluster_subject::ClusterSubject;
use presence_conformance::exec::{run_traces, Adapter};
use presence_conformance::kit::{self, KitOptions, Ops};
use presence_conformance::trace::{run_paths, run_paths_on, Target};
use presence_testkit::NatsServer;

/// The most operations `--steps` allows in one case: a case is held in memory and shrunk.
const STEPS_MAX: usize = 10_000;
/// The most traces one `--generate` writes.
const GENERATE_MAX: usize = 1_000_000;
/// The most nodes `--store cluster:N` starts.
const CLUSTER_NODES_MAX: u32 = 8;

/// Where `--store` runs the traces: this engine on a store (or the model), or a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Engine(Target),
    Cluster(u32),
}

impl Store {
    fn parse(text: &str) -> Result<Store, String> {
        match text.strip_prefix("cluster:") {
            Some(n) => match n.parse::<u32>() {
                Ok(n) if (1..=CLUSTER_NODES_MAX).contains(&n) => Ok(Store::Cluster(n)),
                _ => Err(format!("cluster:N takes 1 to {CLUSTER_NODES_MAX} nodes, not {n:?}")),
            },
            None => Target::parse(text).map(Store::Engine),
        }
    }
}

/// Arguments of `presence conform`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Trace files (`.jsonl`), or directories searched recursively for them.
    #[arg(value_name = "FILE_OR_DIR")]
    paths: Vec<PathBuf>,
    /// Where to run each trace; repeat for several. Default: every storage backend.
    /// `mem`, `sled`: the engine on that store; `model`: the reference model instead of the
    /// engine; `sharded:N`: a sharded deployment of N shards in memory (docs/SPEC.md R9),
    /// each step waiting until the shards are at rest; `cluster:N`: N nodes of a cluster over
    /// NATS (with `--nats`, or a nats-server of its own), each step waiting until the nodes
    /// are at rest.
    #[arg(long, value_name = "STORE", value_parser = Store::parse, conflicts_with_all = ["exec", "generate"])]
    store: Vec<Store>,
    /// The NATS servers (`nats://HOST:PORT`, several separated by commas, JetStream on) for
    /// `--store cluster:N`. Default: a nats-server of its own on a free loopback port, in a
    /// temporary directory, stopped at the end.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// An adapter program to check instead of this engine, speaking JSON lines on its standard
    /// input and output (docs/CONFORMANCE-PROTOCOL.md). Split into words as a shell would, but
    /// run without one. With traces, runs them; without, runs random cases.
    #[arg(long, value_name = "CMD", conflicts_with = "generate")]
    exec: Option<String>,
    /// Write this many random traces, with every expectation computed by the reference model,
    /// into `--out`, for systems that can only replay files.
    #[arg(long, value_name = "N")]
    generate: Option<usize>,
    /// How many random cases must pass (with `--exec` and no traces).
    #[arg(long, value_name = "N", default_value_t = 256)]
    cases: u32,
    /// The seed of the random cases or traces; the same seed gives the same ones. Default: a
    /// new one each run, printed first.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// The operations to generate, comma-separated (`login,logout,tick`), or `all`. Default:
    /// every command of SPEC.md and `tick`; add `restart` for a system that keeps its state
    /// across a stop.
    #[arg(long, value_name = "LIST")]
    ops: Option<String>,
    /// The most operations in one random case or trace.
    #[arg(long, value_name = "N", default_value_t = 60)]
    steps: usize,
    /// Where the shrunk failing case is written (`--exec`), or the generated traces
    /// (`--generate`, where it must be given). Default for `--exec`: ./conform-failures.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// How long the adapter may take to answer one request, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout_ms: u64,
}

/// Runs the subcommand and returns the exit status.
pub fn run(args: Args) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let status = match dispatch(&args, &mut out) {
        Ok(status) => status,
        Err(message) => {
            let _ = writeln!(out, "{message}");
            2
        }
    };
    let _ = out.flush();
    ExitCode::from(status)
}

fn dispatch(args: &Args, out: &mut impl Write) -> Result<u8, String> {
    if let Some(count) = args.generate {
        if !args.paths.is_empty() {
            return Err("--generate writes traces; it takes no FILE_OR_DIR".into());
        }
        if count > GENERATE_MAX {
            return Err(format!("--generate writes at most {GENERATE_MAX} traces at once"));
        }
        let dir = args.out.as_deref().ok_or("--generate needs --out DIR")?;
        return generate(args, count, dir, out);
    }
    if let Some(command) = &args.exec {
        if !args.paths.is_empty() {
            let adapter = Adapter::spawn(command, Duration::from_millis(args.timeout_ms))?;
            return Ok(status(run_traces(&adapter, &args.paths, out)));
        }
        let options = options(args)?;
        let adapter = Adapter::spawn(command, Duration::from_millis(args.timeout_ms))?;
        return random_cases(args, &options, &adapter, command, out);
    }
    if args.paths.is_empty() {
        return Err("name traces to run (FILE_OR_DIR), or --exec CMD, or --generate N --out DIR".into());
    }
    let mut targets: Vec<Target> = Vec::new();
    let mut clusters: Vec<u32> = Vec::new();
    for store in &args.store {
        match *store {
            Store::Engine(target) if !targets.contains(&target) => targets.push(target),
            Store::Cluster(nodes) if !clusters.contains(&nodes) => clusters.push(nodes),
            _ => {}
        }
    }
    if args.nats.is_some() && clusters.is_empty() {
        return Err("--nats is for --store cluster:N".into());
    }
    if targets.is_empty() && clusters.is_empty() {
        targets = Target::stores().to_vec();
    }
    let mut worst = 0;
    if !targets.is_empty() {
        worst = worst.max(run_paths(&args.paths, &targets, out));
    }
    for nodes in clusters {
        worst = worst.max(on_cluster(args, nodes, out)?);
    }
    Ok(status(worst))
}

/// Runs the traces on a cluster of `nodes` nodes, each trace on a deployment of its own.
fn on_cluster(args: &Args, nodes: u32, out: &mut impl Write) -> Result<i32, String> {
    let own;
    let url = match &args.nats {
        Some(url) => url.clone(),
        None => {
            own = NatsServer::try_start()
                .map_err(|e| format!("cannot start a nats-server for cluster:{nodes}: {e}"))?;
            own.url()
        }
    };
    // Deployment names that no earlier run on the same servers used.
    let run =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    let mut next = 0;
    let _ = writeln!(out, "cluster:{nodes}");
    Ok(run_paths_on(&args.paths, out, |trace| {
        next += 1;
        ClusterSubject::start(&url, &format!("conform-{run}-{next}"), trace.config.clone(), nodes)
    }))
}

fn status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(2)
}

/// The kit's options from the arguments; a fresh seed when none is given.
fn options(args: &Args) -> Result<KitOptions, String> {
    let ops = match &args.ops {
        Some(list) => Ops::parse(list).map_err(|e| format!("--ops: {e}"))?,
        None => Ops::default(),
    };
    if !(1..=STEPS_MAX).contains(&args.steps) {
        return Err(format!("--steps must be 1 to {STEPS_MAX}"));
    }
    let seed = args.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.as_secs() ^ u64::from(now.subsec_nanos()).rotate_left(32) ^ u64::from(std::process::id())
    });
    Ok(KitOptions { cases: args.cases, seed, ops, max_steps: args.steps, ..KitOptions::default() })
}

fn random_cases(
    args: &Args,
    options: &KitOptions,
    adapter: &Adapter,
    command: &str,
    out: &mut impl Write,
) -> Result<u8, String> {
    let _ = writeln!(
        out,
        "seed {} (--seed {} repeats this run), {} cases of up to {} operations: {}",
        options.seed, options.seed, options.cases, options.max_steps, options.ops
    );
    let report = kit::check(options, |config| Ok(adapter.start(config)));
    if let Some(fault) = &report.fault {
        let _ = writeln!(out, "{fault}");
        let _ = writeln!(out, "{}", report.summary());
        return Ok(2);
    }
    let Some(failure) = &report.failure else {
        let _ = writeln!(out, "{}", report.summary());
        return Ok(0);
    };
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("conform-failures"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file = dir.join(format!("failure-seed-{}.jsonl", options.seed));
    std::fs::write(&file, &failure.trace).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let _ = writeln!(out, "{}", failure.message(&file.display().to_string()));
    let _ = writeln!(
        out,
        "shrunk from {} operations to {}; replay it with: presence conform --exec '{command}' {}",
        failure.original_steps,
        failure.case.steps.len(),
        file.display()
    );
    let _ = writeln!(out, "{}", report.summary());
    Ok(1)
}

fn generate(args: &Args, count: usize, dir: &Path, out: &mut impl Write) -> Result<u8, String> {
    let options = options(args)?;
    let traces = kit::generate(&options, count)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let width = count.to_string().len();
    for (index, text) in traces.iter().enumerate() {
        let file = dir.join(format!("generated-{}-{:0width$}.jsonl", options.seed, index + 1));
        std::fs::write(&file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    let _ = writeln!(
        out,
        "wrote {count} traces to {} (seed {}, operations {})",
        dir.display(),
        options.seed,
        options.ops
    );
    Ok(0)
}
