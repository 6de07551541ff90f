//! The conformance kit: the model-based property tests, run against any implementation.
//!
//! [`check`] generates random cases ([`strategies::case`]): a small random configuration and
//! up to [`KitOptions::max_steps`] timed operations over a small id space (logins with and
//! without connection owners, logouts, disconnects, heartbeats, custom statuses, queries,
//! subscriptions, friendships, `disconnect_sessions`, ticks, and restarts where the system
//! supports them, [`Ops`]). It runs each case on a fresh subject, made from the case's
//! configuration by the factory it is given, and on the reference model ([`Model`](crate::Model)), and
//! after every step compares:
//!
//! - the result: success, or the error code (R7.1);
//! - the statuses of a `get_status` or `subscribe`, in order (R4.6, R6.1);
//! - the notices, as a multiset of deliveries (R5);
//! - the direct reads (R6.4) of every user of the id space ([`strategies::USERS`]): status,
//!   subscription list, friends, connected and disconnected devices;
//!
//! and at the end the subject's own replay check ([`Subject::finish`], R8.1). Versions (R5.6)
//! and causes (R5.7) are compared where the subject reports them. These are exactly what a
//! trace can state, so every difference the kit finds is written as a trace
//! (docs/TRACE-FORMAT.md): the first failing case is shrunk by proptest to a minimal one, and
//! [`KitFailure::trace`] is that case with the model's expectations, which fails on the
//! subject at [`KitFailure::line`] and passes on the engine and the model.
//!
//! ```
//! use presence_conformance::kit::{self, KitOptions, Ops};
//! use presence_conformance::EngineSubject;
//! use presence_storage_mem::MemStore;
//!
//! let options = KitOptions { cases: 8, seed: 1, ops: Ops::all(), ..KitOptions::default() };
//! let report = kit::check(&options, |config| EngineSubject::open(config.clone(), MemStore::new()));
//! assert_eq!(report.summary(), "8 passed, 0 failed");
//! ```
//!
//! # Plugging in a subject
//!
//! Anything that implements [`Subject`] can be checked; the factory builds a fresh one for
//! each case from its [`Config`], and the kit never needs more than that:
//!
//! - **A library in Rust**: implement [`Subject`] over it (commands and ticks in,
//!   [`Response`](crate::Response)s out, the four reads, `restart` if it has a store) and pass
//!   `|config| MySystem::new(config)`. [`EngineSubject`](crate::EngineSubject) is the model to
//!   copy.
//! - **A system in another language or another process**: [`crate::exec`] drives an adapter
//!   program that speaks JSON lines (docs/CONFORMANCE-PROTOCOL.md), and `presence conform
//!   --exec CMD` runs the kit on it.
//! - **A sharded deployment, or a cluster of nodes**: implement [`Subject`] over the whole
//!   deployment as its clients see it. The factory starts every shard or node with the
//!   configuration; `execute` routes the command to the shard that owns the user (and, for a
//!   subscription or a friendship, lets the other shard learn it, as the deployment would);
//!   the response's notices are every delivery of every node for that command, gathered
//!   before `execute` returns; the reads ask the owning shard; `restart` stops and reopens
//!   every node; `finish` replays each node's log. Connection owners (R8.5) are the natural
//!   name of a gateway node, and `disconnect_sessions(owner)` its failure. Nothing in the kit
//!   changes: the model is one engine, and a deployment must look like one to pass.
//!
//! Restarts are generated only when [`KitOptions::ops`] holds [`OpKind::Restart`]; drop any
//! other operation a system does not support (friends, owners' `disconnect_sessions`) the same
//! way.

mod case;
mod compare;
mod ops;
mod record;
pub mod strategies;

use std::cell::{Cell, RefCell};

use presence_engine::Config;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{
    basic_result_cache, Config as ProptestConfig, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner,
};

pub use case::{reads, Case, TimedOp};
pub use ops::{OpKind, Ops};

use crate::observe::Refusal;
use crate::subject::Subject;
use crate::trace::{parse, run_trace_checked};
use compare::{run_case, CaseRun, Difference, Part, Stop};
use record::{failing_trace, generated_trace};

/// How the kit runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KitOptions {
    /// How many random cases must pass (default 256).
    pub cases: u32,
    /// The seed of the random cases: the same seed gives the same cases (default 0).
    pub seed: u64,
    /// The operations to generate (default: every command and ticks, no restarts).
    pub ops: Ops,
    /// The most operations in one case (default 60).
    pub max_steps: usize,
    /// The most attempts at shrinking a failing case (default 2 000): each runs a smaller case
    /// on a fresh subject.
    pub shrink_iters: u32,
}

