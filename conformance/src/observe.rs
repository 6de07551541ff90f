//! What an implementation is seen to do, in the shapes every part of the suite compares:
//! flat notices, responses, refusals, and the comparison of two logical states. A leaf
//! module: the model, the subjects, the lockstep runner and the trace runner all use it,
//! and it uses none of them.

use std::cmp::Ordering;
use std::fmt;

use presence_engine::{
    Cause, Delivery, GeneralStatus, LogicalState, Names, Notice, Reply, TargetStatus, UserId, UserStatus,
};

/// One notice for one device, with owned names: the flat view traces and tests compare.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FlatNotice {
    /// Tell `to`'s `device` that `about` now has this status (R5.1).
    Status {
        /// The recipient user.
        to: String,
        /// The recipient device.
        device: String,
        /// The user whose status changed.
        about: String,
        /// Its new general status.
        status: GeneralStatus,
        /// Its new custom status.
        custom: String,
        /// Its version (R5.6): `None` where a trace leaves it out (any version matches) or
        /// an implementation does not report one.
        version: Option<u64>,
        /// Why it changed (R5.7), where stated or reported, as `version`.
        cause: Option<Cause>,
    },
    /// Tell `to`'s `device` that its session was kicked (R2.5, R5.5).
    Kicked {
        /// The recipient user.
        to: String,
        /// The kicked device.
        device: String,
    },
}

impl FlatNotice {
    /// Every delivery of the engine's `notices`, with names resolved, versions and causes.
    pub fn from_notices(notices: &[Notice], names: Names<'_>) -> Vec<FlatNotice> {
        let mut flat = Vec::new();
        for notice in notices {
            match notice {
                Notice::Status(n) => flat.extend(n.recipients.iter().map(|&r| {
                    let (to, device) = names.resolve(r);
                    FlatNotice::Status {
                        to: to.to_string(),
                        device: device.to_string(),
                        about: n.about.to_string(),
                        status: n.status.general,
                        custom: n.status.custom.to_string(),
                        version: Some(n.version),
                        cause: Some(n.cause.clone()),
                    }
                })),
                Notice::Kicked(r) => {
                    let (to, device) = names.resolve(*r);
                    flat.push(FlatNotice::Kicked { to: to.to_string(), device: device.to_string() });
                }
            }
        }
        flat
    }

    /// The owned copy of one of the engine's deliveries (which carry no cause).
    pub fn from_delivery(delivery: &Delivery<'_>) -> Self {
        match delivery {
            Delivery::Status { to, device, about, status, version } => FlatNotice::Status {
                to: to.to_string(),
                device: device.to_string(),
                about: about.to_string(),
                status: status.general,
                custom: status.custom.to_string(),
                version: Some(*version),
                cause: None,
            },
            Delivery::Kicked { to, device } => {
                FlatNotice::Kicked { to: to.to_string(), device: device.to_string() }
            }
        }
    }

    /// The recipient: (user, device).
    pub fn recipient(&self) -> (&str, &str) {
        match self {
            FlatNotice::Status { to, device, .. } | FlatNotice::Kicked { to, device } => (to, device),
        }
    }

    /// Whether `got` is this notice, where this one leaves its version or cause out (as a trace
    /// may) any version or cause matching.
    pub fn matches(&self, got: &FlatNotice) -> bool {
        match (self, got) {
            (
                FlatNotice::Status { to, device, about, status, custom, version, cause },
                FlatNotice::Status {
                    to: got_to,
                    device: got_device,
                    about: got_about,
                    status: got_status,
                    custom: got_custom,
                    version: got_version,
                    cause: got_cause,
                },
            ) => {
                (to, device, about, status, custom) == (got_to, got_device, got_about, got_status, got_custom)
                    && version.is_none_or(|v| *got_version == Some(v))
                    && cause.as_ref().is_none_or(|c| got_cause.as_ref() == Some(c))
            }
            (FlatNotice::Kicked { .. }, FlatNotice::Kicked { .. }) => self == got,
            _ => false,
        }
    }

