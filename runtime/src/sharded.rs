//! A sharded deployment in one process (docs/SPEC.md R9, docs/DESIGN.md): `S` shards, each
//! an [`Engine`] with its own store, over `T` runtime threads, behind the same [`Handle`] as a
//! single engine. Each thread group-commits its shards; the threads exchange only status
//! changes, reads of other shards' statuses, interest, and friendships, over channels.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use presence_engine::{
    Config, Engine, EngineId, EngineOptions, Error, EventStore, RestoredSessions, ShardMap, ShardOf,
};
use rustc_hash::FxHashMap;

use crate::handle::{Handle, Message, Routes, Shared, ThreadQueues};
use crate::peer::PeerRoutes;
use crate::worker::Worker;
use crate::{stopped, Clock, NoticeSink, RuntimeConfig, RuntimeStats};

type ThreadResult<S> = Result<Vec<(u32, Engine<S>)>, Error>;

/// A sharded deployment's threads. [`ShardedRuntime::shutdown`] stops them and hands the
/// engines back, by shard.
pub struct ShardedRuntime<S> {
    threads: Vec<JoinHandle<ThreadResult<S>>>,
    ticker: Option<(Sender<()>, JoinHandle<()>)>,
    handle: Handle,
}

impl<S: EventStore + Send + 'static> ShardedRuntime<S> {
    /// Starts `threads` runtime threads (at least one, at most one per shard; see
    /// [`default_threads`]) over `engines`, which must be the shards of one deployment in
    /// order: engine `i` opened with [`EngineOptions::shard`] `i` of a map of `engines.len()`
    /// shards. Shard `s` runs on thread `s % threads`.
    ///
    /// With `auto_tick`, a ticker thread ticks every shard each `tick_interval_ms` (with one
    /// thread, that thread ticks by itself as a single runtime does). Ticks are barriers
    /// across shards (R9.4).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the engines are not the shards of one deployment in
    /// order.
    ///
    /// # Panics
    /// If the operating system cannot start a thread.
    pub fn spawn<C, N>(
        engines: Vec<Engine<S>>,
        threads: usize,
        clock: C,
        sink: N,
        config: RuntimeConfig,
    ) -> Result<(ShardedRuntime<S>, Handle), Error>
    where
        C: Clock + Clone,
        N: NoticeSink + Clone,
    {
        let count = engines.len() as u32;
        let map = match engines.first().and_then(|e| e.shard()) {
            Some(first) => first.map.clone(),
            None => {
                return Err(Error::InvalidParameter(
                    "a sharded deployment needs its engines opened as shards".into(),
                ))
            }
        };
        for (i, engine) in engines.iter().enumerate() {
            match engine.shard() {
                Some(shard) if shard.index == i as u32 && shard.map == map && map.count() == count => {}
                _ => {
                    return Err(Error::InvalidParameter(format!(
                        "engine {i} is not shard {i} of a deployment of {count} shards with one map"
                    )))
                }
            }
        }
        let threads = threads.clamp(1, engines.len());
        let ticks = config.auto_tick && threads > 1;
        let (runtime, handle) =
            Self::start(engines, map, threads, |_| (clock.clone(), sink.clone()), config.clone());
        let mut runtime = runtime;
        if ticks {
            runtime.ticker = Some(start_ticker(handle.clone(), clock, config.tick_interval_ms));
        }
        Ok((runtime, handle))
    }

    /// Starts the threads; `parts(t)` gives thread `t` its clock and sink.
    pub(crate) fn start<C: Clock, N: NoticeSink>(
        engines: Vec<Engine<S>>,
        map: ShardMap,
        threads: usize,
        mut parts: impl FnMut(usize) -> (C, N),
        config: RuntimeConfig,
    ) -> (ShardedRuntime<S>, Handle) {
        let queue_capacity = config.queue_capacity.max(1);
        let shared = Arc::new(Shared::new(queue_capacity));
        // R1.3 across shards: the latest time is the newest any shard has seen.
        let latest = engines.iter().map(Engine::now_ms).max().unwrap_or(0);
        shared.latest_ms.store(latest, std::sync::atomic::Ordering::Relaxed);
        let thread_of: Vec<usize> = (0..engines.len()).map(|s| s % threads).collect();
        let shard_of_instance: FxHashMap<EngineId, u32> =
            engines.iter().enumerate().map(|(s, e)| (e.id(), s as u32)).collect();
        let mut queues = Vec::with_capacity(threads);
        let mut receivers = Vec::with_capacity(threads);
        let mut peer_senders = Vec::with_capacity(threads);
        let mut peer_receivers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (commands, command_receiver) = crossbeam_channel::bounded(queue_capacity);
            let (reads, read_receiver) = crossbeam_channel::bounded(config.read_queue_capacity.max(1));
            let (peers, peer_receiver) = crossbeam_channel::unbounded();
            queues.push(ThreadQueues { commands, reads });
            receivers.push((command_receiver, read_receiver));
            peer_senders.push(peers);
            peer_receivers.push(peer_receiver);
        }
        let routes = Arc::new(Routes {
            map: map.clone(),
            threads: queues,
            thread_of: thread_of.clone(),
            shard_of_instance,
            tick_order: Mutex::new(()),
        });
        let peer_routes =
            Arc::new(PeerRoutes { map, senders: peer_senders, thread_of, shared: Arc::clone(&shared) });
        let handle = Handle { routes, shared };
        let mut by_thread: Vec<Vec<(u32, Engine<S>)>> = (0..threads).map(|_| Vec::new()).collect();
        for (shard, engine) in engines.into_iter().enumerate() {
            by_thread[shard % threads].push((shard as u32, engine));
        }
        let local_ticks = config.auto_tick && threads == 1;
        let mut handles = Vec::with_capacity(threads);
        for (t, ((engines, (commands, reads)), peers)) in
            by_thread.into_iter().zip(receivers).zip(peer_receivers).enumerate()
        {
            let (clock, sink) = parts(t);
            let worker = Worker::new(
                engines,
                clock,
                sink,
                config.clone(),
                commands,
                reads,
                peers,
                Arc::clone(&peer_routes),
                local_ticks,
            );
            let name =
                if threads == 1 { "presence-engine".to_string() } else { format!("presence-engine-{t}") };
            #[allow(clippy::expect_used)] // Failing to start a thread leaves nothing to recover.
            let thread = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker.run())
                .expect("cannot start a presence runtime thread");
            handles.push(thread);
        }
        (ShardedRuntime { threads: handles, ticker: None, handle: handle.clone() }, handle)
    }

    /// A handle for sending requests (as many as wanted: they are cheap to clone).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// What the deployment has done so far.
    pub fn stats(&self) -> RuntimeStats {
        self.handle.stats()
    }

    /// Stops taking requests once what is queued has run and the shards have exchanged what
    /// it caused (waiting at most ten seconds for that), syncs, and returns the engines in
    /// shard order. Fails with a store's error if a thread had stopped after a failed sync.
    pub fn shutdown(mut self) -> Result<Vec<Engine<S>>, Error> {
        self.stop_ticker();
        if self.threads.len() > 1 {
            let _ = self.handle.quiesce(Duration::from_secs(10));
        }
        self.signal_shutdown();
        self.join()
    }

    fn stop_ticker(&mut self) {
        if let Some((stop, thread)) = self.ticker.take() {
            drop(stop);
            let _ = thread.join();
        }
    }

    fn signal_shutdown(&self) {
        for queues in &self.handle.routes.threads {
            let _ = queues.commands.send(Message::Shutdown);
        }
    }

    fn join(&mut self) -> Result<Vec<Engine<S>>, Error> {
        if self.threads.is_empty() {
            return Err(stopped("the runtime was already shut down"));
        }
        let mut engines = Vec::new();
        let mut failure = None;
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(shards)) => engines.extend(shards),
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(stopped("a presence runtime thread panicked"))),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        engines.sort_by_key(|(shard, _)| *shard);
        Ok(engines.into_iter().map(|(_, engine)| engine).collect())
    }
}

