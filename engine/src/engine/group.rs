//! Group commit: many commands and ticks decided and applied one after the other, their
//! events appended as one batch (the runtime's turn, R8.3).
//!
//! While a group is open the state keeps an undo journal (`state/journal.rs`): if the one
//! append fails, or the group is dropped without committing, the engine is rolled back to
//! exactly where it was before the group (R7.1).

use super::{Append, Engine};
use crate::change::StatusChange;
use crate::codec;
use crate::command::{Command, Outcome};
use crate::error::Error;
use crate::event::Event;
use crate::shard::{no_remote_statuses, RemoteStatuses};
use crate::store::EventStore;

/// A group commit in progress (see [`Engine::group`]). Dropping it without
/// [`Group::commit`] rolls everything back, as does a failed commit: the engine is then
/// exactly as it was before the group (R7.1).
pub struct Group<'a, S: EventStore> {
    engine: &'a mut Engine<S>,
    first_seq: u64,
    events: Vec<Event>,
    /// The status changes of the group's steps, for the batch's outbox (only when the engine
    /// writes one).
    outbox: Vec<StatusChange>,
    /// An upper bound of the bytes `events` (and the outbox) encode to.
    bytes_bound: usize,
    open: bool,
}

impl<'a, S: EventStore> Group<'a, S> {
    pub(super) fn begin(engine: &'a mut Engine<S>) -> Self {
        engine.state.begin_journal();
        let first_seq = engine.state.last_seq + 1;
        Group { engine, first_seq, events: Vec::new(), outbox: Vec::new(), bytes_bound: 0, open: true }
    }

    /// Decides and applies a command as [`Engine::execute`] does, but keeps its events for
    /// the group's one append. Its outcome must not be handed out before
    /// [`Group::commit`] succeeds.
    pub fn execute(&mut self, command: Command, at_ms: u64) -> Result<Outcome, Error> {
        self.execute_with_remote(command, at_ms, no_remote_statuses())
    }

    /// [`Group::execute`] on one shard of a deployment, with the statuses of other shards'
    /// users the command names (see [`Engine::execute_with_remote`]).
    pub fn execute_with_remote(
        &mut self,
        command: Command,
        at_ms: u64,
        remote: &RemoteStatuses,
    ) -> Result<Outcome, Error> {
        let append = Append::ByGroup { bytes_left: self.bytes_left() };
        let (outcome, events) = self.engine.command_step(command, at_ms, append, remote)?;
        self.keep(events, &outcome);
        Ok(outcome)
    }

    /// A tick inside the group (see [`Engine::tick`]). Its events fit, with the group's
    /// events before it, in one batch the store accepts.
    pub fn tick(&mut self, at_ms: u64) -> Result<Outcome, Error> {
        let append = Append::ByGroup { bytes_left: self.bytes_left() };
        let (outcome, events) = self.engine.tick_step(at_ms, append)?;
        self.keep(events, &outcome);
        Ok(outcome)
    }

    /// A heartbeat by session handle inside the group (see [`Engine::heartbeat`]): it logs
    /// nothing, and a rolled-back group puts the heartbeat time back.
    pub fn heartbeat(&mut self, session: crate::SessionHandle, at_ms: u64) -> Result<(), Error> {
        self.engine.heartbeat_step(session, at_ms)
    }

    /// R8.4 at open: disconnects as many restored sessions as fit the group's batch; returns
    /// how many are left.
    pub(super) fn disconnect_restored(&mut self, at_ms: u64) -> Result<usize, Error> {
        let append = Append::ByGroup { bytes_left: self.bytes_left() };
        let (outcome, events, remaining) = self.engine.restart_step(at_ms, append)?;
        self.keep(events, &outcome);
        Ok(remaining)
    }

    fn keep(&mut self, events: Vec<Event>, outcome: &Outcome) {
        self.bytes_bound += events.iter().map(|e| codec::event_bytes_bound(&e.kind)).sum::<usize>();
        self.events.extend(events);
        if self.engine.outbox && !self.events.is_empty() {
            let changes = outcome.changes();
            self.bytes_bound += changes.iter().map(codec::change_bytes_bound).sum::<usize>();
            self.outbox.extend(changes);
        }
    }

    /// Events gathered so far.
    pub fn event_count(&self) -> usize {
        self.events.len()
    }

    /// How many more bytes of encoded events the group's batch can take before the store
    /// would refuse it ([`EventStore::batch_bytes_max`]), by an upper bound of what the
    /// events so far encode to. A host that groups many commands commits before this gets
    /// smaller than what its next command may log.
    pub fn bytes_left(&self) -> usize {
        self.engine
            .store
            .batch_bytes_max()
            .saturating_sub(codec::BATCH_OVERHEAD_BYTES_MAX)
            .saturating_sub(self.bytes_bound)
    }

    /// Read access to the engine in the middle of the group (for resolving recipients).
    pub fn engine(&self) -> &Engine<S> {
        self.engine
    }

    /// Appends every event of the group as one batch. On error the group is rolled back and
    /// every command in it must be reported as failed. Call [`Engine::sync`] afterwards for
    /// durability in the group-commit mode.
    pub fn commit(mut self) -> Result<usize, Error> {
        self.open = false;
        match self.engine.append_batch(self.first_seq, &self.events, &self.outbox) {
            Ok(()) => {
                self.engine.state.end_journal();
                Ok(self.events.len())
            }
            Err(e) => {
                self.engine.state.rollback();
                Err(e)
            }
        }
    }

    /// Undoes every command and tick of the group.
    pub fn rollback(mut self) {
        self.open = false;
        self.engine.state.rollback();
    }
}

impl<S: EventStore> Drop for Group<'_, S> {
    fn drop(&mut self) {
        if self.open {
            self.engine.state.rollback();
        }
    }
}
