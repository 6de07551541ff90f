//! The engine and the reference model in lockstep: the heart of the model-based tests.
//!
//! [`Lockstep::step`] runs one [`Step`] on both and compares everything observable: the reply
//! or the error code, the notices as a set of deliveries, and the direct reads of every user
//! (status, last `ONLINE`, sessions, subscriptions, friends) and the whole logical state. It
//! also checks the engine's invariants: a subscription list never longer than the cap (R4.3),
//! a custom status only while `ONLINE` (R3.3), the status derived from the sessions (R2.3),
//! no notice to a disconnected or missing session (R5.3), no event for a refused command
//! (R7.1). [`Lockstep::finish`] rebuilds the state from the log, by full replay and by
//! reopening the store (snapshot plus tail when there is one), and compares it (R8.1).
//!
//! It is generic over the [`EventStore`], so every backend runs the same checks. Over a store
//! that fails on purpose (`FaultyStore`), [`Lockstep::allow_store_failures`] lets a command or
//! tick fail with a store error (code 9000): the model does not take that step, and the
//! comparisons after it check that the engine changed nothing either (R7.1).
//!
//! ```
//! use presence_conformance::lockstep::{Lockstep, Step};
//! use presence_engine::{Command, Config};
//! use presence_storage_mem::MemStore;
//!
//! let mut run = Lockstep::new(Config::default(), MemStore::new(), ["alice", "bob"])?;
//! run.step(&Step::Execute { command: Command::login("alice", "phone"), at_ms: 0 })?;
//! run.step(&Step::Snapshot { compact: false })?;
//! run.step(&Step::Tick { at_ms: 400_000 })?;
//! run.finish()?;
//! # Ok::<(), String>(())
//! ```

use std::collections::BTreeSet;
use std::fmt::Debug;

use presence_engine::{Command, Config, Engine, EventStore, GeneralStatus, LastOnline};
use presence_storage_mem::MemStore;

use crate::model::Model;
use crate::observe::{compare_states, FlatNotice, Refusal, Response};
use crate::subject::response_of;

/// One step of a lockstep run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A command at a time.
    Execute {
        /// The command.
        command: Command,
        /// Its time (R1.3: earlier than the latest seen counts as the latest).
        at_ms: u64,
    },
    /// A clock tick (R2.4, R4.5).
    Tick {
        /// Its time.
        at_ms: u64,
    },
    /// The engine saves a snapshot, and compacts the log it covers if asked.
    Snapshot {
        /// Whether to compact after the snapshot.
        compact: bool,
    },
    /// The engine is closed and reopened from its store (R8.1, R8.2).
    Reopen,
    /// The engine is closed and reopened from its store, disconnecting every restored session
    /// at `at_ms` (R8.4).
    ReopenDisconnecting {
        /// The time of the restart.
        at_ms: u64,
    },
}

/// The engine over a store and the model, driven by the same steps.
pub struct Lockstep<S> {
    config: Config,
    engine: Option<Engine<S>>,
    model: Model,
    watched: Vec<String>,
    last: Option<Result<Response, Refusal>>,
    store_failures: bool,
}

/// The code of a store failure (R7.1).
const STORE_FAILURE_CODE: u32 = 9000;

