//! The conformance kit (`presence_conformance::kit`): the engine passes it on both stores;
//! deliberately wrong subjects are caught and shrunk to a trace of a few lines, which fails on
//! them and passes on the engine and the model; restricted operations, seeds, generated traces,
//! and subjects that panic, refuse a configuration or break.
//!
//! `PROPTEST_CASES=5000 cargo test -p presence-conformance --release --test kit` runs the
//! engine through more cases.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::Cell;
use std::path::Path;

use presence_conformance::kit::{self, strategies, KitFailure, KitOptions, KitReport, OpKind, Ops};
use presence_conformance::trace::{parse, run_paths, run_text, Item, Target, TraceWriter};
use presence_conformance::{EngineSubject, FlatNotice, Model, Refusal, Response, Subject};
use presence_engine::{Command, Config, SessionView, UserId, UserStatus};
use presence_storage_mem::MemStore;
use presence_storage_sled::{Durability, SledStore};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

#[test]
fn the_engine_on_mem_passes_the_kit_with_every_operation() {
    let options =
        KitOptions { cases: common::cases(128), seed: 11, ops: Ops::all(), ..KitOptions::default() };
    let report = kit::check(&options, |config| EngineSubject::open(config.clone(), MemStore::new()));
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(report.summary(), format!("{} passed, 0 failed", options.cases));
}

#[test]
fn the_engine_on_sled_passes_the_kit_with_every_operation() {
    // A sled store costs a few milliseconds to create, so fewer cases run on it by default.
    let options = KitOptions { cases: common::cases(24), seed: 12, ops: Ops::all(), ..KitOptions::default() };
    let report = kit::check(&options, |config| {
        let store = SledStore::temporary(Durability::GroupCommit)
            .map_err(|e| Refusal { code: 9000, message: e.to_string() })?;
        EngineSubject::open(config.clone(), store)
    });
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(report.passed, options.cases);
}

/// conformance/README.md's example of the Rust entry point, verbatim: keep the two in step.
#[test]
fn the_readme_example_runs() -> Result<(), Box<dyn std::error::Error>> {
    use presence_conformance::kit::{self, KitOptions, OpKind, Ops};
    use presence_conformance::EngineSubject;
    use presence_storage_mem::MemStore;

    let options = KitOptions {
        cases: 500,                                // default 256
        seed: 7,                                   // default 0
        ops: Ops::default().with(OpKind::Restart), // or Ops::parse("login,logout,tick")?
        ..KitOptions::default()                    // max_steps 60, shrink_iters 2 000
    };
    let report = kit::check(&options, |config| EngineSubject::open(config.clone(), MemStore::new()));
    if let Some(failure) = &report.failure {
        std::fs::write("failure.jsonl", &failure.trace)?; // the shrunk case, as a trace
        eprintln!("{}", failure.message("failure.jsonl")); // FILE:LINE: expected ..., got ...
    }
    assert!(report.is_ok(), "{}", report.summary()); // N passed, M failed
    Ok(())
}

/// A wrong implementation: the model run with a configuration it was not given, or the model
/// (or the engine) with its answers tampered with.
struct Mutant<S> {
    inner: S,
    tamper: Box<dyn FnMut(&mut Response)>,
}

impl<S: Subject> Subject for Mutant<S> {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        let mut response = self.inner.execute(command, at_ms)?;
        (self.tamper)(&mut response);
        Ok(response)
    }
    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        let mut response = self.inner.tick(at_ms)?;
        (self.tamper)(&mut response);
        Ok(response)
    }
    fn status(&self, user: &str) -> UserStatus {
        self.inner.status(user)
    }
    fn sessions(&self, user: &str) -> Vec<SessionView> {
        self.inner.sessions(user)
    }
    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.inner.subscriptions(user)
    }
    fn friends(&self, user: &str) -> Vec<UserId> {
        self.inner.friends(user)
    }
    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal> {
        self.inner.restart(at_ms, disconnect)
    }
    fn finish(self) -> Result<(), String> {
        self.inner.finish()
    }
}

fn untouched(_: &mut Response) {}

/// The model with `change` applied to the configuration it is given.
fn misconfigured(change: fn(&mut Config)) -> impl FnMut(&Config) -> Result<Mutant<Model>, Refusal> {
    move |config: &Config| {
        let mut config = config.clone();
        change(&mut config);
        Ok(Mutant { inner: Model::new(config), tamper: Box::new(untouched) })
    }
}

