//! A runtime thread: the loop of turns over the shards it runs (one, for a single engine).
//! Each turn of a shard is a group commit (R8.3); reads run between turns; snapshots follow
//! the policy; and in a sharded deployment the thread exchanges status changes, reads and
//! friendships with the other shards (R9, docs/DESIGN.md).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use presence_engine::{
    delivery_count, Command, EncodedSnapshot, Engine, Error, EventStore, Notice, RemoteStatuses, Reply,
    SessionHandle, StatusChange, StoreError, StoreErrorKind, UserId,
};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::handle::{Message, ReadJob, RemoteWork, Shared};
use crate::peer::{Peer, PeerRoutes};
use crate::reply::{add_disconnected, ReplyTo};
use crate::stats::SharedStats;
use crate::stop::RuntimeStop;
use crate::{Clock, NoticeSink, RuntimeConfig};

/// A request waiting in a shard's queue.
enum Work {
    Command {
        command: Command,
        at_ms: Option<u64>,
        reply: ReplyTo<Reply>,
        queued_at: Instant,
        /// A friendship the other shard ordered (it is not handed on again).
        mirrored: bool,
        /// Statuses of other shards' users the host read for this command (R9.3).
        given: Option<Box<RemoteStatuses>>,
    },
    Heartbeat {
        session: SessionHandle,
        at_ms: Option<u64>,
        reply: ReplyTo<()>,
        queued_at: Instant,
    },
}

impl Work {
    fn command(&self) -> Option<&Command> {
        match self {
            Work::Command { command, .. } => Some(command),
            Work::Heartbeat { .. } => None,
        }
    }
}

/// How many commands after the current one a turn looks up together with it
/// (`Engine::prefetch`): enough for the misses to overlap, few enough that what they bring
/// in is still in cache when the commands run.
const PREFETCH_AHEAD: usize = 63;

/// A batch of a shard waiting for other shards' statuses (R9.3).
struct Parked {
    batch: Vec<Work>,
    /// Answers still to come.
    waiting: usize,
    remote: RemoteStatuses,
    /// Peer messages that are done once the batch has run.
    peer_done: u64,
}

/// A snapshot being encoded on another thread: the sequence number it covers, and where its
/// bytes (or the failure to encode them) will come.
struct SnapshotInFlight {
    last_seq: u64,
    bytes: Receiver<Result<EncodedSnapshot, StoreError>>,
    /// Who asked for it, if someone did.
    reply: Option<ReplyTo<u64>>,
}

/// One shard run by this thread.
struct Slot<S> {
    shard: u32,
    engine: Engine<S>,
    queue: VecDeque<Work>,
    /// Peer messages among `queue` (mirrored friendships) that are done once they have run.
    queued_peers: u64,
    parked: Option<Parked>,
    /// For each user of this shard that users of other shards watch, those shards (R9.2).
    interest: FxHashMap<UserId, SmallVec<[u32; 2]>>,
    /// Logged since the last snapshot (for the policy).
    events_since_snapshot: u64,
    bytes_since_snapshot: u64,
    last_snapshot_ms: u64,
    snapshot: Option<SnapshotInFlight>,
}

impl<S> Slot<S> {
    fn idle(&self) -> bool {
        self.queue.is_empty() && self.parked.is_none()
    }
}

/// A request that waits until every shard of the thread is idle: ticks are barriers (R9.4).
enum Global {
    Tick {
        at_ms: Option<u64>,
        reply: ReplyTo<()>,
    },
    /// What a host that runs other shards in other processes hands every shard.
    Remote {
        remote: RemoteWork,
        reply: ReplyTo<()>,
    },
    /// `disconnect_sessions`, which every shard runs on its own sessions.
    Disconnect {
        command: Command,
        at_ms: Option<u64>,
        reply: ReplyTo<Reply>,
        queued_at: Instant,
    },
    Snapshot {
        reply: ReplyTo<u64>,
    },
    Barrier {
        reply: ReplyTo<()>,
    },
    Shutdown,
}

/// What one turn of a shard did, for its answers and messages.
#[derive(Default)]
struct TurnOutput {
    notices: Vec<Notice>,
    changes: Vec<StatusChange>,
    mirrors: Vec<(Command, u64)>,
}

/// Everything a runtime thread needs; see [`Worker::run`].
pub(crate) struct Worker<S, C, N> {
    slots: Vec<Slot<S>>,
    /// `slot_of[shard]`: the slot of a shard of this thread.
    slot_of: FxHashMap<u32, usize>,
    clock: C,
    sink: N,
    config: RuntimeConfig,
    commands: Receiver<Message>,
    reads: Receiver<(u32, ReadJob)>,
    peers: Receiver<Peer>,
    routes: Arc<PeerRoutes>,
    shared: Arc<Shared>,
    /// Whether this thread ticks by itself after each round of turns and when idle (the only
    /// thread of a deployment, with `auto_tick`); otherwise ticks come as requests.
    local_ticks: bool,
    /// Ticks run so far (R9.4).
    epoch: u64,
    /// Peer messages from shards that have run more ticks than this thread, in arrival order.
    early: VecDeque<Peer>,
    global: Option<Global>,
}