impl Default for KitOptions {
    fn default() -> Self {
        KitOptions { cases: 256, seed: 0, ops: Ops::default(), max_steps: 60, shrink_iters: 2_000 }
    }
}

/// What a run of the kit found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KitReport {
    /// The seed it ran with.
    pub seed: u64,
    /// The cases that passed before the first failure (all of them when none failed).
    pub passed: u32,
    /// The first failing case, shrunk; `None` when every case passed.
    pub failure: Option<KitFailure>,
    /// The subject itself broke ([`Subject::fault`]: an adapter died, answered garbage or
    /// timed out), so the run stopped without a verdict on the system.
    pub fault: Option<String>,
}

impl KitReport {
    /// The number of failed cases: 1 when a case failed or the subject broke, else 0 (the run
    /// stops at the first failure, as proptest does).
    pub fn failed(&self) -> u32 {
        u32::from(self.failure.is_some() || self.fault.is_some())
    }

    /// `N passed, M failed`.
    pub fn summary(&self) -> String {
        format!("{} passed, {} failed", self.passed, self.failed())
    }

    /// Whether every case passed and nothing broke.
    pub fn is_ok(&self) -> bool {
        self.failed() == 0
    }
}

/// The minimal failing case of a run, and the trace that shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KitFailure {
    /// The shrunk case.
    pub case: Case,
    /// How many operations the case had before it was shrunk.
    pub original_steps: usize,
    /// The case as a trace with the model's expectations (docs/TRACE-FORMAT.md), ready to be
    /// written to a file: it fails on the subject and passes on the engine and the model.
    pub trace: String,
    /// The trace's line that fails (1-based).
    pub line: usize,
    /// What the model expects there.
    pub expected: String,
    /// What the subject did.
    pub got: String,
    /// Whether replaying [`KitFailure::trace`] on a fresh subject failed as the case did (a
    /// subject that answers differently each time may not).
    pub reproduced: bool,
}

impl KitFailure {
    /// `FILE:LINE: expected ..., got ...`, for the trace saved as `file`.
    pub fn message(&self, file: &str) -> String {
        let mut text = format!("{file}:{}: expected {}, got {}", self.line, self.expected, self.got);
        if !self.reproduced {
            text.push_str(" (replaying the trace on a fresh subject did not fail the same way)");
        }
        text
    }
}

/// Runs [`KitOptions::cases`] random cases on subjects made by `make` and on the reference
/// model, and shrinks the first failing one (see the module documentation). `make` is called
/// once per case (and once per shrinking attempt) with the case's configuration; a refusal
/// counts as a failure of the case.
pub fn check<S, F>(options: &KitOptions, make: F) -> KitReport
where
    S: Subject,
    F: FnMut(&Config) -> Result<S, Refusal>,
{
    let make = RefCell::new(make);
    let passed = Cell::new(0u32);
    let original_steps: Cell<Option<usize>> = Cell::new(None);
    let fault: RefCell<Option<String>> = RefCell::new(None);
    // How the last failing case (the minimal one, once shrinking ends) differed.
    let last_difference: RefCell<Option<Difference>> = RefCell::new(None);
    let users = strategies::USERS;
    let mut runner = runner(options);
    let strategy = strategies::case(options.ops, options.max_steps);
    let result = runner.run(&strategy, |case| {
        if fault.borrow().is_some() {
            // Once the subject broke nothing more can be learnt; every shrinking attempt fails
            // at once, without running anything.
            return Err(TestCaseError::fail("the subject broke"));
        }
        let CaseRun { stop, .. } = run_case(&case, &mut *make.borrow_mut(), users);
        match stop {
            None => {
                if original_steps.get().is_none() {
                    passed.set(passed.get().saturating_add(1));
                }
                Ok(())
            }
            Some(Stop::Fault(message)) => {
                *fault.borrow_mut() = Some(message);
                Err(TestCaseError::fail("the subject broke"))
            }
            Some(Stop::Differs(difference)) => {
                if original_steps.get().is_none() {
                    original_steps.set(Some(case.steps.len()));
                }
                let message = format!("{difference:?}");
                *last_difference.borrow_mut() = Some(*difference);
                Err(TestCaseError::fail(message))
            }
        }
    });
    let mut report = KitReport { seed: options.seed, passed: passed.get(), failure: None, fault: None };
    if let Some(message) = fault.into_inner() {
        report.fault = Some(message);
        return report;
    }
    let case = match result {
        // Every case passed; proptest's cache may have answered a repeated one without running
        // it again, so the count is the number asked for, not the number of runs.
        Ok(()) => {
            report.passed = options.cases;
            return report;
        }
        Err(TestError::Fail(_, case)) => case,
        Err(TestError::Abort(reason)) => {
            report.fault = Some(format!("the run stopped: {reason}"));
            return report;
        }
    };
    let mut make = make.into_inner();
    let steps = original_steps.get().unwrap_or(case.steps.len());
    match explain(&case, &mut make, options.seed, steps, last_difference.into_inner()) {
        Ok(failure) => report.failure = Some(failure),
        Err(message) => report.fault = Some(message),
    }
    report
}

