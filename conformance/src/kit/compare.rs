//! One case on a subject and on the reference model, step by step: where they first differ,
//! or that the subject broke.
//!
//! The comparison is the trace format's: a step's result (success, or the error code), its
//! statuses in order, its notices as a multiset, and after every step the four checks of every
//! user of the id space. A version or a cause is compared only where the subject reports one
//! (R5.6, R5.7: an implementation may leave them out).

use std::panic::{catch_unwind, AssertUnwindSafe};

use presence_engine::Config;

use super::case::{reads, Case};
use crate::model::Model;
use crate::observe::{multiset_match, FlatNotice, Refusal, Response, ResultStatus};
use crate::subject::Subject;
use crate::trace::{check_line, notice_json, Check, ExpectedStatus};

/// The part of a step where a subject differed from the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The subject would not start with the configuration.
    Config,
    /// Success against refusal, or another error code.
    Result,
    /// The statuses of a result.
    Statuses,
    /// The notices.
    Notices,
    /// A direct read after the step: the model's, as a check.
    Read(Check),
    /// The replay check at the end (R8.1).
    Finish,
    /// The subject panicked.
    Panic,
}

/// Where a subject first differed from the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Difference {
    /// The step (its index); for [`Part::Config`] 0, for [`Part::Finish`] the number of steps.
    pub step: usize,
    /// What differed.
    pub part: Part,
    /// What the model says.
    pub expected: String,
    /// What the subject said.
    pub got: String,
}

/// Why a case stopped early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The subject differs from the model.
    Differs(Box<Difference>),
    /// The subject itself broke ([`Subject::fault`]).
    Fault(String),
}

/// Which optional fields the subject reported, in any answer of the case: a trace written for
/// it states only those.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reports {
    pub status_versions: bool,
    pub notice_versions: bool,
    pub notice_causes: bool,
}

impl Reports {
    fn note(&mut self, got: &Result<Response, Refusal>) {
        let Ok(response) = got else { return };
        let statuses = response.statuses.iter().flatten();
        self.status_versions |= statuses.clone().any(|s| s.version.is_some());
        for notice in &response.notices {
            if let FlatNotice::Status { version, cause, .. } = notice {
                self.notice_versions |= version.is_some();
                self.notice_causes |= cause.is_some();
            }
        }
    }

    /// The model's status as a trace for this subject states it.
    pub fn status(&self, status: &ResultStatus) -> ExpectedStatus {
        ExpectedStatus {
            user: status.user.clone(),
            status: status.status.clone(),
            version: status.version.filter(|_| self.status_versions),
        }
    }

    /// The model's notice as a trace for this subject states it.
    pub fn notice(&self, notice: &FlatNotice) -> FlatNotice {
        match notice.clone() {
            FlatNotice::Status { to, device, about, status, custom, version, cause } => FlatNotice::Status {
                to,
                device,
                about,
                status,
                custom,
                version: version.filter(|_| self.notice_versions),
                cause: cause.filter(|_| self.notice_causes),
            },
            kicked => kicked,
        }
    }
}

/// What running a case found.
pub(crate) struct CaseRun {
    /// The optional fields the subject reported.
    pub reports: Reports,
    /// `None` when the subject agreed with the model to the end.
    pub stop: Option<Stop>,
}

/// Runs `case` on a subject made by `make` and on the model, comparing after every step the
/// result and the reads of each of `users`, and at the end the subject's replay check.
pub(crate) fn run_case<S, F>(case: &Case, make: &mut F, users: &[&str]) -> CaseRun
where
    S: Subject,
    F: FnMut(&Config) -> Result<S, Refusal>,
{
    let mut reports = Reports::default();
    let stop = run(case, make, users, &mut reports).err();
    CaseRun { reports, stop }
}

