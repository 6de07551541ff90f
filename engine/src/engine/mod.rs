//! The engine, and the path of one command through it.
//!
//! Read this file top to bottom to follow a command: [`Engine::execute`] takes the engine's
//! time (R1.3), asks [`decide`](crate::decide) whether the command is accepted and which
//! events it logs (nothing changes yet), appends those events to the [`EventStore`] as one
//! batch through the [`codec`](crate::codec), and only then applies them to the state
//! ([`State::apply`](crate::state), the same fold replay uses, R8.1) and works out who must
//! hear about it ([`fanout`](crate::fanout), R5). A tick takes the same path with the
//! deadlines that fell due instead of a decision.
//!
//! The other jobs live next door: `open.rs` recovers an engine from its store and saves
//! snapshots, `group.rs` decides many commands into one append (group commit), `reads.rs`
//! answers the host's direct reads (R6.4).

mod group;
mod open;
mod reads;

pub use group::Group;
pub use open::{CapturedSnapshot, EncodedSnapshot, EngineOptions, Recovery, RestoredSessions};
pub use reads::{EngineView, SessionView, Stats, UserView};

use crate::change::{Cause, CauseKind, StatusChange};
use crate::codec;
use crate::command::{Command, Outcome, Reply};
use crate::config::Config;
use crate::decide::{decide, disconnect_events, Effect};
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::event::{CloseReason, DisconnectReason, Event, EventKind};
use crate::fanout::{recipients, Marks};
use crate::ids::{UserId, UserKey};
use crate::limits::TIME_MS_MAX;
use crate::notice::{Notice, Recipient, StatusNotice};
use crate::shard::{no_remote_statuses, RemoteStatuses};
use crate::state::{State, StatusPair};
use crate::store::EventStore;

/// The synchronous presence engine over an [`EventStore`].
///
/// Every call takes the time (`at_ms`) from the caller; the engine never reads a clock
/// (R1.3). A refused command returns an error and changes nothing (R7.1). See the crate
/// documentation for an example.
pub struct Engine<S> {
    /// Tells this engine's session handles from another's.
    instance: EngineId,
    config: Config,
    store: S,
    state: State,
    recovery: Recovery,
    /// Fan-out scratch: users already listed as recipients of the notice being built (R5.2).
    recipient_marks: Marks,
    /// Users an event of the current step touched (R5.1), with where they are in its list.
    touched_marks: Marks<u32>,
    /// The bytes of the last appended batch, kept so that appends do not allocate.
    encoded: Vec<u8>,
    /// Whether batches carry an outbox ([`EngineOptions::outbox`]).
    outbox: bool,
    /// Bytes of batches appended since the engine was opened ([`Engine::bytes_appended`]).
    bytes_appended: u64,
}

static NEXT_INSTANCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Which engine of the process this is: each engine opened gets its own, so that what an
/// engine hands out ([`SessionHandle`], [`CapturedSnapshot`]) says where it came from, and a
/// host that runs several engines (the shards of a deployment) can route it back. Not stored:
/// an engine opened again, after a restart, has a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EngineId(u32);

impl EngineId {
    /// A new id, unlike every other of this process.
    pub(crate) fn next() -> Self {
        EngineId(NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// A session of one engine, for [`Engine::heartbeat`]: see [`Engine::session_handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionHandle {
    session: Recipient,
    engine: EngineId,
}

impl SessionHandle {
    /// The engine the handle belongs to (and the only one that takes it).
    pub fn engine(&self) -> EngineId {
        self.engine
    }
}

/// Who appends a step's events: the step itself, before it changes anything, or the group
/// it belongs to, once for every step of the group ([`Group::commit`]), which has room for
/// `bytes_left` more bytes of events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Append {
    Now,
    ByGroup { bytes_left: usize },
}

impl<S: EventStore> Engine<S> {
    /// Executes one command at `at_ms` (R1.3: an earlier time than the latest seen counts as
    /// the latest). On success its events are in the store and the outcome carries the reply
    /// and the notices to push. On error nothing changed (R7.1).
    pub fn execute(&mut self, command: Command, at_ms: u64) -> Result<Outcome, Error> {
        self.discard_leaked_group();
        if self.outbox {
            // The outbox holds what applying the events found, so they are applied before
            // the append: a group of one, rolled back if the append fails.
            let mut group = self.group();
            let outcome = group.execute(command, at_ms)?;
            group.commit()?;
            return Ok(outcome);
        }
        self.command_step(command, at_ms, Append::Now, no_remote_statuses()).map(|(outcome, _)| outcome)
    }

