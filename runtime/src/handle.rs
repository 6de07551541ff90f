//! The host's side of the runtime: a cheap, cloneable [`Handle`] that queues requests from
//! any thread or task, and the errors a request can meet. The same handle fronts one engine
//! thread or a sharded deployment over several (`sharded.rs`): it routes each request to the
//! shard of its user.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError as ChannelFull};
use presence_engine::{
    Command, EngineId, EngineView, Error, RemoteStatuses, Reply, SessionHandle, ShardMap, StatusChange,
    UserId, UserStatus,
};
use rustc_hash::FxHashMap;

use crate::reply::{self, Gather, GatherPart, PendingReply, ReplyTo};
use crate::stats::{RuntimeHistograms, RuntimeStats, SharedStats};
use crate::stop::{RuntimeStop, StopSignal, Stopped};

/// Why a request sent to the runtime did not succeed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The engine refused it, or the store failed (the command changed nothing).
    Refused(Error),
    /// The runtime has stopped (shut down, or stopped after a failed sync).
    Stopped,
    /// The queue was full (only from the calls that do not wait: [`Handle::try_submit`] and
    /// the like hand the request back in a [`TrySendError`] instead).
    Full,
    /// [`Handle::quiesce`] gave up: the deployment did not come to rest in time.
    TimedOut,
}

impl RuntimeError {
    /// The engine's error code (R7.1), if the engine refused the command.
    pub fn code(&self) -> Option<u32> {
        match self {
            RuntimeError::Refused(e) => Some(e.code()),
            _ => None,
        }
    }
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Refused(e) => write!(f, "{e}"),
            RuntimeError::Stopped => f.write_str("the presence runtime has stopped"),
            RuntimeError::Full => f.write_str("the presence runtime's queue is full"),
            RuntimeError::TimedOut => f.write_str("the presence runtime did not come to rest in time"),
        }
    }
}

impl std::error::Error for RuntimeError {}

/// Why a request was not queued by a call that does not wait: the queue was full, and the
/// request comes back (shed the load, or try again later); or the runtime has stopped.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The queue is full: here is the request.
    Full(T),
    /// The runtime has stopped; nothing will run the request.
    Stopped,
}

impl<T> TrySendError<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> TrySendError<U> {
        match self {
            TrySendError::Full(t) => TrySendError::Full(f(t)),
            TrySendError::Stopped => TrySendError::Stopped,
        }
    }
}

impl<T> fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the presence runtime's queue is full"),
            TrySendError::Stopped => f.write_str("the presence runtime has stopped"),
        }
    }
}

impl<T: fmt::Debug> std::error::Error for TrySendError<T> {}

