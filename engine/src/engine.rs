//! The engine: decide, append, apply, fan out.

use crate::codec;
use crate::command::{Command, Delivery, Notice, Outcome, Recipient, Reply, StatusNotice};
use crate::config::Config;
use crate::decide::{decide, Effect};
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::event::{CloseReason, Event, EventKind};
use crate::fanout::{recipients, Marks};
use crate::ids::{DeviceId, UserId, UserKey};
use crate::limits::TIME_MS_MAX;
use crate::snapshot::LogicalState;
use crate::state::State;
use crate::status::{LastOnline, UserStatus};
use crate::store::EventStore;

/// The synchronous presence engine over an [`EventStore`].
///
/// Every call takes the time (`at_ms`) from the caller; the engine never reads a clock
/// (R1.3). A refused command returns an error and changes nothing (R7.1). See the crate
/// documentation for an example.
pub struct Engine<S> {
    /// Tells this engine's session handles from another's.
    instance: u32,
    config: Config,
    store: S,
    state: State,
    recovery: Recovery,
    marks: Marks,
    touched: Marks,
    encoded: Vec<u8>,
}

static NEXT_INSTANCE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// A session of one engine, for [`Engine::heartbeat`]: see [`Engine::session_handle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionHandle {
    session: Recipient,
    engine: u32,
}

/// What [`Engine::open`] found in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The snapshot recovery started from (0: none, a full replay).
    pub snapshot_seq: u64,
    /// Snapshots that could not be used, newest first, with the reason.
    pub skipped_snapshots: Vec<(u64, String)>,
    /// Events replayed after the snapshot.
    pub events_replayed: u64,
    /// Batches replayed after the snapshot.
    pub batches_replayed: u64,
}

/// One session as the host's direct read shows it (R6.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// The device.
    pub device: DeviceId,
    /// Connected or disconnected (R2.1).
    pub connected: bool,
    /// When it was created or last reconnected (R2.5).
    pub login_at_ms: u64,
    /// Its last heartbeat (or login, or the recovery time, R8.2).
    pub heartbeat_at_ms: u64,
}

/// Everything the host may read about one user (R6.4, R6.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserView {
    /// The user.
    pub user: UserId,
    /// Its status (R2.3, R3).
    pub status: UserStatus,
    /// When it was last `ONLINE` (R6.5).
    pub last_online: LastOnline,
    /// Its sessions, sorted by device.
    pub sessions: Vec<SessionView>,
    /// Its subscription list, oldest first (R4.2).
    pub subscriptions: Vec<UserId>,
    /// How many users' lists hold it.
    pub subscriber_count: usize,
    /// Its friends, sorted (R5.4).
    pub friends: Vec<UserId>,
}

/// Totals over the whole state, for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Users the engine knows of (interned), including subscription targets never seen.
    pub users: usize,
    /// Connected sessions.
    pub sessions_connected: usize,
    /// Disconnected sessions.
    pub sessions_disconnected: usize,
    /// Entries in all subscription lists.
    pub subscriptions: usize,
    /// Friendships (each pair once).
    pub friendships: usize,
}

impl<S: EventStore> Engine<S> {
    /// Opens an engine over `store`, recovering its state: the newest snapshot that decodes
    /// (older ones are tried next, then a full replay), then the batches after it, checked
    /// for contiguity (R8.1). Fails with [`Error::InvalidConfig`] for a bad configuration,
    /// and with [`Error::Storage`] naming the sequence number for a gap or a corrupt batch.
    pub fn open(config: Config, store: S) -> Result<Self, Error> {
        config.validate()?;
        let mut recovery = Recovery::default();
        let mut state = None;
        for seq in store.snapshots()?.into_iter().rev() {
            let restored = match store.load_snapshot(seq)? {
                None => Err("listed but missing".to_string()),
                Some(bytes) => {
                    codec::decode_snapshot_wire(&bytes).map_err(|e| e.to_string()).and_then(|wire| match wire
                        .last_seq
                        == seq
                    {
                        true => State::from_wire(&wire),
                        false => Err(format!("it says it covers {} events", wire.last_seq)),
                    })
                }
            };
            match restored {
                Ok(restored) => {
                    recovery.snapshot_seq = seq;
                    state = Some(restored);
                    break;
                }
                Err(reason) => recovery.skipped_snapshots.push((seq, reason)),
            }
        }
        let mut state = state.unwrap_or_else(|| {
            let mut fresh = State::default();
            fresh.deadlines.paused = true;
            fresh
        });
        replay(&store, &mut state, &mut recovery)?;
        state.deadlines.paused = false;
        state.deadlines.rebuild(&mut state.users);
        Ok(Self {
            instance: NEXT_INSTANCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            config,
            store,
            state,
            recovery,
            marks: Marks::default(),
            touched: Marks::default(),
            encoded: Vec::new(),
        })
    }