    /// [`Engine::execute`] on one shard of a sharded deployment (R9.3): `remote` holds the
    /// statuses of other shards' users that the command names, as the host read them for it,
    /// so that a `get_status` or a `subscribe` answers them. Outside a deployment (or for this
    /// shard's own users) `remote` is not read.
    pub fn execute_with_remote(
        &mut self,
        command: Command,
        at_ms: u64,
        remote: &RemoteStatuses,
    ) -> Result<Outcome, Error> {
        let mut group = self.group();
        let outcome = group.execute_with_remote(command, at_ms, remote)?;
        group.commit()?;
        Ok(outcome)
    }

    /// Whether `user` lives on this engine's shard (always, outside a sharded deployment).
    pub fn is_local(&self, user: &str) -> bool {
        !self.state.is_remote(user)
    }

    /// Takes in a status change of a user of another shard, from that shard (R9.2): the
    /// watch table keeps the newest version (a change not newer than the one known changes
    /// nothing, so one delivered twice or late is harmless), and each connected device of a
    /// local user watching it (a subscriber, or a friend when friend notifications are on) is
    /// notified when its status pair differs from the one known. A change about a user no
    /// local user watches, or about a local user, changes nothing: `watched` says which, so
    /// that the host can stop asking for that user's changes.
    pub fn observe_remote(&mut self, change: &StatusChange) -> RemoteObserved {
        self.discard_leaked_group();
        let unwatched = RemoteObserved { notices: Vec::new(), watched: false };
        if !self.state.is_remote(&change.user) {
            return unwatched;
        }
        let Some(t) = self.state.user_key(change.user.as_str()) else { return unwatched };
        let friends = self.config.friend_notifications;
        let target = self.state.user(t);
        let watched = !target.subscribers().is_empty() || (friends && !target.friends().is_empty());
        if !watched {
            self.state.watch.remove(&t);
            return unwatched;
        }
        let known = self.state.watch.get(&t).cloned();
        let notify = match &known {
            None => false,
            Some((_, version)) if change.version <= *version => {
                return RemoteObserved { notices: Vec::new(), watched }
            }
            Some((status, _)) => *status != change.status,
        };
        self.state.watch.insert(t, (change.status.clone(), change.version));
        let mut notices = Vec::new();
        if notify {
            let mut list = Vec::new();
            recipients(&self.state, t, friends, &mut self.recipient_marks, &mut list);
            notices.push(Notice::Status(StatusNotice {
                about: change.user.clone(),
                status: change.status.clone(),
                version: change.version,
                cause: change.cause.clone(),
                recipients: list,
            }));
        }
        RemoteObserved { notices, watched }
    }

    /// Whether this shard has a status of `user`, a user of another shard, in its watch table
    /// (R9.5): then it answers for that user without asking the owning shard (R9.3).
    pub fn knows_remote(&self, user: &str) -> bool {
        self.state.user_key(user).is_some_and(|t| self.state.watch.contains_key(&t))
    }

    /// Takes in the status of `user`, a user of another shard, as its shard answered a read
    /// (R9.3), when a local user watches it and the watch table has none yet. A status it
    /// already has is left alone: a newer change on its way from the owning shard must still
    /// find it older, and notify. Never notifies.
    pub fn learn_remote(&mut self, user: &str, status: &crate::UserStatus, version: u64) {
        if !self.state.is_remote(user) {
            return;
        }
        let Some(t) = self.state.user_key(user) else { return };
        let friends = self.config.friend_notifications;
        let target = self.state.user(t);
        let watched = !target.subscribers().is_empty() || (friends && !target.friends().is_empty());
        if watched {
            self.state.watch.entry(t).or_insert_with(|| (status.clone(), version));
        }
    }