/// A proptest runner with the kit's settings and a generator seeded by `options.seed`.
fn runner(options: &KitOptions) -> TestRunner {
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        let word =
            options.seed.rotate_left(16 * i as u32) ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1));
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    let config = ProptestConfig {
        cases: options.cases,
        max_shrink_iters: options.shrink_iters,
        max_shrink_time: 0,
        failure_persistence: None,
        result_cache: basic_result_cache,
        fork: false,
        timeout: 0,
        ..ProptestConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed))
}

/// Runs the minimal failing `case` once more, writes it as a trace, and replays the trace on a
/// fresh subject for the failing line and its message. An error when the subject broke.
/// `before` is how the case differed when it was found: what the report says if it passes
/// when run once more.
fn explain<S, F>(
    case: &Case,
    make: &mut F,
    seed: u64,
    original_steps: usize,
    before: Option<Difference>,
) -> Result<KitFailure, String>
where
    S: Subject,
    F: FnMut(&Config) -> Result<S, Refusal>,
{
    let run = run_case(case, make, strategies::USERS);
    let again = "it passed when run once more: the subject does not answer the same way each time";
    let difference = match (run.stop, before) {
        (Some(Stop::Fault(message)), _) => return Err(message),
        (Some(Stop::Differs(difference)), _) => *difference,
        (None, Some(before)) => Difference { got: format!("{} ({again})", before.got), ..before },
        (None, None) => Difference {
            step: case.steps.len(),
            part: Part::Finish,
            expected: "the case to fail again".into(),
            got: again.into(),
        },
    };
    // The operations after the one that differs are not needed to show it.
    let mut case = case.clone();
    match difference.part {
        Part::Finish => {}
        Part::Config => case.steps.clear(),
        _ => case.steps.truncate(difference.step.saturating_add(1)),
    }
    let header = format!(
        "The conformance kit's minimal failing case (seed {seed}, shrunk from {original_steps} operations to {}).\n\
         Every expectation is the reference model's (docs/SPEC.md).",
        case.steps.len()
    );
    let written = failing_trace(&case, &difference, &run.reports, &header);
    let mut failure = KitFailure {
        case: case.clone(),
        original_steps,
        trace: written.text.clone(),
        line: written.line,
        expected: difference.expected.clone(),
        got: difference.got.clone(),
        reproduced: false,
    };
    if difference.part == Part::Config || difference.part == Part::Panic {
        failure.reproduced = true;
        return Ok(failure);
    }
    let Ok(trace) = parse(&written.text) else { return Ok(failure) };
    let subject = match make(&case.config) {
        Ok(subject) => subject,
        Err(_) => return Ok(failure),
    };
    let replay =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_trace_checked(&trace, subject)));
    let Ok(replay) = replay else { return Ok(failure) };
    if let Some(fault) = replay.fault {
        return Err(fault.message);
    }
    if let Some(first) = replay.failures.into_iter().next() {
        failure.reproduced = first.line == written.line;
        failure.line = first.line;
        failure.expected = first.expected;
        failure.got = first.got;
    }
    Ok(failure)
}

/// `count` random traces with every expectation computed by the reference model (results,
/// statuses and notices with versions and causes, and a check of every read that changed),
/// for systems that can only replay files. The same options give the same traces; each names
/// its seed and number in its first line.
pub fn generate(options: &KitOptions, count: usize) -> Result<Vec<String>, String> {
    let mut runner = runner(options);
    let strategy = strategies::case(options.ops, options.max_steps);
    (0..count)
        .map(|index| {
            let case = strategy
                .new_tree(&mut runner)
                .map_err(|e| format!("generating a case failed: {e}"))?
                .current();
            let header = format!(
                "Generated by the conformance kit (seed {}, trace {} of {count}, operations {}):\n\
                 every expectation is the reference model's (docs/SPEC.md).",
                options.seed,
                index + 1,
                options.ops
            );
            Ok(generated_trace(&case, &header, strategies::USERS))
        })
        .collect()
}
