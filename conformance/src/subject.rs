//! What the trace runner and the property tests drive: a [`Subject`], implemented by the
//! engine over any store ([`EngineSubject`]) and by the reference model (next to it, in
//! `model/`).

use presence_engine::{Command, Config, Engine, EventStore, Outcome, SessionView, UserId, UserStatus};

use crate::observe::{compare_states, FlatNotice, Refusal, Response};

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
        compare_states("state rebuilt from the log", &reopened.logical_state(), &live)
    }
}