    /// The watch table (R9.5): each user of another shard this shard has a status of, with
    /// that status and its version.
    pub fn watch_table(&self) -> Vec<(UserId, crate::UserStatus, u64)> {
        self.view().watch_table()
    }

    /// Fixes the recovery time (R8.2) at `at_ms` if no command or tick has fixed it since the
    /// engine was opened: for a host that runs several engines as one deployment, whose
    /// recovery time is that of the first command or tick any of them takes (R9.4).
    pub fn resume_at(&mut self, at_ms: u64) {
        self.discard_leaked_group();
        if self.state.recovered_at_ms.is_none() {
            self.state.recovered_at_ms = Some(at_ms.min(TIME_MS_MAX));
        }
    }

    /// This engine's id: the one its [`SessionHandle`]s carry ([`SessionHandle::engine`]).
    pub fn id(&self) -> EngineId {
        self.instance
    }

    /// The users of other shards that a local user watches (R9.5): whose changes this shard
    /// must hear, and whose statuses an opened shard asks for to rebuild its watch table.
    pub fn remote_watched(&self) -> Vec<UserId> {
        self.view().remote_watched()
    }

    /// Advances time to `at_ms`: disconnects sessions whose heartbeat is `heartbeat_timeout_ms`
    /// old (R2.4) and clears subscription lists past retention (R4.5). Costs O(expired), not
    /// O(sessions). Only ticks expire anything. One tick logs at most one batch that fits the
    /// store ([`EventStore::batch_bytes_max`]) and the limits of
    /// [`TICK_EVENTS_MAX`](crate::TICK_EVENTS_MAX); what else is due waits for the next tick.
    pub fn tick(&mut self, at_ms: u64) -> Result<Outcome, Error> {
        self.discard_leaked_group();
        if self.outbox {
            let mut group = self.group();
            let outcome = group.tick(at_ms)?;
            group.commit()?;
            return Ok(outcome);
        }
        self.tick_step(at_ms, Append::Now).map(|(outcome, _)| outcome)
    }

    /// The handle of `user`'s session on `device`, if it exists: for the hot path of a
    /// connection that sends heartbeats, which can then skip validating and hashing its ids
    /// ([`Engine::heartbeat`]). The handle names the device, not one connection of it, so it
    /// stays usable across reconnects; it belongs to this engine, and an engine opened later
    /// (after a restart) refuses it.
    pub fn session_handle(&self, user: &str, device: &str) -> Option<SessionHandle> {
        self.view().session_handle(user, device)
    }

    /// A heartbeat by session handle (R2.4): exactly `execute(Command::heartbeat(..), at_ms)`
    /// for the handle's user and device, O(1) and unlogged (R8.2), without touching the ids'
    /// strings. Fails with `NotLoggedIn` if the session is missing or disconnected, and with
    /// `InvalidParameter` for a handle of another engine.
    pub fn heartbeat(&mut self, handle: SessionHandle, at_ms: u64) -> Result<(), Error> {
        self.discard_leaked_group();
        self.heartbeat_step(handle, at_ms)
    }

    /// A heartbeat by session handle, alone or in a group: it logs nothing (R8.2).
    fn heartbeat_step(&mut self, handle: SessionHandle, at_ms: u64) -> Result<(), Error> {
        if handle.engine != self.instance {
            return Err(Error::invalid(
                "this session handle belongs to another engine (one opened before a restart?): \
                 get a new one with session_handle",
            ));
        }
        let session = handle.session;
        let at_ms = self.time(at_ms);
        let connected = self
            .state
            .users
            .get(session.user.index())
            .and_then(|u| u.session(session.device))
            .is_some_and(|s| s.connected());
        if !connected {
            return Err(Error::NotLoggedIn("the handle's session is missing or disconnected".into()));
        }
        self.apply_and_notify(
            Reply::Done,
            Effect::Heartbeat(session.user, session.device),
            Vec::new(),
            at_ms,
        );
        Ok(())
    }

