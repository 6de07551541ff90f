//! The conformance trace runner of docs/TRACE-FORMAT.md.
//!
//! A trace is a file of JSON lines: an optional configuration, then commands, each followed
//! by expectations about it, and checks of the state. [`run_paths`] runs every trace found
//! under its paths on each [`Target`] asked for, prints `FILE:LINE: expected ..., got ...` for
//! every failure and a closing `N passed, M failed`, and returns the exit status: 0 when none
//! failed, 1 when one failed, 2 when a trace could not be read or parsed.
//!
//! ```
//! use presence_conformance::trace::{run_text, Target};
//!
//! let text = r#"
//! {"at": 0, "op": "login", "user": "alice", "device": "phone"}
//! {"check": "status", "user": "alice", "status": "ONLINE", "custom": ""}
//! "#;
//! let mut out = Vec::new();
//! let status = run_text("example.jsonl", text, &[Target::Mem, Target::Model], &mut out);
//! assert_eq!(status, 0);
//! ```

mod parse;
mod run;
mod write;

use std::io::Write;
use std::path::{Path, PathBuf};

use presence_engine::{EventStore, ShardMap};
use presence_storage_mem::MemStore;
use presence_storage_sled::{Durability, SledStore};

pub(crate) use parse::{check_object, notice_object, status_object, Fields};
pub use parse::{parse, Check, Expectation, ExpectedStatus, Item, Op, ParseError, Trace};
pub use run::{run_trace, run_trace_checked, Failure, SubjectFault, TraceRun};
pub(crate) use write::quote;
pub use write::{
    check_line, config_line, expectation_line, notice_json, status_json, step_line, TraceWriter,
};

use crate::model::Model;
use crate::sharded::ShardedSubject;
use crate::subject::EngineSubject;

/// What a trace runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// The engine over the in-memory store.
    Mem,
    /// The engine over a temporary sled store.
    Sled,
    /// The reference model (no store; the replay check does not apply).
    Model,
    /// A sharded deployment of this many shards in memory, on two runtime threads, users
    /// placed by the hash (R9): every step waits until the shards are at rest (R9.4).
    Sharded(u32),
}

impl Target {
    /// The name used in messages and on the command line.
    pub fn name(self) -> String {
        match self {
            Target::Mem => "mem".into(),
            Target::Sled => "sled".into(),
            Target::Model => "model".into(),
            Target::Sharded(shards) => format!("sharded:{shards}"),
        }
    }

    /// Reads a name: `mem`, `sled`, `model` or `sharded:N` (N from 1 to 1024).
    pub fn parse(name: &str) -> Result<Target, String> {
        match name {
            "mem" => Ok(Target::Mem),
            "sled" => Ok(Target::Sled),
            "model" => Ok(Target::Model),
            _ => match name.strip_prefix("sharded:").map(str::parse::<u32>) {
                Some(Ok(shards @ 1..=1024)) => Ok(Target::Sharded(shards)),
                _ => Err(format!("{name:?}: a target is mem, sled, model or sharded:N (N from 1 to 1024)")),
            },
        }
    }

    /// The storage backends this build has: the runner's default (docs/TRACE-FORMAT.md: every
    /// backend).
    pub fn stores() -> &'static [Target] {
        &[Target::Mem, Target::Sled]
    }
}

/// How one trace went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every expectation and check held on every target.
    Passed,
    /// Something did not hold (or a store could not be opened).
    Failed,
    /// The trace could not be read or parsed.
    Unreadable,
    /// The subject itself broke ([`Subject::fault`](crate::Subject::fault): an adapter died,
    /// answered garbage or timed out); no trace after it runs.
    Broken,
}

/// Runs the traces named by `paths` (files, or directories searched recursively for
/// `.jsonl` files, in sorted order) on each of `targets`, writing failures and the closing
/// `N passed, M failed` line to `out`. Returns the exit status: 0, 1 or 2 as described in the
/// module documentation. Errors writing to `out` are ignored; the status still tells.
pub fn run_paths<P: AsRef<Path>>(paths: &[P], targets: &[Target], out: &mut impl Write) -> i32 {
    run_paths_with(paths, out, |name, text, out| run_one(name, text, targets, out))
}

