//! The derived state: sessions, custom statuses, subscriptions and friendships, with the
//! indexes that keep every hot path O(1) or O(output).
//!
//! Users and devices are interned to dense integers; a user's whole state lives in one
//! [`UserState`] at its index. Status is never stored: it is derived from the sessions (R2.3).

mod apply;
mod customs;
mod deadlines;
mod interner;
mod journal;
mod memory;
mod owners;
mod rates;
mod restore;

use std::sync::{Arc, OnceLock};

use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use smallvec::SmallVec;

use customs::Customs;
pub(crate) use deadlines::{Deadlines, HeartbeatDue};
pub(crate) use interner::Interner;
pub use memory::HeapBytes;
pub(crate) use owners::Owners;
pub(crate) use rates::{Api, RateLimits};
pub(crate) use restore::canonicalize;

use crate::event::{EventRef, Text};
use crate::ids::{DeviceId, DeviceKey, UserId, UserKey};
use crate::shard::ShardOf;
use crate::status::{GeneralStatus, LastOnline, UserStatus};

/// One device of one user (R2.1). 24 bytes: the connection flag lives in `incarnation`.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// Set when the session is created or reconnected (R2.5).
    pub login_at_ms: u64,
    /// `h` of R2.4. Not logged (R8.2).
    pub heartbeat_at_ms: u64,
    pub device: DeviceKey,
    /// 0 while disconnected; otherwise a number that distinguishes this connection from
    /// earlier ones of the same device, so that stale heartbeat deadlines are dropped.
    pub incarnation: u32,
}

impl Session {
    pub(crate) fn connected(&self) -> bool {
        self.incarnation != 0
    }
}

/// What only some users have: a custom status, subscriptions, subscribers, friends. Kept out
/// of line so that a user with none of it costs a null pointer.
#[derive(Debug, Default, Clone)]
pub(crate) struct Social {
    /// Empty when none; non-empty only while `ONLINE` (R3.3).
    pub custom: Arc<str>,
    /// Targets, oldest first (R4.2); at most `max_subscriptions` long.
    pub subscriptions: Vec<UserKey>,
    /// The reverse index: users whose list holds this user (R5.2).
    pub subscribers: FxHashSet<UserKey>,
    /// Mutual (R5.4).
    pub friends: FxHashSet<UserKey>,
    /// Whether a retention deadline for this user is queued (R4.5).
    pub retention_queued: bool,
}

static NO_SUBSCRIBERS: FxHashSet<UserKey> = FxHashSet::with_hasher(FxBuildHasher);

/// The shared empty custom status, so that statuses without one allocate nothing.
pub(crate) fn no_custom() -> Arc<str> {
    static EMPTY: OnceLock<Arc<str>> = OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

/// A user's status pair at one moment ([`UserState::pair`]); `None` for no custom status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusPair {
    pub general: GeneralStatus,
    pub custom: Option<Arc<str>>,
}

impl StatusPair {
    /// The pair of a user the engine has never seen (R1.2).
    pub(crate) const UNLOGINED: StatusPair = StatusPair { general: GeneralStatus::Unlogined, custom: None };
}

/// `last_online_end_ms` of a user that never stopped being `ONLINE`.
const NEVER: u64 = u64::MAX;

/// Everything about one user: 48 bytes, plus [`Social`] for those who have any of it.
#[derive(Debug)]
pub(crate) struct UserState {
    /// At most `max_devices_per_user` (R2.5), so linear scans are cheap; one inline.
    pub sessions: SmallVec<[Session; 1]>,
    /// When the user last stopped being `ONLINE` (R6.5, R4.5); [`NEVER`] if it never did.
    last_online_end_ms: u64,
    social: Option<Box<Social>>,
    /// The status version (R5.6): how many session and custom-status events the user has had.
    pub version: u64,
}

impl Default for UserState {
    fn default() -> Self {
        Self { sessions: SmallVec::new(), last_online_end_ms: NEVER, social: None, version: 0 }
    }
}

impl UserState {
    pub(crate) fn general(&self) -> GeneralStatus {
        if self.is_online() {
            GeneralStatus::Online
        } else if self.sessions.is_empty() {
            GeneralStatus::Unlogined
        } else {
            GeneralStatus::Offline
        }
    }

    pub(crate) fn is_online(&self) -> bool {
        self.sessions.iter().any(Session::connected)
    }

    pub(crate) fn status(&self) -> UserStatus {
        let custom = self.social.as_ref().map_or_else(no_custom, |s| s.custom.clone());
        UserStatus { general: self.general(), custom }
    }

