//! What an implementation is seen to do, in the shapes every part of the suite compares:
//! flat notices, responses, refusals, and the comparison of two logical states. A leaf
//! module: the model, the subjects, the lockstep runner and the trace runner all use it,
//! and it uses none of them.

use std::cmp::Ordering;
use std::fmt;

use presence_engine::{Delivery, GeneralStatus, LogicalState, TargetStatus};

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
    /// The owned copy of one of the engine's deliveries.
    pub fn from_delivery(delivery: &Delivery<'_>) -> Self {
        match delivery {
            Delivery::Status { to, device, about, status } => FlatNotice::Status {
                to: to.to_string(),
                device: device.to_string(),
                about: about.to_string(),
                status: status.general,
                custom: status.custom.to_string(),
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

    fn key(&self) -> (&str, &str, u8, &str, u8, &str) {
        match self {
            FlatNotice::Status { to, device, about, status, custom } => {
                (to, device, 0, about, status.code(), custom)
            }
            FlatNotice::Kicked { to, device } => (to, device, 1, "", 0, ""),
        }
    }
}

impl PartialOrd for FlatNotice {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FlatNotice {
    /// By recipient, then status notices before kicks, then by content.
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl fmt::Display for FlatNotice {
    /// The notice as a trace writes it (docs/TRACE-FORMAT.md), so that a failure message can be
    /// pasted into a trace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = match self {
            FlatNotice::Status { to, device, about, status, custom } => serde_json::json!({
                "to": to, "device": device, "about": about, "status": status.name(), "custom": custom,
            }),
            FlatNotice::Kicked { to, device } => {
                serde_json::json!({"to": to, "device": device, "kicked": true})
            }
        };
        write!(f, "{json}")
    }
}

/// The result of a command (or tick) that succeeded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The statuses a `get_status` or `subscribe` returns, in request order (R4.6, R6.1);
    /// `None` for every other command.
    pub statuses: Option<Vec<TargetStatus>>,
    /// Every delivery of the notices, sorted ([`FlatNotice`]'s order); the same notice to the
    /// same device twice would show twice.
    pub notices: Vec<FlatNotice>,
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
