//! [`ClusterClient`]: a host's side of a cluster, blocking (it runs its own small async
//! runtime), for hosts, tools and tests; [`AsyncClusterClient`]: the same for hosts that run
//! tokio (the gateway inside a node).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use presence_engine::{Command, Reply, ShardMap};

use crate::batcher::Batcher;
pub use crate::error::ClientError;
use crate::wire::{
    Alive, CommandAnswer, CommandRequest, Control, ControlAnswer, NoticeBatch, Subjects, ViewAnswer, ViewRead,
};

/// Connects a NATS client to `nats_url` (several servers separated by commas).
async fn connect_nats(nats_url: &str, name: &str) -> Result<async_nats::Client, String> {
    let addrs: Vec<async_nats::ServerAddr> = nats_url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{nats_url}: {e}"))?;
    async_nats::connect_with_options(addrs, async_nats::ConnectOptions::new().name(name))
        .await
        .map_err(|e| format!("cannot connect to NATS at {nats_url}: {e}"))
}

/// The async side of a host: commands sent to the owners of their shards without blocking a
/// thread, for hosts that run tokio themselves (the gateway inside a node). [`ClusterClient`]
/// is this, driven by a runtime of its own.
#[derive(Clone)]
pub struct AsyncClusterClient {
    client: async_nats::Client,
    subjects: Subjects,
    map: ShardMap,
    batcher: Arc<Batcher>,
    /// How long one request waits for its answer.
    pub request_timeout: Duration,
    /// How long a command is asked again while no node serves its shard.
    pub retry_for: Duration,
}

impl AsyncClusterClient {
    /// Connects to the NATS servers at `nats_url` for deployment `deployment` of `shards`
    /// shards; `name` is the connection's name on the servers.
    pub async fn connect(
        nats_url: &str,
        deployment: &str,
        shards: u32,
        name: &str,
    ) -> Result<AsyncClusterClient, String> {
        let client = connect_nats(nats_url, name).await?;
        Ok(AsyncClusterClient::over(client, deployment, shards))
    }

    fn over(client: async_nats::Client, deployment: &str, shards: u32) -> AsyncClusterClient {
        let subjects = Subjects::new(deployment);
        AsyncClusterClient {
            batcher: Arc::new(Batcher::new(client.clone(), subjects.clone(), shards)),
            client,
            subjects,
            map: ShardMap::new(shards),
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(30),
        }
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.client
    }

    /// Whether the NATS connection is up now (the client reconnects by itself when it is not).
    pub fn is_connected(&self) -> bool {
        matches!(self.client.connection_state(), async_nats::connection::State::Connected)
    }

    /// The deployment's subjects.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The shard of `user`.
    pub fn shard_of(&self, user: &str) -> u32 {
        self.map.shard_of(user)
    }

    /// One request and its answer's bytes. `Ok(None)`: nobody listens on the subject.
    async fn ask(
        &self,
        subject: String,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Option<Bytes>, ClientError> {
        let request = async_nats::Request::new().payload(Bytes::from(body)).timeout(Some(timeout));
        match self.client.send_request(subject.clone(), request).await {
            Ok(message) => Ok(Some(message.payload)),
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::NoResponders => Ok(None),
                async_nats::RequestErrorKind::TimedOut => {
                    Err(ClientError::Unknown(format!("{subject}: no answer within {timeout:?}")))
                }
                _ => Err(ClientError::Unknown(format!("{subject}: {e}"))),
            },
        }
    }

    /// Sends `command` (at `at_ms`, or the owner's clock) to the owner of its shard and
    /// returns the reply, once its events are durable. While no node serves the shard it asks
    /// again, for [`AsyncClusterClient::retry_for`]. `disconnect_sessions` goes to every shard
    /// and the counts add up.
    pub async fn execute(&self, command: Command, at_ms: Option<u64>) -> Result<Reply, ClientError> {
        self.execute_within(command, at_ms, self.request_timeout, self.retry_for).await
    }

