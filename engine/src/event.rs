//! The event log's vocabulary (R8.1).
//!
//! Events are facts, not requests: applying one never needs the configuration, so a log
//! replays the same way whatever the configuration is today. Events name users and devices
//! by their string ids, never by interned handles, so a log outlives the process that wrote
//! it. The encoding and its version live in [`crate::codec`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::{same_bytes, DeviceId, OwnerId, UserId};

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

/// A string of a borrowed event (an id, a custom status): bytes that are UTF-8, kept as
/// bytes. Replay finds an id that is already interned by its bytes, so it never needs the
/// `&str`; the decoder checks the bytes are UTF-8 (cheaply when they are ASCII, as ids
/// usually are) and only a new name pays for the conversion.
#[derive(Clone, Copy, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Text<'a>(&'a [u8]);

impl PartialEq for Text<'_> {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        same_bytes(self.0, other.0)
    }
}

impl<'a> Text<'a> {
    /// Bytes the caller has checked to be UTF-8: only the codec's decoder makes a `Text` from
    /// bytes, after checking them.
    pub(crate) fn from_checked_utf8(bytes: &'a [u8]) -> Self {
        debug_assert!(std::str::from_utf8(bytes).is_ok(), "a Text of bytes that are not UTF-8");
        Text(bytes)
    }

    pub(crate) fn as_bytes(self) -> &'a [u8] {
        self.0
    }

    /// The string. Converting checks the bytes again (they are UTF-8 by construction).
    pub(crate) fn as_str(self) -> &'a str {
        match std::str::from_utf8(self.0) {
            Ok(text) => text,
            Err(_) => unreachable!("a Text is made of UTF-8 only"),
        }
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(text: &'a str) -> Self {
        Text(text.as_bytes())
    }
}

impl AsRef<[u8]> for Text<'_> {
    fn as_ref(&self) -> &[u8] {
        self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A borrowed view of an [`Event`]: replay decodes batches into it straight from the stored
/// bytes (`codec`), so ids that are already interned cost no allocation. `apply` works on
/// this view, live events included, so there is one fold for both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EventRef<'a> {
    pub at_ms: u64,
    pub kind: EventKindRef<'a>,
}

/// The borrowed twin of [`EventKind`]: same variants, same fields, same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EventKindRef<'a> {
    SessionOpened { user: Text<'a>, device: Text<'a>, owner: Option<Text<'a>> },
    SessionDisconnected { user: Text<'a>, device: Text<'a>, reason: DisconnectReason },
    SessionClosed { user: Text<'a>, device: Text<'a>, reason: CloseReason },
    CustomStatusSet { user: Text<'a>, custom: Text<'a>, device: Option<Text<'a>> },
    Subscribed { user: Text<'a>, targets: Vec<Text<'a>> },
    Unsubscribed { user: Text<'a>, targets: Vec<Text<'a>>, reason: UnsubscribeReason },
    FriendAdded { user: Text<'a>, friend: Text<'a> },
    FriendRemoved { user: Text<'a>, friend: Text<'a> },
}

impl<'a> EventKindRef<'a> {
    /// The user the event is about.
    pub(crate) fn user(&self) -> Text<'a> {
        match self {
            EventKindRef::SessionOpened { user, .. }
            | EventKindRef::SessionDisconnected { user, .. }
            | EventKindRef::SessionClosed { user, .. }
            | EventKindRef::CustomStatusSet { user, .. }
            | EventKindRef::Subscribed { user, .. }
            | EventKindRef::Unsubscribed { user, .. }
            | EventKindRef::FriendAdded { user, .. }
            | EventKindRef::FriendRemoved { user, .. } => *user,
        }
    }

    /// Every user the event names: its user, then its targets or friend.
    pub(crate) fn users(&self) -> impl Iterator<Item = Text<'a>> + Clone + '_ {
        let others: &[Text<'a>] = match self {
            EventKindRef::Subscribed { targets, .. } | EventKindRef::Unsubscribed { targets, .. } => targets,
            EventKindRef::FriendAdded { friend, .. } | EventKindRef::FriendRemoved { friend, .. } => {
                std::slice::from_ref(friend)
            }
            _ => &[],
        };
        std::iter::once(self.user()).chain(others.iter().copied())
    }
}

