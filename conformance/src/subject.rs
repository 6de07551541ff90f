//! What the trace runner and the property tests drive: a [`Subject`], implemented by the
//! engine over any store ([`EngineSubject`]) and by the reference [`Model`].

use std::cmp::Ordering;
use std::fmt;

use presence_engine::{
    Command, Config, Delivery, Engine, EventStore, GeneralStatus, Outcome, SessionView, TargetStatus, UserId,
    UserStatus,
};

use crate::model::Model;

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
    /// The notice as a trace writes it (TRACE-FORMAT.md), so that a failure message can be
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

/// An implementation of SPEC.md that traces can drive: commands and ticks in, responses out,
/// and the host's direct reads (R6.4). Implement it for another system (through an adapter)
/// to run the traces against it.
pub trait Subject {
    /// Executes `command` at `at_ms`.
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal>;
    /// A clock tick at `at_ms` (R2.4, R4.5). Only a storage failure can refuse it.
    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal>;
    /// The status of any user (R6.4).
    fn status(&self, user: &str) -> UserStatus;
    /// The sessions of `user`, sorted by device.
    fn sessions(&self, user: &str) -> Vec<SessionView>;
    /// The subscription list of `user`, oldest first (R4.2).
    fn subscriptions(&self, user: &str) -> Vec<UserId>;
    /// The friends of `user`, sorted (R5.4).
    fn friends(&self, user: &str) -> Vec<UserId>;
    /// After the last command: rebuilds the state from the event log alone and says how it
    /// differs from the live state, if it does (R8.1). A subject without a log returns `Ok`.
    fn finish(self) -> Result<(), String>
    where
        Self: Sized;
}

/// The engine over a store, as a [`Subject`].
pub struct EngineSubject<S> {
    engine: Engine<S>,
}

impl<S: EventStore> EngineSubject<S> {
    /// Opens an engine with `config` over `store`.
    pub fn open(config: Config, store: S) -> Result<Self, Refusal> {
        Ok(Self { engine: Engine::open(config, store)? })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine<S> {
        &self.engine
    }
}

/// The engine's outcome as a [`Response`]: the reply's statuses and every delivery, sorted.
pub fn response_of<S: EventStore>(engine: &Engine<S>, outcome: &Outcome) -> Response {
    let statuses = match &outcome.reply {
        presence_engine::Reply::Statuses(list) => Some(list.clone()),
        presence_engine::Reply::Done => None,
    };
    let mut notices: Vec<FlatNotice> =
        engine.deliveries(outcome).map(|d| FlatNotice::from_delivery(&d)).collect();
    notices.sort();
    Response { statuses, notices }
}

impl<S: EventStore> Subject for EngineSubject<S> {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        let outcome = self.engine.execute(command, at_ms)?;
        Ok(response_of(&self.engine, &outcome))
    }

    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        let outcome = self.engine.tick(at_ms)?;
        Ok(response_of(&self.engine, &outcome))
    }

    fn status(&self, user: &str) -> UserStatus {
        self.engine.status(user)
    }

    fn sessions(&self, user: &str) -> Vec<SessionView> {
        self.engine.sessions(user)
    }

    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.engine.subscriptions(user)
    }

    fn friends(&self, user: &str) -> Vec<UserId> {
        self.engine.friends(user)
    }

    fn finish(self) -> Result<(), String> {
        let live = self.engine.logical_state();
        let config = self.engine.config().clone();
        let reopened = Engine::open(config, self.engine.into_store())
            .map_err(|e| format!("reopening the store failed: {e}"))?;
        crate::lockstep::compare_states("state rebuilt from the log", &reopened.logical_state(), &live)
    }
}

impl Subject for Model {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        Model::execute(self, command, at_ms)
    }

    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        Ok(Model::tick(self, at_ms))
    }

    fn status(&self, user: &str) -> UserStatus {
        Model::status(self, user)
    }

    fn sessions(&self, user: &str) -> Vec<SessionView> {
        Model::sessions(self, user)
    }

    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        Model::subscriptions(self, user)
    }

    fn friends(&self, user: &str) -> Vec<UserId> {
        Model::friends(self, user)
    }

    fn finish(self) -> Result<(), String> {
        Ok(())
    }
}
