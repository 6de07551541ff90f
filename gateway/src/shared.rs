//! What every socket and HTTP handler of one gateway shares: the backend (the runtime's
//! handle, or a cluster client), the routing table, the secret, the settings, the counters
//! and the list of open sockets.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use presence_cluster::{AsyncClusterClient, ClientError};
use presence_engine::{Command, DeviceId, EngineView, OwnerId, Reply, SessionHandle, UserId};
use presence_runtime::{Handle, PendingReply, RuntimeError, TrySendError};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::config::GatewayConfig;
use crate::protocol::{CloseReason, Failure, ProtocolCode};
use crate::routes::{self, Ending, Routes};
use crate::stats::Counters;
use crate::token::Secret;

/// The state of one gateway.
pub(crate) struct Shared {
    pub backend: Backend,
    pub routes: Arc<Routes>,
    pub counters: Arc<Counters>,
    pub secret: Secret,
    pub config: GatewayConfig,
    /// The connection owner of every session logged in here (R8.5).
    pub node_id: OwnerId,
    /// Every open connection (plain HTTP or WebSocket), to count them against the caps and
    /// to end them all at shutdown.
    sockets: Mutex<Sockets>,
    shutting_down: AtomicBool,
    next_id: AtomicU64,
}

/// The open connections, from accept until they close.
#[derive(Default)]
struct Sockets {
    all: HashMap<u64, Arc<Place>>,
    /// The connections not logged in (plain HTTP ones included), oldest (lowest id) first:
    /// the ones a new connection may evict.
    anonymous: BTreeSet<u64>,
    /// Open connections by peer address (`max_connections_per_address`).
    per_address: HashMap<IpAddr, usize>,
    /// Connections evicted but not closed yet: in `all`, no longer counted against the caps.
    evicting: usize,
}

/// How many evicted connections may be closing at once; beyond it a connection that would
/// need one more eviction is refused instead, so that eviction cannot grow the descriptors in
/// use without bound while the evicted sockets finish closing.
pub(crate) const EVICTING_MAX: usize = 256;

/// One connection, from accept until it closes: how it is told to end, and what the
/// listener's frame guard and the upgrade need to know about it.
#[derive(Debug)]
pub(crate) struct Place {
    /// The connection's number, unique in this gateway (the socket's [`Peer`](routes::Peer) id).
    pub id: u64,
    /// How the connection is told to end (a WebSocket closes with the reason's code).
    pub ending: Ending,
    /// Its socket logged in: it no longer counts among the anonymous connections, and its
    /// frames are no longer held to `max_login_frame_bytes`.
    pub logged_in: AtomicBool,
    /// It was evicted to make room for a newer anonymous connection.
    evicted: AtomicBool,
    /// Requests its HTTP side has received (a WebSocket upgrade must be the first).
    pub requests: AtomicU64,
    /// Its WebSocket upgrade was accepted: bytes read from now on are WebSocket frames.
    pub upgraded: AtomicBool,
    /// A frame before login was longer than `max_login_frame_bytes`.
    pub frame_too_big: AtomicBool,
}

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open and none of them is anonymous (or too many are being
    /// evicted), or the gateway is shutting down.
    Full,
    /// `max_connections_per_address` are open from this address.
    Address,
}

