//! A node of a cluster (docs/DESIGN.md, the cluster): it says it is alive, works out which
//! shards it should own, claims them (fenced), serves their commands over NATS, follows every
//! shard's log to take in other shards' status changes and friendships, and disconnects the
//! sessions of nodes that are lost (R9.6).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use presence_engine::{
    Command, Engine, EngineOptions, Error, Names, Notice, RemoteStatuses, RestoredSessions, ShardMap,
    ShardOf, StoreErrorKind, UserId,
};
use presence_runtime::{
    Handle, NoticeSink, Runtime, RuntimeConfig, RuntimeError, SnapshotPolicy, SystemClock,
};
use presence_storage_nats::{open_nats_deployment, shard_stream, NatsOptions, NatsStore};
use tokio::sync::mpsc;

mod control;
mod follower;
mod serve;

use control::serve_control;
use follower::{follow, forward_announced, Follow, FOLLOW_QUEUE};
use serve::start_serving;

use crate::config::NodeConfig;
use crate::ownership::{assign, Membership};
use crate::wire::{
    decode_requests, encode_answers, is_token, Alive, CommandAnswer, Control, ControlAnswer, FriendsAnswer,
    FriendsRead, NoticeBatch, NoticeOut, SessionAnswer, StatusAnswer, StatusRead, Subjects, ViewAnswer,
    ViewRead,
};

/// How `presence node` starts a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The NATS servers, `nats://HOST:PORT`, several separated by commas.
    pub nats_url: String,
    /// This node's id: 1 to 64 letters, digits, `_` or `-`, unique in the deployment. It is
    /// also the connection owner (R8.5) of the sessions whose sockets the node holds.
    pub node_id: String,
    /// The deployment's configuration.
    pub config: NodeConfig,
}

/// A shard this node serves.
struct Served {
    claim_seq: u64,
    handle: Handle,
    runtime: Mutex<Option<Runtime<NatsStore>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set when the store was fenced: another node claimed the shard.
    fenced: AtomicBool,
}

struct Inner {
    id: String,
    config: NodeConfig,
    subjects: Subjects,
    map: ShardMap,
    nats_url: String,
    client: async_nats::Client,
    started: Instant,
    membership: Mutex<Membership>,
    served: Mutex<BTreeMap<u32, Arc<Served>>>,
    /// Shards being claimed or released right now.
    busy: Mutex<BTreeSet<u32>>,
    /// Nodes this node has seen alive, and those it has found lost since.
    seen: Mutex<BTreeSet<String>>,
    lost: Mutex<BTreeSet<String>>,
    /// Full passes of the follower over every stream.
    follow_passes: AtomicU64,
    /// Whether the follower has fixed where it follows every shard's stream from: until
    /// then the node claims nothing.
    following: AtomicBool,
    notices: mpsc::UnboundedSender<Outgoing>,
    /// The follower thread's queue.
    follow: std::sync::mpsc::SyncSender<Follow>,
    /// Whether the follower keeps what it takes in from the served shards ([`Control::Hold`]).
    holding: AtomicBool,
    stopping: AtomicBool,
}