/// A read run on an engine thread between turns, with the view of one shard.
pub(crate) type ReadJob = Box<dyn FnOnce(&EngineView<'_>) + Send>;

/// A queued request for one engine thread. `shard` is the shard it is for (0 for a single
/// engine); `at_ms` the host's own time for it, `None` for the clock's.
pub(crate) enum Message {
    Command {
        shard: u32,
        command: Command,
        at_ms: Option<u64>,
        reply: ReplyTo<Reply>,
        queued_at: Instant,
    },
    Heartbeat {
        shard: u32,
        session: SessionHandle,
        at_ms: Option<u64>,
        reply: ReplyTo<()>,
        queued_at: Instant,
    },
    /// A command with the statuses of other shards' users the host read for it (R9.3).
    CommandWithStatuses {
        shard: u32,
        command: Box<(Command, RemoteStatuses)>,
        at_ms: Option<u64>,
        reply: ReplyTo<Reply>,
        queued_at: Instant,
    },
    /// From outside the deployment, for every shard of the thread: other shards' changes to
    /// take in (R9.2), statuses to learn (R9.3), or the deployment's recovery time (R8.2).
    Remote {
        remote: RemoteWork,
        reply: ReplyTo<()>,
    },
    /// A tick of every shard of the thread. Every thread receives the ticks in one order, and
    /// counts them: the count is the epoch that orders status changes against ticks (R9.4).
    Tick {
        at_ms: Option<u64>,
        reply: ReplyTo<()>,
    },
    Snapshot {
        reply: ReplyTo<u64>,
    },
    /// Answered once the thread has run everything queued before it (and what other threads
    /// sent it meanwhile): for [`Handle::quiesce`].
    Barrier {
        reply: ReplyTo<()>,
    },
    Shutdown,
}

/// What a host that runs the shards of a deployment over several processes hands a runtime
/// (see [`Handle::observe_remote`] and the calls after it).
#[derive(Clone, Debug)]
pub(crate) enum RemoteWork {
    Observe(Arc<Vec<StatusChange>>),
    Learn(Arc<Vec<(UserId, UserStatus, u64)>>),
    Resume(u64),
    DisconnectRestored(u64),
}

/// What the runtime's threads and its handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub stats: SharedStats,
    /// Set when the runtime's threads stop taking requests.
    pub stopped: AtomicBool,
    /// Requests being queued right now (see [`Shared::enter`]).
    pub in_flight: AtomicUsize,
    /// Messages between the threads of a sharded deployment not yet handled.
    pub peer_pending: AtomicU64,
    /// The latest time any shard adopted (R1.3 across shards: a command or tick that comes
    /// with an earlier time runs at this one, whichever shard adopted it).
    pub latest_ms: AtomicU64,
    /// The first time a shard adopted since the deployment started (`u64::MAX` before).
    pub recovery_ms: AtomicU64,
    pub queue_capacity: usize,
    /// Why the runtime stopped, once it has (set before `stopped`).
    pub stop: Arc<StopSignal>,
    /// Whether the store refused the last batch a turn appended (cleared by a turn whose
    /// batch was appended and synced).
    pub store_failing: AtomicBool,
}

impl Shared {
    pub(crate) fn new(queue_capacity: usize) -> Self {
        Self {
            stats: SharedStats::default(),
            stopped: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            peer_pending: AtomicU64::new(0),
            latest_ms: AtomicU64::new(0),
            recovery_ms: AtomicU64::new(u64::MAX),
            queue_capacity,
            stop: Arc::default(),
            store_failing: AtomicBool::new(false),
        }
    }

    /// `at_ms`, or the latest time adopted if that is later (R1.3).
    pub(crate) fn at_least_latest(&self, at_ms: u64) -> u64 {
        self.latest_ms.load(Ordering::Relaxed).max(at_ms)
    }

    /// A shard adopted `at_ms` (a command that succeeded, a tick). The first time adopted
    /// is the deployment's recovery time (R8.2).
    pub(crate) fn adopt(&self, at_ms: u64) {
        self.latest_ms.fetch_max(at_ms, Ordering::Relaxed);
        let _ = self.recovery_ms.compare_exchange(u64::MAX, at_ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The deployment's recovery time, once a shard has adopted a time.
    pub(crate) fn recovery(&self) -> Option<u64> {
        Some(self.recovery_ms.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX)
    }

    /// Starts queueing a request, unless the runtime has stopped. A request left in a queue
    /// that nobody reads would keep its reply waiting forever, so a thread that stops, once
    /// `stopped` is set, empties its queues until no request is being queued, then once
    /// more; a request that starts after that sees `stopped` and is refused here.
    pub(crate) fn enter(&self) -> Option<Queueing<'_>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let queueing = Queueing(self);
        match self.stopped.load(Ordering::SeqCst) {
            true => None,
            false => Some(queueing),
        }
    }
}

/// A request being queued: counted in [`Shared::in_flight`] until dropped.
pub(crate) struct Queueing<'a>(&'a Shared);

impl Drop for Queueing<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The queues of one engine thread.
#[derive(Clone, Debug)]
pub(crate) struct ThreadQueues {
    pub commands: Sender<Message>,
    pub reads: Sender<(u32, ReadJob)>,
}

