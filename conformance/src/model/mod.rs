//! The reference model: SPEC.md written as plainly as it can be, to check the engine against.
//!
//! Plain maps and vectors, strings everywhere, linear scans, no interning, no indexes, no
//! deadline queues, no event log. It shares no logic with the engine: it uses only the
//! engine's plain data types ([`Command`], [`Config`], [`UserStatus`], the read views) for its
//! interface, so that a bug must be written twice, in two different shapes, to go unseen.
//!
//! Each step works the same way: remember every user's status, make the change the rule
//! describes, clear the custom status of every user that is not `ONLINE` (R3.3), then notify
//! every user whose status pair differs from the one remembered (R5.1).
//!
//! ```
//! use presence_conformance::model::Model;
//! use presence_engine::{Command, Config, GeneralStatus};
//!
//! let mut model = Model::new(Config::default());
//! model.execute(Command::login("alice", "phone"), 0)?;
//! model.tick(400_000);
//! assert_eq!(model.status("alice").general, GeneralStatus::Offline);
//! # Ok::<(), presence_conformance::Refusal>(())
//! ```

mod commands;
mod subject;

use std::collections::{BTreeMap, BTreeSet};

use presence_engine::{
    Cause, CauseKind, Command, Config, GeneralStatus, LastOnline, LogicalState, OwnerId, Reply,
    SessionRecord, SessionView, UserId, UserRecord, UserStatus,
};

use crate::observe::{FlatNotice, Refusal, Response};

/// The latest time there is (docs/SPEC.md, R1.3): a later `at` counts as this one.
const TIME_MS_MAX: u64 = u64::MAX - 1;

/// The reference model of SPEC.md. Its API mirrors the engine's: [`Model::execute`],
/// [`Model::tick`] and the direct reads of R6.4.
#[derive(Clone, Debug)]
pub struct Model {
    config: Config,
    /// The latest time of a command or tick that succeeded (R1.3).
    now_ms: u64,
    users: BTreeMap<String, User>,
    /// Every accepted call of a rate-limited API, oldest first (R6.3).
    calls: Vec<Call>,
    /// Set by [`Model::reopen`]: the next call's time is the recovery time (R8.2).
    recovering: bool,
    /// The latest time at which the logged state changed.
    logged_ms: u64,
    /// The time of the latest snapshot, if one was taken.
    snapshot_ms: Option<u64>,
    /// The cause of each status change of the step under way (R5.7), by user.
    causes: BTreeMap<String, Cause>,
}

/// One user, as the log would define it.
#[derive(Clone, Debug, Default)]
struct User {
    sessions: Vec<Session>,
    custom: String,
    /// When the user last stopped being `ONLINE` (R6.5, R4.5).
    offline_since_ms: Option<u64>,
    /// Oldest first (R4.2).
    subscriptions: Vec<String>,
    friends: BTreeSet<String>,
    /// R5.6: how many times its sessions or custom status changed.
    version: u64,
}

#[derive(Clone, Debug)]
struct Session {
    device: String,
    connected: bool,
    login_at_ms: u64,
    heartbeat_at_ms: u64,
    /// R8.5: the connection owner, while connected.
    owner: Option<String>,
}

/// The rate-limited APIs, each with its own budget (R6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    GetStatus,
    Subscribe,
    Unsubscribe,
}

#[derive(Clone, Debug)]
struct Call {
    user: String,
    api: Api,
    at_ms: u64,
}

impl User {
    fn online(&self) -> bool {
        self.sessions.iter().any(|s| s.connected)
    }

    /// R2.3.
    fn general(&self) -> GeneralStatus {
        if self.online() {
            GeneralStatus::Online
        } else if !self.sessions.is_empty() {
            GeneralStatus::Offline
        } else {
            GeneralStatus::Unlogined
        }
    }

    fn is_blank(&self) -> bool {
        self.version == 0
            && self.sessions.is_empty()
            && self.custom.is_empty()
            && self.offline_since_ms.is_none()
            && self.subscriptions.is_empty()
            && self.friends.is_empty()
    }
}