    /// Starts a group commit: commands and ticks executed through the [`Group`] are decided
    /// and applied one after the other, each seeing the ones before, and their events reach
    /// the store as one batch when the group commits. The runtime uses this to append and
    /// sync once per turn (R8.3: hand out replies and notices only after the commit).
    pub fn group(&mut self) -> Group<'_, S> {
        self.discard_leaked_group();
        Group::begin(self)
    }

    /// One command: decide, append (now or by the group), apply and notify.
    fn command_step(
        &mut self,
        command: Command,
        at_ms: u64,
        append: Append,
        remote: &RemoteStatuses,
    ) -> Result<(Outcome, Vec<Event>), Error> {
        let at_ms = self.time(at_ms);
        // Validation and the events the command would log, reading the state only (R7.2).
        let budget = self.bytes_budget(append);
        let decision = decide(&self.state, &self.config, &command, at_ms, budget, remote)?;
        let events = at_time(decision.events, at_ms);
        // A refused append leaves everything as it was (R7.1).
        if append == Append::Now {
            self.append_batch(self.state.last_seq + 1, &events, &[])?;
        }
        Ok(self.apply_and_notify(decision.reply, decision.effect, events, at_ms))
    }

    /// One tick: take what is due (as much as fits one batch), append (now or by the group),
    /// apply and notify.
    fn tick_step(&mut self, at_ms: u64, append: Append) -> Result<(Outcome, Vec<Event>), Error> {
        let at_ms = self.time(at_ms);
        let timeout_ms = self.config.heartbeat_timeout_ms;
        let retention_ms = self.config.subscription_retention_ms;
        let due = self.state.take_due(at_ms, timeout_ms, retention_ms, self.bytes_budget(append));
        let events = at_time(due.events, at_ms);
        match append {
            Append::Now => {
                if let Err(e) = self.append_batch(self.state.last_seq + 1, &events, &[]) {
                    self.state.put_back_due(due.taken);
                    return Err(e);
                }
            }
            // A group that fails to commit rolls back, and its rollback rebuilds both deadline
            // queues from the restored state, which puts back what this tick took.
            Append::ByGroup { .. } => {}
        }
        Ok(self.apply_and_notify(Reply::Done, Effect::None, events, at_ms))
    }

    /// The restart of R8.4 inside a group: disconnects as many restored sessions as fit the
    /// group's batch, and says how many are left.
    fn restart_step(&mut self, at_ms: u64, append: Append) -> Result<(Outcome, Vec<Event>, usize), Error> {
        let at_ms = self.time(at_ms);
        let reason = DisconnectReason::Restart;
        let (kinds, remaining) = disconnect_events(&self.state, None, reason, self.bytes_budget(append));
        let events = at_time(kinds, at_ms);
        if append == Append::Now {
            self.append_batch(self.state.last_seq + 1, &events, &[])?;
        }
        let (outcome, events) = self.apply_and_notify(Reply::Done, Effect::None, events, at_ms);
        Ok((outcome, events, remaining))
    }

    /// Applies the events of an accepted step (stored already, or to be stored by its group)
    /// and the changes that are not logged; returns the outcome and the events.
    fn apply_and_notify(
        &mut self,
        reply: Reply,
        effect: Effect,
        events: Vec<Event>,
        at_ms: u64,
    ) -> (Outcome, Vec<Event>) {
        self.state.now_ms = at_ms;
        self.state.last_seq += events.len() as u64;
        // Only a call that succeeds fixes the recovery time (R8.2): a refused one changes
        // nothing (R7.1).
        self.state.fix_recovery_time(at_ms);
        match effect {
            Effect::None => {}
            Effect::Heartbeat(user, device) => self.state.touch_heartbeat(user, device, at_ms),
            Effect::CountRateLimitedCall(user, api) => {
                self.state.count_rate_limited_call(user, api, at_ms, self.config.rate_limit_calls)
            }
        }
        let (notices, unnotified) = self.apply_events(&events);
        (Outcome { reply, notices, events: events.len(), unnotified }, events)
    }

