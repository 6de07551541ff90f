//! The host's side of the runtime: a cheap, cloneable [`Handle`] that queues requests from
//! any thread or task, and the errors a request can meet.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError as ChannelFull};

use super::reply::{self, PendingReply, ReplySender};
use super::stats::{RuntimeStats, SharedStats};
use crate::command::{Command, Reply};
use crate::engine::{EngineView, SessionHandle};
use crate::error::Error;

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

/// A read run on the runtime's thread between turns.
pub(crate) type ReadJob = Box<dyn FnOnce(&EngineView<'_>) + Send>;

/// A queued request. `at_ms` is the host's own time for it, `None` for the clock's.
pub(crate) enum Message {
    Command {
        command: Command,
        at_ms: Option<u64>,
        reply: Option<ReplySender<Reply>>,
        queued_at: Instant,
    },
    Heartbeat {
        session: SessionHandle,
        at_ms: Option<u64>,
        reply: Option<ReplySender<()>>,
        queued_at: Instant,
    },
    Tick {
        at_ms: Option<u64>,
        reply: Option<ReplySender<()>>,
    },
    Snapshot {
        reply: ReplySender<u64>,
    },
    Shutdown,
}

/// What the runtime and its handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub stats: SharedStats,
    /// Set when the runtime's thread stops taking requests.
    pub stopped: AtomicBool,
    /// Requests being queued right now (see [`Shared::enter`]).
    pub in_flight: AtomicUsize,
    pub queue_capacity: usize,
}

/// A request being queued: counted in [`Shared::in_flight`] until dropped.
pub(crate) struct Queueing<'a>(&'a Shared);

impl Shared {
    /// Starts queueing a request, unless the runtime has stopped. A request left in a queue
    /// that nobody reads would keep its reply waiting forever, so the runtime, once it has
    /// set `stopped`, empties its queues until no request is being queued, then once more;
    /// a request that starts after that sees `stopped` and is refused here.
    pub(crate) fn enter(&self) -> Option<Queueing<'_>> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let queueing = Queueing(self);
        match self.stopped.load(Ordering::SeqCst) {
            true => None,
            false => Some(queueing),
        }
    }
}

impl Drop for Queueing<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A cheap, cloneable handle for sending requests to the runtime from any thread or task.
///
/// Every request that answers comes back as a [`PendingReply`]: await it from any executor
/// (tokio, async-std, a hand-rolled one: it needs none in particular) or
/// [`wait`](PendingReply::wait) for it on a thread. The `send` calls wait while the queue is
/// full; the `try_` calls never wait and hand the request back when it is, so that a host can
/// shed load.
#[derive(Clone, Debug)]
pub struct Handle {
    pub(crate) sender: Sender<Message>,
    pub(crate) reads: Sender<ReadJob>,
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Queues `message`, waiting while the queue is full.
    fn queue(&self, message: Message) -> Result<(), RuntimeError> {
        let _queueing = self.shared.enter().ok_or(RuntimeError::Stopped)?;
        self.sender.send(message).map_err(|_| RuntimeError::Stopped)
    }

    fn try_queue(&self, message: Message) -> Result<(), TrySendError<Message>> {
        let Some(_queueing) = self.shared.enter() else { return Err(TrySendError::Stopped) };
        match self.sender.try_send(message) {
            Ok(()) => Ok(()),
            Err(ChannelFull::Full(message)) => {
                SharedStats::add(&self.shared.stats.shed, 1);
                tracing::debug!("presence runtime queue full: request shed");
                Err(TrySendError::Full(message))
            }
            Err(ChannelFull::Disconnected(_)) => Err(TrySendError::Stopped),
        }
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
        let (reply, pending) = reply::channel();
        let queued_at = Instant::now();
        self.queue(Message::Command { command, at_ms, reply: Some(reply), queued_at })?;
        Ok(pending)
    }

    /// Sends a command without waiting: its reply to await, or the command back when the
    /// queue is full or the runtime has stopped.
    pub fn try_send(&self, command: Command) -> Result<PendingReply, TrySendError<Command>> {
        let (reply, pending) = reply::channel();
        let queued_at = Instant::now();
        let message = Message::Command { command, at_ms: None, reply: Some(reply), queued_at };
        self.try_queue(message).map(|()| pending).map_err(|e| e.map(command_of))
    }

    /// Queues a command without a reply, waiting while the queue is full.
    pub fn submit(&self, command: Command) -> Result<(), RuntimeError> {
        self.queue(Message::Command { command, at_ms: None, reply: None, queued_at: Instant::now() })
    }

