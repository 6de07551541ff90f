//! Where the runtime hands out notices, once their events are durable (R8.3).

use crossbeam_channel::{Receiver, Sender};
use presence_engine::{deliveries, Delivery, DeviceId, Names, Notice, UserId, UserStatus};

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
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
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
        /// Its version (R5.6).
        version: u64,
    },
    /// Tell `to`'s `device` that it was kicked (R5.5).
    Kicked {
        /// The recipient user.
        to: UserId,
        /// The kicked device.
        device: DeviceId,
    },
}

impl From<&Delivery<'_>> for OwnedDelivery {
    fn from(delivery: &Delivery<'_>) -> Self {
        match *delivery {
            Delivery::Status { to, device, about, status, version } => OwnedDelivery::Status {
                to: to.clone(),
                device: device.clone(),
                about: about.clone(),
                status: status.clone(),
                version,
            },
            Delivery::Kicked { to, device } => {
                OwnedDelivery::Kicked { to: to.clone(), device: device.clone() }
            }
        }
    }
}

/// A sink that sends each turn's deliveries as one `Vec` through a bounded channel. When the
/// channel is full the runtime waits, and so, in turn, do the command senders.
#[derive(Clone, Debug)]
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
        let batch: Vec<OwnedDelivery> =
            deliveries(notices, *names).map(|d| OwnedDelivery::from(&d)).collect();
        if !batch.is_empty() {
            // A host that dropped its receiver no longer wants notices.
            let _ = self.sender.send(batch);
        }
    }
}