impl<S: EventStore, C: Clock, N: NoticeSink> Worker<S, C, N> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        engines: Vec<(u32, Engine<S>)>,
        clock: C,
        sink: N,
        config: RuntimeConfig,
        commands: Receiver<Message>,
        reads: Receiver<(u32, ReadJob)>,
        peers: Receiver<Peer>,
        routes: Arc<PeerRoutes>,
        local_ticks: bool,
    ) -> Self {
        let now = clock.now_ms();
        let slots: Vec<Slot<S>> = engines
            .into_iter()
            .map(|(shard, engine)| Slot {
                shard,
                engine,
                queue: VecDeque::new(),
                queued_peers: 0,
                parked: None,
                interest: FxHashMap::default(),
                events_since_snapshot: 0,
                bytes_since_snapshot: 0,
                last_snapshot_ms: now,
                snapshot: None,
            })
            .collect();
        let slot_of = slots.iter().enumerate().map(|(i, slot)| (slot.shard, i)).collect();
        let shared = Arc::clone(&routes.shared);
        Worker {
            slots,
            slot_of,
            clock,
            sink,
            config,
            commands,
            reads,
            peers,
            routes,
            shared,
            local_ticks,
            epoch: 0,
            early: VecDeque::new(),
            global: None,
        }
    }

    /// Runs until a shutdown request (after what was queued before it) or a failed sync, and
    /// hands back the engines with their shards.
    pub(crate) fn run(mut self) -> Result<Vec<(u32, Engine<S>)>, Error> {
        self.rebuild_watch_tables();
        // A panic of the thread stops the runtime like a failure, so that the host hears of it.
        let result = catch_unwind(AssertUnwindSafe(|| self.serve())).unwrap_or_else(|_| {
            Err(Error::Storage(StoreError::new(StoreErrorKind::Io, "a presence runtime thread panicked")))
        });
        // The host learns at once, before the queues are emptied (docs/DESIGN.md, "When the
        // store fails").
        match &result {
            Ok(()) => self.shared.stop.set(RuntimeStop::Shutdown),
            Err(e) => {
                tracing::error!(error = %e, "the presence runtime stopped: it answers nothing more");
                self.shared.stop.set(RuntimeStop::Failed(e.to_string()));
            }
        }
        // From here nothing runs what is queued: dropping it answers every waiting reply with
        // `Stopped` (a message left in a channel is never dropped while a handle keeps the
        // channel alive). Requests being queued now are waited for (emptying the queues lets a
        // sender blocked on a full one finish); later ones see `stopped` (see `Shared::enter`).
        self.shared.stopped.store(true, Ordering::SeqCst);
        loop {
            self.drop_queued();
            if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::thread::yield_now();
        }
        self.drop_queued();
        result.map(|()| self.slots.into_iter().map(|slot| (slot.shard, slot.engine)).collect())
    }

    fn drop_queued(&mut self) {
        while self.commands.try_recv().is_ok() {}
        while self.reads.try_recv().is_ok() {}
        let mut dropped = 0;
        while self.peers.try_recv().is_ok() {
            dropped += 1;
        }
        dropped += self.early.drain(..).count() as u64;
        for slot in &mut self.slots {
            slot.queue.clear();
            dropped += std::mem::take(&mut slot.queued_peers);
            if let Some(parked) = slot.parked.take() {
                dropped += parked.peer_done;
            }
        }
        self.routes.done(dropped);
    }

    /// After an open, asks the owning shards for the statuses of the users this thread's
    /// shards watch, and for their changes from now on (R9.5).
    fn rebuild_watch_tables(&mut self) {
        for slot in &self.slots {
            let mut by_owner: FxHashMap<u32, Vec<UserId>> = FxHashMap::default();
            for user in slot.engine.remote_watched() {
                by_owner.entry(self.routes.map.shard_of(&user)).or_default().push(user);
            }
            for (owner, users) in by_owner {
                for user in &users {
                    self.routes.send(Peer::Interest { owner, user: user.clone(), watcher: slot.shard });
                }
                self.routes.send(Peer::Read { owner, users, from: slot.shard, for_batch: false });
            }
        }
    }

    /// Turns until a shutdown (then what is queued before it), or until a sync fails.
    fn serve(&mut self) -> Result<(), Error> {
        let wait = Duration::from_millis(self.config.tick_interval_ms.max(1));
        loop {
            self.handle_peers()?;
            self.run_reads();
            self.finish_snapshots(false);
            let ran = self.run_ready()?;
            if ran && self.local_ticks {
                self.tick_all(None)?;
            }
            if self.global.is_some() {
                if self.idle() {
                    if let Some(Global::Shutdown) = self.run_global()? {
                        return self.drain();
                    }
                    continue;
                }
                // A batch waits for other shards: take their messages, nothing new.
                select! {
                    recv(self.peers) -> peer => if let Ok(peer) = peer { self.handle_peer(peer)? },
                    recv(self.reads) -> read => if let Ok(read) = read { self.run_read(read) },
                    default(wait) => {},
                }
                continue;
            }
            let first = select! {
                recv(self.commands) -> message => match message {
                    Ok(message) => Some(message),
                    Err(_) => return self.sync_all(),
                },
                recv(self.reads) -> read => {
                    if let Ok(read) = read {
                        self.run_read(read);
                    }
                    continue;
                },
                recv(self.peers) -> peer => {
                    if let Ok(peer) = peer {
                        self.handle_peer(peer)?;
                    }
                    continue;
                },
                default(wait) => None,
            };
            match first {
                Some(message) => self.take_in(message),
                None if self.local_ticks && !self.busy() => self.tick_all(None)?,
                None => {}
            }
            while self.global.is_none() {
                let Ok(message) = self.commands.try_recv() else { break };
                self.take_in(message);
                if self.queued() >= self.config.max_batch {
                    break;
                }
            }
        }
    }

    /// After a shutdown request: runs what was queued before it, then syncs.
    fn drain(&mut self) -> Result<(), Error> {
        while let Ok(message) = self.commands.try_recv() {
            if !matches!(message, Message::Shutdown) {
                self.take_in(message);
            }
            while self.global.is_some() || self.queued() >= self.config.max_batch {
                self.settle()?;
                if self.idle() {
                    let _ = self.run_global()?;
                }
            }
        }
        self.settle()?;
        self.run_reads();
        self.finish_snapshots(true);
        self.sync_all()
    }

    /// Runs until every shard of the thread is idle and nothing from the other shards is
    /// waiting to be taken in (only for a shutdown: other threads may still be sending).
    fn settle(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.handle_peers()?;
            self.run_ready()?;
            if self.idle() || Instant::now() >= deadline {
                return Ok(());
            }
            if let Ok(peer) = self.peers.recv_timeout(Duration::from_millis(10)) {
                self.handle_peer(peer)?;
            }
        }
    }

    fn sync_all(&mut self) -> Result<(), Error> {
        for slot in &mut self.slots {
            slot.engine.sync()?;
        }
        Ok(())
    }

    fn idle(&self) -> bool {
        self.slots.iter().all(Slot::idle)
    }

    /// Whether a shard has commands waiting or parked.
    fn busy(&self) -> bool {
        !self.idle()
    }

    fn queued(&self) -> usize {
        self.slots.iter().map(|slot| slot.queue.len()).sum()
    }

    /// Files a request from the host: a command or heartbeat into its shard's queue; the rest
    /// wait until every shard is idle.
    fn take_in(&mut self, message: Message) {
        match message {
            Message::Command {
                command: command @ Command::DisconnectSessions { .. },
                at_ms,
                reply,
                queued_at,
                ..
            } => self.global = Some(Global::Disconnect { command, at_ms, reply, queued_at }),
            Message::Command { shard, command, at_ms, reply, queued_at } => {
                let work = Work::Command { command, at_ms, reply, queued_at, mirrored: false, given: None };
                self.file(shard, work);
            }
            Message::Heartbeat { shard, session, at_ms, reply, queued_at } => {
                self.file(shard, Work::Heartbeat { session, at_ms, reply, queued_at });
            }
            Message::CommandWithStatuses { shard, command, at_ms, reply, queued_at } => {
                let (command, statuses) = *command;
                let given = Some(Box::new(statuses));
                let work = Work::Command { command, at_ms, reply, queued_at, mirrored: false, given };
                self.file(shard, work);
            }
            // In order with the commands queued before it: a barrier, as a tick is.
            Message::Remote { remote, reply } => self.global = Some(Global::Remote { remote, reply }),
            Message::Tick { at_ms, reply } => self.global = Some(Global::Tick { at_ms, reply }),
            Message::Snapshot { reply } => self.global = Some(Global::Snapshot { reply }),
            Message::Barrier { reply } => self.global = Some(Global::Barrier { reply }),
            Message::Shutdown => self.global = Some(Global::Shutdown),
        }
    }

    /// What a host that runs other shards in other processes hands this thread's shard `i`.
    fn take_in_remote(&mut self, i: usize, remote: &RemoteWork) -> Result<(), Error> {
        match remote {
            RemoteWork::Observe(changes) => {
                let mut notices = Vec::new();
                for change in changes.iter() {
                    notices.extend(self.slots[i].engine.observe_remote(change).notices);
                }
                deliver(&self.shared, &mut self.sink, &self.slots[i].engine, &notices);
            }
            RemoteWork::Learn(statuses) => {
                for (user, status, version) in statuses.iter() {
                    self.slots[i].engine.learn_remote(user, status, *version);
                }
            }
            RemoteWork::Resume(at_ms) => self.slots[i].engine.resume_at(*at_ms),
            RemoteWork::DisconnectRestored(at_ms) => {
                let engine = &mut self.slots[i].engine;
                engine.disconnect_restored(*at_ms)?;
                engine.sync()?;
            }
        }
        Ok(())
    }

    fn file(&mut self, shard: u32, work: Work) {
        match self.slot_of.get(&shard) {
            Some(&i) => self.slots[i].queue.push_back(work),
            None => {
                // Routing never sends a request to a thread without its shard.
                tracing::error!(shard, "a request reached a thread that does not run its shard");
                let error = || Error::InvalidParameter(format!("shard {shard} is not run by this thread"));
                match work {
                    Work::Command { reply, .. } => reply.send(Err(error())),
                    Work::Heartbeat { reply, .. } => reply.send(Err(error())),
                }
            }
        }
    }

    /// Runs the request every shard waited for. Returns it if it was a shutdown.
    fn run_global(&mut self) -> Result<Option<Global>, Error> {
        match self.global.take() {
            Some(Global::Tick { at_ms, reply }) => {
                let result = self.tick_all(at_ms);
                match result {
                    Ok(()) => reply.send(Ok(())),
                    Err(e) => {
                        self.shared.stop.set(RuntimeStop::Failed(e.to_string()));
                        reply.send(Err(Error::Storage(StoreError::new(
                            StoreErrorKind::Io,
                            format!("the tick could not be made durable, the runtime stopped: {e}"),
                        ))));
                        return Err(e);
                    }
                }
                Ok(None)
            }
            Some(Global::Disconnect { command, at_ms, reply, queued_at }) => {
                // A barrier as a tick is: what it changes reaches other shards once they have
                // run it too (R9.4, R5.3).
                self.epoch += 1;
                let parts = reply.split(self.slots.len(), add_disconnected);
                for (i, reply) in parts.into_iter().enumerate() {
                    let command = command.clone();
                    let work =
                        Work::Command { command, at_ms, reply, queued_at, mirrored: false, given: None };
                    self.turn(i, vec![work], no_remote_statuses(), 0)?;
                }
                self.release_early()?;
                Ok(None)
            }
            Some(Global::Remote { remote, reply }) => {
                let mut result = Ok(());
                for i in 0..self.slots.len() {
                    if let Err(e) = self.take_in_remote(i, &remote) {
                        result = Err(e);
                    }
                }
                reply.send(result);
                Ok(None)
            }
            Some(Global::Snapshot { reply }) => {
                let parts = reply.split(self.slots.len(), |a, b| a.saturating_add(b));
                for (i, reply) in parts.into_iter().enumerate() {
                    self.start_snapshot(i, Some(reply));
                }
                Ok(None)
            }
            Some(Global::Barrier { reply }) => {
                reply.send(Ok(()));
                Ok(None)
            }
            Some(Global::Shutdown) => Ok(Some(Global::Shutdown)),
            None => Ok(None),
        }
    }

    fn run_reads(&mut self) {
        while let Ok(read) = self.reads.try_recv() {
            self.run_read(read);
        }
    }

    fn run_read(&mut self, (shard, read): (u32, ReadJob)) {
        SharedStats::add(&self.shared.stats.reads, 1);
        let Some(&i) = self.slot_of.get(&shard) else { return };
        if let Some(recovery) = self.shared.recovery() {
            // Another shard may have fixed the deployment's recovery time (R8.2).
            self.slots[i].engine.resume_at(recovery);
        }
        let view = self.slots[i].engine.view();
        // A panicking read loses its own reply (answered `Stopped`), nothing else.
        if catch_unwind(AssertUnwindSafe(|| read(&view))).is_err() {
            tracing::error!("a read run on the presence runtime panicked");
        }
    }

    fn handle_peers(&mut self) -> Result<(), Error> {
        while let Ok(peer) = self.peers.try_recv() {
            self.handle_peer(peer)?;
        }
        Ok(())
    }

    fn handle_peer(&mut self, peer: Peer) -> Result<(), Error> {
        if peer.epoch().is_some_and(|epoch| epoch > self.epoch)
            || (!self.early.is_empty() && peer.epoch().is_some())
        {
            // From a shard that has run a tick this thread has not: after it (R9.4).
            self.early.push_back(peer);
            return Ok(());
        }
        let Some(&i) = self.slot_of.get(&peer.shard()) else {
            self.routes.done(1);
            return Ok(());
        };
        match peer {
            Peer::Interest { user, watcher, .. } => {
                let watchers = self.slots[i].interest.entry(user).or_default();
                if !watchers.contains(&watcher) {
                    watchers.push(watcher);
                }
                self.routes.done(1);
            }
            Peer::Uninterest { user, watcher, .. } => {
                let interest = &mut self.slots[i].interest;
                if let Some(watchers) = interest.get_mut(&user) {
                    watchers.retain(|w| *w != watcher);
                    if watchers.is_empty() {
                        interest.remove(&user);
                    }
                }
                self.routes.done(1);
            }
            Peer::Read { users, from, for_batch, .. } => {
                let engine = &self.slots[i].engine;
                let statuses = users
                    .into_iter()
                    .map(|user| {
                        let (status, version) = engine.versioned_status(&user);
                        (user, status, version)
                    })
                    .collect();
                self.routes.send(Peer::Answer { to: from, statuses, for_batch });
                self.routes.done(1);
            }
            Peer::Answer { statuses, for_batch: false, .. } => {
                let engine = &mut self.slots[i].engine;
                for (user, status, version) in statuses {
                    engine.learn_remote(&user, &status, version);
                }
                self.routes.done(1);
            }
            Peer::Answer { statuses, for_batch: true, .. } => {
                let Some(parked) = self.slots[i].parked.as_mut() else {
                    tracing::error!("an answer from another shard came for no waiting batch");
                    self.routes.done(1);
                    return Ok(());
                };
                parked
                    .remote
                    .extend(statuses.into_iter().map(|(user, status, version)| (user, (status, version))));
                parked.waiting = parked.waiting.saturating_sub(1);
                parked.peer_done += 1;
                if parked.waiting == 0 {
                    if let Some(parked) = self.slots[i].parked.take() {
                        self.turn(i, parked.batch, &parked.remote, parked.peer_done)?;
                    }
                }
            }
            Peer::Changes { changes, .. } => {
                self.observe(i, &changes);
                self.routes.done(1);
            }
            Peer::Mirror { command, at_ms, .. } => {
                let slot = &mut self.slots[i];
                slot.queue.push_back(Work::Command {
                    command,
                    at_ms: Some(at_ms),
                    reply: ReplyTo::None,
                    queued_at: Instant::now(),
                    mirrored: true,
                    given: None,
                });
                slot.queued_peers += 1;
            }
        }
        Ok(())
    }

    /// Takes in other shards' status changes (R9.2): the watch table keeps the newest, local
    /// devices watching them are notified, and the owners of users nobody here watches any
    /// more are told to stop sending.
    fn observe(&mut self, i: usize, changes: &[StatusChange]) {
        let slot = &mut self.slots[i];
        let mut notices = Vec::new();
        for change in changes {
            let observed = slot.engine.observe_remote(change);
            notices.extend(observed.notices);
            if !observed.watched {
                let owner = self.routes.map.shard_of(&change.user);
                self.routes.send(Peer::Uninterest { owner, user: change.user.clone(), watcher: slot.shard });
            }
        }
        deliver(&self.shared, &mut self.sink, &slot.engine, &notices);
    }

    /// Takes in the peer messages that waited for the tick just run.
    fn release_early(&mut self) -> Result<(), Error> {
        let early = std::mem::take(&mut self.early);
        for peer in early {
            self.handle_peer(peer)?;
        }
        Ok(())
    }

    /// Starts a turn on every shard with requests and nothing parked: at once, or once the
    /// statuses of other shards' users its batch names have come (R9.3). Whether any ran.
    fn run_ready(&mut self) -> Result<bool, Error> {
        let mut ran = false;
        for i in 0..self.slots.len() {
            if self.slots[i].parked.is_some() || self.slots[i].queue.is_empty() {
                continue;
            }
            let take = self.slots[i].queue.len().min(self.config.max_batch.max(1));
            let batch: Vec<Work> = self.slots[i].queue.drain(..take).collect();
            let peer_done =
                batch.iter().filter(|w| matches!(w, Work::Command { mirrored: true, .. })).count() as u64;
            self.slots[i].queued_peers -= peer_done.min(self.slots[i].queued_peers);
            let mut given = RemoteStatuses::new();
            for work in &batch {
                if let Work::Command { given: Some(statuses), .. } = work {
                    for (user, (status, version)) in statuses.iter() {
                        match given.get(user) {
                            Some((_, known)) if known >= version => {}
                            _ => _ = given.insert(user.clone(), (status.clone(), *version)),
                        }
                    }
                }
            }
            let reads = self.ask_remote(i, &batch);
            if reads == 0 {
                self.turn(i, batch, &given, peer_done)?;
                ran = true;
            } else {
                self.slots[i].parked = Some(Parked { batch, waiting: reads, remote: given, peer_done });
            }
        }
        Ok(ran)
    }

    /// Asks the owning shards for the statuses of their users that `batch` names and this
    /// shard does not know (R9.3), first registering interest in those a command of the batch
    /// may start to watch (a subscription, a friendship when friends are notified), so that
    /// no change after the answer is missed. Returns how many answers to wait for.
    fn ask_remote(&self, i: usize, batch: &[Work]) -> usize {
        let slot = &self.slots[i];
        let engine = &slot.engine;
        if self.routes.map.count() == 1 {
            return 0;
        }
        let friends = engine.config().friend_notifications;
        let mut reads: FxHashMap<u32, Vec<UserId>> = FxHashMap::default();
        let mut ask = |user: &UserId, watch: bool| {
            if engine.is_local(user) || engine.knows_remote(user) {
                return;
            }
            let owner = self.routes.map.shard_of(user);
            let users = reads.entry(owner).or_default();
            if users.contains(user) {
                return;
            }
            if watch {
                self.routes.send(Peer::Interest { owner, user: user.clone(), watcher: slot.shard });
            }
            users.push(user.clone());
        };
        for work in batch {
            let Work::Command { command, .. } = work else { continue };
            match command {
                Command::GetStatus { targets, .. } => targets.iter().for_each(|t| ask(t, false)),
                Command::Subscribe { targets, .. } => targets.iter().for_each(|t| ask(t, true)),
                Command::AddFriend { user, friend } if friends => {
                    ask(user, true);
                    ask(friend, true);
                }
                _ => {}
            }
        }
        let count = reads.len();
        for (owner, users) in reads {
            self.routes.send(Peer::Read { owner, users, from: slot.shard, for_batch: true });
        }
        count
    }

    /// One turn of shard `i`: decides and applies `batch` as group commits (one, unless the
    /// turn outgrows a batch of the store), syncs once, then answers and delivers (R8.3),
    /// and hands the shard's durable status changes and friendships to the shards that need
    /// them (R9.2).
    fn turn(
        &mut self,
        i: usize,
        batch: Vec<Work>,
        remote: &RemoteStatuses,
        peer_done: u64,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let span = tracing::debug_span!("presence_turn", shard = self.slots[i].shard, requests = batch.len());
        let _entered = span.enter();
        let now_ms = self.clock.now_ms();
        let slot = &mut self.slots[i];
        if let Some(recovery) = self.shared.recovery() {
            slot.engine.resume_at(recovery);
        }
        // A new group starts when this little room is left in a batch of the store, so that
        // no command's events find the batch full.
        let split_below = slot.engine.store().batch_bytes_max() / 4;
        let mut answers: Vec<(usize, Instant, Answer)> = Vec::with_capacity(batch.len());
        let mut outputs: Vec<TurnOutput> = vec![TurnOutput::default()];
        let mut outcomes: Vec<Result<usize, Error>> = Vec::new();
        let bytes_before = slot.engine.bytes_appended();
        // Only shards that watch this one's users need its status changes (`hand_on`).
        let wants_changes = !slot.interest.is_empty();
        let mut group = slot.engine.group();
        let mut works = batch.into_iter();
        let mut prefetched = 0;
        while let Some(work) = works.next() {
            if prefetched == 0 {
                // The users of the next few commands, looked up together first, so that
                // their cache misses overlap (`Engine::prefetch`).
                let ahead = &works.as_slice()[..PREFETCH_AHEAD.min(works.len())];
                group.engine().prefetch(std::iter::once(&work).chain(ahead).filter_map(Work::command));
                prefetched = ahead.len() + 1;
            }
            prefetched -= 1;
            if group.bytes_left() < split_below {
                outcomes.push(group.commit());
                outputs.push(TurnOutput::default());
                group = slot.engine.group();
            }
            let index = outcomes.len();
            let output = &mut outputs[index];
            let (queued_at, answer) = match work {
                Work::Command { command, at_ms, reply, queued_at, mirrored, .. } => {
                    let mirror = match (&command, mirrored) {
                        (Command::AddFriend { .. } | Command::RemoveFriend { .. }, false) => {
                            Some(command.clone())
                        }
                        _ => None,
                    };
                    let at_ms = self.shared.at_least_latest(at_ms.unwrap_or(now_ms));
                    let result = group.execute_with_remote(command, at_ms, remote).map(|outcome| {
                        if wants_changes {
                            output.changes.extend(outcome.changes());
                        }
                        output.notices.extend(outcome.notices);
                        outcome.reply
                    });
                    if result.is_ok() {
                        self.shared.adopt(group.engine().now_ms());
                    }
                    if let (Some(command), true) = (mirror, result.is_ok()) {
                        output.mirrors.push((command, group.engine().now_ms()));
                    }
                    if mirrored {
                        if let Err(e) = &result {
                            tracing::error!(error = %e, "a friendship recorded by the other shard was refused here");
                        }
                    }
                    (queued_at, Answer::Command(reply, result))
                }
                Work::Heartbeat { session, at_ms, reply, queued_at } => {
                    let at_ms = self.shared.at_least_latest(at_ms.unwrap_or(now_ms));
                    let result = group.heartbeat(session, at_ms);
                    if result.is_ok() {
                        self.shared.adopt(group.engine().now_ms());
                    }
                    (queued_at, Answer::Heartbeat(reply, result))
                }
            };
            answers.push((index, queued_at, answer));
        }
        outcomes.push(group.commit());
        let sync_started = Instant::now();
        let synced = self.commit_turn(i, &outcomes, bytes_before, sync_started);
        let sync_failure = synced.as_ref().err().map(|e| {
            tracing::error!(error = %e, "the store could not sync a turn; the presence runtime stops");
            // Said before any answer goes, so that a host that sees the failed reply also
            // sees why the runtime stopped.
            self.shared.stop.set(RuntimeStop::Failed(e.to_string()));
            Failure::of(e, "the turn could not be made durable, the runtime stopped")
        });
        let group_failures: Vec<Option<Failure>> = outcomes
            .iter()
            .map(|o| {
                o.as_ref().err().map(|e| Failure::of(e, "the store refused the turn, nothing of it was kept"))
            })
            .collect();
        let mut waits = Vec::with_capacity(answers.len());
        for (index, queued_at, answer) in answers {
            let failure = group_failures[index].as_ref().or(sync_failure.as_ref());
            let ok = answer.is_ok() && failure.is_none();
            let counter = if ok { &self.shared.stats.commands } else { &self.shared.stats.refused };
            SharedStats::add(counter, 1);
            waits.push(queued_at.elapsed());
            answer.send(failure);
        }
        match synced {
            Err(e) => {
                self.shared.stats.record_turn(started.elapsed(), None, &waits);
                self.routes.done(peer_done);
                Err(e)
            }
            Ok(sync_took) => {
                for (output, outcome) in outputs.into_iter().zip(&outcomes) {
                    if outcome.is_ok() {
                        self.hand_on(i, output);
                    }
                }
                let slot = &mut self.slots[i];
                for (user, (status, version)) in remote {
                    slot.engine.learn_remote(user, status, *version);
                }
                self.shared.stats.record_turn(started.elapsed(), sync_took, &waits);
                self.routes.done(peer_done);
                self.start_snapshot(i, None);
                Ok(())
            }
        }
    }

    /// Counts what a turn of shard `i` logged and syncs it: how long the sync took, `None`
    /// if there was nothing to sync.
    fn commit_turn(
        &mut self,
        i: usize,
        outcomes: &[Result<usize, Error>],
        bytes_before: u64,
        sync_started: Instant,
    ) -> Result<Option<Duration>, Error> {
        let slot = &mut self.slots[i];
        let events: usize = outcomes.iter().filter_map(|o| o.as_ref().ok()).sum();
        let bytes = slot.engine.bytes_appended() - bytes_before;
        SharedStats::add(&self.shared.stats.events, events as u64);
        SharedStats::add(&self.shared.stats.bytes_appended, bytes);
        for failure in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            SharedStats::add(&self.shared.stats.store_failures, 1);
            self.shared.store_failing.store(true, Ordering::SeqCst);
            tracing::warn!(error = %failure, "the store refused a turn's batch; its commands failed and changed nothing");
        }
        SharedStats::add(&self.shared.stats.turns, 1);
        slot.events_since_snapshot += events as u64;
        slot.bytes_since_snapshot += bytes;
        let synced = match (events, self.config.sync_each_turn) {
            (0, _) | (_, false) => Ok(None),
            _ => slot.engine.sync().map(|()| Some(sync_started.elapsed())),
        };
        if events > 0 && synced.is_ok() && outcomes.iter().all(Result::is_ok) {
            // The store took this turn's writes again.
            self.shared.store_failing.store(false, Ordering::SeqCst);
        }
        synced
    }

    /// After a durable turn of shard `i`: its notices to the host, its status changes to the
    /// shards watching them, its friendships to the other user's shard.
    fn hand_on(&mut self, i: usize, output: TurnOutput) {
        let slot = &self.slots[i];
        deliver(&self.shared, &mut self.sink, &slot.engine, &output.notices);
        if !slot.interest.is_empty() {
            let mut by_watcher: FxHashMap<u32, Vec<StatusChange>> = FxHashMap::default();
            for change in output.changes {
                let Some(watchers) = slot.interest.get(&change.user) else { continue };
                for &watcher in watchers {
                    by_watcher.entry(watcher).or_default().push(change.clone());
                }
            }
            for (to, changes) in by_watcher {
                self.routes.send(Peer::Changes { to, changes, epoch: self.epoch });
            }
        }
        for (command, at_ms) in output.mirrors {
            let (Command::AddFriend { user, friend } | Command::RemoveFriend { user, friend }) = &command
            else {
                continue;
            };
            let map = &self.routes.map;
            let other = match map.shard_of(user) {
                shard if shard == slot.shard => map.shard_of(friend),
                shard => shard,
            };
            if other != slot.shard {
                self.routes.send(Peer::Mirror { to: other, command, at_ms, epoch: self.epoch });
            }
        }
    }

    /// A tick of every shard of the thread, at `at_ms` or the clock's time; then the messages
    /// from shards that were a tick ahead.
    fn tick_all(&mut self, at_ms: Option<u64>) -> Result<(), Error> {
        let at_ms = self.shared.at_least_latest(at_ms.unwrap_or_else(|| self.clock.now_ms()));
        self.shared.adopt(at_ms);
        self.epoch += 1;
        let mut failed = None;
        for i in 0..self.slots.len() {
            if let Some(recovery) = self.shared.recovery() {
                self.slots[i].engine.resume_at(recovery);
            }
            let bytes_before = self.slots[i].engine.bytes_appended();
            let wants_changes = !self.slots[i].interest.is_empty();
            let mut group = self.slots[i].engine.group();
            let mut output = TurnOutput::default();
            let ticked = group.tick(at_ms).map(|outcome| {
                if wants_changes {
                    output.changes = outcome.changes();
                }
                output.notices = outcome.notices;
            });
            let outcomes = [ticked.and_then(|()| group.commit())];
            match self.commit_turn(i, &outcomes, bytes_before, Instant::now()) {
                Ok(_) if outcomes[0].is_ok() => {
                    self.hand_on(i, output);
                    self.start_snapshot(i, None);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the store could not sync a tick; the presence runtime stops");
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => self.release_early(),
        }
    }

    /// Starts a snapshot of shard `i` when one is asked for or the policy says it is due (and
    /// none is under way): the state is captured now, between turns, and encoded on another
    /// thread.
    fn start_snapshot(&mut self, i: usize, request: Option<ReplyTo<u64>>) {
        let now = self.clock.now_ms();
        let slot = &self.slots[i];
        let elapsed_ms = now.saturating_sub(slot.last_snapshot_ms);
        let due =
            self.config.snapshots.due(slot.events_since_snapshot, slot.bytes_since_snapshot, elapsed_ms);
        if request.is_none() && !due {
            return;
        }
        if self.slots[i].snapshot.is_some() {
            // One at a time: finish the one under way first (asked-for snapshots wait for it).
            self.finish_snapshot(i, true);
        }
        let slot = &mut self.slots[i];
        let last_seq = slot.engine.last_seq();
        let capture_started = Instant::now();
        let captured = slot.engine.capture_snapshot();
        self.shared.stats.record_snapshot_pause(capture_started.elapsed());
        let (sender, bytes) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new().name("presence-snapshot".into()).spawn(move || {
            let _ = sender.send(captured.encode());
        });
        match spawned {
            Ok(_) => slot.snapshot = Some(SnapshotInFlight { last_seq, bytes, reply: request }),
            Err(e) => {
                SharedStats::add(&self.shared.stats.snapshot_failures, 1);
                tracing::error!(error = %e, "cannot start a thread to encode a snapshot");
                if let Some(reply) = request {
                    reply.send(Err(Error::Storage(StoreError::with_source(
                        StoreErrorKind::Io,
                        "cannot start a thread to encode a snapshot",
                        std::io::Error::new(e.kind(), e.to_string()),
                    ))));
                }
            }
        }
        slot.events_since_snapshot = 0;
        slot.bytes_since_snapshot = 0;
        slot.last_snapshot_ms = now;
    }

    fn finish_snapshots(&mut self, wait: bool) {
        for i in 0..self.slots.len() {
            self.finish_snapshot(i, wait);
        }
    }

    /// Saves the snapshot of shard `i` under way if its bytes are ready (or, with `wait`,
    /// once they are).
    fn finish_snapshot(&mut self, i: usize, wait: bool) {
        let slot = &mut self.slots[i];
        let Some(in_flight) = &slot.snapshot else { return };
        let encoded = match wait {
            true => in_flight.bytes.recv().map_err(|_| ()),
            false => match in_flight.bytes.try_recv() {
                Ok(encoded) => Ok(encoded),
                Err(crossbeam_channel::TryRecvError::Empty) => return,
                Err(crossbeam_channel::TryRecvError::Disconnected) => Err(()),
            },
        };
        let Some(in_flight) = slot.snapshot.take() else { return };
        let saved = match encoded {
            Ok(Ok(encoded)) => slot
                .engine
                .save_encoded_snapshot(&encoded, self.config.snapshots.compact)
                .map(|()| in_flight.last_seq),
            Ok(Err(e)) => Err(Error::Storage(e)),
            Err(()) => {
                Err(Error::Storage(StoreError::new(StoreErrorKind::Io, "the snapshot encoder stopped")))
            }
        };
        match &saved {
            Ok(seq) => {
                SharedStats::add(&self.shared.stats.snapshots, 1);
                self.shared.stats.snapshot_seq.store(*seq, Ordering::Relaxed);
                tracing::info!(shard = slot.shard, last_seq = seq, "presence snapshot saved");
            }
            Err(e) => {
                SharedStats::add(&self.shared.stats.snapshot_failures, 1);
                tracing::error!(shard = slot.shard, error = %e, "a presence snapshot failed; the log is intact");
            }
        }
        if let Some(reply) = in_flight.reply {
            reply.send(saved);
        }
    }
}

/// No remote statuses, for a command every shard runs alone (`disconnect_sessions`): made
/// once, instead of an empty map made and dropped per command.
fn no_remote_statuses() -> &'static RemoteStatuses {
    static NONE: std::sync::OnceLock<RemoteStatuses> = std::sync::OnceLock::new();
    NONE.get_or_init(RemoteStatuses::new)
}

