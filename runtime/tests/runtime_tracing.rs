//! The runtime's observability: a span per turn, and events a host's subscriber receives
//! when the store refuses a turn, when the sink panics and when load is shed. Its own test
//! file, because it installs the process-wide `tracing` subscriber the runtime's thread sees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use presence_engine::{Command, Config, Engine, Names, Notice};
use presence_runtime::{ManualClock, NoticeSink, Runtime, RuntimeConfig, TrySendError};
use presence_storage_mem::{FaultyStore, MemStore};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// What the subscriber saw: (level, message) of each event, and the names of spans opened.
static EVENTS: Mutex<Vec<(Level, String)>> = Mutex::new(Vec::new());
static SPANS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT_SPAN: AtomicU64 = AtomicU64::new(1);

struct Collect;

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        SPANS.lock().unwrap().push(span.metadata().name().to_string());
        Id::from_u64(NEXT_SPAN.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        EVENTS.lock().unwrap().push((*event.metadata().level(), message.0));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

struct PanickingSink;

impl NoticeSink for PanickingSink {
    fn deliver(&mut self, _: &[Notice], _: &Names<'_>) {
        panic!("the host's sink failed");
    }
}

fn saw(level: Level, part: &str) -> bool {
    EVENTS.lock().unwrap().iter().any(|(l, m)| *l == level && m.contains(part))
}

#[test]
fn turns_failures_panics_and_shed_load_are_traced() {
    tracing::subscriber::set_global_default(Collect).unwrap();
    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    let engine = Engine::open(Config::default(), store).unwrap();
    let config = RuntimeConfig { queue_capacity: 1, ..RuntimeConfig::default() };
    let (runtime, handle) = Runtime::spawn(engine, ManualClock::new(0), PanickingSink, config);
    handle.execute(Command::login("alice", "phone")).unwrap();
    // The reply goes out before the turn's notices are delivered; a read runs after the turn.
    handle.read(|_| ()).unwrap().wait().unwrap();
    assert!(SPANS.lock().unwrap().iter().any(|s| s == "presence_turn"));
    assert!(saw(Level::ERROR, "sink panicked"));
    faults.fail_appends(true);
    assert!(handle.execute(Command::logout("alice", "phone")).is_err());
    assert!(saw(Level::WARN, "store refused"));
    // A queue of one: fill it faster than one turn takes them, until a request is shed.
    let mut shed = false;
    for i in 0..10_000 {
        if let Err(TrySendError::Full(_)) = handle.try_submit(Command::login(format!("u{i}"), "p")) {
            shed = true;
            break;
        }
    }
    assert!(shed, "a queue of one was never full");
    assert!(saw(Level::DEBUG, "request shed"));
    drop(runtime);
}