impl<S> Drop for ShardedRuntime<S> {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.ticker.take() {
            drop(stop);
            let _ = thread.join();
        }
        for queues in &self.handle.routes.threads {
            let _ = queues.commands.send(Message::Shutdown);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Opens the shards of a deployment over `stores` (shard `i` over `stores[i]`), each engine
/// on its own thread so that their replays run in parallel, with `options` (its `shard` is
/// set for each). The engines come back in shard order, for [`ShardedRuntime::spawn`].
///
/// [`RestoredSessions::Disconnect`] disconnects every shard's sessions at the deployment's
/// time: the given time, or the latest any shard has logged if that is later (R1.3), as one
/// engine would.
///
/// # Errors
/// The first shard's failure to open, naming the shard.
pub fn open_shards<S: EventStore + Send>(
    config: &Config,
    stores: Vec<S>,
    map: &ShardMap,
    options: &EngineOptions,
) -> Result<Vec<Engine<S>>, Error> {
    std::thread::scope(|scope| {
        let opening: Vec<_> = stores
            .into_iter()
            .enumerate()
            .map(|(index, store)| {
                let shard = Some(ShardOf { map: map.clone(), index: index as u32 });
                let options =
                    EngineOptions { shard, restored_sessions: RestoredSessions::Keep, ..options.clone() };
                scope.spawn(move || Engine::open_with(config.clone(), store, options))
            })
            .collect();
        let mut engines = Vec::with_capacity(opening.len());
        for (index, thread) in opening.into_iter().enumerate() {
            match thread.join() {
                Ok(Ok(engine)) => engines.push(engine),
                Ok(Err(e)) => return Err(e.in_shard(index)),
                Err(_) => return Err(stopped("opening a shard panicked")),
            }
        }
        if let RestoredSessions::Disconnect { at_ms } = options.restored_sessions {
            let at_ms = engines.iter().map(Engine::now_ms).fold(at_ms, u64::max);
            for (index, engine) in engines.iter_mut().enumerate() {
                engine.disconnect_restored(at_ms).map_err(|e| e.in_shard(index))?;
            }
        }
        Ok(engines)
    })
}

/// One runtime thread per core the machine reports (1 if it cannot tell).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A thread that ticks every shard each `interval_ms` at the clock's time, one tick at a
/// time, until its stop channel closes.
fn start_ticker<C: Clock>(handle: Handle, clock: C, interval_ms: u64) -> (Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
    let interval = Duration::from_millis(interval_ms.max(1));
    #[allow(clippy::expect_used)] // Failing to start a thread leaves nothing to recover.
    let thread = std::thread::Builder::new()
        .name("presence-ticker".into())
        .spawn(move || loop {
            match stopped.recv_timeout(interval) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let Ok(tick) = handle.tick_maybe_at(Some(clock.now_ms())) else { return };
            // Wait for it (so ticks never pile up), but keep an ear on the stop channel.
            let mut tick = tick;
            loop {
                match tick.wait_timeout(interval) {
                    Ok(_) => break,
                    Err(pending) => tick = pending,
                }
                if !matches!(stopped.try_recv(), Err(crossbeam_channel::TryRecvError::Empty)) {
                    return;
                }
            }
        })
        .expect("cannot start the presence ticker thread");
    (stop, thread)
}