    async fn execute_within(
        &self,
        command: Command,
        at_ms: Option<u64>,
        request_timeout: Duration,
        retry_for: Duration,
    ) -> Result<Reply, ClientError> {
        let Some(shard) = command.shard(&self.map) else {
            let (mut sessions, mut remaining) = (0, 0);
            for shard in 0..self.map.count() {
                if let Reply::Disconnected { sessions: s, remaining: r } =
                    self.execute_on(shard, &command, at_ms, request_timeout, retry_for).await?
                {
                    sessions += s;
                    remaining += r;
                }
            }
            return Ok(Reply::Disconnected { sessions, remaining });
        };
        self.execute_on(shard, &command, at_ms, request_timeout, retry_for).await
    }

    async fn execute_on(
        &self,
        shard: u32,
        command: &Command,
        at_ms: Option<u64>,
        request_timeout: Duration,
        retry_for: Duration,
    ) -> Result<Reply, ClientError> {
        let request = CommandRequest { command: command.clone(), at_ms };
        let deadline = Instant::now() + retry_for;
        loop {
            let why = match self.batcher.ask(shard, &request, request_timeout).await? {
                None => format!("no node serves shard {shard}"),
                Some(CommandAnswer::Done(reply)) => return Ok(reply),
                Some(CommandAnswer::Refused { code, message }) => {
                    return Err(ClientError::Refused { code, message })
                }
                Some(CommandAnswer::Unavailable { message }) => message,
            };
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(why));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// What the owner of `user`'s shard knows of the user (R6.4).
    pub async fn view(&self, user: &str) -> Result<ViewAnswer, ClientError> {
        self.view_within(user, self.request_timeout, self.retry_for).await
    }

    async fn view_within(
        &self,
        user: &str,
        request_timeout: Duration,
        retry_for: Duration,
    ) -> Result<ViewAnswer, ClientError> {
        let body = serde_json::to_vec(&ViewRead { user: user.into() }).unwrap_or_default();
        let shard = self.map.shard_of(user);
        let deadline = Instant::now() + retry_for;
        loop {
            if let Some(payload) = self.ask(self.subjects.view(shard), body.clone(), request_timeout).await? {
                if let Ok(answer) = serde_json::from_slice(&payload) {
                    return Ok(answer);
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(format!("no node serves shard {shard}")));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// How long a client waits before it asks again a shard that no node serves.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A connection to a cluster's NATS servers, sending commands to the owners of their shards:
/// an [`AsyncClusterClient`] on a small runtime of its own, so that its calls block.
pub struct ClusterClient {
    runtime: tokio::runtime::Runtime,
    inner: AsyncClusterClient,
    /// How long one request waits for its answer.
    pub request_timeout: Duration,
    /// How long a command is asked again while no node serves its shard.
    pub retry_for: Duration,
}

impl ClusterClient {
    /// Connects to the NATS servers at `nats_url` for deployment `deployment` of `shards`
    /// shards.
    pub fn connect(nats_url: &str, deployment: &str, shards: u32) -> Result<ClusterClient, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("presence-cluster-client")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the client's thread: {e}"))?;
        let client = runtime.block_on(connect_nats(nats_url, "presence-client"))?;
        let inner = AsyncClusterClient::over(client, deployment, shards);
        Ok(ClusterClient {
            runtime,
            inner,
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(30),
        })
    }

    /// The shard of `user`.
    pub fn shard_of(&self, user: &str) -> u32 {
        self.inner.shard_of(user)
    }

    /// One request and its answer's bytes. `Ok(None)`: nobody listens on the subject.
    fn ask(&self, subject: String, body: Vec<u8>) -> Result<Option<Bytes>, ClientError> {
        self.runtime.block_on(self.inner.ask(subject, body, self.request_timeout))
    }

    /// Sends `command` (at `at_ms`, or the owner's clock) to the owner of its shard and
    /// returns the reply, once its events are durable. While no node serves the shard it asks
    /// again, for [`ClusterClient::retry_for`]. `disconnect_sessions` goes to every shard and
    /// the counts add up.
    pub fn execute(&self, command: Command, at_ms: Option<u64>) -> Result<Reply, ClientError> {
        self.runtime.block_on(self.inner.execute_within(command, at_ms, self.request_timeout, self.retry_for))
    }

    /// What the owner of `user`'s shard knows of the user (R6.4).
    pub fn view(&self, user: &str) -> Result<ViewAnswer, ClientError> {
        self.runtime.block_on(self.inner.view_within(user, self.request_timeout, self.retry_for))
    }

    /// The nodes heard saying they are alive within `listen`, sorted, with the shards each
    /// serves.
    pub fn nodes(&self, listen: Duration) -> Vec<Alive> {
        let client = self.inner.client.clone();
        let subject = self.inner.subjects.alive();
        self.runtime.block_on(async move {
            let Ok(mut subscriber) = client.subscribe(subject).await else { return Vec::new() };
            let mut nodes = std::collections::BTreeMap::new();
            let until = tokio::time::Instant::now() + listen;
            while let Ok(Some(message)) = tokio::time::timeout_at(until, subscriber.next()).await {
                if let Ok(alive) = serde_json::from_slice::<Alive>(&message.payload) {
                    nodes.insert(alive.node.clone(), alive);
                }
            }
            nodes.into_values().collect()
        })
    }

    /// Sends a control request to `node` and returns its answer.
    pub fn control(&self, node: &str, control: &Control) -> Result<ControlAnswer, ClientError> {
        let body = serde_json::to_vec(control).unwrap_or_default();
        match self.ask(self.inner.subjects.control(node), body)? {
            Some(payload) => serde_json::from_slice(&payload)
                .map_err(|e| ClientError::Unknown(format!("an answer that does not parse: {e}"))),
            None => Err(ClientError::Unavailable(format!("node {node} does not answer"))),
        }
    }

    /// Every notice batch the nodes publish from now on, with its subject (which names the
    /// owner of the devices, [`Subjects::notices`]).
    pub fn notices(&self) -> Result<Notices, String> {
        let client = &self.inner.client;
        let subscriber = self
            .runtime
            .block_on(client.subscribe(self.inner.subjects.all_notices()))
            .map_err(|e| e.to_string())?;
        // Everything published after this point reaches the subscription.
        self.runtime.block_on(client.flush()).map_err(|e| e.to_string())?;
        Ok(Notices {
            runtime: self.runtime.handle().clone(),
            client: client.clone(),
            subscriber: std::sync::Mutex::new(subscriber),
        })
    }
}

/// The notices the nodes publish, from [`ClusterClient::notices`] (while that client lives).
pub struct Notices {
    runtime: tokio::runtime::Handle,
    client: async_nats::Client,
    subscriber: std::sync::Mutex<async_nats::Subscriber>,
}

impl Notices {
    /// The next batch, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<(String, NoticeBatch)> {
        let mut subscriber = self.subscriber.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.runtime.block_on(async {
            let until = tokio::time::Instant::now() + timeout;
            while let Ok(Some(message)) = tokio::time::timeout_at(until, subscriber.next()).await {
                if let Ok(batch) = serde_json::from_slice::<NoticeBatch>(&message.payload) {
                    return Some((message.subject.to_string(), batch));
                }
            }
            None
        })
    }

    /// Every batch the server sent before now (a round trip to it makes sure), without
    /// waiting for more: after a [`Control::Quiesce`] of every node, all a step caused.
    pub fn drain(&self) -> Vec<(String, NoticeBatch)> {
        let mut subscriber = self.subscriber.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let client = self.client.clone();
        self.runtime.block_on(async {
            let _ = client.flush().await;
            let mut batches = Vec::new();
            while let Some(Some(message)) = futures_util::FutureExt::now_or_never(subscriber.next()) {
                if let Ok(batch) = serde_json::from_slice::<NoticeBatch>(&message.payload) {
                    batches.push((message.subject.to_string(), batch));
                }
            }
            batches
        })
    }
}
