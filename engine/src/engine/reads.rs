//! The host's direct reads (R6.4, R6.5): any user's status, sessions, lists and friends,
//! with no session, gate or rate limit, and totals for operators.

use super::Engine;
use super::{EngineId, SessionHandle};
use crate::command::{Command, Outcome};
use crate::config::Config;
use crate::ids::{DeviceId, UserId, UserKey};
use crate::notice::{self, Delivery, Names, Recipient};
use crate::snapshot::LogicalState;
use crate::state::HeapBytes;
use crate::state::State;
use crate::status::{LastOnline, UserStatus};
use crate::store::EventStore;

use super::Recovery;

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
    /// Its status version (R5.6).
    pub version: u64,
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

/// A read-only view of an engine's state: every direct read (R6.4, R6.5), borrowed. What
/// [`Engine::view`] returns, and what a read run on the runtime's thread between turns gets
/// (presence-runtime's `Handle::read`), so it never sees a turn half applied.
#[derive(Clone, Copy)]
pub struct EngineView<'a> {
    state: &'a State,
    config: &'a Config,
    instance: EngineId,
}

impl<'a> EngineView<'a> {
    /// The status of any user; `UNLOGINED` for one never seen (R1.2). No session, gate or
    /// rate limit (R6.4).
    pub fn status(&self, user: &str) -> UserStatus {
        self.state.versioned_status_of(user).0
    }

    /// The users of other shards that a local user watches (R9.5): whose changes this shard
    /// must hear, and whose statuses an opened shard asks for to rebuild its watch table.
    pub fn remote_watched(&self) -> Vec<UserId> {
        let friends = self.config.friend_notifications;
        let state = self.state;
        (0..state.users.len() as u32)
            .map(UserKey)
            .filter(|&u| {
                let user = state.user(u);
                (!user.subscribers().is_empty() || (friends && !user.friends().is_empty()))
                    && state.is_remote(state.user_name(u))
            })
            .map(|u| state.user_name(u).clone())
            .collect()
    }

    /// The connection owners (R8.5) of the connected sessions, each once, sorted: the nodes
    /// whose loss would disconnect someone here.
    pub fn owners(&self) -> Vec<crate::OwnerId> {
        self.state.owners.names_in_use()
    }

    /// The watch table (R9.5): each user of another shard this shard has a status of, with
    /// that status and its version, by user.
    pub fn watch_table(&self) -> Vec<(UserId, UserStatus, u64)> {
        let state = self.state;
        let mut table: Vec<_> = state
            .watch
            .iter()
            .map(|(&t, (status, version))| (state.user_name(t).clone(), status.clone(), *version))
            .collect();
        table.sort_by(|a, b| a.0.cmp(&b.0));
        table
    }

    /// The status of any user with its version (R5.6); version 0 for one never seen.
    pub fn versioned_status(&self, user: &str) -> (UserStatus, u64) {
        self.state.versioned_status_of(user)
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
                heartbeat_at_ms: match (s.connected(), self.state.recovered_at_ms) {
                    (true, Some(recovered_at_ms)) => s.heartbeat_at_ms.max(recovered_at_ms),
                    _ => s.heartbeat_at_ms,
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
        let (status, version) = self.versioned_status(user);
        UserView {
            user: UserId::from(user),
            status,
            version,
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
    pub fn heap_bytes(&self) -> HeapBytes {
        self.state.heap_bytes()
    }

    /// The ids of every user the engine knows of, in no particular order.
    pub fn user_ids(&self) -> impl Iterator<Item = &'a UserId> + 'a {
        let state = self.state;
        (0..state.users.len()).map(move |i| state.user_name(UserKey(i as u32)))
    }

    /// The state as the log defines it, canonically ordered: equal for two engines that
    /// answer every read alike, and what a snapshot holds (R8.1).
    pub fn logical_state(&self) -> LogicalState {
        self.state.logical()
    }

    /// A resolver for recipient handles that borrows only the name tables.
    pub fn names(&self) -> Names<'a> {
        Names::new(&self.state.user_ids, &self.state.device_ids, &self.state.owners)
    }

    /// The handle of `user`'s session on `device`, if it exists (see
    /// [`Engine::session_handle`]).
    pub fn session_handle(&self, user: &str, device: &str) -> Option<SessionHandle> {
        let (user, s) = self.state.session(user, device)?;
        Some(SessionHandle { session: Recipient { user, device: s.device }, engine: self.instance })
    }

    /// The latest time the engine has seen (R1.3).
    pub fn now_ms(&self) -> u64 {
        self.state.now_ms
    }

    /// The sequence number of the last event in the log (0: none).
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq
    }

    /// The configuration.
    pub fn config(&self) -> &'a Config {
        self.config
    }
}

