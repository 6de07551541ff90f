//! Which socket serves each (user, device), and the [`NoticeSink`] that pushes each turn's
//! notices onto those sockets' bounded queues without ever blocking the runtime's thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use presence_engine::runtime::NoticeSink;
use presence_engine::{DeviceId, Names, Notice, Recipient, UserId};
use tokio::sync::{mpsc, watch};

use crate::protocol::{self, CloseReason};
use crate::stats::Counters;

/// What a socket's writer is given.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A text frame: a reply or a notice.
    Text(Utf8Bytes),
    /// Close the socket with this reason, after what was queued before.
    Close(CloseReason),
}

/// How a socket is told to end: the first reason set wins; its reader and writer both watch.
pub(crate) type Ending = Arc<watch::Sender<Option<CloseReason>>>;

/// Sets `reason` unless the socket is already ending; says whether it was the first.
pub(crate) fn end(ending: &watch::Sender<Option<CloseReason>>, reason: CloseReason) -> bool {
    ending.send_if_modified(|current| match current {
        Some(_) => false,
        None => {
            *current = Some(reason);
            true
        }
    })
}

/// The sending side of one socket.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// The connection's number, unique in this gateway.
    pub id: u64,
    pub outbound: mpsc::Sender<Outbound>,
    pub ending: Ending,
}

impl Peer {
    /// Queues `out` without waiting. A full queue means the client reads slower than it is
    /// told things: the socket is closed (4002) rather than the notice dropped, since a client
    /// that silently missed a change would show a wrong presence with no way to know, while a
    /// closed one reconnects and reads the statuses again (a subscribe returns them, R4.6).
    /// Returns whether it was queued.
    pub fn push(&self, out: Outbound, counters: &Counters) -> bool {
        match self.outbound.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if end(&self.ending, CloseReason::SlowReader) {
                    Counters::add(&counters.slow_readers_closed, 1);
                }
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Tells the socket to end now, whatever is queued.
    pub fn end(&self, reason: CloseReason) {
        end(&self.ending, reason);
    }
}

/// The routing table: user -> its devices served here, each with its socket. Keyed by the
/// user, then the device, so that the sink looks recipients up by `&str` without cloning.
///
/// The lock also orders claims: a socket queues its `login`, `logout` or `disconnect` while
/// it holds the lock (with `try_send`, which never waits), so the runtime sees those commands
/// in the order the claims were made, and a socket that closes just as its device reconnects
/// on another one cannot disconnect the new session. The runtime's thread takes the lock only
/// in the sink, and nothing waits while holding it.
#[derive(Debug, Default)]
pub(crate) struct Routes {
    map: Mutex<HashMap<UserId, Vec<(DeviceId, Peer)>>>,
}

/// The routing table, locked.
pub(crate) struct RoutesGuard<'a>(MutexGuard<'a, HashMap<UserId, Vec<(DeviceId, Peer)>>>);

