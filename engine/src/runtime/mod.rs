//! A thread that owns an [`Engine`] and its store, for hosts that talk to it from many
//! threads (docs/DESIGN.md: group commit and the runtime). The only module of the crate with threads or a clock.
//!
//! Each turn the thread takes up to [`RuntimeConfig::max_batch`] queued commands, decides
//! and applies them in order as one [`Group`](crate::Group) with a tick at the turn's time,
//! appends all their events as one batch and syncs once (group commit), and only then sends
//! the replies and hands the notices to the host's [`NoticeSink`] (R8.3). The command queue
//! is bounded: a slow engine or sink pushes back on the senders.
//!
//! ```
//! use presence_engine::runtime::{DiscardSink, ManualClock, Runtime, RuntimeConfig};
//! use presence_engine::{Command, Config, Engine, GeneralStatus};
//! use presence_storage_mem::MemStore;
//!
//! let engine = Engine::open(Config::default(), MemStore::new())?;
//! let clock = ManualClock::new(0);
//! let (runtime, handle) = Runtime::spawn(engine, clock.clone(), DiscardSink, RuntimeConfig::default());
//! handle.execute(Command::login("alice", "phone")).unwrap();
//! clock.advance(400_000);
//! handle.tick().unwrap(); // R2.4: alice's phone timed out
//! let engine = runtime.shutdown()?;
//! assert_eq!(engine.status("alice").general, GeneralStatus::Offline);
//! # Ok::<(), presence_engine::Error>(())
//! ```

mod clock;
mod sink;

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender, TrySendError};

pub use clock::{Clock, ManualClock, SystemClock};
pub use sink::{ChannelSink, DiscardSink, NoticeSink, OwnedDelivery};

use crate::command::{Command, Reply};
use crate::engine::Engine;
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::notice::{delivery_count, Notice};
use crate::store::EventStore;

/// How the runtime batches and ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Commands that may wait in the queue; senders block (or `try_submit` fails) beyond it.
    pub queue_capacity: usize,
    /// The most commands decided and committed in one turn (one append, one sync).
    pub max_batch: usize,
    /// How long an idle runtime waits before it ticks anyway. Every turn also ticks.
    pub tick_interval_ms: u64,
    /// Whether the runtime ticks by itself (every turn, and when idle). Turn it off when the
    /// host sends every tick itself ([`Handle::tick_at`]), as a deterministic simulation does.
    pub auto_tick: bool,
    /// Whether each turn that logged something calls [`EventStore::sync`] before replying.
    /// Turn it off only for stores whose `append` is already durable.
    pub sync_each_turn: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4_096,
            max_batch: 1_024,
            tick_interval_ms: 1_000,
            auto_tick: true,
            sync_each_turn: true,
        }
    }
}

/// Why a command sent to the runtime did not succeed.
#[derive(Debug)]
pub enum RuntimeError {
    /// The engine refused it, or the store failed (the command changed nothing).
    Refused(Error),
    /// The runtime has stopped (shut down, or stopped after a failed sync).
    Stopped,
    /// `try_submit` found the queue full.
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

type ReplySender = Sender<Result<Reply, Error>>;

/// A queued request; `Option<u64>` is the host's own time for it, `None` for the clock's.
enum Message {
    Command(Command, Option<u64>, Option<ReplySender>),
    Tick(Option<u64>, Option<ReplySender>),
    Shutdown,
}

/// Counters of what the runtime did, readable while it runs.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Turns run (each one group commit).
    pub turns: AtomicU64,
    /// Commands accepted.
    pub commands: AtomicU64,
    /// Commands refused by the engine or failed by the store.
    pub refused: AtomicU64,
    /// Events appended.
    pub events: AtomicU64,
    /// Single deliveries handed to the sink (one per device per notice).
    pub deliveries: AtomicU64,
    /// Turns whose append failed (their commands were failed and rolled back).
    pub store_failures: AtomicU64,
    /// Panics caught from the sink.
    pub sink_panics: AtomicU64,
}

/// A cheap, cloneable handle for sending commands to the runtime from any thread.
#[derive(Clone, Debug)]
pub struct Handle {
    sender: Sender<Message>,
    /// Never carries anything; it disconnects when the runtime thread ends, so that a wait
    /// for a reply that can no longer come ends too.
    alive: Receiver<()>,
}

/// A reply on its way: what [`Handle::send`] returns.
#[derive(Debug)]
pub struct PendingReply {
    answer: Receiver<Result<Reply, Error>>,
    alive: Receiver<()>,
}

impl PendingReply {
    /// Waits for the reply (sent once the command's events are durable, R8.3). Returns
    /// [`RuntimeError::Stopped`] if the runtime ends without answering; never hangs on a
    /// runtime that is gone.
    pub fn wait(self) -> Result<Reply, RuntimeError> {
        let answered = select! {
            recv(self.answer) -> result => result.ok(),
            // The runtime ended; it may still have answered just before.
            recv(self.alive) -> _ => self.answer.try_recv().ok(),
        };
        match answered {
            Some(result) => result.map_err(RuntimeError::Refused),
            None => Err(RuntimeError::Stopped),
        }
    }
}