impl<S: EventStore> Engine<S> {
    /// Reads, changing nothing, what `commands` will need first (the ids of the users each
    /// names, where their names sit in the table, then the names and the users' slots), so
    /// that a batch's cache misses overlap instead of queueing one behind the other: over a
    /// million users each command's lookups are misses that depend on one another. Call it on a batch (tens to hundreds
    /// of commands) just before executing it; it is only a hint, and whether it is called
    /// changes no result.
    pub fn prefetch<'a, I>(&self, commands: I)
    where
        I: IntoIterator<Item = &'a Command>,
        I::IntoIter: Clone,
    {
        let commands = commands.into_iter();
        let users = || commands.clone().flat_map(Command::users);
        // Three passes, each of reads independent of one another: the ids' bytes, the table's
        // lines, then the names found there and the users' slots.
        let mut seen = 0u64;
        for user in users() {
            seen = seen.wrapping_add(u64::from(user.as_bytes().first().copied().unwrap_or(0)));
        }
        seen = seen.wrapping_add(self.state.prefetch_users(users().map(|u| u.as_bytes())));
        std::hint::black_box(seen);
    }

    /// A read-only view of the state, for reads that need several answers at once or a
    /// borrow that outlives one call.
    pub fn view(&self) -> EngineView<'_> {
        EngineView { state: &self.state, config: &self.config, instance: self.instance }
    }

    /// The status of any user; `UNLOGINED` for one never seen (R1.2). No session, gate or
    /// rate limit (R6.4).
    pub fn status(&self, user: &str) -> UserStatus {
        self.view().status(user)
    }

    /// The status of any user with its version (R5.6).
    pub fn versioned_status(&self, user: &str) -> (UserStatus, u64) {
        self.view().versioned_status(user)
    }

    /// When `user` was last `ONLINE` (R6.5).
    pub fn last_online(&self, user: &str) -> LastOnline {
        self.view().last_online(user)
    }

    /// The sessions of `user`, sorted by device.
    pub fn sessions(&self, user: &str) -> Vec<SessionView> {
        self.view().sessions(user)
    }

    /// The subscription list of `user`, oldest first (R4.2).
    pub fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.view().subscriptions(user)
    }

    /// How many users' lists hold `user`.
    pub fn subscriber_count(&self, user: &str) -> usize {
        self.view().subscriber_count(user)
    }

    /// The friends of `user`, sorted (R5.4).
    pub fn friends(&self, user: &str) -> Vec<UserId> {
        self.view().friends(user)
    }

    /// All of the above for one user at once.
    pub fn user(&self, user: &str) -> UserView {
        self.view().user(user)
    }

    /// Totals over the whole state.
    pub fn stats(&self) -> Stats {
        self.view().stats()
    }

    /// An estimate of the heap the state holds, from its containers' capacities.
    pub fn heap_bytes(&self) -> HeapBytes {
        self.view().heap_bytes()
    }

    /// The ids of every user the engine knows of, in no particular order.
    pub fn user_ids(&self) -> impl Iterator<Item = &UserId> + '_ {
        self.view().user_ids()
    }

    /// The state as the log defines it, canonically ordered (R8.1).
    pub fn logical_state(&self) -> LogicalState {
        self.view().logical_state()
    }

    /// A resolver for recipient handles that borrows only the name tables.
    pub fn names(&self) -> Names<'_> {
        self.view().names()
    }

    /// The names behind a notice's recipient handle.
    ///
    /// # Panics
    /// If `recipient` did not come from a notice of this engine.
    pub fn resolve(&self, recipient: Recipient) -> (&UserId, &DeviceId) {
        self.names().resolve(recipient)
    }

    /// Every single delivery of `outcome`'s notices, with names resolved.
    pub fn deliveries<'a>(&'a self, outcome: &'a Outcome) -> impl Iterator<Item = Delivery<'a>> + 'a {
        notice::deliveries(&outcome.notices, self.names())
    }

    /// The latest time the engine has seen (R1.3).
    pub fn now_ms(&self) -> u64 {
        self.state.now_ms
    }

    /// The sequence number of the last event in the log (0: none).
    pub fn last_seq(&self) -> u64 {
        self.state.last_seq
    }

    /// Bytes of batches this engine has appended to its store since it was opened (their
    /// encoded size, docs/FORMAT.md): what a host's snapshot policy or statistics count.
    pub fn bytes_appended(&self) -> u64 {
        self.bytes_appended
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Which shard of a deployment this engine is (R9); `None` for an engine alone.
    pub fn shard(&self) -> Option<&crate::ShardOf> {
        self.state.shard.as_ref()
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
