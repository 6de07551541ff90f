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

mod follower;

use follower::{follow, forward_announced, Follow, FOLLOW_QUEUE};

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

/// Starts the runtime of a claimed shard and its subscriptions.
async fn start_serving(
    inner: &Arc<Inner>,
    shard: u32,
    engine: Engine<NatsStore>,
    claim_seq: u64,
) -> Result<Arc<Served>, String> {
    let config = RuntimeConfig {
        auto_tick: inner.config.tick_interval_ms > 0,
        tick_interval_ms: inner.config.tick_interval_ms.max(1),
        snapshots: SnapshotPolicy::default(),
        ..RuntimeConfig::default()
    };
    let sink = NatsSink { shard, subjects: inner.subjects.clone(), out: inner.notices.clone() };
    let (runtime, handle) = Runtime::spawn(engine, SystemClock, sink, config);
    let served = Arc::new(Served {
        claim_seq,
        handle,
        runtime: Mutex::new(Some(runtime)),
        tasks: Mutex::new(Vec::new()),
        fenced: AtomicBool::new(false),
    });
    let subjects = [
        inner.subjects.command(shard),
        inner.subjects.read(shard),
        inner.subjects.friends(shard),
        inner.subjects.view(shard),
    ];
    let mut tasks = Vec::new();
    for (kind, subject) in subjects.into_iter().enumerate() {
        let mut subscriber =
            inner.client.subscribe(subject.clone()).await.map_err(|e| format!("{subject}: {e}"))?;
        let inner = Arc::clone(inner);
        let served = Arc::clone(&served);
        tasks.push(tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let inner = Arc::clone(&inner);
                let served = Arc::clone(&served);
                tokio::spawn(async move {
                    let Some(reply) = message.reply.clone() else { return };
                    let answer = match kind {
                        0 => serve_commands(&inner, shard, &served, &message.payload).await,
                        1 => serve_read(&served, &message.payload).await,
                        2 => serve_friends(&inner, shard, &served, &message.payload).await,
                        _ => serve_view(&served, &message.payload).await,
                    };
                    let _ = inner.client.publish(reply, Bytes::from(answer)).await;
                });
            }
        }));
    }
    *lock(&served.tasks) = tasks;
    lock(&inner.served).insert(shard, Arc::clone(&served));
    Ok(served)
}

/// Serves one batch of commands for `shard` (docs/DESIGN.md, the cluster's wire): the other
/// shards' statuses the batch needs are read together, then every command goes to the
/// shard's runtime before any answer is awaited, so that the batch runs in one turn or few.
async fn serve_commands(inner: &Inner, shard: u32, served: &Served, payload: &[u8]) -> Vec<u8> {
    let requests = match decode_requests(payload) {
        Ok(requests) => requests,
        Err(e) => {
            let message = format!("not a batch of commands: {e}");
            return encode_answers(&[CommandAnswer::Refused { code: 6017, message }]);
        }
    };
    if !inner.lease_ok() || served.fenced.load(Ordering::SeqCst) {
        let message = format!("node {} does not serve shard {shard} now", inner.id);
        return encode_answers(&vec![CommandAnswer::Unavailable { message }; requests.len()]);
    }
    let friends = inner.config.engine.friend_notifications;
    let needs: Vec<Vec<UserId>> =
        requests.iter().map(|r| remote_users(&r.command, &inner.map, shard, friends)).collect();
    let mut all: Vec<UserId> = needs.iter().flatten().cloned().collect();
    all.sort();
    all.dedup();
    let known = if all.is_empty() { RemoteStatuses::new() } else { inner.read_remote(all).await };
    let mut pending = Vec::with_capacity(requests.len());
    for (request, users) in requests.into_iter().zip(needs) {
        if let Some(right) = request.command.shard(&inner.map).filter(|&s| s != shard) {
            let message = format!(
                "this command belongs to shard {right}, not {shard} (R9.1): send it to {}",
                inner.subjects.command(right)
            );
            pending.push(Err(CommandAnswer::Refused { code: 6017, message }));
            continue;
        }
        let statuses: RemoteStatuses =
            users.iter().filter_map(|u| known.get(u).map(|s| (u.clone(), s.clone()))).collect();
        pending.push(Ok(served.handle.send_with_statuses(request.command, request.at_ms, statuses)));
    }
    let mut answers = Vec::with_capacity(pending.len());
    for sent in pending {
        let result = match sent {
            Err(answer) => {
                answers.push(answer);
                continue;
            }
            Ok(Ok(pending)) => pending.await,
            Ok(Err(e)) => Err(e),
        };
        answers.push(match result {
            Ok(reply) => CommandAnswer::Done(reply),
            Err(RuntimeError::Refused(Error::Storage(e))) if e.kind() == StoreErrorKind::Fenced => {
                served.fenced.store(true, Ordering::SeqCst);
                CommandAnswer::Unavailable { message: format!("shard {shard} moved to another node: {e}") }
            }
            Err(RuntimeError::Refused(e)) => {
                CommandAnswer::Refused { code: e.code(), message: e.to_string() }
            }
            Err(e) => CommandAnswer::Unavailable { message: e.to_string() },
        });
    }
    encode_answers(&answers)
}