/// As [`run_paths`], with each trace run by `run_one(name, text, out)`, which writes its
/// failures and says how it went; after a [`Verdict::Broken`] no other trace runs, and the
/// status is 2.
pub fn run_paths_with<P: AsRef<Path>, W: Write>(
    paths: &[P],
    out: &mut W,
    mut run_one: impl FnMut(&str, &str, &mut W) -> Verdict,
) -> i32 {
    let mut verdicts = Vec::new();
    'paths: for path in paths {
        let path = path.as_ref();
        match trace_files(path) {
            Ok(files) if files.is_empty() => {
                let _ = writeln!(out, "{}: no .jsonl traces found", path.display());
                verdicts.push(Verdict::Unreadable);
            }
            Ok(files) => {
                for file in files {
                    let name = file.display().to_string();
                    let verdict = match std::fs::read_to_string(&file) {
                        Ok(text) => run_one(&name, &text, out),
                        Err(e) => {
                            let _ = writeln!(out, "{name}: cannot read: {e}");
                            Verdict::Unreadable
                        }
                    };
                    verdicts.push(verdict);
                    if verdict == Verdict::Broken {
                        break 'paths;
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{}: cannot read: {e}", path.display());
                verdicts.push(Verdict::Unreadable);
            }
        }
    }
    summarize(&verdicts, out)
}

/// As [`run_paths`], on the subjects `start` makes, one for each trace from its
/// configuration: an adapter program, a cluster. A subject that cannot start, or breaks
/// ([`Subject::fault`](crate::Subject::fault)), is [`Verdict::Broken`].
pub fn run_paths_on<P, W, S>(
    paths: &[P],
    out: &mut W,
    mut start: impl FnMut(&Trace) -> Result<S, String>,
) -> i32
where
    P: AsRef<Path>,
    W: Write,
    S: crate::Subject,
{
    run_paths_with(paths, out, |name, text, out| {
        let trace = match parse(text) {
            Ok(trace) => trace,
            Err(e) => {
                let _ = writeln!(out, "{name}:{}: cannot parse: {}", e.line, e.message);
                return Verdict::Unreadable;
            }
        };
        let subject = match start(&trace) {
            Ok(subject) => subject,
            Err(e) => {
                let _ = writeln!(out, "{name}: cannot start: {e}");
                return Verdict::Broken;
            }
        };
        let run = run_trace_checked(&trace, subject);
        for f in &run.failures {
            let _ = writeln!(out, "{name}:{}: expected {}, got {}", f.line, f.expected, f.got);
        }
        if let Some(fault) = run.fault {
            let _ = writeln!(out, "{name}:{}: {}", fault.line, fault.message);
            return Verdict::Broken;
        }
        match run.failures.is_empty() {
            true => Verdict::Passed,
            false => Verdict::Failed,
        }
    })
}

/// Runs one trace given as text (`name` is what messages call it), on each of `targets`,
/// and writes its failures and the closing line; returns the exit status as [`run_paths`].
pub fn run_text(name: &str, text: &str, targets: &[Target], out: &mut impl Write) -> i32 {
    let verdict = run_one(name, text, targets, out);
    summarize(&[verdict], out)
}

fn summarize(verdicts: &[Verdict], out: &mut impl Write) -> i32 {
    let passed = verdicts.iter().filter(|v| **v == Verdict::Passed).count();
    let failed = verdicts.len() - passed;
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    if verdicts.iter().any(|v| matches!(v, Verdict::Unreadable | Verdict::Broken)) {
        2
    } else if failed > 0 {
        1
    } else {
        0
    }
}

/// Parses and runs one trace on every target, writing its failures.
pub fn run_one(name: &str, text: &str, targets: &[Target], out: &mut impl Write) -> Verdict {
    let trace = match parse(text) {
        Ok(trace) => trace,
        Err(e) => {
            let _ = writeln!(out, "{name}:{}: cannot parse: {}", e.line, e.message);
            return Verdict::Unreadable;
        }
    };
    let mut verdict = Verdict::Passed;
    for &target in targets {
        let failures = match run_on(&trace, target) {
            Ok(failures) => failures,
            Err(e) => {
                let _ = writeln!(out, "{name}: cannot open the {} store: {e}", target.name());
                verdict = Verdict::Failed;
                continue;
            }
        };
        for f in &failures {
            let _ = writeln!(
                out,
                "{name}:{}: expected {}, got {} (on {})",
                f.line,
                f.expected,
                f.got,
                target.name()
            );
        }
        if !failures.is_empty() {
            verdict = Verdict::Failed;
        }
    }
    verdict
}

/// Runs `trace` on a fresh instance of `target`.
pub fn run_on(trace: &Trace, target: Target) -> Result<Vec<Failure>, String> {
    match target {
        Target::Model => Ok(run_trace(trace, Model::new(trace.config.clone()))),
        Target::Mem | Target::Sled => {
            let store = open_store(target)?;
            let subject = EngineSubject::open(trace.config.clone(), store).map_err(|e| e.to_string())?;
            Ok(run_trace(trace, subject))
        }
        Target::Sharded(shards) => {
            let stores = (0..shards).map(|_| MemStore::new()).collect();
            let map = ShardMap::new(shards);
            let subject =
                ShardedSubject::open(trace.config.clone(), map, stores, 2).map_err(|e| e.to_string())?;
            Ok(run_trace(trace, subject))
        }
    }
}

/// A fresh, empty store of the given kind. Adding a backend is one arm here.
pub fn open_store(target: Target) -> Result<Box<dyn EventStore>, String> {
    match target {
        Target::Mem => Ok(Box::new(MemStore::new())),
        Target::Sled => {
            Ok(Box::new(SledStore::temporary(Durability::GroupCommit).map_err(|e| e.to_string())?))
        }
        Target::Model => Err("the model has no store".into()),
        Target::Sharded(_) => Err("a sharded deployment has a store per shard".into()),
    }
}

/// The trace files under `path`: the file itself, or every `.jsonl` file below a directory,
/// sorted.
fn trace_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        std::fs::metadata(path)?;
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry_path = entry?.path();
            if entry_path.is_dir() {
                pending.push(entry_path);
            } else if entry_path.extension().is_some_and(|e| e == "jsonl") {
                files.push(entry_path);
            }
        }
    }
    files.sort();
    Ok(files)
}