    /// Its status pair now, to compare with later ([`UserState::has_pair`]); the custom
    /// status is copied only when there is one, so that most users' pairs cost no counted
    /// reference.
    pub(crate) fn pair(&self) -> StatusPair {
        let custom = self.social.as_ref().map(|s| s.custom.clone()).filter(|c| !c.is_empty());
        StatusPair { general: self.general(), custom }
    }

    /// Whether its status pair is `pair`.
    pub(crate) fn has_pair(&self, pair: &StatusPair) -> bool {
        self.general() == pair.general && self.custom() == pair.custom.as_deref().unwrap_or("")
    }

    pub(crate) fn custom(&self) -> &str {
        self.social.as_ref().map_or("", |s| &s.custom)
    }

    pub(crate) fn subscriptions(&self) -> &[UserKey] {
        self.social.as_ref().map_or(&[], |s| &s.subscriptions)
    }

    pub(crate) fn subscribers(&self) -> &FxHashSet<UserKey> {
        self.social.as_ref().map_or(&NO_SUBSCRIBERS, |s| &s.subscribers)
    }

    pub(crate) fn friends(&self) -> &FxHashSet<UserKey> {
        self.social.as_ref().map_or(&NO_SUBSCRIBERS, |s| &s.friends)
    }

    pub(crate) fn retention_queued(&self) -> bool {
        self.social.as_ref().is_some_and(|s| s.retention_queued)
    }

    /// Marks whether a retention deadline is queued for this user (R4.5).
    pub(crate) fn set_retention_queued(&mut self, queued: bool) {
        match (queued, self.social.as_mut()) {
            (true, _) => self.social_mut().retention_queued = true,
            (false, Some(social)) => social.retention_queued = false,
            (false, None) => {}
        }
    }

    pub(crate) fn social(&self) -> Option<&Social> {
        self.social.as_deref()
    }

    /// The out-of-line part, created on first use.
    pub(crate) fn social_mut(&mut self) -> &mut Social {
        self.social.get_or_insert_with(Box::default)
    }

    pub(crate) fn last_online_end_ms(&self) -> Option<u64> {
        (self.last_online_end_ms != NEVER).then_some(self.last_online_end_ms)
    }

    pub(crate) fn set_last_online_end_ms(&mut self, at_ms: Option<u64>) {
        self.last_online_end_ms = at_ms.unwrap_or(NEVER);
    }

    pub(crate) fn session(&self, device: DeviceKey) -> Option<&Session> {
        self.sessions.iter().find(|s| s.device == device)
    }

    pub(crate) fn session_mut(&mut self, device: DeviceKey) -> Option<&mut Session> {
        self.sessions.iter_mut().find(|s| s.device == device)
    }

    pub(crate) fn last_online(&self) -> LastOnline {
        match (self.is_online(), self.last_online_end_ms()) {
            (true, _) => LastOnline::Now,
            (false, Some(at_ms)) => LastOnline::At(at_ms),
            (false, None) => LastOnline::Never,
        }
    }

    /// Whether the user has nothing the log defines (such users are left out of snapshots).
    pub(crate) fn is_blank(&self) -> bool {
        self.version == 0
            && self.sessions.is_empty()
            && self.custom().is_empty()
            && self.last_online_end_ms().is_none()
            && self.subscriptions().is_empty()
            && self.friends().is_empty()
    }
}

/// The whole derived state.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The latest time seen (R1.3).
    pub now_ms: u64,
    /// The last event applied.
    pub last_seq: u64,
    pub user_ids: Interner<UserId>,
    pub users: Vec<UserState>,
    pub device_ids: Interner<DeviceId>,
    pub deadlines: Deadlines,
    /// The connection owner of each connected session that has one (R8.5), by interned
    /// owner; kept apart from the sessions because most deployments tag none.
    pub owners: Owners,
    /// In a sharded deployment, which shard this state is (R9); `None` alone.
    pub shard: Option<ShardOf>,
    /// The watch table (R9.5): the last status and version this shard knows of each user of
    /// another shard that a local user watches. Never logged; rebuilt after an open.
    pub watch: FxHashMap<UserKey, (UserStatus, u64)>,
    next_incarnation: u32,
    /// Accepted calls of the rate-limited APIs (R6.3).
    pub rates: RateLimits,
    /// Recent custom statuses, shared between the users who set them.
    customs: Customs,
    /// Open while a group commit is being decided (see `journal.rs`).
    journal: Option<Vec<journal::Undo>>,
    /// The recovery time of R8.2 once fixed; `None` after an open until a call succeeds. A
    /// fresh state has nothing to recover and starts at `Some(0)`.
    pub recovered_at_ms: Option<u64>,
}

