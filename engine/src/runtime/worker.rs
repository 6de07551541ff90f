//! The runtime's thread: the loop of turns, each a group commit (R8.3), with reads between
//! turns and snapshots by policy.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use super::handle::{Message, ReadJob, Shared};
use super::reply::ReplySender;
use super::stats::SharedStats;
use super::{Clock, NoticeSink, RuntimeConfig};
use crate::command::Reply;
use crate::engine::{encode_captured_snapshot, Engine};
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::notice::{delivery_count, Notice};
use crate::store::EventStore;

/// Where one request's answer goes, and what it was.
enum Answer {
    Command(Option<ReplySender<Reply>>, Result<Reply, Error>),
    Heartbeat(Option<ReplySender<()>>, Result<(), Error>),
    Tick(Option<ReplySender<()>>, Result<(), Error>),
}

impl Answer {
    fn is_ok(&self) -> bool {
        match self {
            Answer::Command(_, r) => r.is_ok(),
            Answer::Heartbeat(_, r) | Answer::Tick(_, r) => r.is_ok(),
        }
    }

    /// Sends the answer, or `failure` instead of a success.
    fn send(self, failure: Option<&str>) {
        let fail = |why: &str| Error::Storage(StoreError::new(StoreErrorKind::Io, why));
        match self {
            Answer::Command(reply, result) => {
                let result = match (failure, result) {
                    (Some(why), Ok(_)) => Err(fail(why)),
                    (_, result) => result,
                };
                if let Some(reply) = reply {
                    reply.send(result);
                }
            }
            Answer::Heartbeat(reply, result) | Answer::Tick(reply, result) => {
                let result = match (failure, result) {
                    (Some(why), Ok(())) => Err(fail(why)),
                    (_, result) => result,
                };
                if let Some(reply) = reply {
                    reply.send(result);
                }
            }
        }
    }
}

/// A snapshot being encoded on another thread: the sequence number it covers, and where its
/// bytes (or the failure to encode them) will come.
struct SnapshotInFlight {
    last_seq: u64,
    bytes: Receiver<Result<Vec<u8>, StoreError>>,
    /// Who asked for it, if someone did.
    reply: Option<ReplySender<u64>>,
}

pub(crate) struct Worker<S, C, N> {
    engine: Engine<S>,
    clock: C,
    sink: N,
    config: RuntimeConfig,
    receiver: Receiver<Message>,
    reads: Receiver<ReadJob>,
    shared: Arc<Shared>,
    /// Logged since the last snapshot (for the policy).
    events_since_snapshot: u64,
    bytes_since_snapshot: u64,
    last_snapshot_ms: u64,
    snapshot: Option<SnapshotInFlight>,
}

impl<S: EventStore, C: Clock, N: NoticeSink> Worker<S, C, N> {
    pub(crate) fn new(
        engine: Engine<S>,
        clock: C,
        sink: N,
        config: RuntimeConfig,
        receiver: Receiver<Message>,
        reads: Receiver<ReadJob>,
        shared: Arc<Shared>,
    ) -> Self {
        let last_snapshot_ms = clock.now_ms();
        Worker {
            engine,
            clock,
            sink,
            config,
            receiver,
            reads,
            shared,
            events_since_snapshot: 0,
            bytes_since_snapshot: 0,
            last_snapshot_ms,
            snapshot: None,
        }
    }

    pub(crate) fn run(mut self) -> Result<Engine<S>, Error> {
        let result = self.serve();
        // From here nothing runs what is queued: dropping it answers every waiting reply with
        // `Stopped` (a message left in a channel is never dropped while a handle keeps the
        // channel alive). Requests being queued now are waited for (emptying the queues lets a
        // sender blocked on a full one finish); later ones see `stopped` (see `Shared::enter`).
        self.shared.stopped.store(true, Ordering::SeqCst);
        loop {
            while self.receiver.try_recv().is_ok() {}
            while self.reads.try_recv().is_ok() {}
            if self.shared.in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::thread::yield_now();
        }
        while self.receiver.try_recv().is_ok() {}
        while self.reads.try_recv().is_ok() {}
        result.map(|()| self.engine)
    }

    /// Turns until a shutdown (then what is queued before it), or until a sync fails.
    fn serve(&mut self) -> Result<(), Error> {
        let wait = Duration::from_millis(self.config.tick_interval_ms.max(1));
        loop {
            self.run_reads();
            self.finish_snapshot(false);
            let first = select! {
                recv(self.receiver) -> message => match message {
                    Ok(message) => Some(message),
                    Err(_) => return self.engine.sync(),
                },
                recv(self.reads) -> read => {
                    if let Ok(read) = read {
                        self.run_read(read);
                    }
                    continue;
                },
                default(wait) => None,
            };
            let mut batch = Vec::new();
            let mut shutting_down = false;
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
            if batch.is_empty() && !self.config.auto_tick && !shutting_down {
                continue;
            }
            self.turn(batch)?;
            if shutting_down {
                return self.drain();
            }
        }
    }