    /// Executes one command at `at_ms` (R1.3: an earlier time than the latest seen counts as
    /// the latest). On success its events are in the store and the outcome carries the reply
    /// and the notices to push. On error nothing changed (R7.1).
    pub fn execute(&mut self, command: Command, at_ms: u64) -> Result<Outcome, Error> {
        self.discard_leaked_group();
        let at_ms = self.time(at_ms);
        let decision = decide(&self.state, &self.config, &command, at_ms)?;
        let events = stamp(decision.events, at_ms);
        self.store_batch(self.state.last_seq + 1, &events)?;
        Ok(self.accept(decision.reply, decision.effect, events, at_ms).0)
    }

    /// The handle of `user`'s session on `device`, if it exists: for the hot path of a
    /// connection that sends heartbeats, which can then skip validating and hashing its ids
    /// ([`Engine::heartbeat`]). The handle names the device, not one connection of it, so it
    /// stays usable across reconnects; it belongs to this engine, and an engine opened later
    /// (after a restart) refuses it.
    pub fn session_handle(&self, user: &str, device: &str) -> Option<SessionHandle> {
        let (user, s) = self.state.session(user, device)?;
        Some(SessionHandle { session: Recipient { user, device: s.device }, engine: self.instance })
    }

    /// A heartbeat by session handle (R2.4): exactly `execute(Command::heartbeat(..), at_ms)`
    /// for the handle's user and device, O(1) and unlogged (R8.2), without touching the ids'
    /// strings. Fails with `NotLoggedIn` if the session is missing or disconnected, and with
    /// `InvalidParameter` for a handle of another engine.
    pub fn heartbeat(&mut self, handle: SessionHandle, at_ms: u64) -> Result<(), Error> {
        self.discard_leaked_group();
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
        self.accept(Reply::Done, Effect::Heartbeat(session.user, session.device), Vec::new(), at_ms);
        Ok(())
    }

    /// Advances time to `at_ms`: disconnects sessions whose heartbeat is `heartbeat_timeout_ms`
    /// old (R2.4) and clears subscription lists past retention (R4.5). Costs O(expired), not
    /// O(sessions). Only ticks expire anything.
    pub fn tick(&mut self, at_ms: u64) -> Result<Outcome, Error> {
        self.discard_leaked_group();
        let at_ms = self.time(at_ms);
        let timeout = self.config.heartbeat_timeout_ms;
        let retention = self.config.subscription_retention_ms;
        let (kinds, taken) = self.state.take_due(at_ms, timeout, retention);
        let events = stamp(kinds, at_ms);
        if let Err(e) = self.store_batch(self.state.last_seq + 1, &events) {
            self.state.restore_taken(taken);
            if self.state.recovered_at_ms.is_none() {
                // The queue was corrected with this tick's time as the recovery time, which
                // the failure leaves unfixed: queue every deadline at its own time again.
                self.state.deadlines.rebuild(&mut self.state.users);
            }
            return Err(e);
        }
        Ok(self.accept(Reply::Done, Effect::None, events, at_ms).0)
    }