/// A connection's place among the `max_connections`: given back when dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    address: IpAddr,
    pub place: Arc<Place>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut sockets = self.shared.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        let id = self.place.id;
        if sockets.all.remove(&id).is_some() && self.place.evicted.load(Ordering::Relaxed) {
            sockets.evicting = sockets.evicting.saturating_sub(1);
        }
        sockets.anonymous.remove(&id);
        if let Some(count) = sockets.per_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                sockets.per_address.remove(&self.address);
            }
        }
        drop(sockets);
        self.shared.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub fn new(
        backend: Backend,
        routes: Arc<Routes>,
        counters: Arc<Counters>,
        secret: Secret,
        config: GatewayConfig,
    ) -> Shared {
        let node_id = OwnerId::from(config.gateway.node_id.as_str());
        Shared {
            backend,
            routes,
            counters,
            secret,
            config,
            node_id,
            sockets: Mutex::new(Sockets::default()),
            shutting_down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        }
    }

    /// A place for a connection just accepted from `address`, or why not. Connections that
    /// have not logged in may hold at most `max_anonymous_connections` places: beyond that,
    /// or when all `max_connections` are taken, the oldest anonymous connection is evicted
    /// (closed, 1013) to make room, so that a flood of sockets that never log in cannot lock
    /// a real device out; logged-in devices are never evicted.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Refusal> {
        let gateway = &self.config.gateway;
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_shutting_down() {
            Counters::add(&self.counters.connections_refused, 1);
            return Err(Refusal::Full);
        }
        if sockets.per_address.get(&address).copied().unwrap_or(0) >= gateway.max_connections_per_address {
            Counters::add(&self.counters.connections_refused, 1);
            Counters::add(&self.counters.connections_refused_address, 1);
            return Err(Refusal::Address);
        }
        let counted = sockets.all.len().saturating_sub(sockets.evicting);
        if counted >= gateway.max_connections
            || sockets.anonymous.len() >= self.config.anonymous_connections_max()
        {
            let oldest = match sockets.evicting < EVICTING_MAX {
                true => sockets.anonymous.pop_first(),
                false => None,
            };
            let Some(place) = oldest.and_then(|id| sockets.all.get(&id).cloned()) else {
                Counters::add(&self.counters.connections_refused, 1);
                return Err(Refusal::Full);
            };
            place.evicted.store(true, Ordering::Relaxed);
            sockets.evicting += 1;
            routes::end(&place.ending, CloseReason::Crowded);
            Counters::add(&self.counters.connections_evicted, 1);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (ending, _) = watch::channel(None);
        let place = Arc::new(Place {
            id,
            ending: Arc::new(ending),
            logged_in: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            frame_too_big: AtomicBool::new(false),
        });
        sockets.all.insert(id, Arc::clone(&place));
        sockets.anonymous.insert(id);
        *sockets.per_address.entry(address).or_insert(0) += 1;
        Counters::add(&self.counters.connections_open, 1);
        Counters::add(&self.counters.connections_total, 1);
        Ok(Slot { shared: Arc::clone(self), address, place })
    }

    /// The socket of connection `id` logged in: it leaves the anonymous connections (it can
    /// no longer be evicted, and makes room for another anonymous one).
    pub fn logged_in(&self, id: u64) {
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        if sockets.anonymous.remove(&id) {
            if let Some(place) = sockets.all.get(&id) {
                place.logged_in.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Open connections (plain HTTP and WebSocket).
    pub fn open_sockets(&self) -> usize {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner).all.len()
    }

    /// Open connections by state: (not logged in, plain HTTP ones included; logged in).
    /// Evicted connections still closing count as neither.
    pub fn connections_by_state(&self) -> (usize, usize) {
        let sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        let anonymous = sockets.anonymous.len();
        let logged_in = sockets.all.len().saturating_sub(anonymous + sockets.evicting);
        (anonymous, logged_in)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Refuses new sockets and tells every open one to close (1001). Their sessions are not
    /// disconnected one by one: the server disconnects its owner's sessions in one command
    /// once they are gone.
    pub fn begin_shutdown(&self) {
        let sockets = {
            let sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
            self.shutting_down.store(true, Ordering::SeqCst);
            sockets.all.values().map(|place| Arc::clone(&place.ending)).collect::<Vec<_>>()
        };
        for ending in sockets {
            routes::end(&ending, CloseReason::GoingAway);
        }
    }

    /// Queues `command` without waiting and awaits its reply: `Busy` when the engine's queue
    /// (or, in a cluster, the requests in flight) is full (nothing was done), `Unavailable`
    /// when the runtime has stopped or no node serves the shard.
    pub async fn run(&self, command: Command) -> Result<Reply, Failure> {
        let pending = self.queue(command)?;
        pending.wait().await
    }

    /// Queues `command` without waiting.
    pub fn queue(&self, command: Command) -> Result<Pending, Failure> {
        match self.try_queue(command) {
            Ok(pending) => Ok(pending),
            Err(QueueError::Full) => {
                Counters::add(&self.counters.requests_shed, 1);
                Err(busy())
            }
            Err(QueueError::Stopped) => Err(unavailable()),
        }
    }

    /// Queues `command` without waiting, nothing counted.
    pub fn try_queue(&self, command: Command) -> Result<Pending, QueueError> {
        match &self.backend {
            Backend::Local(handle) => match handle.try_send(command) {
                Ok(pending) => Ok(Pending::Local(pending)),
                Err(TrySendError::Full(_)) => Err(QueueError::Full),
                Err(TrySendError::Stopped) => Err(QueueError::Stopped),
            },
            Backend::Cluster(cluster) => cluster.queue(command),
        }
    }

    /// The session's handle, for heartbeats by handle; `None` in a cluster, whose pings are
    /// heartbeats by ids.
    pub async fn session_handle(&self, user: &UserId, device: &DeviceId) -> Option<SessionHandle> {
        if let Backend::Cluster(_) = self.backend {
            return None;
        }
        let (u, d) = (user.clone(), device.clone());
        self.read(move |engine| engine.session_handle(&u, &d)).await.ok().flatten()
    }

    /// `user`'s friends (R5.4), from the engine or from the owner of the user's shard.
    pub async fn friends(&self, user: String) -> Result<Vec<UserId>, Failure> {
        match &self.backend {
            Backend::Local(_) => self.read(move |engine| engine.friends(&user)).await,
            Backend::Cluster(cluster) => {
                cluster.client.view(&user).await.map(|view| view.friends).map_err(|e| cluster_failure(&e))
            }
        }
    }

    /// A read between turns ([`Handle::read`]), queued from a blocking thread: the runtime's
    /// read queue is bounded and its `send` waits while it is full, which must not hold up
    /// an executor thread. Only for the local backend.
    async fn read<T, F>(&self, read: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&EngineView<'_>) -> T + Send + 'static,
    {
        let Backend::Local(handle) = &self.backend else { return Err(unavailable()) };
        let handle = handle.clone();
        let pending = tokio::task::spawn_blocking(move || handle.read(read))
            .await
            .map_err(|_| unavailable())?
            .map_err(|e| runtime_failure(&e))?;
        pending.await.map_err(|e| runtime_failure(&e))
    }
}

/// What carries out the gateway's commands.
pub(crate) enum Backend {
    /// The runtime of this process (`presence serve`).
    Local(Handle),
    /// The owners of the shards, over NATS (a gateway inside `presence node`).
    Cluster(Box<ClusterBackend>),
}

/// Why a command was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// No room: nothing was done.
    Full,
    /// The runtime has stopped.
    Stopped,
}

/// A queued command's reply, to await.
pub(crate) enum Pending {
    Local(PendingReply),
    Cluster(oneshot::Receiver<Result<Reply, Failure>>),
}

impl Pending {
    /// The reply, or why there is none.
    pub async fn wait(self) -> Result<Reply, Failure> {
        match self {
            Pending::Local(pending) => pending.await.map_err(|e| runtime_failure(&e)),
            Pending::Cluster(receiver) => receiver.await.unwrap_or_else(|_| Err(unavailable())),
        }
    }
}

/// The commands of one device that claim or release it, in flight: each waits for the one
/// before it, so that the shard's owner sees them in the order the routing table made them.
type Claims = Arc<Mutex<HashMap<(UserId, DeviceId), watch::Receiver<bool>>>>;

/// Commands sent to the owners of their shards, each on a task of its own; at most
/// `in_flight` at once, beyond which requests are answered `Busy` as a full queue is.
pub(crate) struct ClusterBackend {
    pub client: AsyncClusterClient,
    in_flight: Arc<Semaphore>,
    claims: Claims,
}

impl ClusterBackend {
    pub fn new(client: AsyncClusterClient, in_flight: usize) -> ClusterBackend {
        ClusterBackend {
            client,
            in_flight: Arc::new(Semaphore::new(in_flight.max(1))),
            claims: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Sends `command` on a task of its own, never waiting here (it is called under the
    /// routing lock). A login, logout or disconnect goes after the device's previous one.
    fn queue(&self, command: Command) -> Result<Pending, QueueError> {
        let permit = Arc::clone(&self.in_flight).try_acquire_owned().map_err(|e| match e {
            tokio::sync::TryAcquireError::NoPermits => QueueError::Full,
            tokio::sync::TryAcquireError::Closed => QueueError::Stopped,
        })?;
        let key = match &command {
            Command::Login { user, device, .. }
            | Command::Logout { user, device }
            | Command::Disconnect { user, device } => Some((user.clone(), device.clone())),
            _ => None,
        };
        let claim = key.map(|key| {
            let (done, mine) = watch::channel(false);
            let previous =
                self.claims.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), mine.clone());
            (key, done, mine, previous)
        });
        let (reply, replied) = oneshot::channel();
        let client = self.client.clone();
        let claims = Arc::clone(&self.claims);
        tokio::spawn(async move {
            let claim = match claim {
                Some((key, done, mine, previous)) => {
                    if let Some(mut previous) = previous {
                        // Err: the one before is gone (its task ended); nothing to wait for.
                        let _ = previous.wait_for(|done| *done).await;
                    }
                    Some((key, done, mine))
                }
                None => None,
            };
            let result = client.execute(command, None).await.map_err(|e| cluster_failure(&e));
            let _ = reply.send(result);
            if let Some((key, done, mine)) = claim {
                let _ = done.send(true);
                let mut claims = claims.lock().unwrap_or_else(PoisonError::into_inner);
                if claims.get(&key).is_some_and(|last| last.same_channel(&mine)) {
                    claims.remove(&key);
                }
            }
            drop(permit);
        });
        Ok(Pending::Cluster(replied))
    }
}

/// The reply to a request the cluster did not carry out.
pub(crate) fn cluster_failure(error: &ClientError) -> Failure {
    match error {
        ClientError::Refused { code, message } => {
            Failure::refused(*code, engine_error_name(*code), message.clone())
        }
        ClientError::Unavailable(why) => Failure::new(
            ProtocolCode::Unavailable,
            format!("no node serves this user's shard now: nothing was done; try again shortly ({why})"),
        ),
        ClientError::Unknown(why) => Failure::new(
            ProtocolCode::Unavailable,
            format!("the cluster did not answer in time: it may or may not have been done ({why})"),
        ),
    }
}

/// The name of an engine error's code (R7.1), as the local gateway gives it.
fn engine_error_name(code: u32) -> &'static str {
    match code {
        6014 => "NotLoggedIn",
        7008 => "RateLimited",
        7013 => "EditionNotSupported",
        72001 => "FeatureNotEnabled",
        9000 => "Storage",
        _ => "InvalidParameter",
    }
}

pub(crate) fn busy() -> Failure {
    Failure::new(ProtocolCode::Busy, "the server is busy: nothing was done; try again shortly")
}

pub(crate) fn unavailable() -> Failure {
    Failure::new(ProtocolCode::Unavailable, "the server is shutting down: nothing was done")
}

/// The reply to a request the runtime did not carry out.
pub(crate) fn runtime_failure(error: &RuntimeError) -> Failure {
    match error {
        RuntimeError::Refused(e) => Failure::engine(e),
        RuntimeError::Full => busy(),
        _ => unavailable(),
    }
}