    /// Queues a command without a reply, or hands it back at once when the queue is full.
    pub fn try_submit(&self, command: Command) -> Result<(), TrySendError<Command>> {
        let message = Message::Command { command, at_ms: None, reply: None, queued_at: Instant::now() };
        self.try_queue(message).map_err(|e| e.map(command_of))
    }

    /// A heartbeat by session handle (R2.4): the fast path of
    /// [`Engine::heartbeat`](crate::Engine::heartbeat), which skips validating and hashing the
    /// ids. Get the handle once, after the login, with [`Handle::session_handle`].
    pub fn heartbeat(&self, session: SessionHandle) -> Result<PendingReply<()>, RuntimeError> {
        let (reply, pending) = reply::channel();
        let queued_at = Instant::now();
        self.queue(Message::Heartbeat { session, at_ms: None, reply: Some(reply), queued_at })?;
        Ok(pending)
    }

    /// Queues a heartbeat by session handle without a reply, or hands the handle back at once
    /// when the queue is full (a heartbeat that cannot be queued can be dropped: the next
    /// one will do, well within the timeout).
    pub fn try_submit_heartbeat(&self, session: SessionHandle) -> Result<(), TrySendError<SessionHandle>> {
        let message = Message::Heartbeat { session, at_ms: None, reply: None, queued_at: Instant::now() };
        self.try_queue(message).map_err(|e| {
            e.map(|message| match message {
                Message::Heartbeat { session, .. } => session,
                _ => unreachable!("only a heartbeat request comes back from try_submit_heartbeat"),
            })
        })
    }

    /// The handle of `user`'s session on `device`, for [`Handle::heartbeat`] (`None` if there
    /// is no such session). It is read between turns, so it sees every command queued before.
    pub fn session_handle(
        &self,
        user: &str,
        device: &str,
    ) -> Result<PendingReply<Option<SessionHandle>>, RuntimeError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.read(move |engine| engine.session_handle(&user, &device))
    }

    /// Runs `read` on the runtime's thread between two turns, with a view of the engine
    /// ([`EngineView`]: any status, last-online time, sessions, lists, totals), and hands
    /// back what it returns. Reads have their own queue, taken before each turn, so they
    /// never wait behind the commands, only for the turn under way; and they never see a turn
    /// half applied. Keep them short: the engine waits while one runs.
    pub fn read<T, F>(&self, read: F) -> Result<PendingReply<T>, RuntimeError>
    where
        T: Send + 'static,
        F: FnOnce(&EngineView<'_>) -> T + Send + 'static,
    {
        let (reply, pending) = reply::channel();
        let job: ReadJob = Box::new(move |engine| reply.send(Ok(read(engine))));
        let _queueing = self.shared.enter().ok_or(RuntimeError::Stopped)?;
        self.reads.send(job).map_err(|_| RuntimeError::Stopped)?;
        Ok(pending)
    }

    /// Runs a turn now (a tick at the clock's time) and waits until it is committed.
    pub fn tick(&self) -> Result<(), RuntimeError> {
        self.tick_maybe_at(None)
    }

    /// Runs a tick at the host's time `at_ms` and waits until it is committed.
    pub fn tick_at(&self, at_ms: u64) -> Result<(), RuntimeError> {
        self.tick_maybe_at(Some(at_ms))
    }

    fn tick_maybe_at(&self, at_ms: Option<u64>) -> Result<(), RuntimeError> {
        let (reply, pending) = reply::channel();
        self.queue(Message::Tick { at_ms, reply: Some(reply) })?;
        pending.wait()
    }

    /// Queues a tick at the host's time `at_ms` without waiting for it.
    pub fn submit_tick_at(&self, at_ms: u64) -> Result<(), RuntimeError> {
        self.queue(Message::Tick { at_ms: Some(at_ms), reply: None })
    }

    /// Takes a snapshot now (after the commands queued before it) and compacts the log it
    /// covers if the runtime's [`SnapshotPolicy`](super::SnapshotPolicy) compacts; the reply is
    /// the sequence number it covers.
    pub fn snapshot(&self) -> Result<PendingReply<u64>, RuntimeError> {
        let (reply, pending) = reply::channel();
        self.queue(Message::Snapshot { reply })?;
        Ok(pending)
    }

    /// What the runtime has done so far.
    pub fn stats(&self) -> RuntimeStats {
        self.shared.stats.read(self.sender.len(), self.shared.queue_capacity)
    }

    /// Starts the latency distributions of [`Handle::stats`] afresh (for an exporter that
    /// reports each interval on its own).
    pub fn reset_latencies(&self) {
        self.shared.stats.reset_latencies();
    }
}

/// The command of a command request that came back.
fn command_of(message: Message) -> Command {
    match message {
        Message::Command { command, .. } => command,
        _ => unreachable!("only a command request comes back from a call that queued one"),
    }
}