impl Model {
    /// A model with no users, as a fresh engine.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            now_ms: 0,
            users: BTreeMap::new(),
            calls: Vec::new(),
            recovering: false,
            logged_ms: 0,
            snapshot_ms: None,
            causes: BTreeMap::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The latest time seen (R1.3).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Executes one command at `at_ms`: the reply's statuses (for `get_status` and
    /// `subscribe`) and every delivery of its notices, or the refusal (R7.1: a refused
    /// command changes nothing).
    pub fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        let at_ms = at_ms.min(TIME_MS_MAX).max(self.now_ms);
        let mut next = self.clone();
        next.recover_heartbeats(at_ms);
        let mut kicked = Vec::new();
        let reply = next.apply_command(command, at_ms, &mut kicked)?;
        let mut notices = next.finish_step(self, at_ms);
        *self = next;
        notices.extend(kicked);
        Ok(Response::new(reply, notices))
    }

    /// Advances time to `at_ms`: disconnects every connected session whose last heartbeat is
    /// `heartbeat_timeout_ms` old (R2.4), then clears the list of every subscriber that has
    /// not been `ONLINE` for `subscription_retention_ms` (R4.5).
    pub fn tick(&mut self, at_ms: u64) -> Response {
        let at_ms = self.begin(at_ms);
        let before = self.clone();
        let timeout_ms = self.config.heartbeat_timeout_ms;
        for (name, user) in self.users.iter_mut() {
            for session in user.sessions.iter_mut() {
                if session.connected && session.heartbeat_at_ms.saturating_add(timeout_ms) <= at_ms {
                    session.connected = false;
                    session.owner = None;
                    user.version += 1;
                    // R5.7: a user's timeouts in one tick are logged by device, so the last
                    // (the greatest device) is the cause.
                    let cause = Cause {
                        kind: CauseKind::HeartbeatTimeout,
                        device: Some(session.device.as_str().into()),
                    };
                    self.causes.entry(name.clone()).and_modify(|c| *c = greater(c, &cause)).or_insert(cause);
                }
            }
        }
        self.end_online_periods(&before, at_ms);
        let retention_ms = self.config.subscription_retention_ms;
        for user in self.users.values_mut() {
            if let (false, Some(since_ms)) = (user.online(), user.offline_since_ms) {
                if since_ms.saturating_add(retention_ms) <= at_ms {
                    user.subscriptions.clear();
                }
            }
        }
        let notices = self.finish_step(&before, at_ms);
        Response::new(Reply::Done, notices)
    }

    /// What a restart keeps (R8.2): the logged state, not the heartbeat times (they count
    /// from the login until the first accepted call fixes the recovery time) nor the rate-limit
    /// windows. The latest time seen becomes the latest the log or the newest snapshot
    /// records.
    pub fn reopen(&mut self) {
        self.calls.clear();
        self.recovering = true;
        self.now_ms = self.logged_ms.max(self.snapshot_ms.unwrap_or(0));
        for user in self.users.values_mut() {
            for session in user.sessions.iter_mut() {
                session.heartbeat_at_ms = session.login_at_ms;
            }
        }
    }

    /// A restart (R8.2) that, with `Some(at_ms)`, disconnects every restored session at that
    /// time before anything else (R8.4): each disconnect moves the user's version (R5.6) and
    /// clears its custom status (R3.3); nobody is left connected to be notified.
    pub fn restart(&mut self, disconnect_at_ms: Option<u64>) {
        self.reopen();
        let Some(at_ms) = disconnect_at_ms else { return };
        let at_ms = self.begin(at_ms);
        let before = self.clone();
        for user in self.users.values_mut() {
            for session in user.sessions.iter_mut().filter(|s| s.connected) {
                session.connected = false;
                session.owner = None;
                user.version += 1;
            }
        }
        let notices = self.finish_step(&before, at_ms);
        debug_assert!(notices.is_empty(), "nobody is connected after a restart that disconnects");
    }

    /// Notes that a snapshot of the engine was taken now (it records the latest time seen,
    /// which a restart then starts from).
    pub fn snapshot_taken(&mut self) {
        self.snapshot_ms = Some(self.now_ms);
    }

    // ---- direct reads (R6.4, R6.5) ----

    /// The status of any user; `UNLOGINED` for one never seen (R1.2).
    pub fn status(&self, user: &str) -> UserStatus {
        match self.users.get(user) {
            Some(u) => UserStatus { general: u.general(), custom: u.custom.as_str().into() },
            None => UserStatus::unlogined(),
        }
    }

    /// The version of any user's status (R5.6); 0 for one never seen.
    pub fn version(&self, user: &str) -> u64 {
        self.users.get(user).map_or(0, |u| u.version)
    }

    /// When `user` was last `ONLINE` (R6.5).
    pub fn last_online(&self, user: &str) -> LastOnline {
        match self.users.get(user) {
            Some(u) if u.online() => LastOnline::Now,
            Some(User { offline_since_ms: Some(at_ms), .. }) => LastOnline::At(*at_ms),
            _ => LastOnline::Never,
        }
    }

    /// The sessions of `user`, sorted by device.
    pub fn sessions(&self, user: &str) -> Vec<SessionView> {
        let mut list: Vec<SessionView> = self
            .users
            .get(user)
            .map(|u| &u.sessions[..])
            .unwrap_or_default()
            .iter()
            .map(|s| SessionView {
                device: s.device.as_str().into(),
                connected: s.connected,
                login_at_ms: s.login_at_ms,
                heartbeat_at_ms: s.heartbeat_at_ms,
            })
            .collect();
        list.sort_by(|a, b| a.device.cmp(&b.device));
        list
    }

    /// The subscription list of `user`, oldest first (R4.2).
    pub fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.users.get(user).map(|u| u.subscriptions.iter().map(UserId::from).collect()).unwrap_or_default()
    }

    /// The friends of `user`, sorted (R5.4).
    pub fn friends(&self, user: &str) -> Vec<UserId> {
        self.users.get(user).map(|u| u.friends.iter().map(UserId::from).collect()).unwrap_or_default()
    }

    /// The state as the log defines it, in the engine's canonical order (users sorted, every
    /// user with any state at all), to compare with `Engine::logical_state`.
    pub fn logical_state(&self) -> LogicalState {
        let users = self
            .users
            .iter()
            .filter(|(_, u)| !u.is_blank())
            .map(|(name, u)| {
                let mut sessions: Vec<SessionRecord> = u
                    .sessions
                    .iter()
                    .map(|s| SessionRecord {
                        device: s.device.as_str().into(),
                        connected: s.connected,
                        login_at_ms: s.login_at_ms,
                        owner: s.owner.as_deref().map(OwnerId::from),
                    })
                    .collect();
                sessions.sort_by(|a, b| a.device.cmp(&b.device));
                UserRecord {
                    user: name.as_str().into(),
                    sessions,
                    custom: u.custom.as_str().into(),
                    last_online_end_ms: u.offline_since_ms,
                    subscriptions: u.subscriptions.iter().map(UserId::from).collect(),
                    friends: u.friends.iter().map(UserId::from).collect(),
                    version: u.version,
                }
            })
            .collect();
        LogicalState { users }
    }

    // ---- one step ----

    /// The time a tick is processed at (R1.3), and the recovery time after a restart (R8.2).
    fn begin(&mut self, at_ms: u64) -> u64 {
        let at_ms = at_ms.min(TIME_MS_MAX).max(self.now_ms);
        self.recover_heartbeats(at_ms);
        at_ms
    }

    /// R8.2: the first accepted call after a restart counts as a heartbeat of every
    /// connected session (a refused call changes nothing, R7.1).
    fn recover_heartbeats(&mut self, at_ms: u64) {
        if self.recovering {
            self.recovering = false;
            for user in self.users.values_mut() {
                for session in user.sessions.iter_mut().filter(|s| s.connected) {
                    session.heartbeat_at_ms = at_ms;
                }
            }
        }
    }

    /// R3.3 and R6.5: a user that stopped being `ONLINE` in this step loses its custom
    /// status, and the moment is remembered.
    fn end_online_periods(&mut self, before: &Model, at_ms: u64) {
        for (name, user) in self.users.iter_mut() {
            if user.online() {
                continue;
            }
            user.custom.clear();
            if before.users.get(name).is_some_and(User::online) {
                user.offline_since_ms = Some(at_ms);
            }
        }
    }

    /// Ends a successful step that began as `before`: R3.3, the time, and the notices of
    /// R5.1-R5.3 (one per connected device of each interested user, for each user whose
    /// status pair changed).
    fn finish_step(&mut self, before: &Model, at_ms: u64) -> Vec<FlatNotice> {
        self.end_online_periods(before, at_ms);
        let causes = std::mem::take(&mut self.causes);
        self.now_ms = at_ms;
        if before.logical_state() != self.logical_state() {
            self.logged_ms = at_ms;
        }
        let mut notices = BTreeSet::new();
        let names: BTreeSet<&String> = self.users.keys().chain(before.users.keys()).collect();
        for about in names {
            let status = self.status(about);
            if status == before.status(about) {
                continue;
            }
            for (to, device) in self.interested_devices(about) {
                notices.insert(FlatNotice::Status {
                    to,
                    device,
                    about: about.clone(),
                    status: status.general,
                    custom: status.custom.to_string(),
                    version: Some(self.version(about)),
                    cause: causes.get(about.as_str()).cloned(),
                });
            }
        }
        notices.into_iter().collect()
    }

    /// R5.2, R5.3: the connected devices of `about` itself, of every user whose list holds
    /// it, and of its friends when `friend_notifications` is on.
    fn interested_devices(&self, about: &str) -> BTreeSet<(String, String)> {
        let mut devices = BTreeSet::new();
        for (name, user) in &self.users {
            let interested = name == about
                || user.subscriptions.iter().any(|t| t == about)
                || (self.config.friend_notifications && user.friends.contains(about));
            if interested {
                for session in user.sessions.iter().filter(|s| s.connected) {
                    devices.insert((name.clone(), session.device.clone()));
                }
            }
        }
        devices
    }
}

/// Of two causes of the same kind, the one with the greater device: the later in the log
/// when a step changes several sessions of one user the same way (R5.7).
fn greater(a: &Cause, b: &Cause) -> Cause {
    if b.device > a.device {
        b.clone()
    } else {
        a.clone()
    }
}
