//! `decide`: validation and the events a command would log, without changing anything.
//!
//! Checks run in SPEC.md R7.2's order: ids, batch shape and self-subscription; session;
//! edition; feature switch; rate limit. The first failure is the error.

use rustc_hash::FxHashSet;

use crate::codec;
use crate::command::{Command, Reply, TargetStatus};
use crate::config::{Config, Edition};
use crate::error::Error;
use crate::event::{CloseReason, DisconnectReason, EventKind, UnsubscribeReason};
use crate::ids::{validate_id, DeviceId, DeviceKey, OwnerId, UserId, UserKey};
use crate::limits::{DISCONNECT_SESSIONS_MAX, OWNER_BYTES_MAX};
use crate::shard::RemoteStatuses;
use crate::state::{Api, State};

/// What executing a command does beyond its events: changes that are not logged (R8.2).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    None,
    /// Set `h` of a connected session (R2.4, R2.1).
    Heartbeat(UserKey, DeviceKey),
    /// Count an accepted call against the rate limit (R6.3).
    CountRateLimitedCall(UserKey, Api),
}

/// The outcome of deciding a command that is accepted.
#[derive(Debug)]
pub(crate) struct Decision {
    pub events: Vec<EventKind>,
    pub reply: Reply,
    pub effect: Effect,
}

impl Decision {
    fn events(events: Vec<EventKind>) -> Self {
        Self { events, reply: Reply::Done, effect: Effect::None }
    }
}

/// Decides `command` at engine time `at_ms` against `state`. Pure: reads only.
/// `bytes_budget` bounds what a command that chooses its own size (`disconnect_sessions`)
/// may log, so that its batch fits the store.
pub(crate) fn decide(
    state: &State,
    config: &Config,
    command: &Command,
    at_ms: u64,
    bytes_budget: usize,
    remote: &RemoteStatuses,
) -> Result<Decision, Error> {
    let d = Decider { state, config, at_ms, remote };
    match command {
        Command::Login { user, device, owner } => d.login(user, device, owner.as_ref()),
        Command::Logout { user, device } => d.logout(user, device),
        Command::Disconnect { user, device } => d.disconnect(user, device),
        Command::Heartbeat { user, device } => d.heartbeat(user, device),
        Command::SetStatus { user, device, custom } => d.set_status(user, device, custom),
        Command::GetStatus { user, device, targets } => d.get_status(user, device, targets),
        Command::Subscribe { user, device, targets } => d.subscribe(user, device, targets),
        Command::Unsubscribe { user, device, targets } => d.unsubscribe(user, device, targets),
        Command::AddFriend { user, friend } => d.add_friend(user, friend),
        Command::RemoveFriend { user, friend } => d.remove_friend(user, friend),
        Command::DisconnectSessions { owner } => d.disconnect_sessions(owner.as_ref(), bytes_budget),
    }
}

struct Decider<'a> {
    state: &'a State,
    config: &'a Config,
    at_ms: u64,
    /// Statuses of other shards' users, read for this command (R9.3).
    remote: &'a RemoteStatuses,
}

