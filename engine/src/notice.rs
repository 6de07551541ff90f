//! What the host must push to devices: notices as the engine makes them (shared statuses and
//! interned recipient handles), and the flat, named deliveries a host sends.
//!
//! A status change fanned out to 100 000 devices is one [`StatusNotice`] holding one shared
//! [`UserStatus`] and 100 000 eight-byte [`Recipient`]s; [`deliveries`] turns notices into
//! one [`Delivery`] per device, with names, only when the host asks.

use crate::change::Cause;
use crate::ids::{DeviceId, DeviceKey, OwnerId, UserId, UserKey};
use crate::state::{Interner, Owners};
use crate::status::UserStatus;

/// One connected device that must be told something, as interned handles. Resolve it to
/// strings with [`Names::resolve`] (or [`Engine::resolve`](crate::Engine::resolve)), or
/// iterate [`deliveries`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Recipient {
    /// The user that owns the device.
    pub user: UserKey,
    /// The device.
    pub device: DeviceKey,
}

/// What the host must push to devices after a command or tick (R5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A user's status changed (R5.1): one shared status value and every recipient device.
    Status(StatusNotice),
    /// This device's session was removed by a login on another device (R2.5, R5.5).
    Kicked(Recipient),
}

/// A status change and the devices that must hear about it (R5.1-R5.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusNotice {
    /// The user whose status changed.
    pub about: UserId,
    /// Its new status.
    pub status: UserStatus,
    /// The status's version (R5.6): a device keeps the status with the highest version it has
    /// seen for a user, so a reply and a notice that arrive out of order never leave it stale.
    pub version: u64,
    /// What changed it (R5.7): for a server-side sink (offline push, webhooks), not for devices.
    pub cause: Cause,
    /// Each connected device of each interested user, once (R5.2, R5.3).
    pub recipients: Vec<Recipient>,
}

/// One notice for one device, with names resolved: the flat view hosts and traces use.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Delivery<'a> {
    /// Tell `to`'s `device` that `about` now has `status`.
    Status {
        /// The recipient user.
        to: &'a UserId,
        /// The recipient device.
        device: &'a DeviceId,
        /// The user whose status changed.
        about: &'a UserId,
        /// The new status.
        status: &'a UserStatus,
        /// Its version (R5.6).
        version: u64,
    },
    /// Tell `to`'s `device` that its session was kicked.
    Kicked {
        /// The recipient user.
        to: &'a UserId,
        /// The kicked device.
        device: &'a DeviceId,
    },
}

/// Resolves recipient handles to names. It borrows only the engine's name tables, so a
/// host's notice sink (presence-runtime's `NoticeSink`) can hold it while the engine waits.
#[derive(Clone, Copy)]
pub struct Names<'a> {
    users: &'a Interner<UserId>,
    devices: &'a Interner<DeviceId>,
    owners: &'a Owners,
}

impl<'a> Names<'a> {
    pub(crate) fn new(
        users: &'a Interner<UserId>,
        devices: &'a Interner<DeviceId>,
        owners: &'a Owners,
    ) -> Self {
        Self { users, devices, owners }
    }

    /// The connection owner (R8.5) of a recipient's session, if its login named one: the
    /// node that holds the device's socket, where a cluster sends the notice.
    pub fn owner(&self, recipient: Recipient) -> Option<&'a OwnerId> {
        self.owners.get(recipient.user, recipient.device)
    }

    /// The user and device behind a recipient.
    ///
    /// # Panics
    /// If `recipient` did not come from a notice of this engine.
    pub fn resolve(&self, recipient: Recipient) -> (&'a UserId, &'a DeviceId) {
        (self.users.name(recipient.user.0), self.devices.name(recipient.device.0))
    }
}

/// Every single delivery of `notices`, in order, with names resolved: one per recipient
/// device of each status notice, one per kick.
pub fn deliveries<'a>(notices: &'a [Notice], names: Names<'a>) -> impl Iterator<Item = Delivery<'a>> + 'a {
    notices.iter().flat_map(move |notice| {
        let (status, kicked) = match notice {
            Notice::Status(n) => (Some(n), None),
            Notice::Kicked(r) => (None, Some(*r)),
        };
        let statuses = status.into_iter().flat_map(move |n| {
            n.recipients.iter().map(move |&r| {
                let (to, device) = names.resolve(r);
                Delivery::Status { to, device, about: &n.about, status: &n.status, version: n.version }
            })
        });
        let kicks = kicked.into_iter().map(move |r| {
            let (to, device) = names.resolve(r);
            Delivery::Kicked { to, device }
        });
        statuses.chain(kicks)
    })
}

/// How many single deliveries `notices` make: what [`deliveries`] yields, without resolving.
pub fn delivery_count(notices: &[Notice]) -> usize {
    notices
        .iter()
        .map(|n| match n {
            Notice::Status(s) => s.recipients.len(),
            Notice::Kicked(_) => 1,
        })
        .sum()
}