/// Hands notices of `engine` to the host's sink.
fn deliver<S: EventStore>(
    shared: &Shared,
    sink: &mut impl NoticeSink,
    engine: &Engine<S>,
    notices: &[Notice],
) {
    if notices.is_empty() {
        return;
    }
    SharedStats::add(&shared.stats.deliveries, delivery_count(notices) as u64);
    let names = engine.names();
    if catch_unwind(AssertUnwindSafe(|| sink.deliver(notices, &names))).is_err() {
        SharedStats::add(&shared.stats.sink_panics, 1);
        tracing::error!("the notice sink panicked; the turn's events are durable, its notices lost");
    }
}

/// Why a turn's commands fail though each succeeded on its own: the store's failure, its kind
/// kept (a fenced store says so to the host), with what it means for the turn.
struct Failure {
    kind: StoreErrorKind,
    message: String,
}

impl Failure {
    fn of(error: &Error, meaning: &str) -> Failure {
        let kind = match error {
            Error::Storage(e) => e.kind(),
            _ => StoreErrorKind::Io,
        };
        Failure { kind, message: format!("{meaning}: {error}") }
    }
}

/// Where one request's answer goes, and what it was.
enum Answer {
    Command(ReplyTo<Reply>, Result<Reply, Error>),
    Heartbeat(ReplyTo<()>, Result<(), Error>),
}

impl Answer {
    fn is_ok(&self) -> bool {
        match self {
            Answer::Command(_, r) => r.is_ok(),
            Answer::Heartbeat(_, r) => r.is_ok(),
        }
    }

    /// Sends the answer, or `failure` instead of a success.
    fn send(self, failure: Option<&Failure>) {
        let fail = |why: &Failure| Error::Storage(StoreError::new(why.kind, why.message.clone()));
        match self {
            Answer::Command(reply, result) => {
                let result = match (failure, result) {
                    (Some(why), Ok(_)) => Err(fail(why)),
                    (_, result) => result,
                };
                reply.send(result);
            }
            Answer::Heartbeat(reply, result) => {
                let result = match (failure, result) {
                    (Some(why), Ok(())) => Err(fail(why)),
                    (_, result) => result,
                };
                reply.send(result);
            }
        }
    }
}
