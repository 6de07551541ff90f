//! The gateway as a whole: it opens the engine (disconnecting the sessions of the previous
//! process, R8.4), runs it on the runtime thread with the routing sink, serves HTTP and
//! WebSockets until told to stop, then drains and syncs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use presence_cluster::wire::NoticeBatch;
use presence_cluster::AsyncClusterClient;
use presence_engine::{Command, Engine, EngineOptions, EventStore, Reply, RestoredSessions};
use presence_runtime::{Clock, Handle, Runtime, SystemClock};
use tokio::net::TcpListener;

use crate::config::GatewayConfig;
use crate::http;
use crate::listener;
use crate::routes::{self, RouteSink, Routes};
use crate::shared::{Backend, ClusterBackend, QueueError, Shared};
use crate::stats::{Counters, GatewayStats};
use crate::token::Secret;

/// How often the shutdown looks whether every socket has ended, and retries a disconnect the
/// full queue refused.
const SHUTDOWN_POLL: Duration = Duration::from_millis(10);

/// Why the gateway could not start or stop cleanly.
#[derive(Debug)]
#[non_exhaustive]
pub enum GatewayError {
    /// The configuration is invalid.
    Config(String),
    /// The engine failed to open, or its store failed (code 9000).
    Engine(presence_engine::Error),
    /// The listener or the async runtime failed.
    Io(std::io::Error),
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GatewayError::Config(m) => write!(f, "bad configuration: {m}"),
            GatewayError::Engine(e) => write!(f, "engine: {e}"),
            GatewayError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GatewayError {}

impl From<std::io::Error> for GatewayError {
    fn from(e: std::io::Error) -> Self {
        GatewayError::Io(e)
    }
}

/// What a gateway did, from opening to stopping.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Sessions of the previous process disconnected when the engine opened (R8.4).
    pub restored_sessions_disconnected: u64,
    /// This gateway's sessions disconnected at shutdown, in one command per 65 536 (R8.5).
    pub sessions_disconnected_at_shutdown: u64,
    /// The counters as they were at the end.
    pub stats: GatewayStats,
}

/// A gateway over the presence runtime, opened and ready to serve.
pub struct Gateway<S> {
    runtime: Runtime<S>,
    handle: Handle,
    shared: Arc<Shared>,
    restored_sessions_disconnected: u64,
}