impl Routes {
    pub fn lock(&self) -> RoutesGuard<'_> {
        // A panic while the lock was held leaves a map of plain values, still usable.
        RoutesGuard(self.map.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl RoutesGuard<'_> {
    /// The socket serving `user` on `device`.
    pub fn get(&self, user: &str, device: &str) -> Option<&Peer> {
        self.0.get(user)?.iter().find(|(d, _)| d.as_str() == device).map(|(_, peer)| peer)
    }

    /// Routes `user` on `device` to `peer`; returns the socket it replaces.
    pub fn insert(&mut self, user: &UserId, device: &DeviceId, peer: Peer) -> Option<Peer> {
        let devices = self.0.entry(user.clone()).or_default();
        match devices.iter_mut().find(|(d, _)| d == device) {
            Some((_, slot)) => Some(std::mem::replace(slot, peer)),
            None => {
                devices.push((device.clone(), peer));
                None
            }
        }
    }

    /// Whether connection `id` serves `user` on `device`.
    pub fn is(&self, user: &str, device: &str, id: u64) -> bool {
        self.get(user, device).is_some_and(|peer| peer.id == id)
    }

    /// Removes the route if connection `id` holds it; says whether it did.
    pub fn remove(&mut self, user: &str, device: &str, id: u64) -> bool {
        let Some(devices) = self.0.get_mut(user) else { return false };
        let Some(at) = devices.iter().position(|(d, peer)| d.as_str() == device && peer.id == id) else {
            return false;
        };
        devices.swap_remove(at);
        if devices.is_empty() {
            self.0.remove(user);
        }
        true
    }

    /// How many devices are routed.
    pub fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

/// The runtime's [`NoticeSink`]: each status notice is rendered once and queued on the socket
/// of each recipient; a kick is queued with the close that follows it.
pub(crate) struct RouteSink {
    pub routes: Arc<Routes>,
    pub counters: Arc<Counters>,
}

impl NoticeSink for RouteSink {
    fn deliver(&mut self, notices: &[Notice], names: &Names<'_>) {
        let routes = self.routes.lock();
        let (mut queued, mut unrouted) = (0, 0);
        let mut send = |recipient: Recipient, outs: &mut dyn Iterator<Item = Outbound>| {
            let (user, device) = names.resolve(recipient);
            match routes.get(user, device) {
                Some(peer) => {
                    for out in outs {
                        if !peer.push(out, &self.counters) {
                            break;
                        }
                    }
                    queued += 1;
                }
                None => unrouted += 1,
            }
        };
        for notice in notices {
            match notice {
                Notice::Status(change) => {
                    let text =
                        Utf8Bytes::from(protocol::notice(&change.about, &change.status, change.version));
                    for &recipient in &change.recipients {
                        send(recipient, &mut std::iter::once(Outbound::Text(text.clone())));
                    }
                }
                // R5.5: the session is gone, so the socket has nothing left to serve.
                Notice::Kicked(recipient) => {
                    let kick = [
                        Outbound::Text(Utf8Bytes::from(protocol::kicked())),
                        Outbound::Close(CloseReason::Kicked),
                    ];
                    send(*recipient, &mut kick.into_iter());
                }
            }
        }
        Counters::add(&self.counters.notices_queued, queued);
        Counters::add(&self.counters.notices_unrouted, unrouted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, capacity: usize) -> (Peer, mpsc::Receiver<Outbound>) {
        let (outbound, queue) = mpsc::channel(capacity);
        let (ending, _) = watch::channel(None);
        (Peer { id, outbound, ending: Arc::new(ending) }, queue)
    }

    #[test]
    fn a_full_queue_ends_the_socket_as_a_slow_reader_once() {
        let counters = Counters::default();
        let (slow, _queue) = peer(1, 2);
        assert!(slow.push(Outbound::Text("a".into()), &counters));
        assert!(slow.push(Outbound::Text("b".into()), &counters));
        assert!(!slow.push(Outbound::Text("c".into()), &counters));
        assert!(!slow.push(Outbound::Text("d".into()), &counters));
        assert_eq!(*slow.ending.borrow(), Some(CloseReason::SlowReader));
        assert_eq!(counters.read().slow_readers_closed, 1);
        slow.end(CloseReason::Replaced);
        assert_eq!(*slow.ending.borrow(), Some(CloseReason::SlowReader), "the first reason stays");
    }

    #[test]
    fn routes_belong_to_one_connection_at_a_time() {
        let routes = Routes::default();
        let (first, _q1) = peer(1, 1);
        let (second, _q2) = peer(2, 1);
        let (alice, phone) = (UserId::from("alice"), DeviceId::from("phone"));
        let mut table = routes.lock();
        assert!(table.insert(&alice, &phone, first).is_none());
        assert!(table.is("alice", "phone", 1));
        let replaced = table.insert(&alice, &phone, second).unwrap();
        assert_eq!(replaced.id, 1);
        assert!(!table.remove("alice", "phone", 1), "the old connection no longer holds it");
        assert!(table.is("alice", "phone", 2));
        assert_eq!(table.len(), 1);
        assert!(table.remove("alice", "phone", 2));
        assert_eq!(table.len(), 0);
        assert!(table.get("alice", "phone").is_none());
    }
}
