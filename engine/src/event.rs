//! The event log's vocabulary (R8.1).
//!
//! Events are facts, not requests: applying one never needs the configuration, so a log
//! replays the same way whatever the configuration is today. Events name users and devices
//! by their string ids, never by interned handles, so a log outlives the process that wrote
//! it. The encoding and its version live in [`crate::codec`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, OwnerId, UserId};

/// One fact in the log, with the engine time at which it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Engine time (milliseconds) of the command or tick that produced it (R1.3).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// What happened. New variants are only ever added at the end (the encoding numbers them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A login created a connected session or reconnected a disconnected one; its login time
    /// and heartbeat are set to `at_ms` (R2.1).
    SessionOpened {
        /// The user.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// The connection owner the host tagged the session with, if any (R8.5). Not in
        /// format 1, where every session has none.
        owner: Option<OwnerId>,
    },
    /// A connected session became disconnected (R2.2, R2.4).
    SessionDisconnected {
        /// The user.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A session was removed (R2.2, R2.5).
    SessionClosed {
        /// The user.
        user: UserId,
        /// The device.
        device: DeviceId,
        /// Why.
        reason: CloseReason,
    },
    /// The custom status was set; `""` clears it (R3.1). Clearing on the way offline (R3.3)
    /// is part of applying the session events and is not logged separately.
    CustomStatusSet {
        /// The user.
        user: UserId,
        /// The new value.
        custom: Arc<str>,
        /// The device that set it (R5.7). Not in format 1, where it is unknown.
        device: Option<DeviceId>,
    },
    /// Targets were added to (or moved to the newest end of) a subscription list, in this
    /// order (R4.2).
    Subscribed {
        /// The subscriber.
        user: UserId,
        /// The targets, oldest first.
        targets: Vec<UserId>,
    },
    /// Targets were removed from a subscription list (R4.3, R4.4, R4.5).
    Unsubscribed {
        /// The subscriber.
        user: UserId,
        /// The removed targets.
        targets: Vec<UserId>,
        /// Why.
        reason: UnsubscribeReason,
    },
    /// Two users became friends (R5.4).
    FriendAdded {
        /// One side.
        user: UserId,
        /// The other side.
        friend: UserId,
    },
    /// A friendship ended (R5.4).
    FriendRemoved {
        /// One side.
        user: UserId,
        /// The other side.
        friend: UserId,
    },
}

/// Why a session became disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisconnectReason {
    /// The host saw the connection close (R2.2).
    Disconnect,
    /// No heartbeat within `heartbeat_timeout_ms` (R2.4).
    HeartbeatTimeout,
    /// The engine was reopened with `RestoredSessions::Disconnect`: every socket died with
    /// the process before it (R8.4).
    Restart,
    /// The host disconnected every session of the session's connection owner, or every
    /// session, at once (R8.5).
    OwnerGone,
}

/// Why a session was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// The user logged out (R2.2).
    Logout,
    /// A login on another device exceeded `max_devices_per_user` (R2.5).
    Kicked,
}

/// Why targets left a subscription list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnsubscribeReason {
    /// The user unsubscribed (R4.4).
    Unsubscribed,
    /// The list went over `max_subscriptions` (R4.3).
    Evicted,
    /// The subscriber was not `ONLINE` for `subscription_retention_ms` (R4.5).
    Expired,
}

impl EventKind {
    /// The user whose state the event changes first (for friendships, `user`).
    pub fn user(&self) -> &UserId {
        match self {
            EventKind::SessionOpened { user, .. }
            | EventKind::SessionDisconnected { user, .. }
            | EventKind::SessionClosed { user, .. }
            | EventKind::CustomStatusSet { user, .. }
            | EventKind::Subscribed { user, .. }
            | EventKind::Unsubscribed { user, .. }
            | EventKind::FriendAdded { user, .. }
            | EventKind::FriendRemoved { user, .. } => user,
        }
    }

