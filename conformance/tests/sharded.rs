//! Sequential equivalence (docs/SPEC.md R9.4): random cases of the conformance kit, restarts
//! included, run on one engine and on sharded deployments of 2, 3 and 8 shards whose users
//! are placed round robin (so subscribers and their targets, and friends, sit on different
//! shards), each step waiting until the shards are at rest. After every step the two must
//! give the same reply or error code, the same notices (each delivery with its version and
//! cause), and the same reads of every user; at the end each shard's log must replay to its
//! live state.
//!
//! `PROPTEST_CASES=2000 cargo test -p presence-conformance --release --test sharded` runs
//! longer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use presence_conformance::kit::strategies::{cases, USERS};
use presence_conformance::kit::{strategies, Case, Ops};
use presence_conformance::sharded::ShardedSubject;
use presence_conformance::subject::{EngineSubject, Subject};
use presence_engine::{ShardMap, UserId};
use presence_storage_mem::MemStore;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The generator's users, placed round robin over `shards`.
fn split(shards: u32) -> ShardMap {
    ShardMap::with_placement(shards, USERS.iter().enumerate().map(|(i, u)| (UserId::from(*u), i as u32)))
}

fn equivalent(case: &Case, shards: u32) -> Result<(), TestCaseError> {
    let fail = |what: String| TestCaseError::fail(what);
    let mut one = EngineSubject::open(case.config.clone(), MemStore::new()).map_err(|e| fail(e.message))?;
    let stores = (0..shards).map(|_| MemStore::new()).collect();
    let mut many =
        ShardedSubject::open(case.config.clone(), split(shards), stores, 2).map_err(|e| fail(e.message))?;
    for (index, step) in case.steps.iter().enumerate() {
        let at = || format!("step {index} ({})", step.line());
        let want = step.run_on(&mut one);
        let got = step.run_on(&mut many);
        match (&want, &got) {
            (Ok(want), Ok(got)) if want == got => {}
            (Err(want), Err(got)) if want.code == got.code => {}
            _ => return Err(fail(format!("{}: one engine {want:?}, {shards} shards {got:?}", at()))),
        }
        for user in USERS {
            let (want, got) = (one.status(user), many.status(user));
            prop_assert_eq!(want, got, "{}: status of {}", at(), user);
            let (want, got) = (one.sessions(user), many.sessions(user));
            prop_assert_eq!(want, got, "{}: sessions of {}", at(), user);
            let (want, got) = (one.subscriptions(user), many.subscriptions(user));
            prop_assert_eq!(want, got, "{}: subscriptions of {}", at(), user);
            let (want, got) = (one.friends(user), many.friends(user));
            prop_assert_eq!(want, got, "{}: friends of {}", at(), user);
        }
    }
    many.finish().map_err(|e| fail(format!("at the end: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn two_shards_answer_as_one_engine(case in strategies::case(Ops::all(), 50)) {
        equivalent(&case, 2)?;
    }

    #[test]
    fn three_shards_answer_as_one_engine(case in strategies::case(Ops::all(), 50)) {
        equivalent(&case, 3)?;
    }

    #[test]
    fn eight_shards_answer_as_one_engine(case in strategies::case(Ops::all(), 50)) {
        equivalent(&case, 8)?;
    }
}

/// The conformance kit, as another implementation would run it, against a deployment of three
/// shards that splits every subscriber from its targets: random cases compared with the
/// reference model after every step (the sharded subject waits for quiescence after each).
#[test]
fn the_kit_passes_on_a_sharded_deployment() {
    use presence_conformance::kit::{self, KitOptions, Ops};
    let options = KitOptions { cases: cases(32), seed: 21, ops: Ops::all(), ..KitOptions::default() };
    let report = kit::check(&options, |config| {
        let stores = (0..3).map(|_| MemStore::new()).collect();
        ShardedSubject::open(config.clone(), split(3), stores, 2)
    });
    assert!(report.is_ok(), "{report:#?}");
    assert_eq!(report.passed, options.cases);
}