impl State {
    /// The key of a user id (given as a `&str` or an event's [`Text`]), if it is known.
    #[inline]
    pub(crate) fn user_key(&self, user: impl AsRef<[u8]>) -> Option<UserKey> {
        self.user_ids.get(user.as_ref()).map(UserKey)
    }

    #[inline]
    pub(crate) fn device_key(&self, device: impl AsRef<[u8]>) -> Option<DeviceKey> {
        self.device_ids.get(device.as_ref()).map(DeviceKey)
    }

    /// Reads, changing nothing, what looking up `users` will read, in two passes of reads
    /// independent of one another (where each name sits in the table, then the name found
    /// there and the user's slot), so that their cache misses overlap instead of queueing:
    /// for [`Engine::prefetch`](crate::Engine::prefetch) (replay has
    /// [`State::prefetch_events`]). Returns a value made of what it read, for the caller to
    /// `black_box`.
    pub(crate) fn prefetch_users<'a>(&self, users: impl Iterator<Item = &'a [u8]> + Clone) -> u64 {
        let mut seen = 0u64;
        for user in users.clone() {
            seen = seen.wrapping_add(u64::from(self.user_ids.touch(user)));
        }
        for user in users {
            if let Some(key) = self.user_key(user) {
                seen = seen.wrapping_add(self.user(key).version);
            }
        }
        seen
    }

    /// [`State::prefetch_users`] for a run of logged events, keeping what the second pass
    /// finds of each event's own user in `keys` (`None`: not interned when looked), so that
    /// applying the event need not look it up again ([`State::apply`]). A key found stays
    /// right; a user not found may be made by an earlier event of the run, so `None` means
    /// "look again", not "new".
    pub(crate) fn prefetch_events(&self, events: &[EventRef<'_>], keys: &mut Vec<Option<UserKey>>) -> u64 {
        let mut seen = 0u64;
        for user in events.iter().flat_map(|e| e.kind.users()) {
            seen = seen.wrapping_add(u64::from(self.user_ids.touch(user.as_bytes())));
        }
        keys.clear();
        for event in events {
            let mut users = event.kind.users();
            let own = users.next().and_then(|user| self.user_key(user));
            keys.push(own);
            for key in own.into_iter().chain(users.filter_map(|user| self.user_key(user))) {
                seen = seen.wrapping_add(self.user(key).version);
            }
        }
        seen
    }

    pub(crate) fn user(&self, key: UserKey) -> &UserState {
        &self.users[key.index()]
    }

    pub(crate) fn user_mut(&mut self, key: UserKey) -> &mut UserState {
        &mut self.users[key.index()]
    }

    pub(crate) fn user_by_id(&self, user: &str) -> Option<&UserState> {
        self.user_key(user).map(|key| self.user(key))
    }

    pub(crate) fn user_name(&self, key: UserKey) -> &UserId {
        self.user_ids.name(key.0)
    }

    pub(crate) fn device_name(&self, key: DeviceKey) -> &DeviceId {
        self.device_ids.name(key.0)
    }

    /// The session of `user` on `device`, if both are known and it exists.
    pub(crate) fn session(&self, user: &str, device: &str) -> Option<(UserKey, &Session)> {
        let key = self.user_key(user)?;
        let device = self.device_key(device)?;
        self.user(key).session(device).map(|s| (key, s))
    }

    /// The status of any user with its version (R5.6); a user never seen is at version 0. A
    /// user of another shard has the status this shard last heard of (R9.3), or none yet.
    pub(crate) fn versioned_status_of(&self, user: &str) -> (UserStatus, u64) {
        if self.is_remote(user) {
            return self
                .user_key(user)
                .and_then(|key| self.watch.get(&key).cloned())
                .unwrap_or_else(|| (UserStatus::unlogined(), 0));
        }
        self.user_by_id(user).map_or_else(|| (UserStatus::unlogined(), 0), |u| (u.status(), u.version))
    }

    /// Whether `user` lives on another shard (never, outside a sharded deployment).
    pub(crate) fn is_remote(&self, user: &str) -> bool {
        self.shard.as_ref().is_some_and(|shard| shard.is_remote(user))
    }

    /// Every connected session: users in key order, each user's devices in id order (so that
    /// the last of a user's sessions in a step that disconnects several is its greatest device,
    /// whatever the order they connected in, R5.7).
    pub(crate) fn connected_sessions(&self) -> impl Iterator<Item = (UserKey, DeviceKey)> + '_ {
        self.users.iter().enumerate().flat_map(|(i, u)| {
            let mut devices: SmallVec<[DeviceKey; 4]> =
                u.sessions.iter().filter(|s| s.connected()).map(|s| s.device).collect();
            devices.sort_unstable_by(|&a, &b| self.device_name(a).cmp(self.device_name(b)));
            devices.into_iter().map(move |d| (UserKey(i as u32), d))
        })
    }

    pub(crate) fn intern_user(&mut self, user: Text<'_>) -> UserKey {
        match self.user_key(user) {
            Some(key) => key,
            None => self.add_user(user),
        }
    }

    /// Adds a user the caller looked up and did not find.
    fn add_user(&mut self, user: Text<'_>) -> UserKey {
        let key = UserKey(self.user_ids.insert_new(user.as_str()));
        self.users.push(UserState::default());
        key
    }

    pub(crate) fn intern_device(&mut self, device: Text<'_>) -> DeviceKey {
        match self.device_key(device) {
            Some(key) => key,
            None => DeviceKey(self.device_ids.insert_new(device.as_str())),
        }
    }

    /// A fresh, non-zero incarnation for a session that connects.
    fn take_incarnation(&mut self) -> u32 {
        self.next_incarnation = self.next_incarnation.checked_add(1).unwrap_or(1);
        self.next_incarnation
    }

    /// Counts an accepted call of a rate-limited API (R6.3). Undone with a group.
    pub(crate) fn count_rate_limited_call(&mut self, user: UserKey, api: Api, at_ms: u64, calls: u32) {
        let dropped = self.rates.count(user, api, at_ms, calls);
        self.record(journal::Undo::RateLimitedCall { user, api, dropped });
    }

    /// Sets `h` of a connected session (R2.4): O(1), not logged (R8.2). The deadline queue
    /// is corrected lazily when its entry comes due.
    pub(crate) fn touch_heartbeat(&mut self, user: UserKey, device: DeviceKey, at_ms: u64) {
        if let Some(session) = self.user_mut(user).session_mut(device) {
            let heartbeat_at_ms = std::mem::replace(&mut session.heartbeat_at_ms, at_ms);
            self.record(journal::Undo::Heartbeat { user, device, heartbeat_at_ms });
        }
    }

    /// The heartbeat floor for a call at `at_ms`: after recovery every connected session
    /// counts as having sent a heartbeat at the recovery time (R8.2), which is the time of
    /// the first call that succeeds; until then, a call at `at_ms` would fix it at `at_ms`.
    pub(crate) fn heartbeat_floor_ms(&self, at_ms: u64) -> u64 {
        self.recovered_at_ms.unwrap_or(at_ms)
    }

    /// Fixes the recovery time at the first call that succeeds (R8.2). O(1): heartbeats
    /// below it are raised lazily, when their deadline comes due. Undone with a group.
    pub(crate) fn fix_recovery_time(&mut self, at_ms: u64) {
        if self.recovered_at_ms.is_none() {
            self.recovered_at_ms = Some(at_ms);
            self.record(journal::Undo::RecoveryTime);
        }
    }

    /// (connected, disconnected) sessions of all users.
    pub(crate) fn session_counts(&self) -> (usize, usize) {
        let mut connected = 0;
        let mut total = 0;
        for user in &self.users {
            total += user.sessions.len();
            connected += user.sessions.iter().filter(|s| s.connected()).count();
        }
        (connected, total - connected)
    }

    /// Checks the invariants around one user (docs/STYLE.md: assert the invariants): R3.3, no
    /// self-subscription, the reverse index agreeing with the lists both ways, mutual
    /// friendship, one session per device. Debug builds run it for every user an applied
    /// event touches, so every test checks them for free.
    #[cfg(debug_assertions)]
    pub(crate) fn check_invariants(&self, key: UserKey) {
        let user = self.user(key);
        assert!(user.custom().is_empty() || user.is_online(), "R3.3: custom status while not ONLINE");
        for target in user.subscriptions() {
            assert!(*target != key, "R4.1: self-subscription");
            assert!(self.user(*target).subscribers().contains(&key), "reverse index misses a subscriber");
        }
        for subscriber in user.subscribers() {
            assert!(
                self.user(*subscriber).subscriptions().contains(&key),
                "reverse index has a stale subscriber"
            );
        }
        for friend in user.friends() {
            assert!(
                *friend != key && self.user(*friend).friends().contains(&key),
                "R5.4: friendship not mutual"
            );
        }
        let mut devices: Vec<_> = user.sessions.iter().map(|s| s.device).collect();
        devices.sort_unstable();
        devices.dedup();
        assert_eq!(devices.len(), user.sessions.len(), "R1.1: a device twice in one user");
    }
}