async fn serve_read(served: &Served, payload: &[u8]) -> Vec<u8> {
    let Ok(request) = serde_json::from_slice::<StatusRead>(payload) else { return Vec::new() };
    let read = served.handle.read(move |view| {
        request
            .users
            .into_iter()
            .map(|user| {
                let (status, version) = view.versioned_status(&user);
                (user, status, version)
            })
            .collect()
    });
    match read {
        Ok(pending) => match pending.await {
            Ok(statuses) => serde_json::to_vec(&StatusAnswer { statuses }).unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

async fn serve_friends(inner: &Inner, shard: u32, served: &Served, payload: &[u8]) -> Vec<u8> {
    let Ok(request) = serde_json::from_slice::<FriendsRead>(payload) else { return Vec::new() };
    let map = inner.map.clone();
    let read = served.handle.read(move |view| {
        let mut pairs = Vec::new();
        for user in view.user_ids() {
            if map.shard_of(user) != shard {
                continue;
            }
            for friend in view.friends(user) {
                if map.shard_of(&friend) == request.with {
                    pairs.push((user.clone(), friend));
                }
            }
        }
        pairs
    });
    match read {
        Ok(pending) => match pending.await {
            Ok(pairs) => serde_json::to_vec(&FriendsAnswer { pairs }).unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

async fn serve_view(served: &Served, payload: &[u8]) -> Vec<u8> {
    let Ok(request) = serde_json::from_slice::<ViewRead>(payload) else { return Vec::new() };
    let read = served.handle.read(move |view| {
        let user = request.user.as_ref();
        let (status, version) = view.versioned_status(user);
        ViewAnswer {
            status,
            version,
            sessions: view
                .sessions(user)
                .into_iter()
                .map(|s| SessionAnswer {
                    device: s.device.to_string(),
                    connected: s.connected,
                    login_at_ms: s.login_at_ms,
                    heartbeat_at_ms: s.heartbeat_at_ms,
                })
                .collect(),
            subscriptions: view.subscriptions(user),
            friends: view.friends(user),
        }
    });
    match read {
        Ok(pending) => match pending.await {
            Ok(answer) => serde_json::to_vec(&answer).unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
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

/// Requests to this node: ticks, quiescence, restarts, status.
async fn serve_control(inner: Arc<Inner>) {
    let Ok(mut subscriber) = inner.client.subscribe(inner.subjects.control(&inner.id)).await else {
        tracing::error!("cannot listen for control requests");
        return;
    };
    while let Some(message) = subscriber.next().await {
        let Some(reply) = message.reply.clone() else { continue };
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<Control>(&message.payload) {
                Ok(control) => control_answer(&inner, control).await,
                Err(e) => answer_of(&inner, 0, Some(format!("not a control request: {e}"))),
            };
            let _ = inner
                .client
                .publish(reply, Bytes::from(serde_json::to_vec(&answer).unwrap_or_default()))
                .await;
        });
    }
}

fn answer_of(inner: &Inner, latest_ms: u64, error: Option<String>) -> ControlAnswer {
    ControlAnswer {
        node: inner.id.clone(),
        shards: inner.served_all().iter().map(|(s, _)| *s).collect(),
        alive: inner.alive(),
        latest_ms,
        error,
    }
}

async fn control_answer(inner: &Arc<Inner>, control: Control) -> ControlAnswer {
    let served = inner.served_all();
    let mut error = None;
    let mut latest_ms = 0;
    match control {
        Control::Tick { at_ms } => {
            for (_, served) in &served {
                let handle = served.handle.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || handle.tick_at(at_ms)).await {
                    error = Some(e.to_string());
                }
            }
        }
        Control::Quiesce => {
            // Every change in the streams when asked, taken in: two full passes of the
            // follower that start after this point; then every shard at rest.
            let start = inner.follow_passes.load(Ordering::SeqCst);
            let mut asked = 0;
            while inner.follow_passes.load(Ordering::SeqCst) < start + 2 {
                if asked < 2 && inner.follow.try_send(Follow::Pass).is_ok() {
                    asked += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            for (_, served) in &served {
                let handle = served.handle.clone();
                let _ = tokio::task::spawn_blocking(move || handle.quiesce(Duration::from_secs(10))).await;
            }
            // And their notices published before this answer.
            let (done, flushed) = tokio::sync::oneshot::channel();
            if inner.notices.send(Outgoing::Flush(done)).is_ok() {
                let _ = flushed.await;
            }
        }
        Control::Restart => {
            for (shard, served) in &served {
                match restart(inner, *shard, served).await {
                    Ok(latest) => latest_ms = latest_ms.max(latest),
                    Err(e) => error = Some(e),
                }
            }
        }
        Control::DisconnectRestored { at_ms } => {
            for (_, served) in &served {
                let done = match served.handle.disconnect_restored(at_ms) {
                    Ok(pending) => pending.await,
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    error = Some(e.to_string());
                }
            }
        }
        Control::Rebuild => {
            for (_, served) in &served {
                rebuild_watch_table(inner, served).await;
            }
        }
        Control::Resume { at_ms } => {
            for (_, served) in &served {
                if let Ok(pending) = served.handle.resume_at(at_ms) {
                    let _ = pending.await;
                }
            }
        }
        Control::Status => {}
        Control::Hold => inner.holding.store(true, Ordering::SeqCst),
        Control::Release => {
            inner.holding.store(false, Ordering::SeqCst);
            let _ = inner.follow.try_send(Follow::Pass);
        }
    }
    answer_of(inner, latest_ms, error)
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

/// Closes and reopens one shard over its store (R8.2): the engine replays its log.
/// Returns the latest time it logged.
async fn restart(inner: &Arc<Inner>, shard: u32, served: &Arc<Served>) -> Result<u64, String> {
    // Busy while it restarts: between leaving the served shards and coming back, the shard
    // must not look unserved to the ownership loop, which would claim it over the restarted
    // engine (a claim that fences it and replays the log once more).
    let _busy = BusyShard::mark(inner, shard).ok_or("the shard is being claimed or released")?;
    let runtime = lock(&served.runtime).take().ok_or("the shard is not running")?;
    let map = inner.map.clone();
    let engine_config = inner.config.engine.clone();
    let engine = blocking(move || -> Result<Engine<NatsStore>, String> {
        let engine = runtime.shutdown().map_err(|e| e.to_string())?;
        let store = engine.into_store();
        let options =
            EngineOptions { shard: Some(ShardOf { map, index: shard }), outbox: true, ..Default::default() };
        Engine::open_with(engine_config, store, options).map_err(|e| e.to_string())
    })
    .await??;
    let latest = engine.now_ms();
    for task in lock(&served.tasks).drain(..) {
        task.abort();
    }
    lock(&inner.served).remove(&shard);
    let restarted = start_serving(inner, shard, engine, served.claim_seq).await?;
    rebuild_watch_table(inner, &restarted).await;
    Ok(latest)
}

/// The notices of one shard's turns, to the nodes that hold the devices' sockets: one
/// message per turn and owner (R9.2).
struct NatsSink {
    shard: u32,
    subjects: Subjects,
    out: mpsc::UnboundedSender<Outgoing>,
}

impl NoticeSink for NatsSink {
    fn deliver(&mut self, notices: &[Notice], names: &Names<'_>) {
        let mut by_owner: BTreeMap<String, Vec<NoticeOut>> = BTreeMap::new();
        for notice in notices {
            match notice {
                Notice::Status(n) => {
                    for &recipient in &n.recipients {
                        let (to, device) = names.resolve(recipient);
                        let subject = self.subjects.notices(names.owner(recipient).map(|o| o.as_ref()));
                        by_owner.entry(subject).or_default().push(NoticeOut::Status {
                            to: to.to_string(),
                            device: device.to_string(),
                            about: n.about.to_string(),
                            status: n.status.general,
                            custom: n.status.custom.to_string(),
                            version: n.version,
                            cause: n.cause.clone(),
                        });
                    }
                }
                Notice::Kicked(recipient) => {
                    let (to, device) = names.resolve(*recipient);
                    let subject = self.subjects.notices(names.owner(*recipient).map(|o| o.as_ref()));
                    by_owner
                        .entry(subject)
                        .or_default()
                        .push(NoticeOut::Kicked { to: to.to_string(), device: device.to_string() });
                }
            }
        }
        for (subject, notices) in by_owner {
            let batch = NoticeBatch { shard: self.shard, notices };
            let payload = Bytes::from(serde_json::to_vec(&batch).unwrap_or_default());
            let _ = self.out.send(Outgoing::Notices(subject, payload));
        }
    }
}