/// Runs `work` on a plain thread of its own and awaits its result: the NATS store blocks, and
/// refuses to run on a thread of an async runtime (tokio's blocking pool included).
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("presence-node-io".into())
        .spawn(move || {
            let _ = sender.send(work());
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    receiver.await.map_err(|_| "a node thread stopped without an answer".to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn alive(&self) -> Vec<String> {
        lock(&self.membership).alive(self.now_ms(), self.config.node_timeout_ms)
    }

    /// Whether this node may serve: it has heard its own heartbeat back recently, so it is
    /// connected and was not paused (a node woken from a pause hears the others' news, in
    /// order, before its own next heartbeat).
    fn lease_ok(&self) -> bool {
        let heard = lock(&self.membership).last_heard(&self.id);
        heard.is_some_and(|at| self.now_ms().saturating_sub(at) < self.config.node_timeout_ms / 2)
    }

    fn served(&self, shard: u32) -> Option<Arc<Served>> {
        lock(&self.served).get(&shard).cloned()
    }

    fn served_all(&self) -> Vec<(u32, Arc<Served>)> {
        lock(&self.served).iter().map(|(s, served)| (*s, Arc::clone(served))).collect()
    }

    fn nats_options(&self, shard: u32, create: bool) -> NatsOptions {
        NatsOptions {
            replicas: self.config.replicas,
            create,
            request_timeout: Duration::from_millis(self.config.request_timeout_ms),
            operation_timeout: Duration::from_millis(self.config.request_timeout_ms * 2),
            announce: Some(self.subjects.log(shard)),
            ..NatsOptions::new(&self.nats_url, shard_stream(&self.config.deployment, shard))
        }
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        body: Vec<u8>,
    ) -> Result<T, String> {
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let answer = tokio::time::timeout(timeout, self.client.request(subject.clone(), Bytes::from(body)))
            .await
            .map_err(|_| format!("{subject}: no answer within {timeout:?}"))?
            .map_err(|e| format!("{subject}: {e}"))?;
        serde_json::from_slice(&answer.payload).map_err(|e| format!("{subject}: {e}"))
    }

    /// The statuses of other shards' users, from their owners (R9.3).
    async fn read_remote(&self, users: Vec<UserId>) -> RemoteStatuses {
        let mut by_shard: BTreeMap<u32, Vec<UserId>> = BTreeMap::new();
        for user in users {
            by_shard.entry(self.map.shard_of(&user)).or_default().push(user);
        }
        // One request to each shard's owner, all at once.
        let reads = by_shard.into_iter().map(|(shard, users)| async move {
            let body = serde_json::to_vec(&StatusRead { users }).unwrap_or_default();
            (shard, self.request::<StatusAnswer>(self.subjects.read(shard), body).await)
        });
        let mut statuses = RemoteStatuses::new();
        for (shard, answer) in futures_util::future::join_all(reads).await {
            match answer {
                Ok(answer) => statuses.extend(
                    answer.statuses.into_iter().map(|(user, status, version)| (user, (status, version))),
                ),
                // The watch table answers instead, if it can (R9.3: what the shard knows).
                Err(e) => tracing::warn!(shard, error = %e, "cannot read another shard's statuses"),
            }
        }
        statuses
    }
}

/// The users of other shards a command needs the statuses of (R9.3).
fn remote_users(command: &Command, map: &ShardMap, shard: u32, friends: bool) -> Vec<UserId> {
    let mut users: Vec<UserId> = match command {
        Command::GetStatus { targets, .. } | Command::Subscribe { targets, .. } => targets.clone(),
        Command::AddFriend { user, friend } if friends => vec![user.clone(), friend.clone()],
        _ => Vec::new(),
    };
    users.retain(|u| !u.is_empty() && u.len() <= 1_024 && map.shard_of(u) != shard);
    users.sort();
    users.dedup();
    users
}

/// Runs a node until `stop` resolves (then it hands its shards over cleanly) or it fails to
/// start.
pub async fn run_node(
    options: NodeOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let NodeOptions { nats_url, node_id, config } = options;
    if !is_token(&node_id) {
        return Err(format!("node id {node_id:?}: 1 to 64 letters, digits, _ or -"));
    }
    config.validate()?;
    // The manifest fixes the shard count (docs/FORMAT.md).
    let manifest_options =
        NatsOptions { replicas: config.replicas, create: true, ..NatsOptions::new(&nats_url, "x") };
    let deployment = config.deployment.clone();
    let shards = config.shards;
    blocking(move || open_nats_deployment(&manifest_options, &deployment, Some(shards)))
        .await?
        .map_err(|e| e.to_string())?;
    let addrs: Vec<async_nats::ServerAddr> = nats_url
        .split(',')
        .map(|u| u.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{nats_url}: {e}"))?;
    let client = async_nats::connect_with_options(
        addrs,
        async_nats::ConnectOptions::new()
            .name(format!("presence-node-{node_id}"))
            .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
            .retry_on_initial_connect(),
    )
    .await
    .map_err(|e| format!("cannot connect to NATS at {nats_url}: {e}"))?;
    let (notices, notices_rx) = mpsc::unbounded_channel();
    let (follow_tx, follow_rx) = std::sync::mpsc::sync_channel(FOLLOW_QUEUE);
    let subjects = Subjects::new(&config.deployment);
    // Subscribed before the follower first looks at the streams, so that no batch falls
    // between where it starts and what it is told.
    let announced = client.subscribe(subjects.all_logs()).await.map_err(|e| format!("{e}"))?;
    let inner = Arc::new(Inner {
        subjects,
        map: ShardMap::new(config.shards),
        id: node_id,
        config,
        nats_url,
        client,
        started: Instant::now(),
        membership: Mutex::new(Membership::default()),
        served: Mutex::new(BTreeMap::new()),
        busy: Mutex::new(BTreeSet::new()),
        seen: Mutex::new(BTreeSet::new()),
        lost: Mutex::new(BTreeSet::new()),
        follow_passes: AtomicU64::new(0),
        following: AtomicBool::new(false),
        notices,
        follow: follow_tx.clone(),
        holding: AtomicBool::new(false),
        stopping: AtomicBool::new(false),
    });
    tracing::info!(node = %inner.id, shards = inner.config.shards, "presence node starting");
    let mut tasks = vec![
        tokio::spawn(publish_notices(inner.client.clone(), notices_rx)),
        tokio::spawn(listen_alive(Arc::clone(&inner))),
        tokio::spawn(say_alive(Arc::clone(&inner))),
        tokio::spawn(serve_control(Arc::clone(&inner))),
        tokio::spawn(own_shards(Arc::clone(&inner))),
        tokio::spawn(forward_announced(Arc::clone(&inner), announced, follow_tx)),
    ];
    let follower = {
        let inner = Arc::clone(&inner);
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("presence-follow".into())
            .spawn(move || follow(inner, runtime, follow_rx))
            .map_err(|e| format!("cannot start the follower thread: {e}"))?
    };
    stop.await;
    tracing::info!(node = %inner.id, "presence node stopping: handing its shards over");
    inner.stopping.store(true, Ordering::SeqCst);
    for (shard, _) in inner.served_all() {
        release(&inner, shard, true).await;
    }
    for task in tasks.drain(..) {
        task.abort();
    }
    let _ = inner.client.flush().await;
    let _ = blocking(move || follower.join()).await;
    Ok(())
}

/// What the notice publisher is asked to do.
enum Outgoing {
    /// Publish one batch.
    Notices(String, Bytes),
    /// Answer once everything before is handed to the server.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Publishes the notices of every shard's turns, in order.
async fn publish_notices(client: async_nats::Client, mut notices: mpsc::UnboundedReceiver<Outgoing>) {
    while let Some(outgoing) = notices.recv().await {
        match outgoing {
            Outgoing::Notices(subject, payload) => {
                if let Err(e) = client.publish(subject, payload).await {
                    tracing::warn!(error = %e, "cannot publish notices");
                }
            }
            Outgoing::Flush(done) => {
                let _ = client.flush().await;
                let _ = done.send(());
            }
        }
    }
}

/// Says this node is alive, with the shards it serves, a few times per timeout.
async fn say_alive(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(inner.config.heartbeat_interval());
    loop {
        interval.tick().await;
        let shards = inner.served_all().iter().map(|(s, served)| (*s, served.claim_seq)).collect();
        let alive = Alive { node: inner.id.clone(), shards };
        let body = serde_json::to_vec(&alive).unwrap_or_default();
        if let Err(e) = inner.client.publish(inner.subjects.alive(), Bytes::from(body)).await {
            tracing::warn!(error = %e, "cannot say this node is alive");
        }
    }
}

/// Hears every node's heartbeat, this one's included.
async fn listen_alive(inner: Arc<Inner>) {
    let Ok(mut subscriber) = inner.client.subscribe(inner.subjects.alive()).await else {
        tracing::error!("cannot hear the nodes' heartbeats");
        return;
    };
    while let Some(message) = subscriber.next().await {
        let Ok(alive) = serde_json::from_slice::<Alive>(&message.payload) else { continue };
        if alive.node != inner.id {
            // Another node serving a shard this one serves, with a newer claim: this one was
            // fenced (it was paused, or cut off, while the shard moved).
            for (shard, claim) in &alive.shards {
                if let Some(served) = inner.served(*shard) {
                    if *claim > served.claim_seq {
                        served.fenced.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        lock(&inner.seen).insert(alive.node.clone());
        lock(&inner.membership).heard(&alive.node, alive.shards, inner.now_ms());
    }
}

/// Every 100 ms: claims the shards this node should own, releases those it should not, drops
/// the ones it was fenced from, and disconnects the sessions of nodes it finds lost.
async fn own_shards(inner: Arc<Inner>) {
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    let mut waiting_since: BTreeMap<u32, u64> = BTreeMap::new();
    loop {
        interval.tick().await;
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = inner.now_ms();
        let timeout = inner.config.node_timeout_ms;
        let alive = inner.alive();
        for (shard, served) in inner.served_all() {
            if served.fenced.load(Ordering::SeqCst) {
                tracing::warn!(shard, "fenced: another node owns this shard now; it stops serving it here");
                release(&inner, shard, false).await;
            }
        }
        if !inner.lease_ok() || now < timeout || !inner.following.load(Ordering::SeqCst) {
            // Cut off, or just woken from a pause: serve nothing, claim nothing. A node that
            // just started first listens for a timeout's length, to hear the others, and
            // claims nothing before it follows every shard's stream: a change made on another
            // node after this one serves must reach its watchers here (R9.2).
            continue;
        }
        // Nodes lost since the last round: their devices' sessions go offline (R9.6).
        let newly_lost: Vec<String> = {
            let seen = lock(&inner.seen);
            let mut lost = lock(&inner.lost);
            let found: Vec<String> =
                seen.iter().filter(|n| !alive.contains(n) && !lost.contains(*n)).cloned().collect();
            lost.extend(found.iter().cloned());
            lost.retain(|n| !alive.contains(n));
            found
        };
        for node in newly_lost {
            tracing::warn!(lost = %node, "a node is lost: disconnecting the sessions it held");
            for (_, served) in inner.served_all() {
                disconnect_owner(&served.handle, &node).await;
            }
        }
        let assignment = assign(inner.config.shards, alive.iter().map(String::as_str));
        for shard in 0..inner.config.shards {
            let should = assignment[shard as usize] == Some(inner.id.as_str());
            // Whether it serves the shard is read under the busy lock, and the shard marked
            // busy under it: a restart marks the shard busy before it stops serving it, so
            // this never sees a shard in the middle of a restart as unserved.
            let mut busy = lock(&inner.busy);
            if busy.contains(&shard) {
                continue;
            }
            let serves = inner.served(shard).is_some();
            if serves && !should {
                busy.insert(shard);
                drop(busy);
                let inner = Arc::clone(&inner);
                tokio::spawn(async move {
                    release(&inner, shard, true).await;
                    lock(&inner.busy).remove(&shard);
                });
            } else if should && !serves {
                let other = lock(&inner.membership).serving(shard, &inner.id, now, timeout);
                let since = *waiting_since.entry(shard).or_insert(now);
                if other.is_some() && now.saturating_sub(since) < 2 * timeout {
                    // Its owner hands it over once it sees this node (a clean hand-off).
                    continue;
                }
                waiting_since.remove(&shard);
                busy.insert(shard);
                drop(busy);
                let inner = Arc::clone(&inner);
                tokio::spawn(async move {
                    if let Err(e) = claim(&inner, shard).await {
                        tracing::warn!(shard, error = %e, "cannot take the shard over; trying again");
                    }
                    lock(&inner.busy).remove(&shard);
                });
            } else {
                waiting_since.remove(&shard);
            }
        }
    }
}

/// Disconnects the sessions `owner` held on one shard, as many commands as it takes (R8.5).
async fn disconnect_owner(handle: &Handle, owner: &str) {
    for _ in 0..1_000 {
        let Ok(pending) = handle.send(Command::disconnect_owner(owner)) else { return };
        match pending.await {
            Ok(presence_engine::Reply::Disconnected { remaining: 0, .. }) => return,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, owner, "cannot disconnect a lost node's sessions");
                return;
            }
        }
    }
}

/// Claims `shard`: opens its stream, appends a claim (fencing whoever wrote before), replays
/// it, starts its runtime, rebuilds its watch table, reconciles its friendships with the
/// shards below it, disconnects the sessions of lost nodes, and starts serving.
async fn claim(inner: &Arc<Inner>, shard: u32) -> Result<(), String> {
    let options = inner.nats_options(shard, true);
    let me = inner.id.clone();
    let map = inner.map.clone();
    let engine_config = inner.config.engine.clone();
    let started = Instant::now();
    let (engine, claim_seq) = blocking(move || -> Result<_, String> {
        let mut store = NatsStore::open(options).map_err(|e| e.to_string())?;
        let claim_seq = store.claim(&me).map_err(|e| e.to_string())?;
        let engine_options = EngineOptions {
            shard: Some(ShardOf { map, index: shard }),
            outbox: true,
            restored_sessions: RestoredSessions::Keep,
        };
        let engine = Engine::open_with(engine_config, store, engine_options).map_err(|e| e.to_string())?;
        Ok((engine, claim_seq))
    })
    .await??;
    let served = start_serving(inner, shard, engine, claim_seq).await?;
    // R9.5: the statuses of the users its users watch on other shards.
    let watched = served.handle.read(|view| view.remote_watched()).map_err(|e| e.to_string())?.await;
    if let Ok(watched) = watched {
        let statuses = inner.read_remote(watched).await;
        let statuses =
            statuses.into_iter().map(|(user, (status, version))| (user, status, version)).collect();
        if let Ok(pending) = served.handle.learn_remote(statuses) {
            let _ = pending.await;
        }
    }
    // R9.6: the sessions held by nodes this node has seen and that are gone (owners that are
    // not nodes, such as gateways apart, are the host's to disconnect).
    let alive = inner.alive();
    let gone: Vec<String> = lock(&inner.seen).iter().filter(|n| !alive.contains(n)).cloned().collect();
    if let Ok(owners) = served.handle.read(|view| view.owners()).map_err(|e| e.to_string())?.await {
        for owner in owners.iter().filter(|o| gone.iter().any(|g| g.as_str() == o.as_ref())) {
            disconnect_owner(&served.handle, owner).await;
        }
    }
    tokio::spawn(reconcile_friends(Arc::clone(inner), shard, Arc::clone(&served)));
    tracing::info!(shard, claim_seq, took_ms = started.elapsed().as_millis() as u64, "shard taken over");
    Ok(())
}

/// R9.5: a shard just opened asks the owners of the users its users watch on other shards for
/// their statuses.
async fn rebuild_watch_table(inner: &Inner, served: &Served) {
    let Ok(pending) = served.handle.read(|view| view.remote_watched()) else { return };
    let Ok(watched) = pending.await else { return };
    if watched.is_empty() {
        return;
    }
    let statuses = inner.read_remote(watched).await;
    let statuses = statuses.into_iter().map(|(user, (status, version))| (user, status, version)).collect();
    if let Ok(pending) = served.handle.learn_remote(statuses) {
        let _ = pending.await;
    }
}

/// Friendships are ordered by the lower of the two shards (R9.1): a node that takes a shard
/// over makes its friendships with each lower shard's users what that shard says, in case
/// the previous owner died before it took in the last of them.
async fn reconcile_friends(inner: Arc<Inner>, shard: u32, served: Arc<Served>) {
    for lower in 0..shard {
        loop {
            if served.fenced.load(Ordering::SeqCst) || inner.served(shard).is_none() {
                return;
            }
            let body = serde_json::to_vec(&FriendsRead { with: shard }).unwrap_or_default();
            match inner.request::<FriendsAnswer>(inner.subjects.friends(lower), body).await {
                Ok(answer) => {
                    let map = inner.map.clone();
                    let ours = served.handle.read(move |view| {
                        let mut pairs = BTreeSet::new();
                        for user in view.user_ids() {
                            if map.shard_of(user) != shard {
                                continue;
                            }
                            for friend in view.friends(user) {
                                if map.shard_of(&friend) == lower {
                                    pairs.insert((friend, user.clone()));
                                }
                            }
                        }
                        pairs
                    });
                    let Ok(pending) = ours else { return };
                    let Ok(ours) = pending.await else { return };
                    let theirs: BTreeSet<(UserId, UserId)> = answer.pairs.into_iter().collect();
                    for (user, friend) in theirs.difference(&ours) {
                        let _ = served.handle.submit(Command::add_friend(user.clone(), friend.clone()));
                    }
                    for (user, friend) in ours.difference(&theirs) {
                        let _ = served.handle.submit(Command::remove_friend(user.clone(), friend.clone()));
                    }
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// Stops serving `shard`: no new requests, everything queued runs, and (`clean`) a snapshot
/// makes the next owner's replay short.
async fn release(inner: &Arc<Inner>, shard: u32, clean: bool) {
    let Some(served) = lock(&inner.served).remove(&shard) else { return };
    for task in lock(&served.tasks).drain(..) {
        task.abort();
    }
    let runtime = lock(&served.runtime).take();
    let snapshot = clean && !served.fenced.load(Ordering::SeqCst);
    let _ = blocking(move || {
        let Some(runtime) = runtime else { return };
        match runtime.shutdown() {
            Ok(mut engine) if snapshot => {
                if let Err(e) = engine.snapshot() {
                    tracing::warn!(shard, error = %e, "no snapshot at hand-off; the next owner replays more");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(shard, error = %e, "the shard's runtime stopped with an error"),
        }
    })
    .await;
    tracing::info!(shard, clean, "shard released");
}

/// A shard marked busy (claimed, released or restarted right now) until dropped.
struct BusyShard<'a> {
    inner: &'a Inner,
    shard: u32,
}

impl<'a> BusyShard<'a> {
    /// `None` when the shard is busy already.
    fn mark(inner: &'a Inner, shard: u32) -> Option<BusyShard<'a>> {
        lock(&inner.busy).insert(shard).then_some(BusyShard { inner, shard })
    }
}

impl Drop for BusyShard<'_> {
    fn drop(&mut self) {
        lock(&self.inner.busy).remove(&self.shard);
    }
}