/// Where requests go: the threads of the deployment, and which thread runs each shard.
#[derive(Debug)]
pub(crate) struct Routes {
    pub map: ShardMap,
    pub threads: Vec<ThreadQueues>,
    /// `thread_of[shard]`: the thread running the shard.
    pub thread_of: Vec<usize>,
    /// Which shard an engine instance is, to route heartbeats by session handle.
    pub shard_of_instance: FxHashMap<EngineId, u32>,
    /// Held while a tick is queued to every thread, so that every thread receives the ticks
    /// in the same order.
    pub tick_order: Mutex<()>,
}

impl Routes {
    fn queues_of(&self, shard: u32) -> &ThreadQueues {
        let thread = self.thread_of.get(shard as usize).copied().unwrap_or(0);
        // A deployment has at least one thread (checked when it is spawned).
        &self.threads[thread.min(self.threads.len() - 1)]
    }

    fn shards(&self) -> impl Iterator<Item = u32> {
        0..self.map.count()
    }
}

/// A cheap, cloneable handle for sending requests to the runtime from any thread or task.
///
/// Every request that answers comes back as a [`PendingReply`]: await it from any executor
/// (tokio, async-std, a hand-rolled one: it needs none in particular) or
/// [`wait`](PendingReply::wait) for it on a thread. The `send` calls wait while the queue is
/// full; the `try_` calls never wait and hand the request back when it is, so that a host can
/// shed load. The same handle fronts a single engine ([`Runtime`](super::Runtime)) and a
/// sharded deployment ([`ShardedRuntime`](super::ShardedRuntime)): it routes each request to
/// its user's shard.
#[derive(Clone, Debug)]
pub struct Handle {
    pub(crate) routes: Arc<Routes>,
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Queues `message` for `shard`, waiting while the queue is full.
    fn queue(&self, shard: u32, message: Message) -> Result<(), RuntimeError> {
        let _queueing = self.shared.enter().ok_or(RuntimeError::Stopped)?;
        self.routes.queues_of(shard).commands.send(message).map_err(|_| RuntimeError::Stopped)
    }

    fn try_queue(&self, shard: u32, message: Message) -> Result<(), TrySendError<Message>> {
        let Some(_queueing) = self.shared.enter() else { return Err(TrySendError::Stopped) };
        match self.routes.queues_of(shard).commands.try_send(message) {
            Ok(()) => Ok(()),
            Err(ChannelFull::Full(message)) => {
                SharedStats::add(&self.shared.stats.shed, 1);
                tracing::debug!("presence runtime queue full: request shed");
                Err(TrySendError::Full(message))
            }
            Err(ChannelFull::Disconnected(_)) => Err(TrySendError::Stopped),
        }
    }

