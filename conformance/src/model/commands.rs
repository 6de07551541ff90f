//! The commands of the model, one function each, checks first in R7.2's order: ids, batch
//! shape and self-subscription; session; edition; feature switch; rate limit.

use presence_engine::{Cause, CauseKind, Command, Edition, Reply, TargetStatus, UserId, OWNER_BYTES_MAX};

use super::{Api, Call, Model, Session, User};
use crate::observe::{FlatNotice, Refusal};

const INVALID_PARAMETER: u32 = 6017;
const NOT_LOGGED_IN: u32 = 6014;
const RATE_LIMITED: u32 = 7008;
const EDITION_NOT_SUPPORTED: u32 = 7013;
const FEATURE_NOT_ENABLED: u32 = 72001;

fn refuse(code: u32, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

/// R1.1: non-empty, at most `max_bytes` bytes of UTF-8, no control character.
fn check_id(id: &str, max_bytes: u32, what: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > max_bytes as usize || id.chars().any(char::is_control) {
        return Err(refuse(INVALID_PARAMETER, format!("bad {what} {id:?}")));
    }
    Ok(())
}

impl Model {
    /// Changes `self` as `command` says, or refuses it. The caller works on a copy and keeps
    /// it only on success, so a refusal changes nothing whatever was touched before it.
    pub(super) fn apply_command(
        &mut self,
        command: Command,
        at_ms: u64,
        kicked: &mut Vec<FlatNotice>,
    ) -> Result<Reply, Refusal> {
        match command {
            Command::Login { user, device, owner } => {
                self.login(&user, &device, owner.as_deref(), at_ms, kicked).map(|()| Reply::Done)
            }
            Command::Logout { user, device } => {
                self.check_ids(&user, &device)?;
                self.session(&user, &device)?;
                let u = self.user_mut(&user);
                u.sessions.retain(|s| s.device != *device);
                u.version += 1;
                self.set_cause(&user, CauseKind::Logout, &device);
                Ok(Reply::Done)
            }
            Command::Disconnect { user, device } => {
                self.check_ids(&user, &device)?;
                let session = self.session(&user, &device)?;
                if session.connected {
                    session.connected = false;
                    session.owner = None;
                    self.user_mut(&user).version += 1;
                    self.set_cause(&user, CauseKind::Disconnect, &device);
                }
                Ok(Reply::Done)
            }
            Command::Heartbeat { user, device } => {
                self.check_ids(&user, &device)?;
                self.connected(&user, &device)?.heartbeat_at_ms = at_ms;
                Ok(Reply::Done)
            }
            Command::SetStatus { user, device, custom } => {
                self.check_ids(&user, &device)?;
                if custom.len() > self.config.max_custom_status_bytes as usize {
                    return Err(refuse(INVALID_PARAMETER, "custom status too long"));
                }
                self.connected(&user, &device)?;
                let u = self.user_mut(&user);
                if u.custom != custom {
                    u.custom = custom;
                    u.version += 1;
                    self.set_cause(&user, CauseKind::CustomStatus, &device);
                }
                Ok(Reply::Done)
            }
            Command::GetStatus { user, device, targets } => {
                self.check_ids(&user, &device)?;
                self.check_targets(&targets, 1, self.config.max_query_batch)?;
                self.connected(&user, &device)?;
                let self_query = targets.len() == 1 && targets[0] == user;
                if !self_query {
                    self.gates(&user, Api::GetStatus, at_ms)?;
                }
                Ok(Reply::Statuses(self.statuses(&targets)))
            }
            Command::Subscribe { user, device, targets } => {
                self.check_ids(&user, &device)?;
                self.check_targets(&targets, 1, self.config.max_subscribe_batch)?;
                if targets.contains(&user) {
                    return Err(refuse(INVALID_PARAMETER, "a user cannot subscribe to itself"));
                }
                self.connected(&user, &device)?;
                self.gates(&user, Api::Subscribe, at_ms)?;
                let statuses = self.statuses(&targets);
                self.subscribe(&user, &targets);
                Ok(Reply::Statuses(statuses))
            }
            Command::Unsubscribe { user, device, targets } => {
                self.check_ids(&user, &device)?;
                self.check_targets(&targets, 0, self.config.max_subscribe_batch)?;
                self.connected(&user, &device)?;
                self.gates(&user, Api::Unsubscribe, at_ms)?;
                let list = &mut self.user_mut(&user).subscriptions;
                if targets.is_empty() {
                    list.clear();
                } else {
                    list.retain(|t| !targets.iter().any(|x| x == t.as_str()));
                }
                Ok(Reply::Done)
            }
            Command::AddFriend { user, friend } => {
                self.check_friends(&user, &friend)?;
                self.user_mut(&user).friends.insert(friend.to_string());
                self.user_mut(&friend).friends.insert(user.to_string());
                Ok(Reply::Done)
            }
            Command::RemoveFriend { user, friend } => {
                self.check_friends(&user, &friend)?;
                self.user_mut(&user).friends.remove(friend.as_str());
                self.user_mut(&friend).friends.remove(user.as_str());
                Ok(Reply::Done)
            }
            Command::DisconnectSessions { owner } => {
                if let Some(owner) = &owner {
                    check_id(owner, OWNER_BYTES_MAX as u32, "owner tag")?;
                }
                let mut sessions = 0;
                for (name, user) in self.users.iter_mut() {
                    let mut greatest: Option<String> = None;
                    for s in user.sessions.iter_mut().filter(|s| s.connected) {
                        if owner.is_none() || s.owner.as_deref() == owner.as_deref() {
                            s.connected = false;
                            s.owner = None;
                            user.version += 1;
                            sessions += 1;
                            greatest = greatest.max(Some(s.device.clone()));
                        }
                    }
                    // R5.7: a user's sessions are disconnected in device order, so the last
                    // (the greatest device) is the cause.
                    if let Some(device) = greatest {
                        let cause = Cause { kind: CauseKind::OwnerGone, device: Some(device.into()) };
                        self.causes.insert(name.clone(), cause);
                    }
                }
                Ok(Reply::Disconnected { sessions, remaining: 0 })
            }
        }
    }

    /// R2.1, R2.5, R8.5.
    fn login(
        &mut self,
        user: &str,
        device: &str,
        owner: Option<&str>,
        at_ms: u64,
        kicked: &mut Vec<FlatNotice>,
    ) -> Result<(), Refusal> {
        self.check_ids(user, device)?;
        if let Some(owner) = owner {
            check_id(owner, OWNER_BYTES_MAX as u32, "owner tag")?;
        }
        let max_devices = self.config.max_devices_per_user as usize;
        let u = self.user_mut(user);
        if let Some(s) = u.sessions.iter_mut().find(|s| s.device == device) {
            // A reconnect, or a connected session coming through another owner, opens the
            // session again; an already connected session of the same owner keeps it.
            let opened = !s.connected || s.owner.as_deref() != owner;
            if opened {
                s.connected = true;
                s.login_at_ms = at_ms;
                s.owner = owner.map(String::from);
                u.version += 1;
            }
            s.heartbeat_at_ms = at_ms;
            if opened {
                self.set_cause(user, CauseKind::Login, device);
            }
            return Ok(());
        }
        let old_sessions = u.sessions.len();
        u.version += 1;
        // R5.7: kicks after the login never change the status pair, so the login is the
        // cause of any change.
        self.causes.insert(user.to_string(), Cause { kind: CauseKind::Login, device: Some(device.into()) });
        let u = self.user_mut(user);
        u.sessions.push(Session {
            device: device.to_string(),
            connected: true,
            login_at_ms: at_ms,
            heartbeat_at_ms: at_ms,
            owner: owner.map(String::from),
        });
        // Kick the oldest of the sessions that existed before (never the new one) until the
        // user fits; ties on login time go to the smaller device id.
        let mut candidates = old_sessions;
        while u.sessions.len() > max_devices && candidates > 0 {
            let oldest = (0..candidates)
                .min_by(|&a, &b| {
                    let (a, b) = (&u.sessions[a], &u.sessions[b]);
                    (a.login_at_ms, &a.device).cmp(&(b.login_at_ms, &b.device))
                })
                .unwrap_or(0);
            let gone = u.sessions.remove(oldest);
            u.version += 1;
            candidates -= 1;
            if gone.connected {
                kicked.push(FlatNotice::Kicked { to: user.to_string(), device: gone.device });
            }
        }
        Ok(())
    }

    /// R4.2, R4.3: duplicates count once at their first position; each target moves to (or
    /// enters at) the newest end; then the oldest go until the list fits.
    fn subscribe(&mut self, user: &str, targets: &[UserId]) {
        let max = self.config.max_subscriptions as usize;
        let mut batch: Vec<&str> = Vec::new();
        for t in targets {
            if !batch.contains(&t.as_str()) {
                batch.push(t.as_str());
            }
        }
        let list = &mut self.user_mut(user).subscriptions;
        for t in batch {
            list.retain(|x| x != t);
            list.push(t.to_string());
        }
        while list.len() > max {
            list.remove(0);
        }
    }

    fn set_cause(&mut self, user: &str, kind: CauseKind, device: &str) {
        self.causes.insert(user.to_string(), Cause { kind, device: Some(device.into()) });
    }

    fn user_mut(&mut self, user: &str) -> &mut User {
        self.users.entry(user.to_string()).or_default()
    }

    fn statuses(&self, targets: &[UserId]) -> Vec<TargetStatus> {
        targets
            .iter()
            .map(|t| TargetStatus { user: t.clone(), status: self.status(t), version: self.version(t) })
            .collect()
    }

    // ---- R7.2 step 1 ----

    fn check_ids(&self, user: &str, device: &str) -> Result<(), Refusal> {
        check_id(user, self.config.max_user_id_bytes, "user id")?;
        check_id(device, self.config.max_device_id_bytes, "device id")
    }

    fn check_targets(&self, targets: &[UserId], min: usize, max: u32) -> Result<(), Refusal> {
        if targets.len() < min || targets.len() > max as usize {
            return Err(refuse(INVALID_PARAMETER, format!("{} targets", targets.len())));
        }
        for t in targets {
            check_id(t, self.config.max_user_id_bytes, "target")?;
        }
        Ok(())
    }

    fn check_friends(&self, user: &str, friend: &str) -> Result<(), Refusal> {
        check_id(user, self.config.max_user_id_bytes, "user id")?;
        check_id(friend, self.config.max_user_id_bytes, "friend id")?;
        if user == friend {
            return Err(refuse(INVALID_PARAMETER, "a user cannot befriend itself"));
        }
        Ok(())
    }

    // ---- R7.2 step 2 ----

    /// The session must exist.
    fn session(&mut self, user: &str, device: &str) -> Result<&mut Session, Refusal> {
        self.users
            .get_mut(user)
            .and_then(|u| u.sessions.iter_mut().find(|s| s.device == device))
            .ok_or_else(|| refuse(NOT_LOGGED_IN, format!("{user} has no session on {device}")))
    }

    /// The session must exist and be connected.
    fn connected(&mut self, user: &str, device: &str) -> Result<&mut Session, Refusal> {
        match self.session(user, device)? {
            s if s.connected => Ok(s),
            _ => Err(refuse(NOT_LOGGED_IN, format!("{user} is disconnected on {device}"))),
        }
    }

    // ---- R7.2 steps 3 to 5 ----

    /// Edition, feature switch, then the rate limit of R6.3: at most `rate_limit_calls`
    /// accepted calls in `(at - window, at]`. An accepted call is counted here.
    fn gates(&mut self, user: &str, api: Api, at_ms: u64) -> Result<(), Refusal> {
        if self.config.edition != Edition::Ultimate {
            return Err(refuse(EDITION_NOT_SUPPORTED, "needs the ultimate edition"));
        }
        if !self.config.status_feature {
            return Err(refuse(FEATURE_NOT_ENABLED, "the status feature is off"));
        }
        let window_ms = self.config.rate_limit_window_ms;
        let in_window = self
            .calls
            .iter()
            .filter(|c| c.user == user && c.api == api)
            .filter(|c| c.at_ms <= at_ms && c.at_ms.saturating_add(window_ms) > at_ms)
            .count();
        if in_window >= self.config.rate_limit_calls as usize {
            return Err(refuse(RATE_LIMITED, format!("{in_window} calls in the window")));
        }
        self.calls.push(Call { user: user.to_string(), api, at_ms });
        Ok(())
    }
}