impl Handle {
    fn queue(&self, message: impl FnOnce(ReplySender) -> Message) -> Result<PendingReply, RuntimeError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.sender.send(message(reply)).map_err(|_| RuntimeError::Stopped)?;
        Ok(PendingReply { answer, alive: self.alive.clone() })
    }

    /// Sends a command and waits for its reply (after its events are durable).
    pub fn execute(&self, command: Command) -> Result<Reply, RuntimeError> {
        self.send(command)?.wait()
    }

    /// Sends a command and returns at once with the reply to wait for.
    pub fn send(&self, command: Command) -> Result<PendingReply, RuntimeError> {
        self.queue(|reply| Message::Command(command, None, Some(reply)))
    }

    /// Like [`Handle::send`], but the command runs at the host's time `at_ms` instead of the
    /// runtime clock's (R1.3 still applies: an earlier time counts as the latest seen).
    pub fn send_at(&self, command: Command, at_ms: u64) -> Result<PendingReply, RuntimeError> {
        self.queue(|reply| Message::Command(command, Some(at_ms), Some(reply)))
    }

    /// Queues a command without a reply, waiting while the queue is full.
    pub fn submit(&self, command: Command) -> Result<(), RuntimeError> {
        self.sender.send(Message::Command(command, None, None)).map_err(|_| RuntimeError::Stopped)
    }

    /// Queues a command without a reply, or fails at once with [`RuntimeError::Full`].
    pub fn try_submit(&self, command: Command) -> Result<(), RuntimeError> {
        match self.sender.try_send(Message::Command(command, None, None)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(RuntimeError::Full),
            Err(TrySendError::Disconnected(_)) => Err(RuntimeError::Stopped),
        }
    }

    /// Runs a turn now (a tick at the clock's time) and waits until it is committed.
    pub fn tick(&self) -> Result<(), RuntimeError> {
        self.tick_message(None)
    }

    /// Runs a tick at the host's time `at_ms` and waits until it is committed.
    pub fn tick_at(&self, at_ms: u64) -> Result<(), RuntimeError> {
        self.tick_message(Some(at_ms))
    }

    /// Queues a tick at the host's time `at_ms` without waiting for it.
    pub fn submit_tick_at(&self, at_ms: u64) -> Result<(), RuntimeError> {
        self.sender.send(Message::Tick(Some(at_ms), None)).map_err(|_| RuntimeError::Stopped)
    }

    fn tick_message(&self, at_ms: Option<u64>) -> Result<(), RuntimeError> {
        self.queue(|reply| Message::Tick(at_ms, Some(reply)))?.wait().map(|_| ())
    }
}

/// The running engine thread. [`Runtime::shutdown`] stops it and hands the engine back.
pub struct Runtime<S> {
    thread: Option<JoinHandle<Result<Engine<S>, Error>>>,
    sender: Sender<Message>,
    stats: Arc<RuntimeStats>,
}

impl<S: EventStore + Send + 'static> Runtime<S> {
    /// Starts the engine thread.
    ///
    /// # Panics
    /// If the operating system cannot start a thread.
    pub fn spawn(
        engine: Engine<S>,
        clock: impl Clock,
        sink: impl NoticeSink,
        config: RuntimeConfig,
    ) -> (Runtime<S>, Handle) {
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_capacity.max(1));
        let (alive_sender, alive) = crossbeam_channel::bounded(0);
        let stats = Arc::new(RuntimeStats::default());
        let worker =
            Worker { engine, clock, sink, config, receiver, stats: Arc::clone(&stats), _alive: alive_sender };
        #[allow(clippy::expect_used)] // Failing to start a thread leaves nothing to recover.
        let thread = std::thread::Builder::new()
            .name("presence-engine".into())
            .spawn(move || worker.run())
            .expect("cannot start the presence runtime thread");
        (Runtime { thread: Some(thread), sender: sender.clone(), stats }, Handle { sender, alive })
    }

    /// What the runtime has done so far.
    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    /// Stops taking commands, runs every command already queued, syncs, and returns the
    /// engine (and through [`Engine::into_store`], the store). Fails with the store's error
    /// if the runtime had stopped after a failed sync.
    pub fn shutdown(mut self) -> Result<Engine<S>, Error> {
        let _ = self.sender.send(Message::Shutdown);
        self.join()
    }

    fn join(&mut self) -> Result<Engine<S>, Error> {
        let Some(thread) = self.thread.take() else {
            return Err(stopped("the runtime was already shut down"));
        };
        match thread.join() {
            Ok(result) => result,
            Err(_) => Err(stopped("the runtime thread panicked")),
        }
    }
}

impl<S> Drop for Runtime<S> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.sender.send(Message::Shutdown);
            let _ = thread.join();
        }
    }
}

