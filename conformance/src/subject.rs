//! What the trace runner and the property tests drive: a [`Subject`], implemented by the
//! engine over any store ([`EngineSubject`]) and by the reference model (next to it, in
//! `model/`).

use presence_engine::{
    Command, Config, Engine, EngineOptions, EventStore, Outcome, RestoredSessions, SessionView, UserId,
    UserStatus,
};

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
    /// Stops and starts again over what was stored (R8.2), at `at_ms` (the time of a trace's
    /// `restart` line): with `disconnect`, every restored session is disconnected at that time
    /// before anything else (R8.4). Only a storage failure can refuse it.
    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal>;
    /// Whether the subject itself broke, as opposed to the system it drives answering wrongly:
    /// an adapter program that died, answered garbage or did not answer in time
    /// ([`crate::exec`]). Runners check it after every call, stop at the first fault and report
    /// it apart from differences (`presence conform` exits with 2). A subject in the same
    /// process cannot break this way and keeps the default, `None`.
    fn fault(&self) -> Option<String> {
        None
    }
    /// After the last command: rebuilds the state from the event log alone and says how it
    /// differs from the live state, if it does (R8.1). A subject without a log returns `Ok`.
    fn finish(self) -> Result<(), String>
    where
        Self: Sized;
}

/// The engine over a store, as a [`Subject`].
pub struct EngineSubject<S> {
    /// `None` only after a restart whose reopening failed: the store went with it.
    engine: Option<Engine<S>>,
}

impl<S: EventStore> EngineSubject<S> {
    /// Opens an engine with `config` over `store`.
    pub fn open(config: Config, store: S) -> Result<Self, Refusal> {
        Ok(Self { engine: Some(Engine::open(config, store)?) })
    }

    /// The engine (`None` after a failed restart).
    pub fn engine(&self) -> Option<&Engine<S>> {
        self.engine.as_ref()
    }

    fn live(&mut self) -> Result<&mut Engine<S>, Refusal> {
        self.engine.as_mut().ok_or_else(lost)
    }
}

fn lost() -> Refusal {
    Refusal { code: 9000, message: "the engine was lost when a restart failed to reopen its store".into() }
}

/// Closes `engine` and opens it again over its store (R8.2), keeping its sessions or
/// disconnecting them at `disconnect_at_ms` (R8.4).
pub fn reopen<S: EventStore>(engine: Engine<S>, disconnect_at_ms: Option<u64>) -> Result<Engine<S>, Refusal> {
    let restored_sessions = match disconnect_at_ms {
        Some(at_ms) => RestoredSessions::Disconnect { at_ms },
        None => RestoredSessions::Keep,
    };
    let options = EngineOptions { restored_sessions, ..EngineOptions::default() };
    let config = engine.config().clone();
    Ok(Engine::open_with(config, engine.into_store(), options)?)
}

/// The engine's outcome as a [`Response`]: the reply's statuses and every delivery, sorted.
pub fn response_of<S: EventStore>(engine: &Engine<S>, outcome: &Outcome) -> Response {
    let notices = FlatNotice::from_notices(&outcome.notices, engine.names());
    Response::new(outcome.reply.clone(), notices)
}

impl<S: EventStore> Subject for EngineSubject<S> {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        let engine = self.live()?;
        let outcome = engine.execute(command, at_ms)?;
        Ok(response_of(engine, &outcome))
    }

    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        let engine = self.live()?;
        let outcome = engine.tick(at_ms)?;
        Ok(response_of(engine, &outcome))
    }

    fn status(&self, user: &str) -> UserStatus {
        self.engine.as_ref().map_or_else(UserStatus::unlogined, |e| e.status(user))
    }

    fn sessions(&self, user: &str) -> Vec<SessionView> {
        self.engine.as_ref().map(|e| e.sessions(user)).unwrap_or_default()
    }

    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.engine.as_ref().map(|e| e.subscriptions(user)).unwrap_or_default()
    }

    fn friends(&self, user: &str) -> Vec<UserId> {
        self.engine.as_ref().map(|e| e.friends(user)).unwrap_or_default()
    }

    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal> {
        let engine = self.engine.take().ok_or_else(lost)?;
        self.engine = Some(reopen(engine, disconnect.then_some(at_ms))?);
        Ok(())
    }

    fn finish(self) -> Result<(), String> {
        let engine = self.engine.ok_or_else(|| lost().message)?;
        let live = engine.logical_state();
        let config = engine.config().clone();
        let reopened = Engine::open(config, engine.into_store())
            .map_err(|e| format!("reopening the store failed: {e}"))?;
        compare_states("state rebuilt from the log", &reopened.logical_state(), &live)
    }
}
