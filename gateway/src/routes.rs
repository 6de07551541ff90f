//! Which socket serves each (user, device), and the [`NoticeSink`] that pushes each turn's
//! notices onto those sockets' bounded queues without ever blocking the runtime's thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use presence_cluster::wire::{NoticeBatch, NoticeOut};
use presence_engine::{DeviceId, Names, Notice, UserId, UserStatus};
use presence_runtime::NoticeSink;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::protocol::{self, CloseReason};
use crate::stats::Counters;

/// What a socket's writer is given.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A text frame: a notice (or a kick).
    Text(Utf8Bytes),
    /// A reply to one of the socket's own requests, holding its place in the socket's reply
    /// budget until it is written (connection.rs: replies never make a socket a slow reader).
    Reply(Utf8Bytes, OwnedSemaphorePermit),
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
        let mut delivery = Delivery::new(self.routes.lock(), &self.counters);
        for notice in notices {
            match notice {
                Notice::Status(change) => {
                    let text =
                        Utf8Bytes::from(protocol::notice(&change.about, &change.status, change.version));
                    for &recipient in &change.recipients {
                        let (user, device) = names.resolve(recipient);
                        delivery.send(user, device, std::iter::once(Outbound::Text(text.clone())));
                    }
                }
                // R5.5: the session is gone, so the socket has nothing left to serve.
                Notice::Kicked(recipient) => {
                    let (user, device) = names.resolve(*recipient);
                    delivery.send(user, device, kick());
                }
            }
        }
        delivery.finish();
    }
}

/// A kick's frames: told, then closed (4000).
fn kick() -> [Outbound; 2] {
    [Outbound::Text(Utf8Bytes::from(protocol::kicked())), Outbound::Close(CloseReason::Kicked)]
}

/// One batch of notices being queued on their sockets, under the routing lock, counted once
/// at the end.
struct Delivery<'a> {
    routes: RoutesGuard<'a>,
    counters: &'a Counters,
    queued: u64,
    unrouted: u64,
    dropped: u64,
}

impl<'a> Delivery<'a> {
    fn new(routes: RoutesGuard<'a>, counters: &'a Counters) -> Self {
        Delivery { routes, counters, queued: 0, unrouted: 0, dropped: 0 }
    }

    /// Queues `outs` on the socket of `user` on `device`, if it is served here; a full queue
    /// ends the socket (slow reader) and drops the rest, and the notice counts as dropped.
    fn send(&mut self, user: &str, device: &str, outs: impl IntoIterator<Item = Outbound>) {
        match self.routes.get(user, device) {
            Some(peer) => {
                let mut queued = true;
                for out in outs {
                    if !peer.push(out, self.counters) {
                        queued = false;
                        break;
                    }
                }
                match queued {
                    true => self.queued += 1,
                    false => self.dropped += 1,
                }
            }
            None => self.unrouted += 1,
        }
    }

    fn finish(self) {
        Counters::add(&self.counters.notices_queued, self.queued);
        Counters::add(&self.counters.notices_unrouted, self.unrouted);
        Counters::add(&self.counters.notices_dropped, self.dropped);
    }
}

/// Routes one batch of a cluster's notices for this gateway's devices
/// (`{deployment}.node.{node_id}.notices`) as the sink routes a local runtime's: the same
/// frames, the same slow-reader rule. A status notice for several devices is rendered once.
pub(crate) fn deliver_batch(routes: &Routes, counters: &Counters, batch: &NoticeBatch) {
    let mut delivery = Delivery::new(routes.lock(), counters);
    let mut rendered: Option<(&NoticeOut, Utf8Bytes)> = None;
    for notice in &batch.notices {
        match notice {
            NoticeOut::Status { to, device, about, status, custom, version, .. } => {
                let text = match &rendered {
                    Some((last, text)) if same_change(last, notice) => text.clone(),
                    _ => {
                        let user_status = UserStatus { general: *status, custom: Arc::from(custom.as_str()) };
                        let text = Utf8Bytes::from(protocol::notice(
                            &UserId::from(about.as_str()),
                            &user_status,
                            *version,
                        ));
                        rendered = Some((notice, text.clone()));
                        text
                    }
                };
                delivery.send(to, device, std::iter::once(Outbound::Text(text)));
            }
            NoticeOut::Kicked { to, device } => delivery.send(to, device, kick()),
        }
    }
    delivery.finish();
}

/// Whether two status notices tell of the same change (to different devices).
fn same_change(a: &NoticeOut, b: &NoticeOut) -> bool {
    match (a, b) {
        (
            NoticeOut::Status { about: a1, status: s1, custom: c1, version: v1, .. },
            NoticeOut::Status { about: a2, status: s2, custom: c2, version: v2, .. },
        ) => a1 == a2 && s1 == s2 && c1 == c2 && v1 == v2,
        _ => false,
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
    fn a_cluster_batch_is_routed_as_the_sink_routes_notices() {
        use presence_engine::{Cause, CauseKind, GeneralStatus};
        let (routes, counters) = (Routes::default(), Counters::default());
        let (phone, mut phone_queue) = peer(1, 4);
        let (pc, mut pc_queue) = peer(2, 1);
        {
            let mut table = routes.lock();
            table.insert(&UserId::from("alice"), &DeviceId::from("phone"), phone);
            table.insert(&UserId::from("carol"), &DeviceId::from("pc"), pc);
        }
        let status = |to: &str, device: &str, version| NoticeOut::Status {
            to: to.into(),
            device: device.into(),
            about: "bob".into(),
            status: GeneralStatus::Online,
            custom: "busy".into(),
            version,
            cause: Cause { kind: CauseKind::CustomStatus, device: Some(DeviceId::from("desk")) },
        };
        let batch = NoticeBatch {
            shard: 0,
            notices: vec![
                status("alice", "phone", 2),
                status("carol", "pc", 2),
                status("dave", "tablet", 2),
                status("carol", "pc", 3),
                NoticeOut::Kicked { to: "alice".into(), device: "phone".into() },
            ],
        };
        deliver_batch(&routes, &counters, &batch);
        let text = |out: Outbound| match out {
            Outbound::Text(text) | Outbound::Reply(text, _) => {
                serde_json::from_str::<serde_json::Value>(text.as_str()).unwrap()
            }
            Outbound::Close(reason) => serde_json::json!({"close": reason.code()}),
        };
        let expected = serde_json::json!({"notice": {"user": "bob", "status": "ONLINE", "custom": "busy", "version": 2}});
        assert_eq!(text(phone_queue.try_recv().unwrap()), expected);
        assert_eq!(text(phone_queue.try_recv().unwrap()), serde_json::json!({"kicked": true}));
        assert_eq!(text(phone_queue.try_recv().unwrap()), serde_json::json!({"close": 4000}));
        assert_eq!(text(pc_queue.try_recv().unwrap()), expected);
        assert!(pc_queue.try_recv().is_err(), "the second notice did not fit");
        let stats = counters.read();
        assert_eq!((stats.notices_queued, stats.notices_unrouted, stats.slow_readers_closed), (3, 1, 1));
        assert_eq!(stats.notices_dropped, 1, "the notice that did not fit");
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