impl EventRef<'_> {
    /// The event with owned ids.
    pub(crate) fn to_owned_event(&self) -> Event {
        let ids = |list: &[Text<'_>]| list.iter().map(|t| UserId::from(t.as_str())).collect();
        let kind = match &self.kind {
            EventKindRef::SessionOpened { user, device, owner } => EventKind::SessionOpened {
                user: user.as_str().into(),
                device: device.as_str().into(),
                owner: owner.map(|o| OwnerId::from(o.as_str())),
            },
            EventKindRef::SessionDisconnected { user, device, reason } => EventKind::SessionDisconnected {
                user: user.as_str().into(),
                device: device.as_str().into(),
                reason: *reason,
            },
            EventKindRef::SessionClosed { user, device, reason } => EventKind::SessionClosed {
                user: user.as_str().into(),
                device: device.as_str().into(),
                reason: *reason,
            },
            EventKindRef::CustomStatusSet { user, custom, device } => EventKind::CustomStatusSet {
                user: user.as_str().into(),
                custom: Arc::from(custom.as_str()),
                device: device.map(|d| DeviceId::from(d.as_str())),
            },
            EventKindRef::Subscribed { user, targets } => {
                EventKind::Subscribed { user: user.as_str().into(), targets: ids(targets) }
            }
            EventKindRef::Unsubscribed { user, targets, reason } => {
                EventKind::Unsubscribed { user: user.as_str().into(), targets: ids(targets), reason: *reason }
            }
            EventKindRef::FriendAdded { user, friend } => {
                EventKind::FriendAdded { user: user.as_str().into(), friend: friend.as_str().into() }
            }
            EventKindRef::FriendRemoved { user, friend } => {
                EventKind::FriendRemoved { user: user.as_str().into(), friend: friend.as_str().into() }
            }
        };
        Event { at_ms: self.at_ms, kind }
    }
}

impl Event {
    /// The borrowed view `apply` takes.
    pub(crate) fn as_ref(&self) -> EventRef<'_> {
        fn ids(list: &[UserId]) -> Vec<Text<'_>> {
            list.iter().map(|t| Text::from(t.as_str())).collect()
        }
        fn text(s: &str) -> Text<'_> {
            Text::from(s)
        }
        let kind = match &self.kind {
            EventKind::SessionOpened { user, device, owner } => EventKindRef::SessionOpened {
                user: text(user),
                device: text(device),
                owner: owner.as_deref().map(Text::from),
            },
            EventKind::SessionDisconnected { user, device, reason } => {
                EventKindRef::SessionDisconnected { user: text(user), device: text(device), reason: *reason }
            }
            EventKind::SessionClosed { user, device, reason } => {
                EventKindRef::SessionClosed { user: text(user), device: text(device), reason: *reason }
            }
            EventKind::CustomStatusSet { user, custom, device } => EventKindRef::CustomStatusSet {
                user: text(user),
                custom: text(custom),
                device: device.as_deref().map(Text::from),
            },
            EventKind::Subscribed { user, targets } => {
                EventKindRef::Subscribed { user: text(user), targets: ids(targets) }
            }
            EventKind::Unsubscribed { user, targets, reason } => {
                EventKindRef::Unsubscribed { user: text(user), targets: ids(targets), reason: *reason }
            }
            EventKind::FriendAdded { user, friend } => {
                EventKindRef::FriendAdded { user: text(user), friend: text(friend) }
            }
            EventKind::FriendRemoved { user, friend } => {
                EventKindRef::FriendRemoved { user: text(user), friend: text(friend) }
            }
        };
        EventRef { at_ms: self.at_ms, kind }
    }
}