enum TurnEnd {
    Durable,
    AppendFailed(Error),
    SyncFailed(Error),
}

fn stopped(message: &str) -> Error {
    Error::Storage(StoreError::new(StoreErrorKind::Io, message))
}

struct Worker<S, C, N> {
    engine: Engine<S>,
    clock: C,
    sink: N,
    config: RuntimeConfig,
    receiver: Receiver<Message>,
    stats: Arc<RuntimeStats>,
    /// Dropped with the worker: tells every waiting [`PendingReply`] that no answer will come
    /// (messages still queued in a channel whose receiver is gone are never dropped).
    _alive: Sender<()>,
}

impl<S: EventStore, C: Clock, N: NoticeSink> Worker<S, C, N> {
    fn run(mut self) -> Result<Engine<S>, Error> {
        let wait = Duration::from_millis(self.config.tick_interval_ms.max(1));
        let mut shutting_down = false;
        while !shutting_down {
            let first = match self.receiver.recv_timeout(wait) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut batch = Vec::new();
            for message in first.into_iter().chain(std::iter::from_fn(|| self.receiver.try_recv().ok())) {
                if let Message::Shutdown = message {
                    shutting_down = true;
                    break;
                }
                batch.push(message);
                if batch.len() >= self.config.max_batch {
                    break;
                }
            }
            self.turn(batch)?;
        }
        // Commands queued before the shutdown request still run.
        loop {
            let batch: Vec<Message> = std::iter::from_fn(|| self.receiver.try_recv().ok())
                .filter(|m| !matches!(m, Message::Shutdown))
                .take(self.config.max_batch)
                .collect();
            if batch.is_empty() {
                break;
            }
            self.turn(batch)?;
        }
        self.engine.sync()?;
        Ok(self.engine)
    }

    /// One group commit: decide and apply every message, tick, append once, sync once, then
    /// reply and deliver (R8.3).
    fn turn(&mut self, batch: Vec<Message>) -> Result<(), Error> {
        let now_ms = self.clock.now_ms();
        let mut replies: Vec<(Option<ReplySender>, Result<Reply, Error>)> = Vec::with_capacity(batch.len());
        let mut notices: Vec<Notice> = Vec::new();
        let mut group = self.engine.group();
        for message in batch {
            let (reply, result) = match message {
                Message::Command(command, at_ms, reply) => {
                    (reply, group.execute(command, at_ms.unwrap_or(now_ms)))
                }
                Message::Tick(at_ms, reply) => (reply, group.tick(at_ms.unwrap_or(now_ms))),
                Message::Shutdown => continue,
            };
            let result = result.map(|outcome| {
                notices.extend(outcome.notices);
                outcome.reply
            });
            replies.push((reply, result));
        }
        if self.config.auto_tick {
            if let Ok(outcome) = group.tick(now_ms) {
                notices.extend(outcome.notices);
            }
        }
        let end = match group.commit() {
            Ok(0) => TurnEnd::Durable,
            Ok(events) => {
                self.stats.events.fetch_add(events as u64, Ordering::Relaxed);
                match self.config.sync_each_turn {
                    true => self.engine.sync().map_or_else(TurnEnd::SyncFailed, |()| TurnEnd::Durable),
                    false => TurnEnd::Durable,
                }
            }
            Err(e) => {
                self.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                TurnEnd::AppendFailed(e)
            }
        };
        self.stats.turns.fetch_add(1, Ordering::Relaxed);
        let failure = match &end {
            TurnEnd::Durable => None,
            TurnEnd::AppendFailed(e) => {
                Some(format!("the store refused the turn, nothing of it was kept: {e}"))
            }
            TurnEnd::SyncFailed(e) => {
                Some(format!("the turn could not be made durable, the runtime stopped: {e}"))
            }
        };
        for (reply, result) in replies {
            let result = match (&failure, result) {
                (Some(why), Ok(_)) => Err(Error::Storage(StoreError::new(StoreErrorKind::Io, why.clone()))),
                (_, result) => result,
            };
            let counter = if result.is_ok() { &self.stats.commands } else { &self.stats.refused };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        }
        match end {
            TurnEnd::Durable => {
                self.deliver(&notices);
                Ok(())
            }
            // The group was rolled back: the engine is as before the turn and goes on.
            TurnEnd::AppendFailed(_) => Ok(()),
            // The events are applied but may not be durable: only the log can say what is
            // true now, so the runtime stops and the host reopens the store.
            TurnEnd::SyncFailed(e) => Err(e),
        }
    }

    fn deliver(&mut self, notices: &[Notice]) {
        if notices.is_empty() {
            return;
        }
        self.stats.deliveries.fetch_add(delivery_count(notices) as u64, Ordering::Relaxed);
        let names = self.engine.names();
        let sink = &mut self.sink;
        if catch_unwind(AssertUnwindSafe(|| sink.deliver(notices, &names))).is_err() {
            self.stats.sink_panics.fetch_add(1, Ordering::Relaxed);
        }
    }
}