impl Decider<'_> {
    // ---- R7.2 step 1: ids, batch shape, self-subscription ----

    fn validate_user_id(&self, user: &UserId, what: &str) -> Result<(), Error> {
        validate_id(user.as_str(), self.config.max_user_id_bytes, what)
    }

    fn validate_ids(&self, user: &UserId, device: &DeviceId) -> Result<(), Error> {
        self.validate_user_id(user, "user id")?;
        validate_id(device.as_str(), self.config.max_device_id_bytes, "device id")
    }

    fn validate_targets(&self, targets: &[UserId], min: usize, max: u32, api: &str) -> Result<(), Error> {
        // R7.2: ids are checked before the batch's shape.
        targets.iter().try_for_each(|t| self.validate_user_id(t, "target user id"))?;
        if targets.len() < min || targets.len() > max as usize {
            return Err(Error::invalid(format!("{api} takes {min} to {max} targets, got {}", targets.len())));
        }
        Ok(())
    }

    fn validate_friend_ids(&self, user: &UserId, friend: &UserId) -> Result<(), Error> {
        self.validate_user_id(user, "user id")?;
        self.validate_user_id(friend, "friend id")?;
        if user == friend {
            return Err(Error::invalid(format!("{user} cannot befriend itself (R5.4)")));
        }
        Ok(())
    }

    // ---- R7.2 step 2: session ----

    /// The session must exist; returns whether it is connected.
    fn existing_session(&self, user: &UserId, device: &DeviceId) -> Result<(UserKey, bool), Error> {
        match self.state.session(user.as_str(), device.as_str()) {
            Some((u, s)) => Ok((u, s.connected())),
            None => Err(Error::not_logged_in(user.as_str(), device.as_str(), "no session")),
        }
    }

    fn connected_session(&self, user: &UserId, device: &DeviceId) -> Result<(UserKey, DeviceKey), Error> {
        match self.state.session(user.as_str(), device.as_str()) {
            Some((u, s)) if s.connected() => Ok((u, s.device)),
            Some(_) => Err(Error::not_logged_in(user.as_str(), device.as_str(), "a disconnected session")),
            None => Err(Error::not_logged_in(user.as_str(), device.as_str(), "no session")),
        }
    }

    // ---- R7.2 steps 3-5: edition, feature switch, rate limit ----

    fn check_edition_feature_and_rate(&self, user: UserKey, api: Api, name: &str) -> Result<(), Error> {
        if self.config.edition != Edition::Ultimate {
            return Err(Error::EditionNotSupported(format!("{name} needs the ultimate edition")));
        }
        if !self.config.status_feature {
            return Err(Error::FeatureNotEnabled(format!("{name} needs the user status feature switch on")));
        }
        let calls = self.config.rate_limit_calls;
        let window_ms = self.config.rate_limit_window_ms;
        if !self.state.rates.allows(user, api, self.at_ms, calls, window_ms) {
            return Err(Error::RateLimited(format!(
                "{name}: more than {calls} calls in {window_ms} ms by {}",
                self.state.user_name(user)
            )));
        }
        Ok(())
    }

    fn statuses(&self, targets: &[UserId]) -> Reply {
        let list = targets
            .iter()
            .map(|t| {
                // Another shard's user: the newest of what the host read for this command and
                // what this shard heard last (R9.3).
                let known = self.state.versioned_status_of(t.as_str());
                let (status, version) = match self.remote.get(t.as_str()) {
                    Some(read) if self.state.is_remote(t) && read.1 >= known.1 => read.clone(),
                    _ => known,
                };
                TargetStatus { user: t.clone(), status, version }
            })
            .collect();
        Reply::Statuses(list)
    }

    fn are_friends(&self, user: &UserId, friend: &UserId) -> bool {
        match (self.state.user_key(user.as_str()), self.state.user_key(friend.as_str())) {
            (Some(u), Some(f)) => self.state.user(u).friends().contains(&f),
            _ => false,
        }
    }

    // ---- commands: each checks in R7.2's order, then says what it logs ----

    /// R2.1, R2.5, R8.5.
    fn login(&self, user: &UserId, device: &DeviceId, owner: Option<&OwnerId>) -> Result<Decision, Error> {
        self.validate_ids(user, device)?;
        if let Some(owner) = owner {
            validate_id(owner.as_str(), OWNER_BYTES_MAX as u32, "owner tag")?;
        }
        let opened =
            EventKind::SessionOpened { user: user.clone(), device: device.clone(), owner: owner.cloned() };
        let Some(u) = self.state.user_key(user.as_str()) else {
            return Ok(Decision::events(vec![opened]));
        };
        let existing = self.state.device_key(device.as_str()).and_then(|dk| self.state.user(u).session(dk));
        match existing {
            // A login of a connected session changes nothing but its heartbeat time, unless it
            // comes through another connection owner: then the session is opened again, as the
            // new connection it is (R8.5).
            Some(s) if s.connected() && self.state.owners.get(u, s.device) == owner => Ok(Decision {
                events: Vec::new(),
                reply: Reply::Done,
                effect: Effect::Heartbeat(u, s.device),
            }),
            Some(s) if s.connected() => Ok(Decision::events(vec![opened])),
            // A reconnect does not add a session, so it never kicks.
            Some(_) => Ok(Decision::events(vec![opened])),
            None => {
                let sessions = &self.state.user(u).sessions;
                let max = self.config.max_devices_per_user as usize;
                let excess = (sessions.len() + 1).saturating_sub(max);
                let mut by_age: Vec<_> =
                    sessions.iter().map(|s| (s.login_at_ms, self.state.device_name(s.device))).collect();
                by_age.sort_unstable();
                // The new session is opened first, so that a kick never takes the user
                // through OFFLINE within the command (R5.1: a change undone within a command
                // notifies nobody, and R3.3 then has nothing to clear).
                let mut events = vec![opened];
                events.extend(by_age.into_iter().take(excess).map(|(_, d)| EventKind::SessionClosed {
                    user: user.clone(),
                    device: d.clone(),
                    reason: CloseReason::Kicked,
                }));
                Ok(Decision::events(events))
            }
        }
    }

    /// R2.2: the session must exist; it is removed.
    fn logout(&self, user: &UserId, device: &DeviceId) -> Result<Decision, Error> {
        self.validate_ids(user, device)?;
        self.existing_session(user, device)?;
        let reason = CloseReason::Logout;
        Ok(Decision::events(vec![EventKind::SessionClosed {
            user: user.clone(),
            device: device.clone(),
            reason,
        }]))
    }

    /// R2.2: the session must exist; a connected one becomes disconnected, a disconnected
    /// one stays as it is.
    fn disconnect(&self, user: &UserId, device: &DeviceId) -> Result<Decision, Error> {
        self.validate_ids(user, device)?;
        let (_, connected) = self.existing_session(user, device)?;
        let reason = DisconnectReason::Disconnect;
        let events = match connected {
            true => {
                vec![EventKind::SessionDisconnected { user: user.clone(), device: device.clone(), reason }]
            }
            false => Vec::new(),
        };
        Ok(Decision::events(events))
    }

    /// R2.4: a connected session's `h` is set, unlogged (R8.2).
    fn heartbeat(&self, user: &UserId, device: &DeviceId) -> Result<Decision, Error> {
        self.validate_ids(user, device)?;
        let (u, dk) = self.connected_session(user, device)?;
        Ok(Decision { events: Vec::new(), reply: Reply::Done, effect: Effect::Heartbeat(u, dk) })
    }

    /// R8.5: the connected sessions of `owner` (or all of them) are disconnected, as many as
    /// fit one command: at most [`DISCONNECT_SESSIONS_MAX`] and `bytes_budget` bytes of
    /// events. Needs no session; never refused for its size.
    fn disconnect_sessions(&self, owner: Option<&OwnerId>, bytes_budget: usize) -> Result<Decision, Error> {
        if let Some(owner) = owner {
            validate_id(owner.as_str(), OWNER_BYTES_MAX as u32, "owner tag")?;
        }
        let owner = owner.map(OwnerId::as_str);
        let (events, remaining) =
            disconnect_events(self.state, owner, DisconnectReason::OwnerGone, bytes_budget);
        let reply = Reply::Disconnected { sessions: events.len(), remaining };
        Ok(Decision { events, reply, effect: Effect::None })
    }

    /// R5.4: needs no session; an existing friendship changes nothing.
    fn add_friend(&self, user: &UserId, friend: &UserId) -> Result<Decision, Error> {
        self.validate_friend_ids(user, friend)?;
        let events = match self.are_friends(user, friend) {
            true => Vec::new(),
            false => vec![EventKind::FriendAdded { user: user.clone(), friend: friend.clone() }],
        };
        Ok(Decision::events(events))
    }

    /// R5.4: needs no session; a missing friendship changes nothing.
    fn remove_friend(&self, user: &UserId, friend: &UserId) -> Result<Decision, Error> {
        self.validate_friend_ids(user, friend)?;
        let events = match self.are_friends(user, friend) {
            true => vec![EventKind::FriendRemoved { user: user.clone(), friend: friend.clone() }],
            false => Vec::new(),
        };
        Ok(Decision::events(events))
    }

    /// R3.1, R3.2.
    fn set_status(&self, user: &UserId, device: &DeviceId, custom: &str) -> Result<Decision, Error> {
        self.validate_ids(user, device)?;
        let max = self.config.max_custom_status_bytes;
        if custom.len() > max as usize {
            return Err(Error::invalid(format!(
                "custom status is {} bytes of UTF-8, more than the {max} allowed",
                custom.len()
            )));
        }
        let (u, _) = self.connected_session(user, device)?;
        if self.state.user(u).custom() == custom {
            return Ok(Decision::events(Vec::new()));
        }
        Ok(Decision::events(vec![EventKind::CustomStatusSet {
            user: user.clone(),
            custom: custom.into(),
            device: Some(device.clone()),
        }]))
    }

    /// R6.1, R6.2, R6.3.
    fn get_status(&self, user: &UserId, device: &DeviceId, targets: &[UserId]) -> Result<Decision, Error> {
        self.validate_ids(user, device)?;
        self.validate_targets(targets, 1, self.config.max_query_batch, "get_status")?;
        let (u, _) = self.connected_session(user, device)?;
        let reply = self.statuses(targets);
        if targets.len() == 1 && targets[0] == *user {
            return Ok(Decision { events: Vec::new(), reply, effect: Effect::None });
        }
        self.check_edition_feature_and_rate(u, Api::GetStatus, "get_status")?;
        Ok(Decision { events: Vec::new(), reply, effect: Effect::CountRateLimitedCall(u, Api::GetStatus) })
    }

    /// R4.1, R4.2, R4.3, R4.6.
    fn subscribe(&self, user: &UserId, device: &DeviceId, targets: &[UserId]) -> Result<Decision, Error> {
        self.validate_ids(user, device)?;
        self.validate_targets(targets, 1, self.config.max_subscribe_batch, "subscribe")?;
        if targets.contains(user) {
            return Err(Error::invalid(format!("{user} cannot subscribe to itself (R4.1)")));
        }
        let (u, _) = self.connected_session(user, device)?;
        self.check_edition_feature_and_rate(u, Api::Subscribe, "subscribe")?;

        // Duplicates within one call count once, at their first position (R4.2).
        let mut seen = FxHashSet::default();
        let batch: Vec<&UserId> = targets.iter().filter(|t| seen.insert(t.as_str())).collect();
        let old: Vec<&UserId> =
            self.state.user(u).subscriptions().iter().map(|&t| self.state.user_name(t)).collect();
        // The new list: untouched old entries keep their order, then the batch, newest last.
        let mut list: Vec<&UserId> = old.iter().copied().filter(|t| !seen.contains(t.as_str())).collect();
        list.extend(batch.iter().copied());
        let excess = list.len().saturating_sub(self.config.max_subscriptions as usize);
        let (evicted, kept) = list.split_at(excess);

        let mut events = Vec::new();
        let evicted_old: Vec<UserId> =
            evicted.iter().filter(|t| old.contains(t)).map(|&t| t.clone()).collect();
        if !evicted_old.is_empty() {
            let reason = UnsubscribeReason::Evicted;
            events.push(EventKind::Unsubscribed { user: user.clone(), targets: evicted_old, reason });
        }
        if kept != old.as_slice() {
            let added = kept.iter().filter(|t| seen.contains(t.as_str())).map(|&t| t.clone()).collect();
            events.push(EventKind::Subscribed { user: user.clone(), targets: added });
        }
        Ok(Decision {
            events,
            reply: self.statuses(targets),
            effect: Effect::CountRateLimitedCall(u, Api::Subscribe),
        })
    }

    /// R4.4.
    fn unsubscribe(&self, user: &UserId, device: &DeviceId, targets: &[UserId]) -> Result<Decision, Error> {
        self.validate_ids(user, device)?;
        self.validate_targets(targets, 0, self.config.max_subscribe_batch, "unsubscribe")?;
        let (u, _) = self.connected_session(user, device)?;
        self.check_edition_feature_and_rate(u, Api::Unsubscribe, "unsubscribe")?;
        let list = &self.state.user(u).subscriptions();
        let removed: Vec<UserId> = if targets.is_empty() {
            list.iter().map(|&t| self.state.user_name(t).clone()).collect()
        } else {
            let mut seen = FxHashSet::default();
            targets
                .iter()
                .filter(|t| {
                    let key = self.state.user_key(t.as_str());
                    key.is_some_and(|k| list.contains(&k)) && seen.insert(t.as_str())
                })
                .cloned()
                .collect()
        };
        let events = if removed.is_empty() {
            Vec::new()
        } else {
            vec![EventKind::Unsubscribed {
                user: user.clone(),
                targets: removed,
                reason: UnsubscribeReason::Unsubscribed,
            }]
        };
        Ok(Decision { events, reply: Reply::Done, effect: Effect::CountRateLimitedCall(u, Api::Unsubscribe) })
    }
}