impl<S: EventStore> Lockstep<S> {
    /// A fresh engine over `store` (which should be empty) and a fresh model, both with
    /// `config`. `watched` names users whose reads are compared after every step, besides
    /// every user the engine knows of.
    pub fn new(
        config: Config,
        store: S,
        watched: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, String> {
        let engine = Engine::open(config.clone(), store).map_err(|e| format!("open failed: {e}"))?;
        let model = Model::new(config.clone());
        Ok(Self {
            config,
            engine: Some(engine),
            model,
            watched: watched.into_iter().map(Into::into).collect(),
            last: None,
            store_failures: false,
        })
    }

    /// Whether a command or tick may fail with a store error (code 9000), as it does over a
    /// store told to fail. Such a step must change nothing (R7.1): the model does not take it,
    /// and every comparison after it checks that the engine did not either. Off by default,
    /// when a store error is a failure of the run.
    pub fn allow_store_failures(&mut self, allow: bool) {
        self.store_failures = allow;
    }

    /// The engine (absent only after a failed reopen).
    pub fn engine(&self) -> Option<&Engine<S>> {
        self.engine.as_ref()
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// What the engine answered to the last command or tick (`None` after a snapshot or a
    /// reopening). The model answered the same, or [`Lockstep::step`] said otherwise.
    pub fn last(&self) -> Option<&Result<Response, Refusal>> {
        self.last.as_ref()
    }

    fn live(&mut self) -> Result<&mut Engine<S>, String> {
        self.engine.as_mut().ok_or_else(|| "the engine was lost by a failed reopen".to_string())
    }

    /// Runs `step` on both and compares; the error says what differed or which invariant
    /// broke.
    pub fn step(&mut self, step: &Step) -> Result<(), String> {
        self.last = None;
        let notices = match step {
            Step::Execute { command, at_ms } => self.execute(command, *at_ms)?,
            Step::Tick { at_ms } => self.tick(*at_ms)?,
            Step::Snapshot { compact } => {
                let engine = self.live()?;
                engine.snapshot().map_err(|e| format!("snapshot failed: {e}"))?;
                if *compact {
                    engine.compact().map_err(|e| format!("compact failed: {e}"))?;
                }
                self.model.snapshot_taken();
                Vec::new()
            }
            Step::Reopen => {
                let engine = self.engine.take().ok_or("the engine was lost by a failed reopen")?;
                let live = engine.logical_state();
                let reopened = Engine::open(self.config.clone(), engine.into_store())
                    .map_err(|e| format!("reopen failed: {e}"))?;
                compare_states("state after reopening", &reopened.logical_state(), &live)?;
                self.engine = Some(reopened);
                self.model.reopen();
                Vec::new()
            }
            Step::ReopenDisconnecting { at_ms } => {
                let engine = self.engine.take().ok_or("the engine was lost by a failed reopen")?;
                let reopened = crate::subject::reopen(engine, Some(*at_ms))
                    .map_err(|e| format!("reopen disconnecting failed: {e}"))?;
                self.engine = Some(reopened);
                self.model.restart(Some(*at_ms));
                Vec::new()
            }
        };
        self.check_invariants(&notices)?;
        self.compare_reads()
    }

    fn tick(&mut self, at_ms: u64) -> Result<Vec<FlatNotice>, String> {
        let store_failures = self.store_failures;
        let engine = self.live()?;
        let seq_before = engine.last_seq();
        let now_before = engine.now_ms();
        let outcome = match engine.tick(at_ms) {
            Ok(outcome) => outcome,
            Err(e) if store_failures && e.code() == STORE_FAILURE_CODE => {
                // As for a command: the model does not take a tick the store refused.
                check_unchanged("tick", engine, seq_before, now_before)?;
                self.last = Some(Err(Refusal::from(e)));
                return Ok(Vec::new());
            }
            Err(e) => return Err(format!("tick failed: {e}")),
        };
        let got = response_of(engine, &outcome);
        check_events(seq_before, outcome.events, engine.last_seq())?;
        let want = self.model.tick(at_ms);
        compare("tick notices", &got.notices, &want.notices)?;
        let notices = got.notices.clone();
        self.last = Some(Ok(got));
        Ok(notices)
    }

    fn execute(&mut self, command: &Command, at_ms: u64) -> Result<Vec<FlatNotice>, String> {
        let store_failures = self.store_failures;
        let engine = self.live()?;
        let seq_before = engine.last_seq();
        let now_before = engine.now_ms();
        let what = command.name();
        let got = match engine.execute(command.clone(), at_ms) {
            Ok(outcome) => Ok((response_of(engine, &outcome), outcome.events)),
            Err(e) if store_failures && e.code() == STORE_FAILURE_CODE => {
                // The store refused a command the engine had accepted: the model, which has
                // no store, does not take it, and the reads compared next must still agree.
                check_unchanged(what, engine, seq_before, now_before)?;
                self.last = Some(Err(Refusal::from(e)));
                return Ok(Vec::new());
            }
            Err(e) => Err(e),
        };
        let seq_after = engine.last_seq();
        let next_seq = engine.store().next_seq();
        let want = self.model.execute(command.clone(), at_ms);
        match (got, want) {
            (Ok((got, events)), Ok(want)) => {
                compare(&format!("{what} statuses"), &got.statuses, &want.statuses)?;
                compare(&format!("{what} notices"), &got.notices, &want.notices)?;
                check_events(seq_before, events, seq_after)?;
                let notices = got.notices.clone();
                self.last = Some(Ok(got));
                Ok(notices)
            }
            (Err(e), Err(want)) => {
                let got = Refusal::from(e);
                compare(&format!("{what} error code"), &got.code, &want.code)?;
                if seq_after != seq_before || next_seq != seq_before + 1 {
                    return Err(format!(
                        "R7.1: refused {what} appended events ({seq_before} -> {seq_after})"
                    ));
                }
                self.last = Some(Err(got));
                Ok(Vec::new())
            }
            (Ok((got, _)), Err(want)) => {
                Err(format!("{what}: engine accepted ({got:?}), model refused: {want}"))
            }
            (Err(got), Ok(want)) => Err(format!("{what}: engine refused ({got}), model accepted ({want:?})")),
        }
    }

    /// Every user worth reading: the watched ones and every one the engine knows of.
    fn users(&self) -> BTreeSet<String> {
        let mut users: BTreeSet<String> = self.watched.iter().cloned().collect();
        if let Some(engine) = &self.engine {
            users.extend(engine.user_ids().map(|u| u.to_string()));
        }
        users
    }

    fn check_invariants(&self, notices: &[FlatNotice]) -> Result<(), String> {
        let engine = self.engine.as_ref().ok_or("the engine was lost by a failed reopen")?;
        let cap = self.config.max_subscriptions as usize;
        for user in self.users() {
            let subscriptions = engine.subscriptions(&user);
            if subscriptions.len() > cap {
                return Err(format!("R4.3: {user} has {} subscriptions, cap {cap}", subscriptions.len()));
            }
            let status = engine.status(&user);
            if !status.custom.is_empty() && status.general != GeneralStatus::Online {
                return Err(format!("R3.3: {user} is {} with custom {:?}", status.general, status.custom));
            }
            let sessions = engine.sessions(&user);
            let derived = if sessions.iter().any(|s| s.connected) {
                GeneralStatus::Online
            } else if sessions.is_empty() {
                GeneralStatus::Unlogined
            } else {
                GeneralStatus::Offline
            };
            if status.general != derived {
                return Err(format!("R2.3: {user} is {} but its sessions say {derived}", status.general));
            }
            let online = engine.last_online(&user) == LastOnline::Now;
            if online != (derived == GeneralStatus::Online) {
                return Err(format!("R6.5: {user} is {derived} but last online says {online}"));
            }
            for friend in engine.friends(&user) {
                if !engine.friends(&friend).iter().any(|f| *f == *user) {
                    return Err(format!("R5.4: {user} befriends {friend} but not the other way"));
                }
            }
        }
        for notice in notices {
            let (to, device) = notice.recipient();
            let session = engine.sessions(to).into_iter().find(|s| *s.device == *device);
            match (notice, session) {
                (FlatNotice::Kicked { .. }, None) => {}
                (FlatNotice::Kicked { .. }, Some(_)) => {
                    return Err(format!("R5.5: {notice} but the session is still there"))
                }
                (FlatNotice::Status { .. }, Some(s)) if s.connected => {}
                (FlatNotice::Status { .. }, _) => {
                    return Err(format!("R5.3: {notice} goes to a disconnected or missing session"))
                }
            }
        }
        Ok(())
    }

    fn compare_reads(&self) -> Result<(), String> {
        let engine = self.engine.as_ref().ok_or("the engine was lost by a failed reopen")?;
        let model = &self.model;
        for user in self.users() {
            compare(&format!("status of {user}"), &engine.status(&user), &model.status(&user))?;
            compare(
                &format!("last online of {user}"),
                &engine.last_online(&user),
                &model.last_online(&user),
            )?;
            compare(&format!("sessions of {user}"), &engine.sessions(&user), &model.sessions(&user))?;
            compare(
                &format!("subscriptions of {user}"),
                &engine.subscriptions(&user),
                &model.subscriptions(&user),
            )?;
            compare(&format!("friends of {user}"), &engine.friends(&user), &model.friends(&user))?;
        }
        compare_states("logical state", &engine.logical_state(), &model.logical_state())
    }

    /// Ends the run: the state rebuilt by a full replay of the log (when it was not
    /// compacted) and by reopening the store (snapshot plus tail when there is one) must both
    /// equal the live state and the model's (R8.1).
    pub fn finish(self) -> Result<(), String> {
        let engine = self.engine.ok_or("the engine was lost by a failed reopen")?;
        let live = engine.logical_state();
        compare_states("live state against the model", &live, &self.model.logical_state())?;
        if let Some(copy) = copy_log(engine.store())? {
            let replayed =
                Engine::open(self.config.clone(), copy).map_err(|e| format!("full replay failed: {e}"))?;
            compare_states("state after a full replay", &replayed.logical_state(), &live)?;
        }
        let reopened =
            Engine::open(self.config, engine.into_store()).map_err(|e| format!("reopen failed: {e}"))?;
        compare_states("state after reopening", &reopened.logical_state(), &live)
    }
}

/// The whole log of `store` copied into a fresh [`MemStore`] without its snapshots, or
/// `None` when compaction removed its beginning.
fn copy_log<S: EventStore>(store: &S) -> Result<Option<MemStore>, String> {
    let mut copy = MemStore::new();
    let batches = store.read_from(1).map_err(|e| format!("reading the log failed: {e}"))?;
    for batch in batches {
        let batch = batch.map_err(|e| format!("reading the log failed: {e}"))?;
        if batch.first_seq != copy.next_seq() {
            return Ok(None);
        }
        copy.append(batch.first_seq, batch.count, &batch.bytes).map_err(|e| format!("copy failed: {e}"))?;
    }
    Ok((copy.next_seq() == store.next_seq()).then_some(copy))
}

/// R7.1, R1.3: a step the store refused appended nothing and did not adopt its time.
fn check_unchanged<S: EventStore>(
    what: &str,
    engine: &Engine<S>,
    seq_before: u64,
    now_before: u64,
) -> Result<(), String> {
    let (seq_after, next_seq) = (engine.last_seq(), engine.store().next_seq());
    if seq_after != seq_before || next_seq != seq_before + 1 {
        return Err(format!(
            "R7.1: {what} refused by the store moved the log ({seq_before} -> {seq_after}, store \
             continues at {next_seq})"
        ));
    }
    if engine.now_ms() != now_before {
        return Err(format!(
            "R1.3: {what} refused by the store moved the engine time ({now_before} -> {})",
            engine.now_ms()
        ));
    }
    Ok(())
}

/// R7.1, R8.1: a step appends exactly the events its outcome counts, contiguously.
fn check_events(seq_before: u64, events: usize, seq_after: u64) -> Result<(), String> {
    if seq_after != seq_before + events as u64 {
        return Err(format!("the log went from {seq_before} to {seq_after} for {events} events"));
    }
    Ok(())
}

fn compare<T: PartialEq + Debug>(what: &str, engine: &T, model: &T) -> Result<(), String> {
    if engine != model {
        return Err(format!("{what} differ:\n  engine: {engine:?}\n  model:  {model:?}"));
    }
    Ok(())
}