    /// Starts a group commit: commands and ticks executed through the [`Group`] are decided
    /// and applied one after the other, each seeing the ones before, and their events reach
    /// the store as one batch when the group commits. The runtime uses this to append and
    /// sync once per turn (R8.3: hand out replies and notices only after the commit).
    pub fn group(&mut self) -> Group<'_, S> {
        self.discard_leaked_group();
        self.state.begin_journal();
        let first_seq = self.state.last_seq + 1;
        Group { engine: self, first_seq, events: Vec::new(), open: true }
    }

    /// Applies the events of an accepted command whose events are stored (or, in a group,
    /// will be), and the effects that are not logged; returns the outcome and the events.
    fn accept(
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
            Effect::Charge(user, api) => {
                self.state.rate_charge(user, api, at_ms, self.config.rate_limit_calls)
            }
        }
        let notices = self.apply_live(&events);
        (Outcome { reply, notices, events: events.len() }, events)
    }

    /// A group that was leaked (`mem::forget`) never reached the store: undo it, so that
    /// the state matches the log again before anything else runs.
    fn discard_leaked_group(&mut self) {
        self.state.rollback();
    }

    /// The time a call at `at_ms` runs at: never before the latest time seen (R1.3), never
    /// after [`TIME_MS_MAX`].
    fn time(&self, at_ms: u64) -> u64 {
        at_ms.min(TIME_MS_MAX).max(self.state.now_ms)
    }

    /// Encodes `events` as one batch at `first_seq` and appends it. Changes no state.
    fn store_batch(&mut self, first_seq: u64, events: &[Event]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        self.encoded.clear();
        codec::encode_batch(first_seq, events, &mut self.encoded)?;
        let count = u32::try_from(events.len())
            .map_err(|_| StoreError::new(StoreErrorKind::Contract, "too many events in one batch"))?;
        self.store.append(first_seq, count, &self.encoded)?;
        Ok(())
    }

    /// Applies a command's events and computes its notices on the state after all of them
    /// (R5.1, R5.3): one notice per user whose status pair changed, none for a change undone
    /// within the command, a `kicked` notice per connected session removed by R2.5 (R5.5).
    fn apply_live(&mut self, events: &[Event]) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut changed: Vec<(UserKey, UserStatus)> = Vec::new();
        self.touched.start(self.state.users.len());
        for event in events {
            let before =
                event.kind.touches_status().then(|| self.state.status_of(event.kind.user().as_str()));
            if let EventKind::SessionClosed { user, device, reason: CloseReason::Kicked } = &event.kind {
                if let Some((u, s)) = self.state.session(user.as_str(), device.as_str()) {
                    if s.connected() {
                        notices.push(Notice::Kicked(Recipient { user: u, device: s.device }));
                    }
                }
            }
            let applied = self.state.apply(&event.as_ref());
            debug_assert!(applied.is_ok(), "decide produced an event apply refuses: {applied:?}");
            if let Some(before) = before {
                if let Some(u) = self.state.user_key(event.kind.user().as_str()) {
                    if self.touched.mark(u) {
                        changed.push((u, before));
                    }
                }
            }
        }
        #[cfg(debug_assertions)]
        for event in events {
            if let Some(u) = self.state.user_key(event.kind.user()) {
                self.state.check_invariants(u);
            }
        }
        let friends = self.config.friend_notifications;
        for (u, before) in changed {
            let status = self.state.user(u).status();
            if status == before {
                continue;
            }
            let mut list = Vec::new();
            recipients(&self.state, u, friends, &mut self.marks, &mut list);
            notices.push(Notice::Status(StatusNotice {
                about: self.state.user_name(u).clone(),
                status,
                recipients: list,
            }));
        }
        notices
    }

    // ---- snapshots ----

    /// Saves a snapshot of the current state to the store and returns the sequence number
    /// it covers.
    pub fn snapshot(&mut self) -> Result<u64, Error> {
        // The log the snapshot covers must be durable before the snapshot is: a snapshot
        // ahead of the log could not be recovered from.
        self.store.sync()?;
        let bytes = codec::encode_snapshot_wire(&self.state.to_wire())?;
        self.store.save_snapshot(self.state.last_seq, &bytes)?;
        Ok(self.state.last_seq)
    }

    /// Removes from the store the batches the newest snapshot covers (and older snapshots).
    /// Does nothing without a snapshot.
    pub fn compact(&mut self) -> Result<(), Error> {
        if let Some(&newest) = self.store.snapshots()?.last() {
            self.store.compact(newest)?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable ([`EventStore::sync`]).
    pub fn sync(&mut self) -> Result<(), Error> {
        Ok(self.store.sync()?)
    }

    // ---- direct reads (R6.4, R6.5) ----

    /// The status of any user; `UNLOGINED` for one never seen (R1.2). No session, gate or
    /// rate limit (R6.4).
    pub fn status(&self, user: &str) -> UserStatus {
        self.state.status_of(user)
    }

    /// When `user` was last `ONLINE` (R6.5).
    pub fn last_online(&self, user: &str) -> LastOnline {
        self.state.user_by_id(user).map_or(LastOnline::Never, |u| u.last_online())
    }

    /// The sessions of `user`, sorted by device.
    pub fn sessions(&self, user: &str) -> Vec<SessionView> {
        let Some(u) = self.state.user_by_id(user) else { return Vec::new() };
        let mut list: Vec<SessionView> = u
            .sessions
            .iter()
            .map(|s| SessionView {
                device: self.state.device_name(s.device).clone(),
                connected: s.connected(),
                login_at_ms: s.login_at_ms,
                // A connected session's heartbeat is raised to the recovery time once that
                // is fixed (R8.2); a disconnected one kept its own when it disconnected.
                heartbeat_at_ms: match s.connected() {
                    true => s.heartbeat_at_ms.max(self.state.recovered_at_ms.unwrap_or(0)),
                    false => s.heartbeat_at_ms,
                },
            })
            .collect();
        list.sort_by(|a, b| a.device.cmp(&b.device));
        list
    }

    /// The subscription list of `user`, oldest first (R4.2).
    pub fn subscriptions(&self, user: &str) -> Vec<UserId> {
        let Some(u) = self.state.user_by_id(user) else { return Vec::new() };
        u.subscriptions().iter().map(|&t| self.state.user_name(t).clone()).collect()
    }

    /// How many users' lists hold `user`.
    pub fn subscriber_count(&self, user: &str) -> usize {
        self.state.user_by_id(user).map_or(0, |u| u.subscribers().len())
    }

    /// The friends of `user`, sorted (R5.4).
    pub fn friends(&self, user: &str) -> Vec<UserId> {
        let Some(u) = self.state.user_by_id(user) else { return Vec::new() };
        let mut list: Vec<UserId> = u.friends().iter().map(|&f| self.state.user_name(f).clone()).collect();
        list.sort();
        list
    }

    /// All of the above for one user at once.
    pub fn user(&self, user: &str) -> UserView {
        UserView {
            user: UserId::from(user),
            status: self.status(user),
            last_online: self.last_online(user),
            sessions: self.sessions(user),
            subscriptions: self.subscriptions(user),
            subscriber_count: self.subscriber_count(user),
            friends: self.friends(user),
        }
    }

    /// Totals over the whole state.
    pub fn stats(&self) -> Stats {
        let (connected, disconnected) = self.state.session_counts();
        let users = &self.state.users;
        Stats {
            users: users.len(),
            sessions_connected: connected,
            sessions_disconnected: disconnected,
            subscriptions: users.iter().map(|u| u.subscriptions().len()).sum(),
            friendships: users.iter().map(|u| u.friends().len()).sum::<usize>() / 2,
        }
    }

    /// An estimate of the heap the state holds, from its containers' capacities.
    pub fn heap_bytes(&self) -> crate::HeapBytes {
        self.state.heap_bytes()
    }

    /// The ids of every user the engine knows of, in no particular order.
    pub fn user_ids(&self) -> impl Iterator<Item = &UserId> + '_ {
        (0..self.state.users.len()).map(|i| self.state.user_name(UserKey(i as u32)))
    }

    /// The state as the log defines it, canonically ordered: equal for two engines that
    /// answer every read alike, and what a snapshot holds (R8.1).
    pub fn logical_state(&self) -> LogicalState {
        self.state.logical()
    }

    /// A resolver for recipient handles that borrows only the name tables.
    pub fn names(&self) -> crate::runtime::Names<'_> {
        crate::runtime::Names { state: &self.state }
    }

    /// The names behind a notice's recipient handle.
    pub fn resolve(&self, recipient: Recipient) -> (&UserId, &DeviceId) {
        (self.state.user_name(recipient.user), self.state.device_name(recipient.device))
    }

    /// Every single delivery of `outcome`'s notices, with names resolved.
    pub fn deliveries<'a>(&'a self, outcome: &'a Outcome) -> impl Iterator<Item = Delivery<'a>> + 'a {
        outcome.notices.iter().flat_map(move |notice| {
            let (status, kicked) = match notice {
                Notice::Status(n) => (Some(n), None),
                Notice::Kicked(r) => (None, Some(*r)),
            };
            let statuses = status.into_iter().flat_map(move |n| {
                n.recipients.iter().map(move |&r| {
                    let (to, device) = self.resolve(r);
                    Delivery::Status { to, device, about: &n.about, status: &n.status }
                })
            });
            let kicks = kicked.into_iter().map(move |r| {
                let (to, device) = self.resolve(r);
                Delivery::Kicked { to, device }
            });
            statuses.chain(kicks)
        })
    }

    // ---- the rest ----

    /// The latest time the engine has seen (R1.3).
    pub fn now_ms(&self) -> u64 {
        self.state.now_ms
    }

    /// The sequence number of the last event in the log (0: none).
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What recovery found when the engine was opened.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The store, for reading.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Closes the engine and hands the store back (unsynced appends stay as they are; call
    /// [`Engine::sync`] first for durability).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Queued heartbeat deadlines (live and stale), for memory reports and tests of the
    /// O(1) heartbeat claim.
    pub fn queued_heartbeat_deadlines(&self) -> usize {
        self.state.deadlines.heartbeat_len()
    }
}

