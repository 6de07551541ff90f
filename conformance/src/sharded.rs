//! A sharded deployment in one process (docs/SPEC.md R9) as a [`Subject`]: the shards run on
//! the runtime's threads, and every command or tick waits until its effects on other shards
//! are delivered (R9.4), so that the deployment must answer exactly as one engine does. This
//! is what `presence conform --store sharded:N` runs the traces on, and what the lockstep
//! tests compare with one engine.

use std::sync::mpsc;
use std::time::Duration;

use presence_engine::{
    Command, Config, Engine, EngineOptions, EventStore, Names, Notice, RestoredSessions, SessionView,
    ShardMap, UserId, UserStatus,
};
use presence_runtime::{
    open_shards, Handle, ManualClock, NoticeSink, RuntimeConfig, RuntimeError, ShardedRuntime,
};

use crate::observe::{compare_states, FlatNotice, Refusal, Response};
use crate::subject::Subject;

/// How long a step may take to come to rest before the subject reports a failure.
const REST: Duration = Duration::from_secs(30);

/// The notices of every shard, flattened with their versions and causes.
#[derive(Clone)]
struct FlatSink(mpsc::Sender<Vec<FlatNotice>>);

impl NoticeSink for FlatSink {
    fn deliver(&mut self, notices: &[Notice], names: &Names<'_>) {
        // A subject that was dropped no longer wants them.
        let _ = self.0.send(FlatNotice::from_notices(notices, *names));
    }
}

/// A sharded deployment over one store per shard, as one implementation.
pub struct ShardedSubject<S> {
    running: Option<(ShardedRuntime<S>, Handle)>,
    notices: mpsc::Receiver<Vec<FlatNotice>>,
    sink: FlatSink,
    config: Config,
    map: ShardMap,
    threads: usize,
    /// The latest time a step was given (R1.3), for a restart's disconnections.
    latest_ms: u64,
}

impl<S: EventStore + Send + 'static> ShardedSubject<S> {
    /// Opens the shards of `map` over `stores` (one per shard, in order) with `config`, on
    /// `threads` runtime threads.
    pub fn open(config: Config, map: ShardMap, stores: Vec<S>, threads: usize) -> Result<Self, Refusal> {
        let (sender, notices) = mpsc::channel();
        let mut subject = ShardedSubject {
            running: None,
            notices,
            sink: FlatSink(sender),
            config,
            map,
            threads,
            latest_ms: 0,
        };
        subject.start(stores, RestoredSessions::Keep)?;
        Ok(subject)
    }

    fn start(&mut self, stores: Vec<S>, restored_sessions: RestoredSessions) -> Result<(), Refusal> {
        let options = EngineOptions { restored_sessions, ..EngineOptions::default() };
        let engines = open_shards(&self.config, stores, &self.map, &options)?;
        // The deployment's time is the host's: no tick but the steps' own.
        let runtime_config = RuntimeConfig { auto_tick: false, ..RuntimeConfig::default() };
        let clock = ManualClock::new(self.latest_ms);
        let (runtime, handle) =
            ShardedRuntime::spawn(engines, self.threads, clock, self.sink.clone(), runtime_config)?;
        // At rest once every shard has rebuilt its watch table (R9.5).
        handle.quiesce(REST).map_err(refusal)?;
        self.running = Some((runtime, handle));
        self.take_notices();
        Ok(())
    }

    fn handle(&self) -> Result<&Handle, Refusal> {
        self.running.as_ref().map(|(_, handle)| handle).ok_or_else(lost)
    }

    /// Waits until the deployment is at rest, then gathers every notice of every shard.
    fn settle(&mut self) -> Result<Vec<FlatNotice>, Refusal> {
        self.handle()?.quiesce(REST).map_err(refusal)?;
        Ok(self.take_notices())
    }

    fn take_notices(&mut self) -> Vec<FlatNotice> {
        self.notices.try_iter().flatten().collect()
    }

    fn read<T: Send + 'static>(
        &self,
        user: &str,
        read: impl FnOnce(&presence_engine::EngineView<'_>, &str) -> T + Send + 'static,
    ) -> Option<T> {
        let (_, handle) = self.running.as_ref()?;
        let name = user.to_string();
        handle.read_user(user, move |view| read(view, &name)).ok()?.wait().ok()
    }

    /// Stops the deployment and hands back the engines, in shard order.
    fn stop(&mut self) -> Result<Vec<Engine<S>>, Refusal> {
        let (runtime, _) = self.running.take().ok_or_else(lost)?;
        Ok(runtime.shutdown()?)
    }
}

fn refusal(e: RuntimeError) -> Refusal {
    match e {
        RuntimeError::Refused(e) => Refusal::from(e),
        other => Refusal { code: 9000, message: other.to_string() },
    }
}

fn lost() -> Refusal {
    Refusal { code: 9000, message: "the deployment was lost when a restart failed to reopen it".into() }
}

impl From<RuntimeError> for Refusal {
    fn from(e: RuntimeError) -> Self {
        refusal(e)
    }
}

impl<S: EventStore + Send + 'static> Subject for ShardedSubject<S> {
    fn execute(&mut self, command: Command, at_ms: u64) -> Result<Response, Refusal> {
        self.latest_ms = self.latest_ms.max(at_ms);
        let reply = self.handle()?.send_at(command, at_ms)?.wait();
        // Refused or not, what the command caused on other shards is awaited.
        let notices = self.settle()?;
        Ok(Response::new(reply?, notices))
    }

    fn tick(&mut self, at_ms: u64) -> Result<Response, Refusal> {
        self.latest_ms = self.latest_ms.max(at_ms);
        self.handle()?.tick_at(at_ms)?;
        let notices = self.settle()?;
        Ok(Response::new(presence_engine::Reply::Done, notices))
    }

    fn status(&self, user: &str) -> UserStatus {
        self.read(user, |view, user| view.status(user)).unwrap_or_else(UserStatus::unlogined)
    }

    fn sessions(&self, user: &str) -> Vec<SessionView> {
        self.read(user, |view, user| view.sessions(user)).unwrap_or_default()
    }

    fn subscriptions(&self, user: &str) -> Vec<UserId> {
        self.read(user, |view, user| view.subscriptions(user)).unwrap_or_default()
    }

    fn friends(&self, user: &str) -> Vec<UserId> {
        self.read(user, |view, user| view.friends(user)).unwrap_or_default()
    }

    fn restart(&mut self, at_ms: u64, disconnect: bool) -> Result<(), Refusal> {
        self.latest_ms = self.latest_ms.max(at_ms);
        let stores = self.stop()?.into_iter().map(Engine::into_store).collect();
        let restored = match disconnect {
            true => RestoredSessions::Disconnect { at_ms },
            false => RestoredSessions::Keep,
        };
        self.start(stores, restored)
    }

    fn finish(mut self) -> Result<(), String> {
        let engines = self.stop().map_err(|e| e.message)?;
        for (index, engine) in engines.into_iter().enumerate() {
            let live = engine.logical_state();
            let options = EngineOptions { shard: engine.shard().cloned(), ..EngineOptions::default() };
            let reopened = Engine::open_with(self.config.clone(), engine.into_store(), options)
                .map_err(|e| format!("shard {index}: reopening the store failed: {e}"))?;
            compare_states(&format!("shard {index} rebuilt from its log"), &reopened.logical_state(), &live)?;
        }
        Ok(())
    }
}
