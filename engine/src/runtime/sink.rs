//! Where the runtime hands out notices, once their events are durable (R8.3).

use crossbeam_channel::{Receiver, Sender};

use crate::command::{Notice, Recipient};
use crate::ids::{DeviceId, UserId};
use crate::state::State;
use crate::status::UserStatus;

/// Resolves the recipient handles of notices to names, during [`NoticeSink::deliver`].
pub struct Names<'a> {
    pub(crate) state: &'a State,
}

impl Names<'_> {
    /// The user and device behind a recipient.
    pub fn resolve(&self, recipient: Recipient) -> (&UserId, &DeviceId) {
        (self.state.user_name(recipient.user), self.state.device_name(recipient.device))
    }
}

/// The host's side of notice delivery. Called on the runtime thread, after the turn's events
/// are durable, with every notice of the turn. A slow sink slows the runtime, which pushes
/// back on the command senders through the bounded command queue; nothing queues without
/// bound. A panic in `deliver` is caught: the turn's events are already durable and the
/// runtime goes on (the notices of that turn are lost to the sink).
pub trait NoticeSink: Send + 'static {
    /// Delivers one turn's notices.
    fn deliver(&mut self, notices: &[Notice], names: &Names<'_>);
}

/// A sink that drops everything (for loads that only measure).
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardSink;

impl NoticeSink for DiscardSink {
    fn deliver(&mut self, _notices: &[Notice], _names: &Names<'_>) {}
}

/// One notice for one device, with owned names: what [`ChannelSink`] sends.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OwnedDelivery {
    /// Tell `to`'s `device` that `about` now has `status`.
    Status {
        /// The recipient user.
        to: UserId,
        /// The recipient device.
        device: DeviceId,
        /// The user whose status changed.
        about: UserId,
        /// Its new status.
        status: UserStatus,
    },
    /// Tell `to`'s `device` that it was kicked (R5.5).
    Kicked {
        /// The recipient user.
        to: UserId,
        /// The kicked device.
        device: DeviceId,
    },
}

/// A sink that sends each turn's deliveries as one `Vec` through a bounded channel. When the
/// channel is full the runtime waits, and so, in turn, do the command senders.
#[derive(Debug)]
pub struct ChannelSink {
    sender: Sender<Vec<OwnedDelivery>>,
}

impl ChannelSink {
    /// A sink and the receiver the host reads from; at most `capacity` turns are queued.
    pub fn bounded(capacity: usize) -> (Self, Receiver<Vec<OwnedDelivery>>) {
        let (sender, receiver) = crossbeam_channel::bounded(capacity);
        (Self { sender }, receiver)
    }
}

impl NoticeSink for ChannelSink {
    fn deliver(&mut self, notices: &[Notice], names: &Names<'_>) {
        let mut batch = Vec::new();
        for notice in notices {
            match notice {
                Notice::Status(n) => batch.extend(n.recipients.iter().map(|&r| {
                    let (to, device) = names.resolve(r);
                    OwnedDelivery::Status {
                        to: to.clone(),
                        device: device.clone(),
                        about: n.about.clone(),
                        status: n.status.clone(),
                    }
                })),
                Notice::Kicked(r) => {
                    let (to, device) = names.resolve(*r);
                    batch.push(OwnedDelivery::Kicked { to: to.clone(), device: device.clone() });
                }
            }
        }
        if !batch.is_empty() {
            // A host that dropped its receiver no longer wants notices.
            let _ = self.sender.send(batch);
        }
    }
}