/// A group commit in progress (see [`Engine::group`]). Dropping it without
/// [`Group::commit`] rolls everything back, as does a failed commit: the engine is then
/// exactly as it was before the group (R7.1).
pub struct Group<'a, S: EventStore> {
    engine: &'a mut Engine<S>,
    first_seq: u64,
    events: Vec<Event>,
    open: bool,
}

impl<S: EventStore> Group<'_, S> {
    /// Decides and applies a command as [`Engine::execute`] does, but keeps its events for
    /// the group's one append. Its outcome must not be handed out before
    /// [`Group::commit`] succeeds.
    pub fn execute(&mut self, command: Command, at_ms: u64) -> Result<Outcome, Error> {
        let engine = &mut *self.engine;
        let at_ms = engine.time(at_ms);
        let decision = decide(&engine.state, &engine.config, &command, at_ms)?;
        let events = stamp(decision.events, at_ms);
        let (outcome, events) = engine.accept(decision.reply, decision.effect, events, at_ms);
        self.events.extend(events);
        Ok(outcome)
    }

    /// A tick inside the group (see [`Engine::tick`]).
    pub fn tick(&mut self, at_ms: u64) -> Result<Outcome, Error> {
        let engine = &mut *self.engine;
        let at_ms = engine.time(at_ms);
        let timeout = engine.config.heartbeat_timeout_ms;
        let retention = engine.config.subscription_retention_ms;
        let (kinds, _) = engine.state.take_due(at_ms, timeout, retention);
        let events = stamp(kinds, at_ms);
        let (outcome, events) = engine.accept(Reply::Done, Effect::None, events, at_ms);
        self.events.extend(events);
        Ok(outcome)
    }

    /// Events gathered so far.
    pub fn event_count(&self) -> usize {
        self.events.len()
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
        let result = self.engine.store_batch(self.first_seq, &self.events);
        match result {
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

fn stamp(kinds: Vec<EventKind>, at_ms: u64) -> Vec<Event> {
    kinds.into_iter().map(|kind| Event { at_ms, kind }).collect()
}

/// Folds the store's batches after `state.last_seq` into `state`, checking contiguity.
fn replay<S: EventStore>(store: &S, state: &mut State, recovery: &mut Recovery) -> Result<(), Error> {
    let mut expected = state.last_seq + 1;
    for batch in store.read_from(expected)? {
        let batch = batch?;
        if batch.first_seq > expected {
            return Err(StoreError::corrupt(format!(
                "events {expected}..{} are missing from the log (compacted without a usable snapshot?)",
                batch.first_seq
            ))
            .into());
        }
        // Name where the batch is stored: a bad version byte or a short header says nothing
        // about its sequence number itself.
        let (header, events) = codec::decode_batch_ref(&batch.bytes).map_err(|e| {
            StoreError::with_source(e.kind(), format!("batch stored at sequence {}", batch.first_seq), e)
        })?;
        if header.first_seq != batch.first_seq || header.count != batch.count {
            return Err(StoreError::corrupt(format!(
                "batch stored at sequence {} says it starts at {} with {} events",
                batch.first_seq, header.first_seq, header.count
            ))
            .into());
        }
        for (seq, event) in (batch.first_seq..).zip(&events) {
            if seq < expected {
                continue;
            }
            state
                .apply(event)
                .map_err(|why| StoreError::corrupt(format!("event {seq} does not fit the state: {why}")))?;
            state.last_seq = seq;
            expected = seq + 1;
            recovery.events_replayed += 1;
        }
        recovery.batches_replayed += 1;
    }
    if store.next_seq() != expected {
        return Err(StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "the store ends at sequence {} but its log ends at {}",
                store.next_seq().saturating_sub(1),
                expected - 1
            ),
        )
        .into());
    }
    Ok(())
}