    /// The device the event is about, for the session events.
    pub fn device(&self) -> Option<&DeviceId> {
        match self {
            EventKind::SessionOpened { device, .. }
            | EventKind::SessionDisconnected { device, .. }
            | EventKind::SessionClosed { device, .. } => Some(device),
            _ => None,
        }
    }

    /// Whether the event changes its user's status version, and so may change its status
    /// pair (R5.1, R5.6): the session events and custom statuses.
    pub fn touches_status(&self) -> bool {
        matches!(
            self,
            EventKind::SessionOpened { .. }
                | EventKind::SessionDisconnected { .. }
                | EventKind::SessionClosed { .. }
                | EventKind::CustomStatusSet { .. }
        )
    }
}

/// A borrowed view of an [`Event`], with the same encoding: replay decodes batches into it
/// straight from the stored bytes, so ids that are already interned cost no allocation.
/// `apply` works on this view, live events included, so there is one fold for both.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct EventRef<'a> {
    pub at_ms: u64,
    #[serde(borrow)]
    pub kind: EventKindRef<'a>,
}

/// The borrowed twin of [`EventKind`]: same variants, same fields, same order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) enum EventKindRef<'a> {
    SessionOpened {
        user: &'a str,
        device: &'a str,
        owner: Option<&'a str>,
    },
    SessionDisconnected {
        user: &'a str,
        device: &'a str,
        reason: DisconnectReason,
    },
    SessionClosed {
        user: &'a str,
        device: &'a str,
        reason: CloseReason,
    },
    CustomStatusSet {
        user: &'a str,
        custom: &'a str,
        device: Option<&'a str>,
    },
    Subscribed {
        user: &'a str,
        #[serde(borrow)]
        targets: Vec<&'a str>,
    },
    Unsubscribed {
        user: &'a str,
        #[serde(borrow)]
        targets: Vec<&'a str>,
        reason: UnsubscribeReason,
    },
    FriendAdded {
        user: &'a str,
        friend: &'a str,
    },
    FriendRemoved {
        user: &'a str,
        friend: &'a str,
    },
}

impl EventRef<'_> {
    /// The event with owned ids.
    pub(crate) fn to_owned_event(&self) -> Event {
        let ids = |list: &[&str]| list.iter().map(|&t| UserId::from(t)).collect();
        let kind = match &self.kind {
            EventKindRef::SessionOpened { user, device, owner } => EventKind::SessionOpened {
                user: (*user).into(),
                device: (*device).into(),
                owner: owner.map(OwnerId::from),
            },
            EventKindRef::SessionDisconnected { user, device, reason } => EventKind::SessionDisconnected {
                user: (*user).into(),
                device: (*device).into(),
                reason: *reason,
            },
            EventKindRef::SessionClosed { user, device, reason } => {
                EventKind::SessionClosed { user: (*user).into(), device: (*device).into(), reason: *reason }
            }
            EventKindRef::CustomStatusSet { user, custom, device } => EventKind::CustomStatusSet {
                user: (*user).into(),
                custom: Arc::from(*custom),
                device: device.map(DeviceId::from),
            },
            EventKindRef::Subscribed { user, targets } => {
                EventKind::Subscribed { user: (*user).into(), targets: ids(targets) }
            }
            EventKindRef::Unsubscribed { user, targets, reason } => {
                EventKind::Unsubscribed { user: (*user).into(), targets: ids(targets), reason: *reason }
            }
            EventKindRef::FriendAdded { user, friend } => {
                EventKind::FriendAdded { user: (*user).into(), friend: (*friend).into() }
            }
            EventKindRef::FriendRemoved { user, friend } => {
                EventKind::FriendRemoved { user: (*user).into(), friend: (*friend).into() }
            }
        };
        Event { at_ms: self.at_ms, kind }
    }
}