/// The model with its answers tampered with.
fn tampered(tamper: fn(&mut Response)) -> impl FnMut(&Config) -> Result<Mutant<Model>, Refusal> {
    move |config: &Config| Ok(Mutant { inner: Model::new(config.clone()), tamper: Box::new(tamper) })
}

/// What every caught mutant must show: a shrunk trace of a few lines that fails on the
/// mutant where the failure says, and passes on the engine (both stores) and the model.
fn assert_caught<S: Subject>(
    name: &str,
    report: &KitReport,
    mutant: impl FnMut(&Config) -> Result<S, Refusal>,
) -> KitFailure {
    assert!(report.fault.is_none(), "{name}: {report:#?}");
    let failure = report.failure.clone().unwrap_or_else(|| panic!("{name} was not caught: {report:#?}"));
    assert_eq!(report.summary(), format!("{} passed, 1 failed", report.passed));
    let lines = failure.trace.lines().count();
    assert!(lines <= 30, "{name}: the shrunk trace has {lines} lines:\n{}", failure.trace);
    assert!(failure.case.steps.len() <= failure.original_steps);
    assert!(failure.reproduced, "{name}: {}", failure.message("t.jsonl"));
    let mut out = Vec::new();
    let status = run_text("t.jsonl", &failure.trace, &[Target::Mem, Target::Sled, Target::Model], &mut out);
    assert_eq!(
        status,
        0,
        "{name}: the trace must pass on the engine and the model:\n{}",
        String::from_utf8_lossy(&out)
    );
    // Replayed on a fresh mutant, the trace fails at the line the kit named, first.
    let trace = parse(&failure.trace).unwrap();
    let mut mutant = mutant;
    let failures = presence_conformance::trace::run_trace(&trace, mutant(&trace.config).unwrap());
    assert_eq!(failures.first().map(|f| f.line), Some(failure.line), "{name}: {failures:?}");
    let message = failure.message("t.jsonl");
    assert!(message.starts_with(&format!("t.jsonl:{}: expected ", failure.line)), "{message}");
    assert!(message.contains(", got "), "{message}");
    failure
}

fn run_on_mutant<S: Subject>(
    name: &str,
    seed: u64,
    mut mutant: impl FnMut(&Config) -> Result<S, Refusal>,
) -> KitFailure {
    let options = KitOptions { cases: 500, seed, ops: Ops::all(), ..KitOptions::default() };
    let report = kit::check(&options, &mut mutant);
    assert_caught(name, &report, mutant)
}

#[test]
fn a_subscription_cap_off_by_one_is_caught_and_shrunk() {
    let failure = run_on_mutant("cap", 1, misconfigured(|c| c.max_subscriptions += 1));
    // The list outgrew the cap: the trace ends with the check of that list (R4.3).
    assert!(
        failure.trace.lines().last().unwrap().contains("\"check\": \"subscriptions\""),
        "{}",
        failure.trace
    );
}

#[test]
fn a_heartbeat_timeout_a_millisecond_late_is_caught_and_shrunk() {
    let failure = run_on_mutant("timeout", 2, misconfigured(|c| c.heartbeat_timeout_ms += 1));
    assert!(failure.trace.contains("\"op\": \"tick\""), "R2.4 needs a tick:\n{}", failure.trace);
}

#[test]
fn a_rate_limit_that_forgets_is_caught_and_shrunk() {
    // Calls older than half the window are forgotten (R6.3).
    let failure = run_on_mutant(
        "rate",
        3,
        misconfigured(|c| {
            c.rate_limit_window_ms = (c.rate_limit_window_ms / 2).max(1);
            c.rate_limit_calls += u32::from(c.rate_limit_window_ms == 1);
        }),
    );
    assert!(failure.trace.contains("7008") || failure.expected.contains("7008"), "{}", failure.trace);
}