    /// Applies a step's events and computes, on the state after all of them (R5.1, R5.3),
    /// for every user an event touched whose version moved (R5.6), in the order first
    /// touched: a notice if its status pair changed, else its status change (none is notified
    /// for a change undone within the step); and a `kicked` notice per connected session
    /// removed by R2.5 (R5.5). [`Outcome::changes`] puts the status notices and the other
    /// changes back together.
    fn apply_events(&mut self, events: &[Event]) -> (Vec<Notice>, Vec<(u32, StatusChange)>) {
        if events.is_empty() {
            return (Vec::new(), Vec::new());
        }
        // About one of each per event (a tick has thousands: sized once, not grown).
        let mut notices = Vec::with_capacity(events.len());
        // Each user touched, in the order first touched.
        let mut touched: Vec<Touched> = Vec::with_capacity(events.len());
        self.touched_marks.start(self.state.users.len());
        for (index, event) in events.iter().enumerate() {
            // The user's key, looked up once: a user an event creates has none before it.
            let known = self.state.user_key(event.kind.user().as_str());
            let before = event
                .kind
                .touches_status()
                .then(|| known.map_or(StatusPair::UNLOGINED, |u| self.state.user(u).pair()));
            if let EventKind::SessionClosed { user, device, reason: CloseReason::Kicked } = &event.kind {
                if let Some((u, s)) = self.state.session(user.as_str(), device.as_str()) {
                    if s.connected() {
                        notices.push(Notice::Kicked(Recipient { user: u, device: s.device }));
                    }
                }
            }
            let applied = self.state.apply(&event.as_ref(), known);
            debug_assert!(applied.is_ok(), "decide produced an event apply refuses: {applied:?}");
            // `before` is there for the events that move the version, which are those with a
            // cause (`cause_of`).
            let Some(before) = before else { continue };
            let Some(u) = known.or_else(|| self.state.user_key(event.kind.user().as_str())) else { continue };
            // R5.7: the cause is the last event that changed the pair, else the last that
            // touched the user (kept as positions in `events`: a cause is made once per user).
            let changed_pair = !self.state.user(u).has_pair(&before);
            let entry = match self.touched_marks.mark_with(u, touched.len() as u32) {
                None => {
                    touched.push(Touched { user: u, before, cause: index, changed_by: None });
                    touched.last_mut()
                }
                Some(at) => touched.get_mut(at as usize),
            };
            if let Some(entry) = entry {
                if changed_pair {
                    entry.changed_by = Some(index);
                }
                entry.cause = index;
            }
        }
        #[cfg(debug_assertions)]
        for event in events {
            if let Some(u) = self.state.user_key(event.kind.user().as_str()) {
                self.state.check_invariants(u);
            }
        }
        let friends = self.config.friend_notifications;
        // A notified change is its notice; only the others are kept as changes (`Outcome`).
        let mut unnotified = Vec::new();
        let mut notified = 0;
        for Touched { user: u, before, cause, changed_by } in touched {
            // Always there: only events that move the version were kept.
            let Some(cause) = cause_of(&events[changed_by.unwrap_or(cause)].kind) else { continue };
            let user = self.state.user(u);
            let (about, status, version) = (self.state.user_name(u).clone(), user.status(), user.version);
            if user.has_pair(&before) {
                let change = StatusChange { user: about, status, version, cause, changed: false };
                unnotified.push((notified, change));
                continue;
            }
            let mut list = Vec::new();
            recipients(&self.state, u, friends, &mut self.recipient_marks, &mut list);
            notices.push(Notice::Status(StatusNotice { about, status, version, cause, recipients: list }));
            notified += 1;
        }
        (notices, unnotified)
    }