impl<S: EventStore + Send + 'static> Gateway<S> {
    /// Opens the engine over `store` and starts its runtime thread. Sessions the store says
    /// are connected belonged to sockets that died with the previous process: they are
    /// disconnected now (R8.4), logged with reason `restart`.
    ///
    /// Call it outside an async context if the store must not be used from one (the NATS
    /// store refuses).
    pub fn open(store: S, config: GatewayConfig, secret: Secret) -> Result<Gateway<S>, GatewayError> {
        config.validate().map_err(|e| GatewayError::Config(e.to_string()))?;
        let restart = RestoredSessions::Disconnect { at_ms: SystemClock.now_ms() };
        let options = EngineOptions { restored_sessions: restart, ..EngineOptions::default() };
        let engine =
            Engine::open_with(config.engine.clone(), store, options).map_err(GatewayError::Engine)?;
        let restored_sessions_disconnected = engine.recovery().sessions_disconnected;
        let routes = Arc::new(Routes::default());
        let counters = Arc::new(Counters::default());
        let sink = RouteSink { routes: Arc::clone(&routes), counters: Arc::clone(&counters) };
        let (runtime, handle) = Runtime::spawn(engine, SystemClock, sink, config.runtime.runtime_config());
        let backend = Backend::Local(handle.clone());
        let shared = Arc::new(Shared::new(backend, routes, counters, secret, config));
        Ok(Gateway { runtime, handle, shared, restored_sessions_disconnected })
    }

    /// The runtime's handle: the host's own commands, direct reads (R6.4) and statistics.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The gateway's counters.
    pub fn stats(&self) -> GatewayStats {
        self.shared.counters.read()
    }

    /// Serves `listener` until `shutdown` completes; then refuses new sockets, closes the
    /// open ones (1001), disconnects this node's sessions (R8.5), runs what is queued, syncs,
    /// and stops the runtime.
    ///
    /// Should the runtime stop by itself (a failed sync: docs/DESIGN.md, "When the store
    /// fails"), serving ends at once the same way, and this returns
    /// [`GatewayError::Engine`] with the cause: the host should exit, so that a supervisor
    /// starts it again and the next open disconnects the sessions it held (R8.4).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ServeReport, GatewayError> {
        let runtime_stopped = self.handle.stopped();
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                reason = runtime_stopped => {
                    tracing::error!(%reason, "the presence runtime stopped: the gateway closes its sockets and stops");
                }
            }
        };
        let (served, disconnected) = serve_sockets(&self.shared, listener, shutdown).await;
        let stats = self.shared.counters.read();
        let runtime = self.runtime;
        let stopped = tokio::task::spawn_blocking(move || runtime.shutdown())
            .await
            .map_err(|e| GatewayError::Io(std::io::Error::other(e)))?;
        // Dropping the engine closes its store (sled flushes).
        drop(stopped.map_err(GatewayError::Engine)?);
        served?;
        Ok(ServeReport {
            restored_sessions_disconnected: self.restored_sessions_disconnected,
            sessions_disconnected_at_shutdown: disconnected,
            stats,
        })
    }

    /// Starts serving on `addr` on a tokio runtime of its own (two worker threads), for tests
    /// and for hosts that do not run tokio themselves.
    pub fn spawn(self, addr: SocketAddr) -> Result<RunningGateway, GatewayError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("presence-gateway")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let shared = Arc::clone(&self.shared);
        let handle = self.handle.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = runtime.spawn(self.serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(RunningGateway {
            runtime: Some(runtime),
            task: Some(task),
            stop: Some(stop),
            addr,
            shared,
            handle,
        })
    }
}

/// A gateway over a cluster (a gateway inside `presence node`): each command goes to the
/// node that owns its user's shard, over NATS, and the notices for this gateway's devices
/// come from every node on `{deployment}.node.{node_id}.notices`. Its `node_id` should be
/// the node's id, so that the other nodes disconnect its devices' sessions if the node is
/// lost (R9.6).
pub struct ClusterGateway {
    shared: Arc<Shared>,
}

impl ClusterGateway {
    /// A gateway that sends its commands through `client`. Of `config`, the engine's section
    /// gives only the default idle timeout (the nodes' configuration rules the engine), and
    /// `runtime.queue_capacity` bounds the requests in flight (beyond it: `Busy`).
    pub fn new(
        client: AsyncClusterClient,
        config: GatewayConfig,
        secret: Secret,
    ) -> Result<Self, GatewayError> {
        config.validate().map_err(|e| GatewayError::Config(e.to_string()))?;
        let backend = Backend::Cluster(Box::new(ClusterBackend::new(client, config.runtime.queue_capacity)));
        let routes = Arc::new(Routes::default());
        let counters = Arc::new(Counters::default());
        Ok(ClusterGateway { shared: Arc::new(Shared::new(backend, routes, counters, secret, config)) })
    }

    /// The gateway's counters.
    pub fn stats(&self) -> GatewayStats {
        self.shared.counters.read()
    }

