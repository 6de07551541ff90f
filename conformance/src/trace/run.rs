//! Running a parsed [`Trace`] against a [`Subject`] and saying what did not hold.

use presence_engine::UserStatus;
use serde_json::json;

use super::parse::{Check, Expectation, ExpectedStatus, Item, Op, Trace};
use crate::observe::{notices_match, FlatNotice, Refusal, Response, ResultStatus};
use crate::subject::Subject;

/// One expectation or check that did not hold: `FILE:LINE: expected ..., got ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The line of the expectation, check or command (1-based).
    pub line: usize,
    /// What the trace expected.
    pub expected: String,
    /// What the subject did.
    pub got: String,
}

/// Runs `trace` on `subject` to its end, then the subject's replay check (R8.1), and returns
/// every failure in line order (the replay check reports at the trace's last line). If the
/// subject breaks ([`Subject::fault`]), the run stops there and the fault is the last failure.
pub fn run_trace<T: Subject>(trace: &Trace, subject: T) -> Vec<Failure> {
    let TraceRun { mut failures, fault } = run_trace_checked(trace, subject);
    if let Some(fault) = fault {
        failures.push(Failure {
            line: fault.line,
            expected: "the subject to keep answering".into(),
            got: fault.message,
        });
    }
    failures
}

/// What running a trace found: the failures, and whether the subject broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRun {
    /// Every expectation or check that did not hold, in line order, up to the fault if any.
    pub failures: Vec<Failure>,
    /// Where the subject broke ([`Subject::fault`]), if it did; the run stopped there.
    pub fault: Option<SubjectFault>,
}

/// A subject that broke while running a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectFault {
    /// The line being run (1-based).
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

/// As [`run_trace`], with the subject's fault kept apart from the failures.
pub fn run_trace_checked<T: Subject>(trace: &Trace, mut subject: T) -> TraceRun {
    let mut failures = Vec::new();
    let broke = |subject: &T, line: usize| subject.fault().map(|message| SubjectFault { line, message });
    if let Some(fault) = broke(&subject, 1) {
        return TraceRun { failures, fault: Some(fault) };
    }
    for item in &trace.items {
        let line = match item {
            Item::Step { line, at_ms, op, expectations } => {
                let result = match op {
                    Op::Command(command) => subject.execute(command.clone(), *at_ms),
                    Op::Tick => subject.tick(*at_ms),
                    Op::Restart { disconnect } => {
                        subject.restart(*at_ms, *disconnect).map(|()| Response::default())
                    }
                };
                if let Some(fault) = broke(&subject, *line) {
                    return TraceRun { failures, fault: Some(fault) };
                }
                check_step(*line, &result, expectations, &mut failures);
                *line
            }
            Item::Check { line, check } => {
                if let Some((expected, got)) = check_state(&subject, check) {
                    failures.push(Failure { line: *line, expected, got });
                }
                *line
            }
        };
        if let Some(fault) = broke(&subject, line) {
            return TraceRun { failures, fault: Some(fault) };
        }
    }
    if let Err(difference) = subject.finish() {
        failures.push(Failure {
            line: trace.lines,
            expected: "the state rebuilt from the event log to equal the live state".into(),
            got: difference.replace('\n', " "),
        });
    }
    TraceRun { failures, fault: None }
}