    /// A group that was leaked (`mem::forget`) never reached the store: undo it, so that
    /// the state matches the log again before anything else runs.
    #[inline]
    fn discard_leaked_group(&mut self) {
        if self.state.journal_open() {
            self.state.rollback();
        }
    }

    /// The time a call at `at_ms` runs at: never before the latest time seen (R1.3), never
    /// after [`TIME_MS_MAX`].
    fn time(&self, at_ms: u64) -> u64 {
        at_ms.min(TIME_MS_MAX).max(self.state.now_ms)
    }

    /// The most bytes of events a step may log: what one batch of the store takes, or what
    /// is left of the group's batch.
    fn bytes_budget(&self, append: Append) -> usize {
        let budget = match append {
            Append::Now => self.store.batch_bytes_max().saturating_sub(codec::BATCH_OVERHEAD_BYTES_MAX),
            Append::ByGroup { bytes_left } => bytes_left,
        };
        // With an outbox, each session event the step logs also adds a status change of about
        // its size (a custom status is cleared on the way offline).
        if self.outbox {
            budget / 2
        } else {
            budget
        }
    }

    /// Encodes `events` (with `outbox`) as one batch at `first_seq` and appends it. Changes
    /// no state.
    fn append_batch(
        &mut self,
        first_seq: u64,
        events: &[Event],
        outbox: &[StatusChange],
    ) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        self.encoded.clear();
        codec::encode_batch_with_outbox(first_seq, events, outbox, &mut self.encoded)?;
        let count = u32::try_from(events.len())
            .map_err(|_| StoreError::new(StoreErrorKind::Contract, "too many events in one batch"))?;
        self.store.append(first_seq, count, &self.encoded)?;
        self.bytes_appended += self.encoded.len() as u64;
        Ok(())
    }
}

/// A user an event of the current step touched (R5.6, R5.7).
struct Touched {
    user: UserKey,
    /// Its status pair before the step.
    before: StatusPair,
    /// The last event that touched it (its position in the step's events).
    cause: usize,
    /// The last event that changed its status pair, if one did.
    changed_by: Option<usize>,
}

/// Why an event moved its user's status version (R5.7), for the events that do.
fn cause_of(kind: &EventKind) -> Option<Cause> {
    let (kind, device) = match kind {
        EventKind::SessionOpened { device, .. } => (CauseKind::Login, Some(device)),
        EventKind::SessionDisconnected { device, reason, .. } => {
            let kind = match reason {
                DisconnectReason::Disconnect => CauseKind::Disconnect,
                DisconnectReason::HeartbeatTimeout => CauseKind::HeartbeatTimeout,
                DisconnectReason::Restart => CauseKind::Restart,
                DisconnectReason::OwnerGone => CauseKind::OwnerGone,
            };
            (kind, Some(device))
        }
        EventKind::SessionClosed { device, reason, .. } => {
            let kind = match reason {
                CloseReason::Logout => CauseKind::Logout,
                CloseReason::Kicked => CauseKind::Kicked,
            };
            (kind, Some(device))
        }
        EventKind::CustomStatusSet { device, .. } => (CauseKind::CustomStatus, device.as_ref()),
        _ => return None,
    };
    Some(Cause { kind, device: device.cloned() })
}

/// What [`Engine::observe_remote`] made of a status change from another shard.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteObserved {
    /// Notices for local devices watching the user.
    pub notices: Vec<Notice>,
    /// Whether any local user watches the user.
    pub watched: bool,
}

/// The events of a step, each stamped with the step's time.
fn at_time(kinds: Vec<EventKind>, at_ms: u64) -> Vec<Event> {
    if kinds.is_empty() {
        // Most commands (heartbeats, queries) log nothing.
        return Vec::new();
    }
    kinds.into_iter().map(|kind| Event { at_ms, kind }).collect()
}