    /// After a shutdown request: runs what was queued before it, then syncs.
    fn drain(&mut self) -> Result<(), Error> {
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
        self.run_reads();
        self.finish_snapshot(true);
        self.engine.sync()
    }

    fn run_reads(&mut self) {
        while let Ok(read) = self.reads.try_recv() {
            self.run_read(read);
        }
    }

    fn run_read(&mut self, read: ReadJob) {
        SharedStats::add(&self.shared.stats.reads, 1);
        let view = self.engine.view();
        // A panicking read loses its own reply (answered `Stopped`), nothing else.
        if catch_unwind(AssertUnwindSafe(|| read(&view))).is_err() {
            tracing::error!("a read run on the presence runtime panicked");
        }
    }

    /// One turn: decide and apply every request as group commits (one, unless the turn
    /// outgrows a batch of the store), tick, sync once, then answer and deliver (R8.3).
    fn turn(&mut self, batch: Vec<Message>) -> Result<(), Error> {
        let started = Instant::now();
        let span = tracing::debug_span!("presence_turn", requests = batch.len());
        let _entered = span.enter();
        let now_ms = self.clock.now_ms();
        // A new group starts when this little room is left in a batch of the store, so that
        // no command's events find the batch full.
        let split_below = self.engine.store().batch_bytes_max() / 4;
        let mut answers: Vec<(usize, Instant, Answer)> = Vec::with_capacity(batch.len());
        let mut notices_by_group: Vec<Vec<Notice>> = vec![Vec::new()];
        let mut outcomes: Vec<Result<usize, Error>> = Vec::new();
        let mut snapshot_requests = Vec::new();
        let bytes_before = self.engine.bytes_appended;
        let mut group = self.engine.group();
        for message in batch {
            if group.bytes_left() < split_below {
                outcomes.push(group.commit());
                notices_by_group.push(Vec::new());
                group = self.engine.group();
            }
            let index = outcomes.len();
            let notices = &mut notices_by_group[index];
            let (queued_at, answer) = match message {
                Message::Command { command, at_ms, reply, queued_at } => {
                    let result = group.execute(command, at_ms.unwrap_or(now_ms)).map(|outcome| {
                        notices.extend(outcome.notices);
                        outcome.reply
                    });
                    (queued_at, Answer::Command(reply, result))
                }
                Message::Heartbeat { session, at_ms, reply, queued_at } => {
                    (queued_at, Answer::Heartbeat(reply, group.heartbeat(session, at_ms.unwrap_or(now_ms))))
                }
                Message::Tick { at_ms, reply } => {
                    let result = group.tick(at_ms.unwrap_or(now_ms)).map(|outcome| {
                        notices.extend(outcome.notices);
                    });
                    (started, Answer::Tick(reply, result))
                }
                Message::Snapshot { reply } => {
                    snapshot_requests.push(reply);
                    continue;
                }
                Message::Shutdown => continue,
            };
            answers.push((index, queued_at, answer));
        }
        if self.config.auto_tick {
            if let Ok(outcome) = group.tick(now_ms) {
                notices_by_group[outcomes.len()].extend(outcome.notices);
            }
        }
        outcomes.push(group.commit());
        let events: usize = outcomes.iter().filter_map(|o| o.as_ref().ok()).sum();
        let bytes = self.engine.bytes_appended - bytes_before;
        SharedStats::add(&self.shared.stats.events, events as u64);
        SharedStats::add(&self.shared.stats.bytes_appended, bytes);
        for failure in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            SharedStats::add(&self.shared.stats.store_failures, 1);
            tracing::warn!(error = %failure, "the store refused a turn's batch; its commands failed and changed nothing");
        }
        let sync_started = Instant::now();
        let synced = match (events, self.config.sync_each_turn) {
            (0, _) | (_, false) => Ok(None),
            _ => self.engine.sync().map(|()| Some(sync_started.elapsed())),
        };
        SharedStats::add(&self.shared.stats.turns, 1);
        let sync_failure = synced.as_ref().err().map(|e| {
            tracing::error!(error = %e, "the store could not sync a turn; the presence runtime stops");
            format!("the turn could not be made durable, the runtime stopped: {e}")
        });
        let group_failures: Vec<Option<String>> = outcomes
            .iter()
            .map(|o| {
                o.as_ref().err().map(|e| format!("the store refused the turn, nothing of it was kept: {e}"))
            })
            .collect();
        let mut waits = Vec::with_capacity(answers.len());
        for (index, queued_at, answer) in answers {
            let failure = group_failures[index].as_deref().or(sync_failure.as_deref());
            let ok = answer.is_ok() && failure.is_none();
            let counter = if ok { &self.shared.stats.commands } else { &self.shared.stats.refused };
            SharedStats::add(counter, 1);
            waits.push(queued_at.elapsed());
            answer.send(failure);
        }
        match synced {
            Err(e) => {
                self.shared.stats.record_turn(started.elapsed(), None, &waits);
                Err(e)
            }
            Ok(sync_took) => {
                for (notices, outcome) in notices_by_group.iter().zip(&outcomes) {
                    if outcome.is_ok() {
                        self.deliver(notices);
                    }
                }
                self.shared.stats.record_turn(started.elapsed(), sync_took, &waits);
                self.events_since_snapshot += events as u64;
                self.bytes_since_snapshot += bytes;
                self.start_snapshot(snapshot_requests);
                Ok(())
            }
        }
    }

    fn deliver(&mut self, notices: &[Notice]) {
        if notices.is_empty() {
            return;
        }
        SharedStats::add(&self.shared.stats.deliveries, delivery_count(notices) as u64);
        let names = self.engine.names();
        let sink = &mut self.sink;
        if catch_unwind(AssertUnwindSafe(|| sink.deliver(notices, &names))).is_err() {
            SharedStats::add(&self.shared.stats.sink_panics, 1);
            tracing::error!("the notice sink panicked; the turn's events are durable, its notices lost");
        }
    }

    /// Starts a snapshot when one is asked for or the policy says it is due (and none is
    /// under way): the state is captured now, between turns, and encoded on another thread.
    fn start_snapshot(&mut self, mut requests: Vec<ReplySender<u64>>) {
        let elapsed_ms = self.clock.now_ms().saturating_sub(self.last_snapshot_ms);
        let due =
            self.config.snapshots.due(self.events_since_snapshot, self.bytes_since_snapshot, elapsed_ms);
        if requests.is_empty() && !due {
            return;
        }
        if self.snapshot.is_some() {
            // One at a time: finish the one under way first (asked-for snapshots wait for it).
            self.finish_snapshot(true);
        }
        let last_seq = self.engine.last_seq();
        let capture_started = Instant::now();
        let captured = self.engine.capture_snapshot();
        self.shared.stats.record_snapshot_pause(capture_started.elapsed());
        let (sender, bytes) = crossbeam_channel::bounded(1);
        let spawned = std::thread::Builder::new().name("presence-snapshot".into()).spawn(move || {
            let _ = sender.send(encode_captured_snapshot(captured));
        });
        let reply = requests.pop();
        for extra in requests {
            // Several asked in one turn: they all get this one.
            extra.send(Ok(last_seq));
        }
        match spawned {
            Ok(_) => self.snapshot = Some(SnapshotInFlight { last_seq, bytes, reply }),
            Err(e) => {
                SharedStats::add(&self.shared.stats.snapshot_failures, 1);
                tracing::error!(error = %e, "cannot start a thread to encode a snapshot");
                if let Some(reply) = reply {
                    reply.send(Err(Error::Storage(StoreError::with_source(
                        StoreErrorKind::Io,
                        "cannot start a thread to encode a snapshot",
                        e,
                    ))));
                }
            }
        }
        self.events_since_snapshot = 0;
        self.bytes_since_snapshot = 0;
        self.last_snapshot_ms = self.clock.now_ms();
    }

    /// Saves the snapshot under way if its bytes are ready (or, with `wait`, once they are).
    fn finish_snapshot(&mut self, wait: bool) {
        let Some(in_flight) = &self.snapshot else { return };
        let encoded = match wait {
            true => in_flight.bytes.recv().map_err(|_| ()),
            false => match in_flight.bytes.try_recv() {
                Ok(encoded) => Ok(encoded),
                Err(crossbeam_channel::TryRecvError::Empty) => return,
                Err(crossbeam_channel::TryRecvError::Disconnected) => Err(()),
            },
        };
        let Some(in_flight) = self.snapshot.take() else { return };
        let saved = match encoded {
            Ok(Ok(bytes)) => self
                .engine
                .save_snapshot_bytes(in_flight.last_seq, &bytes, self.config.snapshots.compact)
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
                tracing::info!(last_seq = seq, "presence snapshot saved");
            }
            Err(e) => {
                SharedStats::add(&self.shared.stats.snapshot_failures, 1);
                tracing::error!(error = %e, "a presence snapshot failed; the log is intact");
            }
        }
        if let Some(reply) = in_flight.reply {
            reply.send(saved);
        }
    }
}
