//! Cases written as traces, with the reference model's expectations: the minimal failing case
//! the kit found (only what it takes to show the difference), and generated traces for
//! systems that can only replay files (every expectation and every change of state).

use std::collections::BTreeMap;

use super::case::{reads, Case};
use super::compare::{Difference, Part, Reports};
use crate::model::Model;
use crate::observe::Response;
use crate::trace::{Expectation, Op, TraceWriter};

/// A trace and the line where it shows the difference.
pub(crate) struct Written {
    /// The trace.
    pub text: String,
    /// The line of the expectation or check that fails on the subject (for a difference at
    /// the end, the last line; for a configuration refused, the configuration's).
    pub line: usize,
}

/// `case` up to the step of `difference`: each step with its error code when the model
/// refuses it (so the implicit `ok` does not fail the trace earlier), then at that step the
/// model's answer in full, or the check that differs. Versions and causes are stated where
/// the subject reported them (`reports`).
pub(crate) fn failing_trace(
    case: &Case,
    difference: &Difference,
    reports: &Reports,
    header: &str,
) -> Written {
    let mut trace = TraceWriter::new();
    trace.comment(header);
    trace.config(&case.config);
    let mut line = trace.lines();
    let mut model = Model::new(case.config.clone());
    let last = match difference.part {
        Part::Config => return Written { text: trace.text(), line },
        Part::Finish => case.steps.len(),
        _ => difference.step.saturating_add(1),
    };
    for (index, step) in case.steps.iter().enumerate().take(last) {
        trace.step(step.at_ms, &step.op);
        line = trace.lines();
        let answer = step.run_on(&mut model);
        if index != difference.step {
            if let Err(refusal) = &answer {
                trace.expect(&Expectation::Error(refusal.code));
            }
            continue;
        }
        match (&difference.part, &answer) {
            (_, Err(refusal)) => {
                trace.expect(&Expectation::Error(refusal.code));
                if difference.part == Part::Result {
                    line = trace.lines();
                }
            }
            (Part::Result | Part::Statuses | Part::Notices, Ok(response)) => {
                line = expect_all(&mut trace, response, reports, &difference.part, &step.op);
            }
            _ => {}
        }
        if let Part::Read(check) = &difference.part {
            trace.check(check);
            line = trace.lines();
        }
    }
    if difference.part == Part::Finish {
        line = trace.lines();
    }
    Written { text: trace.text(), line }
}

/// Writes `ok`, the statuses and the notices of `response`; returns the line of `part`'s.
fn expect_all(
    trace: &mut TraceWriter,
    response: &Response,
    reports: &Reports,
    part: &Part,
    op: &Op,
) -> usize {
    let mut line = trace.lines();
    trace.expect(&Expectation::Ok);
    if *part == Part::Result {
        line = trace.lines();
    }
    if let Some(statuses) = &response.statuses {
        trace.expect(&Expectation::Statuses(statuses.iter().map(|s| reports.status(s)).collect()));
        if *part == Part::Statuses {
            line = trace.lines();
        }
    }
    if !matches!(op, Op::Restart { .. }) {
        trace.expect(&Expectation::Notices(response.notices.iter().map(|n| reports.notice(n)).collect()));
        if *part == Part::Notices {
            line = trace.lines();
        }
    }
    line
}

/// `case` in full with every expectation of the model: each step's error code, or its
/// statuses (with versions) and notices (with versions and causes, `[]` when there are none);
/// after each step a check of every read of `users` that changed; at the end every read of
/// every user.
pub(crate) fn generated_trace(case: &Case, header: &str, users: &[&str]) -> String {
    let all = Reports { status_versions: true, notice_versions: true, notice_causes: true };
    let mut trace = TraceWriter::new();
    trace.comment(header);
    trace.config(&case.config);
    let mut model = Model::new(case.config.clone());
    let mut stated = BTreeMap::new();
    for user in users {
        for (kind, check) in reads(&model, user).into_iter().enumerate() {
            stated.insert((user.to_string(), kind), check);
        }
    }
    for step in &case.steps {
        trace.step(step.at_ms, &step.op);
        match step.run_on(&mut model) {
            Err(refusal) => trace.expect(&Expectation::Error(refusal.code)),
            Ok(response) => {
                if let Some(statuses) = &response.statuses {
                    trace.expect(&Expectation::Statuses(statuses.iter().map(|s| all.status(s)).collect()));
                }
                if !matches!(step.op, Op::Restart { .. }) {
                    trace.expect(&Expectation::Notices(response.notices.clone()));
                }
            }
        }
        for user in users {
            for (kind, check) in reads(&model, user).into_iter().enumerate() {
                if stated.get(&(user.to_string(), kind)) != Some(&check) {
                    trace.check(&check);
                    stated.insert((user.to_string(), kind), check);
                }
            }
        }
    }
    trace.comment("The state at the end.");
    for check in stated.values() {
        trace.check(check);
    }
    trace.text()
}