/// A subject that answers differently each time (a race in a distributed system, say): the
/// report says how the case differed when it was found, and that it passed when run again.
#[test]
fn a_failure_that_does_not_happen_again_is_reported_as_it_was_found() {
    // The model dropping the first kicked notice it ever gives, and never another.
    let dropped = std::rc::Rc::new(Cell::new(false));
    let flaky = |config: &Config| {
        let dropped = std::rc::Rc::clone(&dropped);
        let tamper = move |r: &mut Response| {
            if !dropped.get() && r.notices.iter().any(|n| matches!(n, FlatNotice::Kicked { .. })) {
                r.notices.retain(|n| !matches!(n, FlatNotice::Kicked { .. }));
                dropped.set(true);
            }
        };
        Ok(Mutant { inner: Model::new(config.clone()), tamper: Box::new(tamper) })
    };
    let options = KitOptions { cases: 500, seed: 4, ops: Ops::all(), ..KitOptions::default() };
    let report = kit::check(&options, flaky);
    assert!(dropped.get(), "the kit ran a case with a kicked notice");
    let failure = report.failure.clone().unwrap_or_else(|| panic!("not caught: {report:#?}"));
    assert!(!failure.reproduced, "{}", failure.message("t.jsonl"));
    let message = failure.message("t.jsonl");
    assert!(message.contains("kicked"), "what differed when it was found (R5.5): {message}");
    assert!(message.contains("passed when run once more"), "{message}");
}

#[test]
fn a_missing_kicked_notice_is_caught_and_shrunk() {
    let failure =
        run_on_mutant("kick", 4, tampered(|r| r.notices.retain(|n| !matches!(n, FlatNotice::Kicked { .. }))));
    assert!(failure.expected.contains("kicked"), "R5.5: {}", failure.message("t.jsonl"));
}

#[test]
fn versions_off_by_one_are_caught_and_shrunk() {
    let failure = run_on_mutant(
        "version",
        5,
        tampered(|r| {
            for status in r.statuses.iter_mut().flatten() {
                status.version = status.version.map(|v| v + 1);
            }
            for notice in &mut r.notices {
                if let FlatNotice::Status { version, .. } = notice {
                    *version = version.map(|v| v + 1);
                }
            }
        }),
    );
    assert!(failure.trace.contains("\"version\""), "R5.6:\n{}", failure.trace);
}

#[test]
fn the_engine_with_a_device_cap_off_by_one_is_caught_and_shrunk() {
    run_on_mutant("devices", 6, |config: &Config| {
        let config = Config { max_devices_per_user: config.max_devices_per_user + 1, ..config.clone() };
        Ok(Mutant { inner: EngineSubject::open(config, MemStore::new())?, tamper: Box::new(untouched) })
    });
}

#[test]
fn a_subject_that_reports_no_versions_or_causes_is_not_held_to_them() {
    // R5.6, R5.7: an implementation may leave versions and causes out; the kit compares them
    // only where reported, and a trace it writes for such a subject states none.
    fn plain(r: &mut Response) {
        for status in r.statuses.iter_mut().flatten() {
            status.version = None;
        }
        for notice in &mut r.notices {
            if let FlatNotice::Status { version, cause, .. } = notice {
                (*version, *cause) = (None, None);
            }
        }
    }
    let options = KitOptions { cases: 100, seed: 8, ops: Ops::all(), ..KitOptions::default() };
    let report = kit::check(&options, tampered(plain));
    assert!(report.is_ok(), "{report:#?}");
    fn plain_and_no_kicks(r: &mut Response) {
        plain(r);
        r.notices.retain(|n| !matches!(n, FlatNotice::Kicked { .. }));
    }
    let failure = run_on_mutant("plain kick", 9, tampered(plain_and_no_kicks));
    assert!(
        !failure.trace.contains("\"version\"") && !failure.trace.contains("\"cause\""),
        "{}",
        failure.trace
    );
}

/// A system without friendships: it refuses both friend commands.
struct NoFriends(Model);