    /// Whether `self` and `other` are the same notice where both state a field: a version or a
    /// cause that either leaves out is not compared. The conformance kit compares the model's
    /// notices (which state everything) with a subject's this way, so that a subject that does
    /// not report versions or causes (R5.6, R5.7) is not held to them.
    pub fn agrees(&self, other: &FlatNotice) -> bool {
        match (self, other) {
            (
                FlatNotice::Status { to, device, about, status, custom, version, cause },
                FlatNotice::Status {
                    to: other_to,
                    device: other_device,
                    about: other_about,
                    status: other_status,
                    custom: other_custom,
                    version: other_version,
                    cause: other_cause,
                },
            ) => {
                (to, device, about, status, custom)
                    == (other_to, other_device, other_about, other_status, other_custom)
                    && (version.is_none() || other_version.is_none() || version == other_version)
                    && (cause.is_none() || other_cause.is_none() || cause == other_cause)
            }
            (FlatNotice::Kicked { .. }, FlatNotice::Kicked { .. }) => self == other,
            _ => false,
        }
    }

    fn key(&self) -> (&str, &str, u8, &str, u8, &str, Option<u64>) {
        match self {
            FlatNotice::Status { to, device, about, status, custom, version, .. } => {
                (to, device, 0, about, status.code(), custom, *version)
            }
            FlatNotice::Kicked { to, device } => (to, device, 1, "", 0, "", None),
        }
    }
}

/// Whether `got` is the multiset `want`, each wanted notice matched by a different one got
/// ([`FlatNotice::matches`]: what `want` leaves out is not compared).
pub fn notices_match(want: &[FlatNotice], got: &[FlatNotice]) -> bool {
    multiset_match(want, got, FlatNotice::matches)
}

/// Whether `got` and `want` pair up one to one, each pair satisfying `pairs(want, got)`: a
/// perfect matching, found by augmenting paths, so that an item matching several others (a
/// notice that leaves its version out) never takes the partner another item needed.
pub fn multiset_match<W, G>(want: &[W], got: &[G], pairs: impl Fn(&W, &G) -> bool) -> bool {
    if want.len() != got.len() {
        return false;
    }
    let edges: Vec<Vec<usize>> = want
        .iter()
        .map(|w| got.iter().enumerate().filter(|(_, g)| pairs(w, g)).map(|(i, _)| i).collect())
        .collect();
    // partner[g] is the wanted item matched to got item g.
    let mut partner: Vec<Option<usize>> = vec![None; got.len()];
    (0..want.len()).all(|w| augment(w, &edges, &mut partner, &mut vec![false; got.len()]))
}

/// Kuhn's step: finds a partner for wanted item `w`, moving earlier pairs along if needed.
fn augment(w: usize, edges: &[Vec<usize>], partner: &mut [Option<usize>], seen: &mut [bool]) -> bool {
    for &g in edges.get(w).map(Vec::as_slice).unwrap_or_default() {
        let Some(visited) = seen.get_mut(g) else { continue };
        if *visited {
            continue;
        }
        *visited = true;
        let current = partner.get(g).copied().flatten();
        if current.is_none_or(|other| augment(other, edges, partner, seen)) {
            if let Some(slot) = partner.get_mut(g) {
                *slot = Some(w);
            }
            return true;
        }
    }
    false
}

impl PartialOrd for FlatNotice {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FlatNotice {
    /// By recipient, then status notices before kicks, then by content.
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key()).then_with(|| match (self, other) {
            (FlatNotice::Status { cause: a, .. }, FlatNotice::Status { cause: b, .. }) => {
                let name = |c: &Option<Cause>| c.as_ref().map(|c| (c.kind.name(), c.device.clone()));
                name(a).cmp(&name(b))
            }
            _ => Ordering::Equal,
        })
    }
}