impl Event {
    /// The borrowed view `apply` takes.
    pub(crate) fn as_ref(&self) -> EventRef<'_> {
        fn ids(list: &[UserId]) -> Vec<&str> {
            list.iter().map(UserId::as_str).collect()
        }
        let kind = match &self.kind {
            EventKind::SessionOpened { user, device, owner } => {
                EventKindRef::SessionOpened { user, device, owner: owner.as_deref() }
            }
            EventKind::SessionDisconnected { user, device, reason } => {
                EventKindRef::SessionDisconnected { user, device, reason: *reason }
            }
            EventKind::SessionClosed { user, device, reason } => {
                EventKindRef::SessionClosed { user, device, reason: *reason }
            }
            EventKind::CustomStatusSet { user, custom, device } => {
                EventKindRef::CustomStatusSet { user, custom, device: device.as_deref() }
            }
            EventKind::Subscribed { user, targets } => {
                EventKindRef::Subscribed { user, targets: ids(targets) }
            }
            EventKind::Unsubscribed { user, targets, reason } => {
                EventKindRef::Unsubscribed { user, targets: ids(targets), reason: *reason }
            }
            EventKind::FriendAdded { user, friend } => EventKindRef::FriendAdded { user, friend },
            EventKind::FriendRemoved { user, friend } => EventKindRef::FriendRemoved { user, friend },
        };
        EventRef { at_ms: self.at_ms, kind }
    }
}

/// Format 1's borrowed events, for stores written before sessions had owners: the same as
/// [`EventKindRef`] but for `SessionOpened`, which had no owner. Decoding a format 1 batch
/// reads these and upcasts them ([`legacy::EventRefV1::upcast`]).
pub(crate) mod legacy {
    use serde::Deserialize;

    use super::{CloseReason, DisconnectReason, EventKindRef, EventRef, UnsubscribeReason};

    #[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
    pub(crate) struct EventRefV1<'a> {
        pub at_ms: u64,
        #[serde(borrow)]
        pub kind: EventKindRefV1<'a>,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
    pub(crate) enum EventKindRefV1<'a> {
        SessionOpened {
            user: &'a str,
            device: &'a str,
        },
        SessionDisconnected {
            user: &'a str,
            device: &'a str,
            reason: DisconnectReason,
        },
        SessionClosed {
            user: &'a str,
            device: &'a str,
            reason: CloseReason,
        },
        CustomStatusSet {
            user: &'a str,
            custom: &'a str,
        },
        Subscribed {
            user: &'a str,
            #[serde(borrow)]
            targets: Vec<&'a str>,
        },
        Unsubscribed {
            user: &'a str,
            #[serde(borrow)]
            targets: Vec<&'a str>,
            reason: UnsubscribeReason,
        },
        FriendAdded {
            user: &'a str,
            friend: &'a str,
        },
        FriendRemoved {
            user: &'a str,
            friend: &'a str,
        },
    }

    impl<'a> EventRefV1<'a> {
        /// The event as format 2 reads it: a session opened in format 1 has no owner.
        pub(crate) fn upcast(self) -> EventRef<'a> {
            let kind = match self.kind {
                EventKindRefV1::SessionOpened { user, device } => {
                    EventKindRef::SessionOpened { user, device, owner: None }
                }
                EventKindRefV1::SessionDisconnected { user, device, reason } => {
                    EventKindRef::SessionDisconnected { user, device, reason }
                }
                EventKindRefV1::SessionClosed { user, device, reason } => {
                    EventKindRef::SessionClosed { user, device, reason }
                }
                EventKindRefV1::CustomStatusSet { user, custom } => {
                    EventKindRef::CustomStatusSet { user, custom, device: None }
                }
                EventKindRefV1::Subscribed { user, targets } => EventKindRef::Subscribed { user, targets },
                EventKindRefV1::Unsubscribed { user, targets, reason } => {
                    EventKindRef::Unsubscribed { user, targets, reason }
                }
                EventKindRefV1::FriendAdded { user, friend } => EventKindRef::FriendAdded { user, friend },
                EventKindRefV1::FriendRemoved { user, friend } => {
                    EventKindRef::FriendRemoved { user, friend }
                }
            };
            EventRef { at_ms: self.at_ms, kind }
        }
    }
}