fn run<S, F>(case: &Case, make: &mut F, users: &[&str], reports: &mut Reports) -> Result<(), Stop>
where
    S: Subject,
    F: FnMut(&Config) -> Result<S, Refusal>,
{
    let differs = |step: usize, part: Part, expected: String, got: String| {
        Stop::Differs(Box::new(Difference { step, part, expected, got }))
    };
    let mut subject = match catch(|| make(&case.config)) {
        Ok(Ok(subject)) => subject,
        Ok(Err(refusal)) => {
            return Err(differs(0, Part::Config, "the configuration accepted".into(), refusal.to_string()))
        }
        Err(panic) => return Err(differs(0, Part::Panic, "no panic".into(), panic)),
    };
    fault(&subject)?;
    let mut model = Model::new(case.config.clone());
    for (index, step) in case.steps.iter().enumerate() {
        let want = step.run_on(&mut model);
        let got = catch(|| step.run_on(&mut subject))
            .map_err(|p| differs(index, Part::Panic, "no panic".into(), p))?;
        fault(&subject)?;
        reports.note(&got);
        if let Some((part, expected, got)) = compare_results(&want, &got) {
            return Err(differs(index, part, expected, got));
        }
        for user in users {
            let got = catch(|| reads(&subject, user))
                .map_err(|p| differs(index, Part::Panic, "no panic".into(), p))?;
            fault(&subject)?;
            for (want, got) in reads(&model, user).into_iter().zip(got) {
                if want != got {
                    let (expected, got) = (check_line(&want), check_line(&got));
                    return Err(differs(index, Part::Read(want), expected, got));
                }
            }
        }
    }
    let end = case.steps.len();
    match catch(|| subject.finish()) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(difference)) => Err(differs(
            end,
            Part::Finish,
            "the state rebuilt from the event log to equal the live state".into(),
            difference,
        )),
        Err(panic) => Err(differs(end, Part::Panic, "no panic".into(), panic)),
    }
}

fn fault<S: Subject>(subject: &S) -> Result<(), Stop> {
    subject.fault().map_or(Ok(()), |message| Err(Stop::Fault(message)))
}

/// Runs `f`, turning a panic into its message.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        format!("a panic: {message}")
    })
}

/// The first difference between the model's answer and the subject's, if any.
fn compare_results(
    want: &Result<Response, Refusal>,
    got: &Result<Response, Refusal>,
) -> Option<(Part, String, String)> {
    match (want, got) {
        (Ok(_), Err(refusal)) => Some((Part::Result, "ok".into(), refusal.to_string())),
        (Err(refusal), Ok(_)) => Some((Part::Result, format!("error {}", refusal.code), "ok".into())),
        (Err(want), Err(got)) if want.code != got.code => {
            Some((Part::Result, format!("error {}", want.code), got.to_string()))
        }
        (Err(_), Err(_)) => None,
        (Ok(want), Ok(got)) => {
            let statuses_agree = match (&want.statuses, &got.statuses) {
                (None, None) => true,
                (Some(w), Some(g)) => w.len() == g.len() && w.iter().zip(g).all(|(w, g)| w.agrees(g)),
                _ => false,
            };
            if !statuses_agree {
                return Some((Part::Statuses, statuses_text(&want.statuses), statuses_text(&got.statuses)));
            }
            if !multiset_match(&want.notices, &got.notices, FlatNotice::agrees) {
                return Some((Part::Notices, notices_text(&want.notices), notices_text(&got.notices)));
            }
            None
        }
    }
}

fn statuses_text(statuses: &Option<Vec<ResultStatus>>) -> String {
    match statuses {
        None => "no statuses".into(),
        Some(list) => {
            let all = Reports { status_versions: true, ..Reports::default() };
            let items: Vec<String> = list.iter().map(|s| crate::trace::status_json(&all.status(s))).collect();
            format!("statuses [{}]", items.join(", "))
        }
    }
}

fn notices_text(notices: &[FlatNotice]) -> String {
    let items: Vec<String> = notices.iter().map(notice_json).collect();
    format!("notices [{}]", items.join(", "))
}