    /// Serves `listener` until `shutdown` completes; then refuses new sockets, closes the
    /// open ones (1001) and disconnects this node's sessions on every shard (R8.5). The
    /// notices are subscribed to before the first socket is accepted.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<ServeReport, GatewayError> {
        let Backend::Cluster(cluster) = &self.shared.backend else {
            return Err(GatewayError::Config("a cluster gateway without a cluster".into()));
        };
        let client = cluster.client.nats().clone();
        let subject = cluster.client.subjects().notices(Some(self.shared.node_id.as_ref()));
        let mut subscriber = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| GatewayError::Io(std::io::Error::other(format!("{subject}: {e}"))))?;
        client.flush().await.map_err(|e| GatewayError::Io(std::io::Error::other(e)))?;
        let (routes, counters) = (Arc::clone(&self.shared.routes), Arc::clone(&self.shared.counters));
        let notices = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                match serde_json::from_slice::<NoticeBatch>(&message.payload) {
                    Ok(batch) => routes::deliver_batch(&routes, &counters, &batch),
                    Err(e) => tracing::warn!(error = %e, "a notice batch that does not parse"),
                }
            }
        });
        let (served, disconnected) = serve_sockets(&self.shared, listener, shutdown).await;
        notices.abort();
        let stats = self.shared.counters.read();
        served?;
        Ok(ServeReport {
            restored_sessions_disconnected: 0,
            sessions_disconnected_at_shutdown: disconnected,
            stats,
        })
    }
}

/// Serves `listener` until `shutdown` completes (or the listener fails); then refuses new
/// connections, closes the open ones (WebSockets with 1001; a plain HTTP connection after
/// the request in progress), waits for them, and disconnects this node's
/// sessions (R8.5). Returns how serving ended and how many sessions were disconnected.
async fn serve_sockets(
    shared: &Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (std::io::Result<()>, u64) {
    let signal = {
        let shared = Arc::clone(shared);
        async move {
            shutdown.await;
            shared.begin_shutdown();
        }
    };
    let served = listener::serve(shared, listener, http::router(Arc::clone(shared)), signal).await;
    // Should the listener fail, the sockets still close and the engine still stops cleanly.
    shared.begin_shutdown();
    let closing = Duration::from_millis(shared.config.gateway.close_timeout_ms.saturating_mul(2));
    let _ = tokio::time::timeout(closing, async {
        while shared.open_sockets() > 0 {
            tokio::time::sleep(SHUTDOWN_POLL).await;
        }
    })
    .await;
    let disconnected = disconnect_node(shared).await;
    (served, disconnected)
}

/// The sessions this node logged in are disconnected (R8.5): its sockets are gone.
async fn disconnect_node(shared: &Shared) -> u64 {
    let mut disconnected = 0u64;
    loop {
        let pending = match shared.try_queue(Command::disconnect_owner(shared.node_id.clone())) {
            Ok(pending) => pending,
            Err(QueueError::Full) => {
                tokio::time::sleep(SHUTDOWN_POLL).await;
                continue;
            }
            Err(QueueError::Stopped) => return disconnected,
        };
        match pending.wait().await {
            Ok(Reply::Disconnected { sessions, remaining }) => {
                disconnected += sessions as u64;
                if remaining == 0 || sessions == 0 {
                    return disconnected;
                }
            }
            _ => return disconnected,
        }
    }
}

/// A gateway serving on its own threads ([`Gateway::spawn`]); stopped cleanly by
/// [`RunningGateway::stop`] or when dropped.
pub struct RunningGateway {
    runtime: Option<tokio::runtime::Runtime>,
    task: Option<tokio::task::JoinHandle<Result<ServeReport, GatewayError>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    addr: SocketAddr,
    shared: Arc<Shared>,
    handle: Handle,
}

impl RunningGateway {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The runtime's handle.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The gateway's counters.
    pub fn stats(&self) -> GatewayStats {
        self.shared.counters.read()
    }

    /// Stops it as `serve` does at shutdown and waits until it has.
    pub fn stop(mut self) -> Result<ServeReport, GatewayError> {
        self.stop_now()
    }

    fn stop_now(&mut self) -> Result<ServeReport, GatewayError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let (Some(runtime), Some(task)) = (self.runtime.take(), self.task.take()) else {
            return Err(GatewayError::Io(std::io::Error::other("the gateway was already stopped")));
        };
        let result = runtime.block_on(task).map_err(|e| GatewayError::Io(std::io::Error::other(e)))?;
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            let _ = self.stop_now();
        }
    }
}