impl Subject for NoFriends {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        match command {
            Command::AddFriend { .. } | Command::RemoveFriend { .. } => {
                Err(Refusal { code: 6017, message: "no friends here".into() })
            }
            command => self.0.execute(command, at_ms),
        }
    }
    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        Ok(self.0.tick(at_ms))
    }
    fn status(&self, user: &str) -> UserStatus {
        self.0.status(user)
    }
    fn sessions(&self, user: &str) -> Vec<SessionView> {
        self.0.sessions(user)
    }
    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.0.subscriptions(user)
    }
    fn friends(&self, user: &str) -> Vec<UserId> {
        self.0.friends(user)
    }
    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal> {
        self.0.restart(disconnect.then_some(at_ms));
        Ok(())
    }
    fn finish(self) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_system_without_friends_passes_once_friends_are_left_out() {
    let no_friends = |config: &Config| Ok(NoFriends(Model::new(config.clone())));
    let with_friends = KitOptions { cases: 200, seed: 7, ..KitOptions::default() };
    let report = kit::check(&with_friends, no_friends);
    let failure = report.failure.expect("friend commands are generated by default");
    assert!(failure.trace.contains("_friend\""), "{}", failure.trace);
    let ops = Ops::default().without(OpKind::AddFriend).unwrap().without(OpKind::RemoveFriend).unwrap();
    let report = kit::check(&KitOptions { ops, ..with_friends }, no_friends);
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(report.passed, 200);
}

#[test]
fn only_the_operations_asked_for_are_generated() {
    let ops = Ops::parse("login,subscribe,tick").unwrap();
    let mut runner = TestRunner::deterministic();
    let strategy = strategies::case(ops, 40);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..300 {
        for step in strategy.new_tree(&mut runner).unwrap().current().steps {
            seen.insert(OpKind::of(&step.op));
        }
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), [OpKind::Login, OpKind::Subscribe, OpKind::Tick]);
    let mut restarts = 0;
    for _ in 0..300 {
        let case = strategies::case(Ops::all(), 40).new_tree(&mut runner).unwrap().current();
        restarts += case.steps.iter().filter(|s| OpKind::of(&s.op) == OpKind::Restart).count();
    }
    assert!(restarts > 0, "Ops::all() generates restarts");
    assert!(Ops::parse("").is_err() && Ops::parse("tick,fly").is_err());
    assert!(Ops::from_kinds([OpKind::Tick]).unwrap().without(OpKind::Tick).is_err());
}

#[test]
fn the_same_seed_gives_the_same_cases_and_the_same_failure() {
    let cap = misconfigured(|c| c.max_subscriptions += 1);
    let options = KitOptions { cases: 500, seed: 21, ops: Ops::all(), ..KitOptions::default() };
    let first = kit::check(&options, cap);
    let again = kit::check(&options, misconfigured(|c| c.max_subscriptions += 1));
    assert_eq!(first, again);
    let generated = kit::generate(&options, 3).unwrap();
    assert_eq!(generated, kit::generate(&options, 3).unwrap());
    assert_ne!(generated, kit::generate(&KitOptions { seed: 22, ..options }, 3).unwrap());
}

#[test]
fn generated_traces_pass_on_the_engine_and_the_model() {
    let options = KitOptions { seed: 5, ops: Ops::all(), ..KitOptions::default() };
    let traces = kit::generate(&options, 16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (index, text) in traces.iter().enumerate() {
        std::fs::write(dir.path().join(format!("generated-{index:02}.jsonl")), text).unwrap();
    }
    let all = traces.concat();
    for field in [
        "\"expect\": \"error\"",
        "\"expect\": \"statuses\"",
        "\"version\": ",
        "\"cause\": ",
        "\"kicked\": true",
    ] {
        assert!(all.contains(field), "no {field} in 16 generated traces");
    }
    for check in ["status", "subscriptions", "friends", "devices"] {
        assert!(all.contains(&format!("{{\"check\": \"{check}\"")), "no {check} check");
    }
    for target in [Target::Mem, Target::Sled, Target::Model] {
        let mut out = Vec::new();
        let status = run_paths(&[dir.path()], &[target], &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(status, 0, "on {}:\n{out}", target.name());
        assert_eq!(out.lines().last(), Some("16 passed, 0 failed"));
    }
    // Every step states what it must answer: a wrong answer anywhere fails the trace.
    let wrong = traces[0].replacen("\"status\": \"ONLINE\"", "\"status\": \"OFFLINE\"", 1);
    assert_ne!(wrong, traces[0]);
    let mut out = Vec::new();
    assert_eq!(run_text("wrong.jsonl", &wrong, &[Target::Mem], &mut out), 1);
}

#[test]
fn every_trace_survives_a_round_trip_through_the_writer() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("traces");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let trace = parse(&text).unwrap();
        let mut writer = TraceWriter::new();
        writer.config(&trace.config);
        for item in &trace.items {
            match item {
                Item::Step { at_ms, op, expectations, .. } => {
                    writer.step(*at_ms, op);
                    for (_, expectation) in expectations {
                        writer.expect(expectation);
                    }
                }
                Item::Check { check, .. } => writer.check(check),
            }
        }
        let again = parse(&writer.text()).unwrap();
        assert_eq!(again.config, trace.config);
        let strip = |items: &[Item]| -> Vec<String> {
            items
                .iter()
                .map(|item| match item {
                    Item::Step { at_ms, op, expectations, .. } => {
                        let e: Vec<_> = expectations.iter().map(|(_, e)| e).collect();
                        format!("{at_ms} {op:?} {e:?}")
                    }
                    Item::Check { check, .. } => format!("{check:?}"),
                })
                .collect()
        };
        assert_eq!(strip(&again.items), strip(&trace.items));
        files += 1;
    }
    assert!(files >= 30);
}