/// The events that disconnect the connected sessions of `owner` (or all of them) for
/// `reason`, as many as fit one batch of `bytes_budget` bytes and
/// [`DISCONNECT_SESSIONS_MAX`], in a reproducible order; and how many are left (R8.4, R8.5).
pub(crate) fn disconnect_events(
    state: &State,
    owner: Option<&str>,
    reason: DisconnectReason,
    bytes_budget: usize,
) -> (Vec<EventKind>, usize) {
    let sessions: Vec<(UserKey, DeviceKey)> = match owner {
        Some(owner) => {
            let mut sessions: Vec<_> = state.owners.sessions_of(owner).collect();
            // The map's order is arbitrary: disconnect in one that does not depend on it.
            let names = |&(u, d): &(UserKey, DeviceKey)| (state.user_name(u), state.device_name(d));
            sessions.sort_unstable_by(|a, b| names(a).cmp(&names(b)));
            sessions
        }
        None => state.connected_sessions().collect(),
    };
    let mut events = Vec::new();
    let mut bytes_left = bytes_budget;
    for &(u, d) in &sessions {
        let event = EventKind::SessionDisconnected {
            user: state.user_name(u).clone(),
            device: state.device_name(d).clone(),
            reason,
        };
        let bytes = codec::event_bytes_bound(&event);
        if events.len() >= DISCONNECT_SESSIONS_MAX || bytes > bytes_left {
            break;
        }
        bytes_left -= bytes;
        events.push(event);
    }
    let remaining = sessions.len() - events.len();
    (events, remaining)
}