impl fmt::Display for FlatNotice {
    /// The notice as a trace writes it (docs/TRACE-FORMAT.md), so that a failure message can be
    /// pasted into a trace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = match self {
            FlatNotice::Status { to, device, about, status, custom, version, cause } => {
                let mut json = serde_json::json!({
                    "to": to, "device": device, "about": about, "status": status.name(), "custom": custom,
                });
                if let Some(version) = version {
                    json["version"] = (*version).into();
                }
                if let Some(cause) = cause {
                    json["cause"] = cause_json(cause);
                }
                json
            }
            FlatNotice::Kicked { to, device } => {
                serde_json::json!({"to": to, "device": device, "kicked": true})
            }
        };
        write!(f, "{json}")
    }
}

/// A cause as a trace writes it: `{"kind": "login", "device": "phone"}`.
pub fn cause_json(cause: &Cause) -> serde_json::Value {
    let mut json = serde_json::json!({"kind": cause.kind.name()});
    if let Some(device) = &cause.device {
        json["device"] = device.as_str().into();
    }
    json
}

/// One status of a command's result (R4.6, R6.1): the engine's [`TargetStatus`], with the
/// version optional, since an implementation may not report versions (R5.6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResultStatus {
    /// The target.
    pub user: UserId,
    /// Its status.
    pub status: UserStatus,
    /// Its version, where reported.
    pub version: Option<u64>,
}

impl ResultStatus {
    /// Whether `self` and `other` are the same status where both state a version (see
    /// [`FlatNotice::agrees`]).
    pub fn agrees(&self, other: &ResultStatus) -> bool {
        self.user == other.user
            && self.status == other.status
            && (self.version.is_none() || other.version.is_none() || self.version == other.version)
    }
}

impl From<TargetStatus> for ResultStatus {
    fn from(t: TargetStatus) -> Self {
        ResultStatus { user: t.user, status: t.status, version: Some(t.version) }
    }
}

/// The result of a command (or tick) that succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The statuses a `get_status` or `subscribe` returns, in request order (R4.6, R6.1);
    /// `None` for every other command.
    pub statuses: Option<Vec<ResultStatus>>,
    /// Every delivery of the notices, sorted ([`FlatNotice`]'s order); the same notice to the
    /// same device twice would show twice.
    pub notices: Vec<FlatNotice>,
    /// How many sessions a `disconnect_sessions` disconnected (R8.5); `None` for every other
    /// command.
    pub disconnected: Option<usize>,
}

impl Response {
    /// The response to a command that replied `reply` and produced `notices` (sorted here).
    pub fn new(reply: Reply, mut notices: Vec<FlatNotice>) -> Self {
        notices.sort();
        let (statuses, disconnected) = match reply {
            Reply::Done => (None, None),
            Reply::Statuses(list) => (Some(list.into_iter().map(ResultStatus::from).collect()), None),
            Reply::Disconnected { sessions, .. } => (None, Some(sessions)),
        };
        Response { statuses, notices, disconnected }
    }
}

/// A refused command: the numeric code of SPEC.md R7.1 and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code (6017, 6014, 7008, 7013, 72001, 9000).
    pub code: u32,
    /// What was wrong, for people.
    pub message: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {} ({})", self.code, self.message)
    }
}

impl std::error::Error for Refusal {}

impl From<presence_engine::Error> for Refusal {
    fn from(e: presence_engine::Error) -> Self {
        Refusal { code: e.code(), message: e.to_string() }
    }
}

/// Compares two logical states, naming the first user that differs.
pub fn compare_states(what: &str, got: &LogicalState, want: &LogicalState) -> Result<(), String> {
    if got == want {
        return Ok(());
    }
    for (g, w) in got.users.iter().zip(&want.users) {
        if g != w {
            return Err(format!("{what} differs:\n  got:  {g:?}\n  want: {w:?}"));
        }
    }
    Err(format!("{what} differs in its users:\n  got:  {:?}\n  want: {:?}", got.users, want.users))
}