    /// Queues one message on every thread, built by `message` (a tick, a snapshot, a
    /// command about every shard), and returns what the replies gather into.
    fn broadcast<T: Send + 'static>(
        &self,
        gather: Gather<T>,
        message: impl Fn(ReplyTo<T>, u32) -> Message,
    ) -> Result<PendingReply<T>, RuntimeError> {
        let (gather, pending) = gather.start(self.routes.threads.len());
        let mut first_shard_of_thread: Vec<Option<u32>> = vec![None; self.routes.threads.len()];
        for shard in self.routes.shards() {
            let thread = self.routes.thread_of.get(shard as usize).copied().unwrap_or(0);
            if let Some(slot) = first_shard_of_thread.get_mut(thread) {
                slot.get_or_insert(shard);
            }
        }
        for shard in first_shard_of_thread.into_iter().flatten() {
            self.queue(shard, message(ReplyTo::Part(GatherPart::new(&gather)), shard))?;
        }
        Ok(pending)
    }

    /// Sends a command and waits for its reply (after its events are durable, R8.3).
    pub fn execute(&self, command: Command) -> Result<Reply, RuntimeError> {
        self.send(command)?.wait()
    }

    /// Sends a command, waiting while the queue is full, and returns its reply to await.
    pub fn send(&self, command: Command) -> Result<PendingReply, RuntimeError> {
        self.send_maybe_at(command, None)
    }

    /// Like [`Handle::send`], but the command runs at the host's time `at_ms` instead of the
    /// runtime clock's (R1.3 still applies: an earlier time counts as the latest seen).
    pub fn send_at(&self, command: Command, at_ms: u64) -> Result<PendingReply, RuntimeError> {
        self.send_maybe_at(command, Some(at_ms))
    }

    fn send_maybe_at(&self, command: Command, at_ms: Option<u64>) -> Result<PendingReply, RuntimeError> {
        if let Command::DisconnectSessions { .. } = command {
            // Every shard disconnects its own sessions, and the replies add up. Like a tick it
            // is a barrier (R9.4: recipients once the whole command is applied, R5.3), so it
            // reaches every thread in the ticks' order.
            let _order = self.routes.tick_order.lock().unwrap_or_else(PoisonError::into_inner);
            return self.broadcast(Gather::disconnected(), |reply, shard| Message::Command {
                shard,
                command: command.clone(),
                at_ms,
                reply,
                queued_at: Instant::now(),
            });
        }
        let (reply, pending) = reply::channel();
        let queued_at = Instant::now();
        let shard = self.shard_of_command(&command);
        self.queue(shard, Message::Command { shard, command, at_ms, reply: ReplyTo::One(reply), queued_at })?;
        Ok(pending)
    }

    /// The shard a command goes to ([`Command::shard`]); `disconnect_sessions`
    /// is broadcast before it gets here, so its 0 is never used to route.
    fn shard_of_command(&self, command: &Command) -> u32 {
        command.shard(&self.routes.map).unwrap_or(0)
    }

    /// [`Handle::send`] (or, with `at_ms`, [`Handle::send_at`]) with the statuses of users of
    /// other shards that the host read for the command from their shards (R9.3): what a
    /// `get_status` or `subscribe` answers for them, unless the shard knows a newer one. For a
    /// host that runs the shards of one deployment in several processes (a cluster node).
    pub fn send_with_statuses(
        &self,
        command: Command,
        at_ms: Option<u64>,
        statuses: RemoteStatuses,
    ) -> Result<PendingReply, RuntimeError> {
        if let Command::DisconnectSessions { .. } = command {
            return self.send_maybe_at(command, at_ms);
        }
        let (reply, pending) = reply::channel();
        let shard = self.shard_of_command(&command);
        let message = Message::CommandWithStatuses {
            shard,
            command: Box::new((command, statuses)),
            at_ms,
            reply: ReplyTo::One(reply),
            queued_at: Instant::now(),
        };
        self.queue(shard, message)?;
        Ok(pending)
    }

    /// Hands every shard status changes of users of shards that other processes run, in
    /// each user's version order (R9.2): each shard keeps the newest in its watch table and
    /// notifies its users' devices that watch them. Changes it has already seen, and changes
    /// of users nobody on it watches, change nothing. The reply comes once every shard has
    /// taken them in.
    pub fn observe_remote(&self, changes: Vec<StatusChange>) -> Result<PendingReply<()>, RuntimeError> {
        let remote = RemoteWork::Observe(Arc::new(changes));
        self.broadcast(Gather::unit(), |reply, _| Message::Remote { remote: remote.clone(), reply })
    }

    /// Hands every shard the statuses of users of shards that other processes run, as their
    /// shards answered (R9.3, R9.5): a shard that watches one of them and has no status of it
    /// yet keeps it, without notifying anyone. What a shard opened after a restart needs to
    /// rebuild its watch table ([`EngineView::remote_watched`] lists whom to ask for).
    pub fn learn_remote(
        &self,
        statuses: Vec<(UserId, UserStatus, u64)>,
    ) -> Result<PendingReply<()>, RuntimeError> {
        let remote = RemoteWork::Learn(Arc::new(statuses));
        self.broadcast(Gather::unit(), |reply, _| Message::Remote { remote: remote.clone(), reply })
    }

    /// Fixes every shard's recovery time (R8.2) at `at_ms`, if no command or tick has fixed
    /// it since it opened: for a deployment over several processes, whose recovery time is
    /// the first time any of its shards takes.
    pub fn resume_at(&self, at_ms: u64) -> Result<PendingReply<()>, RuntimeError> {
        let remote = RemoteWork::Resume(at_ms);
        self.broadcast(Gather::unit(), |reply, _| Message::Remote { remote: remote.clone(), reply })
    }

    /// Disconnects every connected session of every shard at `at_ms`, logged as restarts
    /// (R8.4), before the shards take any other request: for a host that reopens a
    /// deployment over several processes and disconnects at the deployment's time (the
    /// latest any shard logged, which only the host can know). The reply comes once it is
    /// durable.
    pub fn disconnect_restored(&self, at_ms: u64) -> Result<PendingReply<()>, RuntimeError> {
        let remote = RemoteWork::DisconnectRestored(at_ms);
        self.broadcast(Gather::unit(), |reply, _| Message::Remote { remote: remote.clone(), reply })
    }

    /// Sends a command without waiting: its reply to await, or the command back when the
    /// queue is full or the runtime has stopped.
    pub fn try_send(&self, command: Command) -> Result<PendingReply, TrySendError<Command>> {
        if let Command::DisconnectSessions { .. } = command {
            // It goes to every thread: queue it on all or none, waiting.
            return self.send(command).map_err(|_| TrySendError::Stopped);
        }
        let (reply, pending) = reply::channel();
        let queued_at = Instant::now();
        let shard = self.shard_of_command(&command);
        let message = Message::Command { shard, command, at_ms: None, reply: ReplyTo::One(reply), queued_at };
        self.try_queue(shard, message).map(|()| pending).map_err(|e| e.map(command_of))
    }

    /// Queues a command without a reply, waiting while the queue is full.
    pub fn submit(&self, command: Command) -> Result<(), RuntimeError> {
        if matches!(command, Command::DisconnectSessions { .. }) {
            return self.send(command).map(drop);
        }
        let shard = self.shard_of_command(&command);
        self.queue(
            shard,
            Message::Command { shard, command, at_ms: None, reply: ReplyTo::None, queued_at: Instant::now() },
        )
    }

    /// Queues a command without a reply, or hands it back at once when the queue is full.
    pub fn try_submit(&self, command: Command) -> Result<(), TrySendError<Command>> {
        if let Command::DisconnectSessions { .. } = command {
            return self.submit(command).map_err(|_| TrySendError::Stopped);
        }
        let shard = self.shard_of_command(&command);
        let message =
            Message::Command { shard, command, at_ms: None, reply: ReplyTo::None, queued_at: Instant::now() };
        self.try_queue(shard, message).map_err(|e| e.map(command_of))
    }

    fn shard_of_session(&self, session: &SessionHandle) -> u32 {
        self.routes.shard_of_instance.get(&session.engine()).copied().unwrap_or(0)
    }

    /// A heartbeat by session handle (R2.4): the fast path of
    /// [`Engine::heartbeat`](presence_engine::Engine::heartbeat), which skips validating and
    /// hashing the ids. Get the handle once, after the login, with [`Handle::session_handle`].
    pub fn heartbeat(&self, session: SessionHandle) -> Result<PendingReply<()>, RuntimeError> {
        let (reply, pending) = reply::channel();
        let queued_at = Instant::now();
        let shard = self.shard_of_session(&session);
        self.queue(
            shard,
            Message::Heartbeat { shard, session, at_ms: None, reply: ReplyTo::One(reply), queued_at },
        )?;
        Ok(pending)
    }

    /// Queues a heartbeat by session handle without a reply, or hands the handle back at once
    /// when the queue is full (a heartbeat that cannot be queued can be dropped: the next
    /// one will do, well within the timeout).
    pub fn try_submit_heartbeat(&self, session: SessionHandle) -> Result<(), TrySendError<SessionHandle>> {
        let shard = self.shard_of_session(&session);
        let message = Message::Heartbeat {
            shard,
            session,
            at_ms: None,
            reply: ReplyTo::None,
            queued_at: Instant::now(),
        };
        self.try_queue(shard, message).map_err(|e| {
            e.map(|message| match message {
                Message::Heartbeat { session, .. } => session,
                _ => unreachable!("only a heartbeat request comes back from try_submit_heartbeat"),
            })
        })
    }

    /// The handle of `user`'s session on `device`, for [`Handle::heartbeat`] (`None` if there
    /// is no such session). It is read between turns, so it sees every command of that user
    /// queued before.
    pub fn session_handle(
        &self,
        user: &str,
        device: &str,
    ) -> Result<PendingReply<Option<SessionHandle>>, RuntimeError> {
        let (user, device) = (user.to_string(), device.to_string());
        let shard = self.routes.map.shard_of(&user);
        self.read_shard(shard, move |engine| engine.session_handle(&user, &device))
    }

    /// Runs `read` on an engine thread between two turns, with a view of the engine
    /// ([`EngineView`]: any status, last-online time, sessions, lists, totals), and hands
    /// back what it returns. Reads have their own queue, taken before each turn, so they
    /// never wait behind the commands, only for the turn under way; and they never see a turn
    /// half applied. Keep them short: the engine waits while one runs. In a sharded
    /// deployment this reads the first shard; read a user with [`Handle::read_user`].
    pub fn read<T, F>(&self, read: F) -> Result<PendingReply<T>, RuntimeError>
    where
        T: Send + 'static,
        F: FnOnce(&EngineView<'_>) -> T + Send + 'static,
    {
        self.read_shard(0, read)
    }

    /// [`Handle::read`] on the shard of `user`, which answers every direct read about that
    /// user (R6.4, R6.5), whatever the deployment.
    pub fn read_user<T, F>(&self, user: &str, read: F) -> Result<PendingReply<T>, RuntimeError>
    where
        T: Send + 'static,
        F: FnOnce(&EngineView<'_>) -> T + Send + 'static,
    {
        self.read_shard(self.routes.map.shard_of(user), read)
    }

    fn read_shard<T, F>(&self, shard: u32, read: F) -> Result<PendingReply<T>, RuntimeError>
    where
        T: Send + 'static,
        F: FnOnce(&EngineView<'_>) -> T + Send + 'static,
    {
        let (reply, pending) = reply::channel();
        let job: ReadJob = Box::new(move |engine| reply.send(Ok(read(engine))));
        let _queueing = self.shared.enter().ok_or(RuntimeError::Stopped)?;
        self.routes.queues_of(shard).reads.send((shard, job)).map_err(|_| RuntimeError::Stopped)?;
        Ok(pending)
    }

    /// Runs a turn now (a tick at the clock's time) and waits until it is committed.
    pub fn tick(&self) -> Result<(), RuntimeError> {
        self.tick_maybe_at(None)?.wait()
    }

    /// Runs a tick at the host's time `at_ms` and waits until it is committed.
    pub fn tick_at(&self, at_ms: u64) -> Result<(), RuntimeError> {
        self.tick_maybe_at(Some(at_ms))?.wait()
    }

    /// Queues a tick at the host's time `at_ms` without waiting for it.
    pub fn submit_tick_at(&self, at_ms: u64) -> Result<(), RuntimeError> {
        self.tick_maybe_at(Some(at_ms)).map(drop)
    }

    /// A tick of every shard. In a deployment of several threads, ticks are queued to every
    /// thread in one order (R9.4: a tick is a barrier across shards).
    pub(crate) fn tick_maybe_at(&self, at_ms: Option<u64>) -> Result<PendingReply<()>, RuntimeError> {
        let _order = self.routes.tick_order.lock().unwrap_or_else(PoisonError::into_inner);
        self.broadcast(Gather::unit(), |reply, _| Message::Tick { at_ms, reply })
    }

    /// Takes a snapshot of every shard now (after the commands queued before it) and compacts
    /// the log it covers if the runtime's [`SnapshotPolicy`](super::SnapshotPolicy) compacts;
    /// the reply is the number of events the snapshots cover (for one engine, the sequence
    /// number its snapshot covers).
    pub fn snapshot(&self) -> Result<PendingReply<u64>, RuntimeError> {
        self.broadcast(Gather::sum(), |reply, _| Message::Snapshot { reply })
    }

    /// Waits until the runtime has run everything queued before this call, and, in a sharded
    /// deployment, every status change and friendship those requests sent between shards
    /// (R9.4): for tests and tools that need the deployment at rest. With requests still
    /// arriving from elsewhere it may take a while; it gives up after `timeout`.
    pub fn quiesce(&self, timeout: Duration) -> Result<(), RuntimeError> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(50);
        loop {
            let barrier = self.broadcast(Gather::unit(), |reply, _| Message::Barrier { reply })?;
            let left = deadline.saturating_duration_since(Instant::now());
            match barrier.wait_timeout(left) {
                Ok(result) => result?,
                Err(_) => return Err(RuntimeError::TimedOut),
            }
            if self.shared.peer_pending.load(Ordering::SeqCst) == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::TimedOut);
            }
            // The shards are still talking: give them the processor rather than a barrier.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// What the runtime has done so far.
    pub fn stats(&self) -> RuntimeStats {
        let depth = self.routes.threads.iter().map(|t| t.commands.len()).sum();
        self.shared.stats.read(depth, self.shared.queue_capacity * self.routes.threads.len())
    }

    /// The runtime's latency histograms, counted since it started (never reset), for an
    /// exporter such as Prometheus.
    pub fn histograms(&self) -> RuntimeHistograms {
        self.shared.stats.histograms()
    }

    /// Starts the latency distributions of [`Handle::stats`] afresh (for an exporter that
    /// reports each interval on its own).
    pub fn reset_latencies(&self) {
        self.shared.stats.reset_latencies();
    }

    /// Why the runtime has stopped, or `None` while it runs. A runtime stops when its host
    /// shuts it down, or by itself when the store fails in a way it cannot go on from (a
    /// failed sync: docs/DESIGN.md, "When the store fails"); then every request is answered
    /// [`RuntimeError::Stopped`] and the host should exit with the cause.
    pub fn stop_reason(&self) -> Option<RuntimeStop> {
        self.shared.stop.reason()
    }

    /// The runtime's stop, to await from any executor or wait for on a thread: it resolves
    /// (with [`Handle::stop_reason`]) as soon as a thread of the runtime stops taking
    /// requests, whether shut down or failed.
    pub fn stopped(&self) -> Stopped {
        Stopped { signal: Arc::clone(&self.shared.stop) }
    }

    /// Whether the runtime takes writes: it runs, and its store took the last batch a turn
    /// appended (in a deployment of several shards, the last any shard appended). A refused
    /// append makes it false until a later turn's batch is appended and synced, which takes
    /// a write: a runtime that receives none stays false meanwhile.
    pub fn takes_writes(&self) -> bool {
        !self.shared.stopped.load(Ordering::SeqCst)
            && self.shared.stop.reason().is_none()
            && !self.shared.store_failing.load(Ordering::SeqCst)
    }

    /// How many shards the deployment has (1 for a single engine).
    pub fn shards(&self) -> u32 {
        self.routes.map.count()
    }

    /// The shard of `user`.
    pub fn shard_of(&self, user: &str) -> u32 {
        self.routes.map.shard_of(user)
    }
}

/// The command of a command request that came back.
fn command_of(message: Message) -> Command {
    match message {
        Message::Command { command, .. } => command,
        _ => unreachable!("only a command request comes back from a call that queued one"),
    }
}