fn check_step(
    line: usize,
    result: &Result<Response, Refusal>,
    expectations: &[(usize, Expectation)],
    failures: &mut Vec<Failure>,
) {
    let decided = expectations.iter().any(|(_, e)| matches!(e, Expectation::Ok | Expectation::Error(_)));
    if !decided {
        // The implicit `ok`: a command with no ok or error expectation must succeed.
        if let Err(refusal) = result {
            failures.push(Failure { line, expected: "ok".into(), got: refusal.to_string() });
        }
    }
    for (line, expectation) in expectations {
        let failure = |expected: String, got: String| Failure { line: *line, expected, got };
        match (expectation, result) {
            (Expectation::Ok, Ok(_)) => {}
            (Expectation::Ok, Err(refusal)) => failures.push(failure("ok".into(), refusal.to_string())),
            (Expectation::Error(code), Ok(_)) => failures.push(failure(format!("error {code}"), "ok".into())),
            (Expectation::Error(code), Err(refusal)) if refusal.code != *code => {
                failures.push(failure(format!("error {code}"), refusal.to_string()))
            }
            (Expectation::Error(_), Err(_)) => {}
            (Expectation::Statuses(want), result) => {
                let want_text = format!("statuses {}", expected_statuses_text(want));
                match result {
                    Ok(Response { statuses: Some(got), .. })
                        if got.len() == want.len() && want.iter().zip(got).all(|(w, g)| w.matches(g)) => {}
                    Ok(Response { statuses: Some(got), .. }) => {
                        failures.push(failure(want_text, statuses_text(got)))
                    }
                    Ok(Response { statuses: None, .. }) => {
                        failures.push(failure(want_text, "no statuses (the command returns none)".into()))
                    }
                    Err(refusal) => failures.push(failure(want_text, refusal.to_string())),
                }
            }
            (Expectation::Notices(want), result) => {
                let got: &[FlatNotice] = match result {
                    Ok(response) => &response.notices,
                    Err(_) => &[],
                };
                let mut want = want.clone();
                want.sort();
                if !notices_match(&want, got) {
                    failures
                        .push(failure(format!("notices {}", notices_text(&want)), notices_diff(&want, got)));
                }
            }
        }
    }
}

/// Runs one check; `Some((expected, got))` when it does not hold.
fn check_state<T: Subject>(subject: &T, check: &Check) -> Option<(String, String)> {
    match check {
        Check::Status { user, status } => {
            let got = subject.status(user);
            (got != *status).then(|| (format!("{user} {}", status_text(status)), status_text(&got)))
        }
        Check::Subscriptions { user, targets } => {
            let got: Vec<String> = subject.subscriptions(user).iter().map(|t| t.to_string()).collect();
            (got != *targets)
                .then(|| (format!("subscriptions of {user} {}", json!(targets)), json!(got).to_string()))
        }
        Check::Friends { user, friends } => {
            let got: Vec<String> = subject.friends(user).iter().map(|t| t.to_string()).collect();
            (got != *friends)
                .then(|| (format!("friends of {user} {}", json!(friends)), json!(got).to_string()))
        }
        Check::Devices { user, connected, disconnected } => {
            let sessions = subject.sessions(user);
            let devices = |on: bool| -> Vec<String> {
                let mut list: Vec<String> =
                    sessions.iter().filter(|s| s.connected == on).map(|s| s.device.to_string()).collect();
                list.sort();
                list
            };
            let (got_on, got_off) = (devices(true), devices(false));
            let text = |on: &[String], off: &[String]| {
                format!("connected {} disconnected {}", json!(on), json!(off))
            };
            (got_on != *connected || got_off != *disconnected).then(|| {
                (format!("devices of {user} {}", text(connected, disconnected)), text(&got_on, &got_off))
            })
        }
    }
}

fn status_text(status: &UserStatus) -> String {
    json!({"status": status.general.name(), "custom": &*status.custom}).to_string()
}

fn statuses_text(list: &[ResultStatus]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|t| {
            let mut item =
                json!({"user": t.user.as_str(), "status": t.status.general.name(), "custom": &*t.status.custom});
            if let Some(version) = t.version {
                item["version"] = version.into();
            }
            item.to_string()
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn expected_statuses_text(list: &[ExpectedStatus]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|t| {
            let mut item =
                json!({"user": t.user.as_str(), "status": t.status.general.name(), "custom": &*t.status.custom});
            if let Some(version) = t.version {
                item["version"] = version.into();
            }
            item.to_string()
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn notices_text(list: &[FlatNotice]) -> String {
    let items: Vec<String> = list.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

/// What was got, with what is missing and what is unexpected spelled out.
fn notices_diff(want: &[FlatNotice], got: &[FlatNotice]) -> String {
    let missing: Vec<FlatNotice> =
        want.iter().filter(|w| !got.iter().any(|g| w.matches(g))).cloned().collect();
    let extra: Vec<FlatNotice> = got.iter().filter(|g| !want.iter().any(|w| w.matches(g))).cloned().collect();
    let mut text = notices_text(got);
    if !missing.is_empty() {
        text.push_str(&format!(" (missing {})", notices_text(&missing)));
    }
    if !extra.is_empty() {
        text.push_str(&format!(" (unexpected {})", notices_text(&extra)));
    }
    text
}