/// The events of formats 1 and 2 as serde's derived code read them before the codec read
/// them by hand: the reference the codec's tests check its decoders against. Format 1 has no
/// `owner` in `SessionOpened` and no `device` in `CustomStatusSet`.
#[cfg(test)]
pub(crate) mod legacy {
    use serde::{Deserialize, Serialize};

    use super::{CloseReason, DisconnectReason, EventKindRef, EventRef, Text, UnsubscribeReason};

    #[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
    pub(crate) struct EventRefV2<'a> {
        pub at_ms: u64,
        #[serde(borrow)]
        pub kind: EventKindRefV2<'a>,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
    pub(crate) enum EventKindRefV2<'a> {
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

    impl<'a> EventRefV2<'a> {
        pub(crate) fn into_ref(self) -> EventRef<'a> {
            let t = Text::from;
            let ts = |list: Vec<&'a str>| list.into_iter().map(Text::from).collect();
            let kind = match self.kind {
                EventKindRefV2::SessionOpened { user, device, owner } => {
                    EventKindRef::SessionOpened { user: t(user), device: t(device), owner: owner.map(t) }
                }
                EventKindRefV2::SessionDisconnected { user, device, reason } => {
                    EventKindRef::SessionDisconnected { user: t(user), device: t(device), reason }
                }
                EventKindRefV2::SessionClosed { user, device, reason } => {
                    EventKindRef::SessionClosed { user: t(user), device: t(device), reason }
                }
                EventKindRefV2::CustomStatusSet { user, custom, device } => {
                    EventKindRef::CustomStatusSet { user: t(user), custom: t(custom), device: device.map(t) }
                }
                EventKindRefV2::Subscribed { user, targets } => {
                    EventKindRef::Subscribed { user: t(user), targets: ts(targets) }
                }
                EventKindRefV2::Unsubscribed { user, targets, reason } => {
                    EventKindRef::Unsubscribed { user: t(user), targets: ts(targets), reason }
                }
                EventKindRefV2::FriendAdded { user, friend } => {
                    EventKindRef::FriendAdded { user: t(user), friend: t(friend) }
                }
                EventKindRefV2::FriendRemoved { user, friend } => {
                    EventKindRef::FriendRemoved { user: t(user), friend: t(friend) }
                }
            };
            EventRef { at_ms: self.at_ms, kind }
        }
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub(crate) struct EventRefV1<'a> {
        pub at_ms: u64,
        #[serde(borrow)]
        pub kind: EventKindRefV1<'a>,
    }

    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
        /// The event as format 2 reads it: a session opened in format 1 has no owner, a
        /// custom status no device.
        pub(crate) fn upcast(self) -> EventRef<'a> {
            let kind = match self.kind {
                EventKindRefV1::SessionOpened { user, device } => {
                    EventKindRefV2::SessionOpened { user, device, owner: None }
                }
                EventKindRefV1::SessionDisconnected { user, device, reason } => {
                    EventKindRefV2::SessionDisconnected { user, device, reason }
                }
                EventKindRefV1::SessionClosed { user, device, reason } => {
                    EventKindRefV2::SessionClosed { user, device, reason }
                }
                EventKindRefV1::CustomStatusSet { user, custom } => {
                    EventKindRefV2::CustomStatusSet { user, custom, device: None }
                }
                EventKindRefV1::Subscribed { user, targets } => EventKindRefV2::Subscribed { user, targets },
                EventKindRefV1::Unsubscribed { user, targets, reason } => {
                    EventKindRefV2::Unsubscribed { user, targets, reason }
                }
                EventKindRefV1::FriendAdded { user, friend } => EventKindRefV2::FriendAdded { user, friend },
                EventKindRefV1::FriendRemoved { user, friend } => {
                    EventKindRefV2::FriendRemoved { user, friend }
                }
            };
            EventRefV2 { at_ms: self.at_ms, kind }.into_ref()
        }
    }
}
