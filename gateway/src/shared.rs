//! What every socket and HTTP handler of one gateway shares: the runtime's handle, the
//! routing table, the secret, the settings, the counters and the list of open sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use presence_engine::runtime::{Handle, PendingReply, RuntimeError, TrySendError};
use presence_engine::{Command, EngineView, OwnerId, Reply};

use crate::config::GatewayConfig;
use crate::protocol::{CloseReason, Failure, ProtocolCode};
use crate::routes::{self, Ending, Routes};
use crate::stats::Counters;
use crate::token::Secret;

/// The state of one gateway.
pub(crate) struct Shared {
    pub handle: Handle,
    pub routes: Arc<Routes>,
    pub counters: Arc<Counters>,
    pub secret: Secret,
    pub config: GatewayConfig,
    /// The connection owner of every session logged in here (R8.5).
    pub node_id: OwnerId,
    /// Every open socket, to end them all at shutdown.
    sockets: Mutex<HashMap<u64, Ending>>,
    shutting_down: AtomicBool,
    next_id: AtomicU64,
}

/// A socket's place among the `max_connections`: given back when dropped.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    pub id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.sockets.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
        self.shared.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    pub fn new(
        handle: Handle,
        routes: Arc<Routes>,
        counters: Arc<Counters>,
        secret: Secret,
        config: GatewayConfig,
    ) -> Shared {
        let node_id = OwnerId::from(config.gateway.node_id.as_str());
        Shared {
            handle,
            routes,
            counters,
            secret,
            config,
            node_id,
            sockets: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
        }
    }

    /// A place for a new socket, unless `max_connections` are open or the gateway is
    /// shutting down.
    pub fn reserve(self: &Arc<Self>, ending: Ending) -> Option<Slot> {
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_shutting_down() || sockets.len() >= self.config.gateway.max_connections {
            Counters::add(&self.counters.connections_refused, 1);
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        sockets.insert(id, ending);
        Counters::add(&self.counters.connections_open, 1);
        Counters::add(&self.counters.connections_total, 1);
        Some(Slot { shared: Arc::clone(self), id })
    }

    /// Open sockets.
    pub fn open_sockets(&self) -> usize {
        self.sockets.lock().unwrap_or_else(PoisonError::into_inner).len()
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
            sockets.values().cloned().collect::<Vec<_>>()
        };
        for ending in sockets {
            routes::end(&ending, CloseReason::GoingAway);
        }
    }

    /// Queues `command` without waiting and awaits its reply: `Busy` when the engine's queue
    /// is full (nothing was done), `Unavailable` when the runtime has stopped.
    pub async fn run(&self, command: Command) -> Result<Reply, Failure> {
        let pending = self.queue(command)?;
        pending.await.map_err(|e| runtime_failure(&e))
    }

    /// Queues `command` without waiting.
    pub fn queue(&self, command: Command) -> Result<PendingReply, Failure> {
        match self.handle.try_send(command) {
            Ok(pending) => Ok(pending),
            Err(TrySendError::Full(_)) => {
                Counters::add(&self.counters.requests_shed, 1);
                Err(busy())
            }
            Err(TrySendError::Stopped) => Err(unavailable()),
        }
    }

    /// A read between turns ([`Handle::read`]), queued from a blocking thread: the runtime's
    /// read queue is bounded and its `send` waits while it is full, which must not hold up
    /// an executor thread.
    pub async fn read<T, F>(&self, read: F) -> Result<T, Failure>
    where
        T: Send + 'static,
        F: FnOnce(&EngineView<'_>) -> T + Send + 'static,
    {
        let handle = self.handle.clone();
        let pending = tokio::task::spawn_blocking(move || handle.read(read))
            .await
            .map_err(|_| unavailable())?
            .map_err(|e| runtime_failure(&e))?;
        pending.await.map_err(|e| runtime_failure(&e))
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
