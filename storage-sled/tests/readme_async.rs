//! The README's async embedding example, as it stands there (the `todo!`s of the arms a
//! healthy run does not take become panics), run on a single-threaded tokio runtime: every
//! reply awaited, none on a blocking thread. Keep the two in step.

#![allow(clippy::unwrap_used)]

use presence_engine::{Command, Config, Engine, EngineOptions, LastOnline, RestoredSessions};
use presence_runtime::{ChannelSink, Clock, Runtime, RuntimeConfig, SystemClock, TrySendError};
use presence_storage_sled::{Durability, SledStore};

#[test]
fn the_readme_async_example_runs() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    std::env::set_current_dir(dir.path())?; // the example opens ./presence-data

    let store = SledStore::open("presence-data", Durability::GroupCommit)?;
    // The sockets died with the last process: disconnect its sessions (R8.4).
    let restart = RestoredSessions::Disconnect { at_ms: SystemClock.now_ms() };
    let engine = Engine::open_with(
        Config::default(),
        store,
        EngineOptions { restored_sessions: restart, ..Default::default() },
    )?;
    let (sink, notices) = ChannelSink::bounded(1_024); // a task pushes these to sockets
    let (runtime, handle) = Runtime::spawn(engine, SystemClock, sink, RuntimeConfig::default());

    let executor = tokio::runtime::Builder::new_current_thread().build()?;
    let last_seen = executor.block_on(async {
        // In a request handler:
        match handle.try_send(Command::login("alice", "phone")) {
            Ok(reply) => reply.await?, // once the login is durable (R8.3)
            Err(TrySendError::Full(_)) => panic!("shed: tell the client to retry"),
            Err(TrySendError::Stopped) => panic!("shutting down"),
        };
        let session = handle.session_handle("alice", "phone")?.await?.expect("just logged in");
        handle.heartbeat(session)?.await?; // the fast heartbeat (R2.4)
        let last_seen = handle.read(|engine| engine.last_online("bob"))?.await?; // R6.5, between turns
        Ok::<_, presence_runtime::RuntimeError>(last_seen)
    })?;
    assert_eq!(last_seen, LastOnline::Never);
    let stats = handle.stats(); // queue depth, p50/p99 latencies...
    assert_eq!(stats.commands, 2);
    assert!(stats.reply_latency.count >= 2);
    assert!(notices.try_recv().is_ok(), "alice's own device heard her login");
    let engine = runtime.shutdown()?;
    assert_eq!(engine.status("alice").general.name(), "ONLINE");
    Ok(())
}