/// The model, except that it panics on the first tick.
struct Panicky(Model);

impl Subject for Panicky {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        self.0.execute(command, at_ms)
    }
    fn tick(&mut self, _: u64) -> Result<Response, Refusal> {
        panic!("tick not implemented")
    }
    fn status(&self, user: &str) -> UserStatus {
        self.0.status(user)
    }
    fn sessions(&self, user: &str) -> Vec<SessionView> {
        self.0.sessions(user)
    }
    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.0.subscriptions(user)
    }
    fn friends(&self, user: &str) -> Vec<UserId> {
        self.0.friends(user)
    }
    fn restart(&mut self, _: u64, _: bool) -> Result<(), Refusal> {
        Ok(())
    }
    fn finish(self) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_subject_that_panics_fails_its_case_without_stopping_the_kit() {
    let report = kit::check(&KitOptions { cases: 50, ..KitOptions::default() }, |c: &Config| {
        Ok(Panicky(Model::new(c.clone())))
    });
    let failure = report.failure.expect("a tick is generated in 50 cases");
    assert!(failure.got.contains("tick not implemented"), "{failure:#?}");
    assert_eq!(failure.case.steps.len(), 1, "shrunk to the tick alone: {failure:#?}");
    assert!(failure.trace.trim_end().ends_with("\"op\": \"tick\"}"), "{}", failure.trace);
}

#[test]
fn a_subject_that_refuses_a_configuration_fails_with_it() {
    let report = kit::check(&KitOptions { cases: 100, ..KitOptions::default() }, |c: &Config| {
        if c.edition == presence_engine::Edition::Standard {
            return Err(Refusal { code: 6017, message: "standard edition not supported".into() });
        }
        Ok(Model::new(c.clone()))
    });
    let failure = report.failure.expect("a standard edition is generated in 100 cases");
    assert!(failure.got.contains("standard edition not supported"));
    assert!(failure.trace.contains("\"edition\": \"standard\""), "{}", failure.trace);
}

/// A subject that breaks (as an adapter that dies) after a number of calls.
struct Breaks<'a> {
    model: Model,
    calls: &'a Cell<u32>,
}

impl Subject for Breaks<'_> {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        self.calls.set(self.calls.get() + 1);
        self.model.execute(command, at_ms)
    }
    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        self.calls.set(self.calls.get() + 1);
        Ok(self.model.tick(at_ms))
    }
    fn status(&self, user: &str) -> UserStatus {
        self.model.status(user)
    }
    fn sessions(&self, user: &str) -> Vec<SessionView> {
        self.model.sessions(user)
    }
    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.model.subscriptions(user)
    }
    fn friends(&self, user: &str) -> Vec<UserId> {
        self.model.friends(user)
    }
    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal> {
        self.model.restart(disconnect.then_some(at_ms));
        Ok(())
    }
    fn fault(&self) -> Option<String> {
        (self.calls.get() > 100).then(|| "the adapter died".to_string())
    }
    fn finish(self) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn a_subject_that_breaks_is_a_fault_not_a_failure() {
    let calls = Cell::new(0);
    let report = kit::check(&KitOptions { cases: 100, ..KitOptions::default() }, |c: &Config| {
        Ok(Breaks { model: Model::new(c.clone()), calls: &calls })
    });
    assert_eq!(report.fault.as_deref(), Some("the adapter died"));
    assert!(report.failure.is_none());
    assert_eq!(report.failed(), 1);
    assert!(report.passed < 100);
}
