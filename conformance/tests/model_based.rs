//! Model-based tests: random command sequences with ticks, snapshots and restarts, on random
//! small configurations, run on the engine and on the reference model in lockstep. After
//! every step the replies, error codes, notices and every read must agree and the
//! invariants must hold (see `presence_conformance::lockstep`); at the end the state rebuilt
//! from the log must equal the live state (R8.1). Failures shrink to short step lists.
//!
//! `PROPTEST_CASES=100000 cargo test -p presence-conformance --release --test model_based`
//! runs longer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use presence_conformance::lockstep::{Lockstep, Step};
use presence_engine::{Config, EventStore};
use presence_storage_mem::MemStore;
use presence_storage_sled::{Durability, SledStore};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Runs `steps` on the engine over `store` and on the model; the error names the step.
fn lockstep<S: EventStore>(config: Config, store: S, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut run = Lockstep::new(config, store, common::USERS.iter().copied()).map_err(TestCaseError::fail)?;
    for (index, step) in steps.iter().enumerate() {
        run.step(step).map_err(|e| TestCaseError::fail(format!("step {index} ({step:?}): {e}")))?;
    }
    run.finish().map_err(|e| TestCaseError::fail(format!("at the end: {e}")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(1000)))]

    /// R1-R8 on random configurations, against the in-memory store.
    #[test]
    fn engine_matches_model_on_mem(config in common::config(), steps in common::steps(80)) {
        lockstep(config, MemStore::new(), &steps)?;
    }

    /// The defaults of SPEC.md's table (long timeouts: mostly the cap-free paths).
    #[test]
    fn engine_matches_model_with_defaults(steps in common::steps(60)) {
        lockstep(Config::default(), MemStore::new(), &steps)?;
    }
}

proptest! {
    // A sled store costs a few milliseconds to create, so fewer cases run on it by default.
    #![proptest_config(ProptestConfig::with_cases(common::cases(100)))]

    /// The same on the sled store, snapshots, compaction and reopening included.
    #[test]
    fn engine_matches_model_on_sled(config in common::config(), steps in common::steps(80)) {
        let store = SledStore::temporary(Durability::GroupCommit).map_err(|e| TestCaseError::fail(e.to_string()))?;
        lockstep(config, store, &steps)?;
    }
}
